"""Worker throughput through Kafka against a bare aiokafka consumer on the same records.

Beacons and orders of ``default_scenario`` are produced once to two topics of
``--partitions`` partitions (keyed by session id, as the collector does). Then, per run:

* floor: one process with a bare ``AIOKafkaConsumer`` (new group, earliest) that only
  ``orjson.loads`` every value, until it has seen every record; time from its first
  batch to its last;
* system: N ``revwatch worker`` processes (new app id, new output topics), started
  together; time from the first record they wrote (session facts) to the last record
  they wrote (facts, verdicts and alerts), read back from the broker once the workers'
  group has committed the end of both input topics and the outputs have been still for
  ``SETTLE_S``.

Throughput = input records / time. Target for one worker: >= 0.5 x floor. Three times per
run: to the last output (``wN_s``; in a run shorter than ``IDLE_S`` this includes the wait
for the order partitions, read first, to count as idle), to the inputs committed
(``wN_consumed_s``, +-1 s: commits every second, polled), and the workers' CPU seconds
from the first output to the last (``wN_cpu_s``) and to the inputs committed, against the
floor's CPU seconds (``wN_consumed_cpu_ratio``: less sensitive to other work on a shared
machine than wall time).

Usage: ``python bench/worker_throughput.py [--days 0.25] [--workers 1 2 4] [--runs 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import (
    DATA,
    PYTHON,
    ROOT,
    dataset,
    fmt,
    free_port,
    kafka,
    print_table,
    processes,
    summarise,
    wait_for,
    write_results,
)
from streams.app import IDLE_TICK_S
from streams.settings import Settings
from streams.stages import IDLE_S

TARGET = 0.5
# Outputs still for longer than an input takes to count as idle (IDLE_S) plus the idle timer
# (IDLE_TICK_S): the last minutes, held back by order partitions read long before the end,
# come out then. A shorter wait missed them in fast runs (fewer outputs, a shorter time).
SETTLE_S = IDLE_S + IDLE_TICK_S + 2.0
PROFILE = bool(os.environ.get("BENCH_PROFILE"))  # py-spy each worker (BENCH_PROFILE_RATE)


def preload(bootstrap: str, folder: Path, prefix: str, partitions: int) -> dict[str, Any]:
    """Produce both files to ``PREFIX-beacons`` and ``PREFIX-orders``; return the names."""
    from streams.feed import feed
    from streams.topics import ensure_topics, revwatch_topics

    settings = Settings(beacons_topic=f"{prefix}-beacons", orders_topic=f"{prefix}-orders",
                        facts_topic=f"{prefix}-unused-f", alerts_topic=f"{prefix}-unused-a",
                        dead_letter_topic=f"{prefix}-unused-d",
                        verdicts_topic=f"{prefix}-unused-v", partitions=partitions)
    ensure_topics(bootstrap, revwatch_topics(settings))

    def records() -> Any:
        for kind, name in (("beacon", "beacons.jsonl"), ("order", "orders.jsonl")):
            with (folder / name).open("rb") as handle:
                for line in handle:
                    yield kind, orjson.loads(line)

    began = time.perf_counter()
    stats = asyncio.run(feed(bootstrap, records(), beacons_topic=settings.beacons_topic,
                             orders_topic=settings.orders_topic))
    print(f"pre-loaded {stats.beacons:,} beacons and {stats.orders:,} orders in "
          f"{time.perf_counter() - began:.1f}s", flush=True)
    return {"beacons": settings.beacons_topic, "orders": settings.orders_topic,
            "records": stats.beacons + stats.orders}


async def bare_consumer(bootstrap: str, topics: list[str], expected: int) -> dict[str, Any]:
    """The floor: consume and decode every record, nothing else."""
    from aiokafka import AIOKafkaConsumer
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                                group_id=f"bench-floor-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    started = time.perf_counter()
    await consumer.start()
    first = last = cpu_first = cpu_last = 0.0
    seen = 0
    try:
        while seen < expected and time.perf_counter() - started < 600:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
            if seen and not first:
                first, cpu_first = time.perf_counter(), time.process_time()
            last, cpu_last = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return {"records": seen, "seconds": last - first, "from_start_s": last - started,
            "cpu_s": cpu_last - cpu_first}


def run_floor(bootstrap: str, topics: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, __file__, "--child-floor", bootstrap, topics["beacons"], topics["orders"],
         str(topics["records"])], capture_output=True, text=True, timeout=900, cwd=ROOT,
        check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return dict(orjson.loads(done.stdout.strip().splitlines()[-1]))


def run_workers(bootstrap: str, topics: dict[str, Any], workers: int, partitions: int
                ) -> dict[str, Any]:
    """Start ``workers`` workers on fresh output topics; time first to last output."""
    from streams.topics import ensure_topics, revwatch_topics

    tag = f"bw-{uuid.uuid4().hex[:8]}"
    base = Settings(broker=f"kafka://{bootstrap}", app_id=tag, beacons_topic=topics["beacons"],
                    orders_topic=topics["orders"], facts_topic=f"{tag}-facts",
                    verdicts_topic=f"{tag}-verdicts", alerts_topic=f"{tag}-alerts",
                    dead_letter_topic=f"{tag}-dead", partitions=partitions,
                    log_level="error")
    ensure_topics(bootstrap, revwatch_topics(base))
    outputs = [base.facts_topic, base.verdicts_topic, base.alerts_topic]
    with processes() as started:
        start_workers(base, workers, started)
        cpu: list[tuple[float, float]] = []  # (wall ms, CPU s of the workers) samples

        def caught_up() -> bool:
            cpu.append((time.time() * 1000.0, _cpu_s(started)))
            return _caught_up(bootstrap, tag, topics, started)

        wait_for(caught_up, 1800, "the workers to commit the end of the input topics",
                 every_s=0.25)
        caught_up_ms = time.time() * 1000.0
        _wait_outputs_settle(bootstrap, outputs, lambda: cpu.append(
            (time.time() * 1000.0, _cpu_s(started))), quiet_s=SETTLE_S)
    out = _read_outputs(bootstrap, outputs)
    return out | {"workers": workers,
                  "consumed_s": (caught_up_ms - out["first_ms"]) / 1000.0,
                  "cpu_s": _at(cpu, out["first_ms"] + 1000.0 * out["seconds"])
                  - _at(cpu, out["first_ms"]),
                  "consumed_cpu_s": _at(cpu, caught_up_ms) - _at(cpu, out["first_ms"])}


def start_workers(base: Settings, workers: int, started: list[subprocess.Popen[bytes]]
                  ) -> list[int]:
    """Start ``workers`` ``revwatch worker`` processes with ``base``; return their web ports."""
    ports: list[int] = []
    for n in range(workers):
        data_dir = DATA / "workers" / f"{base.app_id}-{n}"
        data_dir.mkdir(parents=True, exist_ok=True)
        run = base.replace(web_port=free_port(), data_dir=data_dir)
        ports.append(run.web_port)
        log = (data_dir / "worker.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REVWATCH_")}
        command = [PYTHON, "-m", "streams.cli", "worker"]
        if PROFILE:
            rate = os.environ.get("BENCH_PROFILE_RATE", "50")  # samples a second
            command = [str(Path(PYTHON).parent / "py-spy"), "record", "--format", "raw",
                       "--rate", rate, "-o", str(data_dir / "py-spy.txt"), "--", *command]
        started.append(subprocess.Popen(
            command, env={**env, **run.to_env()},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT))
    return ports


def _cpu_s(started: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds so far of the worker processes (not py-spy's)."""
    sessions = {proc.pid for proc in started}
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
        parts = fields.split()
        if int(parts[3]) in sessions and comm != "py-spy":  # session id, utime, stime
            ticks += int(parts[11]) + int(parts[12])
    return ticks / float(os.sysconf("SC_CLK_TCK"))


def _at(samples: list[tuple[float, float]], when_ms: float) -> float:
    """CPU seconds at ``when_ms``, interpolated between samples."""
    before = [s for s in samples if s[0] <= when_ms] or samples[:1]
    after = [s for s in samples if s[0] >= when_ms] or samples[-1:]
    (t0, c0), (t1, c1) = before[-1], after[0]
    return c0 if t1 == t0 else c0 + (c1 - c0) * (when_ms - t0) / (t1 - t0)


def _caught_up(bootstrap: str, group: str, topics: dict[str, Any],
               started: list[subprocess.Popen[bytes]]) -> bool:
    for proc in started:
        if proc.poll() is not None:
            msg = f"a worker exited with {proc.returncode}; see {DATA / 'workers'}"
            raise RuntimeError(msg)
    committed, ends = _offsets(bootstrap, group, [topics["beacons"], topics["orders"]])
    return bool(ends) and all(committed.get(tp, -1) >= end for tp, end in ends.items())


def _offsets(bootstrap: str, group: str, names: list[str]) -> tuple[dict[Any, int], dict[Any, int]]:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    import streams.topics  # noqa: F401  (imports kafka-python quietly)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        found = admin.list_group_offsets({group: None}).get(group) or {}
        committed = {tp: getattr(meta, "offset", meta) for tp, meta in found.items()}
        parts = [TopicPartition(n, p) for n in names
                 for p in sorted(consumer.partitions_for_topic(n) or ())]
        ends = consumer.end_offsets(parts)
    finally:
        consumer.close()
        admin.close()
    return committed, ends


def _wait_outputs_settle(bootstrap: str, outputs: list[str], sample: Any,
                         quiet_s: float = 5.0) -> None:
    previous: dict[Any, int] = {}
    stable_since = time.monotonic()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        sample()
        _, ends = _offsets(bootstrap, "bench-none", outputs)
        if ends != previous:
            previous, stable_since = ends, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            return
        time.sleep(0.5)


def _read_outputs(bootstrap: str, outputs: list[str]) -> dict[str, Any]:
    """Count the output records and find the first and last write time (ms)."""
    from kafka import KafkaConsumer, TopicPartition

    import streams.topics  # noqa: F401

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000, auto_offset_reset="earliest")
    parts = [TopicPartition(n, p) for n in outputs
             for p in sorted(consumer.partitions_for_topic(n) or ())]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    counts = dict.fromkeys(outputs, 0)
    stamps: dict[str, list[int]] = {name: [] for name in outputs}
    for record in consumer:
        counts[record.topic] += 1
        stamps[record.topic].append(record.timestamp)
    consumer.close()
    first = min(min(t) for t in stamps.values() if t)
    last = max(max(t) for t in stamps.values() if t)
    spans = {name: [(min(t) - first) / 1000.0, (max(t) - first) / 1000.0]
             for name, t in stamps.items() if t}
    return {"seconds": (last - first) / 1000.0, "outputs": counts, "spans_s": spans,
            "first_ms": first}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=0.25)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--child-floor", nargs=4, metavar=("BOOTSTRAP", "B", "O", "N"))
    args = parser.parse_args(argv)
    if args.child_floor:
        bootstrap, beacons, orders, n = args.child_floor
        print(orjson.dumps(asyncio.run(bare_consumer(bootstrap, [beacons, orders], int(n))))
              .decode())
        return 0
    folder, counts = dataset(args.days, args.scale)
    with kafka() as bootstrap:
        topics = preload(bootstrap, folder, f"bench-{uuid.uuid4().hex[:8]}", args.partitions)
        runs: list[dict[str, Any]] = []
        for n in range(args.runs):
            floor = run_floor(bootstrap, topics)
            row: dict[str, Any] = {"floor_s": floor["seconds"],
                                   "floor_rps": topics["records"] / floor["seconds"],
                                   "floor_cpu_s": floor["cpu_s"]}
            for workers in args.workers:
                out = run_workers(bootstrap, topics, workers, args.partitions)
                rps = topics["records"] / out["seconds"]
                consumed_rps = topics["records"] / out["consumed_s"]
                row[f"w{workers}_s"] = out["seconds"]
                row[f"w{workers}_rps"] = rps
                row[f"w{workers}_ratio"] = rps / row["floor_rps"]
                row[f"w{workers}_consumed_s"] = out["consumed_s"]
                row[f"w{workers}_consumed_rps"] = consumed_rps
                row[f"w{workers}_consumed_ratio"] = consumed_rps / row["floor_rps"]
                # CPU seconds between the first and the last output: less sensitive to
                # other work on the machine than wall time (both are reported)
                row[f"w{workers}_cpu_s"] = out["cpu_s"]
                row[f"w{workers}_consumed_cpu_s"] = out["consumed_cpu_s"]
                row[f"w{workers}_consumed_cpu_ratio"] = floor["cpu_s"] / out["consumed_cpu_s"]
                row[f"w{workers}_outputs"] = out["outputs"]
                row[f"w{workers}_spans_s"] = out["spans_s"]
            runs.append(row)
            print(f"run {n + 1}: " + ", ".join(f"{k} {fmt(v)}" for k, v in row.items()
                                               if isinstance(v, float)), flush=True)
    report(args, counts, topics, runs)
    return 0


def report(args: argparse.Namespace, counts: dict[str, int], topics: dict[str, Any],
           runs: list[dict[str, Any]]) -> None:
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    stats = {k: summarise([r[k] for r in runs]) for k in keys}
    rows = [[k, fmt(s["median"]), f"{fmt(s['min'])}..{fmt(s['max'])}"] for k, s in stats.items()]
    for workers in args.workers:
        per_core = stats[f"w{workers}_rps"]["median"] / min(workers, 2)
        rows.append([f"w{workers} records/s per core used", fmt(per_core), ""])
    print_table(f"worker: {topics['records']:,} records ({args.days:g} days x{args.scale:g}), "
                f"{args.partitions} partitions; target w1_ratio >= {TARGET:g}",
                ["measure", "median", "min..max"], rows)
    for key in ("w1_ratio", "w1_consumed_ratio", "w1_consumed_cpu_ratio"):
        print(f"{key} per run: " + ", ".join(f"{r.get(key, 0):.4f}" for r in runs))
    suffix = "-".join(str(w) for w in args.workers)
    write_results(f"worker_throughput-w{suffix}", {
        "days": args.days, "scale": args.scale, "partitions": args.partitions,
        "records": topics["records"], "counts": counts, "target_ratio": TARGET,
        "runs": runs, "summary": stats})


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
