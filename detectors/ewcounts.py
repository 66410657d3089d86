"""Exponentially forgetting counts, indexed by event-time minute.

Used for the conversion baseline (conversions over matured sessions), the per-bin
latency-to-conversion data, and the order value. Forgetting is by event time, so a replay
and a live worker learn the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

MINUTE_MS = 60_000


class EwVector:
    """A vector of counts that halves every ``half_life_minutes`` of event time.

    >>> v = EwVector(2, half_life_minutes=60.0)
    >>> v.add(0, np.array([1.0, 2.0]))
    >>> v.add(60 * 60_000, np.array([1.0, 0.0]))
    >>> v.values.tolist()
    [1.5, 1.0]
    """

    __slots__ = ("_last_ms", "half_life_minutes", "values")

    def __init__(self, size: int, *, half_life_minutes: float) -> None:
        if size < 1 or half_life_minutes <= 0:
            msg = "size must be >= 1 and half_life_minutes > 0"
            raise ValueError(msg)
        self.half_life_minutes = half_life_minutes
        self.values = np.zeros(size)
        self._last_ms: int | None = None

    def decay_to(self, minute_ms: int) -> None:
        """Forget up to ``minute_ms``; earlier minutes never un-forget."""
        if self._last_ms is None:
            self._last_ms = minute_ms
            return
        elapsed = (minute_ms - self._last_ms) / MINUTE_MS
        if elapsed > 0:
            self.values *= 0.5 ** (elapsed / self.half_life_minutes)
            self._last_ms = minute_ms

    def add(self, minute_ms: int, amounts: np.ndarray) -> None:
        self.decay_to(minute_ms)
        self.values += amounts

    def add_counts(self, minute_ms: int, counts: Mapping[int, float]) -> None:
        """:meth:`add` of the vector that holds ``counts`` at their indices and 0 elsewhere
        (the same sums, without building the vector)."""
        self.decay_to(minute_ms)
        values = self.values
        for index, count in counts.items():
            values[index] += count

    def merge(self, other: EwVector) -> None:
        """Add ``other``'s counts (of the same half-life), both forgotten to the later of
        their last minutes."""
        if other._last_ms is None:
            return
        if self._last_ms is None:
            self.values = other.values.copy()
            self._last_ms = other._last_ms
            return
        later = max(self._last_ms, other._last_ms)
        self.decay_to(later)
        elapsed = (later - other._last_ms) / MINUTE_MS
        self.values += other.values * 0.5 ** (elapsed / self.half_life_minutes)

    def to_state(self) -> dict[str, Any]:
        return {"h": self.half_life_minutes, "v": self.values.tolist(), "t": self._last_ms}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EwVector:
        vector = cls(len(state["v"]), half_life_minutes=float(state["h"]))
        vector.values = np.asarray(state["v"], dtype=float)
        vector._last_ms = None if state["t"] is None else int(state["t"])
        return vector

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EwVector) and self._last_ms == other._last_ms
                and self.half_life_minutes == other.half_life_minutes
                and bool(np.array_equal(self.values, other.values)))

    __hash__ = None  # type: ignore[assignment]  # mutable
