"""LatencyCusum: increments, caps, gaps, change point, run lengths by seeded simulation.

Measured (seeded, see the tests): in-control ARL0 for threshold 10, cap 1/3, n=20 sessions
per minute, sd 0.5: about 2.6e5 minutes (~180 days; 1.1e5 without the cap). Detection delay
of a real log(1.5) shift from S=0: mean 8.3 minutes at n=5, 3.5 at n=20, 3.0 at n=200.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.latency import MINUTE_MS, LatencyCusum, LatencyVerdict

SHIFT = math.log(1.25)


def test_increment_is_the_normal_log_likelihood_ratio() -> None:
    cusum = LatencyCusum(threshold=1e6)  # cap out of the way
    n, sd, excess = 7, 0.4, 0.3
    expected_llr = n * (SHIFT / sd**2) * (excess - SHIFT / 2)
    # the same LLR from the two normal densities of n observations' mean
    mean_sd = sd / math.sqrt(n)
    density_ratio = (-((excess - SHIFT) ** 2) + excess**2) / (2 * mean_sd**2)
    assert cusum.increment(n, 5.0 + excess, 5.0, sd) == pytest.approx(expected_llr)
    assert expected_llr == pytest.approx(density_ratio)


def test_one_minute_blip_never_alarms() -> None:
    cusum = LatencyCusum()
    verdict = cusum.score(0, 10_000, 20.0, 7.0, 0.5)
    assert verdict.statistic == pytest.approx(10.0 / 3)
    assert not verdict.is_regression


def test_three_capped_minutes_do_alarm() -> None:
    cusum = LatencyCusum()
    for minute in range(3):
        verdict = cusum.score(minute * MINUTE_MS, 10_000, 20.0, 7.0, 0.5)
        cusum.update(minute * MINUTE_MS, 10_000, 20.0, 7.0, 0.5)
    assert verdict.is_regression
    assert verdict.started_ms == 0
    assert verdict.threshold == 10.0


def test_score_does_not_mutate_and_update_matches_score() -> None:
    cusum = LatencyCusum()
    verdict = cusum.score(0, 20, 7.5, 7.0, 0.5)
    assert cusum.statistic == 0.0
    cusum.update(0, 20, 7.5, 7.0, 0.5)
    assert cusum.statistic == verdict.statistic
    assert verdict == LatencyVerdict(verdict.statistic, 10.0, False, 0, verdict.shift)
    assert verdict.shift == pytest.approx(0.5)
    assert isinstance(verdict, LatencyVerdict)


def test_minute_without_sessions_is_not_evidence() -> None:
    cusum = LatencyCusum()
    cusum.update(0, 50, 7.4, 7.0, 0.5)
    before = cusum.statistic
    verdict = cusum.score(MINUTE_MS, 0, math.nan, 7.0, math.nan)
    cusum.update(MINUTE_MS, 0, math.nan, 7.0, math.nan)
    assert cusum.statistic == before > 0
    assert math.isnan(verdict.shift)
    assert verdict.started_ms == 0


def test_started_is_the_first_minute_after_the_statistic_was_zero() -> None:
    cusum = LatencyCusum()
    means = [7.0, 7.0, 7.3, 6.0, 7.0, 7.3, 7.3, 7.3]
    for minute, mean_log in enumerate(means):
        cusum.update(minute * MINUTE_MS, 30, mean_log, 7.0, 0.5)
    assert cusum.statistic > 0
    assert cusum.score(8 * MINUTE_MS, 30, 7.3, 7.0, 0.5).started_ms == 5 * MINUTE_MS
    cusum.update(8 * MINUTE_MS, 30, 5.0, 7.0, 0.5)
    assert cusum.statistic == 0.0
    assert cusum.score(9 * MINUTE_MS, 30, 7.0, 7.0, 0.5).started_ms is None


def test_reset_clears_the_statistic() -> None:
    cusum = LatencyCusum()
    cusum.update(0, 30, 8.0, 7.0, 0.5)
    cusum.reset()
    assert cusum == LatencyCusum()


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"shift": 0.0}, id="shift"),
        pytest.param({"threshold": -1.0}, id="threshold"),
        pytest.param({"max_step_fraction": 0.0}, id="cap-zero"),
        pytest.param({"max_step_fraction": 1.5}, id="cap-big"),
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LatencyCusum(**params)


@pytest.mark.parametrize(
    ("n", "mean_log", "sd_log"),
    [
        pytest.param(-1, 7.0, 0.5, id="negative-n"),
        pytest.param(5, 7.0, 0.0, id="zero-sd"),
        pytest.param(5, math.nan, 0.5, id="nan-mean"),
    ],
)
def test_bad_minutes_are_rejected(n: int, mean_log: float, sd_log: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        LatencyCusum().score(0, n, mean_log, 7.0, sd_log)


def test_state_round_trips_through_json() -> None:
    cusum = LatencyCusum(shift=0.3, threshold=8.0, max_step_fraction=0.5)
    cusum.update(0, 30, 7.4, 7.0, 0.5)
    again = LatencyCusum.from_state(json.loads(json.dumps(cusum.to_state(), allow_nan=False)))
    assert again == cusum
    assert again.score(MINUTE_MS, 30, 7.4, 7.0, 0.5) == cusum.score(MINUTE_MS, 30, 7.4, 7.0, 0.5)


# --- run lengths by seeded simulation -----------------------------------------------------


def _excursion(
    cusum: LatencyCusum, rng: np.random.Generator, n: int, sd: float, true_shift: float
) -> tuple[int, bool, float]:
    """One excursion of S from 0 until it is back at 0 or alarms: (minutes, alarmed, LLR)."""
    cusum.reset()
    llr, minutes = 0.0, 0
    while True:
        mean_log = true_shift + float(rng.normal(0.0, sd / math.sqrt(n)))
        llr += n * SHIFT / sd**2 * (mean_log - SHIFT / 2)  # uncapped: the true likelihood ratio
        cusum.update(minutes * MINUTE_MS, n, mean_log, 0.0, sd)
        minutes += 1
        if cusum.statistic >= cusum.threshold or cusum.statistic == 0.0:
            return minutes, cusum.statistic > 0.0, llr


def _arl0_by_importance_sampling(
    *, threshold: float, cap: float, n: int, sd: float, cycles: int, seed: int
) -> float:
    """In-control ARL = E0[excursion length] / P0(excursion alarms) (renewal argument).

    P0(alarm) is estimated under the shifted mean and reweighted by exp(-LLR): an alarm
    needs LLR >= S >= threshold, so the weights are <= exp(-threshold) and the estimate is
    precise with a few thousand excursions.
    """
    rng = np.random.default_rng(seed)
    cusum = LatencyCusum(threshold=threshold, max_step_fraction=cap)
    mean_length = np.mean([_excursion(cusum, rng, n, sd, 0.0)[0] for _ in range(cycles)])
    weights = []
    for _ in range(cycles):
        _, alarmed, llr = _excursion(cusum, rng, n, sd, SHIFT)
        weights.append(math.exp(-llr) if alarmed else 0.0)
    return float(mean_length / np.mean(weights))


def _run_lengths(
    *, threshold: float, n: int, sd: float, true_shift: float, runs: int, seed: int
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cusum = LatencyCusum(threshold=threshold)
    lengths = []
    for _ in range(runs):
        cusum.reset()
        minute = 0
        while cusum.statistic < threshold:
            mean_log = true_shift + float(rng.normal(0.0, sd / math.sqrt(n)))
            cusum.update(minute * MINUTE_MS, n, mean_log, 0.0, sd)
            minute += 1
        lengths.append(minute)
    return np.array(lengths)


def test_importance_sampling_agrees_with_brute_force_at_a_low_threshold() -> None:
    brute = _run_lengths(threshold=4.0, n=20, sd=0.5, true_shift=0.0, runs=150, seed=2)
    estimate = _arl0_by_importance_sampling(
        threshold=4.0, cap=1 / 3, n=20, sd=0.5, cycles=3000, seed=1
    )
    standard_error = brute.std() / math.sqrt(brute.size)
    assert abs(estimate - brute.mean()) < 3.5 * standard_error


def test_in_control_run_length_exceeds_thirty_days() -> None:
    arl0 = _arl0_by_importance_sampling(
        threshold=10.0, cap=1 / 3, n=20, sd=0.5, cycles=10_000, seed=3
    )
    assert arl0 > 30 * 1440
    assert arl0 > math.exp(10.0)  # the cap and the overshoot only lengthen it


@pytest.mark.parametrize(
    ("n", "mean_at_most", "max_at_most"),
    [
        pytest.param(5, 10.0, 25, id="n5"),
        pytest.param(20, 4.0, 7, id="n20"),
        pytest.param(200, 3.0, 3, id="n200"),
    ],
)
def test_detection_delay_of_a_fifty_percent_slowdown(
    n: int, mean_at_most: float, max_at_most: int
) -> None:
    delays = _run_lengths(threshold=10.0, n=n, sd=0.5, true_shift=math.log(1.5), runs=400, seed=n)
    assert delays.mean() <= mean_at_most
    assert delays.max() <= max_at_most
    assert delays.min() >= 3  # never faster than 1 / max_step_fraction minutes


def _feed(cusum: LatencyCusum, minutes: range, n: int, mean_log: float) -> LatencyVerdict:
    verdict = cusum.score(minutes[0] * MINUTE_MS, n, mean_log, 7.0, 0.5)
    for minute in minutes:
        verdict = cusum.score(minute * MINUTE_MS, n, mean_log, 7.0, 0.5)
        cusum.update(minute * MINUTE_MS, n, mean_log, 7.0, 0.5)
    return verdict


def test_evidence_older_than_the_excursion_limit_is_dropped() -> None:
    """A slowdown a small campaign could not prove in an hour does not alarm after it ended."""
    step = 7.0 + SHIFT / 2 + 0.3  # one session a minute: +0.27 a minute
    bounded, unbounded = LatencyCusum(max_excursion_minutes=60), LatencyCusum()
    for cusum in (bounded, unbounded):
        _feed(cusum, range(30), 1, step)  # 30 minutes: S ~ 8, below 10
        _feed(cusum, range(30, 59), 0, 7.0)  # no sessions for a while: S unchanged
    assert bounded.statistic == pytest.approx(unbounded.statistic)
    assert bounded.statistic > 7.0
    late_bounded = _feed(bounded, range(59, 70), 1, step)
    late_unbounded = _feed(unbounded, range(59, 70), 1, step)
    assert late_unbounded.is_regression, "without the limit the old evidence alarms now"
    assert not late_bounded.is_regression
    assert late_bounded.started_ms == 60 * MINUTE_MS  # a new excursion began at the limit


def test_the_limit_does_not_touch_an_alarm_or_a_fast_detection() -> None:
    cusum = LatencyCusum(max_excursion_minutes=60)
    verdict = _feed(cusum, range(3), 10_000, 20.0)
    assert verdict.is_regression
    verdict = _feed(cusum, range(3, 120), 10_000, 20.0)  # a long incident stays alarmed
    assert verdict.is_regression
    assert verdict.started_ms == 0


def test_the_limit_survives_the_state_and_old_state_has_none() -> None:
    cusum = LatencyCusum(max_excursion_minutes=45)
    _feed(cusum, range(5), 3, 7.3)
    restored = LatencyCusum.from_state(json.loads(json.dumps(cusum.to_state())))
    assert restored == cusum
    assert restored.max_excursion_ms == 45 * MINUTE_MS
    old = {k: v for k, v in cusum.to_state().items() if k != "max_excursion_ms"}
    assert LatencyCusum.from_state(old).max_excursion_ms is None
    with pytest.raises(ValueError, match="max_excursion_minutes"):
        LatencyCusum(max_excursion_minutes=0)
