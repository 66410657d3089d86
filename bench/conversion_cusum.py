"""revwatch against the best detector that does not know when a drop starts, same false alarms.

``bench/conversion_power.py``'s oracle knows the onset of the drop; revwatch does not, and
a detector that must watch every minute for an onset needs more evidence for the same
false-alarm rate (Lorden 1971: about ``log(ARL)`` rather than ``log(1/alpha)``). This
benchmark measures that *unknown-onset oracle*: a window-limited Poisson CUSUM that knows
the normal rate, the lag distribution and the size of the drop (its likelihood ratio is
the optimal statistic for that drop, Moustakides 1986), with its threshold set by
simulation so that it raises as many false-alarm episodes per day as revwatch does, on
the same kind of days. Both run on the same simulated drops. Meaning:
``docs/CONVERSION-POWER.md``.

    .venv/bin/python bench/conversion_cusum.py            # about 4 min on 2 shared cores
    .venv/bin/python bench/conversion_cusum.py --quick    # about 40 s
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

import streams  # noqa: F401  (first, so the compiled build is used)
from bench.common import print_table, write_results
from bench.conversion_oracle import oracle_first_alarm, seen_probability
from bench.conversion_power import (
    CONVERSION_RATE,
    DAY_MINUTES,
    FOLLOW_MINUTES,
    Rules,
    Stream,
    learned_lag,
    make_rules,
    openings,
    prefix_baseline,
    quantile,
    run_ticks,
    simulate,
)

FloatArray = npt.NDArray[np.float64]

CELLS = ((0.25, 0.4), (0.5, 0.5), (1.0, 0.5), (1.5, 0.5), (1.5, 0.4), (3.0, 0.5), (6.0, 0.5))
MIN_EPISODES = 12  # the CUSUM threshold is read where the null days show this many episodes
GRID = np.arange(2.0, 16.0, 0.05)  # CUSUM thresholds tried (log likelihood ratio)


def cusum_path(stream: Stream, horizon: int, factor: float) -> FloatArray:
    """At each tick, ``max_s log LR`` of "rate x factor since minute s" against normal, ``s``
    over the last ``horizon`` session minutes, with the true rate and the true share of
    each minute's orders in by then."""
    rows = stream.sessions.size
    seen_share = seen_probability(np.arange(horizon, 0, -1, dtype=np.float64))
    diagonal = (np.arange(horizon), np.arange(horizon - 1, -1, -1))
    log_ratio, gain = math.log(factor), 1.0 - factor
    out = np.zeros(rows - horizon)
    for n, k in enumerate(range(horizon + 1, rows + 1)):
        seen = stream.seen[k - horizon:k][diagonal]
        expected = stream.sessions[k - horizon:k] * CONVERSION_RATE * seen_share
        out[n] = max(0.0, float(np.cumsum((seen * log_ratio + gain * expected)[::-1]).max()))
    return out


def cusum_episodes(path: FloatArray, threshold: float, quiet_ticks: int) -> list[int]:
    """Ticks at which the CUSUM opens an episode: ``Episodes(1, quiet_ticks)``, i.e. a hot
    tick opens one unless another hot tick came at most ``quiet_ticks`` ticks before."""
    hot = np.flatnonzero(path > threshold)
    if hot.size == 0:
        return []
    return [int(hot[0]), *(int(t) for t in hot[1:][np.diff(hot) > quiet_ticks])]


def cell_task(rules: Rules, cell: tuple[float, float], days: int, trials: int,
              key: Sequence[int]) -> dict[str, Any]:
    """Null days and drops of one cell: revwatch's episodes and minutes, the CUSUM paths."""
    level, factor = cell
    rng = np.random.default_rng(np.random.SeedSequence(key))
    h, null_revwatch, null_cusum = rules.horizon, 0, []
    for _ in range(days):
        stream = simulate(rng, level, h + DAY_MINUTES, onset=10**9, factor=1.0, horizon=h)
        p_values = run_ticks(stream, rules, prefix_baseline(rng, level, rules.decay),
                             stop_on_open=False)
        null_revwatch += len(openings(p_values, rules.alphas[0], rules))
        null_cusum.append(cusum_path(stream, h, factor))
    revwatch, cusum = [], []
    for _ in range(trials):
        stream = simulate(rng, level, h + FOLLOW_MINUTES, onset=h, factor=factor, horizon=h)
        p_values = run_ticks(stream, rules, prefix_baseline(rng, level, rules.decay),
                             stop_on_open=True)
        opened = openings(p_values, rules.alphas[0], rules)
        revwatch.append(float(opened[0] + 1) if opened else math.inf)
        cusum.append(cusum_path(stream, h, factor))
    return {"null_revwatch": null_revwatch, "null_cusum": null_cusum,
            "revwatch": revwatch, "cusum": cusum}


def threshold_for(paths: list[FloatArray], rate_per_day: float, quiet_ticks: int
                  ) -> tuple[float, float, int]:
    """The CUSUM threshold for ``rate_per_day`` false-alarm episodes: read off the null days
    at the highest threshold that still shows MIN_EPISODES, then moved by ``log`` of the
    rate ratio (a likelihood-ratio CUSUM's false alarms fall as ``exp(-threshold)``;
    discrete counts overshoot, so this errs towards fewer false alarms)."""
    days = len(paths)
    for threshold in GRID[::-1]:
        count = sum(len(cusum_episodes(p, float(threshold), quiet_ticks)) for p in paths)
        if count >= MIN_EPISODES:
            break
    moved = float(threshold) + max(0.0, math.log(count / days / rate_per_day))
    return moved, float(threshold), count


def summarise(rules: Rules, level: float, factor: float, data: dict[str, Any],
              fa_rate: float) -> dict[str, Any]:
    """Medians at the matched false-alarm rate and at the default budget."""
    row: dict[str, Any] = {"orders_per_minute": level, "conversion_factor": factor,
                           "null_days": len(data["null_cusum"]),
                           "revwatch_null_episodes": data["null_revwatch"],
                           "revwatch_median": quantile(data["revwatch"], 0.5),
                           "oracle_first_alarm": oracle_first_alarm(level, factor,
                                                                    rules.alphas[0])}
    for name, rate in (("matched", fa_rate), ("budget", rules.budgets[0])):
        threshold, read_at, count = threshold_for(data["null_cusum"], rate, rules.quiet_ticks)
        minutes = []
        for path in data["cusum"]:
            opened = cusum_episodes(path, threshold, rules.quiet_ticks)
            minutes.append(float(opened[0] + 1) if opened else math.inf)
        row[name] = {"false_alarms_per_day": rate, "threshold": round(threshold, 2),
                     "read_at": [round(read_at, 2), count],
                     "median": quantile(minutes, 0.5),
                     "within_60": float(np.mean(np.asarray(minutes) <= 60))}
    return row


def text(value: float | None) -> str:
    return f">{FOLLOW_MINUTES}" if value is None else f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--days", type=int, default=400, help="null days per cell")
    parser.add_argument("--trials", type=int, default=200, help="drops per cell")
    parser.add_argument("--quick", action="store_true", help="100 null days, 60 drops")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.days, args.trials = 100, 60
    started = time.perf_counter()
    rules = make_rules(learned_lag(args.seed))
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(cell_task, rules, cell, args.days, args.trials, (args.seed, 2, n))
                   for n, cell in enumerate(CELLS)]
        data = [future.result() for future in futures]
    episodes = sum(d["null_revwatch"] for d in data)
    fa_rate = episodes / (args.days * len(CELLS))
    rows = [summarise(rules, lv, f, d, fa_rate) for (lv, f), d in zip(CELLS, data, strict=True)]
    print_table(f"Median minutes to alert: revwatch ({episodes} false-alarm episodes in "
                f"{args.days * len(CELLS)} days = {fa_rate:.4f}/day) against the unknown-onset "
                "oracle at that rate and at the budget, and the known-onset oracle",
                ["orders/min", "conversion", "revwatch", "CUSUM oracle, same FA",
                 f"CUSUM oracle, {rules.budgets[0]:g}/day", "known-onset oracle"],
                [[f"{r['orders_per_minute']:g}", f"x{r['conversion_factor']:g}",
                  text(r["revwatch_median"]), text(r["matched"]["median"]),
                  text(r["budget"]["median"]), text(r["oracle_first_alarm"])] for r in rows])
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds:.0f} s")
    write_results("conversion_cusum", {
        "config": {"cells": CELLS, "null_days_per_cell": args.days, "trials_per_cell": args.trials,
                   "seed": args.seed, "alpha_per_tick": rules.alphas[0],
                   "min_episodes": MIN_EPISODES, "quick": args.quick},
        "revwatch_false_alarms_per_day": fa_rate, "cells": rows, "seconds": seconds})


if __name__ == "__main__":
    main()
