"""Where the collector puts accepted beacons: a bounded buffer drained to Kafka.

``offer()`` never blocks and never fails silently: it returns ``False`` when the buffer is
full (the collector answers 503) and otherwise keeps every record until the broker has
acknowledged it (``acks="all"``), retrying with backoff while the broker is away. So a
record answered with 204 is lost only if the process dies or :meth:`KafkaSink.stop` runs
out of time with the broker away (the loss is logged with a count).

Records are sent at least once: a batch that failed part-way is sent again whole, and the
sessionizer merges repeats by ``beacon_id`` (CONTRACT.md).

The sink lives on the event loop that serves the collector (Faust's default,
``web_in_thread=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from streams.records import Beacon
from streams.settings import Settings

log = logging.getLogger(__name__)

BATCH_MAX_RECORDS = 500
MAX_BATCH_BYTES = 512 * 1024
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
KEY_CACHE_SIZE = 16_384  # session ids whose key and hash are kept (sessions send several)


class BeaconSink(Protocol):
    """Accepts parsed beacons without blocking."""

    def offer(self, beacons: Sequence[Beacon]) -> bool:
        """Take all of ``beacons`` (True) or none of them because the buffer is full."""
        ...


class RecordBatch(Protocol):
    """The part of aiokafka's ``BatchBuilder`` the sink uses."""

    def append(self, *, timestamp: int | None, key: bytes, value: bytes) -> Any:
        """Add a record; None when the batch is full (nothing added)."""
        ...


class Producer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaProducer` the sink uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]: ...

    def create_batch(self) -> RecordBatch: ...

    async def send_batch(self, batch: RecordBatch, topic: str, *,
                         partition: int) -> Awaitable[Any]: ...


class ListSink:
    """A sink for tests: keeps what it is offered, up to ``capacity`` records."""

    def __init__(self, capacity: int | None = None) -> None:
        self.beacons: list[Beacon] = []
        self.capacity = capacity

    def offer(self, beacons: Sequence[Beacon]) -> bool:
        if self.capacity is not None and len(self.beacons) + len(beacons) > self.capacity:
            return False
        self.beacons.extend(beacons)
        return True


def aiokafka_producer(settings: Settings) -> Producer:
    """An idempotent ``acks="all"`` producer for ``settings.broker``."""
    producer: Producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_host_port,
        client_id=f"{settings.app_id}-collector",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=10_000,
    )
    return producer


class KafkaSink:
    """A bounded buffer that a background task drains to the beacons topic.

    Attributes:
        sent: records acknowledged by the broker.
        failed_attempts: connection or send attempts that failed (each followed by backoff).
        unserialisable: records dropped because they could not be turned into JSON.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        producer_factory: Callable[[], Producer] | None = None,
    ) -> None:
        self.topic = topic or settings.beacons_topic
        self.max_records = settings.buffer_max_records
        self.sent = 0
        self.failed_attempts = 0
        self.unserialisable = 0
        self._factory = producer_factory or (lambda: aiokafka_producer(settings))
        self._buffer: deque[Beacon] = deque()
        self._producer: Producer | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        """Records accepted and not yet acknowledged."""
        return len(self._buffer)

    @property
    def connected(self) -> bool:
        """Whether the producer is started and has not failed since (for readiness)."""
        return self._producer is not None

    def offer(self, beacons: Sequence[Beacon]) -> bool:
        if len(self._buffer) + len(beacons) > self.max_records:
            return False
        self._buffer.extend(beacons)
        self._wake.set()
        return True

    async def start(self) -> None:
        """Start the background task (it connects, and reconnects, by itself)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="revwatch-kafka-sink")

    async def stop(self, flush_timeout_s: float = 10.0) -> None:
        """Send what is buffered (for at most ``flush_timeout_s``), then close the producer."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            done, _ = await asyncio.wait({task}, timeout=flush_timeout_s)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._buffer:
            log.warning("beacon sink stopped with %d records unsent", len(self._buffer))
        await self._close_producer()

    async def _run(self) -> None:
        backoff_s = BACKOFF_START_S
        while not (self._stopping and not self._buffer):
            try:
                await self._step()
                backoff_s = BACKOFF_START_S
            except Exception as exc:  # any failure (broker away, timeout): keep records, retry
                self.failed_attempts += 1
                log.warning("beacon sink: %s: %s; retrying in %.1fs",
                            type(exc).__name__, exc, backoff_s)
                await self._close_producer()
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    async def _step(self) -> None:
        """Connect (eagerly, so ``connected`` means something), then send or wait."""
        producer = await self._ensure_producer()
        if not self._buffer:
            await self._wake.wait()
            self._wake.clear()
            return
        batch = list(itertools.islice(self._buffer, BATCH_MAX_RECORDS))
        pending, count = await self._send(producer, batch)
        await asyncio.gather(*pending)
        for _ in batch:
            self._buffer.popleft()
        self.sent += count

    async def _send(self, producer: Producer,
                    batch: list[Beacon]) -> tuple[list[Awaitable[Any]], int]:
        """Hand ``batch`` to the producer as one record batch per partition.

        Each record goes to the partition aiokafka's default partitioner gives its key (the
        session id), as ``producer.send`` would; a batch per partition spares a future and
        a partitioner call through the producer per record.
        """
        partitions = sorted(await producer.partitions_for(self.topic))
        builders: dict[int, RecordBatch] = {}
        pending: list[Awaitable[Any]] = []
        count = 0
        for beacon in batch:
            value = self._serialise(beacon)
            if value is None:
                continue
            key, hashed = _key_hash(beacon.session_id)
            partition = partitions[hashed % len(partitions)]
            builder = builders.get(partition) or builders.setdefault(
                partition, producer.create_batch())
            if builder.append(timestamp=None, key=key, value=value) is None:  # full
                pending.append(await producer.send_batch(builder, self.topic,
                                                         partition=partition))
                builder = builders[partition] = producer.create_batch()
                builder.append(timestamp=None, key=key, value=value)
            count += 1
        for partition, builder in builders.items():
            pending.append(await producer.send_batch(builder, self.topic, partition=partition))
        return pending, count

    def _serialise(self, beacon: Beacon) -> bytes | None:
        """The record's JSON; None (logged, counted) for one that cannot be written.

        Such a record would otherwise fail its batch on every retry and block the buffer.
        """
        try:
            return beacon.to_json()
        except (TypeError, ValueError, RecursionError) as exc:
            self.unserialisable += 1
            log.error("beacon sink: dropped a record that cannot be serialised (%s)",
                      type(exc).__name__)
            return None

    async def _ensure_producer(self) -> Producer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _key_hash(session_id: str) -> tuple[bytes, int]:
    """The record key of ``session_id`` and the hash aiokafka's default partitioner takes
    for it (``murmur2(key) & 0x7FFFFFFF``; the partition is ``partitions[hash % count]``).

    aiokafka's murmur2 is pure Python (~2 us a key); sessions send several beacons.
    """
    key = session_id.encode()
    return key, murmur2(key) & 0x7FFFFFFF
