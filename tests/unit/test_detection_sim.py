"""End to end, offline: Pipeline over the seeded demo scenario finds the one incident.

``demo_scenario(seed)``: five campaigns, four hours of warm-up, then spring_sale's pages
slow down (LCP x2.5) for 20 minutes; the run ends 40 minutes later. About 170k records a
seed, a few seconds each.
"""

from __future__ import annotations

from functools import cache

import pytest

from detectors.incidents import Alert
from streams.pipeline import Pipeline
from streams.records import beacon_from_dict, order_from_dict
from streams.settings import Settings
from streams.simulate import demo_scenario, generate

MIN = 60_000
FLUSH_EVERY = 1_000  # as revwatch replay does


@cache
def run(seed: int) -> tuple[list[Alert], int, int, int]:
    """Alerts of the whole scenario, the incident's start and end, and the record count."""
    scenario = demo_scenario(seed)
    pipeline = Pipeline.from_settings(Settings())
    alerts: list[Alert] = []
    count = 0
    for count, (kind, record) in enumerate(generate(scenario), start=1):
        if kind == "beacon":
            alerts += pipeline.beacon(beacon_from_dict(record))
        else:
            alerts += pipeline.order(order_from_dict(record))
        if count % FLUSH_EVERY == 0:
            alerts += pipeline.flush()
    alerts += pipeline.flush()
    (incident,) = scenario.incidents
    return alerts, incident.start_ms, incident.end_ms, count


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
