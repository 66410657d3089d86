"""The Faust app: topics, tables, the three agents, and the HTTP endpoints of a worker.

Agents are thin: they hand a batch to a stage (``streams/stages.py``), send what it returns
and write its table changes. Every worker serves the collector, ``/metrics``,
``/campaigns``, ``/healthz`` and ``/readyz``. Scale out by starting more workers: Faust
spreads the partitions of the consumer group; each piece of state has one owner.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry

from detectors.incidents import IncidentManager
from detectors.monitor import SEPARATOR
from streams.consumer_io import (
    assigned_partitions,
    committed_probe,
    fetch_again,
    highwater_probe,
    read_again,
)
from streams.continuity import OffsetGuard
from streams.delivery import Dispatcher
from streams.fast_drain import install as install_fast_drain
from streams.faust_sensor import FaustCollector, LeanMonitor
from streams.fence import WriteFence, fenced_longer
from streams.health import campaigns_view
from streams.metrics import Metrics
from streams.pipeline import TickAssembler, incident_params
from streams.receivers import receivers_from_settings
from streams.session_stage import Backlog
from streams.session_state import SessionParams
from streams.settings import Settings
from streams.sink import KafkaSink
from streams.stages import CampaignStage, IncidentStage, Out, SessionStage, Topics, sharing_monitor
from streams.tables import changelog_topic, key_partitions, table_items, write_changes
from streams.web_routes import install_routes

BATCH = 1000
WITHIN_S = 0.5
SESSION_TIMEOUT_S = 10.0
IDLE_TICK_S = 5.0
SEND_WAIT_S = 30.0
FENCED_S = 30.0  # a fence closed longer than this is reported
log = logging.getLogger(__name__)
# The source topics of each table: a table partition is owned with its topics' partition.
TABLE_SOURCES = {"sessions": "source", "campaigns": "facts", "incidents": "verdicts"}


@dataclass
class Runtime:
    """One worker: the Faust app and the live objects its agents and views share."""

    settings: Settings
    app: faust.App
    registry: CollectorRegistry
    metrics: Metrics
    sessions: SessionStage
    campaigns: CampaignStage
    incidents: IncidentStage
    sink: KafkaSink
    dispatcher: Dispatcher
    topics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    recovered: bool = False
    reloads: dict[str, int] = field(default_factory=dict)  # per table: times rebuilt
    # one batch at a time per stage (the agent's and the idle timer's), none from a
    # revocation until the stage is rebuilt from its recovered table (streams/fence.py)
    fences: dict[str, WriteFence] = field(
        default_factory=lambda: {name: WriteFence() for name in TABLE_SOURCES})
    # per stage: the next input offset expected, so no record is jumped over
    # (streams/continuity.py); made in create_app (they ask the consumer)
    guards: dict[str, OffsetGuard] = field(default_factory=dict)


def topics_of(settings: Settings) -> Topics:
    return Topics(settings.beacons_topic, settings.orders_topic, settings.facts_topic,
                  settings.verdicts_topic, settings.alerts_topic, settings.dead_letter_topic,
                  settings.partitions)


def create_app(settings: Settings) -> Runtime:
    """Build a worker's app. Nothing connects until the worker starts."""
    app = faust.App(
        settings.app_id, broker=settings.broker, store="memory://",
        web_port=settings.web_port, web_bind=settings.web_host, web_host=settings.web_host,
        datadir=str(settings.data_dir / "faust"), topic_partitions=settings.partitions,
        table_standby_replicas=0, stream_wait_empty=False, consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0, producer_linger=0.005, web_cors_options=None,
        # A worker that dies is out of the group after 10 s (Faust's default 60 s held its
        # partitions, and a restarted worker's, for a minute); heartbeats every second.
        broker_session_timeout=SESSION_TIMEOUT_S, broker_heartbeat_interval=1.0,
    )
    registry = CollectorRegistry(auto_describe=True)
    metrics = Metrics(registry, max_campaign_labels=settings.max_campaign_labels)
    # Faust's figures from plain counters read at scrape time (its Prometheus sensor
    # updated labelled counters per event: ~7% of the worker's time)
    app.monitor = monitor = LeanMonitor()
    install_fast_drain(app)  # one task-free callback per message (streams/fast_drain.py)
    registry.register(FaustCollector(monitor, name_prefix="revwatch_faust"))
    names = topics_of(settings)
    rt = Runtime(
        settings, app, registry, metrics,
        SessionStage(SessionParams.from_settings(settings), names, metrics,
                     lateness_ms=int(settings.allowed_lateness_seconds * 1000)),
        CampaignStage(sharing_monitor(settings.partitions), names, metrics),
        IncidentStage(IncidentManager(incident_params(settings)), names, metrics),
        KafkaSink(settings), Dispatcher(receivers_from_settings(settings),
                                        queue_max=settings.delivery_queue_max,
                                        on_outcome=metrics.count_delivery,
                                        on_queue_depth=metrics.set_delivery_queue_depth))
    rt.sessions.backlog = _backlog_probe(rt)
    rt.guards = {name: OffsetGuard(committed_probe(app)) for name in TABLE_SOURCES}
    _declare(rt)
    _agents(rt)
    install_routes(rt)
    _lifecycle(rt)
    return rt


def _backlog_probe(rt: Runtime) -> Backlog:
    """Whether the consumer knows of records of a partition not processed yet.

    The high-water mark comes with every fetch response; until the first one after an
    assignment it is unknown, which counts as "may be behind". A task that processed
    nothing yet is compared from the group's committed offset.
    """
    def backlog(topic: str, partition: int, processed: int | None) -> bool:
        consumer = rt.app.consumer
        tp = TP(topic, partition)
        try:
            high = consumer.highwater(tp)
        except Exception:  # not assigned (any more), or no consumer yet
            return True
        if high is None:
            return True
        if processed is None:
            committed = getattr(consumer, "_committed_offset", {}).get(tp)
            return (committed or 0) < high
        return processed + 1 < high
    return backlog


def _raw_topic(app: faust.App, *names: str, partitions: int | None = None) -> Any:
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions)


def _declare(rt: Runtime) -> None:
    s, app = rt.settings, rt.app
    facts = _raw_topic(app, s.facts_topic, partitions=s.partitions)
    verdicts = _raw_topic(app, s.verdicts_topic, partitions=1)
    rt.topics = {
        "source": _raw_topic(app, s.beacons_topic, s.orders_topic),
        "facts": facts, s.facts_topic: facts, "verdicts": verdicts, s.verdicts_topic: verdicts,
        s.alerts_topic: _raw_topic(app, s.alerts_topic, partitions=s.partitions),
        s.dead_letter_topic: _raw_topic(app, s.dead_letter_topic),
    }
    for name, partitions in (("sessions", s.partitions), ("campaigns", s.partitions),
                             ("incidents", 1)):
        rt.tables[name] = app.Table(name, default=None, partitions=partitions, key_type=str)
    rt.tables["sessions"].on_recover(_reloader(rt, "sessions"))
    rt.tables["campaigns"].on_recover(_reloader(rt, "campaigns"))
    rt.tables["incidents"].on_recover(_reloader(rt, "incidents"))


def _reloader(rt: Runtime, name: str) -> Any:
    """The table's recover callback: rebuild the stage, then let its batches run again."""
    async def reload() -> None:
        try:
            _reload(rt, name)
        except Exception:  # Faust keeps a recover callback's error to itself
            log.exception("%s: rebuilding the stage from its recovered table failed", name)
            raise
        fence = rt.fences.get(name)
        if fence is not None:
            fence.open()
    return reload


async def _fence_stages(rt: Runtime) -> None:
    """At a revocation: stop the stages' batches, wait for the one under way, and flush the
    producer, so every state row this worker wrote is in the changelog before it rejoins
    the group (below the high-water marks any recovery reads, its own or a new owner's)."""
    for fence in rt.fences.values():
        fence.close()
    for fence in rt.fences.values():
        await fence.drain()
    await rt.app.producer.flush()


def _reload(rt: Runtime, name: str) -> None:
    """Rebuild a stage's live objects from its table: only the partitions now owned."""
    table = rt.tables[name]
    items = table_items(table)
    if name == "sessions":
        rt.sessions.restore(items, key_partitions(table), _owned(rt, "sessions"))
    elif name == "campaigns":
        rt.campaigns.restore(items)
        rt.campaigns.partitions = {key.rpartition(SEPARATOR)[0]: partition
                                   for key, partition in key_partitions(table).items()}
    else:
        state = dict(items).get("site")
        params = incident_params(rt.settings)
        if state is None:  # the partition is not ours (any more), nor are its open alerts
            rt.incidents.manager = IncidentManager(params)
            rt.incidents.assembler = TickAssembler()
        else:
            rt.incidents.manager = IncidentManager.from_state(state, params)
    guard = rt.guards.get(name)
    if guard is not None:
        owned = _owned(rt, name)
        guard.keep_only((topic, p) for topic in rt.topics[TABLE_SOURCES[name]].topics
                        for p in owned)
    rt.reloads[name] = rt.reloads.get(name, 0) + 1
    rt.recovered = True


async def _send(rt: Runtime, out: Out, table: str, partition_of: Any) -> None:
    """Send a batch's records, then write its table changes, then hand over its alerts.

    The records are acknowledged before the state that says they were sent is written: a
    crash in between sends them again (the next stage recognises repeats) instead of
    losing them. If a rebalance rebuilt the stage meanwhile, the changes are written for
    the partitions still owned and the stage is rebuilt again from the table. Everything
    goes straight to the app's producer, which the consumer flushes before it commits.
    """
    reloads = rt.reloads.get(table, 0)
    sent = [await _produce(rt, topic, key, value, partition)
            for topic, key, value, partition in out.records]
    if sent and out.changes:
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*sent)), SEND_WAIT_S)
        except TimeoutError:  # never stall the agent: write the state (at most this batch late)
            log.warning("%s: records not acknowledged after %.0f s; writing the state anyway",
                        table, SEND_WAIT_S)
    owned = None if rt.reloads.get(table, 0) == reloads else _owned(rt, table)
    changelog = changelog_topic(rt.tables[table])
    for partition, key, value in write_changes(rt.tables[table], out.changes, partition_of,
                                               owned=owned):
        (await _produce(rt, changelog, key, value, partition)).add_done_callback(_check_sent)
    if owned is not None:
        _reload(rt, table)
    for alert in out.alerts:
        rt.dispatcher.submit(alert.to_dict())
        rt.metrics.count_alert(alert.kind, alert.state)


async def _produce(rt: Runtime, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None) -> asyncio.Future[Any]:
    """Hand one record to the producer; the future is done once the broker acknowledged it.

    Counted in Faust's sent and send-error figures (``revwatch_faust_total_sent_messages``),
    which Faust's own send path would have counted.
    """
    future = cast(asyncio.Future[Any], await rt.app.producer.send(
        topic, key, value, partition, None, None))
    monitor = cast(LeanMonitor, rt.app.monitor)
    monitor.messages_sent += 1
    future.add_done_callback(monitor.count_send_outcome)
    return future


def _check_sent(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a changelog record was not written: %r", future.exception())


def _owned(rt: Runtime, table: str) -> set[int]:
    names = set(rt.topics[TABLE_SOURCES[table]].topics)
    return {tp.partition for tp in rt.app.assignor.assigned_actives() if tp.topic in names}


async def sessions_batch(rt: Runtime, events: Any) -> None:
    """One batch of rum-beacons and orders through the session stage (agent and idle timer)."""
    await _stage_batch(rt, "sessions", rt.sessions, events)
    rt.metrics.set_event_lag(rt.settings.beacons_topic, rt.sessions.lag_s())


async def campaigns_batch(rt: Runtime, events: Any) -> None:
    """One batch of session facts through the campaign stage (agent and idle timer)."""
    await _stage_batch(rt, "campaigns", rt.campaigns, events)
    rt.metrics.set_campaign_health(campaigns_view(rt).health_rows())


async def _stage_batch(rt: Runtime, name: str, stage: SessionStage | CampaignStage,
                       events: Any) -> None:
    """In the stage's fence: keep our records, seek back, run, send, write the table."""
    async with rt.fences[name].batch():
        events, seeks = _guarded(rt, name, _owned_events(rt, name, events))
        await read_again(rt.app, seeks)
        out = stage.batch(events)
        await _send(rt, out, name, stage.partition_of)
        stage.prune()


def _guarded(rt: Runtime, table: str, events: Any) -> tuple[Any, dict[tuple[str, int], int]]:
    """The events to process, and the partitions to seek: skipped, overdue or stalled."""
    guard = rt.guards.get(table)
    if guard is None:
        return events, {}
    kept, seeks = guard.check(events) if events else (events, {})
    names = set(rt.topics[TABLE_SOURCES[table]].topics)
    keys = [(tp.topic, tp.partition) for tp in assigned_partitions(rt.app) if tp.topic in names]
    stalled = guard.stalled(keys, highwater_probe(rt.app))
    fetch_again(rt.app, stalled)
    return kept, {**guard.overdue(), **stalled, **seeks}


def _owned_events(rt: Runtime, table: str, events: Any) -> Any:
    """The events of partitions this worker owns: a batch taken before a revocation may hold
    records of partitions now another worker's (it reads them again from their offsets)."""
    if not events:
        return events
    owned = _owned(rt, table)
    kept = [event for event in events if event.message.partition in owned]
    if len(kept) < len(events):
        log.warning("%s: %d records of partitions %s, not ours, left to their owner", table,
                    len(events) - len(kept),
                    sorted({e.message.partition for e in events} - owned))
    return kept


def _agents(rt: Runtime) -> None:
    @rt.app.agent(rt.topics["source"], name="sessionize")
    async def sessionize(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=WITHIN_S):
            await sessions_batch(rt, events)

    @rt.app.agent(rt.topics["facts"], name="campaigns")
    async def campaigns(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=WITHIN_S):
            await campaigns_batch(rt, events)

    held = 0  # idle ticks in a row that could not run

    async def idle_tick() -> None:
        """Let watermarks move on when inputs fall quiet (they are re-read only per batch).

        An input silent for ``IDLE_S`` stops holding its stage's watermark back, but only a
        batch looks again; without this the last minutes before a pause (or the heartbeats
        of a worker that died) would wait for the next record."""
        nonlocal held
        _warn_if_fenced(rt)
        if rt.recovered and not rt.app.rebalancing and all(
                fence.is_open for fence in rt.fences.values()):
            held = 0
            await sessions_batch(rt, [])
            await campaigns_batch(rt, [])
            return
        held += 1
        if held * IDLE_TICK_S % FENCED_S == 0:
            log.warning("idle timer held %.0f s: recovered %s, rebalancing %s",
                        held * IDLE_TICK_S, rt.recovered, rt.app.rebalancing)

    cast(Any, rt.app).timer(IDLE_TICK_S)(idle_tick)

    @rt.app.agent(rt.topics["verdicts"], name="incidents")
    async def incidents(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=WITHIN_S):
            async with rt.fences["incidents"].batch():
                before = rt.incidents.manager.open_alerts()
                out = rt.incidents.batch(_owned_events(rt, "incidents", events))
                await _send(rt, out, "incidents", lambda _key: 0)
                after = rt.incidents.manager.open_alerts()
                rt.metrics.set_alerts_firing((a.campaign, a.kind) for a in after)
                rt.metrics.count_revenue_lost(before, out.alerts, after)


def _warn_if_fenced(rt: Runtime) -> None:
    """A stage fenced for long is stalled: say so, with what it waits for."""
    if late := fenced_longer(rt.fences, FENCED_S):
        log.warning("stages fenced for %s s since a revocation: rebalancing %s, in recovery %s,"
                    " reloads %s", late, rt.app.rebalancing,
                    getattr(rt.app, "in_recovery", None), rt.reloads)


def _lifecycle(rt: Runtime) -> None:
    async def start_delivery() -> None:
        await rt.sink.start()
        await rt.dispatcher.start()

    async def stop_delivery(app: Any, **_: Any) -> None:
        await rt.sink.stop(5.0)
        await rt.dispatcher.stop(5.0)

    async def gauges() -> None:
        rt.metrics.set_collector_buffered(rt.sink.buffered)

    async def on_revoked(app: Any, revoked: Any, **_: Any) -> None:
        await _fence_stages(rt)

    rt.app.task(start_delivery)
    rt.app.timer(interval=5.0)(gauges)
    cast(Any, rt.app.on_before_shutdown).connect(stop_delivery)
    cast(Any, rt.app.on_partitions_revoked).connect(on_revoked)
