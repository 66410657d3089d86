"""The oracle of ``bench/conversion_power.py``: what the orders themselves allow.

The oracle knows the onset, the normal rate and the lag distribution exactly and tests
"fewer orders than normal since the onset" (one-sided Poisson, no tolerance, no windows, one
tick) at the same per-tick level as revwatch. Computed exactly, not simulated.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]

LAG_MEDIAN_MIN, LAG_SIGMA = 6.0, 0.9  # the simulator's order lag (streams/simulate_model.py)


def seen_probability(ages: FloatArray) -> FloatArray:
    """True P(an order of a session of the minute ``age`` minutes old is in): ``E F(age - u)``,
    the start ``u`` uniform in the minute (the scan uses ``F(age - 0.5)``)."""
    u = (np.arange(64) + 0.5) / 64
    lag = stats.lognorm(s=LAG_SIGMA, scale=LAG_MEDIAN_MIN)
    seen: FloatArray = lag.cdf(np.subtract.outer(ages, u)).mean(axis=1)
    return seen


def oracle_test(level: float, alpha: float, limit: int = 1000) -> tuple[FloatArray, FloatArray]:
    """The oracle (onset, baseline rate and lag known exactly; no tolerance, no Bonferroni,
    one tick) at minutes 1..limit after the onset: the orders expected in since the onset,
    and the largest count ``c`` with ``P(X <= c) <= alpha`` when nothing dropped (-1: none)."""
    expected = level * np.cumsum(seen_probability(np.arange(1, limit + 1, dtype=np.float64)))
    critical = stats.poisson.ppf(alpha, expected)
    critical -= stats.poisson.cdf(critical, expected) > alpha
    return expected, critical


def oracle_minutes(level: float, factor: float, alpha: float) -> int | None:
    """First minute at which the oracle's one-sided Poisson test rejects with probability
    >= 1/2 (the reference the table shows)."""
    expected, critical = oracle_test(level, alpha)
    power = np.where(critical >= 0, stats.poisson.cdf(critical, factor * expected), 0.0)
    hits = np.flatnonzero(power >= 0.5)
    return int(hits[0]) + 1 if hits.size else None


def oracle_alarmed(level: float, factor: float, alpha: float, end: int) -> FloatArray:
    """P(the oracle, testing every minute, has alarmed by minute t), t = 1..end. The orders in
    since the onset are a Poisson process: its law is carried minute by minute, the mass that
    alarms taken out."""
    expected, critical = oracle_test(level, alpha, end)
    states = max(int(critical.max()), 0) + 2  # the last state: counts that can no longer alarm
    law, alarmed = np.eye(1, states)[0], [0.0]
    for minute, step in enumerate(np.diff(factor * expected, prepend=0.0)):
        arrivals = stats.poisson.pmf(np.arange(states), step)
        arrivals[-1] += stats.poisson.sf(states - 1, step)
        spread = np.convolve(law, arrivals)
        law = spread[:states]
        law[-1] += spread[states:].sum()
        cut = int(critical[minute]) + 1
        alarmed.append(alarmed[-1] + law[:cut].sum())
        law[:cut] = 0.0
    return np.asarray(alarmed[1:])


def oracle_first_alarm(level: float, factor: float, alpha: float) -> int | None:
    """Median minute of the oracle's first alarm when it tests every minute, as revwatch does:
    never later than ``oracle_minutes`` (more chances)."""
    end = oracle_minutes(level, factor, alpha)
    if end is None:
        return None
    return int(np.argmax(oracle_alarmed(level, factor, alpha, end) >= 0.5)) + 1


def poisson_interval(count: int) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a Poisson mean from one count."""
    low = 0.0 if count == 0 else float(stats.chi2.ppf(0.025, 2 * count)) / 2
    return low, float(stats.chi2.ppf(0.975, 2 * count + 2)) / 2
