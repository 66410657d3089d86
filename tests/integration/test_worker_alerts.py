"""An incident pushed through the real broker comes out of the ``alerts`` topic.

A simulated shop (``demo_scenario`` at half its traffic: five campaigns, three hours of
warm-up, then the biggest campaign's pages 2.5x slower for 20 minutes) is fed at full
speed to a real worker with four partitions. The ``alerts`` topic must carry a
``performance_conversion_loss`` episode for that campaign, firing then resolved; every
alert must follow CONTRACT.md "Alert"; nothing may fire during the warm-up; and the alerts
must be those of the offline replay (:class:`streams.pipeline.Pipeline`) of the same
records: the streaming path runs the same detection code, so a difference is a bug of the
streaming wiring.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from detectors.severity import PAGE_FACTOR
from streams.alertmanager import SEVERITIES, alert_severity
from streams.feed import feed
from streams.settings import Settings
from streams.simulate import demo_scenario, generate
from streams.simulate_model import IncidentSpec, Scenario
from tests.integration.worker_harness import (
    Consumed,
    TopicReader,
    Worker,
    offline_alerts,
    worker_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

MINUTE = 60_000
KIND = "performance_conversion_loss"
WAIT_S = 240.0
PAGE_PER_HOUR = Settings().min_revenue_per_hour * PAGE_FACTOR  # as streams.receivers
FIELDS: dict[str, type | tuple[type, ...]] = {
    "alert_id": str, "incident_id": str, "scope": str, "ts": int, "campaign": str,
    "kind": str, "state": str, "started_at": int, "revenue_at_risk_per_hour": (int, float),
    "revenue_at_risk_per_hour_low": (int, float), "revenue_at_risk_per_hour_high": (int, float),
    "revenue_lost": (int, float), "evidence": dict, "summary": str,
}
EVIDENCE = {"conversion_rate", "conversion_rate_baseline", "lcp_p75_ms", "lcp_p75_baseline_ms",
            "sessions_in_window", "conversion_p_value"}


def scenario() -> Scenario:
    """Seed 11, 3 h warm-up, half the traffic (~67k records, to bound the run time): the
    offline replay fires 5 min into the incident and resolves 27 min after its end."""
    return dataclasses.replace(demo_scenario(11, warmup_hours=3.0), scale=0.5)


def the_incident(s: Scenario) -> IncidentSpec:
    (incident,) = s.incidents
    biggest = max(s.campaigns, key=lambda c: c.sessions_per_minute_peak).name
    assert incident.campaigns == (biggest,)
    assert (incident.kind, incident.lcp_factor) == (KIND, 2.5)
    assert incident.end_ms - incident.start_ms == 20 * MINUTE
    return incident


def resolved_target(campaign: str, after_ms: int) -> Any:
    """Done when the campaign's performance episode resolved, or alerts passed ``after_ms``."""
    def done(records: Sequence[Consumed]) -> bool:
        alerts = [r.json() for r in records]
        firing = {a["alert_id"] for a in alerts if a["campaign"] == campaign
                  and a["kind"] == KIND and a["state"] == "firing"}
        return any(a["alert_id"] in firing and a["state"] == "resolved" for a in alerts) \
            or any(a["ts"] > after_ms for a in alerts)
    return done


@dataclass(frozen=True)
class Outcome:
    incident: IncidentSpec
    records: list[Consumed]
    offline: list[dict[str, Any]]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return sorted((r.json() for r in self.records), key=lambda a: (a["ts"], a["campaign"]))

    def brief(self) -> str:
        start = self.incident.start_ms
        return "\n".join(f"  {(a['ts'] - start) / MINUTE:+6.1f} min {a['campaign']} {a['kind']} "
                         f"{a['state']} {a['alert_id']}" for a in self.alerts)


async def drive(worker: Worker) -> Outcome:
    s = scenario()
    incident = the_incident(s)
    records = list(generate(s))
    settings = worker.settings
    offline = asyncio.create_task(asyncio.to_thread(offline_alerts, records))
    async with TopicReader(worker.bootstrap, settings.alerts_topic) as reader:
        await feed(worker.bootstrap, records, beacons_topic=settings.beacons_topic,
                   orders_topic=settings.orders_topic)
        campaign = incident.campaigns[0]
        await reader.until(resolved_target(campaign, s.start_ms + round(s.days * 86_400_000)),
                           WAIT_S, f"the {campaign} episode to resolve", worker, fail=False)
        await reader.drain(quiet_s=2.0)
        worker.assert_alive()
        return Outcome(incident, reader.records, await offline)


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, kafka_bootstrap: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from worker_fixture(request, kafka_bootstrap, tmp_path_factory, "alerts",
                              partitions=4)


@pytest.fixture(scope="module")
def outcome(worker: Worker) -> Outcome:
    return asyncio.run(asyncio.wait_for(drive(worker), timeout=WAIT_S + 60))


def test_the_incident_fires_then_resolves(outcome: Outcome) -> None:
    incident, alerts = outcome.incident, outcome.alerts
    campaign = incident.campaigns[0]
    firing = [a for a in alerts if (a["campaign"], a["kind"], a["state"])
              == (campaign, KIND, "firing")]
    assert firing, f"no firing {KIND} alert for {campaign}; alerts:\n{outcome.brief()}"
    alert_id = firing[0]["alert_id"]
    episode = [a for a in alerts if a["alert_id"] == alert_id]
    assert episode[-1]["state"] == "resolved", f"{alert_id} did not resolve:\n{outcome.brief()}"
    assert [a["state"] for a in episode].count("resolved") == 1
    first = episode[0]
    assert incident.start_ms <= first["ts"] <= incident.end_ms, outcome.brief()
    assert abs(first["started_at"] - incident.start_ms) <= 10 * MINUTE, first["started_at"]
    assert {a["started_at"] for a in episode} == {first["started_at"]}
    assert first["revenue_at_risk_per_hour"] > 0
    assert episode[-1]["ts"] > incident.end_ms


def test_no_alert_before_the_incident(outcome: Outcome) -> None:
    early = [a for a in outcome.alerts if a["ts"] < outcome.incident.start_ms]
    assert not early, f"{len(early)} alerts during the warm-up:\n{outcome.brief()}"


def test_every_alert_follows_the_contract(outcome: Outcome) -> None:
    assert outcome.records, "no alerts at all"
    for record in outcome.records:
        alert = record.json()
        assert record.key == alert["campaign"].encode(), "alerts are keyed by campaign"
        missing = FIELDS.keys() - alert.keys()
        assert not missing, (missing, alert)
        for name, types in FIELDS.items():
            assert isinstance(alert[name], types), (name, alert[name])
            assert not isinstance(alert[name], bool), name
        assert alert["scope"] in {"campaign", "site"}
        assert alert["kind"] in {KIND, "conversion_drop", "latency_regression"}
        assert alert["state"] in {"firing", "resolved"}
        assert alert["summary"].strip()
        assert alert["evidence"].keys() >= EVIDENCE, alert["evidence"].keys()
        # three hours of history: the shop's first day, with orders flowing
        assert alert["evidence"]["day_known"] is False
        assert alert["evidence"]["orders_stopped"] is False
        # who is woken: the topic says what Alertmanager routes on (the settings' budget)
        assert alert["evidence"]["severity"] == alert_severity(alert, PAGE_PER_HOUR), alert
        if alert["state"] == "firing":  # the incident's money, at least the alert's own
            total = alert["evidence"]["incident_revenue_at_risk_per_hour"]
            assert total >= alert["revenue_at_risk_per_hour"] - 1e-9, alert
        low, value, high = (alert[f"revenue_at_risk_per_hour{s}"] for s in ("_low", "", "_high"))
        assert all(math.isfinite(v) for v in (low, value, high, alert["revenue_lost"]))
        assert low <= value <= high, (low, value, high)
        assert alert["revenue_lost"] >= 0
        assert alert["started_at"] <= alert["ts"]


def test_an_episodes_severity_only_escalates(outcome: Outcome) -> None:
    by_id: dict[str, list[int]] = {}
    priced: set[str] = set()
    for alert in outcome.alerts:
        by_id.setdefault(alert["alert_id"], []).append(
            SEVERITIES.index(alert["evidence"]["severity"]))
        if alert["kind"] == KIND:
            priced.add(alert["alert_id"])
    assert by_id
    for ranks in by_id.values():
        assert ranks == sorted(ranks), ranks
    # the incident's slow pages cost more than the paging budget: a page
    assert priced, outcome.brief()
    assert {SEVERITIES[max(by_id[i])] for i in priced} == {"page"}, outcome.brief()


def test_updates_at_most_one_a_minute(outcome: Outcome) -> None:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for alert in outcome.alerts:
        by_id.setdefault(alert["alert_id"], []).append(alert)
    for alert_id, updates in by_id.items():
        times = [a["ts"] for a in updates]
        assert all(b - a >= MINUTE for a, b in itertools.pairwise(times)), \
            (alert_id, times)
        assert "resolved" not in [a["state"] for a in updates[:-1]], alert_id


def test_streaming_alerts_match_the_offline_replay(outcome: Outcome) -> None:
    streamed = outcome.alerts
    assert streamed, "no alerts streamed"
    horizon = max(a["ts"] for a in streamed)

    def episodes(alerts: Sequence[dict[str, Any]]) -> dict[str, tuple[str, int, int]]:
        out: dict[str, tuple[str, int, int]] = {}
        for a in alerts:
            if a["ts"] <= horizon and a["alert_id"] not in out:
                out[a["alert_id"]] = (a["campaign"], a["ts"], a["started_at"])
        return out

    live, offline = episodes(streamed), episodes(outcome.offline)
    start = outcome.incident.start_ms
    offline_brief = "\n".join(f"  {(a['ts'] - start) / MINUTE:+6.1f} min {a['campaign']} "
                              f"{a['kind']} {a['state']} {a['alert_id']}"
                              for a in outcome.offline if a["ts"] <= horizon)
    assert live.keys() == offline.keys(), (
        f"streamed episodes differ from the offline replay of the same records\n"
        f"streamed:\n{outcome.brief()}\noffline:\n{offline_brief}")
    for alert_id, (campaign, ts, started_at) in live.items():
        assert offline[alert_id][0] == campaign
        assert abs(offline[alert_id][1] - ts) <= 3 * MINUTE, (alert_id, ts, offline[alert_id])
        assert offline[alert_id][2] == started_at, alert_id


def test_the_device_breakdown_crosses_the_broker(outcome: Outcome) -> None:
    """The slowdown's per-device figures go campaign stage -> ``revwatch-verdicts`` ->
    incident stage -> ``alerts`` and arrive as the offline replay has them (to within the
    sessions a batch boundary moves: the streamed minutes are not cut where the replay's
    are, so counts may differ by a session or two); the incident is on every device, so
    none is named (docs/STATISTICS.md, "Where")."""
    campaign = outcome.incident.campaigns[0]
    offline = {(a["alert_id"], a["ts"]): a for a in outcome.offline}
    firing = [a for a in outcome.alerts if (a["campaign"], a["kind"], a["state"])
              == (campaign, KIND, "firing") and a["evidence"].get("devices")]
    assert firing, f"no firing update carries evidence.devices:\n{outcome.brief()}"
    for alert in firing:
        assert alert["evidence"]["slow_devices"] == [], alert["summary"]
        twin = offline.get((alert["alert_id"], alert["ts"]))
        if twin is not None:
            live, replayed = alert["evidence"]["devices"], twin["evidence"].get("devices") or {}
            assert live.keys() == replayed.keys(), (live.keys(), replayed.keys())
            for name, row in live.items():
                assert row["sessions"] == pytest.approx(replayed[name]["sessions"], rel=0.1)
                assert row["typical_lcp_change"] == pytest.approx(
                    replayed[name]["typical_lcp_change"], abs=0.1)
