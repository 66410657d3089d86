"""Bad input never takes a worker down and never loses the good data around it.

Unreadable beacons and orders (truncated JSON, wrong types, bytes that are not UTF-8, a
900 KB value, missing fields, "NaN" strings, negative timings, a JSON array) are interleaved
with good sessions and orders on the real broker. Each bad record must reach the dead-letter
topic as ``{"error", "topic", "raw", "received_at"}`` with a reason naming the problem,
``revwatch_dead_letter_total`` must count them, and every good session must still be counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.integration.worker_harness import (
    Consumed,
    Message,
    TopicReader,
    Worker,
    metric_samples,
    produce,
    worker_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MINUTE = 60_000
B = (int(time.time() * 1000) // MINUTE) * MINUTE - 60 * MINUTE
GOOD = "dl-good"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"


def beacon(sid: str, n: int = 1, **changes: Any) -> dict[str, Any]:
    good = {"beacon_id": f"{sid}:{n}", "session_id": sid, "ts": B + n * 1000,
            "page_url": f"https://shop.example/p?utm_campaign={GOOD}", "lcp_ms": 1500.0,
            "ttfb_ms": 200.0, "user_agent": CHROME}
    return {**good, **changes}


def order(sid: str, **changes: Any) -> dict[str, Any]:
    return {"order_id": f"o-{sid}", "session_id": sid, "ts": B + 60_000, "revenue": 42.0,
            **changes}


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


@dataclass(frozen=True)
class Bad:
    """One unreadable record: where it goes, its bytes, and words its reason must contain."""

    kind: str  # "b" beacons topic, "o" orders topic
    key: str
    raw: bytes
    reason: str


BAD = [
    Bad("b", "bad-trunc", dumps(beacon("bad-trunc"))[:40], "JSON"),
    Bad("b", "bad-type", dumps(beacon("bad-type", session_id=12345)), "session_id"),
    Bad("b", "bad-utf8", b'\xff\xfe{"beacon_id": "bad-utf8:1"}\xc3\x28', "UTF-8"),
    Bad("b", "bad-huge", dumps(beacon("bad-huge", page_url="https://shop.example/?q="
                                      + "x" * 900_000)), "page_url"),
    Bad("b", "bad-missing", dumps({k: v for k, v in beacon("bad-missing").items() if k != "ts"}),
        "ts"),
    Bad("b", "bad-nan", dumps(beacon("bad-nan", lcp_ms="NaN")), "lcp_ms"),
    Bad("b", "bad-negative", dumps(beacon("bad-negative", ttfb_ms=-12.5)), "ttfb_ms"),
    Bad("b", "bad-array", dumps([beacon("bad-array")]), "JSON object"),
    Bad("o", "bad-order-nan", dumps(order("bad-order-nan", revenue="NaN")), "revenue"),
    Bad("o", "bad-order-missing", dumps({k: v for k, v in order("bad-order-missing").items()
                                         if k != "order_id"}), "order_id"),
    Bad("o", "bad-order-negative", dumps(order("bad-order-negative", revenue=-5)), "revenue"),
    Bad("o", "bad-order-ts", dumps(order("bad-order-ts", ts="yesterday")), "ts"),
    Bad("o", "bad-order-trunc", b'{"order_id": "o-1", "session_id": "bad-order-tr', "JSON"),
]
GOOD_SESSIONS = [f"good-{i}" for i in range(len(BAD) + 1)]
CONVERTING = set(GOOD_SESSIONS[::2])


def interleaved(worker: Worker) -> list[Message]:
    """Good session, bad record, good session, ...; every other good session orders."""
    s = worker.settings
    topic = {"b": s.beacons_topic, "o": s.orders_topic}
    out: list[Message] = []
    for i, sid in enumerate(GOOD_SESSIONS):
        out.append(Message.of(s.beacons_topic, beacon(sid), sid))
        out.append(Message.of(s.beacons_topic, beacon(sid, 2, page_url="https://shop.example/c"),
                              sid))
        if sid in CONVERTING:
            out.append(Message.of(s.orders_topic, order(sid), sid))
        if i < len(BAD):
            bad = BAD[i]
            out.append(Message(topic[bad.kind], bad.raw, bad.key.encode()))
    return out


@dataclass(frozen=True)
class Outcome:
    dead: list[Consumed]
    facts: list[dict[str, Any]]
    metrics: str


def good_facts_done(records: Sequence[Consumed]) -> bool:
    facts = [f for r in records for f in r.facts()]
    sessions = {f["session_id"] for f in facts if f["kind"] == "session"}
    orders = {f["session_id"] for f in facts if f["kind"] == "order"}
    return set(GOOD_SESSIONS) <= sessions and orders >= CONVERTING


async def drive(worker: Worker) -> Outcome:
    s = worker.settings
    await produce(worker.bootstrap, interleaved(worker))
    async with TopicReader(worker.bootstrap, s.dead_letter_topic) as dead, \
            TopicReader(worker.bootstrap, s.facts_topic) as facts:
        await dead.until(lambda rs: len(rs) >= len(BAD), 60,
                         f"{len(BAD)} dead letters", worker, fail=False)
        await facts.until(good_facts_done, 60, "the good sessions' facts", worker, fail=False)
        await dead.drain(quiet_s=1.5)
        worker.assert_alive()
        return Outcome(dead.records, facts.fact_values(), worker.metrics_text())


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, kafka_bootstrap: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from worker_fixture(request, kafka_bootstrap, tmp_path_factory, "dead-letter",
                              partitions=3)


@pytest.fixture(scope="module")
def outcome(worker: Worker) -> Outcome:
    return asyncio.run(asyncio.wait_for(drive(worker), timeout=150))


def by_raw(outcome: Outcome) -> dict[str, dict[str, Any]]:
    return {letter["raw"]: letter for letter in (r.json() for r in outcome.dead)}


def test_every_bad_record_is_dead_lettered_once(worker: Worker, outcome: Outcome) -> None:
    letters = by_raw(outcome)
    assert len(outcome.dead) == len(BAD), [r.json()["error"] for r in outcome.dead]
    s = worker.settings
    topic = {"b": s.beacons_topic, "o": s.orders_topic}
    now = int(time.time() * 1000)
    for bad in BAD:
        raw = bad.raw.decode("utf-8", errors="replace")
        assert raw in letters, f"{bad.key}: no dead letter with its raw bytes"
        letter = letters[raw]
        assert set(letter) == {"error", "topic", "raw", "received_at"}, letter.keys()
        assert letter["topic"] == topic[bad.kind], bad.key
        assert bad.reason in letter["error"], (bad.key, letter["error"])
        assert isinstance(letter["received_at"], int)
        assert now - 180_000 < letter["received_at"] <= now, (bad.key, letter["received_at"])


def test_dead_letters_keep_the_key_as_received(outcome: Outcome) -> None:
    keys = {orjson.loads(r.value or b"{}")["raw"]: r.key for r in outcome.dead}
    wrong = {bad.key: keys.get(bad.raw.decode("utf-8", errors="replace"))
             for bad in BAD if keys.get(bad.raw.decode("utf-8", errors="replace"))
             != bad.key.encode()}
    assert not wrong, ("CONTRACT.md: the dead-letter topic's key is the key 'as received'; "
                       f"got these keys instead: {wrong}")


def test_dead_letters_are_counted(worker: Worker, outcome: Outcome) -> None:
    samples = metric_samples(outcome.metrics, "revwatch_dead_letter_total")
    per_topic: dict[str, float] = {}
    for labels, value in samples.items():
        topic = dict(labels)["topic"]
        per_topic[topic] = per_topic.get(topic, 0.0) + value
    s = worker.settings
    assert per_topic == {s.beacons_topic: sum(b.kind == "b" for b in BAD),
                         s.orders_topic: sum(b.kind == "o" for b in BAD)}
    classes = {dict(labels)["reason_class"] for labels in samples}
    assert {"not_json", "not_object", "bad_field"} <= classes, classes


def test_good_sessions_around_bad_records_all_count(outcome: Outcome) -> None:
    sessions = [f for f in outcome.facts if f["kind"] == "session"]
    orders = [f for f in outcome.facts if f["kind"] == "order"]
    assert sorted(f["session_id"] for f in sessions) == sorted(GOOD_SESSIONS)
    assert {f["campaign"] for f in sessions} == {GOOD}
    assert sorted(f["session_id"] for f in orders) == sorted(CONVERTING)
    assert all(f["first_order"] and f["known_session"] for f in orders)
    assert not any(f.get("session_id", "").startswith("bad-") for f in outcome.facts)


def test_a_null_value_is_dead_lettered_and_the_worker_goes_on(worker: Worker,
                                                               outcome: Outcome) -> None:
    """A record with no value (a Kafka tombstone) is unreadable like any other."""
    s = worker.settings

    async def run() -> tuple[list[Consumed], list[dict[str, Any]]]:
        await produce(worker.bootstrap, [
            Message(s.beacons_topic, None, b"after-null"),
            Message.of(s.beacons_topic, beacon("after-null"), "after-null")])
        async with TopicReader(worker.bootstrap, s.dead_letter_topic) as dead, \
                TopicReader(worker.bootstrap, s.facts_topic) as facts:
            await facts.until(lambda rs: any(f.get("session_id") == "after-null"
                                             for r in rs for f in r.facts()), 30,
                              "the session after a null value", worker)
            await dead.until(lambda rs: len(rs) > len(BAD), 15, "a dead letter for it", worker)
            return dead.records, facts.fact_values()

    dead, _ = asyncio.run(run())
    worker.assert_alive()
    letter = dead[-1].json()
    assert letter["topic"] == s.beacons_topic
    assert letter["raw"] == ""
