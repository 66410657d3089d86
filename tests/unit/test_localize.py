"""Where it happened (detectors/localize.py, where.py): per-device shifts and conversions,
the tests that the devices differ, and what the alert names.

Known answers: Cochran's Q for two devices is the two-sided z test of their difference
(scipy's normal), the shifts and standard errors are checked for bias and coverage on
seeded log-normal draws, and how often a slowdown is placed on the wrong devices (or on
any, when it is everywhere) is measured over seeded simulations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.stats import chi2, chisquare, norm

from detectors.elasticity import N_BINS, lcp_bins
from detectors.episodes import CONVERSION, LATENCY, PERFORMANCE, evidence
from detectors.localize import (
    conversions_differ_p,
    delay_shares,
    device_conversions,
    device_shifts,
    drop_devices,
    heterogeneity_p,
    slow_devices,
)
from detectors.strata import N_STRATA, device_stratum
from detectors.summary import firing_summary
from detectors.verdicts import CampaignVerdict, Estimate
from detectors.where import conversion_device_evidence, device_evidence
from streams.alertmanager import alertmanager_alert
from tests.unit.test_incidents import slow, verdict

MIX = {"desktop": 0.55, "mobile": 0.40, "tablet": 0.05}
MEDIAN_MS = {"desktop": 2000.0, "mobile": 2800.0, "tablet": 2300.0}
SD_LOG = 0.5


def draw(rng: np.random.Generator, n: int, factors: dict[str, float]) -> np.ndarray:
    """A curve vector of ``n`` landings over the device mix, LCP log-normal per device,
    each device slowed by its factor."""
    vector = np.zeros(N_STRATA * N_BINS)
    names = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    for name in MIX:
        k = int((names == name).sum())
        lcp = MEDIAN_MS[name] * factors.get(name, 1.0) * np.exp(SD_LOG * rng.standard_normal(k))
        np.add.at(vector, lcp_bins(lcp) + N_BINS * device_stratum(name), 1)
    return vector


def named_over_seeds(factors: dict[str, float], recent: int, seeds: int = 300
                     ) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        rows = device_shifts(draw(rng, 20_000, {}), draw(rng, recent, factors))
        named = slow_devices(rows)
        counts[named] = counts.get(named, 0) + 1
    return counts


def test_two_devices_q_is_the_z_test_of_their_difference() -> None:
    rows = {"desktop": (400.0, 0.05, 0.03, 10.0), "mobile": (300.0, 0.40, 0.05, 200.0)}
    z = (0.40 - 0.05) / math.hypot(0.03, 0.05)
    assert heterogeneity_p(rows) == pytest.approx(2 * norm.sf(z), rel=1e-9)


def test_q_of_three_devices_against_its_definition() -> None:
    rows = {"a": (1.0, 0.1, 0.05, 0.0), "b": (1.0, 0.3, 0.1, 0.0), "c": (1.0, -0.05, 0.08, 0.0)}
    shifts, ses = np.array([0.1, 0.3, -0.05]), np.array([0.05, 0.1, 0.08])
    weights = 1 / ses**2
    pooled = weights @ shifts / weights.sum()
    assert heterogeneity_p(rows) == pytest.approx(
        chi2.sf(weights @ (shifts - pooled) ** 2, 2), rel=1e-9)


def test_one_device_cannot_differ() -> None:
    assert heterogeneity_p({"mobile": (300.0, 0.4, 0.05, 100.0)}) == 1.0
    assert slow_devices({"mobile": (300.0, 0.4, 0.05, 100.0)}) == ()


@pytest.mark.parametrize(("factors", "recent"), [
    ({}, 300), ({"desktop": 1.5, "mobile": 1.5, "tablet": 1.5}, 300),
    ({"mobile": 1.6}, 300), ({"mobile": 1.6}, 2_000)])
def test_shifts_are_unbiased_and_their_intervals_cover(factors: dict[str, float],
                                                       recent: int) -> None:
    z = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        rows = device_shifts(draw(rng, 20_000, {}), draw(rng, recent, factors))
        z += [(shift - math.log(factors.get(name, 1.0))) / se
              for name, (_, shift, se, _) in rows.items()]
    z_all = np.array(z)
    assert abs(z_all.mean()) < 0.1
    assert 0.93 <= float(np.mean(np.abs(z_all) < norm.ppf(0.975))) <= 0.97


def test_a_slowdown_of_every_device_is_placed_nowhere() -> None:
    """By the same factor everywhere (log-shifts equal): never named, also with 20,000
    recent sessions, where a device's own shift is measured to a few per cent."""
    for recent in (300, 20_000):
        counts = named_over_seeds({"desktop": 1.5, "mobile": 1.5, "tablet": 1.5}, recent)
        assert counts.get((), 0) >= 0.99 * sum(counts.values()), counts


def test_no_slowdown_is_placed_nowhere() -> None:
    counts = named_over_seeds({}, 300)
    assert counts.get((), 0) >= 0.99 * sum(counts.values()), counts


def test_a_phone_only_slowdown_is_put_on_mobile() -> None:
    counts = named_over_seeds({"mobile": 1.6}, 300)
    assert counts.get(("mobile",), 0) >= 0.95 * sum(counts.values()), counts
    assert set(counts) <= {("mobile",), ()}, counts  # never on another device


def test_shares_of_the_added_wait() -> None:
    rows = {"desktop": (500.0, 0.0, 0.02, -3.0), "mobile": (300.0, 0.5, 0.04, 300.0),
            "tablet": (40.0, 0.3, 0.1, 100.0)}
    assert delay_shares(rows) == {"desktop": 0.0, "mobile": 0.75, "tablet": 0.25}
    assert set(delay_shares({"desktop": (1.0, 0.0, 1.0, -1.0)}).values()) == {0.0}


def test_a_device_neither_clearly_slower_nor_clearly_not_leaves_it_unclear() -> None:
    rows = {"desktop": (500.0, 0.0, 0.02, 0.0), "mobile": (300.0, 0.5, 0.04, 300.0),
            "tablet": (40.0, 0.25, 0.1, 30.0)}  # z 2.5: between 2 and 3
    assert slow_devices(rows) == ()
    assert slow_devices({**rows, "tablet": (40.0, 0.05, 0.1, 3.0)}) == ("mobile",)


def test_too_few_sessions_leave_a_device_out() -> None:
    rng = np.random.default_rng(3)
    base, recent = draw(rng, 20_000, {}), draw(rng, 40, {})
    assert "tablet" not in device_shifts(base, recent)  # 5% of 40
    assert device_shifts(base, np.zeros_like(recent)) == {}
    with pytest.raises(ValueError, match="shape"):
        device_shifts(base, recent[:N_BINS])


def phone_rows() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    return device_shifts(draw(rng, 20_000, {}), draw(rng, 400, {"mobile": 1.8}))


def test_the_verdict_carries_the_rows_through_json() -> None:
    rows = phone_rows()
    tick = slow("spring_sale", 28_333_334 * 60_000, devices=rows)
    back = CampaignVerdict.from_state(orjson.loads(orjson.dumps(tick.to_state())))
    assert back.devices == rows
    assert CampaignVerdict.from_state({**tick.to_state(), "from_a_newer_worker": 1}) == tick
    state = tick.to_state()
    del state["devices"]  # a verdict of a worker before the breakdown
    assert CampaignVerdict.from_state(state).devices is None


def test_the_alert_names_the_device_and_its_share() -> None:
    facts = {**_facts(), **device_evidence(phone_rows())}
    assert facts["slow_devices"] == ["mobile"]
    share = facts["devices"]["mobile"]["share_of_added_wait"]
    assert share > 0.8
    assert facts["devices"]["mobile"]["typical_lcp_change"] == pytest.approx(0.8, abs=0.15)
    line = firing_summary("spring_sale", PERFORMANCE, Estimate(2170, 919, 3420), facts, "USD")
    change = facts["devices"]["mobile"]["typical_lcp_change"]
    assert line.endswith(f"; on mobile (typical LCP +{change * 100:.0f}%, "
                         f"{share * 100:.0f}% of the added wait)")
    two = {**facts, "slow_devices": ["mobile", "desktop"]}
    assert firing_summary("s", PERFORMANCE, Estimate(1, 0, 2), two, "USD").endswith(
        "; on mobile + desktop (100% of the added wait)")
    assert "on mobile" in firing_summary("blog", LATENCY, Estimate(20, 0, 40), facts, "USD")
    alert = {"alert_id": "a", "incident_id": "i", "scope": "campaign", "ts": 0,
             "campaign": "spring_sale", "kind": PERFORMANCE, "state": "firing",
             "started_at": 0, "revenue_at_risk_per_hour": 2170.0, "evidence": facts}
    description = alertmanager_alert(alert, now_ms=0)["annotations"]["description"]
    assert "Slower on mobile: typical LCP +" in description


def test_a_slowdown_everywhere_names_no_device() -> None:
    rng = np.random.default_rng(5)
    rows = device_shifts(draw(rng, 20_000, {}),
                         draw(rng, 1_000, {"desktop": 1.8, "mobile": 1.8, "tablet": 1.8}))
    facts = {**_facts(), **device_evidence(rows)}
    assert facts["slow_devices"] == []
    assert set(facts["devices"]) == {"desktop", "mobile", "tablet"}
    line = firing_summary("spring_sale", PERFORMANCE, Estimate(2170, 919, 3420), facts, "USD")
    assert " on " not in line
    assert device_evidence(None) == {}


def _facts() -> dict[str, Any]:
    return evidence(verdict(latency_regressed=True, lcp_p75_ms=4100.0, latency_shift=0.4), False)


# -- conversion drops ---------------------------------------------------------------------
RATE = np.array([0.0, 0.030, 0.021, 0.025])  # unknown, desktop, mobile, tablet
SHARE = np.array([0.0, 0.34, 0.60, 0.06])
STRATA = {"desktop": 1, "mobile": 2, "tablet": 3}


def conversion_rows(seed: int, sessions: int, factors: dict[str, float],
                    completeness: float = 0.6) -> dict[str, tuple[float, float]]:
    """Recent sessions over the mix, each converting at its device's rate x factor, seen
    up to ``completeness``; the baseline learned from 50,000 sessions."""
    rng = np.random.default_rng(seed)
    factor = np.ones(4)
    for name, value in factors.items():
        factor[STRATA[name]] = value
    n = rng.multinomial(sessions, SHARE)
    base_sessions = SHARE * 50_000
    base_conversions = rng.poisson(base_sessions * RATE)
    observed = rng.binomial(n, RATE * factor * completeness)
    return device_conversions(base_sessions, base_conversions, n * completeness, observed)


def drops_over_seeds(factors: dict[str, float], sessions: int, seeds: int = 300
                     ) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for seed in range(seeds):
        named = drop_devices(conversion_rows(seed, sessions, factors))
        counts[named] = counts.get(named, 0) + 1
    return counts


def test_conversions_differ_p_is_pearsons_chi_squared() -> None:
    rows = {"desktop": (25.0, 17.0), "mobile": (30.0, 4.0), "tablet": (6.0, 5.0)}
    observed = np.array([17.0, 4.0, 5.0])
    expected = np.array([25.0, 30.0, 6.0])
    reference = chisquare(observed, observed.sum() * expected / expected.sum()).pvalue
    assert conversions_differ_p(rows) == pytest.approx(reference, rel=1e-9)
    assert conversions_differ_p({"desktop": (25.0, 0.0), "mobile": (30.0, 0.0)}) == 1.0
    assert conversions_differ_p({"mobile": (30.0, 1.0)}) == 1.0


@pytest.mark.parametrize(("factors", "sessions"), [
    ({}, 1_500), ({"desktop": 0.5, "mobile": 0.5, "tablet": 0.5}, 1_500),
    ({"desktop": 0.5, "mobile": 0.5, "tablet": 0.5}, 10_000),
    ({"desktop": 0.0, "mobile": 0.0, "tablet": 0.0}, 1_500)])
def test_a_drop_on_every_device_is_placed_nowhere(factors: dict[str, float],
                                                  sessions: int) -> None:
    counts = drops_over_seeds(factors, sessions)
    assert counts.get((), 0) >= 0.99 * sum(counts.values()), counts


def test_a_checkout_broken_on_phones_is_put_on_mobile() -> None:
    """Orders of mobile sessions stop (about 30 expected in the window): named in at least
    95% of the seeds, never another device; with half the sessions less often, not wrong."""
    counts = drops_over_seeds({"mobile": 0.0}, 4_000)
    assert counts.get(("mobile",), 0) >= 0.95 * sum(counts.values()), counts
    assert set(drops_over_seeds({"mobile": 0.0}, 1_500)) <= {("mobile",), ()}


def test_device_conversions_leave_out_devices_expecting_few() -> None:
    rows = device_conversions([0, 100, 100, 100], [0, 10, 10, 1], [0, 100, 40, 100],
                              [0, 9, 1, 0])
    assert rows == {"desktop": (10.0, 9.0)}  # mobile expects 4, tablet 1
    with pytest.raises(ValueError, match="shape"):
        device_conversions([1, 2], [1, 2], [1, 2], [1])


def test_the_alert_says_where_conversion_fell() -> None:
    rows = conversion_rows(2, 4_000, {"mobile": 0.0})
    facts = {**evidence(verdict(), True), **conversion_device_evidence(rows)}
    assert facts["drop_devices"] == ["mobile"]
    mobile = facts["conversion_devices"]["mobile"]
    assert mobile["ratio"] == 0.0
    line = firing_summary("spring_sale", CONVERSION, Estimate(2300, 1800, 2900), facts, "USD")
    assert line.endswith(f"; on mobile (orders 0% of expected, "
                         f"{mobile['share_of_missing'] * 100:.0f}% of the missing)")
    alert = {"alert_id": "a", "incident_id": "i", "scope": "campaign", "ts": 0,
             "campaign": "spring_sale", "kind": CONVERSION, "state": "firing",
             "started_at": 0, "revenue_at_risk_per_hour": 2300.0, "evidence": facts}
    description = alertmanager_alert(alert, now_ms=0)["annotations"]["description"]
    assert "Conversion down on mobile: 0% of the expected orders" in description
    assert conversion_device_evidence(None) == {}
