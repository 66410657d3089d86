"""What each agent does with a batch of raw records: decode, call pure code, say what to emit.

These functions are synchronous and do no I/O: they return the records to send and the
table changes to write, and the agents in ``streams/app.py`` do the sending. Tests drive
them directly with fake events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from detectors.buckets import minute_of
from detectors.incidents import Alert, IncidentManager
from detectors.monitor import SEPARATOR, Monitor
from detectors.verdicts import CampaignVerdict
from streams.early import PREFIX as EARLY_PREFIX
from streams.early import EarlyOrders
from streams.errors import InvalidRecord
from streams.facts_codec import decode_facts, encode_facts
from streams.metrics import Metrics
from streams.pipeline import TickAssembler, apply_fact
from streams.records import SessionFact, parse_beacon, parse_order
from streams.sessions import NO_WATERMARK, Sessionizer
from streams.watermark import InputWatermarks


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
    bots_counted: int = 0
    _expired: list[str] = field(default_factory=list)
    # input partitions assigned by the last rebalance and not read since: until each is
    # read (or IDLE_S passed), the watermark waits, so a partition read ahead of a backlog
    # cannot make the others' records late
    waiting: dict[tuple[str, int], float] = field(default_factory=dict)

    def expect(self, sources: Iterable[tuple[str, int]]) -> None:
        """After a rebalance: hold the watermark until each of ``sources`` is read."""
        deadline = time.monotonic() + IDLE_S
        self.waiting = dict.fromkeys(sources, deadline)

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        facts: list[SessionFact] = self._prime(events)
        for event in events:
            facts.extend(self._one(event, out))
        to_ms = self._watermark_ms()
        for order in self.early.release(to_ms):
            facts.extend(self.sessionizer.observe_order(order))
        facts.extend(self.sessionizer.advance(to_ms))
        self._emit(facts, out)
        states, deleted = self.sessionizer.drain_changes()
        out.changes.update(states)
        out.changes.update(dict.fromkeys(deleted))
        self._expired = deleted
        out.changes.update(self.early.drain_changes())
        self._count_bots()
        return out

    def prune(self) -> None:
        """Forget the partitions of expired sessions (after their deletes were written)."""
        for session_id in self._expired:
            self.partitions.pop(session_id, None)
        self._expired = []

    def _count_bots(self) -> None:
        bots = self.sessionizer.stats.bot_sessions
        if bots > self.bots_counted:
            self.metrics.count_sessions(bots - self.bots_counted, bot=True)
        self.bots_counted = bots

    def _prime(self, events: Sequence[EventLike]) -> list[SessionFact]:
        """Give a sessionizer with no watermark yet (first batch, empty table) a start.

        Without it the sessions of the first batch would record "no time" as their last
        activity and expire at the first advance, and their next beacons would start a
        second session (a second session fact) under another campaign. The start is the
        batch's earliest arrival less the lateness, so no record of the batch is late. (A
        restart restores the watermark from the table instead: see ``streams/app.py``.)
        """
        if self.sessionizer.watermark_ms != NO_WATERMARK:
            return []
        arrivals: list[int] = []
        for event in events:
            with contextlib.suppress(InvalidRecord):
                record = parse_order(event.value) if event.message.topic == self.topics.orders \
                    else parse_beacon(event.value)
                arrivals.append(record.ts if record.received_at is None else record.received_at)
        if not arrivals:
            return []
        primed = self.sessionizer.advance(min(arrivals) - self.lateness_ms)
        return [fact for fact in primed if fact.kind != "heartbeat"]  # the batch sends one

    def _one(self, event: EventLike, out: Out) -> list[SessionFact]:
        raw: bytes = event.value or b""  # a tombstone (null value) is just unreadable
        topic: str = event.message.topic
        orders = topic == self.topics.orders
        try:
            if orders:
                order = parse_order(raw)
                self.partitions[order.session_id] = event.message.partition
                arrival = order.ts if order.received_at is None else order.received_at
                self._observe((topic, event.message.partition), arrival)
                self.metrics.count_orders("accepted")
                if self.early.is_early(order, self._watermark_ms()):
                    self.early.hold(order, event.message.partition)
                    return []
                return self.sessionizer.observe_order(order)
            beacon = parse_beacon(raw)
        except InvalidRecord as exc:
            dead_letter(out, self.topics, event, exc, metrics=self.metrics)
            if orders:
                self.metrics.count_orders("invalid")
            else:
                self.metrics.count_beacons("topic", "invalid")
            return []
        self.metrics.count_beacons("topic", "accepted")
        self.partitions[beacon.session_id] = event.message.partition
        arrival = beacon.ts if beacon.received_at is None else beacon.received_at
        self._observe((topic, event.message.partition), arrival)
        return self.sessionizer.observe_beacon(beacon)

    def _emit(self, facts: list[SessionFact], out: Out) -> None:
        """One record per campaign (a list of its facts, in order), then the heartbeats.

        A heartbeat ends ``advance``'s facts, so every fact of the batch is sent before it,
        as when each fact was its own record.
        """
        by_campaign: dict[str, list[SessionFact]] = {}
        beats: list[SessionFact] = []
        for fact in facts:
            if fact.kind == "heartbeat":
                beats.append(dataclasses.replace(fact, session_id=self.source))
                continue
            if fact.kind == "session":
                self.metrics.count_sessions()
            by_campaign.setdefault(fact.campaign, []).append(fact)
        for campaign, group in by_campaign.items():
            for value in encode_facts(group):
                out.send(self.topics.facts, campaign.encode(), value)
        for beat in beats:
            value = next(encode_facts([beat]))
            for partition in range(self.topics.facts_partitions):
                out.send(self.topics.facts, b"", value, partition)

    def _observe(self, source: tuple[str, int], arrival_ms: int) -> None:
        self.watermarks.observe(source, arrival_ms)
        if self.waiting:
            self.waiting.pop(source, None)

    def _watermark_ms(self) -> int | None:
        if self.waiting:
            now = time.monotonic()
            self.waiting = {src: t for src, t in self.waiting.items() if t > now}
            if self.waiting:
                return None
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
    seen: dict[str, set[str]] = field(default_factory=dict)  # bucket key -> counted fact ids
    repeats: int = 0  # facts recognised as already counted
    _seen_changed: set[str] = field(default_factory=set)

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        for event in events:
            for fact in decode_facts(event.value or b""):
                if isinstance(fact, SessionFact):
                    self._apply(fact, event.message.partition)
                else:
                    dead_letter(out, self.topics, event, fact[1], metrics=self.metrics,
                                raw=fact[0])
        watermark = self.watermarks.value()
        for verdict in [] if watermark is None else self.monitor.advance(watermark):
            self.latest[verdict.campaign] = verdict
            out.send(self.topics.verdicts, b"site", orjson.dumps(verdict.to_state(),
                     option=orjson.OPT_SERIALIZE_NUMPY), 0)
        for name in [n for n in self.latest if n not in self.monitor.models]:
            del self.latest[name]
        out.changes.update(self._with_seen(self.monitor.drain_changes()))
        return out

    def _apply(self, fact: SessionFact, partition: int) -> None:
        if fact.kind == "heartbeat":
            # per (sessionizer, partition): partitions are read at different paces
            self.watermarks.observe((fact.session_id, partition), fact.watermark_ms)
            apply_fact(self.monitor, fact)
        else:
            # (other) takes the partition of its first fact: one owner per worker
            self.partitions.setdefault(self.monitor.name_of(fact.campaign), partition)
            self._apply_once(fact)

    def _apply_once(self, fact: SessionFact) -> None:
        """Apply a session or order fact unless its minute bucket already counted it.

        Facts are sent at least once: a sessionizer that crashed between sending facts and
        saving its state sends them again, and this stage re-reads the facts after its last
        commit when it restarts. The ids a bucket has counted are saved in the bucket's own
        table row, so a row and its ids are always recovered together.
        """
        key = f"{fact.campaign}{SEPARATOR}{minute_of(fact.start_ms)}"
        ident = fact.session_id if fact.kind == "session" else f"o:{fact.order_id}"
        seen = self.seen.get(key)
        if seen is not None and ident in seen:
            self.repeats += 1
            return
        apply_fact(self.monitor, fact)
        model = self.monitor.models.get(fact.campaign)
        if model is not None and model.ring.get(minute_of(fact.start_ms)) is not None:
            self.seen.setdefault(key, set()).add(ident)
            self._seen_changed.add(key)

    def _with_seen(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Bucket rows as ``{"v": bucket, "ids": counted fact ids}``; other rows unchanged."""
        for key in self._seen_changed - changes.keys():
            name, _, minute = key.rpartition(SEPARATOR)
            bucket = self.monitor.models[name].ring.get(int(minute)) \
                if name in self.monitor.models else None
            changes[key] = None if bucket is None else bucket.to_state()
        self._seen_changed.clear()
        for key, value in changes.items():
            if _is_bucket_key(key):
                if value is None:
                    self.seen.pop(key, None)
                else:
                    changes[key] = {"v": value, "ids": sorted(self.seen.get(key, ()))}
        return changes

    def restore(self, items: Iterable[tuple[str, Any]]) -> None:
        """Rebuild the monitor and the counted ids from table rows (after a rebalance)."""
        plain: list[tuple[str, Any]] = []
        self.seen, self.partitions = {}, {}
        for key, value in items:
            wrapped = _is_bucket_key(key) and isinstance(value, dict)
            if wrapped:
                self.seen[key] = set(value["ids"])
            plain.append((key, value["v"] if wrapped else value))
        monitor = Monitor(self.monitor.params)
        monitor.restore(plain)
        self.monitor = monitor

    def partition_of(self, key: str) -> int | None:
        return self.partitions.get(key.rpartition(SEPARATOR)[0])

    def prune(self) -> None:
        """Forget the partitions of evicted campaigns (after their deletes were written)."""
        for name in [n for n in self.partitions if n not in self.monitor.models]:
            del self.partitions[name]


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
                verdict = CampaignVerdict.from_state(orjson.loads(event.value or b""))
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
                error = InvalidRecord(f"not a verdict: {exc}")
                dead_letter(out, self.topics, event, error, metrics=self.metrics)
                continue
            for tick, verdicts in self.assembler.add(verdict):
                out.alerts.extend(self.manager.process_tick(tick, verdicts))
        for alert in out.alerts:
            out.send(self.topics.alerts, alert.campaign.encode(), orjson.dumps(alert.to_dict()))
        if events:
            out.changes["site"] = self.manager.to_state()
        return out


def _is_bucket_key(key: str) -> bool:
    """``campaign|<minute ms>`` (a minute bucket), not ``campaign|model``."""
    return key.rpartition(SEPARATOR)[2].lstrip("-").isdigit()


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
