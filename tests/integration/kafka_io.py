"""Kafka for the end-to-end tests: produce messages, read topics back, wait on them.

* :func:`produce` sends :class:`Message` s with aiokafka (explicit partitions allowed) and
  waits for every acknowledgement.
* :class:`TopicReader` reads topics from the beginning and :meth:`TopicReader.until` waits,
  bounded, until a predicate holds over what it read; a timeout raises ``AssertionError``
  with the worker's state and the end of its log.

``tests/integration/worker_harness.py`` re-exports all of it, next to the worker process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.facts_codec import SITE_KIND

if TYPE_CHECKING:
    from tests.integration.worker_harness import Worker


@dataclass(frozen=True)
class Message:
    """One record to produce. ``partition`` None lets the key choose (murmur2, like Kafka)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None

    @classmethod
    def of(cls, topic: str, value: dict[str, Any] | list[Any] | bytes | None,
           key: str | bytes | None = None, partition: int | None = None) -> Message:
        """A message from a JSON-able object (or raw bytes) and a text key."""
        raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
        return cls(topic, raw, key.encode() if isinstance(key, str) else key, partition)


async def produce(bootstrap: str, messages: Iterable[Message], *,
                  max_request_size: int = 2_000_000, timeout_s: float = 60.0) -> int:
    """Send ``messages`` in order and wait until the broker acknowledged all; returns count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=max_request_size)
    await asyncio.wait_for(producer.start(), timeout=30)
    try:
        futures = [await producer.send(m.topic, m.value, key=m.key, partition=m.partition)
                   for m in messages]
        await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout_s)
    finally:
        await producer.stop()
    return len(futures)


@dataclass(frozen=True)
class Consumed:
    """A record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    def json(self) -> Any:
        assert self.value is not None, f"{self.topic}[{self.partition}]@{self.offset}: no value"
        return orjson.loads(self.value)

    def facts(self) -> list[Any]:
        """The session facts of a facts-topic record: a JSON array of them (or one object).
        The workers' slope shares in the same arrays (``"kind": "site"``) are left out."""
        value = self.json()
        return [f for f in (value if isinstance(value, list) else [value])
                if not (isinstance(f, dict) and f.get("kind") == SITE_KIND)]


Predicate = Callable[[Sequence[Consumed]], bool]


@dataclass
class TopicReader:
    """Reads ``topics`` from the beginning (no consumer group) and keeps every record.

    Use as ``async with TopicReader(bootstrap, topic) as reader``; ``records`` grows with
    each :meth:`poll` / :meth:`until`.
    """

    bootstrap: str
    topics: str | Sequence[str]
    records: list[Consumed] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        names = [self.topics] if isinstance(self.topics, str) else list(self.topics)
        self._consumer = AIOKafkaConsumer(
            *names, bootstrap_servers=self.bootstrap, group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False,
            fetch_max_bytes=8 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024)
        await asyncio.wait_for(self._consumer.start(), timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def poll(self, timeout_ms: int = 200) -> list[Consumed]:
        """Read what is available now (waiting up to ``timeout_ms``); returns the new records."""
        assert self._consumer is not None, "use TopicReader as an async context manager"
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        new = [Consumed(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
               for records in batches.values() for r in records]
        self.records.extend(new)
        return new

    async def until(self, predicate: Predicate, timeout_s: float, what: str,
                    worker: Worker | None = None, *, fail: bool = True) -> list[Consumed]:
        """Poll until ``predicate(records)`` holds.

        After ``timeout_s`` raise ``AssertionError`` (with the worker's log), or with
        ``fail=False`` return what was read, so the caller's assertions show the difference.
        """
        deadline = time.monotonic() + timeout_s
        while not predicate(self.records):
            if time.monotonic() > deadline:
                if not fail:
                    return self.records
                detail = worker.describe() if worker is not None else ""
                message = (f"timed out after {timeout_s:g} s waiting for {what}; read "
                           f"{len(self.records)} records of {self.topics}\n{detail}")
                raise AssertionError(message)
            if worker is not None:
                worker.assert_alive()
            await self.poll()
        return self.records

    async def drain(self, quiet_s: float = 1.0, timeout_s: float = 30.0) -> list[Consumed]:
        """Read every partition up to its end offset as of now, then until nothing new
        arrives for ``quiet_s`` (all bounded by ``timeout_s``).

        The end offsets come first: on a loaded machine a fetch can take longer than
        ``quiet_s``, and a drain that stopped at the first quiet spell read part of a topic
        (a campaigns changelog read in part once made a crash test see 98 sessions fewer).
        """
        deadline = time.monotonic() + timeout_s
        ends = await self._end_offsets()
        while time.monotonic() < deadline and not self._reached(ends):
            await self.poll()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
            if await self.poll():
                quiet_since = time.monotonic()
        return self.records

    async def _end_offsets(self) -> dict[tuple[str, int], int]:
        assert self._consumer is not None, "use TopicReader as an async context manager"
        names = [self.topics] if isinstance(self.topics, str) else list(self.topics)
        tps = [TopicPartition(name, partition) for name in names
               for partition in self._consumer.partitions_for_topic(name) or ()]
        found = await self._consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    def _reached(self, ends: dict[tuple[str, int], int]) -> bool:
        """Whether a record at or past ``end - 1`` was read on every non-empty partition."""
        last: dict[tuple[str, int], int] = {}
        for r in self.records:
            key = (r.topic, r.partition)
            last[key] = max(last.get(key, -1), r.offset)
        return all(last.get(key, -1) >= end - 1 for key, end in ends.items() if end > 0)

    def values(self) -> list[Any]:
        """Every record's value as JSON."""
        return [r.json() for r in self.records]

    def fact_values(self) -> list[Any]:
        """Every session fact of every record (facts topic), in order."""
        return [fact for r in self.records for fact in r.facts()]
