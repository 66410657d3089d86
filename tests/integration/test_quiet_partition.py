"""A partition that falls quiet follows the others' event time, through a real worker.

The session stage lets a partition silent for 15 s follow the other partitions' clock only
when the consumer's high-water marks say nothing is left to read on it
(``streams.app._backlog_probe``, ``streams/session_stage.py``). This checks the probe
against real Kafka and Faust: partition 1 reads one landing page without an LCP and then
nothing more, while partition 0 runs an hour ahead. The landing's session fact goes out
only ``lcp_wait`` after the landing in partition 1's event time, so it appears only if
partition 1 is judged quiet and follows partition 0. If the probe took a caught-up
partition for one still behind (a high-water mark never known, say), it never would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.worker_harness import Message, TopicReader, Worker, produce, worker_fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MINUTE = 60_000
B = (int(time.time() * 1000) // MINUTE) * MINUTE - 3 * 60 * MINUTE
SHOP = "https://shop.example"


def beacon(sid: str, ts: int, path: str, **extra: Any) -> dict[str, Any]:
    return {"beacon_id": f"{sid}:{ts}", "session_id": sid, "ts": ts, "received_at": ts,
            "page_url": SHOP + path, "device": "desktop", **extra}


def order(sid: str, ts: int) -> dict[str, Any]:
    return {"order_id": f"{sid}-o", "session_id": sid, "ts": ts, "received_at": ts,
            "revenue": 10.0, "currency": "USD"}


def both_inputs(worker: Worker, partition: int, at_ms: int, tag: str) -> list[Message]:
    """A beacon and an order on ``partition`` of both input topics, at ``at_ms``."""
    s, sid = worker.settings, f"busy-{tag}-{partition}"
    return [Message.of(s.beacons_topic, beacon(sid, at_ms, "/f", lcp_ms=900.0), sid, partition),
            Message.of(s.orders_topic, order(sid, at_ms), sid, partition)]


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, kafka_bootstrap: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from worker_fixture(request, kafka_bootstrap, tmp_path_factory, "quiet",
                              partitions=2)


def test_a_quiet_partition_caught_up_follows_the_busy_one(worker: Worker) -> None:
    s = worker.settings

    def quiet_session(records: Any) -> bool:
        return any(f.get("session_id") == "q-1" and f["kind"] == "session"
                   for r in records for f in r.facts())

    async def run() -> tuple[bool, float]:
        async with TopicReader(worker.bootstrap, s.facts_topic) as facts:
            await produce(worker.bootstrap, both_inputs(worker, 0, B, "0")
                          + both_inputs(worker, 1, B, "0"))
            landing = beacon("q-1", B + MINUTE, "/w?utm_campaign=quiet-camp")  # no LCP
            await produce(worker.bootstrap, [Message.of(s.beacons_topic, landing, "q-1", 1)])
            began = time.monotonic()
            for minute in range(2, 62, 2):  # partition 0 alone moves on, one record a second
                await produce(worker.bootstrap, both_inputs(worker, 0, B + minute * MINUTE,
                                                            str(minute)))
                await facts.until(quiet_session, 1.0, "", fail=False)
                if quiet_session(facts.records):
                    return True, time.monotonic() - began
            return False, time.monotonic() - began

    found, after_s = asyncio.run(run())
    assert found, (f"partition 1 read everything it had and fell quiet, but after {after_s:.0f} s "
                   "its event time had not followed partition 0's: the landing's session fact "
                   f"(due lcp_wait after it) never came\n{worker.describe()}")
    assert after_s >= 10, f"the session fact came after {after_s:.0f} s, before the 15 s quiet"
