"""detectors.site: the site slope shared over workers by their partitions' shares.

Checked against the fit of the whole site (``fit_common_slope`` over every stratum): a part
of the strata fitted with the other parts' shares in its prior must find the whole site's
slope, and without them it does not.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import pytest

from detectors.elasticity import BIN_CENTERS_S, N_BINS, CurveFit
from detectors.monitor import Monitor, MonitorParams
from detectors.site import SlopeShare, share_of, with_shares
from detectors.strata import fit_common_slope, profile_score
from tests.unit.test_campaign import MIN, T0, Traffic
from tests.unit.test_monitor import _Tee

STRATA = 4  # devices per campaign


def site(seed: int, campaigns: int = 12, slope: float = -0.12) -> tuple[np.ndarray, np.ndarray]:
    """Sessions and conversions per (campaign x device stratum, LCP bin), one common slope;
    campaigns of very different sizes, levels and LCP mixes."""
    rng = np.random.default_rng(seed)
    rows = campaigns * STRATA
    size = rng.lognormal(math.log(400.0), 1.5, rows)
    centre = rng.uniform(1.5, 4.0, rows)
    mix = np.exp(-0.5 * ((BIN_CENTERS_S[None, :] - centre[:, None]) / 1.0) ** 2)
    sessions = rng.poisson(size[:, None] * mix / mix.sum(axis=1, keepdims=True)).astype(float)
    level = rng.uniform(0.02, 0.08, rows)
    rate = np.minimum(level[:, None] * np.exp(slope * BIN_CENTERS_S[None, :]), 1.0)
    conversions = rng.binomial(sessions.astype(int), rate).astype(float)
    return sessions, conversions


def profile(n: np.ndarray, y: np.ndarray, b: float) -> float:
    """The profile log-likelihood (no prior), written out."""
    total = 0.0
    for ns, ys in zip(n, y, strict=True):
        if ys.sum() > 0:
            total += b * float(ys @ BIN_CENTERS_S) - ys.sum() * math.log(
                float(ns @ np.exp(b * BIN_CENTERS_S)))
    return total


@pytest.mark.parametrize("b", [-0.4, -0.1, 0.0, 0.2])
def test_profile_score_is_the_profile_likelihoods_derivatives(b: float) -> None:
    n, y = site(3, campaigns=5)
    gradient, information, converted = profile_score(n, y, b)
    h = 1e-4
    assert gradient == pytest.approx((profile(n, y, b + h) - profile(n, y, b - h)) / (2 * h),
                                     rel=1e-5)
    second = (profile(n, y, b + h) - 2 * profile(n, y, b) + profile(n, y, b - h)) / h**2
    assert information == pytest.approx(-second, rel=1e-3)
    assert converted == y.sum()


def fit_with_others(n: np.ndarray, y: np.ndarray, part: np.ndarray, slope: float) -> Any:
    """Fit the strata of ``part`` with the shares of the other parts taken at ``slope``."""
    other = share_of(n[part == 1], y[part == 1], slope, T0)
    assert other is not None
    mean, sd = with_shares(0.0, 1.0, [other])
    return fit_common_slope(n[part == 0], y[part == 0], prior_slope=mean, prior_slope_sd=sd)


@pytest.mark.parametrize("seed", range(6))
def test_a_part_with_the_others_shares_finds_the_whole_sites_slope(seed: int) -> None:
    n, y = site(seed)
    whole = fit_common_slope(n, y, prior_slope_sd=1.0)
    assert whole is not None
    part = np.random.default_rng(seed + 100).integers(0, 2, len(n) // STRATA).repeat(STRATA)
    alone = fit_common_slope(n[part == 0], y[part == 0], prior_slope_sd=1.0)
    assert alone is not None
    # taken at the whole site's slope: equal to second order
    shared = fit_with_others(n, y, part, whole.slope)
    assert abs(shared.slope - whole.slope) < 1e-3 * whole.slope_se
    assert shared.slope_var == pytest.approx(whole.slope_var, rel=1e-3)
    # taken at 0 (no site fit yet) and then at each refit's slope: three refits suffice
    slope = 0.0
    for _ in range(3):
        slope = fit_with_others(n, y, part, slope).slope
    assert abs(slope - whole.slope) < 0.01 * whole.slope_se
    assert abs(alone.slope - whole.slope) > 0.05 * whole.slope_se  # what the shares mend
    assert alone.slope_var > 1.2 * whole.slope_var


def test_with_shares_multiplies_gaussians() -> None:
    shares = [SlopeShare(T0, -0.2, 100.0, 50.0), SlopeShare(T0, -0.1, 300.0, 80.0)]
    mean, sd = with_shares(0.0, 1.0, shares)
    assert mean == pytest.approx((-0.2 * 100 - 0.1 * 300) / 401.0)
    assert sd == pytest.approx(401.0 ** -0.5)
    assert with_shares(0.3, 2.0, []) == (0.3, 2.0)


def test_share_of_strata_without_conversions_is_none() -> None:
    assert share_of(np.full(2 * N_BINS, 5.0), np.zeros(2 * N_BINS), -0.1, T0) is None


def test_share_state_round_trips_and_bad_states_are_refused() -> None:
    share = SlopeShare(T0, -0.15, 250.0, 42.0)
    assert SlopeShare.from_state(share.to_state()) == share
    for bad in ({"tick_ms": T0, "mean": -0.1, "information": 0.0, "conversions": 1.0},
                {"tick_ms": T0, "mean": math.nan, "information": 5.0, "conversions": 1.0},
                {"tick_ms": T0, "mean": -0.1, "conversions": 1.0},
                {"tick_ms": None, "mean": -0.1, "information": 5.0, "conversions": 1.0}):
        with pytest.raises(ValueError, match="not a slope share"):
            SlopeShare.from_state(bad)


# ------------------------------------------------------------------ monitors that share

GROUPS = {"a": 0, "b": 0, "c": 1, "d": 1}
DAY = 24 * 60 * MIN


def traffic() -> list[Traffic]:
    return [Traffic(11, campaign="a", sessions_per_minute=60, slope_per_s=-0.2),
            Traffic(12, campaign="b", sessions_per_minute=5, slope_per_s=-0.2),
            Traffic(13, campaign="c", sessions_per_minute=30, slope_per_s=-0.2,
                    lcp_median_ms=3_500.0),
            Traffic(14, campaign="d", sessions_per_minute=20, slope_per_s=-0.2)]


def run(minutes: int, *, share: bool) -> tuple[Monitor, Monitor, Monitor]:
    """One monitor of every campaign, and two (partitions 0 and 1) that share or not."""
    whole = Monitor()
    group_of = GROUPS.__getitem__ if share else None
    halves = [Monitor(group_of=group_of), Monitor(group_of=group_of)]
    sources = traffic()
    for i in range(minutes):
        for source in sources:
            source.minute(_Tee([whole, halves[GROUPS[source.campaign]]]), T0 + i * MIN)
        whole.advance(T0 + (i + 1) * MIN)
        for half in halves:
            half.advance(T0 + (i + 1) * MIN)
        for sender, receiver in (halves, halves[::-1]):
            for group, given in sender.drain_shares().items():
                receiver.receive_share(group, given)
    return whole, halves[0], halves[1]


def site_fits(*, share: bool) -> tuple[CurveFit, list[CurveFit], list[Monitor]]:
    whole, first, second = run(300, share=share)
    fits = [m.site_fit for m in (whole, first, second)]
    assert all(fit is not None for fit in fits)
    return cast(CurveFit, fits[0]), cast(list[CurveFit], fits[1:]), [first, second]


def test_two_monitors_sharing_find_the_slope_one_monitor_finds() -> None:
    """Within 0.15 standard errors (measured: 0.08; the other's share is one refit old)."""
    whole, halves, monitors = site_fits(share=True)
    se = math.sqrt(whole.cov[1][1])
    for half in halves:
        assert abs(half.slope - whole.slope) < 0.15 * se
        assert half.cov[1][1] == pytest.approx(whole.cov[1][1], rel=0.06)
    assert [set(m.shares) for m in monitors] == [{1}, {0}]


def test_two_monitors_that_do_not_share_each_fit_their_own() -> None:
    """What the shares mend (measured: about 1 standard error off, twice the variance)."""
    whole, halves, monitors = site_fits(share=False)
    se = math.sqrt(whole.cov[1][1])
    for half in halves:
        assert abs(half.slope - whole.slope) > 0.5 * se
        assert half.cov[1][1] > 1.5 * whole.cov[1][1]
    assert [(m.drain_shares(), m.shares) for m in monitors] == [({}, {}), ({}, {})]


def test_a_stale_share_or_one_of_a_partition_held_here_does_not_count() -> None:
    monitor = Monitor(group_of=GROUPS.__getitem__)
    sources = traffic()[:2]
    for i in range(200):
        for source in sources:
            source.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
    alone = monitor.site_fit
    assert alone is not None
    far = SlopeShare(T0 + 200 * MIN, 0.5, 1e6, 1e4)  # would pull the slope to +0.5
    monitor.receive_share(0, far)  # partition 0 is held here: its own data counts
    monitor.receive_share(1, SlopeShare(T0 + 150 * MIN - DAY, 0.5, 1e6, 1e4))  # a day old
    monitor.advance(T0 + 220 * MIN)
    assert monitor.site_fit is not None
    assert monitor.site_fit.slope == pytest.approx(alone.slope, abs=0.05)
    monitor.receive_share(1, SlopeShare(T0 + 225 * MIN, 0.5, 1e6, 1e4))  # fresh, held elsewhere
    monitor.receive_share(1, SlopeShare(T0, -3.0, 1e6, 1e4))  # older: ignored
    monitor.advance(T0 + 240 * MIN)
    assert monitor.site_fit.slope == pytest.approx(0.5, abs=0.01)
    assert set(monitor.drain_shares()) == {0}


def test_with_every_campaign_evicted_nothing_is_behind_the_site_fit() -> None:
    monitor = Monitor(MonitorParams(idle_ttl_minutes=30), group_of=GROUPS.__getitem__)
    source = traffic()[0]
    for i in range(200):
        source.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
    assert monitor.site_conversions > 50
    assert monitor.site_sources == (1, 0)
    monitor.advance(T0 + 300 * MIN)  # idle for 100 minutes: evicted, then a refit
    assert not monitor.models
    assert (monitor.site_fit, monitor.site_sources, monitor.site_conversions) == (None, (0, 0), 0.0)
