"""detectors.pricing: when a figure is zero, and how an immature window is scaled."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from detectors.conversion import ConversionVerdict
from detectors.elasticity import BIN_CENTERS_S, lcp_bin
from detectors.pricing import HOUR_MS, price_conversion_loss, price_slow_pages, supported_onset
from detectors.revenue import conversion_loss
from detectors.strata import CURVE_SIZE, StrataFit, curve_key
from detectors.verdicts import Estimate

# one device stratum (desktop) with conversions, the others empty
FIT = StrataFit(-0.2, 1e-4, (-math.inf, math.log(0.06), -math.inf, -math.inf),
                (0.0, 2_500.0, 0.0, 0.0), (0.0, 2.5, 0.0, 0.0), 50_000.0, 2_500.0)
T0 = 1_741_003_200_000


def mix(lcp_ms: float, sessions: float) -> np.ndarray:
    vector = np.zeros(CURVE_SIZE)
    vector[curve_key(lcp_bin(lcp_ms), 1)] = sessions
    return vector


def mix_rate(vector: np.ndarray) -> float:
    """The desktop stratum's conversion rate at a mix, straight from the model."""
    desktop = vector[curve_key(0, 1):curve_key(0, 2)]
    rates = np.exp(math.log(0.06) - 0.2 * BIN_CENTERS_S)
    return float(desktop @ rates / desktop.sum())


BASE = mix(2_000.0, 10_000.0)
SLOW = mix(4_000.0, 300.0)


def test_slow_pages_are_zero_without_a_fit_traffic_baseline_or_minutes() -> None:
    kw = {"aov": 80.0, "aov_se": 2.0}
    assert price_slow_pages(None, BASE, SLOW, minutes=10, **kw) == Estimate.zero()
    assert price_slow_pages(FIT, BASE, np.zeros(CURVE_SIZE), minutes=10, **kw) == Estimate.zero()
    assert price_slow_pages(FIT, np.zeros(CURVE_SIZE), SLOW, minutes=10, **kw) == Estimate.zero()
    assert price_slow_pages(FIT, BASE, SLOW, minutes=0, **kw) == Estimate.zero()


def test_slow_pages_value_is_rate_difference_times_traffic_times_aov() -> None:
    loss = price_slow_pages(FIT, BASE, SLOW, minutes=10, aov=80.0, aov_se=2.0)
    sessions_per_hour = 300.0 * 60 / 10
    expected = sessions_per_hour * (mix_rate(BASE) - mix_rate(SLOW)) * 80.0
    assert loss.value == pytest.approx(expected, rel=1e-9)
    assert loss.low < loss.value < loss.high


def test_slow_pages_scale_with_traffic_per_minute() -> None:
    ten = price_slow_pages(FIT, BASE, SLOW, minutes=10, aov=80.0, aov_se=0.0)
    five = price_slow_pages(FIT, BASE, SLOW, minutes=5, aov=80.0, aov_se=0.0)
    assert five.value == pytest.approx(2 * ten.value)


def test_same_mix_as_baseline_costs_nothing() -> None:
    same = price_slow_pages(FIT, BASE, mix(2_000.0, 300.0), minutes=10, aov=80.0, aov_se=2.0)
    assert same.value == pytest.approx(0.0, abs=1e-9)
    faster = price_slow_pages(FIT, BASE, mix(900.0, 300.0), minutes=10, aov=80.0, aov_se=2.0)
    assert faster.value == 0.0  # figures are non-negative
    assert faster.low <= faster.value <= faster.high


def verdict(observed: float, expected: float, start: int | None) -> ConversionVerdict:
    return ConversionVerdict(1e-6, observed, expected, observed / expected, start, -4.0)


BASELINE: dict[str, Any] = {"baseline_conversions": 600.0, "baseline_sessions": 20_000.0}  # 3%


def test_conversion_loss_is_zero_without_window_shortfall_or_baseline() -> None:
    kw: dict[str, Any] = {"tick_ms": T0, "window_sessions": 2_000, "aov": 80.0, "aov_se": 2.0}
    assert price_conversion_loss(verdict(30, 60, None), **kw, **BASELINE) == Estimate.zero()
    assert price_conversion_loss(verdict(60, 60, T0 - HOUR_MS), **kw,
                                 **BASELINE) == Estimate.zero()
    assert price_conversion_loss(verdict(70, 60, T0 - HOUR_MS), **kw,
                                 **BASELINE) == Estimate.zero()
    assert price_conversion_loss(verdict(30, 60, T0 - HOUR_MS), **kw, baseline_conversions=0.0,
                                 baseline_sessions=0.0) == Estimate.zero()


def test_a_mature_window_is_priced_as_is() -> None:
    # 2000 sessions at 3% = 60 expected, all orders in: scale 1
    loss = price_conversion_loss(verdict(30, 60, T0 - HOUR_MS), tick_ms=T0, window_sessions=2_000,
                                 aov=80.0, aov_se=2.0, **BASELINE)
    assert loss.value == pytest.approx((60 - 30) / 1.0 * 80.0)
    assert loss.low <= loss.value <= loss.high
    direct = conversion_loss(observed=30, expected=60, exposure_sessions=2_000, window_hours=1.0,
                             average_order_value=80.0, aov_se=2.0, **BASELINE)
    assert loss == direct


def test_an_immature_window_is_scaled_to_its_eventual_shortfall() -> None:
    # only half the window's orders can have arrived: expected 30 of an eventual 60
    half = price_conversion_loss(verdict(15, 30, T0 - HOUR_MS), tick_ms=T0, window_sessions=2_000,
                                 aov=80.0, aov_se=2.0, **BASELINE)
    assert half.value == pytest.approx((30 - 15) * 2 * 80.0)
    seen = conversion_loss(observed=15, expected=30, exposure_sessions=1_000, window_hours=1.0,
                           average_order_value=80.0, aov_se=2.0, **BASELINE)
    assert half == seen.scaled(2.0)
    assert half.low <= half.value <= half.high


def test_a_very_short_window_counts_at_least_a_minute() -> None:
    loss = price_conversion_loss(verdict(0, 2, T0), tick_ms=T0, window_sessions=67,
                                 aov=50.0, aov_se=0.0, **BASELINE)
    hours = 1.0 / 60.0
    assert math.isfinite(loss.value)
    assert loss.value == pytest.approx(2 / hours * 50.0 * (67 / (2 / 0.03)))
    per_hour = price_conversion_loss(verdict(0, 2, T0 - HOUR_MS // 2), tick_ms=T0,
                                     window_sessions=67, aov=50.0, aov_se=0.0, **BASELINE)
    assert per_hour.value == pytest.approx(loss.value / 30)


# ---------------------------------------------------------------- where a drop began


def test_the_onset_of_a_stop_is_its_first_minute_without_orders() -> None:
    expected = np.full(60, 2.0)
    observed = np.r_[np.full(40, 2.0), np.zeros(20)]
    assert supported_onset(expected, observed, 50) == 40


def test_the_onset_can_be_no_later_than_allowed_and_is_0_without_a_shortfall() -> None:
    expected = np.full(60, 2.0)
    observed = np.r_[np.full(55, 2.0), np.zeros(5)]
    assert supported_onset(expected, observed, 50) <= 50  # never later than allowed
    assert supported_onset(expected, np.full(60, 3.0), 50) == 0
    assert supported_onset(np.zeros(60), np.zeros(60), 50) == 0


@pytest.mark.parametrize("seed", range(5))
def test_the_onset_is_the_earliest_start_the_likelihood_supports(seed: int) -> None:
    """Against a brute force: for every start, the Poisson log-likelihood of the counts with
    the rate free after it (at its MLE, capped at normal; scipy) and normal before; the
    earliest start within chi2(1) 95% / 2 = 1.92 of the best wins."""
    rng = np.random.default_rng(seed)
    expected = rng.uniform(0.5, 3.0, 90) * np.r_[np.ones(70), np.linspace(1.0, 0.1, 20)]
    observed = rng.poisson(expected * np.r_[np.ones(55), np.full(35, 0.4)]).astype(float)

    def loglik(start: int) -> float:
        tail = observed[start:].sum() / expected[start:].sum()
        rate = np.r_[np.ones(start), np.full(90 - start, min(tail, 1.0))]
        return float(stats.poisson.logpmf(observed, expected * rate).sum())

    support = [loglik(start) for start in range(81)]
    cut = max(support) - stats.chi2.ppf(0.95, 1) / 2
    onset = supported_onset(expected, observed, 80)
    assert onset == next(start for start, value in enumerate(support) if value >= cut - 1e-6)
    assert onset <= max(range(81), key=lambda start: support[start])  # not after the MLE
