"""The conversion-vs-LCP curve: bins, the Poisson fit against scipy, shrinkage, recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from detectors import elasticity
from detectors.elasticity import (
    BIN_CENTERS_S,
    LCP_BIN_WIDTH_S,
    N_BINS,
    CurveFit,
    fit_curve,
    lcp_bin,
    lcp_bins,
    shrunk_fit,
)

EDGES_S = np.append(np.arange(N_BINS) * LCP_BIN_WIDTH_S, np.inf)


def _binned(rng: np.random.Generator, sessions: int, *, p0: float, slope: float,
            median_s: float = 2.5, sd_log: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-session simulation: log-normal LCP, Bernoulli conversion, binned."""
    lcp_s = np.exp(math.log(median_s) + sd_log * rng.standard_normal(sessions))
    converted = rng.random(sessions) < p0 * np.exp(slope * lcp_s)
    bins = lcp_bins(lcp_s * 1000.0)
    n = np.bincount(bins, minlength=N_BINS).astype(float)
    return n, np.bincount(bins, weights=converted, minlength=N_BINS)


def _nll(params: np.ndarray, n: np.ndarray, y: np.ndarray, prior: tuple[float, float]) -> float:
    """Reference penalised Poisson negative log-likelihood, written independently."""
    used = n > 0
    eta = params[0] + params[1] * BIN_CENTERS_S[used]
    mu = n[used] * np.exp(eta)
    mean, sd = prior
    penalty = 0.0 if math.isinf(sd) else 0.5 * ((params[1] - mean) / sd) ** 2
    return float(np.sum(mu - y[used] * np.log(mu)) + penalty)


def _numerical_hessian(fun: object, at: np.ndarray, h: float = 1e-4) -> np.ndarray:
    assert callable(fun)
    hess = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * h, np.eye(2)[j] * h
            hess[i, j] = (fun(at + ei + ej) - fun(at + ei - ej)
                          - fun(at - ei + ej) + fun(at - ei - ej)) / (4 * h * h)
    return hess


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _binned(np.random.default_rng(20240611), 40_000, p0=0.04, slope=-0.12)


@pytest.mark.parametrize(
    ("lcp_ms", "expected"),
    [
        pytest.param(0.0, 0, id="zero"),
        pytest.param(249.999, 0, id="just-below-first-edge"),
        pytest.param(250.0, 1, id="first-edge"),
        pytest.param(2_600.0, 10, id="2.6s"),
        pytest.param(11_999.9, 47, id="last-closed-bin"),
        pytest.param(12_000.0, 48, id="open-bin-edge"),
        pytest.param(1e9, 48, id="huge"),
        pytest.param(math.inf, 48, id="inf"),
        pytest.param(-5.0, 0, id="negative"),
        pytest.param(math.nan, 0, id="nan"),
    ],
)
def test_lcp_bin(lcp_ms: float, expected: int) -> None:
    assert lcp_bin(lcp_ms) == expected
    assert int(lcp_bins([lcp_ms])[0]) == expected


def test_bin_layout() -> None:
    assert N_BINS == 49
    assert BIN_CENTERS_S.shape == (N_BINS,)
    assert BIN_CENTERS_S[0] == 0.125
    assert BIN_CENTERS_S[-1] == 13.0
    assert [lcp_bin(c * 1000.0) for c in BIN_CENTERS_S] == list(range(N_BINS))


def test_vectorised_bins_match_scalar() -> None:
    lcp_ms = np.random.default_rng(3).uniform(-100.0, 14_000.0, 5_000)
    assert lcp_bins(lcp_ms).tolist() == [lcp_bin(float(v)) for v in lcp_ms]


def test_two_bins_have_a_closed_form() -> None:
    n = np.zeros(N_BINS)
    y = np.zeros(N_BINS)
    n[[0, 8]] = [400.0, 600.0]
    y[[0, 8]] = [20.0, 12.0]
    fit = fit_curve(n, y, prior_slope_sd=math.inf)
    assert fit is not None
    gap = BIN_CENTERS_S[8] - BIN_CENTERS_S[0]
    slope = (math.log(12 / 600) - math.log(20 / 400)) / gap
    assert fit.slope == pytest.approx(slope, rel=1e-9)
    assert fit.rate(BIN_CENTERS_S[0]) == pytest.approx(20 / 400, rel=1e-9)
    assert fit.cov[1][1] == pytest.approx((1 / 20 + 1 / 12) / gap**2, rel=1e-9)
    assert (fit.sessions, fit.conversions) == (1000.0, 32.0)


@pytest.mark.parametrize(
    "prior",
    [pytest.param((0.0, math.inf), id="mle"), pytest.param((-0.3, 0.02), id="strong-prior")],
)
def test_fit_matches_scipy_minimize(data: tuple[np.ndarray, np.ndarray],
                                    prior: tuple[float, float]) -> None:
    n, y = data
    fit = fit_curve(n, y, prior_slope=prior[0], prior_slope_sd=prior[1])
    assert fit is not None
    ref = optimize.minimize(_nll, x0=np.array([-3.0, 0.0]), args=(n, y, prior),
                            method="BFGS", options={"gtol": 1e-9})
    assert fit.intercept == pytest.approx(ref.x[0], abs=1e-5)
    assert fit.slope == pytest.approx(ref.x[1], abs=1e-5)
    hess = _numerical_hessian(lambda p: _nll(p, n, y, prior), ref.x)
    np.testing.assert_allclose(np.array(fit.cov), np.linalg.inv(hess), rtol=2e-3)


def test_converges_in_a_handful_of_iterations(data: tuple[np.ndarray, np.ndarray],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    n, y = data
    full = fit_curve(n, y, prior_slope_sd=math.inf)
    monkeypatch.setattr(elasticity, "_MAX_ITERATIONS", 6)
    short = fit_curve(n, y, prior_slope_sd=math.inf)
    assert full is not None
    assert short is not None
    assert short.slope == pytest.approx(full.slope, abs=1e-9)


def test_recovers_the_slope_from_simulated_sessions() -> None:
    n, y = _binned(np.random.default_rng(7), 200_000, p0=0.04, slope=-0.12)
    fit = fit_curve(n, y, prior_slope_sd=math.inf)
    assert fit is not None
    assert fit.slope_se < 0.015
    assert abs(fit.slope + 0.12) < 3 * fit.slope_se
    assert abs(fit.intercept - math.log(0.04)) < 3 * math.sqrt(fit.cov[0][0])


def test_slope_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(11)
    dist = stats.lognorm(s=0.5, scale=2.5)
    share = np.diff(dist.cdf(EDGES_S))
    z = stats.norm.ppf(0.95)
    hits = 0
    for _ in range(200):
        n = rng.multinomial(20_000, share).astype(float)
        y = rng.poisson(n * 0.04 * np.exp(-0.12 * BIN_CENTERS_S)).astype(float)
        fit = fit_curve(n, y, prior_slope_sd=math.inf)
        assert fit is not None
        hits += abs(fit.slope + 0.12) <= z * fit.slope_se
    assert 0.84 <= hits / 200 <= 0.96


@pytest.mark.parametrize(
    ("conversions", "min_conversions"),
    [pytest.param(0.0, 5.0, id="none"), pytest.param(4.0, 5.0, id="too-few"),
     pytest.param(0.0, 0.0, id="none-even-without-minimum")],
)
def test_too_few_conversions_give_no_fit(conversions: float, min_conversions: float) -> None:
    n = np.full(N_BINS, 100.0)
    y = np.zeros(N_BINS)
    y[3] = conversions
    assert fit_curve(n, y, min_conversions=min_conversions) is None


def test_separated_data_stay_finite_and_bounded() -> None:
    n = np.zeros(N_BINS)
    y = np.zeros(N_BINS)
    n[:5] = 100.0
    y[0] = 10.0
    fit = fit_curve(n, y, prior_slope_sd=math.inf)
    assert fit is not None
    assert fit.slope == -elasticity._MAX_ABS_SLOPE
    assert all(math.isfinite(v) for row in fit.cov for v in row)
    assert fit.mix_rate(n) * 500 == pytest.approx(10.0, rel=1e-9)  # totals still match


def test_one_bin_without_prior_is_not_identified() -> None:
    n = np.zeros(N_BINS)
    y = np.zeros(N_BINS)
    n[4], y[4] = 1_000.0, 30.0
    assert fit_curve(n, y, prior_slope_sd=math.inf) is None
    fit = fit_curve(n, y, prior_slope=-0.1, prior_slope_sd=0.05)
    assert fit is not None
    assert fit.slope == pytest.approx(-0.1, abs=1e-9)
    assert fit.rate(BIN_CENTERS_S[4]) == pytest.approx(0.03, rel=1e-9)


def test_huge_counts_do_not_overflow() -> None:
    n = np.full(N_BINS, 1e12)
    y = n * 0.02 * np.exp(-0.1 * BIN_CENTERS_S)
    fit = fit_curve(n, y, prior_slope_sd=math.inf)
    assert fit is not None
    assert fit.slope == pytest.approx(-0.1, abs=1e-9)


@pytest.mark.parametrize(
    ("sessions", "conversions", "prior_sd"),
    [
        pytest.param(np.ones(N_BINS - 1), np.ones(N_BINS - 1), 0.2, id="wrong-shape"),
        pytest.param(-np.ones(N_BINS), np.ones(N_BINS), 0.2, id="negative"),
        pytest.param(np.full(N_BINS, np.nan), np.ones(N_BINS), 0.2, id="nan"),
        pytest.param(np.ones(N_BINS), np.ones(N_BINS), 0.0, id="zero-prior-sd"),
    ],
)
def test_rejects_bad_input(sessions: np.ndarray, conversions: np.ndarray, prior_sd: float) -> None:
    with pytest.raises(ValueError, match=r"bins|non-negative|prior"):
        fit_curve(sessions, conversions, prior_slope_sd=prior_sd)


def test_rate_is_capped_and_keeps_the_input_kind() -> None:
    fit = CurveFit(math.log(0.5), 0.2, ((0.0, 0.0), (0.0, 0.0)), 1.0, 1.0)
    assert isinstance(fit.rate(1.0), float)
    assert fit.rate(1.0) == pytest.approx(0.5 * math.exp(0.2))
    rates = fit.rate(np.array([0.0, 10.0]))
    assert isinstance(rates, np.ndarray)
    assert rates.tolist() == pytest.approx([0.5, 1.0])


def test_mix_rate_is_the_session_weighted_rate() -> None:
    fit = CurveFit(math.log(0.04), -0.1, ((0.0, 0.0), (0.0, 0.0)), 1.0, 1.0)
    mix = np.zeros(N_BINS)
    mix[[0, 12]] = [3.0, 1.0]
    expected = 0.75 * 0.04 * math.exp(-0.0125) + 0.25 * 0.04 * math.exp(-0.3125)
    assert fit.mix_rate(mix) == pytest.approx(expected, rel=1e-12)
    assert fit.mix_rate(mix * 1000) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(fit.mix_rate(np.zeros(N_BINS)))


def test_shrunk_fit_uses_the_site_slope_as_prior(data: tuple[np.ndarray, np.ndarray]) -> None:
    n, y = data
    site = fit_curve(n * 10, y * 10)
    assert site is not None
    rng = np.random.default_rng(5)
    cn, cy = _binned(rng, 3_000, p0=0.04, slope=0.05)  # a small campaign, noisy opposite slope
    alone = fit_curve(cn, cy, prior_slope_sd=math.inf)
    shrunk = shrunk_fit(cn, cy, site, tau=0.03)
    assert alone is not None
    assert shrunk is not None
    sd = math.sqrt(site.cov[1][1] + 0.03**2)
    same = fit_curve(cn, cy, prior_slope=site.slope, prior_slope_sd=sd)
    assert shrunk == same
    assert min(site.slope, alone.slope) < shrunk.slope < max(site.slope, alone.slope)
    assert abs(shrunk.slope - site.slope) < abs(alone.slope - site.slope) / 2
    assert shrunk.slope_se < alone.slope_se
    loose = shrunk_fit(cn, cy, site, tau=100.0)
    assert loose is not None
    assert loose.slope == pytest.approx(alone.slope, abs=1e-3)
    assert shrunk_fit(cn, cy, None) == fit_curve(cn, cy)


def test_state_round_trips() -> None:
    fit = CurveFit(-3.2, -0.11, ((1e-3, -2e-4), (-2e-4, 1e-4)), 1e5, 3e3)
    assert CurveFit.from_state(fit.to_state()) == fit
