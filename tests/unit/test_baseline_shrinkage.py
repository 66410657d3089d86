"""SeasonalBaseline's empirical-Bayes shrinkage of hour-of-day offsets, and what it does to
the latency CUSUM on a thin campaign (seeded simulations with known truth)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.baseline import MINUTE_MS, SeasonalBaseline
from detectors.latency import LatencyCusum

DAY = 1440
SD = 0.48  # per-session sd of log-LCP in the benchmark's simulator (device mix included)
SHIFT = math.log(1.25)


def _sessions(rng: np.random.Generator, minutes: int, rate: float) -> np.ndarray:
    """Sessions per minute: ``rate`` at 20:00, 0.3 x ``rate`` at 08:00 (like the simulator)."""
    hours = np.arange(minutes) / 60.0
    return rng.poisson(rate * (0.65 - 0.35 * np.cos(2 * np.pi * (hours - 20.0) / 24.0)))


def _learn(baseline: SeasonalBaseline, rng: np.random.Generator, days: int, rate: float,
           truth: np.ndarray) -> None:
    n = _sessions(rng, days * DAY, rate)
    for minute in np.flatnonzero(n):
        mean = truth[minute % DAY] + rng.normal(0.0, SD / math.sqrt(n[minute]))
        baseline.update(int(minute) * MINUTE_MS, float(mean), float(n[minute]))


def test_unit_variance_is_the_per_session_variance() -> None:
    baseline = SeasonalBaseline()
    _learn(baseline, np.random.default_rng(1), 3, 3.0, np.full(DAY, 7.7))
    assert baseline._unit_var.mean == pytest.approx(SD**2, rel=0.1)


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in range(4)])
def test_noise_offsets_shrink_to_near_zero(seed: int) -> None:
    """No hour-of-day effect, a session a minute: raw offsets are noise of sd ~0.04."""
    flat = np.full(DAY, 7.7)
    shrunk, raw = SeasonalBaseline(), SeasonalBaseline(shrink_offsets=False)
    for baseline in (shrunk, raw):
        _learn(baseline, np.random.default_rng(seed), 3, 1.0, flat)
    at = [(3 * DAY + 60 * h + 30) * MINUTE_MS for h in range(24)]
    rms_raw = math.sqrt(np.mean([raw.offset(t) ** 2 for t in at]))
    rms_shrunk = math.sqrt(np.mean([shrunk.offset(t) ** 2 for t in at]))
    assert rms_raw > 0.025
    assert rms_shrunk < 0.4 * rms_raw


def test_a_real_daily_pattern_is_kept() -> None:
    """Hours that differ by +-0.2 in log-LCP (e.g. mobile evenings), 3 sessions a minute."""
    truth = 7.7 + 0.2 * np.sin(2 * np.pi * np.arange(DAY) / DAY)
    baseline = SeasonalBaseline()
    _learn(baseline, np.random.default_rng(7), 3, 3.0, truth)
    reliabilities = [baseline.reliability(slot) for slot in range(24)]
    assert min(reliabilities) > 0.8
    errors = [baseline.expected((3 * DAY + m) * MINUTE_MS) - truth[m] for m in range(0, 120, 5)]
    assert max(abs(e) for e in errors) < 0.1  # the level alone would be 0.2 off at 06:00


def test_between_slot_variance_matches_the_truth() -> None:
    """Known answer: true offsets drawn with tau = 0.1 over 96 quarter-hour slots."""
    rng = np.random.default_rng(3)
    slot_truth = rng.normal(0.0, 0.1, size=96)
    slot_truth -= slot_truth.mean()
    truth = 7.7 + np.repeat(slot_truth, 15)
    baseline = SeasonalBaseline(slot_minutes=15, slots=96)
    _learn(baseline, rng, 4, 8.0, truth)
    assert math.sqrt(baseline._between_var) == pytest.approx(float(slot_truth.std()), rel=0.25)


def _false_alarms(seed: int, *, shrink: bool, rate: float = 1.0, days: int = 4) -> int:
    """Alarms of the campaign's loop on a flat truth: score each minute against the
    baseline, learn it 15 minutes later unless flagged; restart after an alarm."""
    rng = np.random.default_rng(seed)
    baseline = SeasonalBaseline(shrink_offsets=shrink)
    cusum = LatencyCusum(max_excursion_minutes=60)
    n = _sessions(rng, days * DAY, rate)
    means = 7.7 + rng.normal(0.0, 1.0, size=n.size) * SD / np.sqrt(np.maximum(n, 1))
    flagged = np.zeros(n.size, dtype=bool)
    alarms = 0
    for minute in range(n.size):
        t = minute * MINUTE_MS
        if n[minute] and minute >= DAY:
            cusum.update(t, int(n[minute]), float(means[minute]), baseline.expected(t), SD)
            if cusum.statistic >= cusum.threshold:
                alarms += 1
                flagged[max(0, minute - 60):minute + 1] = True
                cusum.reset()
        old = minute - 15
        if old >= 0 and n[old] and not flagged[old]:
            baseline.update(old * MINUTE_MS, float(means[old]), float(n[old]))
    return alarms


def _baseline_errors(seed: int, *, shrink: bool, rate: float) -> np.ndarray:
    """``expected - truth`` at every minute with sessions on days 3-4 (flat truth 7.7)."""
    rng = np.random.default_rng(seed)
    baseline = SeasonalBaseline(shrink_offsets=shrink)
    n = _sessions(rng, 4 * DAY, rate)
    errors = []
    for minute in range(4 * DAY):
        if n[minute] and minute >= 2 * DAY:
            errors.append(baseline.expected(minute * MINUTE_MS) - 7.7)
        old = minute - 15
        if old >= 0 and n[old]:
            mean = 7.7 + rng.normal(0.0, SD / math.sqrt(n[old]))
            baseline.update(old * MINUTE_MS, float(mean), float(n[old]))
    return np.array(errors)


def test_thin_campaign_baseline_error_halves() -> None:
    """Measured (10 seeds, a session a minute at the evening peak, no true daily pattern):
    sd of the error 0.056 unshrunk vs 0.026, P(error < -shift/4) 17% vs 2.6%."""
    raw = np.concatenate([_baseline_errors(s, shrink=False, rate=1.0) for s in range(10)])
    shrunk = np.concatenate([_baseline_errors(s, shrink=True, rate=1.0) for s in range(10)])
    assert raw.std() > 0.045
    assert shrunk.std() < 0.6 * raw.std()
    assert np.mean(shrunk < -SHIFT / 4) < 0.05 < np.mean(raw < -SHIFT / 4)


def test_thin_campaign_false_alarms_fall_with_shrinkage() -> None:
    """Measured (40 seeds x 3 scored days at 1.5 and at 3 sessions a minute at the peak,
    sd known, flat truth): 4 false alarms unshrunk, 0 shrunk, in 240 campaign-days."""
    runs = [(seed, rate) for seed in range(40) for rate in (1.5, 3.0)]
    raw = sum(_false_alarms(seed, shrink=False, rate=rate) for seed, rate in runs)
    shrunk = sum(_false_alarms(seed, shrink=True, rate=rate) for seed, rate in runs)
    assert raw >= 3
    assert shrunk <= 1


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in range(3)])
def test_a_25_percent_slowdown_is_still_caught(seed: int) -> None:
    """After two days of learning at 20 sessions a minute, a real log(1.25) shift."""
    rng = np.random.default_rng(seed)
    baseline = SeasonalBaseline()
    _learn(baseline, rng, 2, 20.0, np.full(DAY, 7.7))
    cusum = LatencyCusum(max_excursion_minutes=60)
    start = 2 * DAY + 600
    for minute in range(start, start + 30):
        t = minute * MINUTE_MS
        mean = 7.7 + SHIFT + rng.normal(0.0, SD / math.sqrt(20))
        cusum.update(t, 20, float(mean), baseline.expected(t), SD)
        if cusum.statistic >= cusum.threshold:
            break
    assert minute - start < 12


def test_state_with_shrinkage_round_trips_and_old_states_load() -> None:
    baseline = SeasonalBaseline()
    truth = 7.7 + 0.05 * np.sin(2 * np.pi * np.arange(DAY) / DAY)
    _learn(baseline, np.random.default_rng(5), 2, 2.0, truth)
    assert 0.0 < baseline.reliability(5) < 1.0
    state = json.loads(json.dumps(baseline.to_state(), allow_nan=False))
    again = SeasonalBaseline.from_state(state)
    assert again == baseline
    t = 2 * DAY * MINUTE_MS + 5 * 60 * MINUTE_MS
    assert again.expected(t) == baseline.expected(t)
    for key in ("slot_squares", "unit_var", "between_var", "shrink_offsets"):
        del state[key]
    old = SeasonalBaseline.from_state(state)
    assert old.reliability(5) == 1.0  # no shrinkage until it has learned the unit variance
    assert old.offset(t) == pytest.approx(baseline.offset(t) / baseline.reliability(5))
