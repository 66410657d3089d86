"""Seeded simulations with known truth: do the 90% revenue intervals cover about 90%?

A campaign with true conversion ``p(lcp) = 0.03 * exp(-0.1 * lcp_s)``, LCP log-normal (median
2.2 s, sd_log 0.5) and gamma order values (mean 60, shape 2). Each replication learns the
curve and the AOV from one day of baseline traffic, then prices 30 minutes of either

* a slowdown (every LCP x 1.8) with :func:`slow_page_loss`, or
* a 50% conversion drop at unchanged speed with :func:`conversion_loss`,

against the truth: the true sessions rate x the true loss of conversion rate (under the true
curve and the true LCP distributions) x the true AOV.

Binned counts are drawn exactly: sessions per bin are multinomial with the log-normal's bin
probabilities, conversions per bin binomial with the curve averaged over the bin, the same
distribution as simulating every session.

Run with ``-s`` to print the measured coverages and errors.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import integrate, stats

from detectors.elasticity import DEFAULT_TAU, N_BINS, CurveFit, fit_curve, lcp_bins, shrunk_fit
from detectors.revenue import average_order_value, conversion_loss, slow_page_loss
from detectors.verdicts import Estimate

REPLICATIONS = 300
P0, SLOPE = 0.03, -0.1
MEDIAN_S, SD_LOG, SLOWDOWN = 2.2, 0.5, 1.8
AOV_MEAN, AOV_SHAPE = 60.0, 2.0
WINDOW_MINUTES = 30
SITE_SESSIONS = 2_000_000  # a day of the whole site, behind the site-wide curve


@dataclass(frozen=True)
class Population:
    """Exact bin shares, per-bin conversion rates and overall rate of one LCP distribution."""

    share: np.ndarray
    bin_rate: np.ndarray
    rate: float


@functools.cache
def _grid(median_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Midpoint-rule nodes up to 60 s, their log-normal probabilities and LCP bins."""
    step = 0.002
    x = np.arange(step / 2, 60.0, step)
    weight = stats.lognorm(s=SD_LOG, scale=median_s).pdf(x) * step
    return x, weight, lcp_bins(x * 1000.0)


def population(median_s: float, slope: float = SLOPE) -> Population:
    x, weight, bins = _grid(median_s)
    share = np.bincount(bins, weights=weight, minlength=N_BINS)
    mass = np.bincount(bins, weights=weight * P0 * np.exp(slope * x), minlength=N_BINS)
    return Population(share / share.sum(), mass / np.maximum(share, 1e-300), float(mass.sum()))


@dataclass(frozen=True)
class Intervals:
    """Estimates of R replications against one truth."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    truth: np.ndarray

    @property
    def coverage(self) -> float:
        return float(np.mean((self.low <= self.truth) & (self.truth <= self.high)))

    @property
    def median_relative_error(self) -> float:
        return float(np.median(np.abs(self.value - self.truth) / self.truth))

    @property
    def median_relative_width(self) -> float:
        return float(np.median((self.high - self.low) / self.truth))

    def summary(self, name: str) -> str:
        return (f"{name}: truth {np.mean(self.truth):.1f}/h, coverage {self.coverage:.3f}, median "
                f"relative error {self.median_relative_error:.3f}, median relative width "
                f"{self.median_relative_width:.2f}")


def _counts(rng: np.random.Generator, sessions: int, pop: Population,
            factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    n = rng.multinomial(sessions, pop.share)
    return n.astype(float), rng.binomial(n, pop.bin_rate * factor).astype(float)


def _curve(rng: np.random.Generator, n: np.ndarray, y: np.ndarray, curve: str) -> CurveFit:
    if curve == "own":
        fit = fit_curve(n, y)
    else:
        site = fit_curve(*_counts(rng, SITE_SESSIONS, population(MEDIAN_S)))
        fit = shrunk_fit(n, y, site)
    assert fit is not None
    return fit


def _aov(rng: np.random.Generator, orders: int) -> tuple[float, float]:
    values = rng.gamma(AOV_SHAPE, AOV_MEAN / AOV_SHAPE, orders)
    return average_order_value(float(values.sum()), float((values**2).sum()), float(orders))


@functools.cache
def simulate(per_minute: float, curve: str, seed: int = 20240611) -> tuple[Intervals, Intervals]:
    """(slow-page loss, conversion loss) intervals over REPLICATIONS seeded replications.

    With ``curve="site"`` each replication's campaign has its own true slope, drawn from
    N(SLOPE, DEFAULT_TAU^2) around the site's, which is what the shrinkage assumes.
    """
    rng = np.random.default_rng(seed)
    baseline_sessions = round(per_minute * 60 * 24)
    slow_rows, conv_rows, slow_truth, conv_truth = [], [], [], []
    for _ in range(REPLICATIONS):
        slope = SLOPE + (DEFAULT_TAU * rng.standard_normal() if curve == "site" else 0.0)
        base, slow = population(MEDIAN_S, slope), population(MEDIAN_S * SLOWDOWN, slope)
        n, y = _counts(rng, baseline_sessions, base)
        fit, (aov, aov_se) = _curve(rng, n, y, curve), _aov(rng, int(y.sum()))
        slow_rows.append(_slow_loss(rng, per_minute, fit, baseline=n, slow=slow, aov=(aov, aov_se)))
        conv_rows.append(_conversion_loss(rng, per_minute, 0.5 * base.rate, y, (aov, aov_se)))
        per_hour = per_minute * 60 * AOV_MEAN
        slow_truth.append(per_hour * (base.rate - slow.rate))
        conv_truth.append(per_hour * 0.5 * base.rate)
    return _intervals(slow_rows, slow_truth), _intervals(conv_rows, conv_truth)


def _slow_loss(rng: np.random.Generator, per_minute: float, fit: CurveFit, *,
               baseline: np.ndarray, slow: Population, aov: tuple[float, float]) -> Estimate:
    sessions = int(rng.poisson(per_minute * WINDOW_MINUTES))
    current = rng.multinomial(sessions, slow.share).astype(float)
    return slow_page_loss(
        fit, baseline, current, sessions_per_hour=sessions * 60 / WINDOW_MINUTES,
        sessions_observed=sessions, average_order_value=aov[0], aov_se=aov[1],
        baseline_sessions=float(baseline.sum()))


def _conversion_loss(rng: np.random.Generator, per_minute: float, rate: float,
                     baseline_conversions: np.ndarray, aov: tuple[float, float]) -> Estimate:
    sessions = int(rng.poisson(per_minute * WINDOW_MINUTES))
    conversions, baseline_sessions = float(baseline_conversions.sum()), per_minute * 60 * 24
    return conversion_loss(
        observed=float(rng.binomial(sessions, rate)),
        expected=conversions / baseline_sessions * sessions,
        baseline_conversions=conversions, baseline_sessions=baseline_sessions,
        exposure_sessions=sessions, window_hours=WINDOW_MINUTES / 60,
        average_order_value=aov[0], aov_se=aov[1])


def _intervals(rows: list[Estimate], truth: list[float]) -> Intervals:
    value, low, high = (np.array([getattr(r, f) for r in rows]) for f in ("value", "low", "high"))
    return Intervals(value, low, high, np.array(truth))


def test_simulated_population_matches_scipy_integration() -> None:
    dist = stats.lognorm(s=SD_LOG, scale=MEDIAN_S * SLOWDOWN)
    rate = integrate.quad(lambda x: P0 * math.exp(SLOPE * x) * dist.pdf(x), 0.0, np.inf)[0]
    pop = population(MEDIAN_S * SLOWDOWN)
    assert pop.rate == pytest.approx(rate, rel=1e-6)
    assert float(pop.share @ pop.bin_rate) == pytest.approx(rate, rel=1e-6)
    assert pop.share[-1] == pytest.approx(dist.sf(12.0), rel=1e-4)


CASES = [
    pytest.param(40.0, "own", id="40-per-min-own-curve"),
    pytest.param(40.0, "site", id="40-per-min-shrunk-to-site"),
    pytest.param(2.0, "own", id="2-per-min-own-curve"),
    pytest.param(2.0, "site", id="2-per-min-shrunk-to-site"),
]


@pytest.mark.parametrize(("per_minute", "curve"), CASES)
def test_slow_page_loss_interval_covers_the_truth(per_minute: float, curve: str) -> None:
    slow, _ = simulate(per_minute, curve)
    print(slow.summary(f"slow_page_loss {per_minute:g}/min {curve}"))
    if per_minute >= 40:
        assert 0.80 <= slow.coverage <= 0.97, slow.summary("slow")
        assert slow.median_relative_error < 0.25, slow.summary("slow")
    else:  # wide and honest: clipped at 0 below, so it may over-cover
        assert 0.80 <= slow.coverage <= 0.995, slow.summary("slow")


@pytest.mark.parametrize(("per_minute", "curve"), CASES[::2])
def test_conversion_loss_interval_covers_a_halved_conversion_rate(per_minute: float,
                                                                   curve: str) -> None:
    _, conv = simulate(per_minute, curve)
    print(conv.summary(f"conversion_loss {per_minute:g}/min"))
    if per_minute >= 40:
        assert 0.80 <= conv.coverage <= 0.97, conv.summary("conversion")
        assert conv.median_relative_error < 0.35, conv.summary("conversion")
    else:  # about one order expected in the window: the interval spans 0 and more
        assert conv.coverage >= 0.80, conv.summary("conversion")
        assert np.mean(conv.low == 0.0) > 0.9


@pytest.mark.parametrize("curve", ["own", "site"])
def test_low_traffic_gets_wider_intervals_not_silence(curve: str) -> None:
    high_slow, high_conv = simulate(40.0, curve)
    low_slow, low_conv = simulate(2.0, curve)
    assert low_slow.median_relative_width > 1.3 * high_slow.median_relative_width
    assert low_conv.median_relative_width > 2.0 * high_conv.median_relative_width
    assert np.median(low_slow.value) > 0.0  # a figure, not silence


def test_the_site_curve_narrows_a_small_campaign_interval() -> None:
    own, _ = simulate(2.0, "own")
    site, _ = simulate(2.0, "site")
    assert site.median_relative_width < 0.75 * own.median_relative_width
    assert site.median_relative_error < own.median_relative_error
