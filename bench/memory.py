"""Memory: bytes per live session, per campaign, over a replay, and with invented campaigns.

Each part runs in its own child process (a clean heap), three times:

* ``sessions``: 100,000 live sessions (3 page views each, a campaign, LCP/TTFB) in one
  :class:`~streams.sessions.Sessionizer`; ``tracemalloc`` bytes / session.
* ``campaigns``: 1,000 campaigns in one :class:`~detectors.monitor.Monitor`, each with a full
  ring of minute buckets (``keep_minutes`` minutes, 3 sessions a minute), ticked once;
  ``tracemalloc`` bytes / campaign.
* ``replay``: the replay pipeline over ``--days`` of ``default_scenario``; RSS, live sessions
  and campaign buckets sampled every event-time hour (growth over the last hour reported).
* ``invented``: a client sends one session per made-up ``utm_campaign``; models kept and bytes
  per invented campaign, and what one minute tick then costs.

Usage: ``python bench/memory.py [--runs 3] [--days 0.5] [--invented 5000]``
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import dataset, fmt, print_table, run_child, summarise, write_results

T0 = 1_740_960_000_000
MINUTE = 60_000


def _beacon(sid: str, page: int, ts: int, campaign: str) -> Any:
    from streams.records import Beacon
    return Beacon(beacon_id=f"{sid}-p{page}", session_id=sid, ts=ts,
                  page_url=f"https://shop.example/product/{page}?utm_campaign={campaign}",
                  lcp_ms=1800.0 + page, ttfb_ms=300.0, fcp_ms=900.0, received_at=ts + 500,
                  device="mobile", user_agent="Mozilla/5.0 (iPhone) Safari/604.1")


def child_sessions(n: int) -> dict[str, Any]:
    from streams.sessions import Sessionizer
    beacons = [_beacon(f"s{i:07d}", p, T0 + i + p * 1000, f"c{i % 50}")
               for i in range(n) for p in range(3)]
    sessionizer = Sessionizer()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for b in beacons:
        sessionizer.observe_beacon(b)
    sessionizer.advance()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    return {"sessions": len(sessionizer), "bytes": used, "per_session": used / len(sessionizer)}


def child_campaigns(n: int) -> dict[str, Any]:
    from detectors.monitor import Monitor
    monitor = Monitor()
    keep = monitor.params.campaign.keep_minutes
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for c in range(n):
        for m in range(keep):
            for k in range(3):
                monitor.observe_session(f"campaign-{c:04d}", T0 + m * MINUTE + k,
                                        1500.0 + 37 * k + m, commerce=True)
    monitor.advance(T0 + (keep - 1) * MINUTE)
    began = time.perf_counter()
    monitor.advance(T0 + keep * MINUTE)
    tick_s = time.perf_counter() - began
    monitor.drain_changes()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    buckets = sum(len(m.ring) for m in monitor.models.values())
    return {"campaigns": len(monitor.models), "buckets": buckets, "bytes": used,
            "per_campaign": used / len(monitor.models), "tick_s": tick_s,
            "tick_ms_per_campaign": tick_s * 1000 / len(monitor.models)}


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def child_replay(folder: Path) -> dict[str, Any]:
    import heapq

    from streams.pipeline import Pipeline
    from streams.records import beacon_from_dict, order_from_dict
    from streams.replay import ReplayStats, read_jsonl
    from streams.settings import Settings

    pipeline = Pipeline.from_settings(Settings())
    stats = ReplayStats()
    merged = heapq.merge(read_jsonl(folder / "beacons.jsonl", "b", stats, 0),
                         read_jsonl(folder / "orders.jsonl", "o", stats, 1 << 40))
    samples: list[dict[str, Any]] = []
    next_hour = None
    for count, (arrival, _, kind, obj, _) in enumerate(merged, start=1):
        if kind == "b":
            pipeline.beacon(beacon_from_dict(obj))
        else:
            pipeline.order(order_from_dict(obj))
        if count % 1000 == 0:
            pipeline.flush()
        if next_hour is None:
            next_hour = arrival + 3_600_000
        elif arrival >= next_hour:
            next_hour += 3_600_000
            models = pipeline.monitor.models
            samples.append({"hour": len(samples) + 1, "rss_mb": _rss() / 1e6,
                            "sessions": len(pipeline.sessionizer),
                            "campaigns": len(models),
                            "buckets": sum(len(m.ring) for m in models.values())})
    return {"samples": samples}


def child_invented(n: int) -> dict[str, Any]:
    from streams.pipeline import Pipeline
    from streams.settings import Settings
    pipeline = Pipeline.from_settings(Settings())
    pipeline.beacon(_beacon("warm", 0, T0, "warm"))
    pipeline.flush()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        pipeline.beacon(_beacon(f"x{i:07d}", 0, T0 + i, f"made-up-{i:07d}"))
    pipeline.flush()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    began, began_cpu = time.perf_counter(), time.process_time()
    pipeline.monitor.advance(T0 + 10 * MINUTE)
    tick_s, tick_cpu_s = time.perf_counter() - began, time.process_time() - began_cpu
    from detectors.monitor import OVERFLOW
    other = pipeline.monitor.models.get(OVERFLOW)
    return {"invented": n, "models": len(pipeline.monitor.models), "bytes": used,
            "per_invented_campaign": used / n, "tick_s": tick_s, "tick_cpu_s": tick_cpu_s,
            "other_sessions": sum(b.sessions for _, b in other.ring.span(0, 1 << 62))
            if other else 0}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--campaigns", type=int, default=1_000)
    parser.add_argument("--invented", type=int, default=5_000)
    parser.add_argument("--days", type=float, default=0.5)
    parser.add_argument("--child", choices=("sessions", "campaigns", "replay", "invented"))
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        result = {"sessions": lambda: child_sessions(args.n),
                  "campaigns": lambda: child_campaigns(args.n),
                  "replay": lambda: child_replay(args.folder),
                  "invented": lambda: child_invented(args.n)}[args.child]()
        print(orjson.dumps(result).decode())
        return 0
    folder, _ = dataset(args.days)
    runs: list[dict[str, Any]] = []
    for n in range(args.runs):
        row = {"sessions": run_child([__file__, "--child", "sessions", "--n", str(args.sessions)]),
               "campaigns": run_child([__file__, "--child", "campaigns",
                                       "--n", str(args.campaigns)]),
               "invented": run_child([__file__, "--child", "invented",
                                      "--n", str(args.invented)])}
        if n == 0:
            row["replay"] = run_child([__file__, "--child", "replay", "--folder", str(folder)])
        runs.append(row)
        print(f"run {n + 1}: {row['sessions']['per_session']:,.0f} B/session, "
              f"{row['campaigns']['per_campaign']:,.0f} B/campaign, "
              f"{row['invented']['per_invented_campaign']:,.0f} B/invented campaign", flush=True)
    report(args, runs)
    return 0


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    picks = {"bytes per live session": ("sessions", "per_session"),
             "bytes per campaign (full ring)": ("campaigns", "per_campaign"),
             "tick ms per campaign": ("campaigns", "tick_ms_per_campaign"),
             "bytes per invented campaign": ("invented", "per_invented_campaign"),
             f"tick s with {args.invented:,} invented": ("invented", "tick_s")}
    stats = {name: summarise([r[part][key] for r in runs]) for name, (part, key) in picks.items()}
    rows = [[k, fmt(s["median"]), f"{fmt(s['min'])}..{fmt(s['max'])}"] for k, s in stats.items()]
    print_table(f"memory ({args.sessions:,} sessions, {args.campaigns:,} campaigns)",
                ["measure", "median", "min..max"], rows)
    samples = runs[0]["replay"]["samples"]
    print_table(f"replay of {args.days:g} days, sampled each event-time hour",
                ["hour", "RSS MB", "live sessions", "campaigns", "buckets"],
                [[s["hour"], f"{s['rss_mb']:.1f}", s["sessions"], s["campaigns"], s["buckets"]]
                 for s in samples])
    write_results("memory", {"runs": runs, "summary": stats, "args": vars(args)})


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
