"""streams.stages driven directly with fake Faust events (``value`` + ``message``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import orjson
from prometheus_client import CollectorRegistry

from detectors.incidents import IncidentManager
from detectors.monitor import Monitor
from detectors.verdicts import CampaignVerdict, Estimate
from streams.metrics import Metrics
from streams.records import SessionFact
from streams.stages import CampaignStage, IncidentStage, Topics
from streams.watermark import InputWatermarks
from tests.unit.clock import Clock
from tests.unit.test_pipeline import verdict

MIN = 60_000
T0 = 1_741_003_200_000
TOPICS = Topics("beacons", "orders", "facts", "verdicts", "alerts", "dead", facts_partitions=4)
DEAD_LETTER_KEYS = {"error", "topic", "raw", "received_at"}


@dataclass
class Message:
    topic: str
    partition: int
    offset: int = 0


@dataclass
class Event:
    value: bytes
    message: Message


def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def dead_count(m: Metrics) -> float:
    return sum(s.value for metric in m.dead_letters.collect() for s in metric.samples
               if s.name.endswith("_total"))


def test_campaign_stage_waits_for_the_slowest_sessionizer() -> None:
    clock = Clock()
    stage = CampaignStage(Monitor(), TOPICS, metrics(),
                          watermarks=InputWatermarks(idle_s=15.0, clock=clock))

    def fact(f: SessionFact, partition: int = 2) -> Event:
        return Event(f.to_json(), Message("facts", partition))

    session = SessionFact("session", "spring", T0, "s1", T0 + 1_000, 1_800.0)
    beat = SessionFact("heartbeat", "", T0, "a:1")
    out = stage.batch([fact(session), fact(beat),
                       fact(dataclasses.replace(beat, session_id="b:2"))])
    assert [orjson.loads(v)["tick_ms"] for *_, v, _ in out.records] == [T0]  # ticks its minute
    out = stage.batch([fact(dataclasses.replace(beat, watermark_ms=T0 + 10 * MIN)),
                       fact(dataclasses.replace(beat, watermark_ms=T0 + 3 * MIN,
                                                session_id="b:2"))])
    sent = [(t, k, p, CampaignVerdict.from_state(orjson.loads(v))) for t, k, v, p in out.records]
    assert [v.tick_ms for *_, v in sent] == [T0 + k * MIN for k in (1, 2, 3)]
    assert {(t, k, p) for t, k, p, _ in sent} == {(TOPICS.verdicts, b"site", 0)}
    assert stage.latest["spring"].tick_ms == T0 + 3 * MIN
    assert stage.partition_of("spring|model") == 2
    assert "spring|model" in out.changes
    clock.now = 30.0  # b:2 stopped: a:1 alone moves the clock
    out = stage.batch([fact(dataclasses.replace(beat, watermark_ms=T0 + 12 * MIN))])
    assert [orjson.loads(v)["tick_ms"] for *_, v, _ in out.records][-1] == T0 + 12 * MIN


def test_campaign_stage_dead_letters_unreadable_facts() -> None:
    m = metrics()
    stage = CampaignStage(Monitor(), TOPICS, m)
    out = stage.batch([Event(b'{"kind": "session"}', Message("facts", 0)),
                       Event(b"[1, 2]", Message("facts", 1)), Event(b"{", Message("facts", 1))])
    dead = [orjson.loads(v) for t, _, v, _ in out.records if t == TOPICS.dead_letter]
    assert [d["topic"] for d in dead] == ["facts"] * 4  # an array: one letter per bad fact
    assert all(set(d) == DEAD_LETTER_KEYS for d in dead)
    assert dead_count(m) == 4


def test_campaign_stage_counts_the_good_facts_of_an_array_with_a_bad_one() -> None:
    m = metrics()
    stage = CampaignStage(Monitor(), TOPICS, m)
    good = SessionFact("session", "spring", T0, "s1", T0 + 1_000, 1_800.0)
    value = orjson.dumps([dataclasses.asdict(good), {"kind": "session", "campaign": 5}])
    out = stage.batch([Event(value, Message("facts", 0))])
    dead = [orjson.loads(v) for t, _, v, _ in out.records if t == TOPICS.dead_letter]
    assert len(dead) == 1
    assert dead_count(m) == 1
    assert stage.seen == {f"spring|{T0}": {"s1"}}


def hot(campaign: str, tick_ms: int) -> CampaignVerdict:
    return dataclasses.replace(
        verdict(campaign, tick_ms), warmed_up=True, sessions_per_minute=40.0,
        sessions_in_window=4_000, latency_regressed=True, latency_statistic=25.0,
        latency_started_ms=T0, latency_shift=0.7,
        slow_page_loss_per_hour=Estimate(900.0, 400.0, 1_400.0))


def as_event(v: CampaignVerdict) -> Event:
    return Event(orjson.dumps(v.to_state()), Message("verdicts", 0))


def test_incident_stage_emits_alerts_keyed_by_campaign_and_saves_its_state() -> None:
    stage = IncidentStage(IncidentManager(), TOPICS, metrics())
    events = [as_event(hot("spring", T0 + k * MIN)) for k in range(3)]
    events += [as_event(verdict("quiet", T0 + k * MIN)) for k in range(3)]
    out = stage.batch(events)
    alerts = [(k, orjson.loads(v)) for t, k, v, _ in out.records if t == TOPICS.alerts]
    assert alerts, "a hot campaign raised no alert"
    assert all(k == b"spring" for k, _ in alerts)
    assert all(a["campaign"] == "spring" and a["state"] == "firing" for _, a in alerts)
    assert [a.campaign for a in out.alerts] == ["spring"] * len(alerts)
    assert "site" in out.changes
    restored = IncidentManager.from_state(orjson.loads(orjson.dumps(out.changes["site"])))
    assert [a.alert_id for a in restored.open_alerts()] == [alerts[0][1]["alert_id"]]


def test_incident_stage_dead_letters_what_is_not_a_verdict_and_saves_nothing_idle() -> None:
    m = metrics()
    stage = IncidentStage(IncidentManager(), TOPICS, m)
    out = stage.batch([Event(b'{"campaign": "x"}', Message("verdicts", 0)),
                       Event(b"{", Message("verdicts", 0))])
    dead = [orjson.loads(v) for t, _, v, _ in out.records if t == TOPICS.dead_letter]
    assert [d["topic"] for d in dead] == ["verdicts", "verdicts"]
    assert all(set(d) == DEAD_LETTER_KEYS for d in dead)
    assert dead_count(m) == 2
    assert stage.batch([]).changes == {}
