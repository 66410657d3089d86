"""The minutes one campaign tick looks at, gathered once and shared by its tests.

A tick reads the last ``horizon_minutes`` of buckets several times: the conversion scan,
the lag-adjusted rate of the last hour, the p75 of the last minutes, the pricing window.
:class:`TickWindow` takes the span once and builds the arrays they share (minutes,
sessions, the lag model's completeness ``F(age)``), so each of them slices instead of
walking the buckets again. The figures are the same as when each built its own arrays:
the same values, in the same order, in freshly allocated arrays.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import chain
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from detectors.buckets import MINUTE_MS, MinuteRing
from detectors.conv_season import slots_of
from detectors.lag import LagModel
from detectors.sketch import LogHistogram
from detectors.strata import N_STRATA

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SESSIONS = attrgetter("sessions")
CONVERSIONS = attrgetter("conversions")
SKETCH_COUNT = attrgetter("sketch.count")
SKETCH = attrgetter("sketch")


class TickWindow:
    """Buckets with ``tick_ms - horizon <= minute < tick_ms``, oldest first, and their arrays.

    ``completeness`` is ``F(age)`` at each minute's middle (``age = (tick - minute) / 1 min
    - 0.5``), from the lag model as it is at this tick. ``season`` is each minute's
    hour-of-day conversion factor (``detectors.conv_season``; ones without ``factors``) and
    ``weights`` is ``completeness x season``: a minute's sessions times its weight are its
    exposure at the baseline's rate per seasonal session.
    """

    __slots__ = ("_devices", "buckets", "completeness", "minute_array", "minutes", "season",
                 "sessions", "tick_ms", "weights")

    def __init__(self, ring: MinuteRing, lag: LagModel, tick_ms: int,
                 horizon_minutes: int, factors: FloatArray | None = None) -> None:
        self.tick_ms = tick_ms
        self.minutes, self.buckets = ring.span_lists(tick_ms - horizon_minutes * MINUTE_MS,
                                                     tick_ms)
        count = len(self.buckets)
        self.minute_array: IntArray = np.array(self.minutes, dtype=np.int64)
        self.sessions: FloatArray = np.fromiter(map(SESSIONS, self.buckets), np.float64, count)
        self.completeness = lag.cdf_array((tick_ms - self.minute_array) / MINUTE_MS - 0.5)
        if factors is None:
            self.season: FloatArray = np.ones(count)
            self.weights: FloatArray = self.completeness
        else:
            self.season = factors[slots_of(self.minute_array)]
            self.weights = self.completeness * self.season
        self._devices: tuple[FloatArray, FloatArray] | None = None

    def __len__(self) -> int:
        return len(self.minutes)

    def first_from(self, start_ms: int) -> int:
        """Index of the first minute ``>= start_ms`` (``len(self)`` when none)."""
        return bisect_left(self.minutes, start_ms)

    def conversions(self) -> FloatArray:
        return np.fromiter(map(CONVERSIONS, self.buckets), np.float64, len(self.buckets))

    def device_series(self) -> tuple[FloatArray, FloatArray]:
        """Commerce landings and their conversions per device stratum and minute (built
        once a tick: :func:`device_series`)."""
        if self._devices is None:
            self._devices = device_series([b.device_counts for b in self.buckets])
        return self._devices

    def exposure(self, first: int) -> float:
        """Lag-adjusted sessions of the minutes from index ``first`` on."""
        return float(self.sessions[first:].copy() @ self.completeness[first:].copy())

    def season_of(self, first: int) -> float:
        """The mean hour-of-day factor of the minutes from ``first`` on, weighted by their
        lag-adjusted sessions (1 without any): the baseline rate times it is the normal
        rate of those minutes."""
        exposure = self.exposure(first)
        if exposure <= 0 or self.weights is self.completeness:
            return 1.0
        return float(self.sessions[first:] @ self.weights[first:]) / exposure


def device_series(counts: list[list[int]]) -> tuple[FloatArray, FloatArray]:
    """Per-minute ``MinuteBucket.device_counts`` (oldest first) as (sessions, conversions),
    each ``(N_STRATA, minutes)``."""
    whole = np.fromiter(chain.from_iterable(counts), np.int64, len(counts) * 2 * N_STRATA)
    table: FloatArray = whole.astype(np.float64).reshape(-1, 2 * N_STRATA).T
    return table[:N_STRATA], table[N_STRATA:]


def recent_rate(window: TickWindow, start_ms: int) -> float:
    """Lag-adjusted conversion rate of the sessions since ``start_ms`` (nan without)."""
    first = window.first_from(start_ms)
    if first == len(window):
        return math.nan
    exposure = window.exposure(first)
    conversions = sum(map(CONVERSIONS, window.buckets[first:]))
    return conversions / exposure if exposure > 0 else math.nan


def recent_p75(window: TickWindow, limits_minutes: tuple[int, ...], min_sessions: int) -> float:
    """p75 of the shortest of the windows ending at the tick (``limits_minutes``, shortest
    first) that holds ``min_sessions`` LCPs; nan when none does.

    A limit of 0 after the first ends the search (nan). The sketches' counts are summed
    first, so only the chosen window's sketches are merged (once).
    """
    minutes, buckets, tick_ms = window.minutes, window.buckets, window.tick_ms
    count, end = 0, len(minutes)
    for n, limit in enumerate(limits_minutes):
        if n and limit == 0:
            return math.nan
        start = min(end, bisect_left(minutes, tick_ms - limit * MINUTE_MS))
        count += sum(map(SKETCH_COUNT, buckets[start:end]))
        if count >= min_sessions:
            sketch = LogHistogram()
            sketch.merge_all(map(SKETCH, buckets[start:]))
            return sketch.quantile(0.75)
        if start == 0:
            return math.nan
        end = start
    return math.nan
