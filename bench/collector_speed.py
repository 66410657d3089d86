"""Collector speed: ``/beacon`` against a minimal aiohttp handler that returns 204.

Two server processes, each alone in its turn on core 1 (``taskset -c 1``), the load
generator ``wrk`` on core 0, same body, same sweep of connection counts:

* floor: an aiohttp app whose ``POST /beacon`` returns 204 and does nothing;
* collector: an aiohttp app with :func:`streams.collector.collector_routes` and a started
  :class:`streams.sink.KafkaSink` producing to a fresh topic on the local broker (rate
  limit off: every request comes from 127.0.0.1).

Per server the figure is the highest rate whose p99 latency is under 50 ms over the sweep
(wrk is closed-loop: more connections, more rate and more latency). Target: collector >=
0.5 x floor. The body is one web-vitals LCP record as ``revwatch-rum.js`` sends it.

Usage: ``python bench/collector_speed.py [--runs 3] [--seconds 5]``
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
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

    async def start(_: web.Application) -> None:
        await sink.start()

    async def stop(_: web.Application) -> None:
        await sink.stop(5.0)

    app = web.Application()
    app.router.add_routes(collector_routes(settings, sink, None, None))
    app.router.add_get("/healthz", healthz)
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


def sweep(kind: str, seconds: float, script: Path, bootstrap: str) -> dict[str, Any]:
    port = free_port()
    args = [PYTHON, __file__, "--serve", kind, "--port", str(port), "--bootstrap", bootstrap,
            "--topic", f"bench-collector-{uuid.uuid4().hex[:8]}"]
    with processes() as started:
        started.append(subprocess.Popen(["taskset", "-c", "1", *args], cwd=ROOT,
                                        start_new_session=True))
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, f"the {kind} server")
        points = [wrk(port, c, seconds, script) for c in CONNECTIONS]
    ok = [p for p in points if p["p99_ms"] < P99_LIMIT_MS and p["non_2xx"] == 0]
    best = max(ok, key=lambda p: p["rps"]) if ok else {"rps": 0.0, "connections": 0,
                                                        "p99_ms": float("nan")}
    return {"best": best, "points": points}


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
            floor = sweep("floor", args.seconds, script, bootstrap)
            coll = sweep("collector", args.seconds, script, bootstrap)
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
                   fmt(q["p99_ms"])]
                  for p, q in zip(runs[-1]["floor_points"], runs[-1]["collector_points"],
                                  strict=True)]
    print_table("last run's sweep", ["connections", "floor /s", "floor p99 ms", "collector /s",
                                     "collector p99 ms"], sweep_rows)
    write_results("collector_speed", {"target_ratio": TARGET, "p99_limit_ms": P99_LIMIT_MS,
                                      "load_generator": "wrk 1 thread (Debian), taskset -c 0",
                                      "body": BODY, "runs": runs, "summary": stats})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main(sys.argv[1:]))
