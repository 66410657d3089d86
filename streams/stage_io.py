"""What the stages read and write: Faust events as they see them, and what a batch emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from detectors.incidents import Alert
from streams.errors import InvalidRecord
from streams.metrics import Metrics


class EventLike(Protocol):
    """What we read of a Faust event: ``value`` bytes and ``message.topic/partition``."""

    @property
    def key(self) -> Any: ...
    @property
    def value(self) -> Any: ...
    @property
    def message(self) -> Any: ...


@dataclass
class Out:
    """What a batch produced: records per topic (key, value, partition) and table changes."""

    records: list[tuple[str, bytes | None, bytes, int | None]] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
             ) -> None:
        self.records.append((topic, key, value, partition))


@dataclass
class Topics:
    beacons: str
    orders: str
    facts: str
    verdicts: str
    alerts: str
    dead_letter: str
    facts_partitions: int


def dead_letter(out: Out, topics: Topics, event: EventLike, exc: InvalidRecord, *,
                metrics: Metrics, raw: bytes | None = None) -> None:
    """Send the record (or ``raw``, a part of it) to the dead-letter topic under the key it
    came with (CONTRACT.md)."""
    topic: str = event.message.topic
    key = getattr(event, "key", None)
    key = key if isinstance(key, bytes) else None
    value = event.value if raw is None else raw
    out.send(topics.dead_letter, key, orjson.dumps(exc.to_dead_letter(topic, value)))
    metrics.count_dead_letter(topic, exc.reason)
