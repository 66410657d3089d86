"""SeasonalBaseline and EwStats: seasonality learned, steps absorbed, forgetting, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.baseline import MINUTE_MS, EwStats, SeasonalBaseline

DAY = 1440


def _series(rng: np.random.Generator, minutes: int, step_at: int | None = None) -> np.ndarray:
    t = np.arange(minutes)
    step = np.where(t >= step_at, 3.0, 0.0) if step_at is not None else 0.0
    return 10.0 + 3.0 * np.sin(2 * np.pi * t / DAY) + step + rng.normal(0.0, 0.5, size=minutes)


def _one_step_rmse(values: np.ndarray, score_from: int, score_to: int) -> tuple[float, float]:
    """One-step-ahead RMSE of the seasonal baseline and of a plain EWMA (same half-life)."""
    baseline, ewma = SeasonalBaseline(), EwStats()
    errors_b, errors_e = [], []
    for minute, value in enumerate(values):
        t = minute * MINUTE_MS
        if score_from <= minute < score_to:
            errors_b.append(baseline.expected(t) - value)
            errors_e.append(ewma.mean - value)
        baseline.update(t, float(value), 20.0)
        ewma.update(t, float(value), 20.0)
    return float(np.sqrt(np.mean(np.square(errors_b)))), float(
        np.sqrt(np.mean(np.square(errors_e)))
    )


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in (0, 1)])
def test_after_three_days_predicts_day_four_much_better_than_ewma(seed: int) -> None:
    values = _series(np.random.default_rng(seed), 4 * DAY)
    rmse_baseline, rmse_ewma = _one_step_rmse(values, 3 * DAY, 4 * DAY)
    # noise sd is 0.5: the baseline is near the floor, the EWMA lags the daily swing
    assert rmse_baseline < 0.6
    assert rmse_baseline / rmse_ewma < 0.4


def test_a_level_step_does_not_spoil_the_next_day() -> None:
    values = _series(np.random.default_rng(2), 5 * DAY, step_at=int(3.3 * DAY))
    rmse_baseline, rmse_ewma = _one_step_rmse(values, 4 * DAY, 5 * DAY)
    assert rmse_baseline < 0.65
    assert rmse_baseline / rmse_ewma < 0.4


def test_a_step_is_absorbed_at_the_level_half_life() -> None:
    baseline = SeasonalBaseline(level_half_life_minutes=60.0)
    for minute in range(600):
        baseline.update(minute * MINUTE_MS, 5.0, 10.0)
    for minute in range(600, 720):
        baseline.update(minute * MINUTE_MS, 8.0, 10.0)
    # constant weight: after one half-life half the step is in, after two three quarters
    absorbed = (baseline.expected(720 * MINUTE_MS) - 5.0) / 3.0
    assert absorbed == pytest.approx(0.75, abs=0.02)


def test_first_visit_of_a_slot_contributes_nothing() -> None:
    baseline = SeasonalBaseline()
    for minute in range(150):  # hours 0, 1 and half of hour 2, on day 0 only
        baseline.update(minute * MINUTE_MS, 100.0 + (50.0 if 60 <= minute < 120 else 0.0), 5.0)
    assert baseline.offset(135 * MINUTE_MS) == 0.0  # hour 2 is still being visited
    # hours 0 and 1 were folded when the next hour began, and re-centred around 0
    assert baseline.offset(30 * MINUTE_MS) < -5.0
    assert baseline.offset(90 * MINUTE_MS) > 5.0


def test_expected_is_nan_before_any_update_and_weights_ignored_when_not_positive() -> None:
    baseline = SeasonalBaseline()
    assert math.isnan(baseline.expected(0))
    baseline.update(0, 3.0, 0.0)
    baseline.update(0, 3.0, -2.0)
    assert math.isnan(baseline.expected(0))
    assert baseline.level_weight == 0.0


def test_repeated_minutes_are_pooled_like_one_weighted_observation() -> None:
    a, b = SeasonalBaseline(), SeasonalBaseline()
    a.update(0, 1.0, 1.0)
    b.update(0, 1.0, 1.0)
    a.update(MINUTE_MS, 2.0, 1.0)
    a.update(MINUTE_MS, 4.0, 3.0)
    b.update(MINUTE_MS, 3.5, 4.0)
    assert a.expected(MINUTE_MS) == pytest.approx(b.expected(MINUTE_MS))
    assert a.level_weight == pytest.approx(b.level_weight)


def test_level_weight_forgets_by_event_time() -> None:
    baseline = SeasonalBaseline(level_half_life_minutes=30.0)
    baseline.update(0, 1.0, 8.0)
    baseline.update(30 * MINUTE_MS, 1.0, 8.0)
    assert baseline.level_weight == pytest.approx(12.0)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"level_half_life_minutes": 0.0}, id="level-hl"),
        pytest.param({"season_half_life_days": -1.0}, id="season-hl"),
        pytest.param({"slot_minutes": 0}, id="slot-minutes"),
        pytest.param({"slots": 0}, id="slots"),
        pytest.param({"season_prior_weight": -1.0}, id="prior"),
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SeasonalBaseline(**params)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf")]
)
def test_non_finite_values_are_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        SeasonalBaseline().update(0, value, 1.0)
    with pytest.raises(ValueError, match="must be"):
        EwStats().update(0, value, 1.0)


def test_state_round_trips_through_json_and_continues_identically() -> None:
    values = _series(np.random.default_rng(3), 2 * DAY)
    baseline = SeasonalBaseline(slot_minutes=30, slots=48)
    for minute, value in enumerate(values[: DAY + 45]):
        baseline.update(minute * MINUTE_MS, float(value), 3.0)
    again = SeasonalBaseline.from_state(json.loads(json.dumps(baseline.to_state())))
    assert again == baseline
    for minute in range(DAY + 45, 2 * DAY):
        for model in (baseline, again):
            model.update(minute * MINUTE_MS, float(values[minute]), 3.0)
    assert again == baseline
    assert again.expected(2 * DAY * MINUTE_MS) == baseline.expected(2 * DAY * MINUTE_MS)


def test_empty_state_is_nan_free_json() -> None:
    text = json.dumps(SeasonalBaseline().to_state(), allow_nan=False)
    assert SeasonalBaseline.from_state(json.loads(text)) == SeasonalBaseline()
    text = json.dumps(EwStats().to_state(), allow_nan=False)
    assert EwStats.from_state(json.loads(text)) == EwStats()


def test_ew_stats_matches_weighted_moments_with_decayed_weights() -> None:
    rng = np.random.default_rng(4)
    minutes = np.sort(rng.integers(0, 600, size=300))
    values, weights = rng.normal(2.0, 1.5, size=300), rng.integers(1, 30, size=300)
    stats = EwStats(half_life_minutes=120.0)
    for minute, value, weight in zip(minutes, values, weights, strict=True):
        stats.update(int(minute) * MINUTE_MS, float(value), float(weight))
    decayed = weights * 0.5 ** ((minutes[-1] - minutes) / 120.0)
    mean = np.average(values, weights=decayed)
    assert stats.mean == pytest.approx(mean)
    assert stats.variance == pytest.approx(np.average((values - mean) ** 2, weights=decayed))
    assert stats.weight == pytest.approx(decayed.sum())


def test_ew_stats_round_trip() -> None:
    stats = EwStats(half_life_minutes=10.0)
    stats.update(0, 1.0, 2.0)
    stats.update(5 * MINUTE_MS, 3.0, 1.0)
    again = EwStats.from_state(json.loads(json.dumps(stats.to_state())))
    assert again == stats
    assert again.variance == stats.variance
