"""``/beacon`` of a running worker writes canonical beacons to the real beacons topic.

web-vitals JSON (an object or an array; ``text/plain`` or ``application/json``), a canonical
beacon, and boomerang's form POST and GET image beacon are posted over HTTP to a real
``revwatch worker``; each must come out of the beacons topic as a canonical beacon keyed by
its session id, stamped with ``received_at`` and the request's user agent, its ``page_url``
scrubbed to the ``utm_*`` parameters. A body that cannot be read gets a 400 JSON answer and
lands on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from tests.integration.worker_harness import (
    Consumed,
    HttpReply,
    TopicReader,
    Worker,
    metric_value,
    worker_fixture,
)
from tests.unit.test_beacons import (
    LANDING,
    SCRUBBED,
    UA,
    boomerang_load,
    boomerang_unload,
    snippet_record,
    web_vitals_record,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DIRTY = "https://user:pw@shop.example/c?utm_campaign=cart&token=secret&email=a%40b.example#x"
DIRTY_SCRUBBED = "https://shop.example/c?utm_campaign=cart"


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, kafka_bootstrap: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from worker_fixture(request, kafka_bootstrap, tmp_path_factory, "collector",
                              partitions=3)


def post(worker: Worker, body: bytes, content_type: str, path: str = "/beacon") -> HttpReply:
    return worker.request("POST", path, body, {"Content-Type": content_type, "User-Agent": UA})


def read_topic(worker: Worker, topic: str, count: int | None = None) -> list[Consumed]:
    """At least ``count`` records of ``topic``; None: what it holds now (read until quiet)."""
    async def run() -> list[Consumed]:
        async with TopicReader(worker.bootstrap, topic) as reader:
            if count is None:
                return await reader.drain(quiet_s=1.0)
            return await reader.until(lambda rs: len(rs) >= count, 30,
                                      f"{count} records", worker)
    return asyncio.run(run())


def beacons_by_id(worker: Worker, ids: set[str]) -> dict[str, tuple[Consumed, dict[str, Any]]]:
    """The beacons topic's records with these ``beacon_id`` s (waits until all are there)."""
    async def run() -> list[Consumed]:
        def done(records: Any) -> bool:
            return ids <= {r.json()["beacon_id"] for r in records}

        async with TopicReader(worker.bootstrap, worker.settings.beacons_topic) as reader:
            return await reader.until(done, 30, f"beacons {sorted(ids)}", worker)

    out: dict[str, tuple[Consumed, dict[str, Any]]] = {}
    for record in asyncio.run(run()):
        value = record.json()
        if value["beacon_id"] in ids:
            assert value["beacon_id"] not in out, f"{value['beacon_id']} written twice"
            out[value["beacon_id"]] = (record, value)
    return out


def check_stamped(record: Consumed, value: dict[str, Any], session: str, sent_ms: int) -> None:
    assert record.key == session.encode(), "beacons are keyed by session_id"
    assert value["session_id"] == session
    assert sent_ms - 1000 <= value["received_at"] <= int(time.time() * 1000) + 1000
    assert value["user_agent"] == UA


def test_web_vitals_object_and_array(worker: Worker) -> None:
    sent = int(time.time() * 1000)
    lcp = snippet_record(name="LCP", value=1234.5, session_id="wv-1", page_view_id="pv-1",
                         page_url=LANDING + "#top")
    ttfb = snippet_record(name="TTFB", value=88.0, session_id="wv-2", page_view_id="pv-2",
                          page_url=DIRTY)
    cls = snippet_record(name="CLS", value=0.12, session_id="wv-2", page_view_id="pv-3",
                         page_url=DIRTY)
    readme = web_vitals_record(session_id="wv-3", value=640)  # navigationId, no page_ts
    replies = [post(worker, orjson.dumps(lcp), "text/plain;charset=UTF-8"),
               post(worker, orjson.dumps([ttfb, cls]), "application/json"),
               post(worker, orjson.dumps(readme), "text/plain")]
    assert [r.status for r in replies] == [204, 204, 204], [r.body for r in replies]

    found = beacons_by_id(worker, {"wv-1:pv-1", "wv-2:pv-2", "wv-2:pv-3", "wv-3:4385"})
    record, value = found["wv-1:pv-1"]
    check_stamped(record, value, "wv-1", sent)
    assert value["lcp_ms"] == 1234.5
    assert value["ts"] == lcp["page_ts"]
    assert value["page_url"] == SCRUBBED
    assert "ttfb_ms" not in value, "one metric per web-vitals record"
    record, value = found["wv-2:pv-2"]
    check_stamped(record, value, "wv-2", sent)
    assert (value["ttfb_ms"], value["page_url"]) == (88.0, DIRTY_SCRUBBED)
    assert found["wv-2:pv-3"][1]["cls"] == 0.12
    record, value = found["wv-3:4385"]
    check_stamped(record, value, "wv-3", sent)
    assert value["lcp_ms"] == 640
    assert value["page_url"] == SCRUBBED


def test_canonical_beacon_gets_the_collectors_received_at(worker: Worker) -> None:
    sent = int(time.time() * 1000)
    canonical = {"beacon_id": "cb-1:1", "session_id": "cb-1", "ts": sent - 5000,
                 "page_url": DIRTY, "lcp_ms": 2000, "received_at": 946_684_800_000,
                 "device": "mobile", "campaign": "explicit"}
    reply = post(worker, orjson.dumps(canonical), "application/json")
    assert reply.status == 204, reply.body
    record, value = beacons_by_id(worker, {"cb-1:1"})["cb-1:1"]
    check_stamped(record, value, "cb-1", sent)
    assert (value["page_url"], value["campaign"], value["device"]) == (
        DIRTY_SCRUBBED, "explicit", "mobile")


def test_boomerang_form_post_and_get(worker: Worker) -> None:
    sent = int(time.time() * 1000)
    load = boomerang_load(**{"rt.si": "bm-1", "pid": "page1", "u": DIRTY})
    reply = post(worker, urlencode(load).encode(), "application/x-www-form-urlencoded")
    assert reply.status == 204, reply.body
    unload = boomerang_unload(**{"rt.si": "bm-2", "pid": "page2"})
    reply = worker.request("GET", "/beacon?" + urlencode(unload), headers={"User-Agent": UA})
    assert reply.status == 204, reply.body

    found = beacons_by_id(worker, {"bm-1:page1", "bm-2:page2"})
    record, value = found["bm-1:page1"]
    check_stamped(record, value, "bm-1", sent)
    assert value["page_url"] == DIRTY_SCRUBBED
    assert (value["ts"], value["lcp_ms"], value["fcp_ms"], value["ttfb_ms"], value["load_ms"]) \
        == (1795446035900, 460, 140, 5, 359)
    assert "restiming" not in value
    record, value = found["bm-2:page2"]
    check_stamped(record, value, "bm-2", sent)
    assert (value["inp_ms"], value["page_url"]) == (128, SCRUBBED)


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    pytest.param(b'{"name": "LCP", "value": 12', "text/plain", "not valid JSON", id="json"),
    pytest.param(b"\xff\xfe{}", "application/json", "UTF-8", id="utf8"),
    pytest.param(orjson.dumps({"name": "LCP", "value": 5, "page_view_id": "p"}), "text/plain",
                 "session_id", id="no-session"),
    pytest.param(urlencode({"pid": "x", "u": DIRTY}).encode(),
                 "application/x-www-form-urlencoded", "rt.si", id="boomerang-no-session"),
])
def test_a_bad_body_gets_400_and_a_dead_letter(worker: Worker, body: bytes, content_type: str,
                                                reason: str) -> None:
    s = worker.settings
    before = {(r.partition, r.offset) for r in read_topic(worker, s.dead_letter_topic)}
    reply = post(worker, body, content_type)
    assert reply.status == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reason in reply.json()["error"]
    new = [r for r in read_topic(worker, s.dead_letter_topic, len(before) + 1)
           if (r.partition, r.offset) not in before]
    assert len(new) == 1, [r.value for r in new]
    letter = new[0].json()
    assert set(letter) == {"error", "topic", "raw", "received_at"}
    assert letter["topic"] == s.beacons_topic
    assert reason in letter["error"]
    assert "secret" not in letter["raw"], "raw is scrubbed"
    assert "a%40b" not in letter["raw"], "raw is scrubbed"


def test_collector_counts_by_source_and_outcome(worker: Worker) -> None:
    def counts() -> dict[tuple[str, str], float]:
        text = worker.metrics_text()
        return {(source, outcome): metric_value(text, "revwatch_beacons_total", source=source,
                                                outcome=outcome)
                for source in ("web-vitals", "boomerang", "canonical")
                for outcome in ("accepted", "invalid")}

    before = counts()
    records = [snippet_record(session_id="n-1", page_view_id="a"),
               snippet_record(session_id="n-1", page_view_id="b"), {"name": "LCP"}]
    assert post(worker, orjson.dumps(records), "text/plain").status == 204
    form = urlencode(boomerang_load(**{"rt.si": "n-2"})).encode()
    assert post(worker, form, "application/x-www-form-urlencoded").status == 204
    canonical = {"beacon_id": "n-3:1", "session_id": "n-3", "ts": int(time.time() * 1000),
                 "page_url": "https://shop.example/"}
    assert post(worker, orjson.dumps(canonical), "application/json").status == 204
    assert post(worker, b"{", "application/json").status == 400
    after = counts()
    delta = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert delta == {("web-vitals", "accepted"): 2, ("web-vitals", "invalid"): 2,
                     ("boomerang", "accepted"): 1, ("canonical", "accepted"): 1}
