"""Hour-of-day factors of a campaign's conversion rate, learned over previous days.

Shops convert better at some hours than others (evening buyers, night browsers). A baseline
rate learned over the last hours is then too high at the trough of the day and too low at
its peak, and the conversion scan reads the trough as a drop. So the conversion baseline is
a rate per *seasonal session*: each session counts ``g[h]``, the factor of its hour of day
(UTC), in the baseline's sessions and in a window's exposure, and the expected conversions
of a minute are ``rate x sessions x g[h] x F(age)``. The baseline keeps its sessions per
slot too (same minutes, same half-life), so its seasonal sessions are always those of the
factors now, also for the minutes it learned before they were known.

The factors are learned from the same matured, unflagged minutes as the baseline:
exponentially forgetting conversions ``c[h]`` and sessions ``s[h]`` per hour slot
(half-life 3 days). The raw factor of a slot is its rate against the whole day's,
``(c[h] / s[h]) / (C / S)``; its log has sampling variance about ``1 / c[h]`` (Poisson
counts). A daily pattern is smooth, so the slots' log rates are fitted with three
daily harmonics (a slot borrows strength from its neighbours: one day of a campaign with 2
orders a minute gives each slot's raw factor a noise of about 8%, the fit about 4%), and
each harmonic is shrunk by its reliability (positive-part James-Stein), so a small
campaign's noise stays at 1 and a real daily pattern is kept (:func:`season_factors`).
The factors are then scaled so that their session-weighted mean is 1: a rate per seasonal
session is then the day's average rate, which the device baselines (learned over days,
unweighted) also are.

The factors are 1 until a whole day has been learned (an hour is compared with the rest of
a day, not with the few hours seen so far) and from at least 12 hours with conversions. In
that first day every matured minute is learned, also those the conversion test flagged: a
strong daily pattern reads as a drop at its trough until the factors know it, and leaving
the trough out would keep it unknown for ever. After it, flagged minutes are left out as
from the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.buckets import MinuteBucket
from detectors.ewcounts import EwVector

__all__ = ["HOUR_MS", "SLOTS", "ConversionSeason"]

HOUR_MS = 3_600_000
SLOTS = 24
DAY_MS = SLOTS * HOUR_MS
MIN_SLOTS = 12  # the factors' spread is estimated over at least this many hours
FloatArray = npt.NDArray[np.float64]


class ConversionSeason:
    """Conversions and sessions per hour-of-day slot, and the factors they give."""

    __slots__ = ("_factors", "_slot", "base", "conversions", "first_ms", "last_ms", "sessions")

    def __init__(self, *, half_life_days: float = 3.0, base_half_life_minutes: float = 720.0
                 ) -> None:
        minutes = half_life_days * 24 * 60
        self.conversions = EwVector(SLOTS, half_life_minutes=minutes)
        self.sessions = EwVector(SLOTS, half_life_minutes=minutes)
        # the conversion baseline's sessions per slot (its minutes, its half-life)
        self.base = EwVector(SLOTS, half_life_minutes=base_half_life_minutes)
        self._factors: FloatArray | None = None
        self._slot = -1  # the slot of the latest minute learned
        self.first_ms: int | None = None  # the first and the latest minute learned
        self.last_ms: int | None = None

    def learn(self, minute_ms: int, conversions: float, sessions: float) -> None:
        """A matured, unflagged minute's sessions and their conversions.

        The factors are worked out again once a minute of a new hour has been learned, not
        every minute: an hour's counts move them little, and a tick stays cheap.
        """
        if sessions <= 0:
            return
        slot = slot_of(minute_ms)
        if self.first_ms is None:
            self.first_ms = minute_ms
        self.last_ms = minute_ms
        if slot != self._slot:
            self._slot = slot
            self._factors = None
        self.conversions.add_counts(minute_ms, {slot: conversions})
        self.sessions.add_counts(minute_ms, {slot: sessions})

    def learn_base(self, minute_ms: int, sessions: float) -> None:
        """A minute the conversion baseline learned: its sessions, by slot."""
        self.base.add_counts(minute_ms, {slot_of(minute_ms): sessions})

    def base_factor(self) -> float:
        """The mean factor of the baseline's sessions: its sessions times this are its
        seasonal sessions, whatever factors were in use when it learned them."""
        total = float(self.base.values.sum())
        return float(self.base.values @ self.factors()) / total if total > 0 else 1.0

    def factors(self) -> FloatArray:
        """The 24 factors: all 1 until a whole day has been learned (each hour's rate is
        then compared with the rest of the day's, not with the few hours seen so far)."""
        if self._factors is None:
            self._factors = season_factors(self.conversions.values, self.sessions.values) \
                if self.whole_day() else np.ones(SLOTS)
        return self._factors

    def whole_day(self) -> bool:
        """Whether a whole day has been learned (the factors are in use)."""
        first, last = self.first_ms, self.last_ms
        return first is not None and last is not None and last - first >= DAY_MS

    def factor_of(self, minute_ms: int) -> float:
        return float(self.factors()[slot_of(minute_ms)])

    def to_state(self) -> dict[str, Any]:
        factors = None if self._factors is None else self._factors.tolist()
        return {"c": self.conversions.to_state(), "s": self.sessions.to_state(),
                "b": self.base.to_state(), "f": factors, "k": self._slot,
                "t": [self.first_ms, self.last_ms]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ConversionSeason:
        season = cls()
        season.conversions = EwVector.from_state(state["c"])
        season.sessions = EwVector.from_state(state["s"])
        season.base = EwVector.from_state(state["b"])
        factors = state.get("f")
        season._factors = None if factors is None else np.asarray(factors, dtype=np.float64)
        season._slot = int(state.get("k", -1))
        season.first_ms, season.last_ms = state.get("t", [None, None])
        return season

    def __eq__(self, other: object) -> bool:
        mine, theirs = self._factors, other._factors if isinstance(other, ConversionSeason) \
            else None
        return (isinstance(other, ConversionSeason) and self.conversions == other.conversions
                and self.sessions == other.sessions and self.base == other.base
                and self._slot == other._slot
                and self.first_ms == other.first_ms and self.last_ms == other.last_ms
                and (mine is None) == (theirs is None)
                and (mine is None or theirs is None or bool(np.array_equal(mine, theirs))))

    __hash__ = None  # type: ignore[assignment]  # mutable


def slot_of(minute_ms: int) -> int:
    return (minute_ms % DAY_MS) // HOUR_MS


def slots_of(minutes_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    slots: npt.NDArray[np.int64] = (minutes_ms % DAY_MS) // HOUR_MS
    return slots


def mean_factor(factors: FloatArray, minutes: Sequence[tuple[int, MinuteBucket]]) -> float:
    """The mean factor of the sessions of ``minutes`` (minute, bucket pairs; 1 without)."""
    sessions = sum(bucket.sessions for _, bucket in minutes)
    if sessions <= 0:
        return 1.0
    return sum(bucket.sessions * float(factors[slot_of(minute)])
               for minute, bucket in minutes) / sessions


def season_factors(conversions: FloatArray, sessions: FloatArray) -> FloatArray:
    """Smooth, shrunk hour-of-day factors of ``conversions / sessions`` per slot, with a
    session-weighted mean of 1; all 1 with fewer than ``MIN_SLOTS`` slots seen.

    The log rate of each slot is fitted by weighted least squares (weights: the slot's
    conversions, the inverse of its log's Poisson variance) with ``HARMONICS`` daily
    harmonics at the slots' middles, so a slot borrows strength from its neighbours (a daily
    pattern is smooth). Each harmonic is then shrunk by its reliability, positive-part
    James-Stein: ``max(0, 1 - v / a^2)`` with ``a^2`` its squared amplitude and ``v`` its
    sampling variance (over-dispersion of the slots around the fit included).

    >>> hours = np.arange(24) + 0.5
    >>> s = np.full(24, 10_000.0); c = 300.0 * (1 + 0.4 * np.cos(2 * np.pi * (hours - 20) / 24))
    >>> f = season_factors(c, s)
    >>> round(float(f[20] / f[8]), 1), round(float(f @ s / s.sum()), 9)  # truth 2.32
    (2.3, 1.0)
    """
    seen = (conversions > 0) & (sessions > 0)
    ones = np.ones(SLOTS)
    if int(seen.sum()) < MIN_SLOTS:
        return ones
    weights = conversions[seen]
    log_rate = np.log(conversions[seen] / sessions[seen])
    design = _HARMONIC_DESIGN[seen]
    normal = design.T @ (design * weights[:, None])
    beta = np.linalg.solve(normal, design.T @ (weights * log_rate))
    residual = log_rate - design @ beta
    dispersion = max(1.0, float(weights @ residual ** 2) / (len(log_rate) - design.shape[1]))
    covariance = np.linalg.inv(normal) * dispersion
    log_factors = np.zeros(SLOTS)
    for k in range(HARMONICS):
        pair = slice(1 + 2 * k, 3 + 2 * k)
        amplitude2 = float(beta[pair] @ beta[pair])
        noise = float(np.trace(covariance[pair, pair]))
        if amplitude2 > noise:
            log_factors += _HARMONIC_DESIGN[:, pair] @ beta[pair] * (1.0 - noise / amplitude2)
    factors: FloatArray = np.exp(log_factors)
    total = float(sessions.sum())
    return factors / (float(factors @ sessions) / total) if total > 0 else factors


def _harmonic_design() -> FloatArray:
    """Columns: 1, then cos and sin of each harmonic at the slots' middles."""
    angle = 2.0 * np.pi * (np.arange(SLOTS) + 0.5) / SLOTS
    columns = [np.ones(SLOTS)]
    for k in range(1, HARMONICS + 1):
        columns += [np.cos(k * angle), np.sin(k * angle)]
    design: FloatArray = np.stack(columns, axis=1)
    return design


HARMONICS = 3
_HARMONIC_DESIGN = _harmonic_design()
