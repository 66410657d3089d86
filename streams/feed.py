"""Send simulated (or recorded) beacons and orders to Kafka, optionally paced.

Event time can run faster than the wall clock: ``speed=60`` plays one event-time minute
per wall second. Records before ``live_from_ms`` (warm-up history) go out unpaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer


@dataclass
class FeedStats:
    beacons: int = 0
    orders: int = 0
    last_event_ms: int = 0


async def feed(bootstrap: str, records: Iterable[tuple[str, dict[str, Any]]], *,
               beacons_topic: str, orders_topic: str, speed: float | None = None,
               live_from_ms: int | None = None,
               on_progress: Callable[[FeedStats], None] | None = None) -> FeedStats:
    """Produce ``records`` (kind, object) keyed by session id; return the counts."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=256 * 1024, acks="all")
    await producer.start()
    stats = FeedStats()
    pacer = _Pacer(speed, live_from_ms)
    try:
        pending: list[asyncio.Future[Any]] = []
        for kind, obj in records:
            event_ms = int(obj.get("received_at") or obj["ts"])
            await pacer.wait(event_ms)
            topic = beacons_topic if kind == "beacon" else orders_topic
            pending.append(await producer.send(
                topic, key=str(obj["session_id"]).encode(), value=orjson.dumps(obj)))
            _count(stats, kind, event_ms)
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                if on_progress:
                    on_progress(stats)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return stats


def _count(stats: FeedStats, kind: str, event_ms: int) -> None:
    if kind == "beacon":
        stats.beacons += 1
    else:
        stats.orders += 1
    stats.last_event_ms = max(stats.last_event_ms, event_ms)


class _Pacer:
    def __init__(self, speed: float | None, live_from_ms: int | None) -> None:
        self.speed = speed
        self.live_from_ms = live_from_ms
        self.origin: tuple[float, int] | None = None

    async def wait(self, event_ms: int) -> None:
        if not self.speed or (self.live_from_ms is not None and event_ms < self.live_from_ms):
            return
        if self.origin is None:
            self.origin = (time.monotonic(), event_ms)
        wall0, event0 = self.origin
        due = wall0 + (event_ms - event0) / 1000.0 / self.speed
        delay = due - time.monotonic()
        if delay > 0.002:
            await asyncio.sleep(delay)
