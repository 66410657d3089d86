"""A checkout broken on phones, pushed through the real broker, comes out of ``alerts``.

The demo shop (seed 3, five hours of warm-up, its whole traffic: ~237k records) with no
phone able to pay for an hour on its biggest campaign, fed at full speed to a real worker
with four partitions. Each device's conversion is scanned on its own in the campaign stage
(``detectors.device_scan``), whose minute buckets and learned device rates live in the
worker's tables, and the checkout's reachers in the funnel (``detectors.funnel``); the
phones' drop must come out of the ``alerts`` topic as a ``conversion_drop`` on that
campaign, put on mobile, priced above zero, and at the minute the offline replay of the
same records fires (26 minutes in).

Until 2026-12-07 this ran seed 12 at half the traffic, where the phones place about 0.3
orders a minute: there the offline replay fired 56 minutes in at p = 2.7e-4 against a
per-tick level of 1.25e-3, and a streamed run whose batches moved a single order saw
p = 3.2e-3 at that minute and never fired (CI, twice). A test of the streamed path against
the offline one needs a drop whose evidence grows fast past the level, not one that hovers
at it: at full traffic every seed of 1-12 fires 22-30 minutes in, and seed 3 is put on
mobile from its first alert.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from streams.feed import feed
from streams.simulate import demo_scenario, generate
from streams.simulate_model import IncidentSpec, Scenario
from tests.integration.worker_harness import (
    Consumed,
    TopicReader,
    Worker,
    offline_alerts,
    worker_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

MINUTE = 60_000
WAIT_S = 300.0


def scenario() -> Scenario:
    demo = demo_scenario(3, warmup_hours=5.0, incident_minutes=60)
    (slowdown,) = demo.incidents
    broken = dataclasses.replace(slowdown, id="phones-checkout", kind="conversion_drop",
                                 lcp_factor=1.0, conversion_factor=0.0, devices=("mobile",))
    return dataclasses.replace(demo, incidents=(broken,))


def placed_on_mobile(alert: dict[str, Any]) -> bool:
    return bool(alert["kind"] == "conversion_drop" and alert["state"] == "firing"
                and alert["evidence"].get("drop_devices") == ["mobile"])


def until_placed(after_ms: int) -> Any:
    """Done when a firing conversion drop is put on mobile, or alerts passed ``after_ms``."""
    def done(records: Sequence[Consumed]) -> bool:
        alerts = [r.json() for r in records]
        return any(placed_on_mobile(a) for a in alerts) or any(a["ts"] > after_ms
                                                               for a in alerts)
    return done


@dataclass(frozen=True)
class Outcome:
    incident: IncidentSpec
    alerts: list[dict[str, Any]]
    offline: list[dict[str, Any]]


async def drive(worker: Worker) -> Outcome:
    s = scenario()
    (incident,) = s.incidents
    records = list(generate(s))
    settings = worker.settings
    offline = asyncio.create_task(asyncio.to_thread(offline_alerts, records))
    async with TopicReader(worker.bootstrap, settings.alerts_topic) as reader:
        await feed(worker.bootstrap, records, beacons_topic=settings.beacons_topic,
                   orders_topic=settings.orders_topic)
        await reader.until(until_placed(incident.end_ms + 30 * MINUTE), WAIT_S,
                           "a conversion drop put on mobile", worker, fail=False)
        await reader.drain(quiet_s=2.0)
        worker.assert_alive()
        alerts = sorted((r.json() for r in reader.records), key=lambda a: a["ts"])
        return Outcome(incident, alerts, await offline)


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, kafka_bootstrap: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from worker_fixture(request, kafka_bootstrap, tmp_path_factory, "phones",
                              partitions=4)


@pytest.fixture(scope="module")
def outcome(worker: Worker) -> Outcome:
    return asyncio.run(asyncio.wait_for(drive(worker), timeout=WAIT_S + 90))


def firing(alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["state"] == "firing" and a["kind"] == "conversion_drop"]


def test_the_phones_checkout_fires_put_on_mobile_and_priced(outcome: Outcome) -> None:
    start, campaign = outcome.incident.start_ms, outcome.incident.campaigns[0]
    fired = firing(outcome.alerts)
    brief = [(round((a["ts"] - start) / MINUTE), a["campaign"], a["kind"], a["state"])
             for a in outcome.alerts]
    assert fired, f"no conversion drop fired: {brief}"
    assert {a["campaign"] for a in outcome.alerts} == {campaign}, brief
    assert 0 < fired[0]["ts"] - start <= 60 * MINUTE, brief
    assert any(placed_on_mobile(a) for a in fired), [a["evidence"].get("drop_devices")
                                                      for a in fired]
    # priced while the phones cannot pay; an update in the quiet minutes before it resolves,
    # the orders back, may say nothing is at risk any more
    during = [a for a in fired if a["ts"] <= outcome.incident.end_ms]
    assert during, brief
    assert all(a["revenue_at_risk_per_hour"] > 0 for a in during), \
        [a["revenue_at_risk_per_hour"] for a in fired]
    assert "; on mobile (orders " in next(a for a in fired if placed_on_mobile(a))["summary"]


def test_it_fires_when_the_offline_replay_does(outcome: Outcome) -> None:
    streamed, offline = firing(outcome.alerts), firing(outcome.offline)
    assert offline, "the offline replay of the same records fires too"
    # the same onset: the phones' own window (before 2026-12-07 the campaign scan's best
    # one, whose 20- and 60-minute windows nearly tie here: p 0.0845 offline and 0.0856
    # streamed at one tick, 40 minutes apart; docs/FUNNEL.md, "Known limits")
    assert streamed[0]["started_at"] == offline[0]["started_at"]
    assert 0 <= streamed[0]["ts"] - streamed[0]["started_at"] <= 61 * MINUTE
    # as test_worker_alerts: a streamed batch boundary may move a session or two
    assert abs(streamed[0]["ts"] - offline[0]["ts"]) <= 3 * MINUTE, \
        (streamed[0]["ts"] - offline[0]["ts"]) / MINUTE
    # the same minute's figure: priced on the phones' own orders, within 10%
    same = [o for o in offline if o["ts"] == streamed[0]["ts"]]
    for o in same:
        estimates = streamed[0]["revenue_at_risk_per_hour"], o["revenue_at_risk_per_hour"]
        assert abs(estimates[0] - estimates[1]) <= 0.1 * estimates[1], estimates
