"""``revwatch replay``: the live detection code, offline, clocked by event time.

Beacons and orders are read from JSONL files (each in arrival order), merged by
``received_at`` (else ``ts``), and pushed through :class:`~streams.pipeline.Pipeline`, the
same Sessionizer, Monitor and IncidentManager the Faust agents run. Alerts are written one
JSON object per line. A line that cannot be read is reported as ``FILE:LINE: reason`` on
stderr and skipped; the good lines around it still count.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.incidents import Alert
from streams.errors import InputFileError, InvalidRecord
from streams.pipeline import Pipeline
from streams.records import beacon_row, order_from_dict
from streams.settings import Settings

PROGRESS_EVERY = 200_000
YOUNG_OBJECTS = 50_000  # objects allocated between collections of the young generation


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
                _bad(stats, InputFileError(str(path), number, _not_timed(obj)))
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
    started = time.perf_counter()
    run = _Run(Pipeline.from_settings(settings), out, stats, progress, (beacons, orders))
    with _fewer_collections():
        run.play()
        _write(out, run.pipeline.flush(), stats)
    stats.seconds = time.perf_counter() - started
    return stats


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often (the previous thresholds come back after).

    A replay keeps ~10k live sessions of small containers and makes no cyclic garbage
    (none collected over a simulated day), yet with CPython's default thresholds
    (700, 10, 10) it scans them ~300 times a day: 1.3 s of ~13 s CPU. With a young
    generation of 50,000 objects that is ~0.04 s; cycles, if any, are still collected.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], YOUNG_OBJECTS), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


class _Run:
    """One replay: beacons read and fed in one loop, orders merged in by arrival time.

    The records go through in the order ``heapq.merge`` of the two :func:`read_jsonl`
    streams gives (by arrival, then beacons before orders, then line), and each file is
    read as far as that merge would have read it, so bad lines are reported in the same
    order; beacons are fed as :func:`~streams.records.beacon_row` tuples.
    """

    def __init__(self, pipeline: Pipeline, out: IO[bytes], stats: ReplayStats,
                 progress: Callable[[str], None] | None, paths: tuple[Path, Path]) -> None:
        self.pipeline, self.out, self.stats, self.progress = pipeline, out, stats, progress
        self.paths = paths
        self.orders = read_jsonl(paths[1], "o", stats, 1 << 40)
        self.count = 0

    def play(self) -> None:
        """Every record of both files, merged by arrival (``heapq.merge`` order)."""
        order = self._beacons()
        while order is not None:
            self._order(order)
            order = next(self.orders, None)

    def _beacons(self) -> Record | None:
        """Feed the beacons and the orders that arrive before them; the next order left."""
        loads, decode_error, bad, write = orjson.loads, orjson.JSONDecodeError, _bad, _write
        stats, out, path = self.stats, self.out, self.paths[0]
        observe, apply = self.pipeline.sessionizer.observe_row, self.pipeline.apply
        order: Record | None = None
        primed, fed, count = False, 0, self.count
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    obj = loads(line)
                except decode_error as exc:
                    if line.strip():  # blank lines are skipped silently
                        bad(stats, InputFileError(str(path), number, _reason(exc)))
                    continue
                arrival = obj.get("received_at") or obj.get("ts") if type(obj) is dict else None
                if not isinstance(arrival, (int, float)):
                    bad(stats, InputFileError(str(path), number, _not_timed(obj)))
                    continue
                if not primed:  # heapq.merge reads the first order after the first beacon
                    order, primed = next(self.orders, None), True
                if order is not None and order[0] < int(arrival):
                    self.count = count
                    order = self._orders_before(order, int(arrival))
                    count = self.count
                try:
                    row = beacon_row(obj)
                    fed += 1
                    facts = observe(row)
                    if facts and (alerts := apply(facts)):
                        write(out, alerts, stats)
                except InvalidRecord as exc:
                    bad(stats, InputFileError(str(path), number, exc.reason))
                count += 1
                if count % 1000 == 0:
                    self.count = count
                    self._thousand()
        self.count = count
        stats.beacons += fed
        return order if primed else next(self.orders, None)

    def _orders_before(self, order: Record | None, arrival: int) -> Record | None:
        """Feed the orders that arrived before ``arrival``; the first one left."""
        while order is not None and order[0] < arrival:
            self._order(order)
            order = next(self.orders, None)
        return order

    def _order(self, record: Record) -> None:
        try:
            order = order_from_dict(record[3])
            self.stats.orders += 1
            alerts = self.pipeline.order(order)
            if alerts:
                _write(self.out, alerts, self.stats)
        except InvalidRecord as exc:
            _bad(self.stats, InputFileError(str(self.paths[1]), record[4], exc.reason))
        self.count += 1
        if self.count % 1000 == 0:
            self._thousand()

    def _thousand(self) -> None:
        """Every 1,000 records: emit what became due (as the agents do per batch)."""
        _write(self.out, self.pipeline.flush(), self.stats)
        if self.progress and self.count % PROGRESS_EVERY == 0:
            self.progress(f"{self.count:,} records, "
                          f"watermark {self.pipeline.sessionizer.watermark_ms}")


def _not_timed(obj: object) -> str:
    return "no numeric 'received_at' or 'ts'" if isinstance(obj, dict) \
        else "expected a JSON object"


def _write(out: IO[bytes], alerts: list[Alert], stats: ReplayStats) -> None:
    for alert in alerts:
        out.write(orjson.dumps(alert.to_dict()) + b"\n")
    stats.alerts += len(alerts)
