"""Scale: 1, 2, 4 workers, joined and settled *before* the records arrive.

``bench/worker_throughput.py --workers 1 2 4`` starts the workers on a pre-loaded backlog,
so each join is a rebalance in the middle of the work and a short backlog measures mostly
rebalancing. Here, per worker count:

1. fresh input and output topics (``--partitions``, default 8) and a fresh app id;
2. N ``revwatch worker`` processes started, then waited for until the consumer group is
   ``Stable`` with N members, every worker answers ``/readyz`` 200, and that has held for
   ``--settle`` seconds (no rebalance left to come);
3. the records produced as fast as one producer can (``streams.feed``, this process);
4. timed from the first record produced to the group's committed offsets reaching the end
   of both input topics (the records processed, +-1 s: commits every second, polled), with
   the workers' CPU seconds over the same span;
5. the floor: a bare ``AIOKafkaConsumer`` decoding the same topics (as in
   ``worker_throughput.py``).

The producer shares the machine with the workers; its time is reported (``feed_s``). On a
machine with fewer cores than workers + producer + broker the curve flattens: the per-core
figure (records per worker CPU second) is the one that carries over to more cores.

Usage: ``python bench/worker_scale.py [--days 0.3] [--workers 1 2 4] [--runs 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import (
    dataset,
    fmt,
    http_ok,
    kafka,
    print_table,
    processes,
    summarise,
    wait_for,
    write_results,
)
from bench.worker_throughput import _caught_up, _cpu_s, run_floor, start_workers
from streams.settings import Settings


def settled(bootstrap: str, group: str, ports: list[int]) -> bool:
    """The group is Stable with one member per worker and every worker is ready."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    import streams.topics  # noqa: F401  (imports kafka-python quietly)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        info = admin.describe_groups([group]).get(group) or {}
    except KafkaError:  # e.g. no coordinator yet: the group does not exist so far
        return False
    finally:
        admin.close()
    state = info.get("group_state") or info.get("state")
    members = info.get("members") or []
    return (state == "Stable" and len(members) == len(ports)
            and all(http_ok(f"http://127.0.0.1:{port}/readyz") for port in ports))


def wait_settled(bootstrap: str, group: str, ports: list[int], hold_s: float) -> float:
    """Block until :func:`settled` has held for ``hold_s``; return the seconds it took."""
    began = time.monotonic()
    since: float | None = None

    def held() -> bool:
        nonlocal since
        if not settled(bootstrap, group, ports):
            since = None
            return False
        since = since or time.monotonic()
        return time.monotonic() - since >= hold_s

    wait_for(held, 300, f"{len(ports)} workers to join and settle", every_s=0.5)
    return time.monotonic() - began


def produce(bootstrap: str, folder: Path, topics: dict[str, str]) -> int:
    from streams.feed import feed

    def records() -> Any:
        for kind, name in (("beacon", "beacons.jsonl"), ("order", "orders.jsonl")):
            with (folder / name).open("rb") as handle:
                for line in handle:
                    yield kind, orjson.loads(line)

    stats = asyncio.run(feed(bootstrap, records(), beacons_topic=topics["beacons"],
                             orders_topic=topics["orders"]))
    return stats.beacons + stats.orders


def run_scale(bootstrap: str, folder: Path, workers: int, partitions: int, hold_s: float
              ) -> dict[str, Any]:
    from streams.topics import ensure_topics, revwatch_topics

    tag = f"bs-{uuid.uuid4().hex[:8]}"
    base = Settings(broker=f"kafka://{bootstrap}", app_id=tag, beacons_topic=f"{tag}-beacons",
                    orders_topic=f"{tag}-orders", facts_topic=f"{tag}-facts",
                    verdicts_topic=f"{tag}-verdicts", alerts_topic=f"{tag}-alerts",
                    dead_letter_topic=f"{tag}-dead", partitions=partitions, log_level="error")
    ensure_topics(bootstrap, revwatch_topics(base))
    topics = {"beacons": base.beacons_topic, "orders": base.orders_topic}
    with processes() as started:
        ports = start_workers(base, workers, started)
        settle_s = wait_settled(bootstrap, tag, ports, hold_s)
        cpu0, t0 = _cpu_s(started), time.monotonic()
        records = produce(bootstrap, folder, topics)
        feed_s = time.monotonic() - t0
        wait_for(lambda: _caught_up(bootstrap, tag, topics, started), 1800,
                 "the workers to commit the end of the input topics", every_s=0.25)
        seconds, cpu = time.monotonic() - t0, _cpu_s(started) - cpu0
    floor = run_floor(bootstrap, topics | {"records": records})
    return {"workers": workers, "records": records, "settle_s": settle_s, "feed_s": feed_s,
            "seconds": seconds, "rps": records / seconds, "cpu_s": cpu,
            "rps_per_cpu_s": records / cpu, "floor_s": floor["seconds"],
            "floor_rps": records / floor["seconds"], "floor_cpu_s": floor["cpu_s"],
            "ratio": floor["seconds"] / seconds, "cpu_ratio": floor["cpu_s"] / cpu}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=0.3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds settled first")
    args = parser.parse_args(argv)
    folder, counts = dataset(args.days, args.scale)
    rows: list[dict[str, Any]] = []
    with kafka() as bootstrap:
        for n in range(args.runs):
            for workers in args.workers:
                row = run_scale(bootstrap, folder, workers, args.partitions, args.settle)
                rows.append(row | {"run": n + 1})
                print(", ".join(f"{k} {fmt(v) if isinstance(v, float) else v}"
                                for k, v in row.items()), flush=True)
    report(args, counts, rows)
    return 0


def report(args: argparse.Namespace, counts: dict[str, int], rows: list[dict[str, Any]]
           ) -> None:
    keys = ("rps", "rps_per_cpu_s", "ratio", "cpu_ratio", "seconds", "feed_s", "settle_s")
    stats = {w: {k: summarise([r[k] for r in rows if r["workers"] == w]) for k in keys}
             for w in args.workers}
    table = [[str(w), *(fmt(stats[w][k]["median"]) for k in keys)] for w in args.workers]
    print_table(f"scale: {rows[0]['records']:,} records ({args.days:g} days), "
                f"{args.partitions} partitions, workers settled first",
                ["workers", "rec/s", "rec per worker CPU s", "ratio", "CPU ratio",
                 "seconds", "feed s", "settle s"], table)
    suffix = "-".join(str(w) for w in args.workers)
    write_results(f"worker_scale-w{suffix}", {
        "days": args.days, "scale": args.scale, "partitions": args.partitions,
        "counts": counts, "settle_hold_s": args.settle, "runs": rows,
        "summary": {str(w): s for w, s in stats.items()}})


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
