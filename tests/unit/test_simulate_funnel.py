"""revwatch simulate's checkout funnel (docs/FUNNEL.md, "Simulation"): who reaches the
checkout page, who orders after it, when, and where an incident cuts in, measured on seeded
simulations against the model's known truth."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from streams.simulate import generate, truth
from streams.simulate_demo import demo_scenario
from streams.simulate_funnel import FunnelSpec, Lag, split_conversion
from streams.simulate_model import (
    DEFAULT_START_MS,
    HOUR_MS,
    MINUTE_MS,
    CampaignSpec,
    IncidentSpec,
    Scenario,
    default_scenario,
)
from streams.simulate_pages import BOT_USER_AGENTS, CHECKOUT_URL, SHOP_ORIGIN

EVENING = DEFAULT_START_MS + 18 * HOUR_MS
Records = Sequence[tuple[str, dict[str, Any]]]


@dataclass
class Session:
    """What the records show of one session."""

    start_ms: int
    bot: bool
    checkout_views: set[str] = field(default_factory=set)
    checkout_ms: int | None = None
    orders: list[int] = field(default_factory=list)


def _spec(rate: float = 100.0, cr: float = 0.2, *, mobile: float = 0.0,
          q: float | None = None) -> CampaignSpec:
    return CampaignSpec("shop", rate, cr, 80.0, "/product/x", mobile, 2200.0,
                        order_given_checkout=q)


def _scenario(*campaigns: CampaignSpec, days: float = 0.1, **kw: Any) -> Scenario:
    return Scenario(seed=kw.pop("seed", 11), start_ms=kw.pop("start_ms", EVENING), days=days,
                    campaigns=campaigns or (_spec(),), **kw)


def _sessions(records: Records) -> dict[str, Session]:
    out: dict[str, Session] = {}
    for kind, r in records:
        if kind != "beacon":
            continue
        row = out.setdefault(r["session_id"], Session(r["ts"], r["user_agent"] in BOT_USER_AGENTS))
        row.start_ms = min(row.start_ms, r["ts"])
        if r["page_group"] == "checkout":
            assert (r["page_url"], r["referrer"]) == (CHECKOUT_URL, SHOP_ORIGIN)
            row.checkout_views.add(r["beacon_id"])
            row.checkout_ms = r["ts"]
    for kind, r in records:
        if kind == "order":
            out[r["session_id"]].orders.append(r["ts"])
    return out


def _order_rate(rows: list[Session]) -> float:
    return float(np.mean([bool(r.orders) for r in rows]))


def _reach_rate(rows: list[Session]) -> float:
    return float(np.mean([r.checkout_ms is not None for r in rows]))


def _expected_conversion(spec: CampaignSpec, slope_per_s: float) -> float:
    """Today's formula, P(order) = min(rate x device x exp(slope x LCP gap), 0.95),
    averaged over the landing LCP and device draws by Monte-Carlo."""
    rng = np.random.default_rng(99)
    mobile = rng.random(400_000) < spec.mobile_share
    lcp = spec.lcp_median_ms * np.where(mobile, 1.4, 1.0) * np.exp(
        0.45 * rng.standard_normal(mobile.size))
    curve = np.exp(slope_per_s * (lcp - spec.lcp_median_ms) / 1000.0)
    return float(np.minimum(spec.conversion_rate * np.where(mobile, 0.7, 1.0) * curve,
                            0.95).mean())


@pytest.fixture(scope="module", params=[None, 0.8], ids=["q-of-the-scenario", "q-0.8"])
def world(request: pytest.FixtureRequest) -> tuple[Scenario, Records, dict[str, Any]]:
    """One campaign (half on phones, slope -0.09/s), many bots, no incident; q 0.5 (the
    scenario's default) or the campaign's own 0.8."""
    s = _scenario(_spec(120.0, 0.1, mobile=0.5, q=request.param), background_bot_fraction=0.05)
    return s, list(generate(s)), truth(s)


def test_reachers_order_at_q_and_sessions_convert_as_without_a_funnel(
        world: tuple[Scenario, Records, dict[str, Any]]) -> None:
    s, records, facts = world
    (spec,) = s.campaigns
    humans = [r for r in _sessions(records).values() if not r.bot]
    reachers = [r for r in humans if r.checkout_ms is not None]
    q = s.order_given_checkout(spec)
    assert len(reachers) > 1500
    assert _order_rate(reachers) == pytest.approx(q, abs=0.04)
    assert _order_rate(humans) == pytest.approx(_expected_conversion(spec, -0.09), rel=0.1)
    row = facts["campaigns"]["shop"]
    assert row["checkout_sessions"] == len(reachers)
    assert row["converted_sessions"] == sum(1 for r in humans if r.orders)
    assert row["order_given_checkout"] == q


def test_every_order_follows_its_sessions_one_checkout_page(
        world: tuple[Scenario, Records, dict[str, Any]]) -> None:
    """Only reachers show the checkout page, once (retries and late records aside), and
    only they order, after it; bots never show it."""
    _, records, _ = world
    sessions = _sessions(records).values()
    ordering = [r for r in sessions if r.orders]
    assert ordering
    assert all(r.checkout_ms is not None and r.checkout_ms < min(r.orders) for r in ordering)
    assert all(len(r.checkout_views) <= 1 for r in sessions)
    bots = [r for r in sessions if r.bot]
    assert len(bots) > 300
    assert not any(r.checkout_views or r.orders for r in bots)
    views = [r for kind, r in records if kind == "beacon" and r["page_group"] == "checkout"]
    assert any(r["received_at"] - r["ts"] > 2 * MINUTE_MS for r in views)  # late ones too
    assert any("lcp_ms" in r for r in views)


def test_both_lags_have_their_configured_medians(
        world: tuple[Scenario, Records, dict[str, Any]]) -> None:
    s, records, _ = world
    rows = [r for r in _sessions(records).values() if r.checkout_ms is not None]
    to_checkout = [(r.checkout_ms - r.start_ms) / MINUTE_MS for r in rows if r.checkout_ms]
    to_order = [(min(r.orders) - r.checkout_ms) / MINUTE_MS for r in rows
                if r.orders and r.checkout_ms]
    funnel = s.funnel
    assert float(np.median(to_checkout)) == pytest.approx(funnel.to_checkout.median_min, rel=0.1)
    assert float(np.median(to_order)) == pytest.approx(funnel.to_order.median_min, rel=0.1)
    assert max(to_checkout) <= funnel.to_checkout.max_min < 30  # inside the session timeout
    assert (funnel.to_checkout.median_min, funnel.to_order.median_min) == (4.0, 2.0)


def test_lags_follow_the_scenarios_funnel() -> None:
    funnel = FunnelSpec(0.5, Lag(8.0, 0.5, 1.0, 20.0), Lag(1.0, 0.5, 0.1, 10.0))
    s = _scenario(_spec(40.0), days=0.05, funnel=funnel)
    rows = [r for r in _sessions(list(generate(s))).values() if r.orders and r.checkout_ms]
    assert len(rows) > 150
    assert float(np.median([r.checkout_ms - r.start_ms for r in rows if r.checkout_ms])) \
        == pytest.approx(8.0 * MINUTE_MS, rel=0.12)
    assert float(np.median([min(r.orders) - r.checkout_ms for r in rows if r.checkout_ms])) \
        == pytest.approx(1.0 * MINUTE_MS, rel=0.12)


@pytest.mark.parametrize("place", ["payment", "cart"])
def test_an_incident_cuts_in_at_its_place_in_the_funnel(place: Any) -> None:
    """A drop x0.4 for an hour. At the payment: sessions reach the checkout as before, the
    reachers whose checkout falls in the hour order at q x 0.4. At the cart: x0.4 of the
    sessions started in the hour reach it, and those order at q."""
    start = EVENING + HOUR_MS
    inc = IncidentSpec("i1", "conversion_drop", ("shop",), start, start + HOUR_MS,
                       conversion_factor=0.4, funnel=place)
    s = _scenario(incidents=(inc,), days=0.15)
    sessions = [r for r in _sessions(list(generate(s))).values() if not r.bot]
    before = [r for r in sessions if r.start_ms < start - 25 * MINUTE_MS]  # checkout before it
    started = [r for r in sessions if start <= r.start_ms < inc.end_ms]
    at_checkout = [r for r in sessions if r.checkout_ms and start <= r.checkout_ms < inc.end_ms]
    reach_ratio = _reach_rate(started) / _reach_rate(before)
    q = s.funnel.order_given_checkout
    assert _order_rate([r for r in before if r.checkout_ms]) == pytest.approx(q, abs=0.05)
    if place == "payment":
        assert reach_ratio == pytest.approx(1.0, rel=0.12)
        assert _order_rate(at_checkout) == pytest.approx(q * 0.4, abs=0.04)
    else:
        assert reach_ratio == pytest.approx(0.4, rel=0.12)
        reachers = [r for r in started if r.checkout_ms]
        assert _order_rate(reachers) == pytest.approx(q, abs=0.06)
    (facts,) = truth(s)["incidents"]
    assert facts["funnel"] == place
    assert facts["revenue_lost_total"] > 0


def test_a_conversion_above_q_is_capped_at_q() -> None:
    """P(reach) = min(p / q, 1): with q 0.2 under p 0.3 (flat in LCP) every session reaches
    the checkout and converts at q; the truth's expectation says so."""
    s = _scenario(_spec(20.0, 0.3, q=0.2), days=0.05, curve_slope_per_s=0.0)
    humans = [r for r in _sessions(list(generate(s))).values() if not r.bot]
    row = truth(s)["campaigns"]["shop"]
    assert row["checkout_sessions"] == row["sessions"] == len(humans)
    assert _order_rate(humans) == pytest.approx(0.2, abs=0.03)
    assert row["expected_conversions"] / row["sessions"] == pytest.approx(0.2, abs=0.01)


def test_split_conversion_keeps_the_product_and_caps_the_reach() -> None:
    p = np.array([0.01, 0.2, 0.5, 0.9])
    reach, order = split_conversion(p, 0.5, np.ones(4))
    assert np.allclose(reach * order, np.minimum(p, 0.5))
    assert reach.max() == 1.0
    assert np.allclose(split_conversion(p, 0.5, np.full(4, 0.4))[1], 0.2)


def test_the_benchmark_and_demo_checkouts_break_at_the_payment() -> None:
    drops = [i for i in (*default_scenario().incidents,
                         *demo_scenario(incident="checkout").incidents)
             if i.kind == "conversion_drop"]
    assert len(drops) == 4
    assert {i.funnel for i in drops} == {"payment"}
    assert {i.id for i in drops} >= {"checkout-google-shopping", "checkout-spring-sale",
                                     "checkout-mobile-spring-sale", "demo-checkout"}


@pytest.mark.parametrize(("build", "match"), [
    pytest.param(lambda: FunnelSpec(order_given_checkout=0.0), "order_given_checkout",
                 id="q-0"),
    pytest.param(lambda: _spec(q=1.5), "order_given_checkout", id="campaign-q-above-1"),
    pytest.param(lambda: Lag(2.0, 0.7, 3.0, 10.0), "lag needs", id="lag-min-over-median"),
    pytest.param(lambda: IncidentSpec("i", "conversion_drop", (), 0, 1, funnel="basket"),
                 "funnel must be", id="unknown-place"),
])
def test_bad_funnel_parameters_are_refused(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_the_truth_file_describes_the_funnel() -> None:
    facts = truth(_scenario(_spec(5.0), days=0.01))["scenario"]["funnel"]
    assert facts["order_given_checkout"] == 0.5
    assert facts["to_checkout"]["median_min"] == 4.0
    assert facts["to_order"]["median_min"] == 2.0
    assert math.isclose(facts["to_checkout"]["max_min"], 25.0)
