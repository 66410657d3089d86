"""LagModel: learns a delay distribution, prior without data, shape of F, forgetting, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from detectors.lag import LagModel


def _truncated_lognorm_cdf(
    ages: np.ndarray, median: float, sigma: float, horizon: int
) -> np.ndarray:
    dist = stats.lognorm(s=sigma, scale=median)
    result: np.ndarray = np.clip(dist.cdf(ages) / dist.cdf(horizon), 0.0, 1.0)
    return result


def test_learns_a_lognormal_within_two_percent() -> None:
    rng = np.random.default_rng(0)
    model = LagModel()
    for lag in rng.lognormal(math.log(6.0), 0.9, size=5000):
        model.update(float(lag))
    ages = np.linspace(0.0, 130.0, 1041)
    truth = _truncated_lognorm_cdf(ages, 6.0, 0.9, 120)
    assert np.max(np.abs(model.cdf_array(ages) - truth)) < 0.02


def test_prior_is_used_without_data() -> None:
    model = LagModel(prior_median_minutes=8.0, prior_sigma=1.0, horizon_minutes=120)
    ages = np.arange(0.0, 121.0)
    truth = _truncated_lognorm_cdf(ages, 8.0, 1.0, 120)
    np.testing.assert_allclose(model.cdf_array(ages), truth, atol=1e-12)
    assert model.cdf(8.0) == pytest.approx(0.5, abs=0.01)


def test_cdf_is_zero_below_zero_one_from_horizon_and_non_decreasing() -> None:
    model = LagModel(horizon_minutes=30)
    for lag in (0.2, 3.7, 3.9, 12.0, 29.9):
        model.update(lag)
    ages = np.linspace(-5.0, 40.0, 451)
    values = model.cdf_array(ages)
    assert np.all(np.diff(values) >= 0)
    assert model.cdf(-1.0) == 0.0
    assert model.cdf(0.0) == 0.0
    assert model.cdf(30.0) == 1.0
    assert model.cdf(1000.0) == 1.0


def test_linear_inside_a_minute() -> None:
    model = LagModel(horizon_minutes=10, prior_weight=1e-9)
    for _ in range(100):
        model.update(4.5)
    assert model.cdf(4.0) == pytest.approx(0.0, abs=1e-6)
    assert model.cdf(4.25) == pytest.approx(0.25, abs=1e-6)
    assert model.cdf(5.0) == pytest.approx(1.0, abs=1e-6)


def test_lags_beyond_horizon_are_counted_and_ignored() -> None:
    model = LagModel(horizon_minutes=60)
    before = model.cdf_array(np.arange(61.0))
    model.update(60.0)
    model.update(500.0)
    assert model.beyond_horizon == 2
    np.testing.assert_array_equal(model.cdf_array(np.arange(61.0)), before)


def test_negative_lag_counts_as_zero() -> None:
    a, b = LagModel(), LagModel()
    a.update(-3.0)
    b.update(0.0)
    assert a == b


def test_forgetting_follows_a_changed_checkout() -> None:
    model = LagModel(half_life_orders=500.0)
    rng = np.random.default_rng(1)
    for lag in rng.lognormal(math.log(3.0), 0.5, size=3000):
        model.update(float(lag))
    for lag in rng.lognormal(math.log(20.0), 0.5, size=3000):
        model.update(float(lag))
    assert model.cdf(20.0) == pytest.approx(0.5, abs=0.05)
    assert model.weight == pytest.approx(500.0 / math.log(2.0), rel=0.01)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"horizon_minutes": 0}, id="horizon"),
        pytest.param({"prior_median_minutes": 0.0}, id="median"),
        pytest.param({"prior_sigma": -1.0}, id="sigma"),
        pytest.param({"prior_weight": 0.0}, id="prior-weight"),
        pytest.param({"half_life_orders": math.inf}, id="half-life"),
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LagModel(**params)  # type: ignore[arg-type]


def test_non_finite_lag_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be"):
        LagModel().update(math.nan)


def test_state_round_trips_through_json() -> None:
    model = LagModel(horizon_minutes=45)
    for lag in np.random.default_rng(2).lognormal(2.0, 1.0, size=300):
        model.update(float(lag))
    again = LagModel.from_state(json.loads(json.dumps(model.to_state(), allow_nan=False)))
    assert again == model
    ages = np.linspace(0.0, 50.0, 11)
    np.testing.assert_array_equal(again.cdf_array(ages), model.cdf_array(ages))
    again.update(3.0)
    model.update(3.0)
    assert again == model
