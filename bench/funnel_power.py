"""What the checkout funnel would add to catching a conversion drop: a study, not the detector.

revwatch tests a campaign's orders against the orders its sessions should have brought,
and orders come minutes after a session starts. ``bench/conversion_cusum.py`` showed that no
detector that watches orders alone and does not know the onset catches a 50% drop at 1.5
orders a minute in a median under 30 minutes at the false-alarm budget. This study asks
what the RUM beacons of the checkout page would add: a session that reaches ``/checkout``
is seen at once (boomerang beacons at onload), orders with a known probability ``q``, and
orders a short time later. Three unknown-onset oracles (window-limited CUSUMs that know the
rates, the lags and the size of the drop; thresholds set on simulated days with no
incident) run on the same simulated worlds:

* **orders**: the orders of each session minute against ``sessions x rate x F(age)``, as
  ``bench/conversion_cusum.py`` (the reference of docs/CONVERSION-POWER.md);
* **funnel**: two CUSUMs, each at half the budget: the orders of each checkout minute's
  reachers against ``reachers x q x G(age)`` (binomial: a reacher orders or has not yet),
  and the count of checkout reachers per minute against its normal Poisson rate.

A drop happens at the checkout, either at the payment (reachers order ``x factor``) or
before it (``x factor`` of the would-be reachers get there). Meaning:
docs/CONVERSION-POWER.md, "What the checkout funnel would add".

    .venv/bin/python bench/funnel_power.py            # about 5 min on 2 cores
    .venv/bin/python bench/funnel_power.py --quick    # about 1.5 min
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.common import print_table, write_results
from bench.conversion_cusum import GRID, cusum_episodes, text
from bench.conversion_power import CONVERSION_RATE, DAY_MINUTES, FOLLOW_MINUTES, quantile

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HORIZON = 120  # session (or checkout) minutes a CUSUM looks back over, as revwatch's window
TO_CHECKOUT = (4.0, 1.0)  # log-normal median (min) and sigma: session start -> /checkout
TO_ORDER = (2.0, 0.7)  # checkout -> order (payment); the two together: median ~6.3 min
BUDGET = 0.02  # false-alarm episodes per campaign-day (revwatch's default)
QUIET_TICKS = 10  # a hot tick opens an episode unless another came this many ticks before
# (revwatch's `quiet_ticks_to_resolve`, as `bench/conversion_cusum.py` uses it)
# (orders per minute, conversion factor, where the drop is, P(order | reached checkout))
CELLS = ((1.5, 0.5, "payment", 0.5), (1.5, 0.5, "cart", 0.5), (1.5, 0.5, "payment", 0.3),
         (0.6, 0.0, "payment", 0.5), (0.25, 0.4, "payment", 0.5), (3.0, 0.5, "payment", 0.5))
FLOOR_FACTOR = 0.05  # the drop size a CUSUM assumes for a stop (log 0 has no CUSUM)


@dataclass
class World:
    """One simulated campaign: per minute, sessions and checkout reachers; orders seen."""

    sessions: FloatArray  # sessions starting in each minute
    orders_seen: npt.NDArray[np.int32]  # [session minute, d]: orders in by tick minute + d + 1
    reachers: FloatArray  # reachers whose checkout view falls in each minute
    reach_seen: npt.NDArray[np.int32]  # [checkout minute, d]: their orders in by that tick


def lognormal(rng: np.random.Generator, shape: tuple[float, float], n: int) -> FloatArray:
    median, sigma = shape
    return rng.lognormal(math.log(median), sigma, n)


def _seen(row: IntArray, when: FloatArray, rows: int) -> npt.NDArray[np.int32]:
    """Cumulative counts by delay: events of ``row`` at time ``when`` in by tick row + d + 1."""
    delay = np.floor(when - row).astype(np.int64)
    keep = (delay <= HORIZON) & (row < rows)
    counts = np.zeros((rows, HORIZON + 1), dtype=np.int32)
    np.add.at(counts, (row[keep], delay[keep]), 1)
    return np.cumsum(counts, axis=1, dtype=np.int32)


def simulate(rng: np.random.Generator, cell: tuple[float, float, str, float], rows: int,
             onset: float) -> World:
    """``rows`` minutes of one campaign; from time ``onset`` the checkout is hurt."""
    level, factor, where, q = cell
    sessions = rng.poisson(level / CONVERSION_RATE, rows)
    owner = np.repeat(np.arange(rows), rng.binomial(sessions, CONVERSION_RATE / q))
    start = owner + rng.random(owner.size)
    checkout = start + lognormal(rng, TO_CHECKOUT, owner.size)
    hurt = checkout >= onset
    if where == "cart":  # fewer get to the checkout
        there = ~hurt | (rng.random(owner.size) < factor)
        owner, checkout, hurt = owner[there], checkout[there], hurt[there]
        hurt = np.zeros_like(hurt)
    buys = rng.random(owner.size) < q * np.where(hurt, factor, 1.0)
    order = checkout[buys] + lognormal(rng, TO_ORDER, int(buys.sum()))
    at = np.floor(checkout).astype(np.int64)
    return World(sessions.astype(np.float64), _seen(owner[buys], order, rows),
                 np.bincount(at[at < rows], minlength=rows).astype(np.float64)[:rows],
                 _seen(at[buys], order, rows))


def seen_shares(rng: np.random.Generator, n: int = 400_000) -> tuple[FloatArray, FloatArray]:
    """P(an order is in by age a), a = HORIZON..1: from the session minute (F) and from the
    checkout minute (G), each with the start uniform in its minute."""
    ages = np.arange(HORIZON, 0, -1, dtype=np.float64)
    to_checkout = lognormal(rng, TO_CHECKOUT, n) + rng.random(n)
    to_order = lognormal(rng, TO_ORDER, n)
    session_side = np.sort(np.floor(to_checkout + to_order))
    checkout_frac = (to_checkout % 1.0)  # where in its minute the checkout view falls
    checkout_side = np.sort(np.floor(checkout_frac + to_order))
    f = np.searchsorted(session_side, ages - 1.0, side="right") / n
    g = np.searchsorted(checkout_side, ages - 1.0, side="right") / n
    return f.astype(np.float64), g.astype(np.float64)


def _suffix_max(terms: FloatArray) -> float:
    """``max(0, max_s sum_{j >= s} terms_j)``: the CUSUM over every onset in the window."""
    return max(0.0, float(np.cumsum(terms[::-1]).max()))


def paths(world: World, cell: tuple[float, float, str, float], shares: tuple[FloatArray, ...]
          ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per tick (from HORIZON on): the orders CUSUM, the reachers' orders CUSUM and the
    reach CUSUM, each for the cell's drop."""
    level, factor, _, q = cell
    f = max(factor, FLOOR_FACTOR)
    log_f, f_share, g_share = math.log(f), shares[0], shares[1]
    rows, h = world.sessions.size, HORIZON
    diagonal = (np.arange(h), np.arange(h - 1, -1, -1))
    bought = q * g_share
    miss_ratio = np.log((1.0 - f * bought) / (1.0 - bought))
    reach_rate, reach_step = level / q, 0.0
    orders, funnel, reach = (np.zeros(rows - h) for _ in range(3))
    for n, k in enumerate(range(h + 1, rows + 1)):
        seen = world.orders_seen[k - h:k][diagonal]
        expected = world.sessions[k - h:k] * CONVERSION_RATE * f_share
        orders[n] = _suffix_max(seen * log_f + (1.0 - f) * expected)
        got = world.reach_seen[k - h:k][diagonal]
        funnel[n] = _suffix_max(got * log_f + (world.reachers[k - h:k] - got) * miss_ratio)
        reach_step = max(0.0, reach_step + world.reachers[k - 1] * log_f + (1.0 - f) * reach_rate)
        reach[n] = reach_step
    return orders, funnel, reach


def cell_task(cell: tuple[float, float, str, float], days: int, trials: int,
              key: Sequence[int]) -> dict[str, Any]:
    """Null days and drops of one cell: the three CUSUM paths of each."""
    rng = np.random.default_rng(np.random.SeedSequence(key))
    shares = seen_shares(rng)
    null = [paths(simulate(rng, cell, HORIZON + DAY_MINUTES, math.inf), cell, shares)
            for _ in range(days)]
    onset = float(HORIZON)  # the drop starts at the first tick of the paths
    drops = [paths(simulate(rng, cell, HORIZON + FOLLOW_MINUTES, onset), cell, shares)
             for _ in range(trials)]
    return {"null": null, "drops": drops}


def threshold_at(paths: list[FloatArray], rate_per_day: float) -> float:
    """The lowest threshold of the grid at which the null days show at most
    ``rate_per_day`` episodes a day (read directly: enough null days for tens of episodes;
    episodes fall as the threshold rises, so a bisection finds it)."""
    allowed = rate_per_day * len(paths)
    low, high = 0, GRID.size - 1
    while low < high:
        mid = (low + high) // 2
        count = sum(len(cusum_episodes(p, float(GRID[mid]), QUIET_TICKS)) for p in paths)
        low, high = (low, mid) if count <= allowed else (mid + 1, high)
    return float(GRID[low])


def first_minute(hot: npt.NDArray[np.bool_]) -> float:
    """Minutes from the onset to the tick that opens the first episode (inf: none)."""
    ticks = np.flatnonzero(hot)
    return float(ticks[0] + 1) if ticks.size else math.inf


def summarise(cell: tuple[float, float, str, float], data: dict[str, Any]) -> dict[str, Any]:
    """Thresholds at the budget (the funnel's two at half each), medians, realised rates."""
    def threshold(arm: int, rate: float) -> float:
        return threshold_at([p[arm] for p in data["null"]], rate)

    t_orders, t_funnel, t_reach = threshold(0, BUDGET), threshold(1, BUDGET / 2), \
        threshold(2, BUDGET / 2)

    def hot_orders(p: tuple[FloatArray, ...]) -> npt.NDArray[np.bool_]:
        return p[0] > t_orders

    def hot_funnel(p: tuple[FloatArray, ...]) -> npt.NDArray[np.bool_]:
        return (p[1] > t_funnel) | (p[2] > t_reach)

    row: dict[str, Any] = {"orders_per_minute": cell[0], "conversion_factor": cell[1],
                           "where": cell[2], "order_given_checkout": cell[3],
                           "null_days": len(data["null"]), "trials": len(data["drops"])}
    for name, hot in (("orders", hot_orders), ("funnel", hot_funnel)):
        minutes = [first_minute(hot(p)) for p in data["drops"]]
        episodes = sum(len(cusum_episodes(hot(p).astype(np.float64), 0.5, QUIET_TICKS))
                       for p in data["null"])
        row[name] = {"median": quantile(minutes, 0.5), "p80": quantile(minutes, 0.8),
                     "within_30": float(np.mean(np.asarray(minutes) <= 30)),
                     "null_episodes_at_threshold": episodes}
    return row


def _rate(row: dict[str, Any], arm: str) -> float:
    return float(row[arm]["null_episodes_at_threshold"]) / float(row["null_days"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--days", type=int, default=1500, help="null days per cell")
    parser.add_argument("--trials", type=int, default=200, help="drops per cell")
    parser.add_argument("--quick", action="store_true", help="500 null days, 60 drops")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.days, args.trials = 500, 60
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(cell_task, cell, args.days, args.trials, (args.seed, 3, n))
                   for n, cell in enumerate(CELLS)]
        rows = [summarise(cell, f.result()) for cell, f in zip(CELLS, futures, strict=True)]
    print_table(f"Median minutes to alert (80th percentile), unknown-onset oracles at "
                f"{BUDGET:g} false alarms per campaign-day",
                ["orders/min", "conversion", "drop at", "P(order | checkout)",
                 "orders alone", "with the funnel", "<=30 min: orders / funnel",
                 "false alarms/day: orders / funnel"],
                [[f"{r['orders_per_minute']:g}", f"x{r['conversion_factor']:g}", r["where"],
                  f"{r['order_given_checkout']:g}",
                  f"{text(r['orders']['median'])} ({text(r['orders']['p80'])})",
                  f"{text(r['funnel']['median'])} ({text(r['funnel']['p80'])})",
                  f"{r['orders']['within_30']:.0%} / {r['funnel']['within_30']:.0%}",
                  f"{_rate(r, 'orders'):.4f} / {_rate(r, 'funnel'):.4f}"]
                 for r in rows])
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds:.0f} s")
    write_results("funnel_power", {
        "config": {"cells": CELLS, "null_days_per_cell": args.days,
                   "trials_per_cell": args.trials, "seed": args.seed, "budget": BUDGET,
                   "to_checkout": TO_CHECKOUT, "to_order": TO_ORDER, "horizon": HORIZON,
                   "quick": args.quick},
        "cells": rows, "seconds": seconds})


if __name__ == "__main__":
    main()
