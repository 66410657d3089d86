"""Revenue at risk: hand-computed answers, each variance term, and properties (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import norm

from detectors.elasticity import BIN_CENTERS_S, N_BINS, CurveFit
from detectors.revenue import Z90, average_order_value, conversion_loss, slow_page_loss
from detectors.verdicts import Estimate

FAST, SLOW = 0, 8  # bins centred on 0.125 s and 2.125 s
NO_COV = ((0.0, 0.0), (0.0, 0.0))


def _fit(cov: tuple[tuple[float, float], tuple[float, float]] = NO_COV,
         intercept: float = math.log(0.05), slope: float = -0.2) -> CurveFit:
    return CurveFit(intercept, slope, cov, 1e5, 5e3)


def _mix(**counts: float) -> np.ndarray:
    mix = np.zeros(N_BINS)
    for key, count in counts.items():
        mix[int(key.removeprefix("b"))] = count
    return mix


R_FAST = 0.05 * math.exp(-0.2 * 0.125)
R_SLOW = 0.05 * math.exp(-0.2 * 2.125)
DIFF = R_FAST - R_SLOW  # 0.0160770...


def _loss(fit: CurveFit | None = None, baseline: np.ndarray | None = None,
          current: np.ndarray | None = None, options: dict[str, float] | None = None,
          **kwargs: float) -> Estimate:
    args = {"sessions_per_hour": 1000.0, "sessions_observed": math.inf,
            "average_order_value": 50.0, "aov_se": 0.0} | (options or {}) | kwargs
    return slow_page_loss(fit or _fit(), _mix(b0=1.0) if baseline is None else baseline,
                          _mix(b8=1.0) if current is None else current, **args)


def _half_width(e: Estimate) -> float:
    return (e.high - e.low) / (2 * Z90)


def test_z90_is_the_95th_normal_percentile() -> None:
    assert math.isclose(Z90, 1.6448536269514722, rel_tol=1e-12)
    assert norm.cdf(Z90) - norm.cdf(-Z90) == pytest.approx(0.90)


def test_point_value_is_sessions_times_rate_difference_times_aov() -> None:
    loss = _loss(baseline=_mix(b0=7.0), current=_mix(b8=3.0))  # mixes are any scale
    assert loss.value == pytest.approx(1000 * DIFF * 50, rel=1e-12)
    assert loss.low == loss.value == loss.high


@pytest.mark.parametrize(
    ("cov", "kwargs", "sd"),
    [
        pytest.param(((0.0, 0.0), (0.0, 0.01)), {},
                     1000 * 50 * (0.125 * R_FAST - 2.125 * R_SLOW) * 0.1, id="slope-variance"),
        pytest.param(((0.04, 0.0), (0.0, 0.0)), {},
                     1000 * 50 * DIFF * 0.2, id="intercept-variance-is-relative"),
        pytest.param(NO_COV, {"sessions_observed": 400.0}, 1000 * 50 * DIFF / 20,
                     id="sessions-noise"),
        pytest.param(NO_COV, {"aov_se": 5.0}, 1000 * 50 * DIFF * 0.1, id="aov-noise"),
    ],
)
def test_each_variance_term(cov: tuple[tuple[float, float], tuple[float, float]],
                            kwargs: dict[str, float], sd: float) -> None:
    loss = _loss(_fit(cov), options=kwargs)
    assert loss.value == pytest.approx(1000 * DIFF * 50, rel=1e-12)
    assert _half_width(loss) == pytest.approx(abs(sd), rel=1e-9)


def test_mix_noise_is_multinomial_and_combines_as_a_product() -> None:
    loss = _loss(baseline=_mix(b0=3.0, b8=1.0), current=_mix(b0=1.0, b8=1.0),
                 sessions_observed=100.0, baseline_sessions=400.0)
    diff = (0.75 * R_FAST + 0.25 * R_SLOW) - (R_FAST + R_SLOW) / 2
    # a two-point mix with shares (q, 1-q) over n sessions: q (1-q) (r0 - r8)^2 / n
    var_mix = (R_FAST - R_SLOW) ** 2 * (0.25 / 100 + 0.1875 / 400)
    s2, d2 = 1000.0**2, diff**2
    var = (s2 * (1 + 1 / 100)) * (d2 + var_mix) * 50**2 - s2 * d2 * 50**2
    assert loss.value == pytest.approx(1000 * diff * 50, rel=1e-12)
    assert _half_width(loss) == pytest.approx(math.sqrt(var), rel=1e-9)


def test_capped_rates_carry_no_parameter_uncertainty() -> None:
    fit = _fit(((1.0, 0.0), (0.0, 1.0)), intercept=1.0, slope=-0.1)  # p = 1 up to 10 s
    loss = _loss(fit, baseline=_mix(b0=1.0), current=_mix(b8=1.0))
    assert loss == Estimate(0.0, 0.0, 0.0)
    half = _fit(((1e-4, 0.0), (0.0, 0.0)), intercept=0.1, slope=-0.1)  # capped in bin 0 only
    r8 = math.exp(0.1 - 0.1 * 2.125)
    loss = _loss(half, baseline=_mix(b0=1.0), current=_mix(b8=1.0))
    assert loss.value == pytest.approx(1000 * 50 * (1 - r8), rel=1e-12)
    assert _half_width(loss) == pytest.approx(1000 * 50 * r8 * 0.01, rel=1e-9)


def test_faster_pages_are_no_loss_but_keep_an_upper_bound() -> None:
    loss = _loss(_fit(((0.0, 0.0), (0.0, 0.04))), baseline=_mix(b8=1.0), current=_mix(b0=1.0))
    assert loss.value == 0.0
    assert loss.low == 0.0
    assert loss.high > 0.0


@pytest.mark.parametrize(
    ("baseline", "current", "kwargs"),
    [
        pytest.param(None, np.zeros(N_BINS), {}, id="no-current-sessions"),
        pytest.param(np.zeros(N_BINS), None, {}, id="no-baseline"),
        pytest.param(None, None, {"sessions_per_hour": 0.0}, id="no-traffic"),
        pytest.param(None, None, {"sessions_observed": 0.0}, id="nothing-observed"),
    ],
)
def test_nothing_to_price_is_zero(baseline: np.ndarray | None, current: np.ndarray | None,
                                  kwargs: dict[str, float]) -> None:
    assert _loss(baseline=baseline, current=current, options=kwargs) == Estimate.zero()


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"average_order_value": -1.0}, id="negative-aov"),
        pytest.param({"sessions_per_hour": math.nan}, id="nan-sessions"),
        pytest.param({"aov_se": math.inf}, id="infinite-aov-se"),
        pytest.param({"sessions_observed": -1.0}, id="negative-observed"),
    ],
)
def test_slow_page_loss_rejects_bad_numbers(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        _loss(options=kwargs)


def test_slow_page_loss_rejects_a_mix_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="mix"):
        _loss(current=np.ones(3))


def _conversion_loss(**kwargs: float) -> Estimate:
    args = {"observed": 80.0, "expected": 120.0, "baseline_conversions": 360.0,
            "baseline_sessions": 12_000.0, "exposure_sessions": 4_000.0, "window_hours": 1.0,
            "average_order_value": 85.0, "aov_se": 2.0} | kwargs
    return conversion_loss(**args)


def test_conversion_loss_worked_example() -> None:
    # PEERS.md 2.3: 4,000 sessions, 80 orders, baseline 360/12,000, AOV 85 +- 2 -> $3,400/h.
    loss = _conversion_loss()
    var_missing = 80 + 120**2 * 0.97 / 360 + 40**2 / 4_000
    sd = math.sqrt((40**2 + var_missing) * (85**2 + 4) - 40**2 * 85**2)
    assert loss.value == pytest.approx(3_400.0)
    assert loss.low == pytest.approx(3_400 - Z90 * sd, rel=1e-12)
    assert loss.high == pytest.approx(3_400 + Z90 * sd, rel=1e-12)
    assert 1_700 < loss.low < loss.high < 5_200  # inside the report's Monte Carlo interval


def test_conversion_loss_is_per_hour() -> None:
    hour = _conversion_loss()
    two_hours = _conversion_loss(window_hours=2.0)
    assert two_hours.value == pytest.approx(hour.value / 2)
    assert two_hours.high == pytest.approx(hour.high / 2)


def test_no_orders_at_all_still_has_a_finite_interval() -> None:
    loss = _conversion_loss(observed=0.0, expected=30.0)
    assert loss.value == pytest.approx(30 * 85)
    assert 0.0 < loss.low < loss.value < loss.high < math.inf


def test_zero_orders_count_as_one_for_the_poisson_variance() -> None:
    loss = _conversion_loss(observed=0.0, expected=30.0, baseline_conversions=1e15,
                            baseline_sessions=1e16, exposure_sessions=1e15, aov_se=0.0)
    assert _half_width(loss) == pytest.approx(85.0, rel=1e-6)


def test_more_orders_than_expected_is_no_loss() -> None:
    loss = _conversion_loss(observed=130.0)
    assert loss.value == 0.0
    assert loss.low == 0.0
    assert loss.high > 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"window_hours": 0.0}, "window", id="empty-window"),
        pytest.param({"observed": -1.0}, "non-negative", id="negative-observed"),
        pytest.param({"expected": math.nan}, "non-negative", id="nan-expected"),
    ],
)
def test_conversion_loss_rejects_bad_numbers(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _conversion_loss(**kwargs)


@pytest.mark.parametrize(
    ("values", "expected_aov", "expected_se"),
    [
        pytest.param([], 50.0, 50 / math.sqrt(3), id="no-orders-is-the-prior"),
        pytest.param([40.0, 80.0], 54.0, math.sqrt((800 + 7_500) / 4 / 5), id="two-orders"),
    ],
)
def test_average_order_value_known_answers(values: list[float], expected_aov: float,
                                           expected_se: float) -> None:
    v = np.array(values)
    aov, se = average_order_value(float(v.sum()), float((v**2).sum()), float(v.size))
    assert aov == pytest.approx(expected_aov, rel=1e-12)
    assert se == pytest.approx(expected_se, rel=1e-12)


def test_average_order_value_approaches_the_sample_mean() -> None:
    v = np.random.default_rng(4).gamma(2.0, 40.0, 20_000)
    aov, se = average_order_value(float(v.sum()), float((v**2).sum()), float(v.size))
    assert aov == pytest.approx(v.mean(), rel=2e-3)
    assert se == pytest.approx(v.std(ddof=1) / math.sqrt(v.size), rel=1e-2)


def test_average_order_value_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        average_order_value(10.0, 100.0, -1.0)
    with pytest.raises(ValueError, match="prior"):
        average_order_value(10.0, 100.0, 1.0, prior_orders=0.0)


# ---- properties -----------------------------------------------------------------------

counts = arrays(np.float64, N_BINS, elements=st.floats(0.0, 1e4))
positive = st.floats(1e-3, 1e6)


@st.composite
def fits(draw: st.DrawFn) -> CurveFit:
    sd_a, sd_b = draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 0.5))
    rho = draw(st.floats(-0.99, 0.99))
    cov = ((sd_a**2, rho * sd_a * sd_b), (rho * sd_a * sd_b, sd_b**2))
    return CurveFit(draw(st.floats(-8.0, 0.5)), draw(st.floats(-2.0, 0.0)), cov, 1.0, 1.0)


def _ordered(e: Estimate) -> bool:
    return all(math.isfinite(v) for v in (e.low, e.value, e.high)) and \
        0.0 <= e.low <= e.value <= e.high


def _not_less(later: Estimate, earlier: Estimate, *, bounds: bool = True) -> bool:
    def ge(a: float, b: float) -> bool:
        return a >= b - 1e-9 * max(abs(b), 1.0)
    if not ge(later.value, earlier.value):
        return False
    return not bounds or (ge(later.low, earlier.low) and ge(later.high, earlier.high))


@given(fit=fits(), base=counts, current=counts, sessions=positive, observed=positive,
       aov=positive, aov_se=st.floats(0.0, 100.0))
def test_slow_page_loss_is_non_negative_and_ordered(
    *, fit: CurveFit, base: np.ndarray, current: np.ndarray, sessions: float, observed: float,
    aov: float, aov_se: float,
) -> None:
    loss = slow_page_loss(fit, base, current, sessions_per_hour=sessions,
                          sessions_observed=observed, average_order_value=aov, aov_se=aov_se)
    assert _ordered(loss)


@given(fit=fits(), base=counts, current=counts, sessions=positive, observed=positive,
       aov=positive, factor=st.floats(1.0, 10.0))
def test_slow_page_loss_is_monotone_in_traffic_and_aov(
    *, fit: CurveFit, base: np.ndarray, current: np.ndarray, sessions: float, observed: float,
    aov: float, factor: float,
) -> None:
    def loss(s: float, a: float) -> Estimate:
        return slow_page_loss(fit, base, current, sessions_per_hour=s, sessions_observed=observed,
                              average_order_value=a, aov_se=3.0)
    # with a gain (current mix faster) only the point value (0) is monotone: a larger AOV
    # makes the gain surer, so the upper bound of the clipped interval may shrink
    bounds = fit.mix_rate(base) >= fit.mix_rate(current)
    assert _not_less(loss(sessions * factor, aov), loss(sessions, aov), bounds=bounds)
    assert _not_less(loss(sessions, aov * factor), loss(sessions, aov), bounds=bounds)


@given(fit=fits(), base=counts, current=counts, source=st.integers(0, N_BINS - 2),
       shift=st.integers(1, N_BINS - 1), share=st.floats(0.0, 1.0))
def test_a_slower_current_mix_never_lowers_the_loss(
    *, fit: CurveFit, base: np.ndarray, current: np.ndarray, source: int, shift: int, share: float,
) -> None:
    target = min(source + shift, N_BINS - 1)
    slower = current.copy()
    moved = slower[source] * share
    slower[source] -= moved
    slower[target] += moved

    def loss(mix: np.ndarray) -> float:
        return slow_page_loss(fit, base, mix, sessions_per_hour=1e3, sessions_observed=1e3,
                              average_order_value=60.0, aov_se=2.0).value
    assert loss(slower) >= loss(current) - 1e-9 * max(loss(current), 1.0)


@given(observed=st.floats(0.0, 1e4), expected=st.floats(0.0, 1e4),
       base_conv=st.floats(0.0, 1e5), base_sessions=st.floats(1.0, 1e7),
       exposure=st.floats(0.0, 1e6), hours=st.floats(1e-3, 100.0), aov=positive,
       aov_se=st.floats(0.0, 100.0))
def test_conversion_loss_is_non_negative_and_ordered(
    *, observed: float, expected: float, base_conv: float, base_sessions: float, exposure: float,
    hours: float, aov: float, aov_se: float,
) -> None:
    loss = conversion_loss(observed=observed, expected=expected, baseline_conversions=base_conv,
                           baseline_sessions=base_sessions, exposure_sessions=exposure,
                           window_hours=hours, average_order_value=aov, aov_se=aov_se)
    assert _ordered(loss)


@given(st.floats(0.0, 1e3), st.floats(0.0, 1e3), st.floats(1.0, 1e4), positive)
def test_fewer_orders_never_lower_the_conversion_loss(
    fewer: float, extra: float, expected: float, aov: float,
) -> None:
    def loss(observed: float) -> float:
        return conversion_loss(observed=observed, expected=expected, baseline_conversions=500.0,
                               baseline_sessions=2e4, exposure_sessions=5e3, window_hours=1.0,
                               average_order_value=aov, aov_se=1.0).value
    assert loss(fewer) >= loss(fewer + extra)


def test_bin_centres_used_by_the_hand_answers() -> None:
    assert (BIN_CENTERS_S[FAST], BIN_CENTERS_S[SLOW]) == (0.125, 2.125)
