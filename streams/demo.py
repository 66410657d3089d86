"""``revwatch demo``: the whole system on one machine, with an incident, on screen.

Starts the local broker (if nothing answers on ``REVWATCH_BROKER``) and one worker process,
plays a simulated shop to Kafka (warm-up history at full speed, then the live part at
``speed`` event-time minutes per wall minute, with a slowdown, or with ``--incident checkout``
no orders, on the biggest campaign), and
prints live campaign health from ``/campaigns`` and every alert from the ``alerts`` topic.
Topics and the app id get a per-run suffix, so a demo never reads an older demo's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from streams.broker import LocalBroker, port_is_free
from streams.feed import FeedStats, feed
from streams.settings import Settings
from streams.simulate import Scenario, demo_scenario, generate
from streams.simulate_demo import DemoIncident
from streams.simulate_model import IncidentSpec
from streams.topics import ensure_topics, revwatch_topics
from streams.view import format_alert, format_health

READY_TIMEOUT_S = 120.0


def demo_settings(settings: Settings, run_id: str) -> Settings:
    """Per-run topic names and app id, so runs never mix."""
    return settings.replace(
        app_id=f"revwatch-demo-{run_id}", beacons_topic=f"rum-beacons-demo-{run_id}",
        orders_topic=f"orders-demo-{run_id}", alerts_topic=f"alerts-demo-{run_id}",
        dead_letter_topic=f"revwatch-dead-letter-demo-{run_id}",
        facts_topic=f"revwatch-session-facts-demo-{run_id}",
        verdicts_topic=f"revwatch-verdicts-demo-{run_id}", partitions=4)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, *, duration_s: float | None, speed: float, seed: int,
             devices: tuple[str, ...] = (), incident: DemoIncident = "slow-pages") -> int:
    run = demo_settings(settings, time.strftime("%Y%m%d%H%M%S"))
    if port_is_free(run.web_host, run.web_port) is False:
        print(f"revwatch demo: {run.web_host}:{run.web_port} is in use (another worker or "
              "demo?); stop it or set REVWATCH_WEB_PORT", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _sigterm)
    broker = LocalBroker(run.broker_host_port, run.data_dir)
    started_broker = not broker.status().answering
    print(f"revwatch demo: starting Kafka on {run.broker_host_port} "
          f"(first run downloads it with Maven)..." if started_broker else
          f"revwatch demo: using the broker on {run.broker_host_port}", flush=True)
    broker.start()
    ensure_topics(run.broker_host_port, revwatch_topics(run))
    worker = _start_worker(run)
    try:
        asyncio.run(_demo(run, worker, duration_s, speed,
                          demo_scenario(seed, devices=devices, incident=incident)))
    except KeyboardInterrupt:
        print("\nrevwatch demo: stopping", flush=True)
    finally:
        _stop_worker(worker)
        if started_broker:
            broker.stop()
    return 0


def _start_worker(run: Settings) -> subprocess.Popen[bytes]:
    log = (run.data_dir / f"{run.app_id}.log").open("ab")
    env = {**_base_env(), **run.to_env()}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _base_env() -> dict[str, str]:
    """PATH, HOME and the like for the child; settings travel as REVWATCH_* from ``run``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REVWATCH_")}


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


async def _demo(run: Settings, worker: subprocess.Popen[bytes], duration_s: float | None,
                speed: float, scenario: Scenario) -> None:
    base = f"http://{run.web_host}:{run.web_port}"
    await _wait_ready(base, worker, run)
    incident = scenario.incidents[0]
    where = f" on {' + '.join(incident.devices)}" if incident.devices else ""
    print(f"revwatch demo: worker ready at {base} (try {base}/campaigns and {base}/metrics)\n"
          f"revwatch demo: replaying {scenario.days * 24:.1f} h of shop traffic; "
          f"'{', '.join(incident.campaigns)}' {_what(incident)}{where} at event time "
          f"{_clock(incident.start_ms)} for {(incident.end_ms - incident.start_ms) // 60000} min",
          flush=True)
    stop = asyncio.Event()
    feeding = asyncio.create_task(_feed(run, scenario, incident.start_ms - 30 * 60_000, speed))
    printers = [asyncio.create_task(_print_alerts(run, stop)),
                asyncio.create_task(_print_health(base, stop))]
    deadline = None if duration_s is None else time.monotonic() + duration_s
    await _until(feeding, deadline, worker)
    await _linger(feeding, deadline)
    stop.set()
    await asyncio.gather(*printers, return_exceptions=True)


async def _wait_ready(base: str, worker: subprocess.Popen[bytes], run: Settings) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                log = run.data_dir / f"{run.app_id}.log"
                msg = f"revwatch demo: the worker exited (code {worker.returncode}); see {log}"
                raise SystemExit(msg)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{base}/readyz", timeout=aiohttp.ClientTimeout(2)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.5)
    msg = f"revwatch demo: the worker was not ready within {READY_TIMEOUT_S:.0f} s"
    raise SystemExit(msg)


async def _feed(run: Settings, scenario: Any, live_from_ms: int, speed: float) -> FeedStats:
    def progress(stats: FeedStats) -> None:
        if stats.last_event_ms < live_from_ms:
            print(f"  warm-up: {stats.beacons:,} beacons, {stats.orders:,} orders sent "
                  f"(event time {_clock(stats.last_event_ms)})", flush=True)

    return await feed(run.broker_host_port, generate(scenario), beacons_topic=run.beacons_topic,
                      orders_topic=run.orders_topic, speed=speed, live_from_ms=live_from_ms,
                      on_progress=progress)


async def _until(task: asyncio.Task[FeedStats], deadline: float | None,
                 worker: subprocess.Popen[bytes]) -> None:
    while not task.done():
        if worker.poll() is not None or (deadline is not None and time.monotonic() > deadline):
            task.cancel()
            return
        await asyncio.sleep(0.5)


async def _linger(task: asyncio.Task[FeedStats], deadline: float | None) -> None:
    """After the traffic ends, give the last ticks time to resolve the alert."""
    if task.cancelled() or deadline is None:
        await asyncio.sleep(0 if task.cancelled() else 20)
        return
    await asyncio.sleep(max(0.0, min(20.0, deadline - time.monotonic())))


async def _print_alerts(run: Settings, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(run.alerts_topic, bootstrap_servers=run.broker_host_port,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    print(format_alert(orjson.loads(record.value)), flush=True)
    finally:
        await consumer.stop()


async def _print_health(base: str, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{base}/campaigns", timeout=aiohttp.ClientTimeout(2)) as r:
                    print(format_health(await r.json()), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=10)


def _what(incident: IncidentSpec) -> str:
    if incident.kind == "conversion_drop":
        return "takes no orders (its checkout breaks; the pages stay fast)"
    return "slows down"


def _clock(ms: int) -> str:
    return time.strftime("%a %H:%M", time.gmtime(ms / 1000))

