"""Where the collector's CPU per request goes: the floor, then one piece of ``/beacon`` at a time.

Each variant is an aiohttp server on core 1 (``taskset -c 1``) answering ``POST /beacon``
with 204; ``wrk`` on core 0 sends the body of ``bench/collector_speed.py`` over a fixed
number of connections; the server's user and system CPU (``/proc``) over the run, divided
by the requests answered, is its cost per request. Variants, in the order the collector
adds the work:

* ``floor``: returns 204 (as in ``collector_speed.py``);
* ``headers``: the floor with the collector's seven 204 headers (CORS, ``no-store``, ...);
* ``request``: the floor plus reading the body and the request fields the handler reads;
* ``parse``: ``request`` plus ``parse_collector_body`` (no sink, no counting);
* ``parse_twice``: ``parse`` with the parse done twice (the marginal cost of one parse);
* ``no_kafka``: the collector's own routes with a sink that accepts and drops;
* ``collector``: the collector's routes and a started ``KafkaSink`` to the local broker.

Rounds alternate the variants, so drift on a shared machine hits all alike. The figures are
diagnostic (the target is checked by ``collector_speed.py``).

Usage: ``python bench/collector_breakdown.py [--rounds 2] [--seconds 5] [--connections 16]``
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.collector_speed import LUA, wrk
from bench.common import (
    PYTHON,
    ROOT,
    free_port,
    http_ok,
    kafka,
    print_table,
    processes,
    wait_for,
    write_results,
)

VARIANTS = ("floor", "headers", "request", "parse", "parse_twice", "no_kafka", "collector")
Handler = Callable[[Any], Awaitable[Any]]


class DropSink:
    """Accepts every beacon and keeps none."""

    connected = True

    def offer(self, beacons: Sequence[Any]) -> bool:
        return True


def _handler(variant: str) -> Handler:
    from aiohttp import web
    from multidict import CIMultiDict

    from streams.beacons import parse_collector_body
    from streams.settings import Settings

    allowed = Settings().allowed_query_params
    headers = CIMultiDict({"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                           "Access-Control-Allow-Origin": "https://shop.example",
                           "Access-Control-Allow-Credentials": "true", "Vary": "Origin"})
    parses = {"request": 0, "parse": 1, "parse_twice": 2}.get(variant, 0)

    async def answer(request: web.Request) -> web.Response:
        if variant == "headers":
            return web.Response(status=204, headers=headers)
        if variant != "floor":
            body = request.content.read_nowait()
            method, query = request.method, request.query_string
            kind = request.headers.get("Content-Type")
            agent = request.headers.get("User-Agent")
            for _ in range(parses):
                parse_collector_body(method, kind, body, query,
                                     received_at_ms=int(time.time() * 1000), user_agent=agent,
                                     allowed_params=allowed)
        return web.Response(status=204)

    return answer


def serve(variant: str, port: int, bootstrap: str, topic: str) -> None:
    from aiohttp import web

    from streams.collector import collector_routes
    from streams.settings import Settings
    from streams.sink import KafkaSink

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    settings = Settings(broker=f"kafka://{bootstrap}", beacons_topic=topic,
                        rate_limit_per_minute=0)
    if variant == "collector":
        sink = KafkaSink(settings)

        async def start(_: web.Application) -> None:
            await sink.start()

        app.on_startup.append(start)
        app.router.add_routes(collector_routes(settings, sink))
    elif variant == "no_kafka":
        app.router.add_routes(collector_routes(settings, DropSink()))
    else:
        app.router.add_post("/beacon", _handler(variant))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` and its children (taskset execs in place)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                              check=False).stdout.split()
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for each in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def measure(rounds: int, seconds: float, connections: int, bootstrap: str,
            script: Path) -> dict[str, list[dict[str, float]]]:
    from streams.settings import Settings
    from streams.topics import ensure_topics

    topic = f"bench-breakdown-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {topic: Settings().partitions})
    out: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with processes() as started:
        ports = {}
        for variant in VARIANTS:
            ports[variant] = port = free_port()
            started.append(subprocess.Popen(
                ["taskset", "-c", "1", PYTHON, __file__, "--serve", variant, "--port", str(port),
                 "--bootstrap", bootstrap, "--topic", topic], cwd=ROOT, start_new_session=True))
            wait_for(functools.partial(http_ok, f"http://127.0.0.1:{port}/healthz"), 60, variant)
        pids = dict(zip(VARIANTS, (p.pid for p in started), strict=True))
        for _ in range(rounds):
            for variant in VARIANTS:
                before = cpu_s(pids[variant])
                point = wrk(ports[variant], connections, seconds, script)
                after = cpu_s(pids[variant])
                requests = point["rps"] * seconds
                out[variant].append({
                    "rps": point["rps"], "p99_ms": point["p99_ms"],
                    "user_us": 1e6 * (after[0] - before[0]) / requests,
                    "sys_us": 1e6 * (after[1] - before[1]) / requests})
    return out


def report(results: dict[str, list[dict[str, float]]], connections: int) -> None:
    rows, previous = [], None
    for variant in VARIANTS:
        points = results[variant]
        user = sorted(p["user_us"] for p in points)[len(points) // 2]
        system = sorted(p["sys_us"] for p in points)[len(points) // 2]
        rps = sorted(p["rps"] for p in points)[len(points) // 2]
        step = "" if previous is None else f"{user + system - previous:+.1f}"
        rows.append([variant, f"{rps:,.0f}", f"{user:.1f}", f"{system:.1f}",
                     f"{user + system:.1f}", step])
        previous = user + system
    print_table(f"collector breakdown, {connections} connections, server on core 1, wrk on "
                "core 0 (medians over rounds)",
                ["variant", "req/s", "user us/req", "sys us/req", "CPU us/req", "vs row above"],
                rows)
    write_results("collector_breakdown", {"connections": connections, "variants": results})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", choices=VARIANTS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.bootstrap, args.topic)
        return 0
    with kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "beacon.lua"
        script.write_text(LUA)
        report(measure(args.rounds, args.seconds, args.connections, bootstrap, script),
               args.connections)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main(sys.argv[1:]))
