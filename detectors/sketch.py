"""Mergeable log-bucket histogram (DDSketch-like) for latencies such as session LCP.

A value ``v >= min_value`` falls in bucket ``i = ceil(log_gamma(v / min_value))`` with
``gamma = (1 + a) / (1 - a)``; the bucket's representative ``min_value * 2 gamma^i / (gamma + 1)``
is within relative error ``a`` of every value in the bucket. Values below ``min_value``
share bucket 0. Buckets are a sparse ``{index: count}`` mapping, so histograms of minutes
add and subtract exactly and a window of minutes merges in O(buckets).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Self

__all__ = ["LogHistogram", "merged"]


class LogHistogram:
    """Counts of positive values in logarithmic buckets of bounded relative width.

    Args:
        relative_accuracy: ``a`` in (0, 1): quantiles are within relative error ``a``.
        min_value: smallest value resolved; smaller values (and 0) share the lowest bucket.

    Raises:
        ValueError: for parameters outside their ranges.

    Notes:
        This is the bucketing of DDSketch (Masson, Rim & Lee, VLDB 2019) without bucket
        collapsing: the relative error guarantee ``|q_hat - q| <= a * q`` holds for every
        quantile whose true value is ``>= min_value``, where ``q`` is the value of rank
        ``floor(q * (count - 1))`` among the added values (lower quantile, no interpolation).

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(7)
        >>> values = rng.lognormal(np.log(2500.0), 0.5, size=2000)
        >>> hist = LogHistogram()
        >>> for value in values:
        ...     hist.add(float(value))
        >>> exact = float(np.sort(values)[int(0.75 * (len(values) - 1))])
        >>> abs(hist.quantile(0.75) - exact) <= 0.02 * exact
        True
        >>> hist.count
        2000
    """

    __slots__ = ("_bins", "_count", "_log_gamma", "_log_rep0", "min_value", "relative_accuracy")

    def __init__(self, relative_accuracy: float = 0.02, min_value: float = 1.0) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            msg = f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}"
            raise ValueError(msg)
        if not (math.isfinite(min_value) and min_value > 0.0):
            msg = f"min_value must be a positive finite number, got {min_value!r}"
            raise ValueError(msg)
        self.relative_accuracy = float(relative_accuracy)
        self.min_value = float(min_value)
        gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._log_gamma = math.log(gamma)
        self._log_rep0 = math.log(self.min_value) + math.log(2.0 / (gamma + 1.0))
        self._bins: dict[int, int] = {}
        self._count = 0

    @property
    def count(self) -> int:
        """Number of values added (net of subtractions)."""
        return self._count

    def index_of(self, value: float) -> int:
        """Bucket index of ``value`` (0 for values ``<= min_value``)."""
        if value <= self.min_value:
            return 0
        return math.ceil(math.log(value / self.min_value) / self._log_gamma)

    def representative(self, index: int) -> float:
        """The value standing for every value in bucket ``index``."""
        return math.exp(self._log_rep0 + index * self._log_gamma)

    def add(self, value: float, count: int = 1) -> None:
        """Add ``count`` copies of ``value`` (finite, ``>= 0``)."""
        if not (math.isfinite(value) and value >= 0.0):
            msg = f"value must be finite and >= 0, got {value!r}"
            raise ValueError(msg)
        if count < 0:
            msg = f"count must be >= 0, got {count!r}"
            raise ValueError(msg)
        if count == 0:
            return
        index = 0 if value <= self.min_value else \
            math.ceil(math.log(value / self.min_value) / self._log_gamma)  # index_of, inline
        self._bins[index] = self._bins.get(index, 0) + int(count)
        self._count += int(count)

    def discard(self, value: float) -> bool:
        """Remove one copy of ``value`` (undo one :meth:`add`); False if its bucket is empty.

        >>> hist = LogHistogram()
        >>> hist.add(2500.0)
        >>> hist.discard(2500.0), hist.discard(2500.0), hist.count
        (True, False, 0)
        """
        index = self.index_of(value)
        left = self._bins.get(index, 0) - 1
        if left < 0:
            return False
        if left:
            self._bins[index] = left
        else:
            del self._bins[index]
        self._count -= 1
        return True

    def merge(self, other: LogHistogram) -> None:
        """Add every count of ``other`` (same parameters) into this histogram."""
        self._check_compatible(other)
        bins = self._bins
        get = bins.get
        for index, count in other._bins.items():
            bins[index] = get(index, 0) + count
        self._count += other._count

    def merge_all(self, others: Iterable[LogHistogram]) -> None:
        """:meth:`merge` each of ``others`` in turn."""
        bins = self._bins
        get = bins.get
        for other in others:
            self._check_compatible(other)
            for index, count in other._bins.items():
                bins[index] = get(index, 0) + count
            self._count += other._count

    def subtract(self, other: LogHistogram) -> None:
        """Remove ``other``'s counts; ``ValueError`` (and no change) if one would go negative."""
        self._check_compatible(other)
        for index, count in other._bins.items():
            if self._bins.get(index, 0) < count:
                msg = f"cannot subtract: bucket {index} would go negative"
                raise ValueError(msg)
        for index, count in other._bins.items():
            left = self._bins[index] - count
            if left:
                self._bins[index] = left
            else:
                del self._bins[index]
        self._count -= other._count

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (lower, rank ``floor(q (count - 1))``); nan when empty."""
        if not 0.0 <= q <= 1.0:
            msg = f"q must be in [0, 1], got {q!r}"
            raise ValueError(msg)
        if self._count == 0:
            return math.nan
        rank = math.floor(q * (self._count - 1))
        bins = self._bins
        cumulative = 0
        for index in sorted(bins):  # the first bucket whose cumulative count exceeds the rank
            cumulative += bins[index]
            if cumulative > rank:
                return self.representative(index)
        msg = "histogram count does not match its buckets"  # unreachable: count = sum
        raise IndexError(msg)

    def mean_log(self) -> float:
        """Mean of ``ln(value)`` over bucket representatives; nan when empty."""
        if self._count == 0:
            return math.nan
        total = sum(count * index for index, count in self._bins.items())
        return self._log_rep0 + self._log_gamma * total / self._count

    def var_log(self) -> float:
        """Variance (divisor ``count``) of ``ln(value)`` over representatives; nan when empty."""
        if self._count == 0:
            return math.nan
        mean_index = sum(c * i for i, c in self._bins.items()) / self._count
        spread = sum(c * (i - mean_index) ** 2 for i, c in self._bins.items()) / self._count
        return spread * self._log_gamma**2

    def copy(self) -> LogHistogram:
        """An independent histogram with the same counts."""
        clone = LogHistogram(self.relative_accuracy, self.min_value)
        clone._bins = dict(self._bins)
        clone._count = self._count
        return clone

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state: parameters and ``[index, count]`` pairs sorted by index."""
        return {
            "relative_accuracy": self.relative_accuracy,
            "min_value": self.min_value,
            "bins": [[index, self._bins[index]] for index in sorted(self._bins)],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild a histogram from :meth:`to_state` output."""
        hist = cls(float(state["relative_accuracy"]), float(state["min_value"]))
        for index, count in state["bins"]:
            if int(count) < 0:
                msg = f"negative count {count!r} in state"
                raise ValueError(msg)
            if int(count):
                hist._bins[int(index)] = int(count)
        hist._count = sum(hist._bins.values())
        return hist

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogHistogram):
            return NotImplemented
        return (
            self.relative_accuracy == other.relative_accuracy
            and self.min_value == other.min_value
            and self._bins == other._bins
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: equal objects may change

    def __repr__(self) -> str:
        return (
            f"LogHistogram(relative_accuracy={self.relative_accuracy}, "
            f"min_value={self.min_value}, count={self._count}, buckets={len(self._bins)})"
        )

    def _check_compatible(self, other: LogHistogram) -> None:
        if other.relative_accuracy != self.relative_accuracy \
                or other.min_value != self.min_value:
            msg = "histograms with different relative_accuracy or min_value cannot be combined"
            raise ValueError(msg)


def merged(hists: Iterable[LogHistogram]) -> LogHistogram:
    """One histogram holding the counts of all ``hists`` (default parameters when empty).

    Examples:
        >>> a, b = LogHistogram(), LogHistogram()
        >>> a.add(1000.0, 3)
        >>> b.add(4000.0)
        >>> both = merged([a, b])
        >>> both.count, round(both.quantile(1.0) / 4000.0, 1)
        (4, 1.0)
    """
    result: LogHistogram | None = None
    for hist in hists:
        if result is None:
            result = hist.copy()
        else:
            result.merge(hist)
    return result if result is not None else LogHistogram()
