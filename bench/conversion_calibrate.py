"""Calibrate the conversion test's per-tick level to its false-alarm budget.

Simulates days with no incident per traffic level exactly as ``bench/conversion_power.py``
does (the real ``conversion_scan``, the learned ``LagModel``, the forgetting baseline, the
two-hot-tick rule), keeps every tick's p-value, and counts the false-alarm episodes each
per-tick level of a geometric grid would open. The level at which the episodes per
campaign-day equal the budget (log-log interpolation between grid points) gives
``independent_tests_per_day = budget / level``, per traffic level and pooled. A seed other
than ``conversion_power.py``'s default (1) is used, so that run is a held-out check.
Meaning: ``docs/CONVERSION-POWER.md`` ("Calibrating the level").

    .venv/bin/python bench/conversion_calibrate.py               # 2,000 days a level
    .venv/bin/python bench/conversion_calibrate.py --days 100    # a quick look
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

import streams  # noqa: F401  (first, so the compiled build is used)
from bench.common import print_table, write_results
from bench.conversion_oracle import poisson_interval
from bench.conversion_power import LEVELS, Rules, learned_lag, make_rules, null_task
from detectors.episodes import IncidentParams

GRID = tuple(float(a) for a in np.geomspace(4e-4, 8e-3, 27))  # per-tick levels tried
CHUNK_DAYS = 50  # null days per task (seeded apart: results do not depend on --jobs)


def grid_rules(lag_seed: int) -> Rules:
    """``conversion_power``'s rules with the per-tick levels of GRID."""
    rules = make_rules(learned_lag(lag_seed))
    return replace(rules, alphas=GRID)


def count_episodes(rules: Rules, days: int, seed: int, jobs: int) -> dict[float, list[int]]:
    """Per traffic level, the false-alarm episodes summed over ``days`` days, per grid level."""
    chunks = [min(CHUNK_DAYS, days - s) for s in range(0, days, CHUNK_DAYS)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {(lv, n): pool.submit(null_task, rules, lv, d, (seed, 2, a, n))
                   for a, lv in enumerate(LEVELS) for n, d in enumerate(chunks)}
        return {lv: [sum(sum(futures[lv, n].result()[j]) for n in range(len(chunks)))
                     for j in range(len(GRID))] for lv in LEVELS}


def crossing(episodes: list[int], days: int, budget: float) -> float | None:
    """The per-tick level at which episodes per day reach ``budget``, interpolated log-log
    between the two grid levels around it (the counts made monotone first)."""
    rates = np.maximum.accumulate(np.asarray(episodes, dtype=float)) / days
    above = np.nonzero(rates >= budget)[0]
    if above.size == 0 or above[0] == 0 or rates[above[0] - 1] == 0:
        return None
    j = int(above[0])
    lo, hi = math.log(rates[j - 1]), math.log(rates[j])
    share = 1.0 if hi == lo else (math.log(budget) - lo) / (hi - lo)
    return math.exp(math.log(GRID[j - 1]) + share * math.log(GRID[j] / GRID[j - 1]))


def slope(episodes: list[int], level: float) -> float:
    """d log(rate) / d log(level) near ``level``: least squares over the grid levels within
    a factor 2 of it that saw episodes."""
    keep = [(math.log(a), math.log(n)) for a, n in zip(GRID, episodes, strict=True)
            if n > 0 and level / 2 <= a <= level * 2]
    x, y = np.asarray([k[0] for k in keep]), np.asarray([k[1] for k in keep])
    return float(np.polyfit(x, y, 1)[0]) if x.size >= 2 else math.nan


def calibrate(episodes: list[int], days: int, budget: float, level: float) -> dict[str, Any]:
    """The calibrated level, the implied independent tests a day, and their spread: the
    count at the crossing is Poisson, so the level's relative error is
    ``1 / (slope * sqrt(count))``; its 95% range uses the exact Poisson interval."""
    alpha = crossing(episodes, days, budget)
    now = IncidentParams().alpha_per_tick
    base = {"orders_per_minute": level, "days": days,
            "episodes_at_current_level": current_count(episodes, now),
            "rate_at_current_level": current_count(episodes, now) / days}
    if alpha is None:
        return {**base, "alpha": None, "tests_per_day": None}
    b = slope(episodes, alpha)
    expected = budget * days
    low, high = poisson_interval(round(expected))
    spread = [alpha * (low / expected) ** (1 / b), alpha * (high / expected) ** (1 / b)]
    return {**base, "alpha": alpha, "tests_per_day": budget / alpha, "slope": b,
            "alpha_ci95": spread, "tests_per_day_ci95": [budget / spread[1], budget / spread[0]]}


def current_count(episodes: list[int], alpha: float) -> int:
    """Episodes at the grid level nearest ``alpha`` (the grid holds 0.02 / 24 only nearly)."""
    j = int(np.argmin(np.abs(np.log(np.asarray(GRID) / alpha))))
    return episodes[j]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--days", type=int, default=2000, help="null days per level")
    parser.add_argument("--seed", type=int, default=2, help="not conversion_power's (1)")
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    return parser.parse_args()


def main() -> None:
    args, started = parse(), time.perf_counter()
    rules = grid_rules(args.seed)
    budget = IncidentParams().false_alarms_per_campaign_day
    counts = count_episodes(rules, args.days, args.seed, args.jobs)
    pooled = [sum(counts[lv][j] for lv in LEVELS) for j in range(len(GRID))]
    rows = [calibrate(counts[lv], args.days, budget, lv) for lv in LEVELS]
    total = calibrate(pooled, args.days * len(LEVELS), budget, math.nan)
    print_table(f"Per-tick level giving {budget:g} false-alarm episodes per campaign-day",
                ["orders/min", "days", "episodes now", "level", "95%", "tests/day", "95%",
                 "slope"],
                [row_text(r) for r in [*rows, total]])
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds:.0f} s")
    write_results("conversion_calibrate", {
        "config": {"levels_orders_per_minute": LEVELS, "null_days_per_level": args.days,
                   "seed": args.seed, "budget_per_campaign_day": budget, "grid": GRID,
                   "current_alpha_per_tick": IncidentParams().alpha_per_tick},
        "episodes_by_grid_level": {f"{lv:g}": counts[lv] for lv in LEVELS},
        "calibration": rows, "pooled": total, "seconds": seconds})


def row_text(row: dict[str, Any]) -> list[str]:
    level = "all" if math.isnan(row["orders_per_minute"]) else f"{row['orders_per_minute']:g}"
    head = [level, str(row["days"]), str(row["episodes_at_current_level"])]
    if row["alpha"] is None:
        return [*head, "-", "-", "-", "-", "-"]
    a, t = row["alpha_ci95"], row["tests_per_day_ci95"]
    return [*head, f"{row['alpha']:.3g}", f"{a[0]:.3g}-{a[1]:.3g}", f"{row['tests_per_day']:.1f}",
            f"{t[0]:.1f}-{t[1]:.1f}", f"{row['slope']:.2f}"]


if __name__ == "__main__":
    main()
