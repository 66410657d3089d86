"""The simulated checkout funnel: who reaches the checkout, when, who orders, when.

A session whose probability of ordering before any payment-side incident is ``p`` reaches
the checkout with probability ``min(p / q, 1)``; a session that reached it orders with
probability ``q`` (:attr:`FunnelSpec.order_given_checkout`) times the payment-side
incidents' factors. In normal times a session so orders with probability ``p`` (when
``p <= q``), as without a funnel. Session start to checkout page and checkout page to
order are log-normal (:class:`Lag`). Design: docs/FUNNEL.md, "Simulation".

Pure functions over numpy arrays; the randomness comes from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Lag:
    """A log-normal delay: its median and the sigma of its log, bounded to
    ``[min_min, max_min]`` (all in minutes)."""

    median_min: float
    sigma: float
    min_min: float
    max_min: float

    def __post_init__(self) -> None:
        if not 0.0 < self.min_min <= self.median_min <= self.max_min or self.sigma < 0.0:
            msg = f"lag needs 0 < min <= median <= max and sigma >= 0, got {self!r}"
            raise ValueError(msg)

    def draw_ms(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` delays in whole milliseconds."""
        minutes = np.exp(math.log(self.median_min) + self.sigma * rng.standard_normal(n))
        bounded = np.clip(minutes, self.min_min, self.max_min) * _MINUTE_MS
        delays: IntArray = bounded.astype(np.int64)
        return delays


@dataclass(frozen=True, slots=True)
class FunnelSpec:
    """The checkout funnel of a scenario (a campaign may set its own ``q``).

    ``order_given_checkout`` (``q``): P(order | reached the checkout) in normal times.
    ``to_checkout``: session start to the checkout page (median 4 min, capped at 25 min,
    inside the 30-minute session timeout). ``to_order``: checkout page to order (median
    2 min); the two together: a median of about 6.7 minutes from session start to order.
    """

    order_given_checkout: float = 0.5
    to_checkout: Lag = Lag(4.0, 1.0, 1.0 / 3.0, 25.0)
    to_order: Lag = Lag(2.0, 0.7, 1.0 / 6.0, 30.0)

    def __post_init__(self) -> None:
        if not 0.0 < self.order_given_checkout <= 1.0:
            msg = f"order_given_checkout must be in (0, 1], got {self.order_given_checkout!r}"
            raise ValueError(msg)


DEFAULT_FUNNEL = FunnelSpec()


def split_conversion(p: FloatArray, q: float, payment: FloatArray
                     ) -> tuple[FloatArray, FloatArray]:
    """(P(reach the checkout), P(order | reached)) per session.

    ``p``: the probability of ordering before any payment-side incident; ``q``: P(order |
    reached) in normal times; ``payment``: the product of the payment-side incident
    factors that apply to each session.

    >>> reach, order = split_conversion(np.array([0.02, 0.8]), 0.5, np.array([1.0, 0.5]))
    >>> reach.tolist(), order.tolist()
    ([0.04, 1.0], [0.5, 0.25])
    """
    reach: FloatArray = np.minimum(p / q, 1.0)
    order: FloatArray = q * payment
    return reach, order


def checkout_times(rng: np.random.Generator, start_ms: IntArray, lag: Lag) -> IntArray:
    """When each session would show its checkout page (drawn for every session, so an
    incident's expected effect can be summed over the sessions it would have met)."""
    return start_ms + lag.draw_ms(rng, len(start_ms))


def draw_funnel(rng: np.random.Generator, p_reach: FloatArray, p_order: FloatArray
                ) -> tuple[BoolArray, BoolArray]:
    """(reached the checkout, ordered) per session; only a session that reached it orders."""
    n = len(p_reach)
    reached: BoolArray = rng.random(n) < p_reach
    ordered: BoolArray = reached & (rng.random(n) < p_order)
    return reached, ordered


def order_times(rng: np.random.Generator, checkout_ms: IntArray, lag: Lag) -> IntArray:
    """When each ordering session orders: its checkout page, then ``lag``."""
    return checkout_ms + lag.draw_ms(rng, len(checkout_ms))
