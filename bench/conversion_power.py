"""How fast a conversion drop can be caught, how fast revwatch catches it, at what cost.

One campaign, simulated per level of orders per minute and drop size (conversion x0.5,
x0.4, x0.2, x0 = checkout broken): Poisson sessions per minute, log-normal order lag
(median 6 min, sigma 0.9: ``streams/simulate_model.py``). Each tick runs the real test,
``conversion_scan`` with the ``CampaignParams`` defaults, fed as
``CampaignModel._scan_conversion`` feeds it (sessions, conversions seen so far,
``F(age - 0.5)`` of a learned ``LagModel``, the forgetting baseline of matured unflagged
minutes), then ``IncidentParams``' per-tick level and its ``open_ticks_conversion`` hot
ticks in a row (one campaign: Benjamini-Hochberg is the level itself). Prints minutes to
detect, false-alarm episodes per campaign-day with no incident, and the oracle: onset,
baseline rate and lag known, same per-tick level. ``LOOSER_BUDGETS`` are read off the same
p-values to show the trade. Meaning: ``docs/CONVERSION-POWER.md``.

    .venv/bin/python bench/conversion_power.py            # about 2.5 min on 2 shared cores
    .venv/bin/python bench/conversion_power.py --quick    # about 20 s
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

import streams  # noqa: F401  (first, so the compiled build is used)
from bench.common import print_table, write_results
from bench.conversion_oracle import (
    LAG_MEDIAN_MIN,
    LAG_SIGMA,
    oracle_alarmed,
    oracle_first_alarm,
    oracle_minutes,
    poisson_interval,
    seen_probability,
)
from detectors.campaign import CampaignParams
from detectors.conversion import MINUTE_MS, conversion_scan
from detectors.episodes import IncidentParams
from detectors.lag import LagModel

FloatArray = npt.NDArray[np.float64]
CountArray = npt.NDArray[np.int32]

LEVELS = (0.25, 0.5, 1.0, 1.5, 3.0, 6.0)  # orders per minute at the normal conversion rate
DROPS = (0.5, 0.4, 0.2, 0.0)  # conversion factor during the incident (0: checkout broken)
INCIDENT_MINUTES = {(0.25, 0.4): 45, (1.5, 0.5): 60}  # quality.py's checkout incidents
CONVERSION_RATE = 0.025  # sessions per minute = level / CONVERSION_RATE
LAG_TRAINING_ORDERS = 20_000  # the LagModel is learned from this many simulated orders
FOLLOW_MINUTES = 240  # a drop not caught this long after its onset counts as missed
PREFIX_MINUTES = 3600  # matured history behind the baseline (5 half-lives of 720 min)
DAY_MINUTES = 1440
CHUNK_DAYS = 25  # null days per task (tasks are seeded apart: results do not depend on --jobs)
LOOSER_BUDGETS = (0.1, 0.5)  # false alarms per campaign-day, beside the default, for the trade


@dataclass(frozen=True)
class Rules:
    """What the real code decides with, read from the parameter defaults."""

    horizon: int
    windows: tuple[int, ...]
    tolerance: float
    min_baseline: float
    flag_p: float
    decay: float  # the baseline's forgetting per minute
    budgets: tuple[float, ...]  # false alarms per campaign-day; the first is the default
    alphas: tuple[float, ...]  # the per-tick level of each budget
    open_ticks: int
    quiet_ticks: int
    completeness: FloatArray = field(repr=False)  # F(age - 0.5) of the window, oldest first


def make_rules(lag: LagModel) -> Rules:
    """``CampaignParams`` and ``IncidentParams`` defaults; the scan's ``F`` from ``lag``."""
    c, i = CampaignParams(), IncidentParams()
    ages = c.horizon_minutes - np.arange(c.horizon_minutes) - 0.5
    budgets = (i.false_alarms_per_campaign_day, *LOOSER_BUDGETS)
    alphas = tuple(min(replace(i, false_alarms_per_campaign_day=b).alpha_per_tick, 0.05)
                   for b in budgets)  # BH with one campaign: its level, capped as in incidents
    return Rules(c.horizon_minutes, c.conversion_windows, c.conversion_tolerance,
                 c.min_baseline_conversions, c.flag_conversion_p,
                 0.5 ** (1.0 / c.conversion_half_life_minutes), budgets, alphas,
                 i.open_ticks_conversion, i.quiet_ticks_to_resolve, lag.cdf_array(ages))


def learned_lag(seed: int) -> LagModel:
    """A ``LagModel`` (defaults, wrong prior) after LAG_TRAINING_ORDERS simulated orders."""
    model = LagModel()
    rng = np.random.default_rng([seed, 99])
    for lag in rng.lognormal(math.log(LAG_MEDIAN_MIN), LAG_SIGMA, LAG_TRAINING_ORDERS):
        model.update(float(lag))
    return model


@dataclass
class Stream:
    """Rows of session minutes: sessions, and conversions seen by order delay (cumulative)."""

    sessions: FloatArray
    seen: CountArray  # seen[r, d]: orders of row r's sessions in at the tick of row r + d + 1


def simulate(rng: np.random.Generator, level: float, rows: int, *, onset: int, factor: float,
             horizon: int) -> Stream:
    """Sessions and orders of ``rows`` minutes; conversion x ``factor`` from row ``onset``."""
    sessions = rng.poisson(level / CONVERSION_RATE, rows)
    rate = np.where(np.arange(rows) >= onset, factor, 1.0) * CONVERSION_RATE
    converted = rng.binomial(sessions, rate)
    owner = np.repeat(np.arange(rows), converted)
    lag = rng.random(owner.size) + rng.lognormal(math.log(LAG_MEDIAN_MIN), LAG_SIGMA, owner.size)
    delay = np.floor(lag).astype(np.int64)
    keep = delay <= horizon
    counts = np.zeros((rows, horizon + 1), dtype=np.int32)
    np.add.at(counts, (owner[keep], delay[keep]), 1)
    return Stream(sessions.astype(np.float64), np.cumsum(counts, axis=1, dtype=np.int32))


@dataclass
class Baseline:
    """``CampaignModel.conv_base``: conversions and sessions of matured minutes, forgetting."""

    conversions: float
    sessions: float
    last: int

    def learn(self, row: int, conversions: float, sessions: float, decay: float) -> None:
        scale = decay ** (row - self.last)
        self.conversions = self.conversions * scale + conversions
        self.sessions = self.sessions * scale + sessions
        self.last = row


def prefix_baseline(rng: np.random.Generator, level: float, decay: float) -> Baseline:
    """The baseline after PREFIX_MINUTES of normal, matured minutes before row 0."""
    return matured_baseline(rng, level / CONVERSION_RATE, CONVERSION_RATE, decay)


def matured_baseline(rng: np.random.Generator, per_minute: float, rate: float, decay: float
                     ) -> Baseline:
    """The baseline after PREFIX_MINUTES of normal matured minutes: ``per_minute`` units a
    minute (sessions, or checkout reachers), each converting with ``rate``."""
    sessions = rng.poisson(per_minute, PREFIX_MINUTES)
    conversions = rng.binomial(sessions, rate)
    weights = decay ** np.arange(PREFIX_MINUTES - 1, -1, -1)
    return Baseline(float(weights @ conversions), float(weights @ sessions), -1)


@dataclass
class Episodes:
    """``IncidentManager``'s rule for one campaign: open after ``open_ticks`` hot ticks in a
    row, resolve after ``quiet_ticks`` quiet ones; hot ticks of an open episode open none."""

    open_ticks: int
    quiet_ticks: int
    streak: int = 0
    quiet: int = 0
    firing: bool = False

    def step(self, hot: bool) -> bool:
        """One tick; whether an episode opens at it."""
        if self.firing:
            self.quiet = 0 if hot else self.quiet + 1
            self.firing = self.quiet < self.quiet_ticks
            return False
        self.streak = self.streak + 1 if hot else 0
        if self.streak < self.open_ticks:
            return False
        self.firing, self.streak, self.quiet = True, 0, 0
        return True


Scanner = Callable[[Rules, Baseline, npt.NDArray[np.int64], FloatArray, CountArray],
                   tuple[float, int | None]]


def run_ticks(stream: Stream, rules: Rules, base: Baseline, *, stop_on_open: bool,
              scanner: Scanner | None = None) -> list[float]:
    """Tick ``k`` (``horizon < k <= rows``) sees rows ``k - horizon .. k - 1``; first it learns
    row ``k - horizon - 1`` unless flagged, as ``CampaignModel.tick`` does. The p-value of
    each tick (1 without sessions: never hot), up to the default budget's first episode.
    ``scanner``: the test of each tick (:func:`scan`, revwatch's conversion scan, if None)."""
    scanner = scanner or scan
    h, rows = rules.horizon, stream.sessions.size
    minute_ms = np.arange(rows, dtype=np.int64) * MINUTE_MS
    diagonal = (np.arange(h), np.arange(h - 1, -1, -1))
    flagged = np.zeros(rows, dtype=bool)
    episodes, p_values = Episodes(rules.open_ticks, rules.quiet_ticks), []
    for k in range(h + 1, rows + 1):
        row = k - h - 1
        if not flagged[row]:
            base.learn(row, float(stream.seen[row, h]), float(stream.sessions[row]), rules.decay)
        sessions = stream.sessions[k - h:k]
        p, start = scanner(rules, base, minute_ms[k - h:k], sessions,
                           stream.seen[k - h:k][diagonal])
        if p < rules.flag_p and start is not None:
            flagged[start // MINUTE_MS:k] = True
        p_values.append(p if sessions.sum() > 0 else 1.0)
        if episodes.step(p_values[-1] <= rules.alphas[0]) and stop_on_open:
            break
    return p_values


def openings(p_values: list[float], alpha: float, rules: Rules) -> list[int]:
    """Indices of the ticks at which episodes open at per-tick level ``alpha``."""
    episodes = Episodes(rules.open_ticks, rules.quiet_ticks)
    return [n for n, p in enumerate(p_values) if episodes.step(p <= alpha)]


def scan(rules: Rules, base: Baseline, minute_ms: npt.NDArray[np.int64], sessions: FloatArray,
         seen: CountArray) -> tuple[float, int | None]:
    """``CampaignModel._scan_conversion``: p-value and window start (1.0 before warm-up)."""
    if base.conversions < rules.min_baseline:
        return 1.0, None
    verdict = conversion_scan(minute_ms, sessions, seen, rules.completeness,
                              base.conversions, base.sessions,
                              windows_minutes=rules.windows, tolerance=rules.tolerance)
    return verdict.p_value, verdict.window_start_ms


def null_task(rules: Rules, level: float, days: int, key: Sequence[int]) -> list[list[int]]:
    """Per budget, the false-alarm episodes of each of ``days`` independent days."""
    rng = np.random.default_rng(np.random.SeedSequence(key))
    counts: list[list[int]] = [[] for _ in rules.alphas]
    for _ in range(days):
        stream = simulate(rng, level, rules.horizon + DAY_MINUTES, onset=10**9, factor=1.0,
                          horizon=rules.horizon)
        p_values = run_ticks(stream, rules, prefix_baseline(rng, level, rules.decay),
                             stop_on_open=False)
        for per_budget, alpha in zip(counts, rules.alphas, strict=True):
            per_budget.append(len(openings(p_values, alpha, rules)))
    return counts


def drop_task(rules: Rules, level: float, factor: float, trials: int,
              key: Sequence[int]) -> list[list[float]]:
    """Per budget, the minutes from the onset to the tick that opens the first episode, of
    each trial (inf: not within FOLLOW_MINUTES). A looser level never opens later."""
    rng = np.random.default_rng(np.random.SeedSequence(key))
    minutes: list[list[float]] = [[] for _ in rules.alphas]
    for _ in range(trials):
        h = rules.horizon
        stream = simulate(rng, level, h + FOLLOW_MINUTES, onset=h, factor=factor, horizon=h)
        p_values = run_ticks(stream, rules, prefix_baseline(rng, level, rules.decay),
                             stop_on_open=True)
        for per_budget, alpha in zip(minutes, rules.alphas, strict=True):
            opened = openings(p_values, alpha, rules)
            per_budget.append(float(opened[0] + 1) if opened else math.inf)
    return minutes


def quantile(values: Sequence[float], q: float) -> float | None:
    """An observed value (inverted CDF); None when it is a miss."""
    value = float(np.quantile(np.asarray(values), q, method="inverted_cdf"))
    return value if math.isfinite(value) else None


def summarise_drop(rules: Rules, level: float, factor: float, minutes: list[list[float]]
                   ) -> dict[str, Any]:
    """The default budget's figures, and the median and oracle at every budget."""
    array = np.asarray(minutes[0])
    length = INCIDENT_MINUTES.get((level, factor))
    return {"orders_per_minute": level, "conversion_factor": factor, "trials": array.size,
            "median_minutes": quantile(minutes[0], 0.5), "p80_minutes": quantile(minutes[0], 0.8),
            "within_30": float(np.mean(array <= 30)), "within_60": float(np.mean(array <= 60)),
            "incident_minutes": length,
            "within_incident": None if length is None else float(np.mean(array <= length)),
            "oracle_within_incident": None if length is None
            else float(oracle_alarmed(level, factor, rules.alphas[0], length)[-1]),
            "missed_within_follow": float(np.mean(~np.isfinite(array))),
            "oracle_50pct_minutes": oracle_minutes(level, factor, rules.alphas[0]),
            "oracle_first_alarm_minutes": oracle_first_alarm(level, factor, rules.alphas[0]),
            "by_budget": [{"budget": b, "median_minutes": quantile(m, 0.5),
                           "oracle_50pct_minutes": oracle_minutes(level, factor, a)}
                          for b, a, m in zip(rules.budgets, rules.alphas, minutes, strict=True)]}


def summarise_null(level: float, counts: list[int]) -> dict[str, Any]:
    episodes, days = sum(counts), len(counts)
    low, high = poisson_interval(episodes)
    return {"orders_per_minute": level, "days": days, "episodes": episodes,
            "per_campaign_day": episodes / days, "ci95": [low / days, high / days]}


NullCounts = dict[float, list[list[int]]]  # level -> budget -> day
DropMinutes = dict[tuple[float, float], list[list[float]]]  # cell -> budget -> trial


def run_all(rules: Rules, args: argparse.Namespace) -> tuple[NullCounts, DropMinutes]:
    """Every null chunk and drop cell as its own seeded task, ``args.jobs`` processes."""
    chunks = [min(CHUNK_DAYS, args.days - s) for s in range(0, args.days, CHUNK_DAYS)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        nulls = {(lv, n): pool.submit(null_task, rules, lv, d, (args.seed, 0, a, n))
                 for a, lv in enumerate(LEVELS) for n, d in enumerate(chunks)}
        drops = {(lv, f): pool.submit(drop_task, rules, lv, f, args.trials, (args.seed, 1, a, b))
                 for a, lv in enumerate(LEVELS) for b, f in enumerate(DROPS)}
        null = {lv: [[c for n in range(len(chunks)) for c in nulls[lv, n].result()[j]]
                     for j in range(len(rules.alphas))] for lv in LEVELS}
        return null, {cell: future.result() for cell, future in drops.items()}


def minutes_text(value: float | None) -> str:
    return f">{FOLLOW_MINUTES}" if value is None else f"{value:g}"


def share_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def interval_text(row: dict[str, Any]) -> str:
    low, high = row["ci95"]
    return f"{row['per_campaign_day']:.3f} ({row['episodes']}; {low:.3f}-{high:.3f})"


def print_tables(rules: Rules, drops: list[dict[str, Any]],
                 null: list[list[dict[str, Any]]]) -> None:
    print_table(f"Minutes from onset to alert, sustained drop (budget {rules.budgets[0]:g} "
                "false alarms per campaign-day)",
                ["orders/min", "conversion", "median", "80th pct", "<=30 min", "<=60 min",
                 "within incident", "oracle 50%", "oracle 1st alarm"],
                [[f"{r['orders_per_minute']:g}", f"x{r['conversion_factor']:g}",
                  minutes_text(r["median_minutes"]), minutes_text(r["p80_minutes"]),
                  share_text(r["within_30"]), share_text(r["within_60"]),
                  incident_text(r),
                  minutes_text(r["oracle_50pct_minutes"]),
                  minutes_text(r["oracle_first_alarm_minutes"])] for r in drops])
    print_table("False-alarm episodes per campaign-day with no incident: rate (episodes; 95%)",
                ["orders/min", "days", *(f"budget {b:g}" for b in rules.budgets)],
                [[f"{rows[0]['orders_per_minute']:g}", rows[0]["days"],
                  *(interval_text(r) for r in rows)] for rows in null])
    print_table("The trade: median minutes to detect (oracle 50%) by false-alarm budget",
                ["orders/min", "conversion", *(f"budget {b:g}" for b in rules.budgets)],
                [[f"{r['orders_per_minute']:g}", f"x{r['conversion_factor']:g}",
                  *(trade_text(x) for x in r["by_budget"])] for r in drops])


def incident_text(row: dict[str, Any]) -> str:
    if row["incident_minutes"] is None:
        return "-"
    return (f"{share_text(row['within_incident'])} of {row['incident_minutes']} min "
            f"(oracle {share_text(row['oracle_within_incident'])})")


def trade_text(cell: dict[str, Any]) -> str:
    scan, oracle = cell["median_minutes"], cell["oracle_50pct_minutes"]
    return f"{minutes_text(scan)} ({minutes_text(oracle)})"


def lag_check(lag: LagModel) -> dict[str, Any]:
    """The scan's ``F(age - 0.5)`` against the true share of a minute's orders in by then."""
    ages = np.array([1.0, 2.0, 4.0, 7.0, 11.0, 21.0, 41.0, 81.0])
    return {"age_minutes": ages.tolist(), "scan_F": lag.cdf_array(ages - 0.5).round(4).tolist(),
            "true_share_seen": seen_probability(ages).round(4).tolist(),
            "lag_model_weight": round(lag.weight, 1)}


def config(rules: Rules, args: argparse.Namespace) -> dict[str, Any]:
    return {"levels_orders_per_minute": LEVELS, "conversion_factors": DROPS,
            "conversion_rate": CONVERSION_RATE, "lag_median_min": LAG_MEDIAN_MIN,
            "lag_sigma": LAG_SIGMA, "F": f"learned LagModel, {LAG_TRAINING_ORDERS} orders",
            "budgets_per_campaign_day": rules.budgets, "alphas_per_tick": rules.alphas,
            "open_ticks": rules.open_ticks, "quiet_ticks": rules.quiet_ticks,
            "windows": rules.windows, "tolerance": rules.tolerance,
            "follow_minutes": FOLLOW_MINUTES, "null_days_per_level": args.days,
            "trials_per_cell": args.trials, "seed": args.seed, "quick": args.quick}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 null days and 40 trials")
    parser.add_argument("--days", type=int, default=200, help="null days per level")
    parser.add_argument("--trials", type=int, default=200, help="drops simulated per cell")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    args = parser.parse_args()
    if args.quick:
        args.days, args.trials = 12, 40
    return args


def main() -> None:
    args, started = parse(), time.perf_counter()
    lag = learned_lag(args.seed)
    rules = make_rules(lag)
    null_counts, drop_minutes = run_all(rules, args)
    drops = [summarise_drop(rules, lv, f, drop_minutes[lv, f]) for lv in LEVELS for f in DROPS]
    null = [[summarise_null(lv, null_counts[lv][j]) for j in range(len(rules.budgets))]
            for lv in LEVELS]
    pooled = [summarise_null(math.nan, [c for lv in LEVELS for c in null_counts[lv][j]])
              for j in range(len(rules.budgets))]
    print_tables(rules, drops, null)
    for budget, row in zip(rules.budgets, pooled, strict=True):
        print(f"all levels, budget {budget:g}: {row['episodes']} episodes in {row['days']} "
              f"campaign-days = {interval_text(row)}")
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds:.0f} s, per-tick levels {', '.join(f'{a:.3g}' for a in rules.alphas)}")
    write_results("conversion_power", {
        "config": config(rules, args), "lag_check": lag_check(lag), "detection": drops,
        "false_alarms": [dict(r, budget=b) for rows in null
                         for b, r in zip(rules.budgets, rows, strict=True)],
        "false_alarms_all_levels": [
            {"budget": b, **{k: v for k, v in r.items() if k != "orders_per_minute"}}
            for b, r in zip(rules.budgets, pooled, strict=True)],
        "seconds": seconds})


if __name__ == "__main__":
    main()
