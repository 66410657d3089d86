"""A campaign's own recent normal: exponentially forgetting level plus time-of-day offsets.

:class:`SeasonalBaseline` forgets by *event time*, as :class:`~detectors.ewstats.EwStats`
(re-exported here) does: an observation's weight halves every half-life of event-time
minutes elapsed since it was seen. Weights are information (e.g. the number of sessions
behind a minute's value), so a busy minute counts more than a quiet one.
"""

from __future__ import annotations

import math
from typing import Any, Self

from detectors.ewstats import (
    LN2,
    MINUTE_MS,
    EwStats,
    check_observation,
    check_positive,
    decay,
    ew_step,
)

__all__ = ["MINUTE_MS", "EwStats", "SeasonalBaseline"]


class SeasonalBaseline:
    """Expected value of a per-minute series: ``level + season[slot(t)]``.

    Args:
        level_half_life_minutes: event-time half-life of the level.
        season_half_life_days: half-life of each slot's offset, in days.
        slot_minutes: width of a seasonal slot (60: hour of day).
        slots: number of slots in a cycle (24 hourly slots: one day).
        season_prior_weight: weight of the prior "offset = 0", in minutes of traffic at
            the level's recent rate (``level_weight * ln 2 / level_half_life_minutes``).
        shrink_offsets: shrink each offset by its empirical-Bayes reliability
            (:meth:`reliability`); ``False`` only to measure what that does.

    Raises:
        ValueError: for non-positive parameters (``season_prior_weight`` may be 0).

    Notes:
        Additive Holt-Winters with weights and event-time forgetting. The level is the
        weighted exponentially forgetting mean of ``x - season[slot]``. Each slot's offset
        is the forgetting mean (half-life in days) of ``x - slow_level``, where the slow
        level is the same mean with a half-life of half a cycle: against the fast level
        the residuals would mostly be the level's own lag (the fast level chases the
        daily swing), and the season would take weeks to converge instead of about a
        day. Residuals are pooled over one *visit* of a slot (e.g. 9:00-10:00 today) and
        folded in only when the visit ends, so a slot seen on no previous day contributes
        exactly 0 and the level alone predicts. Offsets are shrunk by
        ``w / (w + prior)`` and re-centred to weighted mean 0 after every fold.

        Each offset is a noisy estimate: its sampling variance is
        ``v_s = u * sum(a^2 w) / sum(a w)^2`` over the slot's visits (``a`` the forgetting
        factors, ``w`` the visits' weights, ``u`` the variance of one unit of weight,
        estimated as the forgetting mean of ``w * (x - expected)^2`` over minutes). The
        true offsets are taken as drawn from ``N(0, tau^2)`` with ``tau^2`` estimated by
        moments, ``max(0, mean_s(offset_s^2 - v_s))``, and :meth:`expected` uses the
        posterior mean ``offset_s * tau^2 / (tau^2 + v_s)`` (positive-part James-Stein).
        Without it, a campaign with a session a minute learns hour-of-day offsets of pure
        noise (sd ~0.06 in log-LCP, i.e. half the latency CUSUM's reference value) that
        hold for a whole hour; with it they shrink towards 0 unless the hours really
        differ by more than their noise.
        It holds when the seasonal shape is stable over ``season_half_life_days`` and
        the level drifts slowly against ``level_half_life_minutes``; a level step shows
        up in the offsets of the slots that follow it for about a day (visible, small).
        Minutes earlier than the latest update are treated as seen at the latest minute.

    Examples:
        >>> import numpy as np
        >>> import math
        >>> rng = np.random.default_rng(11)
        >>> base = SeasonalBaseline()
        >>> def truth(minute):
        ...     return 10.0 + 3.0 * math.sin(2 * math.pi * minute / 1440)
        >>> for minute in range(4 * 1440):
        ...     base.update(minute * 60_000, truth(minute) + float(rng.normal(0, 0.5)), 20.0)
        >>> abs(base.expected(4 * 1440 * 60_000 + 360 * 60_000) - truth(360)) < 0.5
        True
    """

    __slots__ = (
        "_between_var",
        "_last_minute",
        "_level",
        "_level_weight",
        "_offsets",
        "_pending",
        "_season_minute",
        "_slot_squares",
        "_slot_weights",
        "_slow_level",
        "_slow_weight",
        "_unit_var",
        "level_half_life_minutes",
        "season_half_life_days",
        "season_prior_weight",
        "shrink_offsets",
        "slot_minutes",
        "slots",
    )

    def __init__(
        self,
        *,
        level_half_life_minutes: float = 180.0,
        season_half_life_days: float = 3.0,
        slot_minutes: int = 60,
        slots: int = 24,
        season_prior_weight: float = 1.0,
        shrink_offsets: bool = True,
    ) -> None:
        check_positive("level_half_life_minutes", level_half_life_minutes)
        check_positive("season_half_life_days", season_half_life_days)
        if (
            int(slot_minutes) != slot_minutes
            or slot_minutes < 1
            or int(slots) != slots
            or slots < 1
        ):
            msg = f"slot_minutes and slots must be positive integers, got {slot_minutes}, {slots}"
            raise ValueError(msg)
        if not (math.isfinite(season_prior_weight) and season_prior_weight >= 0):
            msg = f"season_prior_weight must be >= 0, got {season_prior_weight!r}"
            raise ValueError(msg)
        self.level_half_life_minutes = float(level_half_life_minutes)
        self.season_half_life_days = float(season_half_life_days)
        self.slot_minutes = int(slot_minutes)
        self.slots = int(slots)
        self.season_prior_weight = float(season_prior_weight)
        self.shrink_offsets = bool(shrink_offsets)
        self._level = math.nan
        self._level_weight = 0.0
        self._last_minute: int | None = None
        self._offsets = [0.0] * self.slots
        self._slot_weights = [0.0] * self.slots
        self._season_minute: int | None = None
        self._slow_level = math.nan
        self._slow_weight = 0.0
        self._pending: list[float] = []  # [period, weight, weighted residual sum] or empty
        self._slot_squares = [0.0] * self.slots  # sum of (decay^2 x visit weight) per slot
        self._unit_var = EwStats(half_life_minutes=self.slots * self.slot_minutes / 2.0)
        self._between_var = math.inf  # until estimated: offsets are not shrunk

    @property
    def level_weight(self) -> float:
        """Effective weight behind the level, as of the last update."""
        return self._level_weight

    def slot_of(self, minute_ms: int) -> int:
        """Seasonal slot of an event-time minute."""
        return self._period_of(minute_ms) % self.slots

    def offset(self, minute_ms: int) -> float:
        """The shrunk seasonal offset that :meth:`expected` adds at ``minute_ms``."""
        if self._last_minute is None or self._season_minute is None:
            return 0.0
        slot = self.slot_of(minute_ms)
        days = (minute_ms - self._season_minute) / MINUTE_MS
        weight = self._slot_weights[slot] * decay(days, self.season_half_life_days * 1440.0)
        prior = self.season_prior_weight * self._minute_weight(minute_ms)
        if weight <= 0:
            return 0.0
        return self._offsets[slot] * weight / (weight + prior) * self.reliability(slot)

    def reliability(self, slot: int) -> float:
        """Empirical-Bayes factor ``tau^2 / (tau^2 + v)`` by which a slot's offset is shrunk.

        ``v`` is the sampling variance of the slot's offset estimate and ``tau^2`` the
        variance of the true offsets between slots (both estimated, see :meth:`_fold`).
        """
        variance = self._offset_variance(slot)
        if not self.shrink_offsets or math.isinf(self._between_var) or math.isnan(variance):
            return 1.0
        if self._between_var <= 0.0:
            return 0.0
        return self._between_var / (self._between_var + variance)

    def _offset_variance(self, slot: int) -> float:
        """Sampling variance of a slot's offset: ``unit variance x sum(a^2 w) / sum(a w)^2``."""
        weight = self._slot_weights[slot]
        unit = self._unit_var.mean
        if weight <= 0 or math.isnan(unit):
            return math.nan
        return unit * (self._slot_squares[slot] / weight) / weight  # no underflow of w^2

    def expected(self, minute_ms: int) -> float:
        """Expected value at ``minute_ms`` (nan before any update)."""
        return self._level + self.offset(minute_ms)

    def update(self, minute_ms: int, value: float, weight: float) -> None:
        """Learn ``value`` seen at ``minute_ms`` with ``weight`` (<= 0 is ignored)."""
        check_observation(value, weight)
        if weight <= 0:
            return
        period = self._period_of(minute_ms)
        if self._pending and self._pending[0] != period:
            self._fold(minute_ms)
        residual = 0.0 if self._last_minute is None else value - self._slow_level
        if self._last_minute is not None:  # weight x squared error estimates the unit variance
            self._unit_var.update(minute_ms, weight * (value - self.expected(minute_ms)) ** 2, 1.0)
        if not self._pending:
            self._pending = [float(period), 0.0, 0.0]
        self._pending[1] += weight
        self._pending[2] += weight * residual
        self._update_levels(minute_ms, value - self.offset(minute_ms), weight)

    def _period_of(self, minute_ms: int) -> int:
        return minute_ms // (MINUTE_MS * self.slot_minutes)

    def _minute_weight(self, minute_ms: int) -> float:
        """The weight one minute carries at the level's recent rate."""
        if self._last_minute is None:
            return 0.0
        elapsed = (minute_ms - self._last_minute) / MINUTE_MS
        weight = self._level_weight * decay(elapsed, self.level_half_life_minutes)
        return weight * LN2 / self.level_half_life_minutes

    def _update_levels(self, minute_ms: int, target: float, weight: float) -> None:
        if self._last_minute is None:
            self._level = self._slow_level = target
            self._level_weight = self._slow_weight = weight
            self._last_minute = minute_ms
            return
        elapsed = (minute_ms - self._last_minute) / MINUTE_MS
        self._level, self._level_weight = ew_step(
            self._level,
            self._level_weight * decay(elapsed, self.level_half_life_minutes),
            target,
            weight,
        )
        slow_half_life = self.slots * self.slot_minutes / 2.0
        self._slow_level, self._slow_weight = ew_step(
            self._slow_level, self._slow_weight * decay(elapsed, slow_half_life), target, weight
        )
        self._last_minute = max(self._last_minute, minute_ms)

    def _fold(self, minute_ms: int) -> None:
        """Close the pending visit: fold its mean residual into its slot, then re-centre."""
        period, weight, residual_sum = self._pending
        self._pending = []
        visit_end = min(minute_ms, int(period + 1) * self.slot_minutes * MINUTE_MS)
        self._decay_season(visit_end)
        slot = int(period) % self.slots
        old = self._slot_weights[slot]
        self._offsets[slot] = (old * self._offsets[slot] + residual_sum) / (old + weight)
        self._slot_weights[slot] = old + weight
        self._slot_squares[slot] += weight
        total = sum(self._slot_weights)
        centre = sum(w * o for w, o in zip(self._slot_weights, self._offsets, strict=True)) / total
        self._offsets = [
            o - centre if w > 0 else 0.0
            for w, o in zip(self._slot_weights, self._offsets, strict=True)
        ]
        self._between_var = self._estimate_between_var()

    def _estimate_between_var(self) -> float:
        """Moment estimate of the true offsets' variance: mean of ``offset^2 - v`` over the
        slots seen, at least 0 (inf while the unit variance is unknown: no shrinkage)."""
        seen = [s for s in range(self.slots) if self._slot_weights[s] > 0]
        variances = [self._offset_variance(s) for s in seen]
        if not seen or any(math.isnan(v) for v in variances):
            return math.inf
        excess = sum(self._offsets[s] ** 2 - v for s, v in zip(seen, variances, strict=True))
        return max(0.0, excess / len(seen))

    def _decay_season(self, minute_ms: int) -> None:
        if self._season_minute is not None:
            elapsed = (minute_ms - self._season_minute) / MINUTE_MS
            factor = decay(elapsed, self.season_half_life_days * 1440.0)
            self._slot_weights = [w * factor for w in self._slot_weights]
            self._slot_squares = [q * factor * factor for q in self._slot_squares]
        if self._season_minute is None or minute_ms > self._season_minute:
            self._season_minute = minute_ms

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state (NaN-free: the level is ``None`` before any update)."""
        return {
            "level_half_life_minutes": self.level_half_life_minutes,
            "season_half_life_days": self.season_half_life_days,
            "slot_minutes": self.slot_minutes,
            "slots": self.slots,
            "season_prior_weight": self.season_prior_weight,
            "shrink_offsets": self.shrink_offsets,
            "level": None if math.isnan(self._level) else self._level,
            "level_weight": self._level_weight,
            "last_minute": self._last_minute,
            "offsets": list(self._offsets),
            "slot_weights": list(self._slot_weights),
            "season_minute": self._season_minute,
            "slow_level": None if math.isnan(self._slow_level) else self._slow_level,
            "slow_weight": self._slow_weight,
            "pending": list(self._pending),
            "slot_squares": list(self._slot_squares),
            "unit_var": self._unit_var.to_state(),
            "between_var": None if math.isinf(self._between_var) else self._between_var,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_state` output."""
        base = cls(
            level_half_life_minutes=float(state["level_half_life_minutes"]),
            season_half_life_days=float(state["season_half_life_days"]),
            slot_minutes=int(state["slot_minutes"]),
            slots=int(state["slots"]),
            season_prior_weight=float(state["season_prior_weight"]),
            shrink_offsets=bool(state.get("shrink_offsets", True)),
        )
        base._level = math.nan if state["level"] is None else float(state["level"])
        base._level_weight = float(state["level_weight"])
        base._last_minute = state["last_minute"]
        base._offsets = [float(x) for x in state["offsets"]]
        base._slot_weights = [float(x) for x in state["slot_weights"]]
        base._season_minute = state["season_minute"]
        base._slow_level = math.nan if state["slow_level"] is None else float(state["slow_level"])
        base._slow_weight = float(state["slow_weight"])
        base._pending = [float(x) for x in state["pending"]]
        if "unit_var" in state:  # older states: no shrinkage until the next fold
            base._slot_squares = [float(x) for x in state["slot_squares"]]
            base._unit_var = EwStats.from_state(state["unit_var"])
            between = state["between_var"]
            base._between_var = math.inf if between is None else float(between)
        else:
            base._slot_squares = list(base._slot_weights)  # as if one visit each
        if len(base._offsets) != base.slots or len(base._slot_weights) != base.slots:
            msg = "state offsets/slot_weights do not match slots"
            raise ValueError(msg)
        return base

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeasonalBaseline):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable
