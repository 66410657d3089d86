"""``revwatch replay``: the live detection code, offline, clocked by event time.

Beacons and orders are read from JSONL files (each in arrival order), merged by
``received_at`` (else ``ts``), and pushed through :class:`~streams.pipeline.Pipeline`, the
same Sessionizer, Monitor and IncidentManager the Faust agents run. Alerts are written one
JSON object per line. A line that cannot be read is reported as ``FILE:LINE: reason`` on
stderr and skipped; the good lines around it still count.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.incidents import Alert
from streams.errors import InputFileError, InvalidRecord
from streams.pipeline import Pipeline
from streams.records import beacon_from_dict, order_from_dict
from streams.settings import Settings

PROGRESS_EVERY = 200_000


@dataclass
class ReplayStats:
    beacons: int = 0
    orders: int = 0
    alerts: int = 0
    bad_lines: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = (self.beacons + self.orders) / self.seconds if self.seconds else 0.0
        return (f"replayed {self.beacons:,} beacons and {self.orders:,} orders in "
                f"{self.seconds:.1f} s ({rate:,.0f} records/s): {self.alerts} alert updates, "
                f"{self.bad_lines} unreadable lines")


Record = tuple[int, int, str, dict[str, Any], int]  # (arrival ms, sequence, kind, object, line)


def read_jsonl(path: Path, kind: str, stats: ReplayStats, order_base: int) -> Iterator[Record]:
    """Objects of one JSONL file with their arrival time; bad lines reported and skipped."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                obj = loads(line)
            except decode_error as exc:
                if line.strip():  # blank lines are skipped silently
                    _bad(stats, InputFileError(str(path), number, _reason(exc)))
                continue
            arrival = obj.get("received_at") or obj.get("ts") if type(obj) is dict else None
            if not isinstance(arrival, (int, float)):
                what = "no numeric 'received_at' or 'ts'" if isinstance(obj, dict) \
                    else "expected a JSON object"
                _bad(stats, InputFileError(str(path), number, what))
                continue
            yield int(arrival), order_base + number, kind, obj, number


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, InvalidRecord) else f"not valid JSON ({exc})"


def _bad(stats: ReplayStats, error: InputFileError) -> None:
    stats.bad_lines += 1
    if len(stats.errors) < 1000:
        stats.errors.append(str(error))
    print(f"revwatch replay: {error}", file=sys.stderr)


def replay(beacons: Path, orders: Path, out: IO[bytes], settings: Settings,
           progress: Callable[[str], None] | None = None) -> ReplayStats:
    """Run the pipeline over both files; write alerts to ``out``; return the counts."""
    stats = ReplayStats()
    pipeline = Pipeline.from_settings(settings)
    started = time.perf_counter()
    merged = heapq.merge(read_jsonl(beacons, "b", stats, 0),
                         read_jsonl(orders, "o", stats, 1 << 40))
    paths = {"b": beacons, "o": orders}
    feed_beacon, feed_order = pipeline.beacon, pipeline.order
    for count, (_, _, kind, obj, line) in enumerate(merged, start=1):
        try:
            if kind == "b":
                beacon = beacon_from_dict(obj)
                stats.beacons += 1
                alerts = feed_beacon(beacon)
            else:
                order = order_from_dict(obj)
                stats.orders += 1
                alerts = feed_order(order)
            if alerts:
                _write(out, alerts, stats)
        except InvalidRecord as exc:
            _bad(stats, InputFileError(str(paths[kind]), line, exc.reason))
        if count % 1000 == 0:
            _write(out, pipeline.flush(), stats)
        if progress and count % PROGRESS_EVERY == 0:
            progress(f"{count:,} records, watermark {pipeline.sessionizer.watermark_ms}")
    _write(out, pipeline.flush(), stats)
    stats.seconds = time.perf_counter() - started
    return stats


def _write(out: IO[bytes], alerts: list[Alert], stats: ReplayStats) -> None:
    for alert in alerts:
        out.write(orjson.dumps(alert.to_dict()) + b"\n")
    stats.alerts += len(alerts)
