"""Sustained load: beacons through a real worker's collector, orders straight to Kafka.

A real ``revwatch worker`` (``tests/integration/worker_harness.py``) runs against the
broker. For ``--duration`` seconds an aiohttp load generator posts web-vitals beacon
arrays (LCP, TTFB and CLS of one page view per request) to ``/beacon`` at ``--rate``
requests a second, on a fixed schedule (open loop: a slow answer does not slow the
sender), spread over several client addresses (127.0.0.x) so the per-client rate limit
stays on; about one session in twenty orders, sent with aiokafka to the orders topic.

Reported: the rate held, the collector's p50/p99 latency (seen by the client), the worker's
consumer lag at the end and how long it took to reach 0, the worker's RSS (``VmRSS``) at
the start and the end with samples in between, and the records lost: every record
answered 204 must be on the beacons topic (counted by ``beacon_id`` and metric).

    .venv/bin/python -m bench.load --duration 600 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

import streams.topics  # noqa: F401  (silences kafka-python's import warnings first)
from streams.broker import LocalBroker
from tests.integration.worker_harness import Worker, worker_settings

METRICS = (("LCP", "lcp_ms", 1800.0), ("TTFB", "ttfb_ms", 120.0), ("CLS", "cls", 0.05))
PAGES_PER_SESSION = 3
ORDER_EVERY = 20  # one session in twenty orders
MAX_IN_FLIGHT = 256
CLIENT_SHARE = 0.5  # each client address stays below half the per-client limit


@dataclass
class LoadReport:
    """What one run measured (times in seconds, latencies in ms, memory in KiB)."""

    duration_s: float
    target_rate: float
    requests: int = 0
    accepted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    records_accepted: int = 0
    orders_sent: int = 0
    rate_held: float = 0.0
    late_starts: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    beacons_on_topic: int = 0
    lost: int = 0
    lag_at_end: int = -1
    lag_zero_after_s: float = math.nan
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    rss_samples_kib: list[int] = field(default_factory=list)
    clients: int = 1

    def summary(self) -> str:
        growth = self.rss_end_kib - self.rss_start_kib
        return "\n".join([
            f"duration        {self.duration_s:.0f} s at {self.target_rate:g} requests/s "
            f"({len(METRICS)} records each), {self.clients} client addresses",
            f"rate held       {self.rate_held:.1f} requests/s accepted "
            f"({self.accepted}/{self.requests}; statuses {self.statuses}; "
            f"{self.late_starts} late starts)",
            f"collector       p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"max {self.max_ms:.1f} ms",
            f"orders          {self.orders_sent} straight to Kafka",
            f"consumer lag    {self.lag_at_end} records at the end; 0 after "
            f"{self.lag_zero_after_s:.1f} s",
            f"worker RSS      {self.rss_start_kib / 1024:.1f} MiB at start, "
            f"{self.rss_end_kib / 1024:.1f} MiB at end ({growth / 1024:+.1f} MiB); samples "
            f"{[round(s / 1024) for s in self.rss_samples_kib]} MiB",
            f"records lost    {self.lost} ({self.records_accepted} answered 204, "
            f"{self.beacons_on_topic} distinct on the beacons topic)",
        ])


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` from ``/proc/<pid>/status`` (0 if gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class Traffic:
    """Page views of sessions (three per session) and the records each request carries."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.expected: set[tuple[str, str]] = set()

    def page(self, i: int) -> tuple[str, bytes, bool]:
        """Session id, body of request ``i``, and whether the session orders now."""
        session = f"{self.run}-s{i // PAGES_PER_SESSION}"
        now_ms = int(time.time() * 1000)
        url = (f"https://shop.example/p/{i % 50}?utm_campaign=camp{i % 7}&utm_source=load"
               f"&email=x%40y")
        records = [{"name": name, "value": value, "session_id": session,
                    "page_view_id": f"pv{i}", "page_ts": now_ms, "page_url": url,
                    "navigationId": i, "rating": "good"} for name, _, value in METRICS]
        ordering = i % PAGES_PER_SESSION == PAGES_PER_SESSION - 1 \
            and (i // PAGES_PER_SESSION) % ORDER_EVERY == 0
        return session, orjson.dumps(records), ordering

    def accepted(self, i: int) -> None:
        session = f"{self.run}-s{i // PAGES_PER_SESSION}"
        for _, field_name, _ in METRICS:
            self.expected.add((f"{session}:pv{i}", field_name))


class Generator:
    """Posts beacons on a fixed schedule and sends orders; fills the request figures."""

    def __init__(self, worker: Worker, report: LoadReport, traffic: Traffic) -> None:
        self.worker, self.report, self.traffic = worker, report, traffic
        limit = worker.settings.rate_limit_per_minute
        report.clients = 1 if limit <= 0 else max(
            1, math.ceil(report.target_rate * 60 / (limit * CLIENT_SHARE)))
        self.url = worker.base_url + "/beacon"
        self.latencies: list[float] = []
        self.orders: list[asyncio.Future[Any]] = []
        self.gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.sessions: list[aiohttp.ClientSession] = []
        self.producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap, acks="all",
                                         linger_ms=5)

    async def run(self) -> None:
        report = self.report
        self.sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            local_addr=(f"127.0.0.{2 + k % 250}", 0), limit=MAX_IN_FLIGHT))
            for k in range(report.clients)]
        await self.producer.start()
        tasks: set[asyncio.Task[None]] = set()
        try:
            start = time.monotonic()
            for i in range(int(report.target_rate * report.duration_s)):
                delay = start + i / report.target_rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.1:
                    report.late_starts += 1
                await self.gate.acquire()
                task = asyncio.create_task(self._one(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                report.requests += 1
            if tasks:
                await asyncio.wait(tasks, timeout=60)
            await asyncio.wait_for(asyncio.gather(*self.orders), timeout=60)
            report.orders_sent = len(self.orders)
            report.rate_held = report.accepted / max(time.monotonic() - start, 1e-9)
        finally:
            for task in tasks:
                task.cancel()
            await self.producer.stop()
            for session in self.sessions:
                await session.close()
        report.records_accepted = len(self.traffic.expected)
        report.p50_ms = percentile(self.latencies, 0.50)
        report.p99_ms = percentile(self.latencies, 0.99)
        report.max_ms = max(self.latencies, default=math.nan)

    async def _one(self, i: int) -> None:
        session_id, body, ordering = self.traffic.page(i)
        began = time.perf_counter()
        try:
            async with self.sessions[i % len(self.sessions)].post(
                    self.url, data=body, headers={"Content-Type": "text/plain"},
                    timeout=aiohttp.ClientTimeout(total=30)) as response:
                await response.read()
                status = str(response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        finally:
            self.gate.release()
        self.latencies.append((time.perf_counter() - began) * 1000)
        statuses = self.report.statuses
        statuses[status] = statuses.get(status, 0) + 1
        if status == "204":
            self.report.accepted += 1
            self.traffic.accepted(i)
            if ordering:
                await self._order(session_id)

    async def _order(self, session_id: str) -> None:
        now_ms = int(time.time() * 1000)
        order = {"order_id": f"{session_id}-o", "session_id": session_id, "ts": now_ms,
                 "revenue": 42.5, "currency": "USD", "received_at": now_ms}
        self.orders.append(await self.producer.send(
            self.worker.settings.orders_topic, orjson.dumps(order), key=session_id.encode()))


async def consumer_lag(worker: Worker) -> int:
    """Records on the beacons and orders topics the worker's group has not committed."""
    settings = worker.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.app_id)
        parts = [TopicPartition(topic, p) for topic in (settings.beacons_topic,
                                                        settings.orders_topic)
                 for p in range(settings.partitions)]
        ends = await consumer.end_offsets(parts)
        return sum(end - (committed[tp].offset if tp in committed else 0)
                   for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


async def wait_lag_zero(worker: Worker, timeout_s: float) -> tuple[int, float]:
    """Lag now, then poll until it is 0; returns (lag at the start, seconds to 0 or nan)."""
    began = time.monotonic()
    first = lag = await consumer_lag(worker)
    while lag > 0 and time.monotonic() - began < timeout_s:
        await asyncio.sleep(1.0)
        lag = await consumer_lag(worker)
    return first, (time.monotonic() - began) if lag == 0 else math.nan


async def count_beacons(worker: Worker, expected: set[tuple[str, str]],
                        timeout_s: float) -> int:
    """Distinct (beacon_id, metric) of the expected records found on the beacons topic."""
    found: set[tuple[str, str]] = set()
    consumer = AIOKafkaConsumer(worker.settings.beacons_topic, bootstrap_servers=worker.bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_bytes=16 * 1024 * 1024)
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not expected <= found and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for records in batches.values():
                for record in records:
                    beacon = orjson.loads(record.value)
                    for _, field_name, _ in METRICS:
                        if beacon.get(field_name) is not None:
                            found.add((beacon["beacon_id"], field_name))
    finally:
        await consumer.stop()
    return len(expected & found)


async def sample_rss(pid: int, report: LoadReport, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        report.rss_samples_kib.append(rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)


async def run_load(bootstrap: str, data_dir: Path, *, duration_s: float, rate: float,
                   partitions: int = 4, warmup_s: float = 5.0, drain_timeout_s: float = 90.0,
                   **overrides: Any) -> LoadReport:
    """Start a worker, load it for ``duration_s`` at ``rate`` requests/s, stop it, report."""
    settings = worker_settings(bootstrap, "load", data_dir, partitions=partitions, **overrides)
    worker = Worker(settings, data_dir / "worker.log")
    report = LoadReport(duration_s, rate)
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready)
        await asyncio.sleep(warmup_s)
        pid = worker.process.pid if worker.process else 0
        report.rss_start_kib = rss_kib(pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(pid, report, max(duration_s / 10, 1.0), stop))
        traffic = Traffic(uuid.uuid4().hex[:6])
        await Generator(worker, report, traffic).run()
        report.lag_at_end, report.lag_zero_after_s = await wait_lag_zero(worker,
                                                                         drain_timeout_s)
        stop.set()
        await sampler
        report.rss_end_kib = rss_kib(pid)
        worker.assert_alive()
        report.beacons_on_topic = await count_beacons(worker, traffic.expected,
                                                      drain_timeout_s)
        report.lost = report.records_accepted - report.beacons_on_topic
    finally:
        worker.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s (default 50)")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092",
                        help="broker; started locally if nothing answers there")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--session-ttl-minutes", type=float, default=None,
                        help="session timeout and order grace, each (default: the settings')")
    args = parser.parse_args()
    ttl = args.session_ttl_minutes
    overrides = {} if ttl is None else {"session_timeout_minutes": ttl,
                                        "order_grace_minutes": ttl}
    with tempfile.TemporaryDirectory(prefix="revwatch-load-") as tmp:
        broker = LocalBroker(args.bootstrap, Path(tmp) / "broker")
        started = not broker.status().answering
        if started:
            broker.start(timeout_s=120.0)
        try:
            report = asyncio.run(run_load(args.bootstrap, Path(tmp) / "worker",
                                          duration_s=args.duration, rate=args.rate,
                                          partitions=args.partitions, **overrides))
        finally:
            if started:
                broker.stop()
    print(report.summary())
    if args.json:
        args.json.write_text(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
