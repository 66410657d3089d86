"""``revwatch simulate``: synthetic beacons and orders, as if collected, with a truth file.

:func:`generate` yields canonical beacons and order events (CONTRACT.md) in arrival order
(``received_at``); :func:`write_files` writes ``beacons.jsonl``, ``orders.jsonl`` and
``truth.json``; :func:`paced` releases records in (compressed) real time for a live feed.
The model (rates, conversion curve, incidents, traps, scenarios) is in
:mod:`streams.simulate_model`, the checkout funnel in :mod:`streams.simulate_funnel`, what
pages and browsers look like in :mod:`streams.simulate_pages`, the drawing in
:mod:`streams.simulate_engine`, and what ``truth.json`` holds in :mod:`streams.simulate_truth`.

Everything comes from one ``numpy.random.default_rng(seed)``: the same scenario gives the
same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from streams.simulate_demo import DEMO_INCIDENTS, demo_scenario
from streams.simulate_engine import Kind, Record, Run
from streams.simulate_model import Scenario, default_scenario

__all__ = ["DEMO_INCIDENTS", "Kind", "Record", "Scenario", "SimulationSummary",
           "default_scenario", "demo_scenario", "generate", "main", "paced", "truth", "write_files"]

CHUNK_RECORDS = 20_000


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    """What :func:`write_files` wrote."""

    out_dir: str
    beacons: int
    orders: int
    sessions: int
    bot_sessions: int
    incidents: int
    traps: int
    elapsed_s: float

    def line(self) -> str:
        return (f"{self.beacons} beacons, {self.orders} orders, {self.sessions} "
                f"sessions (+{self.bot_sessions} bot), {self.incidents} incidents, "
                f"{self.traps} traps -> {self.out_dir} in {self.elapsed_s:.1f}s")


def generate(s: Scenario) -> Iterator[Record]:
    """Every beacon and order record of the scenario, in arrival (``received_at``) order."""
    return Run(s).records()


def truth(s: Scenario) -> dict[str, Any]:
    """What ``truth.json`` holds for this scenario (runs the whole generation)."""
    run = Run(s)
    for _ in run.records():
        pass
    return run.truth.to_dict()


def write_files(s: Scenario, out_dir: Path) -> SimulationSummary:
    """Write ``beacons.jsonl``, ``orders.jsonl`` (one JSON object a line) and ``truth.json``."""
    began = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(s)
    with (out_dir / "beacons.jsonl").open("wb") as beacons, \
            (out_dir / "orders.jsonl").open("wb") as orders:
        _write_jsonl(run.records(), {"beacon": beacons, "order": orders})
    facts = run.truth.to_dict()
    (out_dir / "truth.json").write_bytes(orjson.dumps(facts, option=orjson.OPT_INDENT_2) + b"\n")
    rows = facts["campaigns"].values()
    return SimulationSummary(
        out_dir=str(out_dir), beacons=facts["records"]["beacons"],
        orders=facts["records"]["orders"], sessions=sum(r["sessions"] for r in rows),
        bot_sessions=sum(r["bot_sessions"] for r in rows), incidents=len(s.incidents),
        traps=len(s.traps), elapsed_s=time.perf_counter() - began)


def _write_jsonl(records: Iterable[Record], files: dict[Kind, Any]) -> None:
    chunks: dict[Kind, list[bytes]] = {"beacon": [], "order": []}
    for kind, record in records:
        chunk = chunks[kind]
        chunk.append(orjson.dumps(record))
        if len(chunk) >= CHUNK_RECORDS:
            files[kind].write(b"\n".join(chunk) + b"\n")
            chunk.clear()
    for kind, chunk in chunks.items():
        if chunk:
            files[kind].write(b"\n".join(chunk) + b"\n")


def paced(records: Iterable[Record], *, speed: float, start_wall_s: float,
          clock: Callable[[], float], sleep: Callable[[float], None] = time.sleep,
          ) -> Iterator[Record]:
    """Yield records no faster than their event time (``received_at``, else ``ts``) / speed.

    The first record is due at ``start_wall_s``; a record ``d`` seconds of event time later
    is due ``d / speed`` seconds after that. ``clock`` and ``sleep`` are injected so tests
    drive a fake clock.
    """
    if speed <= 0:
        msg = f"speed must be > 0, got {speed!r}"
        raise ValueError(msg)
    first_ms: int | None = None
    for kind, record in records:
        event_ms: int = record.get("received_at") or record["ts"]
        if first_ms is None:
            first_ms = event_ms
        wait = start_wall_s + (event_ms - first_ms) / 1000.0 / speed - clock()
        if wait > 0:
            sleep(wait)
        yield kind, record


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revwatch simulate",
                                     description="Synthetic RUM beacons and orders with truth.")
    parser.add_argument("--scenario", choices=("default", "demo"), default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=None,
                        help="event-time days (default: 3 for default, the demo's own length)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every rate")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario named on the command line (``--scenario``, ``--seed``, ...)."""
    if (args.days is not None and args.days <= 0) or args.scale <= 0:
        msg = "--days and --scale must be > 0"
        raise ValueError(msg)
    if args.scenario == "demo":
        s = demo_scenario(args.seed)
        days = s.days if args.days is None else args.days
        return replace(s, days=days, scale=args.scale)
    days = 3.0 if args.days is None else args.days
    return default_scenario(args.seed, days=days, scale=args.scale)


def main(argv: list[str]) -> int:
    """``revwatch simulate [--scenario default|demo] [--seed N] [--days D] [--scale X] --out D``."""
    args = _parser().parse_args(argv)
    try:
        s = scenario_from_args(args)
    except ValueError as exc:
        print(f"revwatch simulate: {exc}", file=sys.stderr)
        return 2
    summary = write_files(s, args.out)
    print(f"revwatch simulate: {summary.line()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
