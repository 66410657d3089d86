"""What each agent does with a batch of raw records: decode, call pure code, say what to emit.

These functions are synchronous and do no I/O: they return the records to send and the
table changes to write, and the agents in ``streams/app.py`` do the sending. Tests drive
them directly with fake events.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from detectors.incidents import Alert, IncidentManager
from detectors.monitor import SEPARATOR, Monitor
from detectors.verdicts import CampaignVerdict
from streams.early import PREFIX as EARLY_PREFIX
from streams.early import EarlyOrders
from streams.errors import InvalidRecord
from streams.metrics import Metrics
from streams.pipeline import TickAssembler, apply_fact
from streams.records import SessionFact, parse_beacon, parse_order
from streams.sessions import Sessionizer
from streams.watermark import InputWatermarks


class EventLike(Protocol):
    """What we read of a Faust event: ``value`` bytes and ``message.topic/partition``."""

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


def dead_letter(out: Out, topics: Topics, topic: str, raw: bytes, exc: InvalidRecord, *,
                metrics: Metrics) -> None:
    out.send(topics.dead_letter, None, orjson.dumps(exc.to_dead_letter(topic, raw)))
    metrics.count_dead_letter(topic, exc.reason)


IDLE_S = 15.0


def _source_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _watermarks() -> InputWatermarks:
    return InputWatermarks(idle_s=IDLE_S, clock=time.monotonic)


@dataclass
class SessionStage:
    """rum-beacons + orders -> session facts (key campaign) and session-table changes.

    The watermark is the latest arrival time of the slowest active input partition (of
    ``rum-beacons`` and ``orders`` alike), less the allowed lateness: when one topic is read
    ahead of the other (a backlog after a restart), sessions wait for their orders instead
    of looking unconverted; orders read far ahead of the watermark wait in ``early``.
    Heartbeats name this worker as their source, so the campaign stage can wait for the
    slowest sessionizer.
    """

    sessionizer: Sessionizer
    topics: Topics
    metrics: Metrics
    lateness_ms: int = 30_000
    partitions: dict[str, int] = field(default_factory=dict)
    watermarks: InputWatermarks = field(default_factory=_watermarks)
    source: str = field(default_factory=_source_id)
    early: EarlyOrders = field(default_factory=EarlyOrders)

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        facts: list[SessionFact] = []
        for event in events:
            facts.extend(self._one(event, out))
        watermark = self.watermarks.value()
        to_ms = None if watermark is None else watermark - self.lateness_ms
        for order in self.early.release(to_ms):
            facts.extend(self.sessionizer.observe_order(order))
        facts.extend(self.sessionizer.advance(to_ms))
        for fact in facts:
            self._emit(fact, out)
        states, deleted = self.sessionizer.drain_changes()
        out.changes.update(states)
        out.changes.update(dict.fromkeys(deleted))
        out.changes.update(self.early.drain_changes())
        return out

    def _one(self, event: EventLike, out: Out) -> list[SessionFact]:
        raw: bytes = event.value
        topic: str = event.message.topic
        try:
            if topic == self.topics.orders:
                order = parse_order(raw)
                self.partitions[order.session_id] = event.message.partition
                arrival = order.ts if order.received_at is None else order.received_at
                self.watermarks.observe((topic, event.message.partition), arrival)
                self.metrics.count_orders("accepted")
                if self.early.is_early(order, self._watermark_ms()):
                    self.early.hold(order, event.message.partition)
                    return []
                return self.sessionizer.observe_order(order)
            beacon = parse_beacon(raw)
        except InvalidRecord as exc:
            dead_letter(out, self.topics, topic, raw, exc, metrics=self.metrics)
            return []
        self.partitions[beacon.session_id] = event.message.partition
        arrival = beacon.ts if beacon.received_at is None else beacon.received_at
        self.watermarks.observe((topic, event.message.partition), arrival)
        return self.sessionizer.observe_beacon(beacon)

    def _emit(self, fact: SessionFact, out: Out) -> None:
        value = fact.to_json()
        if fact.kind == "heartbeat":
            value = dataclasses.replace(fact, session_id=self.source).to_json()
            for partition in range(self.topics.facts_partitions):
                out.send(self.topics.facts, b"", value, partition)
        else:
            out.send(self.topics.facts, fact.campaign.encode(), value)

    def _watermark_ms(self) -> int | None:
        value = self.watermarks.value()
        return None if value is None else value - self.lateness_ms

    def partition_of(self, key: str) -> int | None:
        if key.startswith(EARLY_PREFIX):
            return self.early.partitions.pop(key, None)
        return self.partitions.get(key)


@dataclass
class CampaignStage:
    """Session facts -> per-campaign verdicts (key "site") and campaign-table changes."""

    monitor: Monitor
    topics: Topics
    metrics: Metrics
    partitions: dict[str, int] = field(default_factory=dict)
    latest: dict[str, CampaignVerdict] = field(default_factory=dict)
    watermarks: InputWatermarks = field(default_factory=_watermarks)

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        for event in events:
            try:
                fact = SessionFact.from_json(event.value)
            except InvalidRecord as exc:
                dead_letter(out, self.topics, self.topics.facts, event.value, exc,
                            metrics=self.metrics)
                continue
            if fact.kind == "heartbeat":
                # per (sessionizer, partition): partitions are read at different paces
                self.watermarks.observe((fact.session_id, event.message.partition),
                                        fact.watermark_ms)
            else:
                self.partitions[fact.campaign] = event.message.partition
            apply_fact(self.monitor, fact)
        watermark = self.watermarks.value()
        for verdict in [] if watermark is None else self.monitor.advance(watermark):
            self.latest[verdict.campaign] = verdict
            out.send(self.topics.verdicts, b"site", orjson.dumps(verdict.to_state(),
                     option=orjson.OPT_SERIALIZE_NUMPY), 0)
        for name in [n for n in self.latest if n not in self.monitor.models]:
            del self.latest[name]
        out.changes.update(self.monitor.drain_changes())
        return out

    def partition_of(self, key: str) -> int | None:
        return self.partitions.get(key.rpartition(SEPARATOR)[0])


@dataclass
class IncidentStage:
    """Verdicts of every campaign -> alerts (key campaign) and the incident state."""

    manager: IncidentManager
    topics: Topics
    metrics: Metrics
    assembler: TickAssembler = field(default_factory=TickAssembler)

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        for event in events:
            try:
                verdict = CampaignVerdict.from_state(orjson.loads(event.value))
            except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
                error = InvalidRecord(f"not a verdict: {exc}")
                dead_letter(out, self.topics, self.topics.verdicts, event.value, error,
                            metrics=self.metrics)
                continue
            for tick, verdicts in self.assembler.add(verdict):
                out.alerts.extend(self.manager.process_tick(tick, verdicts))
        for alert in out.alerts:
            out.send(self.topics.alerts, alert.campaign.encode(), orjson.dumps(alert.to_dict()))
        if events:
            out.changes["site"] = self.manager.to_state()
        return out


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
