"""Replay speed: ``revwatch replay`` against reading and parsing the same JSONL with orjson.

Each run starts two fresh child processes pinned to one core (``taskset -c 0``): the
floor reads every line of ``beacons.jsonl`` and ``orders.jsonl`` and calls
``orjson.loads`` on it; the replay runs :func:`streams.replay.replay` on the same files
(alerts to an in-memory buffer). The replay child also reports how much of its time went
into the monitor's minute ticks (``Pipeline._tick``, wall and CPU), which do not depend on
the number of records. Target: replay / floor <= 4 (compare CPU: the machine is shared).

Usage: ``python bench/replay_speed.py [--days 2] [--scale 1] [--runs 3] [--cpu 0]``
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import dataset, fmt, print_table, run_child, summarise, write_results

TARGET = 4.0


def floor_child(folder: Path) -> dict[str, Any]:
    """Read and parse every line; nothing else."""
    began, cpu = time.perf_counter(), time.process_time()
    count = 0
    for name in ("beacons.jsonl", "orders.jsonl"):
        with (folder / name).open("rb") as handle:
            for line in handle:
                orjson.loads(line)
                count += 1
    return {"seconds": time.perf_counter() - began, "records": count,
            "cpu_seconds": time.process_time() - cpu}


def replay_child(folder: Path) -> dict[str, Any]:
    """The real replay, with the minute ticks timed apart."""
    import streams.pipeline as pipeline_module
    from streams.replay import replay
    from streams.settings import Settings

    tick_s = [0.0, 0.0]  # wall, CPU
    original = pipeline_module.Pipeline._tick

    def timed_tick(self: Any, watermark_ms: int) -> Any:
        began, began_cpu = time.perf_counter(), time.process_time()
        try:
            return original(self, watermark_ms)
        finally:
            tick_s[0] += time.perf_counter() - began
            tick_s[1] += time.process_time() - began_cpu

    pipeline_module.Pipeline._tick = timed_tick  # type: ignore[method-assign]
    cpu = time.process_time()
    stats = replay(folder / "beacons.jsonl", folder / "orders.jsonl", io.BytesIO(), Settings())
    return {"seconds": stats.seconds, "records": stats.beacons + stats.orders,
            "cpu_seconds": time.process_time() - cpu,
            "alerts": stats.alerts, "tick_seconds": tick_s[0], "tick_cpu_seconds": tick_s[1]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", default="0", help="core for taskset (empty: not pinned)")
    parser.add_argument("--child", choices=("floor", "replay"))
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        child = floor_child if args.child == "floor" else replay_child
        print(orjson.dumps(child(args.folder)).decode())
        return 0
    folder, counts = dataset(args.days, args.scale)
    cpus = args.cpu or None
    runs = []
    for n in range(args.runs):
        floor = run_child([__file__, "--child", "floor", "--folder", str(folder)], cpus=cpus)
        rep = run_child([__file__, "--child", "replay", "--folder", str(folder)], cpus=cpus)
        runs.append({"floor_s": floor["seconds"], "replay_s": rep["seconds"],
                     "tick_s": rep["tick_seconds"], "tick_cpu_s": rep["tick_cpu_seconds"],
                     "records": rep["records"],
                     "alerts": rep["alerts"], "ratio": rep["seconds"] / floor["seconds"],
                     "floor_cpu_s": floor["cpu_seconds"], "replay_cpu_s": rep["cpu_seconds"],
                     "cpu_ratio": rep["cpu_seconds"] / floor["cpu_seconds"],
                     "cpu_ratio_without_ticks": (rep["cpu_seconds"] - rep["tick_cpu_seconds"])
                     / floor["cpu_seconds"],
                     "ratio_without_ticks": (rep["seconds"] - rep["tick_seconds"])
                     / floor["seconds"]})
        print(f"run {n + 1}: floor {floor['seconds']:.2f}s replay {rep['seconds']:.2f}s "
              f"(ticks {rep['tick_seconds']:.2f}s) ratio {runs[-1]['ratio']:.1f} "
              f"cpu ratio {runs[-1]['cpu_ratio']:.1f} (cpu: floor {floor['cpu_seconds']:.2f}s "
              f"replay {rep['cpu_seconds']:.2f}s, ticks {rep['tick_cpu_seconds']:.2f}s)",
              flush=True)
    report(args, counts, runs, cpus)
    return 0


def report(args: argparse.Namespace, counts: dict[str, int], runs: list[dict[str, Any]],
           cpus: str | None) -> None:
    keys = ("floor_s", "replay_s", "tick_s", "ratio", "ratio_without_ticks", "floor_cpu_s",
            "replay_cpu_s", "tick_cpu_s", "cpu_ratio", "cpu_ratio_without_ticks")
    stats = {key: summarise([r[key] for r in runs]) for key in keys}
    records = runs[0]["records"]
    rows = [[key, fmt(s["median"]), f"{fmt(s['min'])}..{fmt(s['max'])}"]
            for key, s in stats.items()]
    rows.append(["replay records/s", fmt(records / stats["replay_s"]["median"]), ""])
    rows.append(["floor records/s", fmt(records / stats["floor_s"]["median"]), ""])
    print_table(f"replay: {counts['beacons']:,} beacons + {counts['orders']:,} orders, "
                f"{args.days:g} days x{args.scale:g}, cpu {cpus or 'any'}; target ratio <= "
                f"{TARGET:g}", ["measure", "median", "min..max"], rows)
    print("ratios per run: " + ", ".join(f"{r['ratio']:.2f}" for r in runs))
    print("cpu ratios per run: " + ", ".join(f"{r['cpu_ratio']:.2f}" for r in runs))
    write_results(f"replay_speed-d{args.days:g}-x{args.scale:g}", {
        "days": args.days, "scale": args.scale, "cpus": cpus, "counts": counts,
        "target_ratio": TARGET, "runs": runs, "summary": stats})


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
