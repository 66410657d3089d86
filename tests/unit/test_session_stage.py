"""streams.session_stage driven with fake Faust events: one event time per input partition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streams import facts_codec
from streams.early import PREFIX as EARLY_PREFIX
from streams.metrics import Metrics
from streams.records import SessionFact
from streams.session_stage import SessionStage
from streams.session_state import SessionParams
from streams.stage_io import Out
from tests.unit.test_stages import (
    DEAD_LETTER_KEYS,
    MIN,
    T0,
    TOPICS,
    Clock,
    Event,
    Message,
    dead_count,
    metrics,
)

SHOP = "https://shop.example"
LATE = 30_000


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
        self.stage = SessionStage(SessionParams(), TOPICS, self.metrics, lateness_ms=LATE,
                                  clock=self.clock, idle_s=15.0, source="host:42")

    def watermark(self, partition: int) -> int:
        return self.stage.tasks[partition].sessionizer.watermark_ms


def facts_of(out: Out) -> list[tuple[bytes | None, SessionFact, int | None]]:
    return [(key, fact, partition)
            for topic, key, value, partition in out.records if topic == TOPICS.facts
            for fact in facts_codec.facts_of(value)]


def sessions_in(out: Out) -> set[tuple[str, int]]:
    return {(f.session_id, f.start_ms) for _, f, _ in facts_of(out) if f.kind == "session"}


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
    # one heartbeat per input partition, each sent to every facts partition
    assert sorted(p or 0 for _, _, p in beats) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert {k for k, _, _ in beats} == {b""}
    marks = {f.session_id: f.watermark_ms for _, f, _ in beats}
    # each partition's own clock: its latest arrival less 30 s of lateness
    assert marks == {"host:42/p0": T0 + 3 * MIN + 1_000 - LATE,
                     "host:42/p1": T0 + 2 * MIN + 1_000 - LATE}
    assert s.stage.partition_of("s2") == 1
    assert s.stage.partition_of("s3") == 0
    assert s.stage.partition_of("nobody") is None
    assert {"s1", "s2", "s3"} <= set(out.changes)
    assert s.stage.watermark_ms == T0 + 2 * MIN + 1_000 - LATE  # the slowest task


def test_an_order_input_read_behind_holds_its_partition_back() -> None:
    s = Sessions()
    s.stage.batch([order("o1", "s1", T0 - 10 * MIN), beacon("s1", T0 + 10 * MIN),
                   beacon("s9", T0 + 10 * MIN, partition=1)])
    assert s.watermark(0) == T0 - 10 * MIN + 500 - LATE
    assert s.watermark(1) == T0 + 10 * MIN + 1_000 - LATE  # not held by partition 0


def test_a_partition_read_far_behind_keeps_its_sessions() -> None:
    """Another worker's partition, taken over an hour of event time behind this one's."""
    s = Sessions()
    s.stage.batch([beacon("a1", T0, partition=1)])
    rows = dict(s.stage.batch([beacon("a1", T0 + 2 * MIN, partition=1)]).changes)
    s.stage.batch([beacon("b1", T0 + 60 * MIN)])  # partition 0: this worker's own, ahead
    s.stage.restore(rows.items(), dict.fromkeys(rows, 1) | {"b1": 0}, owned=[0, 1])
    out = s.stage.batch([beacon("a1", T0 + 3 * MIN, partition=1),
                         beacon("a2", T0 + 4 * MIN, partition=1)])
    out2 = s.stage.batch([beacon("z", T0 + 9 * MIN, partition=1)])
    found = sessions_in(out) | sessions_in(out2)
    assert ("a2", T0 + 4 * MIN) in found, "a new session of the lagging partition was dropped"
    assert not any(sid == "a1" for sid, _ in found), "a1 continued: no second session"
    assert s.stage.tasks[1].sessionizer.stats.late_dropped == 0
    assert s.watermark(1) < T0 + 20 * MIN < s.watermark(0)


def test_a_rebuilt_task_waits_for_both_inputs_or_the_deadline() -> None:
    s = Sessions()
    s.stage.batch([beacon("a1", T0, partition=1), order("o0", "a0", T0, partition=1)])
    before = s.watermark(1)
    s.stage.restore([], {}, owned=[1])
    s.stage.batch([beacon("a1", T0 + 5 * MIN, partition=1)])  # orders-1 not read yet
    assert s.watermark(1) == before
    s.stage.batch([order("o2", "a1", T0 + 4 * MIN, partition=1)])
    assert s.watermark(1) == T0 + 4 * MIN + 500 - LATE
    s.stage.restore([], {}, owned=[1])
    s.clock.now = 16.0  # deadline passed with neither input read: the old inputs decide
    s.stage.batch([])
    assert s.watermark(1) == T0 + 4 * MIN + 500 - LATE


def test_a_silent_partition_follows_the_slowest_active_one() -> None:
    s = Sessions()
    s.stage.batch([beacon("q1", T0, partition=1), beacon("p1", T0 + 5 * MIN),
                   beacon("r1", T0 + 4 * MIN, partition=2)])
    assert s.watermark(1) == T0 + 1_000 - LATE
    s.clock.now = 10.0
    s.stage.batch([beacon("r2", T0 + 7 * MIN, partition=2)])
    s.clock.now = 20.0  # partitions 0 and 1 silent for 20 s > 15 s; partition 2 speaks
    s.stage.batch([beacon("r3", T0 + 8 * MIN, partition=2)])
    assert s.watermark(2) == T0 + 8 * MIN + 1_000 - LATE
    assert s.watermark(1) == s.watermark(2), "the silent partition follows the active one"
    assert s.watermark(0) == T0 + 8 * MIN + 1_000 - LATE
    s.clock.now = 40.0  # all silent: everyone follows the furthest
    s.stage.batch([])
    assert {s.watermark(p) for p in (0, 1, 2)} == {T0 + 8 * MIN + 1_000 - LATE}


def test_a_silent_partition_with_records_waiting_keeps_its_own_clock() -> None:
    """Held back (a rebalance, a paused fetch) is not quiet: its backlog must not be late."""
    s = Sessions()
    high = {("beacons", 1): 8}  # partition 1: offsets up to 7 on the broker

    def backlog(topic: str, partition: int, processed: int | None) -> bool:
        end = high.get((topic, partition), 0)
        return (-1 if processed is None else processed) + 1 < end

    s.stage.backlog = backlog
    first = Event(beacon("q1", T0, partition=1).value, Message("beacons", 1, offset=0))
    s.stage.batch([first, beacon("r1", T0 + 4 * MIN, partition=2)])
    for now, minute in ((10.0, 20), (20.0, 40), (30.0, 60)):
        s.clock.now = now  # partition 2 runs an hour ahead; partition 1 reads nothing
        s.stage.batch([beacon(f"r-{minute}", T0 + minute * MIN, partition=2)])
    assert s.watermark(1) == T0 + 1_000 - LATE, "offsets 1-7 are still to come"
    late = Event(beacon("q1", T0 + 2 * MIN, campaign="spring").value,
                 Message("beacons", 1, offset=1))
    s.clock.now = 31.0
    s.stage.batch([late])
    assert s.stage.tasks[1].sessionizer.session("q1") is not None, "not judged late"
    high[("beacons", 1)] = 2  # read to the end: now it is quiet and may follow
    s.clock.now = 50.0
    s.stage.batch([beacon("r-80", T0 + 80 * MIN, partition=2)])
    assert s.watermark(1) == s.watermark(2) == T0 + 80 * MIN + 1_000 - LATE


def test_held_orders_are_restored_to_their_partition() -> None:
    s = Sessions()
    out = s.stage.batch([beacon("a", T0, partition=3), order("o1", "b", T0 + 30 * MIN,
                                                              partition=3)])
    held = {k: v for k, v in out.changes.items() if k.startswith(EARLY_PREFIX)}
    assert list(held) == [EARLY_PREFIX + "o1"]
    assert s.stage.partition_of(EARLY_PREFIX + "o1") == 3
    rows = [(k, v) for k, v in out.changes.items() if v is not None]
    s.stage.restore(rows, dict.fromkeys(out.changes, 3), owned=[3])
    assert len(s.stage.tasks[3].early) == 1
    assert s.stage.partition_of("b") is None  # the held order's session has no row yet
    # event time reaches the held order: its (beacon-less) session must be saved, on 3
    out = s.stage.batch([beacon("c", T0 + 40 * MIN, partition=3),
                         order("o9", "c", T0 + 40 * MIN, partition=3)])
    assert out.changes[EARLY_PREFIX + "o1"] is None
    assert "b" in out.changes, "the session the released order opened is saved"
    assert s.stage.partition_of("b") == 3
    s.stage.restore(rows, dict.fromkeys(out.changes, 3), owned=[2])
    assert set(s.stage.tasks) == {2}, "a revoked partition's task is dropped"


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
