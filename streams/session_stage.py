"""The session stage: rum-beacons + orders -> session facts, one event time per partition.

Beacons and orders are keyed by session id on topics with the same partition count, so
partition ``p`` of both holds every record of its sessions (Faust assigns co-partitioned
topics together). As in Kafka Streams, where stream time is kept per task, each input
partition has its own :class:`PartitionTask`: its own sessionizer, watermark and held
orders. A partition read behind the others (a worker's partitions taken over after it
died, a backlog after a restart) is judged on its own clock: its sessions are neither
expired early nor dropped as "late" because other partitions are further on.

A task whose inputs have all fallen silent for ``idle_s`` of wall time (a quiet partition)
follows the slowest active task, so its last sessions are still judged; when every task is
silent they all follow the furthest one (as :class:`~streams.watermark.InputWatermarks`
does for its inputs). Silence alone is not enough: a partition whose records are known to
be waiting (the consumer's high-water mark is past the last offset processed, or not known
yet) is behind, not quiet, and keeps its own clock, as Kafka Streams waits for a partition
with known lag instead of "enforcing processing". Without this, a partition held back by a
rebalance or a paused fetch would jump to the others' event time, and its backlog would
be judged late.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.early import PREFIX as EARLY_PREFIX
from streams.early import EarlyOrders
from streams.errors import InvalidRecord
from streams.facts_codec import encode_facts
from streams.metrics import Metrics
from streams.records import SessionFact, parse_beacon, parse_order
from streams.session_state import SessionParams
from streams.sessions import NO_WATERMARK, Sessionizer
from streams.stage_io import EventLike, Out, Topics, dead_letter
from streams.watermark import InputWatermarks

log = logging.getLogger(__name__)

IDLE_S = 15.0
FOLLOW_WARN_MS = 5 * 60_000  # a quiet task's clock jumping this far is worth a log line

# (topic, partition, last offset processed or None) -> may records be waiting to be read?
Backlog = Callable[[str, int, "int | None"], bool]


def _source_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def no_backlog(topic: str, partition: int, processed: int | None) -> bool:
    """Without a consumer to ask (replay, tests): silence alone makes a partition quiet."""
    return False


@dataclass
class PartitionTask:
    """The sessions of input partition ``p`` (of rum-beacons and orders) on their own clock."""

    sessionizer: Sessionizer
    watermarks: InputWatermarks
    early: EarlyOrders = field(default_factory=EarlyOrders)
    # inputs not read since the task was rebuilt after a rebalance -> wall-clock deadline:
    # until each is read (or the deadline passed) the task's watermark waits
    waiting: dict[str, float] = field(default_factory=dict)
    bots_counted: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  # topic -> last offset processed

    def own_watermark(self, lateness_ms: int, now: float) -> int | None:
        """Where this task's inputs put event time (None: waiting, or nothing read yet)."""
        if self.waiting:
            self.waiting = {topic: t for topic, t in self.waiting.items() if t > now}
            if self.waiting:
                return None
        value = self.watermarks.value()
        return None if value is None else value - lateness_ms

    def observe(self, topic: str, arrival_ms: int) -> None:
        self.watermarks.observe(topic, arrival_ms)
        if self.waiting:
            self.waiting.pop(topic, None)

    def note_read(self, events: Sequence[EventLike]) -> None:
        """The last offset read of each input, from the batch's records of this partition
        (a partition's records come in offset order: only the last of each topic counts)."""
        latest: dict[str, int] = {}
        for event in reversed(events):
            latest.setdefault(event.message.topic, event.message.offset)
            if len(latest) == 2:  # beacons and orders
                break
        self.offsets.update(latest)


@dataclass
class SessionStage:
    """rum-beacons + orders -> session facts (key campaign) and session-table changes.

    Heartbeats name this worker and the input partition as their source, so the campaign
    stage waits for the slowest partition of the slowest sessionizer.
    """

    params: SessionParams
    topics: Topics
    metrics: Metrics
    lateness_ms: int = 30_000
    clock: Callable[[], float] = time.monotonic
    idle_s: float = IDLE_S
    source: str = field(default_factory=_source_id)
    backlog: Backlog = no_backlog
    tasks: dict[int, PartitionTask] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)  # table key -> partition
    _expired: list[str] = field(default_factory=list)

    # -- the batch ---------------------------------------------------------------------

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        facts: list[SessionFact] = []
        beats: dict[int, SessionFact] = {}  # the latest heartbeat of each task
        by_partition: dict[int, list[EventLike]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        for partition, group in by_partition.items():
            task = self.task(partition)
            self._split(partition, self._prime(task, group), facts, beats)
            for event in group:
                facts.extend(self._one(task, event, out))
            task.note_read(group)
        for partition, task, to_ms in self._targets():
            self._split(partition, self._advance(task, to_ms), facts, beats)
        self._emit(facts, list(beats.values()), out)
        for partition, task in self.tasks.items():
            self._drain(partition, task, out)
        return out

    def _split(self, partition: int, produced: list[SessionFact], facts: list[SessionFact],
               beats: dict[int, SessionFact]) -> None:
        for fact in produced:
            if fact.kind == "heartbeat":
                beats[partition] = dataclasses.replace(
                    fact, session_id=f"{self.source}/p{partition}")
            else:
                facts.append(fact)

    def task(self, partition: int) -> PartitionTask:
        """The task of ``partition`` (a fresh one the first time it is read)."""
        task = self.tasks.get(partition)
        if task is None:
            task = self.tasks[partition] = self._new_task()
        return task

    def _new_task(self) -> PartitionTask:
        return PartitionTask(Sessionizer(self.params, external_watermark=True),
                             InputWatermarks(idle_s=self.idle_s, clock=self.clock))

    def _targets(self) -> list[tuple[int, PartitionTask, int | None]]:
        """Each task with the watermark it advances to: its own, or the others' when idle."""
        now = self.clock()
        own = {p: t.own_watermark(self.lateness_ms, now) for p, t in self.tasks.items()}
        idle = {p for p, t in self.tasks.items() if not t.waiting and t.watermarks.idle()
                and not self._behind(p, t)}
        active = [w for p, w in own.items() if w is not None and p not in idle]
        known = [w for w in own.values() if w is not None]
        follow = min(active) if active else max(known, default=None)
        targets = []
        for partition in sorted(self.tasks):
            to_ms = own[partition]
            if partition in idle and follow is not None:
                to_ms = self._follow(partition, self.tasks[partition], to_ms, follow)
            targets.append((partition, self.tasks[partition], to_ms))
        return targets

    def _behind(self, partition: int, task: PartitionTask) -> bool:
        """Whether records of the task's inputs may still be waiting to be read."""
        return any(self.backlog(topic, partition, task.offsets.get(topic))
                   for topic in (self.topics.beacons, self.topics.orders))

    def _follow(self, partition: int, task: PartitionTask, own: int | None,
                follow: int) -> int:
        now_ms = task.sessionizer.watermark_ms
        if now_ms != NO_WATERMARK and follow - now_ms > FOLLOW_WARN_MS:
            log.warning("partition %d: quiet for %.0f s with nothing left to read; its event "
                        "time jumps %.1f min to follow the others", partition, self.idle_s,
                        (follow - now_ms) / 60_000)
        return follow if own is None else max(own, follow)

    def _advance(self, task: PartitionTask, to_ms: int | None) -> list[SessionFact]:
        facts: list[SessionFact] = []
        for order in task.early.release(to_ms):
            facts.extend(task.sessionizer.observe_order(order))
        facts.extend(task.sessionizer.advance(to_ms))
        return facts

    def _drain(self, partition: int, task: PartitionTask, out: Out) -> None:
        """The task's table changes, each key on the task's partition (a session opened by
        a held order after a restart has no record of its own that would name it)."""
        states, deleted = task.sessionizer.drain_changes()
        early = task.early.drain_changes()
        for key in (*states, *deleted, *early):
            self.partitions[key] = partition
        out.changes.update(states)
        out.changes.update(dict.fromkeys(deleted))
        out.changes.update(early)
        self._expired.extend(deleted)
        self._expired.extend(key for key, value in early.items() if value is None)
        bots = task.sessionizer.stats.bot_sessions
        if bots > task.bots_counted:
            self.metrics.count_sessions(bots - task.bots_counted, bot=True)
        task.bots_counted = bots

    def _prime(self, task: PartitionTask, events: Sequence[EventLike]) -> list[SessionFact]:
        """Give a task with no watermark yet (first batch, empty table) a start.

        Without it the sessions of the first batch would record "no time" as their last
        activity and expire at the first advance, and their next beacons would start a
        second session (a second session fact) under another campaign. The start is the
        batch's earliest arrival less the lateness, so no record of the batch is late. (A
        restart restores the watermark from the table instead: see :meth:`restore`.)
        """
        if task.sessionizer.watermark_ms != NO_WATERMARK:
            return []
        arrivals: list[int] = []
        for event in events:
            with contextlib.suppress(InvalidRecord):
                record = parse_order(event.value) if event.message.topic == self.topics.orders \
                    else parse_beacon(event.value)
                arrivals.append(record.ts if record.received_at is None else record.received_at)
        if not arrivals:
            return []
        return task.sessionizer.advance(min(arrivals) - self.lateness_ms)

    def _one(self, task: PartitionTask, event: EventLike, out: Out) -> list[SessionFact]:
        raw: bytes = event.value or b""  # a tombstone (null value) is just unreadable
        topic: str = event.message.topic
        orders = topic == self.topics.orders
        try:
            if orders:
                order = parse_order(raw)
                task.observe(topic, order.ts if order.received_at is None else order.received_at)
                self.metrics.count_orders("accepted")
                if task.early.is_early(order, task.own_watermark(self.lateness_ms,
                                                                 self.clock())):
                    task.early.hold(order)
                    return []
                return task.sessionizer.observe_order(order)
            beacon = parse_beacon(raw)
        except InvalidRecord as exc:
            dead_letter(out, self.topics, event, exc, metrics=self.metrics)
            if orders:
                self.metrics.count_orders("invalid")
            else:
                self.metrics.count_beacons("topic", "invalid")
            return []
        self.metrics.count_beacons("topic", "accepted")
        task.observe(topic, beacon.ts if beacon.received_at is None else beacon.received_at)
        return task.sessionizer.observe_beacon(beacon)

    def _emit(self, facts: list[SessionFact], beats: list[SessionFact], out: Out) -> None:
        """One record per campaign (a list of its facts, in order), then the heartbeats.

        The heartbeats of a batch (one per task that entered a new minute) go to every
        facts partition after every fact of the batch, as one record per partition.
        """
        by_campaign: dict[str, list[SessionFact]] = {}
        for fact in facts:
            if fact.kind == "session":
                self.metrics.count_sessions()
            by_campaign.setdefault(fact.campaign, []).append(fact)
        for campaign, group in by_campaign.items():
            for value in encode_facts(group):
                out.send(self.topics.facts, campaign.encode(), value)
        for value in encode_facts(beats):
            for partition in range(self.topics.facts_partitions):
                out.send(self.topics.facts, b"", value, partition)

    # -- state -------------------------------------------------------------------------

    @property
    def watermark_ms(self) -> int:
        """The slowest task's watermark (``NO_WATERMARK`` before any)."""
        marks = [t.sessionizer.watermark_ms for t in self.tasks.values()
                 if t.sessionizer.watermark_ms != NO_WATERMARK]
        return min(marks, default=NO_WATERMARK)

    def lag_s(self) -> float:
        """Wall clock minus the watermark, in seconds (0 before any)."""
        watermark = self.watermark_ms
        return max(time.time() - watermark / 1000.0, 0.0) if watermark else 0.0

    def restore(self, items: Iterable[tuple[str, Any]], partitions: Mapping[str, int],
                owned: Iterable[int]) -> None:
        """Rebuild the tasks of the ``owned`` partitions from table rows (after a rebalance).

        A task keeps the watermark it had if this worker owned the partition before, else
        takes the latest activity its saved sessions show; it then waits until both of its
        inputs are read (or ``idle_s`` passed) before its event time moves.
        """
        owned = set(owned)
        rows: dict[int, list[tuple[str, Any]]] = {p: [] for p in owned}
        unplaced = 0
        for key, value in items:
            partition = partitions.get(key)
            if partition in rows:
                rows[partition].append((key, value))
            else:
                unplaced += 1
        if unplaced:
            log.warning("sessions table: %d rows of partitions not owned, not restored", unplaced)
        old, self.tasks = self.tasks, {}
        deadline = self.clock() + self.idle_s
        for partition in sorted(owned):
            self.tasks[partition] = self._restored(rows[partition], old.get(partition), deadline)
        self.partitions = {k: p for k, p in partitions.items() if p in owned}

    def _restored(self, rows: list[tuple[str, Any]], previous: PartitionTask | None,
                  deadline: float) -> PartitionTask:
        task = self._new_task()
        sessions = [(k, v) for k, v in rows if not k.startswith(EARLY_PREFIX)]
        saved = max((state["a"] for _, state in sessions), default=NO_WATERMARK)
        before = NO_WATERMARK if previous is None else previous.sessionizer.watermark_ms
        task.sessionizer.restore(sessions, max(before, saved))
        task.early.restore(rows)
        task.waiting = dict.fromkeys((self.topics.beacons, self.topics.orders), deadline)
        return task

    def prune(self) -> None:
        """Forget the partitions of expired sessions (after their deletes were written)."""
        for session_id in self._expired:
            self.partitions.pop(session_id, None)
        self._expired = []

    def partition_of(self, key: str) -> int | None:
        return self.partitions.get(key)
