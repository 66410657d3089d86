"""Exponentially forgetting mean and variance by event time (:class:`EwStats`).

An observation's weight halves every half-life of event-time minutes elapsed since it was
seen. Weights are information (e.g. the number of sessions behind a minute's value), so a
busy minute counts more than a quiet one. :mod:`detectors.baseline` builds on the helpers.
"""

from __future__ import annotations

import math
from typing import Any, Self

__all__ = ["MINUTE_MS", "EwStats"]

MINUTE_MS = 60_000
LN2 = math.log(2.0)


def decay(elapsed_minutes: float, half_life_minutes: float) -> float:
    """Factor by which a weight shrinks over ``elapsed_minutes`` (never grows)."""
    return math.exp(-LN2 * max(0.0, elapsed_minutes) / half_life_minutes)


def ew_step(mean: float, weight: float, target: float, new_weight: float) -> tuple[float, float]:
    """Weighted mean after adding ``target`` with ``new_weight`` to ``mean`` of ``weight``."""
    total = weight + new_weight
    return mean + (target - mean) * new_weight / total, total


def check_observation(value: float, weight: float) -> None:
    if not math.isfinite(value):
        msg = f"value must be finite, got {value!r}"
        raise ValueError(msg)
    if not math.isfinite(weight):
        msg = f"weight must be finite, got {weight!r}"
        raise ValueError(msg)


def check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        msg = f"{name} must be positive and finite, got {value!r}"
        raise ValueError(msg)


class EwStats:
    """Exponentially forgetting weighted mean and variance of a scalar.

    Args:
        half_life_minutes: event-time minutes after which an observation's weight halves.

    Notes:
        West's weighted incremental update, with every past weight multiplied by
        ``0.5 ** (elapsed / half_life)`` before each new observation. ``variance`` is the
        weighted second central moment (divisor = total weight), the maximum-likelihood
        variance when weights are frequencies; it is nan until some weight is seen.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(3)
        >>> stats = EwStats(half_life_minutes=600.0)
        >>> for minute in range(2000):
        ...     stats.update(minute * 60_000, float(rng.normal(5.0, 2.0)), 1.0)
        >>> round(stats.mean), round(stats.variance)
        (5, 4)
    """

    __slots__ = ("_last_minute", "_m2", "_mean", "_weight", "half_life_minutes")

    def __init__(self, *, half_life_minutes: float = 180.0) -> None:
        check_positive("half_life_minutes", half_life_minutes)
        self.half_life_minutes = float(half_life_minutes)
        self._mean = math.nan
        self._m2 = 0.0
        self._weight = 0.0
        self._last_minute: int | None = None

    @property
    def mean(self) -> float:
        """Weighted mean (nan before any weight)."""
        return self._mean

    @property
    def variance(self) -> float:
        """Weighted variance (nan before any weight)."""
        return self._m2 / self._weight if self._weight > 0 else math.nan

    @property
    def weight(self) -> float:
        """Effective weight as of the last update."""
        return self._weight

    def update(self, minute_ms: int, value: float, weight: float) -> None:
        """Fold in ``value`` observed at ``minute_ms`` with ``weight`` (<= 0 is ignored)."""
        check_observation(value, weight)
        if weight <= 0:
            return
        if self._last_minute is not None:
            factor = decay((minute_ms - self._last_minute) / MINUTE_MS, self.half_life_minutes)
            self._weight *= factor
            self._m2 *= factor
        if self._last_minute is None or minute_ms > self._last_minute:
            self._last_minute = minute_ms
        total = self._weight + weight
        delta = value - (self._mean if self._weight > 0 else value)
        self._mean = value if self._weight == 0 else self._mean + delta * weight / total
        self._m2 += weight * delta * (value - self._mean)
        self._weight = total

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state (no NaN: an empty mean is ``None``)."""
        return {
            "half_life_minutes": self.half_life_minutes,
            "mean": None if math.isnan(self._mean) else self._mean,
            "m2": self._m2,
            "weight": self._weight,
            "last_minute": self._last_minute,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_state` output."""
        stats = cls(half_life_minutes=float(state["half_life_minutes"]))
        stats._mean = math.nan if state["mean"] is None else float(state["mean"])
        stats._m2 = float(state["m2"])
        stats._weight = float(state["weight"])
        stats._last_minute = state["last_minute"]
        return stats

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EwStats):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable
