"""Per-campaign minute buckets: what happened to the sessions that started in one minute.

A session's minute is the minute of its first page view; its conversion is credited to that
minute whenever the order arrives (DESIGN.md "Time"). Buckets are kept for a bounded span of
minutes (``MinuteRing``); older ones are dropped once the detectors have learned from them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from detectors.elasticity import N_BINS, lcp_bin
from detectors.sketch import LogHistogram
from detectors.strata import N_STRATA

MINUTE_MS = 60_000


def minute_of(ts_ms: int) -> int:
    """The whole minute (epoch ms) containing ``ts_ms``."""
    return ts_ms - ts_ms % MINUTE_MS


@dataclass(slots=True, init=False)
class MinuteBucket:
    """Sessions that started in one minute, and what they did since."""

    sessions: int = 0
    lcp_n: int = 0
    sum_log: float = 0.0
    sumsq_log: float = 0.0
    sketch: LogHistogram = field(default_factory=LogHistogram)
    conversions: int = 0
    commerce_sessions: dict[int, int] = field(default_factory=dict)
    commerce_conversions: dict[int, int] = field(default_factory=dict)
    flagged: bool = False
    # derived from the two dicts (never serialised): commerce landings with an LCP per
    # device stratum, then their conversions, for the per-device conversion scan
    device_counts: list[int] = field(init=False, repr=False, compare=False)

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    # ``None`` for the sketch or a dict: a new empty one (the fields' ``default_factory``).
    def __init__(  # noqa: PLR0917 (the dataclass's positional signature)
        self, sessions: int = 0, lcp_n: int = 0, sum_log: float = 0.0, sumsq_log: float = 0.0,
        sketch: LogHistogram | None = None, conversions: int = 0,
        commerce_sessions: dict[int, int] | None = None,
        commerce_conversions: dict[int, int] | None = None, flagged: bool = False,
    ) -> None:
        self.sessions = sessions
        self.lcp_n = lcp_n
        self.sum_log = sum_log
        self.sumsq_log = sumsq_log
        self.sketch = LogHistogram() if sketch is None else sketch
        self.conversions = conversions
        self.commerce_sessions = {} if commerce_sessions is None else commerce_sessions
        self.commerce_conversions = {} if commerce_conversions is None else commerce_conversions
        self.flagged = flagged
        self.device_counts = _device_counts(self.commerce_sessions, self.commerce_conversions)

    def add_session(self, lcp_ms: float | None, commerce: bool, stratum: int = 0) -> None:
        """One session; a commerce landing with an LCP counts in the curve data under the
        key ``lcp_bin + N_BINS * stratum`` (its device stratum, ``detectors.strata``)."""
        self.sessions += 1
        if lcp_ms is None or lcp_ms <= 0:
            return
        log_lcp = math.log(lcp_ms)
        self.lcp_n += 1
        self.sum_log += log_lcp
        self.sumsq_log += log_lcp * log_lcp
        self.sketch.add(lcp_ms)
        if commerce:
            b = lcp_bin(lcp_ms) + N_BINS * stratum
            self.commerce_sessions[b] = self.commerce_sessions.get(b, 0) + 1
            self.device_counts[stratum] += 1

    def add_conversion(self, lcp_ms: float | None, commerce: bool, stratum: int = 0) -> None:
        self.conversions += 1
        if commerce and lcp_ms is not None and lcp_ms > 0:
            b = lcp_bin(lcp_ms) + N_BINS * stratum
            self.commerce_conversions[b] = self.commerce_conversions.get(b, 0) + 1
            self.device_counts[N_STRATA + stratum] += 1

    def remove_session(self, lcp_ms: float | None, commerce: bool, stratum: int = 0, *,
                       keep_log_sums: bool = False) -> None:
        """Undo :meth:`add_session` (a retracted session, in its stratum); no count goes
        below zero.

        ``keep_log_sums``: leave ``lcp_n`` and the log-LCP sums, which the latency test has
        scored, so that the baseline later learns what was scored.
        """
        self.sessions = max(self.sessions - 1, 0)
        if lcp_ms is None or lcp_ms <= 0 or not self.sketch.discard(lcp_ms):
            return
        if commerce and _decrement(self.commerce_sessions, lcp_bin(lcp_ms) + N_BINS * stratum):
            self.device_counts[stratum] -= 1
        if keep_log_sums:
            return
        log_lcp = math.log(lcp_ms)
        self.lcp_n -= 1
        if self.lcp_n:
            self.sum_log -= log_lcp
            self.sumsq_log -= log_lcp * log_lcp
        else:  # exactly empty, not a rounding residue
            self.sum_log = self.sumsq_log = 0.0

    def remove_conversion(self, lcp_ms: float | None, commerce: bool, stratum: int = 0) -> None:
        """Undo :meth:`add_conversion` (a retracted first order); no count goes below zero."""
        self.conversions = max(self.conversions - 1, 0)
        if commerce and lcp_ms is not None and lcp_ms > 0 and _decrement(
                self.commerce_conversions, lcp_bin(lcp_ms) + N_BINS * stratum):
            self.device_counts[N_STRATA + stratum] -= 1

    @property
    def mean_log(self) -> float:
        return self.sum_log / self.lcp_n if self.lcp_n else math.nan

    @property
    def var_log(self) -> float:
        """Within-minute variance of log-LCP (nan below two sessions)."""
        if self.lcp_n < 2:
            return math.nan
        mean = self.sum_log / self.lcp_n
        return max(self.sumsq_log / self.lcp_n - mean * mean, 0.0) * self.lcp_n / (self.lcp_n - 1)

    def to_state(self) -> list[Any]:
        """Positional fields; the curve counts by device stratum come last (9, 10), and
        folded over the strata at 6 and 7, where a worker from before the strata reads them."""
        return [self.sessions, self.lcp_n, self.sum_log, self.sumsq_log, self.sketch.to_state(),
                self.conversions, _pairs(_folded(self.commerce_sessions)),
                _pairs(_folded(self.commerce_conversions)), self.flagged,
                _pairs(self.commerce_sessions), _pairs(self.commerce_conversions)]

    @classmethod
    def from_state(cls, state: list[Any]) -> MinuteBucket:
        """:meth:`to_state` back; a row from before the strata has its counts at 6 and 7 only
        (keys below ``N_BINS``: stratum 0, unknown device)."""
        by_stratum = len(state) > 9
        return cls(int(state[0]), int(state[1]), float(state[2]), float(state[3]),
                   LogHistogram.from_state(state[4]), int(state[5]),
                   _unpairs(state[9] if by_stratum else state[6]),
                   _unpairs(state[10] if by_stratum else state[7]), bool(state[8]))


def _decrement(counts: dict[int, int], key: int) -> bool:
    """Take one from ``counts[key]`` (dropping it at 0); False when there was none."""
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        return counts.pop(key, None) is not None
    return True


def _device_counts(sessions: dict[int, int], conversions: dict[int, int]) -> list[int]:
    """Counts keyed ``bin + N_BINS * stratum`` summed per stratum: sessions, then
    conversions (``MinuteBucket.device_counts``)."""
    counts = [0] * (2 * N_STRATA)
    for offset, by_key in ((0, sessions), (N_STRATA, conversions)):
        for key, count in by_key.items():
            counts[offset + key // N_BINS] += count
    return counts


def _folded(counts: dict[int, int]) -> dict[int, int]:
    """Counts keyed ``bin + N_BINS * stratum`` summed per LCP bin."""
    folded: dict[int, int] = {}
    for key, count in counts.items():
        folded[key % N_BINS] = folded.get(key % N_BINS, 0) + count
    return folded


def _pairs(counts: dict[int, int]) -> list[list[int]]:
    return [[k, v] for k, v in sorted(counts.items())]


def _unpairs(pairs: list[list[int]]) -> dict[int, int]:
    return {int(k): int(v) for k, v in pairs}


class MinuteRing:
    """Minute buckets of one campaign, keyed by minute (epoch ms), oldest first.

    ``_minutes`` and ``_list`` mirror the keys and the buckets in ascending minute order,
    so a span is two bisections and two slices (a tick asks for several spans of a ring of
    ~140 minutes).
    """

    __slots__ = ("_buckets", "_list", "_minutes")

    def __init__(self) -> None:
        self._buckets: dict[int, MinuteBucket] = {}
        self._minutes: list[int] = []
        self._list: list[MinuteBucket] = []

    def get(self, minute_ms: int) -> MinuteBucket | None:
        return self._buckets.get(minute_ms)

    def bucket(self, minute_ms: int) -> MinuteBucket:
        """The bucket of ``minute_ms``, created if missing (buckets stay in minute order)."""
        found = self._buckets.get(minute_ms)
        if found is None:
            found = MinuteBucket()
            self._insert(minute_ms, found)
        return found

    def _insert(self, minute_ms: int, bucket: MinuteBucket) -> None:
        minutes = self._minutes
        known = minute_ms in self._buckets
        self._buckets[minute_ms] = bucket
        if known:
            self._list[bisect.bisect_left(minutes, minute_ms)] = bucket
            return
        if not minutes or minute_ms > minutes[-1]:
            minutes.append(minute_ms)
            self._list.append(bucket)
            return
        at = bisect.bisect_left(minutes, minute_ms)
        minutes.insert(at, minute_ms)
        self._list.insert(at, bucket)
        self._buckets = dict(zip(minutes, self._list, strict=True))

    def drop_before(self, minute_ms: int) -> list[int]:
        """Drop the buckets older than ``minute_ms``; return their minutes."""
        cut = bisect.bisect_left(self._minutes, minute_ms)
        dropped = self._minutes[:cut]
        if dropped:
            del self._minutes[:cut]
            del self._list[:cut]
            for key in dropped:
                del self._buckets[key]
        return dropped

    def restore(self, minute_ms: int, bucket: MinuteBucket) -> None:
        self._insert(minute_ms, bucket)

    def span(self, start_ms: int, end_ms: int) -> Iterator[tuple[int, MinuteBucket]]:
        """Buckets with ``start_ms <= minute < end_ms``, oldest first (a snapshot)."""
        return iter(list(zip(*self.span_lists(start_ms, end_ms), strict=True)))

    def span_lists(self, start_ms: int, end_ms: int) -> tuple[list[int], list[MinuteBucket]]:
        """The minutes and the buckets of :meth:`span`, as two new lists."""
        minutes = self._minutes
        lo, hi = bisect.bisect_left(minutes, start_ms), bisect.bisect_left(minutes, end_ms)
        return minutes[lo:hi], self._list[lo:hi]

    def __len__(self) -> int:
        return len(self._buckets)

    def to_state(self) -> list[list[Any]]:
        return [[minute, bucket.to_state()] for minute, bucket in self._buckets.items()]

    @classmethod
    def from_state(cls, state: list[list[Any]]) -> MinuteRing:
        ring = cls()
        for minute, bucket in state:
            ring._insert(int(minute), MinuteBucket.from_state(bucket))
        return ring
