"""The local broker is real Kafka: topics, produce with kafka-python, consume with aiokafka,
partition growth, and data that survives a restart. Every wait is bounded."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaProducer

from streams.broker import LocalBroker
from streams.broker_cli import main
from streams.settings import Settings
from streams.topics import ensure_topics, revwatch_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=f"k{i % 13}".encode(), value=f"v{i}".encode())
                   for i in range(count)]
        producer.flush(timeout=20)
        for future in futures:
            future.get(timeout=5)
    finally:
        producer.close(timeout=10)


async def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[int, bytes]]:
    """Read ``count`` records in a consumer group; returns (partition, value) pairs."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), timeout=30)
    seen: list[tuple[int, bytes]] = []
    try:
        deadline = time.monotonic() + 40
        while len(seen) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            seen += [(r.partition, r.value) for rs in batches.values() for r in rs if r.value]
        await consumer.commit()
    finally:
        await consumer.stop()
    return seen


def _partitions(bootstrap: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (described,) = admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        admin.close()


async def test_topics_produce_consume_and_grow(kafka_bootstrap: str, unique_name: str) -> None:
    topic, other = f"{unique_name}-a", f"{unique_name}-b"
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, {topic: 4, other: 1})
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, {topic: 4})  # idempotent
    assert _partitions(kafka_bootstrap, topic) == 4
    await asyncio.to_thread(_produce, kafka_bootstrap, topic, 100)

    records = await _consume(kafka_bootstrap, topic, f"{unique_name}-g", 100)

    assert sorted(value for _, value in records) == sorted(f"v{i}".encode() for i in range(100))
    assert len({partition for partition, _ in records}) > 1, "keys must spread over partitions"
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, {topic: 6, other: 3})
    assert (_partitions(kafka_bootstrap, topic), _partitions(kafka_bootstrap, other)) == (6, 3)
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, {topic: 2})  # never shrinks
    assert _partitions(kafka_bootstrap, topic) == 6


def test_revwatch_topics_are_created(kafka_bootstrap: str, unique_name: str) -> None:
    settings = Settings(partitions=3, beacons_topic=f"{unique_name}-beacons",
                        orders_topic=f"{unique_name}-orders", facts_topic=f"{unique_name}-facts",
                        alerts_topic=f"{unique_name}-alerts",
                        dead_letter_topic=f"{unique_name}-dl",
                        verdicts_topic=f"{unique_name}-verdicts")
    wanted = revwatch_topics(settings)
    ensure_topics(kafka_bootstrap, wanted)
    assert {name: _partitions(kafka_bootstrap, name) for name in wanted} == wanted


def test_status_says_answering(kafka_broker: LocalBroker) -> None:
    state = kafka_broker.status()
    assert state.answering
    assert state.host_port == kafka_broker.host_port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_restart_keeps_the_data(
    tmp_path: Path, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(broker=f"kafka://127.0.0.1:{_free_port()}", data_dir=tmp_path)
    bootstrap = settings.broker_host_port
    broker = LocalBroker(bootstrap, tmp_path)
    try:
        assert main("start", settings) == 0
        assert f"answering on {bootstrap} (pid" in capsys.readouterr().out
        cluster_id = (tmp_path / "kafka" / "cluster.id").read_text()
        ensure_topics(bootstrap, {unique_name: 2})
        _produce(bootstrap, unique_name, 20)
        first_pid = broker.status().pid
        LocalBroker(bootstrap, tmp_path).start(timeout_s=5)  # already answering: returns at once
        assert broker.status().pid == first_pid

        assert main("stop", settings) == 0
        assert f"kafka stopped (pid {first_pid}" in capsys.readouterr().out
        assert main("status", settings) == 1
        assert broker.status().answering is False

        assert main("start", settings) == 0
        assert (tmp_path / "kafka" / "cluster.id").read_text() == cluster_id
        records = asyncio.run(_consume(bootstrap, unique_name, f"{unique_name}-g", 20))
        assert sorted(v for _, v in records) == sorted(f"v{i}".encode() for i in range(20))
    finally:
        broker.stop()
    assert broker.status().running is False
