"""Stake weights: each campaign's share of the conversion test's false-alarm budget.

Weighted Bonferroni / weighted Benjamini-Hochberg (Genovese, Roeder & Wasserman 2006;
Roeder & Wasserman 2009): with weights ``w_c >= 0`` of mean 1 over the ``m`` campaigns
tested, testing ``p_c / w_c`` at the unweighted levels keeps the sum of the per-campaign
levels (Bonferroni) and the false discovery rate (BH) of the unweighted test, while
campaign ``c`` alone is rejected at ``w_c * alpha`` instead of ``alpha``.

The weight follows what a missed drop costs: the campaign's *stake*, the revenue per
hour it makes when it converts normally (sessions per minute now x baseline conversion
rate x average order value x 60), raised to ``power`` and scaled to mean 1, each weight
held in ``[floor, cap]`` (the scale is solved so that the mean is exactly 1 after the
clipping). A campaign with no stake (no order value yet, no sessions) gets the floor;
if no campaign has a stake, or ``power`` is 0, every weight is 1 (the unweighted test).

Pure: no clock, no I/O. Computed per tick over the campaigns the tick tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from detectors.verdicts import CampaignVerdict

MINUTES_PER_HOUR = 60.0


def stake_per_hour(verdict: CampaignVerdict) -> float:
    """Revenue per hour at the campaign's current traffic and normal conversion (0 if
    unknown): what a conversion drop puts at risk."""
    value = (verdict.sessions_per_minute * verdict.conversion_rate_baseline
             * verdict.average_order_value * MINUTES_PER_HOUR)
    return value if math.isfinite(value) and value > 0 else 0.0


def stake_weights(stakes: Sequence[float], power: float, floor: float = 0.25,
                  cap: float = 4.0) -> list[float]:
    """Weights of mean 1, increasing with the stake, each in ``[floor, cap]``.

    Args:
        stakes: one non-negative stake per campaign (``nan`` and negatives count as 0).
        power: weight proportional to ``stake ** power`` before clipping; 0 gives all 1.
        floor: the smallest weight, in ``[0, 1]``.
        cap: the largest weight, ``>= 1``.

    Returns:
        ``w_c = clip(t * stake_c ** power, floor, cap)`` with ``t`` such that the mean is 1
        (all 1 when ``power`` is 0 or no stake is positive).

    >>> stake_weights([100.0, 100.0], 1.0)
    [1.0, 1.0]
    >>> stake_weights([900.0, 100.0, 0.0], 0.5)
    [2.0625, 0.6875, 0.25]
    """
    if not 0 <= floor <= 1 <= cap or power < 0:
        msg = f"need 0 <= floor <= 1 <= cap and power >= 0: {floor}, {cap}, {power}"
        raise ValueError(msg)
    raw = [s ** power if math.isfinite(s) and s > 0 else 0.0 for s in stakes]
    m = len(raw)
    if power == 0 or not any(raw):
        return [1.0] * m
    scale = _scale(raw, floor, cap)
    return [min(max(scale * r, floor), cap) for r in raw]


def _scale(raw: list[float], floor: float, cap: float) -> float:
    """The ``t`` with ``sum(clip(t * r, floor, cap)) = len(raw)``, exactly: the sum is
    piecewise linear and non-decreasing in ``t``; walk its breakpoints in order."""
    m = len(raw)
    positive = [r for r in raw if r > 0]
    zeros = m - len(positive)
    # events: t where a weight leaves the floor (free) or reaches the cap (fixed at cap)
    events = sorted([(floor / r, 0, r) for r in positive] + [(cap / r, 1, r) for r in positive])
    at_floor, at_cap, free = len(positive), 0, 0.0  # free: sum of r of unclipped weights
    for t, kind, r in events:
        # on the segment up to this event: sum = (zeros + at_floor) * floor + at_cap * cap
        # + t' * free, for t' <= t
        fixed = (zeros + at_floor) * floor + at_cap * cap
        if free > 0 and fixed + t * free >= m:
            return _refine(raw, floor, cap, (m - fixed) / free)
        if kind == 0:
            at_floor -= 1
            free += r
        else:
            at_cap += 1
            free -= r
    return events[-1][0]  # every positive stake at the cap: the mean stays below 1


def _refine(raw: list[float], floor: float, cap: float, t: float) -> float:
    """The scale solved again on the clipping that ``t`` gives, with the free stakes summed
    afresh (the running sum of the walk loses digits when stakes span many magnitudes)."""
    fixed = 0.0
    free = 0.0
    for r in raw:
        if t * r <= floor:
            fixed += floor
        elif t * r >= cap:
            fixed += cap
        else:
            free += r
    return (len(raw) - fixed) / free if free > 0 else t


def weighted_p_values(p_values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """``p / w`` (``nan`` stays ``nan``: never rejected); a weight of 0 gives ``inf``."""
    return [p / w if w > 0 else math.inf for p, w in zip(p_values, weights, strict=True)]
