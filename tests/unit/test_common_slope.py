"""Device strata: the common-slope fit against scipy, recovery where the pooled fit is biased,
the prior, degenerate inputs, and the stratified slow-page loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from detectors.elasticity import BIN_CENTERS_S, N_BINS, CurveFit, fit_curve, lcp_bins
from detectors.revenue import slow_page_loss, stratified_slow_page_loss
from detectors.strata import (
    CURVE_SIZE,
    DEVICE_STRATA,
    by_stratum,
    curve_key,
    device_stratum,
    fit_common_slope,
    fold_strata,
    padded_curve,
    shrunk_strata_fit,
)

TRUE_SLOPE = -0.09
# the simulator's devices (streams/simulate_model.py): desktop, mobile x1.4 slower and x0.7
# as likely to convert, tablet x1.15 and x0.85; the "" stratum is empty
STRATA = ((1, 0.34, 1.0, 1.0), (2, 0.60, 1.4, 0.7), (3, 0.06, 1.15, 0.85))


def _simulate(rng: np.random.Generator, sessions: int, *, lcp_factor: float = 1.0,
              slope: float = TRUE_SLOPE, median_s: float = 2.2, p0: float = 0.03
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-session draws binned into a curve vector; also the expected conversions."""
    n = np.zeros(CURVE_SIZE)
    y = np.zeros(CURVE_SIZE)
    expected = 0.0
    for stratum, share, slower, converts in STRATA:
        count = rng.binomial(sessions, share)
        lcp_s = median_s * slower * lcp_factor * np.exp(0.45 * rng.standard_normal(count))
        p = p0 * converts * np.exp(slope * (lcp_s - median_s))
        expected += float(p.sum())
        keys = lcp_bins(lcp_s * 1000.0) + N_BINS * stratum
        n += np.bincount(keys, minlength=CURVE_SIZE)
        y += np.bincount(keys, weights=rng.random(count) < p, minlength=CURVE_SIZE)
    return n, y, expected


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    n, y, _ = _simulate(np.random.default_rng(20261204), 400_000)
    return n, y


def _nll(params: np.ndarray, n: np.ndarray, y: np.ndarray, prior: tuple[float, float]) -> float:
    """Reference: the penalised Poisson NLL of all parameters (intercepts, then slope)."""
    rows, conv = by_stratum(n), by_stratum(y)
    eta = params[:-1, None] + params[-1] * BIN_CENTERS_S
    mu = rows * np.exp(eta)
    mean, sd = prior
    penalty = 0.0 if math.isinf(sd) else 0.5 * ((params[-1] - mean) / sd) ** 2
    return float(np.sum(mu - conv * eta) + penalty)


def test_strata_keys() -> None:
    assert DEVICE_STRATA == ("", "desktop", "mobile", "tablet")
    assert CURVE_SIZE == 4 * N_BINS
    assert [device_stratum(d) for d in (None, "", "desktop", "mobile", "tablet", "tv")] == [
        0, 0, 1, 2, 3, 0]
    assert curve_key(7, 2) == 7 + 2 * N_BINS
    vector = np.arange(CURVE_SIZE, dtype=float)
    assert np.array_equal(fold_strata(vector), vector.reshape(4, N_BINS).sum(axis=0))
    old = np.arange(N_BINS, dtype=float)
    padded = padded_curve(old)
    assert padded.shape == (CURVE_SIZE,)
    assert np.array_equal(padded[:N_BINS], old)
    assert not padded[N_BINS:].any()
    assert padded_curve(vector) is not None
    assert np.array_equal(padded_curve(vector), vector)
    with pytest.raises(ValueError, match="long"):
        padded_curve(np.ones(N_BINS + 1))
    with pytest.raises(ValueError, match="multiple"):
        by_stratum(np.ones(N_BINS + 1))


def test_common_slope_recovered_where_the_pooled_fit_is_biased(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    n, y = data
    fit = fit_common_slope(n, y, prior_slope_sd=math.inf)
    assert fit is not None
    assert abs(fit.slope - TRUE_SLOPE) < 3 * fit.slope_se
    pooled = fit_curve(fold_strata(n), fold_strata(y), prior_slope_sd=math.inf)
    assert pooled is not None
    assert pooled.slope < TRUE_SLOPE - 0.02  # mobile: slower and converting less anyway
    assert (TRUE_SLOPE - pooled.slope) > 4 * pooled.slope_se
    # intercepts: the log rate at LCP 0 of each device (p0 x factor x e^(-slope x median))
    for stratum, _, _, converts in STRATA:
        truth = math.log(0.03 * converts) - TRUE_SLOPE * 2.2
        assert fit.intercepts[stratum] == pytest.approx(truth, abs=0.15)
    assert fit.intercepts[0] == -math.inf
    assert fit.mean_lcp_s[0] == 0.0


@pytest.mark.parametrize("prior", [(0.0, math.inf), (-0.3, 0.02), (0.1, 0.2)])
def test_agrees_with_scipy_on_all_parameters(data: tuple[np.ndarray, np.ndarray],
                                             prior: tuple[float, float]) -> None:
    n, y = data
    fit = fit_common_slope(n, y, prior_slope=prior[0], prior_slope_sd=prior[1])
    assert fit is not None
    used = by_stratum(n).sum(axis=1) > 0
    rows_n, rows_y = by_stratum(n)[used].ravel(), by_stratum(y)[used].ravel()
    start = np.r_[np.full(int(used.sum()), math.log(0.03)), 0.0]
    ref = optimize.minimize(_nll, start, args=(rows_n, rows_y, prior), method="BFGS",
                            options={"gtol": 1e-9, "maxiter": 10_000})
    assert fit.slope == pytest.approx(ref.x[-1], abs=2e-4)
    assert np.allclose(np.asarray(fit.intercepts)[used], ref.x[:-1], atol=2e-3)
    # covariance: the inverse of the full Fisher information (plus the prior) at the fit
    a = np.asarray(fit.intercepts)[used]
    mu = by_stratum(n)[used] * np.exp(a[:, None] + fit.slope * BIN_CENTERS_S)
    k = len(a)
    info = np.zeros((k + 1, k + 1))
    info[np.arange(k), np.arange(k)] = mu.sum(axis=1)
    info[:k, k] = info[k, :k] = mu @ BIN_CENTERS_S
    info[k, k] = float((mu @ (BIN_CENTERS_S**2)).sum())
    info[k, k] += 0.0 if math.isinf(prior[1]) else prior[1] ** -2
    cov = np.linalg.inv(info)
    assert fit.slope_var == pytest.approx(cov[k, k], rel=1e-6)
    m = np.asarray(fit.mean_lcp_s)[used]
    ys = np.asarray(fit.conversions_by_stratum)[used]
    implied = fit.slope_var * np.outer(np.r_[-m, 1.0], np.r_[-m, 1.0])
    implied[np.arange(k), np.arange(k)] += 1.0 / ys
    assert np.allclose(implied, cov, rtol=1e-5, atol=1e-12)


def test_one_stratum_is_fit_curve(data: tuple[np.ndarray, np.ndarray]) -> None:
    n, y = (by_stratum(v)[2] for v in data)
    for prior in ((0.0, math.inf), (-0.2, 0.05)):
        common = fit_common_slope(n, y, prior_slope=prior[0], prior_slope_sd=prior[1])
        plain = fit_curve(n, y, prior_slope=prior[0], prior_slope_sd=prior[1])
        assert common is not None
        assert plain is not None
        assert common.slope == pytest.approx(plain.slope, abs=1e-8)
        assert common.intercepts[0] == pytest.approx(plain.intercept, abs=1e-8)
        assert common.slope_var == pytest.approx(plain.cov[1][1], rel=1e-6)
        curve = common.curve()
        assert curve.intercept == pytest.approx(plain.intercept, abs=1e-8)
        assert np.allclose(curve.cov, plain.cov, rtol=1e-6)


def test_prior_shrinks_the_slope(data: tuple[np.ndarray, np.ndarray]) -> None:
    n, y = (v[: 2 * N_BINS] / 40.0 for v in data)  # a small campaign: desktop only
    y = np.round(y)
    mle = fit_common_slope(n, y, prior_slope_sd=math.inf)
    tight = fit_common_slope(n, y, prior_slope=-0.5, prior_slope_sd=1e-4)
    middle = fit_common_slope(n, y, prior_slope=-0.5, prior_slope_sd=0.05)
    assert mle is not None
    assert tight is not None
    assert middle is not None
    assert tight.slope == pytest.approx(-0.5, abs=1e-3)
    assert -0.5 < middle.slope < mle.slope
    assert middle.slope_var < mle.slope_var
    site = CurveFit(-3.0, -0.5, ((0.01, 0.0), (0.0, 0.0004)), 1e6, 1e4)
    shrunk = shrunk_strata_fit(n, y, site, tau=0.03)
    direct = fit_common_slope(n, y, prior_slope=-0.5, prior_slope_sd=math.sqrt(0.0004 + 0.0009))
    assert shrunk == direct
    assert shrunk_strata_fit(n, y, None) == fit_common_slope(n, y)


def test_degenerate_inputs(data: tuple[np.ndarray, np.ndarray]) -> None:
    n, y = data
    assert fit_common_slope(np.zeros(CURVE_SIZE), np.zeros(CURVE_SIZE)) is None
    assert fit_common_slope(n, np.where(np.arange(CURVE_SIZE) == 60, 4.0, 0.0)) is None
    # a stratum with sessions but no conversions: rate 0, no say in the slope
    no_tablet = y.copy()
    no_tablet[3 * N_BINS:] = 0.0
    fit = fit_common_slope(n, no_tablet)
    without = fit_common_slope(n[: 3 * N_BINS], no_tablet[: 3 * N_BINS])
    assert fit is not None
    assert without is not None
    assert fit.slope == pytest.approx(without.slope, abs=1e-10)
    assert fit.intercepts[3] == -math.inf
    assert fit.rates()[3].max() == 0.0
    # conversions where there are no sessions are ignored
    stray = y.copy()
    stray[N_BINS - 1] = 50.0
    assert fit_common_slope(n, stray) == fit_common_slope(n, y)
    # every converting stratum in one bin: the slope is not identified without a prior
    one_bin = np.zeros(CURVE_SIZE)
    one_bin[[N_BINS + 8, 2 * N_BINS + 8]] = 1000.0
    conv = one_bin * 0.03
    assert fit_common_slope(one_bin, conv, prior_slope_sd=math.inf) is None
    prior_only = fit_common_slope(one_bin, conv, prior_slope=-0.1, prior_slope_sd=0.05)
    assert prior_only is not None
    assert prior_only.slope == pytest.approx(-0.1)
    assert prior_only.slope_var == pytest.approx(0.05**2)
    # a (strata, bins) array is a curve vector too; any number of strata
    assert fit_common_slope(by_stratum(n), by_stratum(y)) == fit_common_slope(n, y)
    assert fit_common_slope(np.tile(n, 3), np.tile(y, 3)) is not None
    for bad_n, bad_y, sd in ((n[:-1], y[:-1], 0.2), (n, y[: 2 * N_BINS], 0.2),
                             (-n, y, 0.2), (n * np.nan, y, 0.2), (n, y, 0.0)):
        with pytest.raises(ValueError, match=r"shape|multiple|finite|prior"):
            fit_common_slope(bad_n, bad_y, prior_slope_sd=sd)


def test_stratified_loss_with_one_stratum_is_slow_page_loss(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    n, y = (by_stratum(v)[1] for v in data)
    common = fit_common_slope(n, y)
    plain = fit_curve(n, y)
    assert common is not None
    assert plain is not None
    slow = np.roll(n, 6) / 30.0
    kw = {"sessions_per_hour": 900.0, "average_order_value": 80.0, "aov_se": 3.0}
    one = stratified_slow_page_loss(common, n, slow, **kw)
    ref = slow_page_loss(plain, n, slow, sessions_observed=float(slow.sum()),
                         baseline_sessions=float(n.sum()), **kw)
    assert one.value == pytest.approx(ref.value, rel=1e-6)
    assert one.low == pytest.approx(ref.low, rel=1e-5)
    assert one.high == pytest.approx(ref.high, rel=1e-5)


def test_stratified_loss_matches_the_truth_where_pooled_overstates() -> None:
    rng = np.random.default_rng(7)
    n, y, _ = _simulate(rng, 600_000)
    now, _, slow_expected = _simulate(rng, 6_000, lcp_factor=2.2)
    _, _, fast_expected = _simulate(np.random.default_rng(99), 6_000 * 40)
    truth = fast_expected / 40.0 - slow_expected  # conversions lost by 6,000 sessions
    fit = fit_common_slope(n, y)
    assert fit is not None
    kw = {"sessions_per_hour": 6_000.0, "average_order_value": 1.0, "aov_se": 0.0}
    strat = stratified_slow_page_loss(fit, n, now, **kw)
    assert strat.value == pytest.approx(truth, rel=0.1)
    assert strat.low < truth < strat.high
    pooled_fit = fit_curve(fold_strata(n), fold_strata(y))
    assert pooled_fit is not None
    pooled = slow_page_loss(pooled_fit, fold_strata(n), fold_strata(now),
                            sessions_observed=6_000.0, **kw)
    assert pooled.value > 1.15 * truth


def test_stratified_loss_edges(data: tuple[np.ndarray, np.ndarray]) -> None:
    n, y = data
    fit = fit_common_slope(n, y)
    assert fit is not None
    kw = {"sessions_per_hour": 600.0, "average_order_value": 50.0, "aov_se": 1.0}
    assert stratified_slow_page_loss(fit, n, np.zeros(CURVE_SIZE), **kw).value == 0.0
    same = stratified_slow_page_loss(fit, n, n / 100.0, **kw)
    assert same.value == pytest.approx(0.0, abs=1e-9)
    assert same.high > 0.0
    # current sessions in a stratum with no baseline mix lose nothing
    unknown = np.zeros(CURVE_SIZE)
    unknown[20] = 100.0
    assert stratified_slow_page_loss(fit, n, unknown, **kw).value == 0.0
    with pytest.raises(ValueError, match="strata"):
        stratified_slow_page_loss(fit, n, n[: 2 * N_BINS], **kw)
    with pytest.raises(ValueError, match="non-negative"):
        stratified_slow_page_loss(fit, n, -n, **kw)
