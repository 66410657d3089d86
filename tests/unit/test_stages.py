"""streams.stages driven directly with fake Faust events (``value`` + ``message``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from detectors.incidents import IncidentManager
from detectors.monitor import Monitor
from detectors.verdicts import CampaignVerdict, Estimate
from streams import facts_codec
from streams.metrics import Metrics
from streams.records import SessionFact
from streams.sessions import Sessionizer
from streams.stages import CampaignStage, IncidentStage, Out, SessionStage, Topics
from streams.watermark import InputWatermarks
from tests.unit.test_pipeline import verdict

MIN = 60_000
T0 = 1_741_003_200_000
SHOP = "https://shop.example"
TOPICS = Topics("beacons", "orders", "facts", "verdicts", "alerts", "dead", facts_partitions=4)
DEAD_LETTER_KEYS = {"error", "topic", "raw", "received_at"}


@dataclass
class Message:
    topic: str
    partition: int


@dataclass
class Event:
    value: bytes
    message: Message


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def dead_count(m: Metrics) -> float:
    return sum(s.value for metric in m.dead_letters.collect() for s in metric.samples
               if s.name.endswith("_total"))


def beacon(sid: str, ts: int, *, partition: int = 0, campaign: str = "spring",
           **kw: Any) -> Event:
    record = {"beacon_id": f"b-{sid}-{ts}", "session_id": sid, "ts": ts,
              "page_url": f"{SHOP}/p?utm_campaign={campaign}", "lcp_ms": 1_900.0,
              "ttfb_ms": 200.0, "received_at": ts + 1_000, **kw}
    return Event(orjson.dumps(record), Message("beacons", partition))


def order(oid: str, sid: str, ts: int, *, partition: int = 0) -> Event:
    record = {"order_id": oid, "session_id": sid, "ts": ts, "revenue": 42.0,
              "received_at": ts + 500}
    return Event(orjson.dumps(record), Message("orders", partition))


@dataclass
class Sessions:
    clock: Clock = field(default_factory=Clock)
    metrics: Metrics = field(default_factory=metrics)
    stage: SessionStage = field(init=False)

    def __post_init__(self) -> None:
        self.stage = SessionStage(
            Sessionizer(external_watermark=True), TOPICS, self.metrics, lateness_ms=30_000,
            watermarks=InputWatermarks(idle_s=15.0, clock=self.clock), source="host:42")


def facts_of(out: Out) -> list[tuple[bytes | None, SessionFact, int | None]]:
    return [(key, fact, partition)
            for topic, key, value, partition in out.records if topic == TOPICS.facts
            for fact in facts_codec.facts_of(value)]


def test_session_facts_are_keyed_by_campaign_and_heartbeats_go_to_every_partition() -> None:
    s = Sessions()
    out = s.stage.batch([beacon("s1", T0), beacon("s2", T0 + 2 * MIN, partition=1),
                         beacon("s3", T0 + 3 * MIN)])
    facts = facts_of(out)
    sessions = [(k, f) for k, f, _ in facts if f.kind == "session"]
    assert {f.session_id for _, f in sessions} == {"s1", "s2", "s3"}
    assert all(k == b"spring" for k, _ in sessions)
    assert all(p is None for _, f, p in facts if f.kind != "heartbeat")
    beats = [(k, f, p) for k, f, p in facts if f.kind == "heartbeat"]
    assert sorted(p or 0 for _, _, p in beats) == [0, 1, 2, 3]
    assert all(p is not None for _, _, p in beats)
    assert {k for k, _, _ in beats} == {b""}
    assert {f.session_id for _, f, _ in beats} == {"host:42"}
    # watermark: the slowest active input (partition 1 at T0+2min+1s) less 30 s lateness
    assert {f.watermark_ms for _, f, _ in beats} == {T0 + 2 * MIN + 1_000 - 30_000}
    assert s.stage.partition_of("s2") == 1
    assert s.stage.partition_of("s3") == 0
    assert s.stage.partition_of("nobody") is None
    assert {"s1", "s2", "s3"} <= set(out.changes)


def test_an_idle_input_stops_holding_the_watermark_back() -> None:
    s = Sessions()
    s.stage.batch([beacon("s1", T0, partition=1), beacon("s2", T0 + 5 * MIN)])
    assert s.stage.sessionizer.watermark_ms == T0 + 1_000 - 30_000
    s.clock.now = 20.0  # partition 1 silent for 20 s > idle 15 s; partition 0 speaks now
    out = s.stage.batch([beacon("s3", T0 + 6 * MIN)])
    assert s.stage.sessionizer.watermark_ms == T0 + 6 * MIN + 1_000 - 30_000
    beats = [f for _, f, _ in facts_of(out) if f.kind == "heartbeat"]
    assert {f.watermark_ms for f in beats} == {T0 + 6 * MIN + 1_000 - 30_000}


def test_an_order_topic_read_behind_holds_the_watermark_back() -> None:
    s = Sessions()
    s.stage.batch([order("o1", "s1", T0 - 10 * MIN), beacon("s1", T0 + 10 * MIN)])
    assert s.stage.sessionizer.watermark_ms == T0 - 10 * MIN + 500 - 30_000


def test_bad_records_go_to_the_dead_letter_topic_with_the_contract_keys() -> None:
    s = Sessions()
    bad_beacon = Event(b'{"beacon_id": "x", "ts": "yesterday"}', Message("beacons", 0))
    bad_order = Event(b"not json", Message("orders", 2))
    out = s.stage.batch([bad_beacon, beacon("s1", T0), bad_order])
    dead = [(k, orjson.loads(v)) for t, k, v, _ in out.records if t == TOPICS.dead_letter]
    assert len(dead) == 2
    for _, letter in dead:
        assert set(letter) == DEAD_LETTER_KEYS
        assert isinstance(letter["received_at"], int)
        assert letter["error"]
    (_, first), (_, second) = dead
    assert (first["topic"], first["raw"]) == ("beacons", bad_beacon.value.decode())
    assert (second["topic"], second["raw"]) == ("orders", "not json")
    assert dead_count(s.metrics) == 2
    assert any(f.session_id == "s1" for _, f, _ in facts_of(out)), "good record still counted"


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
