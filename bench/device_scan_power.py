"""The per-device conversion scan: minutes to detect and size, by the campaign test's weight.

A campaign with three devices (desktop 27, mobile 30, tablet 3 sessions a minute,
converting at 3.5%, 2% and 3%: 1.5 orders a minute, phones 38% of them), order lag
log-normal (median 6 min, sigma 0.9), baselines of three days. At minute 0 the
conversion of some devices changes; each tick (120 minutes of data) runs the campaign's
``conversion_scan`` and the devices' (``conversion_scan_rows``, a row a device) and
combines them with each weight ``w`` (``combine``: ``w`` of the level to the campaign's own test,
the rest shared by the warm devices). A drop is detected at the first tick whose p-value
is below the per-tick level of the default budget, 0.02 / 16 (docs/CONVERSION-POWER.md);
``w`` = 1 is the campaign's test alone. The size: under no drop, the share of draws whose
p-value is below 0.05 at one tick, with no tolerance (the exact size) and the default
0.1, and of the smallest unadjusted p-value of the campaign and its devices.

    .venv/bin/python bench/device_scan_power.py             # 200 drops, 4,000 null draws
    .venv/bin/python bench/device_scan_power.py --trials 40 --draws 1000   # a quick look
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

import streams  # noqa: F401  (first, so the compiled build is used)
from bench.common import print_table, write_results
from detectors.conversion import MINUTE_MS, conversion_scan, conversion_scan_rows
from detectors.device_scan import combine
from detectors.lag import LagModel

LEVEL = 0.02 / 16
WEIGHTS = (1.0, 0.95, 0.9, 0.8, 0.7)
LAG = LagModel(prior_median_minutes=6.0, prior_sigma=0.9)
DROPS = {"phones x0": (1.0, 1.0, 0.0, 1.0), "phones x0.3": (1.0, 1.0, 0.3, 1.0),
         "every device x0.5": (0.5,) * 4, "every device x0.6": (0.6,) * 4}


@dataclass(frozen=True)
class Campaign:
    """Sessions a minute and conversion rate per stratum (unknown, desktop, mobile, tablet)."""

    sessions: tuple[float, ...] = (0.0, 27.0, 30.0, 3.0)
    rates: tuple[float, ...] = (0.03, 0.035, 0.02, 0.03)


@dataclass(frozen=True)
class Tick:
    """One tick's p-values: the campaign's test, combined per weight, the unadjusted min."""

    campaign: float
    combined: tuple[float, ...]
    naive: float


def simulate(campaign: Campaign, factors: tuple[float, ...], seed: int, *,
             max_minutes: int = 90, tolerance: float = 0.1,
             weights: tuple[float, ...] = WEIGHTS) -> list[Tick]:
    """Ticks 1..``max_minutes`` after each stratum's conversion changes by ``factors``."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(-240, max_minutes)
    sessions = rng.poisson(np.array(campaign.sessions)[:, None] * np.ones(minutes.size))
    after = np.where(minutes >= 0, np.array(factors)[:, None], 1.0)
    converted = rng.binomial(sessions, np.array(campaign.rates)[:, None] * after)
    row, col = np.nonzero(converted)
    stratum, minute = (np.repeat(a, converted[row, col]) for a in (row, col))
    arrival = minutes[minute] + rng.random(minute.size) + rng.lognormal(
        math.log(6.0), 0.9, size=minute.size)
    base_sess = np.array(campaign.sessions) * 1440 * 3
    base_conv = rng.binomial(base_sess.astype(int), campaign.rates).astype(float)
    ticks = []
    for tick in range(1, max_minutes + 1):
        lo, hi = 120 + tick, 240 + tick
        seen = np.zeros_like(sessions)
        done = arrival < tick
        np.add.at(seen, (stratum[done], minute[done]), 1)
        ticks.append(_tick(minutes[lo:hi], sessions[:, lo:hi], seen[:, lo:hi], tick,
                           (base_sess, base_conv), tolerance, weights))
    return ticks


def _tick(minutes: npt.NDArray[np.int64], sessions: npt.NDArray[np.int64],  # noqa: PLR0917
          seen: npt.NDArray[np.int64], tick: int,
          baseline: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
          tolerance: float, weights: tuple[float, ...]) -> Tick:
    base_sess, base_conv = baseline
    window = minutes * MINUTE_MS
    completeness = LAG.cdf_array(tick - minutes - 0.5)
    whole = conversion_scan(window, sessions.sum(axis=0), seen.sum(axis=0), completeness,
                            float(base_conv.sum()), float(base_sess.sum()),
                            tolerance=tolerance)
    devices, _ = conversion_scan_rows(
        window, sessions.astype(float), seen.astype(float), completeness, base_conv, base_sess,
        windows_minutes=(10, 20, 30, 60, 120), tolerance=tolerance,
        min_baseline_conversions=20.0)
    return Tick(whole.p_value, tuple(combine(whole, devices, w)[0].p_value for w in weights),
                min(whole.p_value, *(d.p_value for d in devices)))


def first_below(p_values: list[float], level: float = LEVEL) -> int:
    """The first tick with a p-value below ``level`` (one past the last when none)."""
    return next((n + 1 for n, p in enumerate(p_values) if p < level), len(p_values) + 1)


def minutes_to_detect(factors: tuple[float, ...], trials: int) -> npt.NDArray[np.float64]:
    """(trials, weights): the tick of detection of each seed, per weight."""
    out = np.zeros((trials, len(WEIGHTS)))
    for seed in range(trials):
        ticks = simulate(Campaign(), factors, seed)
        out[seed] = [first_below([t.combined[j] for t in ticks]) for j in range(len(WEIGHTS))]
    return out


def sizes(draws: int, tolerance: float) -> dict[str, float]:
    """Under no drop, the share of p-values below 0.05 at one tick."""
    ticks = [simulate(Campaign(), (1.0,) * 4, seed, max_minutes=1, tolerance=tolerance)[0]
             for seed in range(draws)]
    share = {f"combined w={w}": float(np.mean([t.combined[j] < 0.05 for t in ticks]))
             for j, w in enumerate(WEIGHTS)}
    return {**share, "unadjusted minimum": float(np.mean([t.naive < 0.05 for t in ticks]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args()
    started = time.perf_counter()
    detect = {name: minutes_to_detect(f, args.trials) for name, f in DROPS.items()}
    rows = [[name, *(f"{np.median(d[:, j]):.1f} / {d[:, j].mean():.1f}"
                     for j in range(len(WEIGHTS)))] for name, d in detect.items()]
    print_table(f"minutes to detect, median / mean of {args.trials} seeds (91 = not within 90;"
                f" w = 1: the campaign's test alone)", ["drop", *(f"w={w}" for w in WEIGHTS)],
                rows)
    size = {tol: sizes(args.draws, tol) for tol in (0.0, 0.1)}
    print_table(f"P(p < 0.05) under no drop, {args.draws} draws", ["", "tolerance 0",
                "tolerance 0.1"], [[k, f"{size[0.0][k]:.4f}", f"{size[0.1][k]:.4f}"]
                                   for k in size[0.0]])
    print(f"\n{time.perf_counter() - started:.0f} s")
    write_results("device_scan_power", {
        "trials": args.trials, "draws": args.draws, "level": LEVEL, "weights": WEIGHTS,
        "minutes_to_detect": {name: {"median": np.median(d, axis=0).tolist(),
                                     "mean": d.mean(axis=0).tolist()}
                              for name, d in detect.items()},
        "size_at_0.05": {str(k): v for k, v in size.items()}})


if __name__ == "__main__":
    main()
