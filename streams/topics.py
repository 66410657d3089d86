"""Create revwatch's topics with the partition counts it needs, before any worker starts.

Kafka's auto-create gives a topic one partition, and Faust stops when joined topics differ
in partitions, so every topic is created up front with :func:`ensure_topics`. It is
idempotent and safe to run from several processes at once: a topic that exists is kept
(grown if it has fewer partitions than asked, never shrunk, which Kafka cannot do).
"""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.partitioner import murmur2

from streams.errors import BrokerError
from streams.settings import Settings

with warnings.catch_warnings():
    # kafka-python 3.0.12 reads its protocol schemas at import with importlib.resources'
    # read_text/open_text, deprecated since 3.11: harmless, but fatal under `-W error`.
    warnings.filterwarnings("ignore", "(read|open)_text is deprecated", DeprecationWarning)
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError, for_code

_UNKNOWN_TOPIC = 3
_BENIGN_CODES = frozenset({0, 36, 37})  # none, TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS (raced)


def revwatch_topics(settings: Settings) -> dict[str, int]:
    """Every topic revwatch reads or writes, with its partition count.

    The session topics (beacons, orders) must be co-partitioned; facts, alerts and the dead
    letter use the same count so work spreads over the same workers; verdicts stay in order
    on one partition.
    """
    shared = settings.partitions
    return {
        settings.beacons_topic: shared,
        settings.orders_topic: shared,
        settings.facts_topic: shared,
        settings.alerts_topic: shared,
        settings.dead_letter_topic: shared,
        settings.verdicts_topic: 1,
    }


def campaign_partition(campaign: str, partitions: int) -> int:
    """The facts partition of ``campaign``: where the Kafka default partitioner (murmur2 of
    the key, as aiokafka and the Java client compute it) puts the sessionizer's facts."""
    hashed: int = murmur2(campaign.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def ensure_topics(bootstrap: str, topics: Mapping[str, int], *, timeout_s: float = 30.0) -> None:
    """Create missing topics, grow smaller ones, and wait until metadata shows them ready.

    Args:
        bootstrap: ``host:port`` of a broker.
        topics: topic name -> wanted partition count (replication factor is 1).
        timeout_s: bound on the whole call.

    Raises:
        ValueError: a partition count below 1.
        BrokerError: the broker cannot be reached, refuses a topic, or is not ready in time.
    """
    bad = {name: count for name, count in topics.items() if count < 1}
    if bad:
        message = f"partition counts must be >= 1: {bad}"
        raise ValueError(message)
    if not topics:
        return
    deadline = time.monotonic() + timeout_s
    admin = _connect(bootstrap, timeout_s)
    try:
        existing = _partition_counts(admin, topics)
        _create(admin, {n: c for n, c in topics.items() if n not in existing}, timeout_s)
        _grow(admin, {n: c for n, c in topics.items() if 0 < existing.get(n, c) < c}, timeout_s)
        _wait_ready(admin, topics, deadline, timeout_s)
    except KafkaError as exc:
        message = f"could not create topics on {bootstrap}: {exc!r}"
        raise BrokerError(message) from exc
    finally:
        admin.close()


def _connect(bootstrap: str, timeout_s: float) -> KafkaAdminClient:
    timeout_ms = max(1000, int(timeout_s * 1000))
    advice = "start it with `revwatch broker start` or set REVWATCH_BROKER"
    if not any(_accepts(address, timeout_s) for address in bootstrap.split(",")):
        # checked first: kafka-python 3.0.12 leaks its sockets when bootstrap fails
        message = f"cannot reach Kafka at {bootstrap} (connection refused); {advice}"
        raise BrokerError(message)
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="revwatch-topics",
                                request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    except KafkaError as exc:
        message = f"cannot reach Kafka at {bootstrap} ({exc!r}); {advice}"
        raise BrokerError(message) from exc


def _accepts(address: str, timeout_s: float) -> bool:
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout_s, 5)):
            return True
    except (OSError, ValueError):
        return False


def _describe(admin: KafkaAdminClient, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    described: list[dict[str, Any]] = admin.describe_topics(list(names))
    return {t["name"]: t for t in described if t.get("error_code", 0) != _UNKNOWN_TOPIC}


def _partition_counts(admin: KafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    return {name: len(t.get("partitions") or ()) for name, t in _describe(admin, names).items()}


def _create(admin: KafkaAdminClient, wanted: Mapping[str, int], timeout_s: float) -> None:
    if not wanted:
        return
    request = {name: {"num_partitions": n, "replication_factor": 1} for name, n in wanted.items()}
    result = admin.create_topics(request, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    _raise_refusals("create", ((t["name"], t["error_code"]) for t in result["topics"]))


def _grow(admin: KafkaAdminClient, wanted: Mapping[str, int], timeout_s: float) -> None:
    if not wanted:
        return
    response = admin.create_partitions(dict(wanted), timeout_ms=int(timeout_s * 1000),
                                       raise_errors=False)
    _raise_refusals("grow", ((r.name, r.error_code) for r in response.results))


def _raise_refusals(verb: str, outcomes: Iterable[tuple[str, int]]) -> None:
    refused = {name: for_code(code).__name__ for name, code in outcomes
               if code not in _BENIGN_CODES}
    if refused:
        message = f"Kafka refused to {verb} topics: {refused}"
        raise BrokerError(message)


def _wait_ready(
    admin: KafkaAdminClient, topics: Mapping[str, int], deadline: float, timeout_s: float
) -> None:
    while True:
        pending = _not_ready(_describe(admin, topics), topics)
        if not pending:
            return
        if time.monotonic() >= deadline:
            message = f"topics not ready after {timeout_s:g} s: {pending}"
            raise BrokerError(message)
        time.sleep(0.1)


def _not_ready(
    described: Mapping[str, dict[str, Any]], topics: Mapping[str, int]
) -> dict[str, str]:
    pending: dict[str, str] = {}
    for name, wanted in topics.items():
        partitions = (described.get(name) or {}).get("partitions") or []
        leaders = sum(1 for p in partitions if p.get("leader_id", -1) >= 0)
        if name not in described:
            pending[name] = "missing"
        elif len(partitions) < wanted or leaders < len(partitions):
            pending[name] = f"{leaders} of {wanted} partitions have a leader"
    return pending
