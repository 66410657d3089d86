"""Online distribution of the delay from session start to order (conversion lag)."""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

__all__ = ["LagModel"]

FloatArray = npt.NDArray[np.float64]


def _lognormal_pmf(horizon_minutes: int, median_minutes: float, sigma: float) -> FloatArray:
    """Probabilities of the whole-minute bins ``[m, m + 1)``, ``m < horizon``, of a log-normal
    truncated to the horizon."""
    edges = np.arange(1, horizon_minutes + 1, dtype=np.float64)
    cdf = np.concatenate(([0.0], ndtr((np.log(edges) - math.log(median_minutes)) / sigma)))
    pmf: FloatArray = np.diff(cdf) / cdf[-1]
    return pmf


class LagModel:
    """Histogram of session-start -> order delays, forgetting old orders, with a prior.

    Args:
        horizon_minutes: delays of ``horizon_minutes`` or more are not modelled.
        prior_median_minutes: median of the log-normal prior.
        prior_sigma: log-scale spread of the prior.
        prior_weight: the prior counts as this many orders.
        half_life_orders: an order's weight halves after this many newer orders.

    Raises:
        ValueError: for non-positive or non-finite parameters.

    Notes:
        ``F(a)`` is the posterior-mean CDF of a multinomial over whole-minute bins with a
        Dirichlet prior proportional to a discretised log-normal: ``(counts + w * prior) /
        (n + w)``, with counts forgotten exponentially per order so the model follows a
        changing checkout. ``F`` is conditional on the order arriving within the horizon
        (orders later than that are counted in ``beyond_horizon`` and otherwise ignored):
        the nowcast ``expected = rate * sessions * F(age)`` is then unbiased for the
        conversions a matured minute will show within the horizon. Inside a minute ``F``
        is linear, which assumes a flat delay density across the minute.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(2)
        >>> model = LagModel()
        >>> for lag in rng.lognormal(np.log(6.0), 0.9, size=3000):
        ...     model.update(float(lag))
        >>> round(model.cdf(6.0), 2)
        0.5
        >>> model.cdf(0.0), model.cdf(120.0)
        (0.0, 1.0)
    """

    __slots__ = (
        "_counts",
        "_grid",
        "_knots",
        "_prior",
        "beyond_horizon",
        "half_life_orders",
        "horizon_minutes",
        "prior_median_minutes",
        "prior_sigma",
        "prior_weight",
    )

    def __init__(
        self,
        *,
        horizon_minutes: int = 120,
        prior_median_minutes: float = 8.0,
        prior_sigma: float = 1.0,
        prior_weight: float = 30.0,
        half_life_orders: float = 5000.0,
    ) -> None:
        if int(horizon_minutes) != horizon_minutes or horizon_minutes < 1:
            msg = f"horizon_minutes must be a positive integer, got {horizon_minutes!r}"
            raise ValueError(msg)
        for name, value in (
            ("prior_median_minutes", prior_median_minutes),
            ("prior_sigma", prior_sigma),
            ("prior_weight", prior_weight),
            ("half_life_orders", half_life_orders),
        ):
            if not (math.isfinite(value) and value > 0):
                msg = f"{name} must be positive and finite, got {value!r}"
                raise ValueError(msg)
        self.horizon_minutes = int(horizon_minutes)
        self.prior_median_minutes = float(prior_median_minutes)
        self.prior_sigma = float(prior_sigma)
        self.prior_weight = float(prior_weight)
        self.half_life_orders = float(half_life_orders)
        self.beyond_horizon = 0
        self._prior = _lognormal_pmf(self.horizon_minutes, prior_median_minutes, prior_sigma)
        self._counts: FloatArray = np.zeros(self.horizon_minutes)
        self._grid = np.arange(self.horizon_minutes + 1, dtype=np.float64)
        self._knots: FloatArray | None = None  # cache of F at whole minutes

    @property
    def weight(self) -> float:
        """Effective number of orders behind the histogram (excluding the prior)."""
        return float(self._counts.sum())

    def update(self, lag_minutes: float) -> None:
        """Learn one order's delay (negative delays count as 0)."""
        if not math.isfinite(lag_minutes):
            msg = f"lag_minutes must be finite, got {lag_minutes!r}"
            raise ValueError(msg)
        if lag_minutes >= self.horizon_minutes:
            self.beyond_horizon += 1
            return
        self._counts *= math.exp(-math.log(2.0) / self.half_life_orders)
        self._counts[max(0, int(lag_minutes))] += 1.0
        self._knots = None

    def revert(self, lag_minutes: float) -> None:
        """Undo one :meth:`update` (a retracted order); no count goes below zero.

        The forgetting that update applied to the other bins is not undone: a factor of
        ``2 ** (-1 / half_life_orders)`` (0.99986 by default), well inside the model's noise.
        """
        if not math.isfinite(lag_minutes):
            msg = f"lag_minutes must be finite, got {lag_minutes!r}"
            raise ValueError(msg)
        if lag_minutes >= self.horizon_minutes:
            self.beyond_horizon = max(self.beyond_horizon - 1, 0)
            return
        index = max(0, int(lag_minutes))
        self._counts[index] = max(self._counts[index] - 1.0, 0.0)
        self._knots = None

    def pmf(self) -> FloatArray:
        """Blended probability of each whole-minute bin ``[m, m + 1)``."""
        blended: FloatArray = self._counts + self.prior_weight * self._prior
        pmf: FloatArray = blended / blended.sum()
        return pmf

    def cdf_array(self, ages: npt.ArrayLike) -> FloatArray:
        """``F(age)`` for every age in minutes (0 below 0, 1 from the horizon on)."""
        if self._knots is None:
            knots = np.concatenate(([0.0], np.cumsum(self.pmf())))
            knots[-1] = 1.0
            self._knots = knots
        result: FloatArray = np.interp(np.asarray(ages, dtype=np.float64), self._grid, self._knots)
        return result

    def cdf(self, age_minutes: float) -> float:
        """Fraction of the within-horizon orders placed within ``age_minutes`` of the start."""
        return float(self.cdf_array(np.array([age_minutes]))[0])

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state (the counts as a list of floats)."""
        return {
            "horizon_minutes": self.horizon_minutes,
            "prior_median_minutes": self.prior_median_minutes,
            "prior_sigma": self.prior_sigma,
            "prior_weight": self.prior_weight,
            "half_life_orders": self.half_life_orders,
            "beyond_horizon": self.beyond_horizon,
            "counts": [float(c) for c in self._counts],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_state` output."""
        model = cls(
            horizon_minutes=int(state["horizon_minutes"]),
            prior_median_minutes=float(state["prior_median_minutes"]),
            prior_sigma=float(state["prior_sigma"]),
            prior_weight=float(state["prior_weight"]),
            half_life_orders=float(state["half_life_orders"]),
        )
        counts = np.asarray(state["counts"], dtype=np.float64)
        if counts.shape != (model.horizon_minutes,) or bool(np.any(counts < 0)):
            msg = "state counts must be horizon_minutes non-negative numbers"
            raise ValueError(msg)
        model._counts = counts
        model._knots = None
        model.beyond_horizon = int(state["beyond_horizon"])
        return model

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LagModel):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable
