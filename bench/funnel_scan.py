"""revwatch's own conversion scan fed the checkout funnel: what the simplest build would give.

``bench/funnel_power.py`` compares oracles. This runs the real test instead, on the same
simulated worlds (``funnel_power.simulate``), fed as ``bench/conversion_power.py`` feeds it
(``conversion_scan`` with the ``CampaignParams`` defaults, a forgetting baseline of matured
unflagged minutes, a learned ``LagModel``, two hot ticks), in three arms:

* **orders** (revwatch today): each session minute's orders, ``F`` of the session-to-order
  lag;
* **funnel**: each checkout minute's reachers as the "sessions" and their orders, ``F`` of
  the checkout-to-order lag; the scan's Poisson test of a binomial count (a reacher orders
  with probability ``q``) overstates its noise by ``1 / (1 - q)``;
* **funnel_binomial**: the same with every count scaled by ``1 / (1 - q)`` (quasi-Poisson);
* **funnel_quasi**: revwatch's own funnel test (``detectors.funnel.funnel_scan``): each
  window's counts scaled by its own dispersion ``1 - q sum(n G^2) / sum(n G)``, the
  matured baseline's by ``1 - q``.

Each arm is judged at the default per-tick level and at the level read off the null days
for at most BUDGET false-alarm episodes per campaign-day (ALPHAS), so that the arms are
compared at the same false alarms. Drops at the payment only (reachers order ``x factor``):
a drop before the checkout leaves the reachers' conversion as it was and needs a count
test the scan has not. Meaning: docs/CONVERSION-POWER.md, "What the checkout funnel would
add".

    .venv/bin/python bench/funnel_scan.py            # about 10 min on 2 cores
    .venv/bin/python bench/funnel_scan.py --quick    # about 1.5 min
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

import streams  # noqa: F401  (first, so the compiled build is used)
from bench.common import print_table, write_results
from bench.conversion_cusum import text
from bench.conversion_power import (
    DAY_MINUTES,
    FOLLOW_MINUTES,
    Baseline,
    Rules,
    Stream,
    make_rules,
    matured_baseline,
    prefix_baseline,
    quantile,
    run_ticks,
)
from bench.funnel_power import TO_CHECKOUT, TO_ORDER, World, lognormal, simulate
from detectors.funnel import funnel_scan
from detectors.lag import LagModel

CELLS = ((1.5, 0.5, "payment", 0.5), (0.6, 0.0, "payment", 0.5), (3.0, 0.5, "payment", 0.5))
LAG_TRAINING = 20_000  # delays each LagModel learns from, as bench/conversion_power.py's


def learned(delays: np.ndarray[Any, np.dtype[np.float64]], horizon: int) -> LagModel:
    model = LagModel(horizon_minutes=horizon)
    for delay in delays:
        model.update(float(delay))
    return model


def rules_for(seed: int) -> tuple[Rules, Rules]:
    """The default rules with ``F`` of the session-to-order lag, and of checkout-to-order."""
    rng = np.random.default_rng([seed, 98])
    base = make_rules(LagModel())
    h = base.horizon
    ages = h - np.arange(h) - 0.5
    to_checkout = lognormal(rng, TO_CHECKOUT, LAG_TRAINING)
    to_order = lognormal(rng, TO_ORDER, LAG_TRAINING)
    orders = learned(to_checkout + to_order, h).cdf_array(ages)
    funnel = learned(to_order, h).cdf_array(ages)
    return replace(base, completeness=orders), replace(base, completeness=funnel)


ARMS = ("orders", "funnel", "funnel_binomial", "funnel_quasi")
BUDGET = 0.02  # false-alarm episodes per campaign-day (the default budget)
# per-tick levels tried, geometric; the default 0.02 / 16 = 0.00125 is on the grid
ALPHAS = 0.00125 * 2.0 ** (np.arange(-40, 25) / 4.0)


def _funnel(rng: np.random.Generator, world: World, q: float, rules: Rules, scale: float, *,
            stop: bool) -> list[float]:
    """The scan on the reachers, every count x ``scale`` (1: as it is; ``1 / (1 - q)``: a
    quasi-Poisson stand-in for the binomial test, whose variance is ``1 - q`` x its mean)."""
    base = matured_baseline(rng, world.reachers.mean(), q, rules.decay)
    base.conversions, base.sessions = base.conversions * scale, base.sessions * scale
    seen: Any = world.reach_seen * scale  # counts, scaled: floats where the scan takes ints
    return run_ticks(Stream(world.reachers * scale, seen), rules, base,
                     stop_on_open=stop)


def quasi_scan(rules: Rules, base: Baseline, minute_ms: np.ndarray[Any, np.dtype[np.int64]],
               reachers: np.ndarray[Any, np.dtype[np.float64]],
               seen: np.ndarray[Any, np.dtype[np.int32]]) -> tuple[float, int | None]:
    """``Funnel.scan``'s test (``detectors.funnel.funnel_scan``), as ``conversion_power.scan``."""
    if base.conversions < rules.min_baseline:
        return 1.0, None
    verdict, _ = funnel_scan(minute_ms, np.asarray(reachers, dtype=np.float64),
                             seen.astype(np.float64), rules.completeness, base.conversions,
                             base.sessions, windows_minutes=rules.windows, hold_minutes=(),
                             tolerance=rules.tolerance)
    return verdict.p_value, verdict.window_start_ms


def p_values(rng: np.random.Generator, world: World, cell: tuple[float, float, str, float],
             rules: tuple[Rules, Rules], *, stop: bool) -> list[list[float]]:
    """Per arm (ARMS), the p-value of every tick."""
    level, _, _, q = cell
    orders = run_ticks(Stream(world.sessions, world.orders_seen), rules[0],
                       prefix_baseline(rng, level, rules[0].decay),
                       stop_on_open=stop)
    base = matured_baseline(rng, world.reachers.mean(), q, rules[1].decay)
    quasi = run_ticks(Stream(world.reachers, world.reach_seen), rules[1], base,
                      stop_on_open=stop, scanner=quasi_scan)
    return [orders, _funnel(rng, world, q, rules[1], 1.0, stop=stop),
            _funnel(rng, world, q, rules[1], 1.0 / (1.0 - q), stop=stop), quasi]


def fast_openings(p: list[float], alpha: float, rules: Rules) -> list[int]:
    """``openings`` (bench/conversion_power.py) from the hot ticks alone: the same indices."""
    opened: list[int] = []
    last_firing, last_hot, streak = -10**9, -10**9, 0
    for t in np.flatnonzero(np.asarray(p) <= alpha).tolist():
        if opened and t <= last_firing + rules.quiet_ticks:
            last_firing = t
            continue
        streak = streak + 1 if t == last_hot + 1 else 1
        last_hot = t
        if streak >= rules.open_ticks:
            opened.append(t)
            last_firing, last_hot, streak = t, -10**9, 0
    return opened


def cell_task(cell: tuple[float, float, str, float], days: int, trials: int, seed: int,
              key: Sequence[int]) -> dict[str, Any]:
    """Per arm and level of ALPHAS: false-alarm episodes on the null days, and the minutes
    to the first episode of each drop (inf: none in FOLLOW_MINUTES)."""
    rng = np.random.default_rng(np.random.SeedSequence(key))
    rules = rules_for(seed)
    h = rules[0].horizon
    null = {arm: [0] * ALPHAS.size for arm in ARMS}
    for _ in range(days):
        world = simulate(rng, cell, h + DAY_MINUTES, math.inf)
        for arm, p in zip(ARMS, p_values(rng, world, cell, rules, stop=False), strict=True):
            for n, alpha in enumerate(ALPHAS):
                null[arm][n] += len(fast_openings(p, float(alpha), rules[0]))
    drops: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
    for _ in range(trials):
        world = simulate(rng, cell, h + FOLLOW_MINUTES, float(h))
        for arm, p in zip(ARMS, p_values(rng, world, cell, rules, stop=False), strict=True):
            firsts = [fast_openings(p, float(alpha), rules[0])[:1] for alpha in ALPHAS]
            drops[arm].append([float(f[0] + 1) if f else math.inf for f in firsts])
    return {"days": days, "null": null, "drops": drops, "default_alpha": rules[0].alphas[0]}


def _at(data: dict[str, Any], arm: str, n: int) -> dict[str, Any]:
    minutes = [trial[n] for trial in data["drops"][arm]]
    return {"alpha": float(ALPHAS[n]), "median": quantile(minutes, 0.5),
            "p80": quantile(minutes, 0.8), "within_30": float(np.mean(np.asarray(minutes) <= 30)),
            "false_alarms_per_day": data["null"][arm][n] / data["days"]}


def summarise(cell: tuple[float, float, str, float], data: dict[str, Any]) -> dict[str, Any]:
    """Per arm: at the default level, and at the level calibrated on the null days (the
    largest of ALPHAS whose episodes stay within the budget)."""
    row: dict[str, Any] = {"orders_per_minute": cell[0], "conversion_factor": cell[1],
                           "where": cell[2], "order_given_checkout": cell[3],
                           "null_days": data["days"], "trials": len(data["drops"]["orders"])}
    default = int(np.argmin(np.abs(np.log(ALPHAS / data["default_alpha"]))))
    for arm in ARMS:
        within = [n for n in range(ALPHAS.size) if data["null"][arm][n] <= BUDGET * data["days"]]
        row[arm] = {"default": _at(data, arm, default),
                    "calibrated": _at(data, arm, max(within)) if within else None}
    return row


def _cell(at: dict[str, Any] | None) -> str:
    return "-" if at is None else f"{text(at['median'])} ({text(at['p80'])})"


def _share(at: dict[str, Any] | None, key: str) -> str:
    return "-" if at is None else f"{at[key]:.0%}"


def _rate(at: dict[str, Any] | None) -> str:
    return "-" if at is None else f"{at['false_alarms_per_day']:.4f}"


def _level(at: dict[str, Any] | None) -> str:
    return "-" if at is None else f"{at['alpha']:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--days", type=int, default=800, help="null days per cell")
    parser.add_argument("--trials", type=int, default=200, help="drops per cell")
    parser.add_argument("--quick", action="store_true", help="100 null days, 40 drops")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.days, args.trials = 100, 40
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(cell_task, cell, args.days, args.trials, args.seed,
                               (args.seed, 4, n)) for n, cell in enumerate(CELLS)]
        rows = [summarise(cell, f.result()) for cell, f in zip(CELLS, futures, strict=True)]
    for level in ("default", "calibrated"):
        print_table(f"revwatch's conversion scan at the {level} per-tick level: median minutes "
                    "to alert (80th percentile); false-alarm episodes per campaign-day",
                    ["orders/min", "conversion", "P(order | checkout)", "orders (today)",
                     "funnel, Poisson", "funnel, quasi (1 - q)", "funnel, revwatch",
                     "<=30 min",
                     "false alarms/day", "per-tick level"],
                    [[f"{r['orders_per_minute']:g}", f"x{r['conversion_factor']:g}",
                      f"{r['order_given_checkout']:g}",
                      *(_cell(r[a][level]) for a in ARMS),
                      " / ".join(_share(r[a][level], "within_30") for a in ARMS),
                      " / ".join(_rate(r[a][level]) for a in ARMS),
                      " / ".join(_level(r[a][level]) for a in ARMS)] for r in rows])
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds:.0f} s")
    write_results("funnel_scan", {
        "config": {"cells": CELLS, "null_days_per_cell": args.days,
                   "trials_per_cell": args.trials, "seed": args.seed,
                   "to_checkout": TO_CHECKOUT, "to_order": TO_ORDER, "quick": args.quick,
                   "budget": BUDGET, "alphas": ALPHAS.tolist()},
        "cells": rows, "seconds": seconds})


if __name__ == "__main__":
    main()
