"""Collector speed: ``/beacon`` against a minimal aiohttp handler that returns 204.

Two server processes on core 1 (``taskset -c 1``), the load generator ``wrk`` on core 0,
same body, same sweep of connection counts, the two servers measured in turn at each count
(so drift in what else runs on the machine hits both alike):

* floor: an aiohttp app whose ``POST /beacon`` returns 204 and does nothing;
* collector: an aiohttp app with :func:`streams.collector.collector_routes` and a started
  :class:`streams.sink.KafkaSink` producing to a fresh topic on the local broker, created
  up front with the production partition count (rate limit off: every request comes from
  127.0.0.1). Before the sweep one beacon must have reached Kafka; before each point the
  sink's buffer must be empty.

Per server the figure is the highest rate whose p99 latency is under 50 ms over the sweep
(wrk is closed-loop: more connections, more rate and more latency) with no non-2xx answer
and, for the collector, the sink keeping up: at the end of the point no more than
``MAX_SINK_LAG_S`` of beacons still waiting for Kafka. Target: collector >= 0.5 x floor.
The body is one web-vitals LCP record as ``revwatch-rum.js`` sends it.

Usage: ``python bench/collector_speed.py [--runs 3] [--seconds 5]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    PYTHON,
    ROOT,
    fmt,
    free_port,
    http_ok,
    kafka,
    print_table,
    processes,
    summarise,
    wait_for,
    write_results,
)

TARGET = 0.5
P99_LIMIT_MS = 50.0
MAX_SINK_LAG_S = 0.5
CONNECTIONS = (1, 2, 4, 8, 16, 32, 64)
BODY = ('{"name":"LCP","value":2310.5,"rating":"needs-improvement","delta":2310.5,'
        '"id":"v4-1740960000734-1234","navigationType":"navigate",'
        '"session_id":"s-0123456789abcdef","page_view_id":"pv-42","page_ts":1740960000734,'
        '"page_url":"https://shop.example/product/gift-box?utm_campaign=spring_sale'
        '&utm_source=news&sku=123"}')
LUA = f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
wrk.headers["Origin"] = "https://shop.example"
wrk.body = [[{BODY}]]
"""


def serve_floor(port: int) -> None:
    from aiohttp import web

    async def beacon(_: web.Request) -> web.Response:
        return web.Response(status=204)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/beacon", beacon)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_collector(port: int, bootstrap: str, topic: str) -> None:
    from aiohttp import web

    from streams.collector import collector_routes
    from streams.settings import Settings
    from streams.sink import KafkaSink

    settings = Settings(broker=f"kafka://{bootstrap}", beacons_topic=topic,
                        rate_limit_per_minute=0)
    sink = KafkaSink(settings)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=200 if sink.connected else 503)

    async def sink_stats(_: web.Request) -> web.Response:
        return web.json_response({"sent": sink.sent, "buffered": sink.buffered,
                                  "failed_attempts": sink.failed_attempts})

    async def start(_: web.Application) -> None:
        await sink.start()

    async def stop(_: web.Application) -> None:
        await sink.stop(5.0)

    app = web.Application()
    app.router.add_routes(collector_routes(settings, sink, None, None))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/bench/sink", sink_stats)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def wrk(port: int, connections: int, seconds: float, script: Path) -> dict[str, float]:
    """One wrk run: requests/s, p99 latency (ms) and non-2xx count."""
    done = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/beacon"],
        capture_output=True, text=True, timeout=seconds + 60, check=True)
    text = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+([\d.]+\w+)", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {"connections": connections, "rps": rps, "p99_ms": p99,
            "non_2xx": float(bad.group(1)) if bad else 0.0}


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group(0)), text.lstrip("0123456789.")  # type: ignore[union-attr]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def sink_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/sink", timeout=5.0) as reply:
        return dict(json.loads(reply.read()))


def warm_up(port: int) -> None:
    """One beacon through to Kafka (the topic's metadata known, the producer id granted)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/beacon", data=BODY.encode(),
                                     headers={"Content-Type": "text/plain"}, method="POST")
    with urllib.request.urlopen(request, timeout=5.0):
        pass
    wait_for(lambda: sink_stats(port)["sent"] >= 1, 60, "the warm-up beacon in Kafka")


def collector_point(port: int, connections: int, seconds: float,
                    script: Path) -> dict[str, float]:
    """A wrk point against the collector, started with an empty sink buffer."""
    wait_for(lambda: sink_stats(port)["buffered"] == 0, 60, "the sink to drain")
    before = sink_stats(port)
    point = wrk(port, connections, seconds, script)
    after = sink_stats(port)
    point["sink_backlog"] = float(after["buffered"])
    point["sink_sent"] = float(after["sent"] - before["sent"])
    point["sink_failures"] = float(after["failed_attempts"] - before["failed_attempts"])
    return point


def start_server(kind: str, port: int, bootstrap: str, topic: str) -> subprocess.Popen[bytes]:
    args = [PYTHON, __file__, "--serve", kind, "--port", str(port), "--bootstrap", bootstrap,
            "--topic", topic]
    return subprocess.Popen(["taskset", "-c", "1", *args], cwd=ROOT, start_new_session=True)


def sweep_both(seconds: float, script: Path, bootstrap: str) -> dict[str, Any]:
    """Floor and collector, alternately at each connection count."""
    from streams.settings import Settings
    from streams.topics import ensure_topics

    topic = f"bench-collector-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {topic: Settings().partitions})
    ports = {"floor": free_port(), "collector": free_port()}
    with processes() as started:
        for kind, port in ports.items():
            started.append(start_server(kind, port, bootstrap, topic))
            wait_for(functools.partial(http_ok, f"http://127.0.0.1:{port}/healthz"), 60,
                     f"the {kind} server")
        warm_up(ports["collector"])
        floor, coll = [], []
        for c in CONNECTIONS:
            floor.append(wrk(ports["floor"], c, seconds, script))
            coll.append(collector_point(ports["collector"], c, seconds, script))
    return {"floor": {"best": best_point(floor), "points": floor},
            "collector": {"best": best_point(coll), "points": coll}}


def acceptable(point: dict[str, float]) -> bool:
    lag_s = point.get("sink_backlog", 0.0) / point["rps"] if point["rps"] else 0.0
    return point["p99_ms"] < P99_LIMIT_MS and point["non_2xx"] == 0 \
        and lag_s <= MAX_SINK_LAG_S and point.get("sink_failures", 0.0) == 0


def best_point(points: list[dict[str, float]]) -> dict[str, float]:
    ok = [p for p in points if acceptable(p)]
    return max(ok, key=lambda p: p["rps"]) if ok else {"rps": 0.0, "connections": 0,
                                                       "p99_ms": float("nan")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", choices=("floor", "collector"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    args = parser.parse_args(argv)
    if args.serve == "floor":
        serve_floor(args.port)
        return 0
    if args.serve == "collector":
        serve_collector(args.port, args.bootstrap, args.topic)
        return 0
    runs: list[dict[str, Any]] = []
    with kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "beacon.lua"
        script.write_text(LUA)
        for n in range(args.runs):
            both = sweep_both(args.seconds, script, bootstrap)
            floor, coll = both["floor"], both["collector"]
            runs.append({"floor_rps": floor["best"]["rps"], "collector_rps": coll["best"]["rps"],
                         "floor_best": floor["best"], "collector_best": coll["best"],
                         "ratio": coll["best"]["rps"] / floor["best"]["rps"]
                         if floor["best"]["rps"] else 0.0,
                         "floor_points": floor["points"], "collector_points": coll["points"]})
            print(f"run {n + 1}: floor {floor['best']['rps']:,.0f}/s "
                  f"(c={floor['best']['connections']}), collector {coll['best']['rps']:,.0f}/s "
                  f"(c={coll['best']['connections']}), ratio {runs[-1]['ratio']:.2f}", flush=True)
    report(runs)
    return 0


def report(runs: list[dict[str, Any]]) -> None:
    stats = {k: summarise([r[k] for r in runs]) for k in ("floor_rps", "collector_rps", "ratio")}
    rows = [[k, fmt(s["median"]), f"{fmt(s['min'])}..{fmt(s['max'])}"] for k, s in stats.items()]
    print_table(f"collector: best rate with p99 < {P99_LIMIT_MS:g} ms, servers on core 1, wrk on "
                f"core 0; target ratio >= {TARGET:g}", ["measure", "median", "min..max"], rows)
    sweep_rows = [[p["connections"], fmt(p["rps"]), fmt(p["p99_ms"]), fmt(q["rps"]),
                   fmt(q["p99_ms"]), fmt(q["sink_backlog"]), fmt(q["sink_sent"])]
                  for p, q in zip(runs[-1]["floor_points"], runs[-1]["collector_points"],
                                  strict=True)]
    print_table("last run's sweep", ["connections", "floor /s", "floor p99 ms", "collector /s",
                                     "collector p99 ms", "sink backlog at end",
                                     "sent to Kafka"], sweep_rows)
    write_results("collector_speed", {"target_ratio": TARGET, "p99_limit_ms": P99_LIMIT_MS,
                                      "load_generator": "wrk 1 thread (Debian), taskset -c 0",
                                      "max_sink_lag_s": MAX_SINK_LAG_S, "body": BODY,
                                      "runs": runs, "summary": stats})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main(sys.argv[1:]))
