"""Revenue at risk per hour, each figure with a 90% interval (delta method).

Two figures, following PEERS.md section 2.3:

* :func:`slow_page_loss` - the latency-attributable part (standardisation): the current
  sessions' expected conversions at the baseline LCP mix minus at the current mix, through
  the fitted conversion-vs-LCP curve, times sessions per hour and AOV. Available minutes
  after pages slow down, long before enough orders are missing to prove it.
* :func:`conversion_loss` - the total loss whatever the cause: (expected - observed)
  conversions per hour times AOV.

Every interval treats the factors of the product as independent and adds their
variances exactly (``Var(XY) = mx^2 Vy + my^2 Vx + Vx Vy``), then takes
``value +- Z90 * sd`` clipped at 0: revenue at risk is never negative.

Notes:
    ``tests/unit/test_revenue_coverage.py`` measures the coverage of these intervals on
    seeded simulations with known truth. The normal approximation needs a handful of
    conversions; with very few, the intervals are wide and clipped at 0 rather than exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

from detectors.elasticity import BIN_CENTERS_S, N_BINS, CurveFit
from detectors.strata import StrataFit, by_stratum
from detectors.verdicts import Estimate

FloatArray = npt.NDArray[np.float64]

Z90: float = float(norm.ppf(0.95))
DEFAULT_AOV_CV = 1.0  # prior coefficient of variation of one order's value


def slow_page_loss(
    fit: CurveFit,
    baseline_mix: npt.ArrayLike,
    current_mix: npt.ArrayLike,
    *,
    sessions_per_hour: float,
    sessions_observed: float,
    average_order_value: float,
    aov_se: float,
    baseline_sessions: float = math.inf,
) -> Estimate:
    """Revenue per hour lost because pages are slower than at baseline.

    ``value = sessions_per_hour * (p(baseline mix) - p(current mix)) * AOV``.

    Args:
        fit: the campaign's conversion-vs-LCP curve.
        baseline_mix: sessions per LCP bin in the baseline (any scale).
        current_mix: sessions per LCP bin now (any scale).
        sessions_per_hour: current traffic, estimated from ``sessions_observed``.
        sessions_observed: sessions behind ``sessions_per_hour`` and ``current_mix``.
        average_order_value: AOV in the reporting currency.
        aov_se: its standard error.
        baseline_sessions: sessions behind ``baseline_mix`` (default: noiseless).

    Returns:
        The loss with a 90% interval accounting for the curve's parameters (delta method),
        the sampling noise of both mixes (multinomial), the Poisson noise of the sessions
        rate and the AOV's standard error. Zero if there is no traffic or no mix.

    Raises:
        ValueError: negative or non-finite inputs, or mixes of the wrong shape.

    >>> fit = CurveFit(math.log(0.05), -0.2, ((0.0, 0.0), (0.0, 0.0)), 1e4, 500.0)
    >>> fast, slow = np.eye(N_BINS)[0], np.eye(N_BINS)[8]
    >>> loss = slow_page_loss(fit, fast, slow, sessions_per_hour=1000.0,
    ...     sessions_observed=math.inf, average_order_value=50.0, aov_se=0.0)
    >>> round(loss.value, 2), loss.low == loss.value == loss.high   # 1000 * 0.01608 * 50
    (803.85, True)
    """
    _check_non_negative(sessions_per_hour=sessions_per_hour,
                        average_order_value=average_order_value, aov_se=aov_se)
    _check_non_negative(sessions_observed=sessions_observed, baseline_sessions=baseline_sessions,
                        allow_inf=True)
    q0, q1 = _normalised(baseline_mix), _normalised(current_mix)
    if q0 is None or q1 is None or sessions_per_hour == 0.0 or sessions_observed == 0.0:
        return Estimate.zero()
    rates, d_intercept, d_slope = _bin_rates(fit)
    delta = q0 - q1
    grad = np.array([delta @ d_intercept, delta @ d_slope])
    var_rate_diff = (float(grad @ np.array(fit.cov) @ grad)
                     + _mix_variance(q1, rates, sessions_observed)
                     + _mix_variance(q0, rates, baseline_sessions))
    factors = [(sessions_per_hour, sessions_per_hour**2 / sessions_observed),
               (float(delta @ rates), var_rate_diff),
               (average_order_value, aov_se**2)]
    return _clipped(*_product(factors))


def stratified_slow_page_loss(
    fit: StrataFit,
    baseline_mix: npt.ArrayLike,
    current_mix: npt.ArrayLike,
    *,
    sessions_per_hour: float,
    average_order_value: float,
    aov_se: float,
) -> Estimate:
    """:func:`slow_page_loss` within device strata: each stratum's sessions are compared at
    their own normal LCP mix and their current one, through the common slope and the
    stratum's intercept, and weighted by the stratum's share of the current sessions.

    ``value = sessions_per_hour * sum_s share_s * (p_s(baseline mix_s) - p_s(current mix_s))
    * AOV``. The mixes are curve vectors (``bin + N_BINS * stratum``) of session counts,
    whose totals are the sessions behind them. A stratum without a baseline mix or without
    conversions loses nothing. The interval adds the parameters' covariance (delta method),
    the multinomial noise of the current sessions over (stratum, bin), that of each
    baseline mix, the Poisson noise of the session rate and the AOV's standard error.
    """
    _check_non_negative(sessions_per_hour=sessions_per_hour,
                        average_order_value=average_order_value, aov_se=aov_se)
    base, now = _strata_counts(baseline_mix), _strata_counts(current_mix)
    observed = float(now.sum())
    if base.shape != now.shape or base.shape[0] != len(fit.intercepts):
        msg = f"mixes {base.shape} and {now.shape} do not match {len(fit.intercepts)} strata"
        raise ValueError(msg)
    if observed == 0.0 or sessions_per_hour == 0.0:
        return Estimate.zero()
    rates, d_rates, n0, usable, q0 = _strata_rates(fit, base)
    share = now.sum(axis=1) / observed
    gain = _gain(rates, usable, q0)
    current = now / observed
    value = float((current * gain).sum())
    weight = np.where(usable[:, None], share[:, None] * q0 - current, 0.0) * d_rates
    g_a = weight.sum(axis=1)  # dvalue / d intercept_s
    g_b = float((weight * BIN_CENTERS_S).sum())  # dvalue / d slope
    y = np.asarray(fit.conversions_by_stratum)
    m = np.asarray(fit.mean_lcp_s)
    param_var = (float(np.divide(g_a * g_a, y, out=np.zeros_like(y), where=y > 0).sum())
                 + fit.slope_var * (g_b - float(g_a @ m)) ** 2)
    now_var = max(float((current * gain * gain).sum()) - value * value, 0.0) / observed
    base_var = sum(share[s] ** 2 * _mix_variance(q0[s], rates[s], float(n0[s]))
                   for s in np.flatnonzero(usable))
    factors = [(sessions_per_hour, sessions_per_hour**2 / observed),
               (value, param_var + now_var + base_var),
               (average_order_value, aov_se**2)]
    return _clipped(*_product(factors))


def slow_page_gain(fit: StrataFit, baseline_mix: npt.ArrayLike) -> FloatArray:
    """The conversions one session of each (stratum, bin) of a curve vector loses against
    its stratum's normal mix: ``p_s(baseline mix_s) - p_s(bin)`` (negative for a bin faster
    than normal; 0 in a stratum without a baseline mix or conversions). Linear in the
    sessions, so ``counts @ gain * AOV`` is the money any set of sessions loses to their
    LCP, and the minutes of a window add up to :func:`stratified_slow_page_loss`'s value
    before its clipping at 0 (``tests/unit/test_slow_page_ledger.py``)."""
    base = _strata_counts(baseline_mix)
    if base.shape[0] != len(fit.intercepts):
        msg = f"mix {base.shape} does not match {len(fit.intercepts)} strata"
        raise ValueError(msg)
    rates, _, _, usable, q0 = _strata_rates(fit, base)
    return _gain(rates, usable, q0).ravel()


def _strata_rates(fit: StrataFit, base: FloatArray
                  ) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_], FloatArray]:
    """Each (stratum, bin)'s conversion rate and its derivative in the linear predictor,
    the baseline's sessions per stratum, the strata that have a baseline, and the normal
    mix of each."""
    eta = fit.eta()
    rates = np.exp(np.minimum(eta, 0.0))
    d_rates = np.where(eta < 0.0, rates, 0.0)
    n0 = base.sum(axis=1)
    usable = (n0 > 0.0) & np.isfinite(np.asarray(fit.intercepts))
    q0 = np.divide(base, n0[:, None], out=np.zeros_like(base), where=usable[:, None])
    return rates, d_rates, n0, usable, q0


def _gain(rates: FloatArray, usable: npt.NDArray[np.bool_], q0: FloatArray) -> FloatArray:
    p0 = (q0 * rates).sum(axis=1)  # each stratum's rate at its normal mix
    return np.where(usable[:, None], p0[:, None] - rates, 0.0)  # per (stratum, bin)


def _strata_counts(mix: npt.ArrayLike) -> FloatArray:
    counts = by_stratum(mix)
    if not (np.isfinite(counts).all() and (counts >= 0).all()):
        msg = "a mix holds finite non-negative session counts"
        raise ValueError(msg)
    return counts


def conversion_loss(
    *,
    observed: float,
    expected: float,
    baseline_conversions: float,
    baseline_sessions: float,
    exposure_sessions: float,
    window_hours: float,
    average_order_value: float,
    aov_se: float,
) -> Estimate:
    """Revenue per hour lost to missing conversions, whatever the cause.

    ``value = (expected - observed) / window_hours * AOV``.

    Args:
        observed: conversions observed in the window.
        expected: conversions expected in the window at the baseline rate (lag-adjusted).
        baseline_conversions: conversions behind the baseline rate.
        baseline_sessions: sessions behind the baseline rate.
        exposure_sessions: sessions in the window (behind ``expected``).
        window_hours: length of the window, hours.
        average_order_value: AOV in the reporting currency.
        aov_se: its standard error.

    Returns:
        The loss with a 90% interval accounting for the Poisson noise of ``observed``, the
        baseline rate's uncertainty (binomial, from its counts), the sessions' Poisson noise
        and the AOV's standard error.

    Raises:
        ValueError: negative or non-finite inputs, or a window that is not positive.

    >>> loss = conversion_loss(observed=80, expected=120, baseline_conversions=360,
    ...     baseline_sessions=12_000, exposure_sessions=4_000, window_hours=1.0,
    ...     average_order_value=85.0, aov_se=2.0)
    >>> round(loss.value), round(loss.low), round(loss.high)
    (3400, 1867, 4933)
    """
    _check_non_negative(observed=observed, expected=expected,
                        baseline_conversions=baseline_conversions,
                        baseline_sessions=baseline_sessions, exposure_sessions=exposure_sessions,
                        average_order_value=average_order_value, aov_se=aov_se)
    if not window_hours > 0.0:
        msg = f"window_hours must be > 0, got {window_hours}"
        raise ValueError(msg)
    missing = expected - observed
    var_missing = (max(observed, 1.0)
                   + expected**2 * _baseline_relative_variance(baseline_conversions,
                                                               baseline_sessions)
                   + missing**2 / max(exposure_sessions, 1.0))
    factors = [(missing / window_hours, var_missing / window_hours**2),
               (average_order_value, aov_se**2)]
    return _clipped(*_product(factors))


def average_order_value(
    revenue_sum: float,
    revenue_sumsq: float,
    orders: float,
    *,
    prior_value: float = 50.0,
    prior_orders: float = 3.0,
) -> tuple[float, float]:
    """Average order value and its standard error, shrunk to a prior for tiny counts.

    The prior counts as ``prior_orders`` orders of mean ``prior_value`` and standard
    deviation ``prior_value`` (order values are right-skewed, CV about 1).

    Returns:
        ``(aov, standard_error)``.

    Raises:
        ValueError: negative or non-finite inputs, or a prior that is not positive.

    >>> aov, se = average_order_value(0.0, 0.0, 0.0)
    >>> aov, round(se, 2)   # the prior alone: 50 / sqrt(3)
    (50.0, 28.87)
    """
    _check_non_negative(revenue_sum=revenue_sum, revenue_sumsq=revenue_sumsq, orders=orders)
    if not (prior_value > 0.0 and prior_orders > 0.0):
        msg = f"the prior must be positive, got {prior_value} x {prior_orders}"
        raise ValueError(msg)
    weight = orders + prior_orders
    aov = (revenue_sum + prior_orders * prior_value) / weight
    within = max(revenue_sumsq - revenue_sum**2 / orders, 0.0) if orders > 0 else 0.0
    prior_ss = prior_orders * (DEFAULT_AOV_CV * prior_value) ** 2
    per_order_var = (within + prior_ss) / (max(orders - 1.0, 0.0) + prior_orders)
    return aov, math.sqrt(per_order_var / weight)


def _bin_rates(fit: CurveFit) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Rates per bin and their derivatives in intercept and slope (zero where capped)."""
    eta = fit.intercept + fit.slope * BIN_CENTERS_S
    rates = np.exp(np.minimum(eta, 0.0))
    d_intercept = np.where(eta < 0.0, rates, 0.0)
    return rates, d_intercept, d_intercept * BIN_CENTERS_S


def _mix_variance(q: FloatArray, rates: FloatArray, sessions: float) -> float:
    """Variance of ``q @ rates`` when ``q`` is the share of ``sessions`` multinomial draws."""
    if math.isinf(sessions):
        return 0.0
    mean = float(q @ rates)
    return max(float(q @ (rates * rates)) - mean * mean, 0.0) / sessions


def _baseline_relative_variance(conversions: float, sessions: float) -> float:
    """Relative variance of a binomial rate estimated from ``conversions`` of ``sessions``."""
    rate = min(conversions / sessions, 1.0) if sessions > 0 else 0.0
    return (1.0 - rate) / max(conversions, 1.0)


def _product(factors: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Mean and sd of a product of independent factors given as (mean, variance)."""
    mean = math.prod(m for m, _ in factors)
    second_moment = math.prod(m * m + v for m, v in factors)
    return mean, math.sqrt(max(second_moment - mean * mean, 0.0))


def _clipped(value: float, sd: float) -> Estimate:
    """``value +- Z90 * sd``, every bound clipped at 0."""
    return Estimate(max(value, 0.0), max(value - Z90 * sd, 0.0), max(value + Z90 * sd, 0.0))


def _normalised(mix: npt.ArrayLike) -> FloatArray | None:
    weights = np.asarray(mix, dtype=np.float64)
    if weights.shape != (N_BINS,) or not (float(weights.min()) >= 0.0
                                          and float(weights.max()) < math.inf):
        msg = f"a mix is {N_BINS} finite non-negative session counts, got shape {weights.shape}"
        raise ValueError(msg)
    total = float(np.add.reduce(weights))
    return weights / total if total > 0.0 else None


def _check_non_negative(*, allow_inf: bool = False, **values: float) -> None:
    for name, value in values.items():
        if not (value >= 0.0 and (allow_inf or math.isfinite(value))):
            msg = f"{name} must be a non-negative finite number, got {value}"
            raise ValueError(msg)


def orders_per_conversion(orders: float, conversions: float, *, prior: float = 20.0) -> float:
    """Orders per converting session, from the orders of known sessions and how many of them
    were a session's first, shrunk to 1 by ``prior`` conversions with one order each (at
    least 1: retractions can leave the counts a little off).

    >>> orders_per_conversion(0.0, 0.0), round(orders_per_conversion(1_030.0, 1_000.0), 4)
    (1.0, 1.0294)
    """
    return max((orders + prior) / (conversions + prior), 1.0)
