"""The latency side of one campaign: baseline, CUSUM, and re-scoring after a retract.

``LatencyTrack`` scores each closed minute's mean log-LCP against a seasonal baseline with
the CUSUM of :mod:`detectors.latency`, ``latency_delay_minutes`` after the minute closes,
and learns the minute into the baseline ``latency_learn_delay_minutes`` later unless it
was flagged. Between the two, it keeps a checkpoint per scored minute (the CUSUM's
position and last verdict before it), so a session retracted from such a minute (a late
landing moved it to another campaign) is taken out of the test too: the next run rewinds
to the checkpoint and folds the corrected minutes in again (docs/ARCHITECTURE.md,
"Sessions").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import attrgetter

from detectors.baseline import EwStats, SeasonalBaseline
from detectors.buckets import MINUTE_MS, MinuteBucket, MinuteRing
from detectors.latency import LatencyCusum, LatencyVerdict

Z75 = 0.6744897501960817  # standard normal 75th percentile
Checkpoint = tuple[tuple[float, int | None], LatencyVerdict]  # CUSUM position, last verdict
Flag = Callable[[int, int], None]  # marks the minutes of [start_ms, end_ms) as anomalous


class LatencyTrack:
    """Learned normal latency, the CUSUM on it, and what a re-score needs.

    Attributes:
        baseline: seasonal baseline of per-minute mean log-LCP.
        variance: exponentially weighted within-minute variance of log-LCP.
        cusum: the sequential test on closed minutes.
        last_minute: the last minute scored (``None`` before the first run).
        last: the CUSUM's latest verdict.
        checkpoints: per scored, not yet learned minute, the CUSUM before it.
        rescore_from: the first minute a retract changed since the last run, if any.
    """

    def __init__(self, *, shift: float, threshold: float, max_excursion_minutes: int,
                 delay_minutes: int, learn_delay_minutes: int, keep_minutes: int,
                 min_weight: float, default_sd_log: float, flag_fraction: float) -> None:
        self.baseline = SeasonalBaseline()
        self.variance = EwStats()
        self.cusum = LatencyCusum(shift=shift, threshold=threshold,
                                  max_excursion_minutes=max_excursion_minutes)
        self.last_minute: int | None = None
        self.last = LatencyVerdict(0.0, threshold, False, None, math.nan)
        self.checkpoints: dict[int, Checkpoint] = {}
        self.rescore_from: int | None = None
        self._delay = delay_minutes
        self._learn_delay = learn_delay_minutes
        self._keep = keep_minutes
        self._min_weight = min_weight
        self._default_sd_log = default_sd_log
        self._flag_at = flag_fraction * threshold

    def run(self, ring: MinuteRing, tick_ms: int, flag: Flag) -> None:
        """Re-score what a retract changed, then score the minutes closed by ``tick_ms``."""
        self._rescore(ring, flag)
        last = tick_ms - (self._delay + 1) * MINUTE_MS
        first = last if self.last_minute is None else self.last_minute + MINUTE_MS
        for minute in range(max(first, last - self._keep * MINUTE_MS), last + 1, MINUTE_MS):
            self._score(ring, minute, flag)
            self._learn(ring, minute - self._learn_delay * MINUTE_MS)
        self.last_minute = max(last, self.last_minute or last)

    def retracting(self, minute: int, has_lcp: bool) -> bool:
        """A session with (``has_lcp``) or without an LCP leaves ``minute``: whether the
        bucket keeps its log-LCP sums (scored and past re-scoring: the baseline learns what
        the test saw). A minute still re-scorable is marked for the next run instead."""
        scored = self.last_minute is not None and minute <= self.last_minute
        rescore = has_lcp and minute in self.checkpoints
        if rescore:
            earlier = self.rescore_from
            self.rescore_from = minute if earlier is None else min(minute, earlier)
        return scored and not rescore

    def sd_log(self) -> float:
        """Within-minute standard deviation of log-LCP (a default until learned)."""
        if self.variance.weight < 10:
            return self._default_sd_log
        return max(math.sqrt(self.variance.mean), 0.05)

    def expected(self, tick_ms: int) -> float:
        """The baseline's mean log-LCP at ``tick_ms`` (nan before it has learned any)."""
        return self.baseline.expected(tick_ms) if self.baseline.level_weight > 0 else math.nan

    def baseline_p75(self, expected: float) -> float:
        """Normal p75 LCP (ms) around ``expected`` mean log-LCP."""
        if self.baseline.level_weight <= 0:
            return math.nan
        return math.exp(expected + Z75 * self.sd_log())

    def recent_shift(self, expected: float, recent: list[MinuteBucket]) -> float:
        """Mean log-LCP of the recent minutes minus ``expected`` (nan without a baseline)."""
        n: int = sum(map(_LCP_N, recent))
        if n == 0 or self.baseline.level_weight <= 0:
            return math.nan
        total: float = sum(map(_SUM_LOG, recent))
        return total / n - expected

    def _score(self, ring: MinuteRing, minute: int, flag: Flag) -> None:
        bucket = ring.get(minute)
        n = bucket.lcp_n if bucket else 0
        if n == 0 or self.baseline.level_weight < self._min_weight:
            return
        assert bucket is not None
        args = (minute, n, bucket.mean_log, self.baseline.expected(minute), self.sd_log())
        self.checkpoints[minute] = (self.cusum.position(), self.last)
        self.last = self.cusum.step(*args)
        if self.last.statistic > self._flag_at:
            flag(self.last.started_ms or minute, minute + MINUTE_MS)

    def _rescore(self, ring: MinuteRing, flag: Flag) -> None:
        """Fold the minutes from the first one a retract changed into the CUSUM again.

        Only minutes not yet learned are kept (``checkpoints``), so the baseline learns
        what the test finally scored. Flags already set stay (they only stop learning)."""
        start, self.rescore_from = self.rescore_from, None
        if start is None or start not in self.checkpoints or self.last_minute is None:
            return
        position, self.last = self.checkpoints[start]
        self.cusum.rewind(position)
        for minute in range(start, self.last_minute + MINUTE_MS, MINUTE_MS):
            self._score(ring, minute, flag)

    def _learn(self, ring: MinuteRing, minute: int) -> None:
        for old in [m for m in self.checkpoints if m <= minute]:
            del self.checkpoints[old]  # learned: what was scored stays scored
        bucket = ring.get(minute)
        if bucket is None or bucket.flagged or bucket.lcp_n == 0:
            return
        self.baseline.update(minute, bucket.mean_log, float(bucket.lcp_n))
        if bucket.lcp_n >= 2:
            self.variance.update(minute, bucket.var_log, float(bucket.lcp_n - 1))


_LCP_N = attrgetter("lcp_n")
_SUM_LOG = attrgetter("sum_log")
