"""Where the replay's per-record time goes: the beacons of ``bench/replay_speed.py``'s data
fed through each stage in turn, CPU seconds of each pass.

Pass 0 reads and parses every line (``orjson.loads``, the floor); pass 1 adds
:func:`~streams.records.beacon_row`; pass 2 adds ``Sessionizer.observe_row``; pass 3 adds
``Pipeline.apply`` of the session facts. The orders and the minute ticks (which the replay
runs every 1,000 records, ``bench/replay_speed.py`` times them) are left out, so the
differences between passes are each stage's own cost. The young generation is set as the
replay sets it. Pin it to a core for figures that compare:

    taskset -c 0 .venv/bin/python bench/replay_phases.py --days 1
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

import streams  # noqa: F401  (first, so the compiled build is used)
from bench.common import dataset
from streams.pipeline import Pipeline
from streams.records import beacon_row
from streams.replay import YOUNG_OBJECTS
from streams.settings import Settings

STAGES = ("orjson.loads", "+ beacon_row", "+ Sessionizer.observe_row", "+ Pipeline.apply")


def run(path: Path, stage: int) -> float:
    """CPU seconds of one pass over ``path`` through the first ``stage + 1`` stages."""
    pipeline = Pipeline.from_settings(Settings())
    observe, apply, loads = pipeline.sessionizer.observe_row, pipeline.apply, orjson.loads
    began = time.process_time()
    with path.open("rb") as handle:
        for line in handle:
            obj = loads(line)
            if stage < 1:
                continue
            row = beacon_row(obj)
            if stage < 2:
                continue
            facts = observe(row)
            if stage > 2 and facts:
                apply(facts)
    return time.process_time() - began


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=1.0)
    args = parser.parse_args(argv)
    folder, counts = dataset(args.days)
    from streams import native
    print(f"{counts['beacons']:,} beacons, {native.state}")
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])
    (folder / "beacons.jsonl").read_bytes()  # into the page cache: no pass reads the disk
    before = 0.0
    for stage, name in enumerate(STAGES):
        seconds = run(folder / "beacons.jsonl", stage)
        print(f"{name:<28} {seconds:6.2f} s CPU (+{seconds - before:.2f} s, "
              f"{(seconds - before) / counts['beacons'] * 1e6:.2f} us a beacon)", flush=True)
        before = seconds
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
