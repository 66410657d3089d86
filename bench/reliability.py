"""Reliability under crashes (issue "Reliability", item 1): kill workers, compare the counts.

Plays a simulated shop (``streams.simulate.demo_scenario``: a warm-up, then a slowdown on
``spring_sale``) to Kafka at a steady pace, SIGKILLs the worker at random moments and
restarts it, then reads back what the run wrote and compares it with the same records run
offline through the same state machines (no Kafka, no kill):

* session facts and order facts on the facts topic: distinct ones must equal the offline
  ones; repeats (re-sent after a kill) are counted, as the campaign stage must recognise them;
* the campaigns table (its changelog, latest value per key): sessions and conversions per
  campaign summed over the minute buckets must equal the offline monitor's;
* alert episodes (distinct ``alert_id`` per campaign) must equal the offline ones.

The helpers here are shared by ``tests/integration/test_crash_recovery.py`` and
``test_failover.py``. As a script it prints a table of figures and writes
``bench/results/reliability.json``::

    .venv/bin/python bench/reliability.py --kills 0 3 6 --seconds 90
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

import streams.topics  # noqa: F401  (imports kafka-python quietly before aiokafka admin)
from detectors.buckets import MinuteBucket, minute_of
from detectors.incidents import IncidentManager
from detectors.monitor import MODEL_KEY, SEPARATOR, Monitor
from detectors.verdicts import CampaignVerdict
from streams.facts_codec import facts_of
from streams.feed import feed
from streams.pipeline import apply_fact, incident_params
from streams.records import SessionFact, beacon_from_dict, order_from_dict
from streams.sessions import Sessionizer
from streams.settings import Settings
from streams.simulate import demo_scenario, generate
from tests.integration.worker_harness import Message, TopicReader, Worker, produce

Record = tuple[str, dict[str, Any]]
TAIL_CAMPAIGN = "zz-reliability-tail"
OFFLINE_BATCH = 500
TAIL_AFTER_MS = 10 * 60_000


# -- records -------------------------------------------------------------------------------

def scenario_records(seed: int = 1, warmup_hours: float = 1.0, scale: float = 0.5
                     ) -> list[Record]:
    """The demo shop, shorter and at half traffic: about 34,000 records over 2 h of event time.

    Two hours fit in the campaign stage's minute buckets (it keeps 140 minutes), so the
    bucket totals compared cover the whole run, kills included.
    """
    return list(generate(dataclasses.replace(demo_scenario(seed, warmup_hours=warmup_hours),
                                             scale=scale)))


def tail_messages(settings: Settings, after_ms: int) -> list[Message]:
    """One beacon per input partition, ``after_ms`` of event time after the last record.

    Every input partition then shows the same latest time, so the streaming watermark ends
    where the offline one does, and the last sessions are judged the same way.
    """
    messages = []
    for partition in range(settings.partitions):
        sid = f"tail-{partition}-{after_ms}"
        beacon = {"beacon_id": f"{sid}-p0", "session_id": sid, "ts": after_ms,
                  "received_at": after_ms, "page_url": "https://shop.example/",
                  "campaign": TAIL_CAMPAIGN, "lcp_ms": 1000.0}
        messages.append(Message.of(settings.beacons_topic, beacon, sid, partition))
        order = {"order_id": f"{sid}-o", "session_id": sid, "ts": after_ms,
                 "received_at": after_ms, "revenue": 1.0, "campaign": TAIL_CAMPAIGN}
        messages.append(Message.of(settings.orders_topic, order, sid, partition))
    return messages


def tail_records(messages: Sequence[Message]) -> list[Record]:
    kinds = {m.topic: "beacon" if "beacons" in m.topic else "order" for m in messages}
    return [(kinds[m.topic], orjson.loads(m.value or b"{}")) for m in messages]


# -- what a run wrote ----------------------------------------------------------------------

@dataclass
class RunResult:
    """Facts, campaign counters and alerts of one run (offline or read back from Kafka)."""

    session_facts: Counter[str] = field(default_factory=Counter)  # id@start -> times sent
    order_facts: Counter[str] = field(default_factory=Counter)  # order id -> times sent
    campaign_of: dict[str, str] = field(default_factory=dict)  # id@start -> campaign
    retracted: set[str] = field(default_factory=set)  # id@start of sessions retracted
    order_retracts: Counter[str] = field(default_factory=Counter)  # order id -> 1 if retracted
    buckets: dict[str, list[int]] = field(default_factory=dict)  # campaign -> [sess, conv]
    episodes: dict[str, set[str]] = field(default_factory=dict)  # campaign -> alert ids
    alert_messages: int = 0
    duplicate_alerts: int = 0  # the same (alert_id, ts, state) sent more than once

    def add_fact(self, fact: SessionFact) -> None:
        if fact.campaign == TAIL_CAMPAIGN:
            return
        if fact.kind == "session":  # a session id may start a new session after expiry
            key = f"{fact.session_id}@{fact.start_ms}"
            self.session_facts[key] += 1
            self.campaign_of[key] = fact.campaign
        elif fact.kind == "order" and fact.order_id:
            self.order_facts[fact.order_id] += 1
        elif fact.kind == "retract":  # the session moved: its id@start is no longer counted
            if fact.order_id is None:
                self.retracted.add(f"{fact.session_id}@{fact.start_ms}")
            elif fact.order_id:  # re-sent under the new campaign: not a repeat
                self.order_retracts[fact.order_id] = 1

    def add_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        seen: Counter[tuple[str, int, str]] = Counter()
        for alert in alerts:
            self.alert_messages += 1
            self.episodes.setdefault(alert["campaign"], set()).add(alert["alert_id"])
            seen[(alert["alert_id"], alert["ts"], alert["state"])] += 1
        self.duplicate_alerts = sum(n - 1 for n in seen.values())

    @property
    def sessions(self) -> set[str]:
        """The id@start of the sessions counted (sent and not retracted)."""
        return set(self.session_facts) - self.retracted

    @property
    def resent_facts(self) -> int:
        """Facts sent again (a session moved by a retract sends its orders again: not counted)."""
        orders = [n - self.order_retracts[oid] for oid, n in self.order_facts.items()]
        return sum(n - 1 for n in [*self.session_facts.values(), *orders])


def offline(records: Iterable[Record], settings: Settings) -> RunResult:
    """The reference: the same records through the same state machines, in one process."""
    result = RunResult()
    sessionizer = Sessionizer.from_settings(settings)
    monitor, manager = Monitor(), IncidentManager(incident_params(settings))
    alerts: list[dict[str, Any]] = []

    def apply(facts: Iterable[SessionFact]) -> None:
        for fact in facts:
            result.add_fact(fact)
            apply_fact(monitor, fact)
            if fact.kind == "heartbeat":
                by_tick: dict[int, list[CampaignVerdict]] = defaultdict(list)
                for verdict in monitor.advance(fact.watermark_ms):
                    by_tick[verdict.tick_ms].append(verdict)
                for tick in sorted(by_tick):
                    alerts.extend(a.to_dict() for a in manager.process_tick(tick, by_tick[tick]))

    for i, (kind, obj) in enumerate(records, start=1):
        if kind == "beacon":
            apply(sessionizer.observe_beacon(beacon_from_dict(obj)))
        else:
            apply(sessionizer.observe_order(order_from_dict(obj)))
        if i % OFFLINE_BATCH == 0:
            apply(sessionizer.advance())
    apply(sessionizer.advance())
    for name, model in monitor.models.items():
        rows = [(b.sessions, b.conversions) for _, b in model.ring.span(0, 1 << 62)]
        result.buckets[name] = [sum(r[0] for r in rows), sum(r[1] for r in rows)]
    result.buckets.pop(TAIL_CAMPAIGN, None)
    result.add_alerts(alerts)
    return result


async def read_back(settings: Settings) -> RunResult:
    """What a streaming run wrote: facts topic, campaigns changelog, alerts topic."""
    result = RunResult()
    async with TopicReader(settings.broker_host_port, settings.facts_topic) as facts:
        for record in await facts.drain(quiet_s=2.0, timeout_s=120.0):
            for fact in facts_of(record.value or b""):
                result.add_fact(fact)
    changelog = f"{settings.app_id}-campaigns-changelog"
    latest: dict[str, Any] = {}
    async with TopicReader(settings.broker_host_port, changelog) as table:
        for record in await table.drain(quiet_s=2.0, timeout_s=120.0):
            key = orjson.loads(record.key or b'""')
            latest[key] = None if record.value is None else orjson.loads(record.value)
    result.buckets = table_buckets(latest)
    async with TopicReader(settings.broker_host_port, settings.alerts_topic) as alerts:
        result.add_alerts(r.json() for r in await alerts.drain(quiet_s=2.0, timeout_s=60.0))
    return result


def table_buckets(table: dict[str, Any]) -> dict[str, list[int]]:
    """Sessions and conversions per campaign, summed over the table's minute buckets."""
    totals: dict[str, list[int]] = {}
    for key, value in table.items():
        name, _, part = key.rpartition(SEPARATOR)
        if value is None or part == MODEL_KEY or not part.lstrip("-").isdigit():
            continue
        state = value["v"] if isinstance(value, dict) and "v" in value else value
        bucket = MinuteBucket.from_state(state)
        row = totals.setdefault(name, [0, 0])
        row[0] += bucket.sessions
        row[1] += bucket.conversions
    totals.pop(TAIL_CAMPAIGN, None)
    return totals


@dataclass
class Comparison:
    """How a streaming run differs from the offline reference (all zero = equal)."""

    missing_sessions: int
    extra_sessions: int
    missing_orders: int
    extra_orders: int
    resent_facts: int
    campaigns_differing: list[str]
    session_count_error: int  # sum over campaigns of |table sessions - reference|
    conversion_count_error: int
    episodes_reference: int
    episodes_run: int
    episodes_differing: list[str]
    duplicate_alert_messages: int
    # a few differing sessions, "id@start campaign" (to tell a split from a re-attribution)
    examples: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.missing_sessions or self.extra_sessions or self.missing_orders
                    or self.extra_orders or self.campaigns_differing or self.episodes_differing)


def compare(reference: RunResult, run: RunResult) -> Comparison:
    ref_s, run_s = reference.sessions, run.sessions
    ref_o, run_o = set(reference.order_facts), set(run.order_facts)
    names = sorted(set(reference.buckets) | set(run.buckets))
    rows = {n: (reference.buckets.get(n, [0, 0]), run.buckets.get(n, [0, 0])) for n in names}
    ref_e = {n: len(ids) for n, ids in reference.episodes.items()}
    run_e = {n: len(ids) for n, ids in run.episodes.items()}
    return Comparison(
        missing_sessions=len(ref_s - run_s), extra_sessions=len(run_s - ref_s),
        missing_orders=len(ref_o - run_o), extra_orders=len(run_o - ref_o),
        resent_facts=run.resent_facts - reference.resent_facts,
        campaigns_differing=[n for n, (a, b) in rows.items() if a != b],
        session_count_error=sum(abs(a[0] - b[0]) for a, b in rows.values()),
        conversion_count_error=sum(abs(a[1] - b[1]) for a, b in rows.values()),
        episodes_reference=sum(ref_e.values()), episodes_run=sum(run_e.values()),
        episodes_differing=sorted(n for n in set(ref_e) | set(run_e)
                                  if ref_e.get(n, 0) != run_e.get(n, 0)),
        duplicate_alert_messages=run.duplicate_alerts,
        examples=[*_examples("missing", ref_s - run_s, reference),
                  *_examples("extra", run_s - ref_s, run)])


def _examples(label: str, keys: set[str], result: RunResult, n: int = 6) -> list[str]:
    return [f"{label} {key} {result.campaign_of.get(key, '?')}" for key in sorted(keys)[:n]]


# -- a streaming run -----------------------------------------------------------------------

async def play(settings: Settings, records: Sequence[Record], seconds: float) -> int:
    """Produce ``records`` paced over about ``seconds`` of wall time, then the tail."""
    span_ms = _event_ms(records[-1]) - _event_ms(records[0])
    stats = await feed(settings.broker_host_port, records, beacons_topic=settings.beacons_topic,
                       orders_topic=settings.orders_topic, speed=span_ms / 1000.0 / seconds)
    return stats.beacons + stats.orders


def _event_ms(record: Record) -> int:
    return int(record[1].get("received_at") or record[1]["ts"])


def last_event_ms(records: Sequence[Record]) -> int:
    return max(_event_ms(r) for r in records)


async def caught_up(settings: Settings, timeout_s: float, workers: Sequence[Worker] = (),
                    stable_checks: int = 3) -> float:
    """Wait until the group has committed every record of every topic it reads.

    Returns the seconds waited; AssertionError (with the workers' logs) after ``timeout_s``.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    topics = {settings.beacons_topic: settings.partitions, settings.orders_topic:
              settings.partitions, settings.facts_topic: settings.partitions,
              settings.verdicts_topic: 1}
    tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
    began, streak, behind = time.monotonic(), 0, dict.fromkeys(topics, -1)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker_host_port)
    probe = AIOKafkaConsumer(bootstrap_servers=settings.broker_host_port, group_id=None)
    await admin.start()
    await probe.start()
    try:
        while streak < stable_checks:
            if time.monotonic() - began > timeout_s:
                logs = "\n".join(w.describe() for w in workers)
                msg = f"the workers did not catch up within {timeout_s:g} s: {behind}\n{logs}"
                raise AssertionError(msg)
            ends = await probe.end_offsets(tps)
            done = await admin.list_consumer_group_offsets(settings.app_id)
            lag = {tp: ends[tp] - (done[tp].offset if tp in done else 0) for tp in tps}
            behind = {t: sum(n for tp, n in lag.items() if tp.topic == t) for t in topics}
            streak = streak + 1 if not any(behind.values()) else 0
            await asyncio.sleep(1.0)
    finally:
        await probe.stop()
        await admin.close()
    return time.monotonic() - began


@dataclass
class KillLog:
    """When workers were killed and how long each took to answer ``/readyz`` again."""

    killed_at_s: list[float] = field(default_factory=list)
    ready_after_s: list[float] = field(default_factory=list)


async def kill_and_restart(workers: Sequence[Worker], kills: int, window_s: float,
                           rng: random.Random, log: KillLog, *, min_gap_s: float = 3.0) -> None:
    """SIGKILL a random worker ``kills`` times at random moments of ``window_s``; restart it."""
    began = time.monotonic()
    moments = sorted(rng.uniform(0.05, 0.9) * window_s for _ in range(kills))
    for moment in moments:
        await asyncio.sleep(max(moment - (time.monotonic() - began), min_gap_s))
        worker = rng.choice(list(workers))
        log.killed_at_s.append(round(time.monotonic() - began, 1))
        worker.kill()
        worker.start()
        log.ready_after_s.append(round(await asyncio.to_thread(worker.wait_ready), 1))


async def run_with_kills(settings: Settings, workers: Sequence[Worker], records: list[Record],
                         *, seconds: float, kills: int, seed: int,
                         ) -> tuple[RunResult, KillLog, dict[str, float]]:
    """Play ``records`` to running ``workers`` while killing them; read back the run."""
    log, timing = KillLog(), {}
    began = time.monotonic()
    crasher = asyncio.create_task(
        kill_and_restart(workers, kills, seconds, random.Random(seed), log))
    await play(settings, records, seconds)
    timing["feed_s"] = time.monotonic() - began
    await crasher
    timing["catch_up_s"] = await finish(settings, records, workers)
    return await read_back(settings), log, timing


async def finish(settings: Settings, records: Sequence[Record], workers: Sequence[Worker],
                 timeout_s: float = 300.0) -> float:
    """Send the tail, wait for the last tick's verdicts and for every record to be read.

    An input that fell silent (a dead worker's heartbeats, re-read) holds a watermark back
    for ``IDLE_S`` before the idle timer lets it go, so waiting for the offsets alone would
    read the tables before the last ticks.
    """
    began = time.monotonic()
    tail_ms = last_event_ms(records) + TAIL_AFTER_MS
    await produce(settings.broker_host_port, tail_messages(settings, tail_ms))
    last_tick = minute_of(tail_ms - round(settings.allowed_lateness_seconds * 1000))
    async with TopicReader(settings.broker_host_port, settings.verdicts_topic) as verdicts:
        await verdicts.until(
            lambda rs: any(orjson.loads(r.value or b"{}").get("tick_ms", 0) >= last_tick
                           for r in rs), timeout_s, f"the verdicts of tick {last_tick}",
            workers[-1] if workers else None)
    await caught_up(settings, timeout_s, workers)
    return time.monotonic() - began


def reference_for(settings: Settings, records: list[Record]) -> RunResult:
    tail = tail_records(tail_messages(settings, last_event_ms(records) + TAIL_AFTER_MS))
    return offline([*records, *tail], settings)


# -- the script ----------------------------------------------------------------------------

def _run_one(bootstrap: str, records: list[Record], kills: int, seconds: float, seed: int,  # noqa: PLR0917
             workers_n: int, report: Callable[[str], None]) -> dict[str, Any]:
    from tests.integration.worker_harness import worker_settings

    data = Path(tempfile.mkdtemp(prefix="revwatch-reliability-"))
    settings = worker_settings(bootstrap, f"rel-k{kills}", data / "w0", partitions=4)
    from streams.topics import ensure_topics, revwatch_topics
    ensure_topics(bootstrap, revwatch_topics(settings))
    workers = [Worker(settings.replace(web_port=_port(i, settings.web_port),
                                       data_dir=data / f"w{i}"), data / f"w{i}.log")
               for i in range(workers_n)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
        result, log, timing = asyncio.run(run_with_kills(
            settings, workers, records, seconds=seconds, kills=kills, seed=seed))
    finally:
        for worker in workers:
            worker.stop()
    comparison = compare(reference_for(settings, records), result)
    row = {"kills": kills, "workers": workers_n, **timing, **asdict(log),
           **asdict(comparison), "equal": comparison.equal, "logs": str(data)}
    report(json.dumps(row))
    return row


def _port(index: int, first: int) -> int:
    from tests.integration.worker_harness import free_port
    return first if index == 0 else free_port()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--kills", type=int, nargs="+", default=[0, 3, 6])
    parser.add_argument("--seconds", type=float, default=90.0, help="feed duration")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--warmup-hours", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/reliability.json"))
    args = parser.parse_args(argv)
    records = scenario_records(1, args.warmup_hours, args.scale)
    rows = [_run_one(args.bootstrap, records, k, args.seconds, args.seed + k, args.workers,
                     lambda line: print(line, file=sys.stderr, flush=True))
            for k in args.kills]
    print_table(rows, len(records))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["equal"] for r in rows) else 1


def print_table(rows: Sequence[dict[str, Any]], records: int) -> None:
    print(f"{records:,} records per run (demo shop)")
    head = ("kills", "workers", "ready s (median)", "re-sent facts", "missing", "extra",
            "table sess err", "table conv err", "episodes ref/run", "dup alerts", "equal")
    print(" | ".join(head))
    for r in rows:
        ready = sorted(r["ready_after_s"])
        cells = (r["kills"], r["workers"], ready[len(ready) // 2] if ready else "-",
                 r["resent_facts"], r["missing_sessions"] + r["missing_orders"],
                 r["extra_sessions"] + r["extra_orders"], r["session_count_error"],
                 r["conversion_count_error"], f"{r['episodes_reference']}/{r['episodes_run']}",
                 r["duplicate_alert_messages"], "yes" if r["equal"] else "NO")
        print(" | ".join(str(c) for c in cells))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
