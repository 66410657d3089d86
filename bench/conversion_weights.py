"""Stake-weighted conversion levels on simulated traffic: false alarms and minutes.

Each rule gives campaign ``c`` the per-tick level ``w_c x budget / 16`` with
``w_c = detectors.stakes.stake_weights`` (stake = revenue per hour, ``stake ** power``,
mean 1, floor 0.25, cap 4); power 0 is the unweighted test. Two campaign mixes:

* ``shop``: the commerce campaigns of ``streams.simulate_model``'s default shop that warm
  up (at least 0.01 orders a minute), each at its mean daily traffic (peak sessions x mean
  daily factor x conversion rate x its device mix), stake = orders/min x AOV x 60;
* ``flat``: one campaign at each of 0.25, 0.5, 1, 1.5, 3, 6 orders/min, one order value
  (weights up to the cap land on the traffic levels that spend the budget fastest).

With ``bench/conversion_power.py``'s machinery (the real ``conversion_scan``, a learned
``LagModel``, the forgetting baseline, the two-hot-tick rule; constant traffic), per
campaign: null days (false-alarm episodes per campaign-day at each rule's level) and
sustained drops (x0.5, x0: minutes to the alert; revenue lost before it,
``stake x (1 - factor) x min(minutes, D)`` for incidents of D = 60 and 240 minutes).

    .venv/bin/python bench/conversion_weights.py                 # 150 null days, 60 drops
    .venv/bin/python bench/conversion_weights.py --days 40 --trials 20   # a quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import streams  # noqa: F401  (first, so the compiled build is used)
from bench.common import print_table, write_results
from bench.conversion_oracle import poisson_interval
from bench.conversion_power import Rules, drop_task, learned_lag, make_rules, null_task
from detectors.episodes import IncidentParams
from detectors.stakes import stake_weights
from streams.simulate_model import DAILY_PROFILE, DEVICE_CR_FACTOR, TABLET_SHARE, _campaigns

POWERS = (0.0, 0.5, 1.0)
DROPS = (0.5, 0.0)
INCIDENT_MINUTES = (60, 240)
FLAT_LEVELS = (0.25, 0.5, 1.0, 1.5, 3.0, 6.0)
FLAT_AOV = 80.0
MIN_ORDERS_PER_MINUTE = 0.01  # below this a campaign does not warm up within days

Campaign = tuple[str, float, float]  # name, orders per minute, stake per hour


def shop_mix() -> list[Campaign]:
    daily = statistics.mean(DAILY_PROFILE)
    out = []
    for spec in _campaigns(0):
        mobile = spec.mobile_share
        device = ((1 - mobile - TABLET_SHARE) * DEVICE_CR_FACTOR[0] + mobile * DEVICE_CR_FACTOR[1]
                  + TABLET_SHARE * DEVICE_CR_FACTOR[2])
        orders = spec.sessions_per_minute_peak * daily * spec.conversion_rate * float(device)
        if spec.commerce and orders >= MIN_ORDERS_PER_MINUTE:
            out.append((spec.name, orders, orders * spec.aov * 60.0))
    return out


def flat_mix() -> list[Campaign]:
    return [(f"{level:g}/min", level, level * FLAT_AOV * 60.0) for level in FLAT_LEVELS]


def weights(mix: list[Campaign]) -> list[list[float]]:
    """Per campaign, its weight under each of POWERS."""
    per_power = [stake_weights([c[2] for c in mix], power) for power in POWERS]
    return [[per_power[j][i] for j in range(len(POWERS))] for i in range(len(mix))]


def levels_rules(base: Rules, ws: list[float]) -> tuple[Rules, list[int]]:
    """Rules whose alphas are the weighted levels, strictest first (``run_ticks`` stops at
    the first one's episode), and where each power's level sits in them."""
    alpha = IncidentParams().alpha_per_tick
    levels = sorted({w * alpha for w in ws})
    return replace(base, alphas=tuple(levels)), [levels.index(w * alpha) for w in ws]


def run_mix(pool: ProcessPoolExecutor, base: Rules, name: str, mix: list[Campaign],
            args: argparse.Namespace, *, mix_key: int) -> dict[str, Any]:
    ws = weights(mix)
    jobs = []
    for i, (_, orders, _) in enumerate(mix):
        rules, where = levels_rules(base, ws[i])
        null = pool.submit(null_task, rules, orders, args.days, (args.seed, mix_key, 0, i))
        drops = [pool.submit(drop_task, rules, orders, f, args.trials,
                             (args.seed, mix_key, 1, i, b)) for b, f in enumerate(DROPS)]
        jobs.append((where, null, drops))
    rows = []
    for (camp, orders, stake), w, (where, null, drops) in zip(mix, ws, jobs, strict=True):
        counts = null.result()
        minutes = [d.result() for d in drops]
        rows.append({
            "campaign": camp, "orders_per_minute": orders, "stake_per_hour": stake,
            "weights": w, "null_episodes": [sum(counts[k]) for k in where],
            "drops": [{"factor": f, "median_minutes": [_median(m[k]) for k in where],
                       "lost": {str(d): [_lost(stake, f, m[k], d) for k in where]
                                for d in INCIDENT_MINUTES}}
                      for f, m in zip(DROPS, minutes, strict=True)]})
    return {"mix": name, "days": args.days, "trials": args.trials, "campaigns": rows,
            "totals": _totals(rows, args.days)}


def _median(values: list[float]) -> float | None:
    value = statistics.median(values)
    return value if math.isfinite(value) else None


def _lost(stake: float, factor: float, minutes: list[float], length: int) -> float:
    """Mean revenue lost before the alert in an incident of ``length`` minutes."""
    return statistics.mean(stake * (1 - factor) * min(m, length) / 60.0 for m in minutes)


def _totals(rows: list[dict[str, Any]], days: int) -> list[dict[str, Any]]:
    budget = IncidentParams().false_alarms_per_campaign_day * len(rows)
    out = []
    for j, power in enumerate(POWERS):
        episodes = sum(r["null_episodes"][j] for r in rows)
        low, high = poisson_interval(episodes)
        out.append({"power": power, "episodes": episodes, "per_day": episodes / days,
                    "ci95": [low / days, high / days], "budget_per_day": budget,
                    "lost": {f"x{f:g} D{d}": sum(r["drops"][b]["lost"][str(d)][j] for r in rows)
                             for b, f in enumerate(DROPS) for d in INCIDENT_MINUTES}})
    return out


def show(result: dict[str, Any]) -> None:
    rows = []
    for r in result["campaigns"]:
        w = "/".join(f"{x:.2f}" for x in r["weights"])
        fa = "/".join(str(e) for e in r["null_episodes"])
        mins = ["/".join("-" if m is None else f"{m:.0f}" for m in d["median_minutes"])
                for d in r["drops"]]
        rows.append([r["campaign"], f"{r['orders_per_minute']:.3f}", f"{r['stake_per_hour']:,.0f}",
                     w, fa, *mins])
    print_table(f"{result['mix']}: powers {POWERS} ({result['days']} null days, "
                f"{result['trials']} drops a cell)",
                ["campaign", "orders/min", "$/h", "weights", "null episodes",
                 "median min x0.5", "median min x0"], rows)
    print_table("totals", ["power", "false alarms per day (95%)", "budget per day",
                           *[k for k in result["totals"][0]["lost"]]],
                [[t["power"], f"{t['per_day']:.4f} ({t['ci95'][0]:.4f}-{t['ci95'][1]:.4f})",
                  f"{t['budget_per_day']:.2f}", *[f"{v:,.0f}" for v in t["lost"].values()]]
                 for t in result["totals"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=150, help="null days per campaign")
    parser.add_argument("--trials", type=int, default=60, help="drops per campaign and size")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    base = make_rules(learned_lag(args.seed))
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = [run_mix(pool, base, "shop", shop_mix(), args, mix_key=0),
                   run_mix(pool, base, "flat", flat_mix(), args, mix_key=1)]
    for result in results:
        show(result)
    seconds = time.perf_counter() - started
    print(f"{seconds:.0f} s")
    write_results("conversion_weights", {"config": {**vars(args), "powers": POWERS},
                                         "mixes": results, "seconds": seconds})


if __name__ == "__main__":
    main()
