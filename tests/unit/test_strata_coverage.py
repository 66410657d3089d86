"""Seeded simulations with known truth for the production slow-page pricing within device strata.

As ``test_revenue_coverage.py`` does for the pooled :func:`slow_page_loss`, but through what
``CampaignModel._slow_page_loss`` runs: the campaign's curve vectors (``CURVE_SIZE``, key
``bin + N_BINS * stratum``) fitted by :func:`shrunk_strata_fit` towards the site fit that
``Monitor._refit_site`` makes (``fit_common_slope`` on the strata of all campaigns, prior sd
1, ``.curve()``), then :func:`price_slow_pages` on the current window's mix.

Devices differ in LCP (log-normal, sd_log 0.5) and in conversion level, with one slope:
``p_d(lcp) = level_d * exp(slope * lcp_s)``. Mobile is both slower and less likely to convert,
so a pooled curve reads part of the device difference as an effect of LCP. Each replication
learns from one day of baseline traffic (AOV from gamma order values), then prices 30 minutes
in which pages slow down (every LCP x 1.8, or mobile's only) against the truth: the true
sessions rate x the true loss of conversion rate (per stratum, from the true curve and LCP
distributions, mixed by device share) x the true AOV.

Run with ``-s`` to print the measured coverages and errors (and the pooled reference's).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import integrate, stats

from detectors.elasticity import DEFAULT_TAU, N_BINS, CurveFit, fit_curve, shrunk_fit
from detectors.pricing import price_slow_pages
from detectors.revenue import average_order_value, slow_page_loss
from detectors.strata import (
    CURVE_SIZE,
    DEVICE_STRATA,
    curve_key,
    device_stratum,
    fit_common_slope,
    fold_strata,
    shrunk_strata_fit,
)
from detectors.verdicts import Estimate
from tests.unit.test_revenue_coverage import P0, SD_LOG, Intervals, Population, population

REPLICATIONS = 300
SLOPE, SLOWDOWN = -0.1, 1.8
AOV_MEAN, AOV_SHAPE = 60.0, 2.0
WINDOW_MINUTES = 30
SITE_SESSIONS = 2_000_000  # a day of the rest of the site, one more campaign in the site fit
Vector = np.ndarray  # a curve vector of CURVE_SIZE counts


@dataclass(frozen=True)
class Device:
    name: str
    share: float
    median_s: float
    level: float  # conversion rate at LCP 0

    @property
    def keys(self) -> Vector:
        return np.array([curve_key(b, device_stratum(self.name)) for b in range(N_BINS)])


DEVICES = (Device("desktop", 0.45, 1.8, 0.035), Device("mobile", 0.50, 3.0, 0.020),
           Device("tablet", 0.05, 2.4, 0.030))
SLOWED = {"all": ("desktop", "mobile", "tablet"), "mobile": ("mobile",)}


def device_population(device: Device, slope: float, factor: float = 1.0) -> Population:
    """Exact bin shares and rates of one device's LCP (x ``factor``) under its true curve."""
    pop, scale = population(device.median_s * factor, slope), device.level / P0
    return Population(pop.share, pop.bin_rate * scale, pop.rate * scale)


def populations(slope: float, slowed: tuple[str, ...] = ()) -> tuple[Population, ...]:
    return tuple(device_population(d, slope, SLOWDOWN if d.name in slowed else 1.0)
                 for d in DEVICES)


def true_rate(pops: tuple[Population, ...]) -> float:
    return sum(d.share * p.rate for d, p in zip(DEVICES, pops, strict=True))


def draw(rng: np.random.Generator, sessions: int,
         pops: tuple[Population, ...]) -> tuple[Vector, Vector]:
    """Sessions and conversions per (stratum, bin): multinomial devices, then bins, binomial."""
    n, y = np.zeros(CURVE_SIZE), np.zeros(CURVE_SIZE)
    per_device = rng.multinomial(sessions, [d.share for d in DEVICES])
    for device, pop, count in zip(DEVICES, pops, per_device, strict=True):
        counts = rng.multinomial(count, pop.share)
        n[device.keys], y[device.keys] = counts, rng.binomial(counts, pop.bin_rate)
    return n, y


@dataclass(frozen=True)
class Fits:
    """The campaign's stratified fit (production) and the pooled one (reference)."""

    stratified_site: CurveFit | None  # the site fit the campaign is shrunk to, if any
    pooled_site: CurveFit | None


def site_fits(rng: np.random.Generator, n: Vector, y: Vector, curve: str) -> Fits:
    """As ``Monitor._refit_site``: one stratum per campaign and device (this one and the rest
    of the site, at the site's slope); the pooled reference folds the same counts."""
    if curve == "own":
        return Fits(None, None)
    rest_n, rest_y = draw(rng, SITE_SESSIONS, populations(SLOPE))
    site_n, site_y = np.concatenate([n, rest_n]), np.concatenate([y, rest_y])
    strata = fit_common_slope(site_n, site_y, prior_slope_sd=1.0)
    pooled = fit_curve(fold_strata(site_n), fold_strata(site_y), prior_slope_sd=1.0)
    assert strata is not None
    return Fits(strata.curve(), pooled)


def aov_of(rng: np.random.Generator, orders: float) -> tuple[float, float]:
    values = rng.gamma(AOV_SHAPE, AOV_MEAN / AOV_SHAPE, int(orders))
    return average_order_value(float(values.sum()), float((values**2).sum()), float(orders))


def pooled_loss(n: Vector, y: Vector, current: Vector, site: CurveFit | None,
                aov: tuple[float, float]) -> Estimate:
    """What the pooled path (one curve over all devices) says, for reference."""
    fit, sessions = shrunk_fit(fold_strata(n), fold_strata(y), site), float(current.sum())
    if fit is None or sessions == 0.0:
        return Estimate.zero()
    return slow_page_loss(fit, fold_strata(n), fold_strata(current),
                          sessions_per_hour=sessions * 60 / WINDOW_MINUTES,
                          sessions_observed=sessions, average_order_value=aov[0],
                          aov_se=aov[1], baseline_sessions=float(n.sum()))


@functools.cache
def simulate(per_minute: float, curve: str, slowed: str = "all",
             seed: int = 20261205) -> tuple[Intervals, Intervals]:
    """(stratified production, pooled reference) intervals over REPLICATIONS replications.

    With ``curve="site"`` each campaign's true slope is drawn from N(SLOPE, DEFAULT_TAU^2)
    around the site's (what the shrinkage assumes); with ``"own"`` there is no site fit.
    """
    rng = np.random.default_rng(seed)
    rows: tuple[list[Estimate], list[Estimate]] = ([], [])
    truth: list[float] = []
    for _ in range(REPLICATIONS):
        slope = SLOPE + (DEFAULT_TAU * rng.standard_normal() if curve == "site" else 0.0)
        base, slow = populations(slope), populations(slope, SLOWED[slowed])
        n, y = draw(rng, round(per_minute * 60 * 24), base)
        fits, aov = site_fits(rng, n, y, curve), aov_of(rng, y.sum())
        current, _ = draw(rng, int(rng.poisson(per_minute * WINDOW_MINUTES)), slow)
        fit = shrunk_strata_fit(n, y, fits.stratified_site)  # as CampaignModel._slow_page_loss
        rows[0].append(price_slow_pages(fit, n, current, minutes=WINDOW_MINUTES,
                                        aov=aov[0], aov_se=aov[1]))
        rows[1].append(pooled_loss(n, y, current, fits.pooled_site, aov))
        truth.append(per_minute * 60 * (true_rate(base) - true_rate(slow)) * AOV_MEAN)
    return intervals(rows[0], truth), intervals(rows[1], truth)


def intervals(rows: list[Estimate], truth: list[float]) -> Intervals:
    value, low, high = (np.array([getattr(r, f) for r in rows]) for f in ("value", "low", "high"))
    return Intervals(value, low, high, np.array(truth))


def report(per_minute: float, curve: str, slowed: str) -> Intervals:
    strata, pooled = simulate(per_minute, curve, slowed)
    name = f"{per_minute:g}/min {curve}, slowed {slowed}"
    print(strata.summary(f"stratified {name}"))
    print(pooled.summary(f"  pooled reference {name}")
          + f", median bias {float(np.median(pooled.value / pooled.truth)) - 1.0:+.2f}")
    return strata


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.name)
def test_simulated_device_population_matches_scipy_integration(device: Device) -> None:
    dist = stats.lognorm(s=SD_LOG, scale=device.median_s * SLOWDOWN)
    rate = integrate.quad(lambda x: device.level * math.exp(SLOPE * x) * dist.pdf(x),
                          0.0, np.inf)[0]
    pop = device_population(device, SLOPE, SLOWDOWN)
    assert pop.rate == pytest.approx(rate, rel=1e-6)
    assert float(pop.share @ pop.bin_rate) == pytest.approx(rate, rel=1e-6)


def test_devices_land_in_their_strata() -> None:
    n, _ = draw(np.random.default_rng(1), 10_000, populations(SLOPE))
    per_stratum = n.reshape(-1, N_BINS).sum(axis=1)
    assert per_stratum[0] == 0.0  # no unknown devices
    for device in DEVICES:
        assert DEVICE_STRATA[device_stratum(device.name)] == device.name
        assert per_stratum[device_stratum(device.name)] == pytest.approx(
            10_000 * device.share, rel=0.1)


@pytest.mark.parametrize(("per_minute", "curve"), [
    pytest.param(40.0, "own", id="40-per-min-no-site-fit"),
    pytest.param(40.0, "site", id="40-per-min-shrunk-to-site"),
])
def test_stratified_loss_of_a_big_campaign_covers_the_truth(per_minute: float,
                                                            curve: str) -> None:
    strata = report(per_minute, curve, "all")
    assert 0.80 <= strata.coverage <= 0.97, strata.summary("stratified")
    assert strata.median_relative_error < 0.25, strata.summary("stratified")


def test_stratified_loss_of_a_small_campaign_is_wide_and_honest() -> None:
    strata = report(2.0, "site", "all")
    # clipped at 0 below, so it may over-cover
    assert 0.80 <= strata.coverage <= 0.995, strata.summary("stratified")
    assert np.median(strata.value) > 0.0  # a figure, not silence
    assert strata.median_relative_width > 1.3 * simulate(40.0, "site")[0].median_relative_width


def test_a_mobile_only_slowdown_is_priced_at_mobile_loss() -> None:
    """Desktop and tablet unchanged: the truth is mobile's loss, weighted by its share."""
    strata = report(40.0, "site", "mobile")
    assert 0.80 <= strata.coverage <= 0.97, strata.summary("stratified")
    assert strata.median_relative_error < 0.25, strata.summary("stratified")
