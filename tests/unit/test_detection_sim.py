"""End to end, offline: Pipeline over the seeded demo scenario finds the one incident.

``demo_scenario(seed)``: five campaigns, four hours of warm-up, then spring_sale's pages
slow down (LCP x2.5) for 20 minutes; the run ends 40 minutes later. About 170k records a
seed, a few seconds each.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import pytest

from detectors.incidents import Alert
from streams.cli import _parser
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.simulate import demo_scenario, generate, truth

MIN = 60_000


@cache
def run(seed: int, devices: tuple[str, ...] = ()) -> tuple[list[Alert], int, int, int]:
    """Alerts of the whole scenario, the incident's start and end, and the record count."""
    scenario = demo_scenario(seed, devices=devices)
    records = list(generate(scenario))
    alerts = Pipeline.from_settings(Settings()).play(records)
    (incident,) = scenario.incidents
    return alerts, incident.start_ms, incident.end_ms, len(records)


@pytest.mark.parametrize("seed", [1, 2])
def test_demo_incident_is_the_one_episode_found_fast_and_resolved(seed: int) -> None:
    alerts, start, end, count = run(seed)
    assert count > 100_000, "the scenario should be about 170k records"
    episodes = {a.alert_id for a in alerts}
    kinds = sorted({(a.campaign, a.kind) for a in alerts})
    assert len(episodes) == 1, f"expected one episode, got {len(episodes)}: {kinds}"
    assert {(a.campaign, a.kind) for a in alerts} == {("spring_sale",
                                                      "performance_conversion_loss")}
    firing = [a for a in alerts if a.state == "firing"]
    resolved = [a for a in alerts if a.state == "resolved"]
    assert firing, "never fired"
    assert abs(firing[0].started_at - start) <= 5 * MIN
    detection = firing[0].ts - start
    assert 0 <= detection < 10 * MIN, f"detected after {detection / MIN:.1f} min"
    assert all(a.started_at == firing[0].started_at for a in alerts)
    assert firing[0].revenue_at_risk_per_hour_low <= firing[0].revenue_at_risk_per_hour \
        <= firing[0].revenue_at_risk_per_hour_high
    assert firing[0].revenue_at_risk_per_hour > 0
    assert len(resolved) == 1, "exactly one resolved alert"
    assert resolved[0].ts > end
    assert resolved[0] is alerts[-1], "nothing after the resolution"
    assert [a.ts for a in alerts] == sorted(a.ts for a in alerts)


@pytest.mark.parametrize("seed", [1, 2])
def test_what_the_slowdown_lost_stops_growing_once_its_minutes_are_in(seed: int) -> None:
    """Each closed minute's money counts once (``revenue.slow_page_gain``): once the last
    slow minute is in (its beacons a minute late, counted a minute after), the episode's
    "lost" moves by no more than the noise of normal minutes, though its risk per hour,
    priced over the last ten minutes, stays up for minutes more. Summing that risk a minute
    a tick, as before 2026-12-07 (night), went on counting the slow minutes again (seeds
    1 and 2: 1.64 and 1.52 of the truth at the end, 1.33 and 1.28 now)."""
    alerts, _, end, _ = run(seed)
    after = [a for a in alerts if a.ts >= end + 3 * MIN]
    assert after, "the episode ended with the slowdown"
    grown = after[-1].revenue_lost - after[0].revenue_lost
    assert abs(grown) <= 0.03 * after[-1].revenue_lost
    still_priced = [a for a in after if a.revenue_at_risk_per_hour > 0]
    assert still_priced, "the risk per hour outlives the slowdown (what was summed before)"
    (incident,) = truth(demo_scenario(seed))["incidents"]
    assert 0.7 < after[-1].revenue_lost / incident["revenue_lost_total"] < 1.45


@pytest.mark.parametrize("seed", [1, 2])
def test_a_slowdown_of_every_device_is_put_on_none(seed: int) -> None:
    firing = [a for a in run(seed)[0] if a.state == "firing"]
    assert any(a.evidence.get("devices") for a in firing), "no device breakdown at all"
    assert all(a.evidence.get("slow_devices", []) == [] for a in firing)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_phone_only_slowdown_is_found_and_put_on_mobile(seed: int) -> None:
    """The same incident on mobile pages only (60% of spring_sale's sessions): caught as
    fast, and the alert says where."""
    alerts, start, _, _ = run(seed, ("mobile",))
    firing = [a for a in alerts if a.state == "firing" and a.campaign == "spring_sale"]
    assert firing, "never fired"
    assert firing[0].ts - start < 10 * MIN
    named = [a.evidence.get("slow_devices") for a in firing if a.evidence.get("devices")]
    assert named.count(["mobile"]) >= 0.8 * len(named), named
    assert all(n in ([], ["mobile"]) for n in named), named
    on_mobile = next(a for a in firing if a.evidence.get("slow_devices") == ["mobile"])
    assert "; on mobile (" in on_mobile.summary


@cache
def checkout_broken_on_phones(seed: int) -> tuple[list[Alert], int]:
    """The demo with no phone able to pay for an hour instead of the slowdown."""
    demo = demo_scenario(seed, incident_minutes=60)
    (slowdown,) = demo.incidents
    broken = replace(slowdown, id="demo-checkout", kind="conversion_drop", lcp_factor=1.0,
                     conversion_factor=0.0, devices=("mobile",))
    alerts = Pipeline.from_settings(Settings()).play(generate(replace(demo, incidents=(broken,))))
    return alerts, broken.start_ms


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_checkout_broken_on_phones_is_caught_and_put_on_mobile(seed: int) -> None:
    """About 40% of the campaign's orders stop (mobile converts x0.7 of desktop): the
    phones' own conversion scan (``detectors.device_scan``) sees them stop, 21-29 minutes
    in on seeds 1-4 and 6, 40 on seed 5 (29-31 on seeds 1-6 before the simulated checkout
    funnel, whose payment stops at the checkout page's time). Tested on the campaign's
    orders alone, seed 1 was caught at 43 minutes and seeds 2, 3, 5 and 6 not within the
    hour. While the phones cannot pay, the drop is put on mobile (after it, on seed 1, the
    still-firing episode names mobile and tablet at 96-111 minutes: the tablets' orders
    dipped by chance: 2 from the sessions of those two hours, where about 10 were due)."""
    alerts, start = checkout_broken_on_phones(seed)
    firing = [a for a in alerts if a.state == "firing"]
    assert {(a.campaign, a.kind) for a in firing} == {("spring_sale", "conversion_drop")}
    assert firing[0].ts - start <= 35 * MIN
    named = [a.evidence["drop_devices"] for a in firing
             if a.evidence.get("conversion_devices") and a.ts <= start + 60 * MIN]
    assert named.count(["mobile"]) >= len(named) / 2, named
    assert all(n in ([], ["mobile"]) for n in named), named
    on_mobile = next(a for a in firing if a.evidence["drop_devices"] == ["mobile"])
    assert "; on mobile (orders " in on_mobile.summary


@cache
def checkout_demo(seed: int) -> tuple[list[Alert], int, int]:
    """``revwatch demo --incident checkout``: spring_sale takes no orders for 30 minutes."""
    scenario = demo_scenario(seed, incident="checkout")
    (incident,) = scenario.incidents
    alerts = Pipeline.from_settings(Settings()).play(generate(scenario))
    return alerts, incident.start_ms, incident.end_ms


@pytest.mark.parametrize("seed", [1, 6])
def test_the_demo_checkout_is_priced_near_its_loss_at_the_first_alert(seed: int) -> None:
    """Priced from the earliest onset the likelihood supports: 0.69-0.95 of the true loss
    at the first alert on demo seeds 1-9 (0.69 and 0.95 on these two). Priced over at least
    45 minutes (before 2026-12-07), a stop 20 minutes old read 0.14-0.48 of it (0.47 and
    0.48 here), its interval below the truth."""
    (incident,) = truth(demo_scenario(seed, incident="checkout"))["incidents"]
    loss = incident["revenue_lost_per_hour_total"]
    first = next(a for a in checkout_demo(seed)[0] if a.state == "firing")
    assert 0.6 * loss <= first.revenue_at_risk_per_hour <= 1.2 * loss


@pytest.mark.parametrize("seed", [1, 6])
def test_the_demo_checkout_is_one_conversion_drop_that_pages_and_resolves(seed: int) -> None:
    """Not slow pages: one ``conversion_drop`` episode on spring_sale, first seen 17-21
    minutes in on demo seeds 1-9. On the shop's first day a partial drop is a ticket; the
    stop pages once the orders surely stopped (27-30 minutes in on seeds 1-9). Its line
    says what the test saw: the conversion of the window that fired, far under normal."""
    alerts, start, end = checkout_demo(seed)
    assert {(a.campaign, a.kind) for a in alerts} == {("spring_sale", "conversion_drop")}
    assert len({a.alert_id for a in alerts}) == 1
    firing = [a for a in alerts if a.state == "firing"]
    assert firing[0].ts - start <= 25 * MIN
    pages = [a for a in firing if a.evidence["severity"] == "page"]
    assert pages
    assert pages[0].ts - start <= 35 * MIN
    assert firing[0].evidence["severity"] == "ticket"
    assert "with normal page speed (p75 LCP" in firing[0].summary
    seen, expected = firing[0].evidence["conversion_observed"], \
        firing[0].evidence["conversion_expected"]
    assert seen <= 0.2 * expected
    assert f"in the last {firing[0].evidence['conversion_window_minutes']} min (" \
        in firing[0].summary
    (resolved,) = [a for a in alerts if a.state == "resolved"]
    assert resolved is alerts[-1]
    assert resolved.ts > end


def _default_seed() -> int:
    seed: int = _parser().parse_args(["demo"]).seed
    return seed


def test_the_default_demo_slowdown_pages_with_the_truth_in_its_interval() -> None:
    """What the README's first command shows: ``revwatch demo``'s default seed pages within
    ten minutes, and the first alert's 90% interval holds the truth, as does the resolve
    line's interval of what it lost (the demo's curve is
    young: demo seeds 4 and 6 read a tenth of it, as tickets, since the simulated checkout
    funnel; docs in the README)."""
    scenario = demo_scenario(_default_seed())
    (incident,) = truth(scenario)["incidents"]
    alerts = Pipeline.from_settings(Settings()).play(generate(scenario))
    first = next(a for a in alerts if a.state == "firing")
    assert first.evidence["severity"] == "page"
    assert first.ts - incident["start_ms"] < 10 * MIN
    assert first.revenue_at_risk_per_hour_low <= incident["revenue_lost_per_hour_total"] \
        <= first.revenue_at_risk_per_hour_high
    resolved = alerts[-1]  # and what it lost, with its interval, holds the truth
    assert resolved.state == "resolved"
    assert resolved.revenue_lost_low <= incident["revenue_lost_total"] \
        <= resolved.revenue_lost_high < 3 * resolved.revenue_lost_low


def test_the_default_demo_checkout_stop_pages_within_half_an_hour() -> None:
    scenario = demo_scenario(_default_seed(), incident="checkout")
    (incident,) = truth(scenario)["incidents"]
    alerts = Pipeline.from_settings(Settings()).play(generate(scenario))
    paged = next(a for a in alerts if a.evidence.get("severity") == "page")
    assert paged.kind == "conversion_drop"
    assert paged.ts - incident["start_ms"] <= 30 * MIN
    assert alerts[-1].state == "resolved"
