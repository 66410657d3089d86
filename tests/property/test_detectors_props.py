"""Properties of the sketch, baseline, latency, lag and conversion detectors.

Windows equal a naive recomputation; state round-trips through JSON (NaN-free) and the
rebuilt object behaves identically; score never mutates; F is a CDF; p-values are
probabilities and monotone in the evidence.
"""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.baseline import MINUTE_MS, EwStats, SeasonalBaseline
from detectors.conversion import conversion_scan
from detectors.lag import LagModel
from detectors.latency import LatencyCusum
from detectors.sketch import LogHistogram, merged

values = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
minute_batches = st.lists(st.lists(values, max_size=20), min_size=1, max_size=12)


def _json(state: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(state, allow_nan=False))  # type: ignore[no-any-return]


def _hist(batch: list[float]) -> LogHistogram:
    hist = LogHistogram()
    for value in batch:
        hist.add(value)
    return hist


@given(minute_batches, st.data())
def test_sliding_window_equals_naive_recomputation(
    batches: list[list[float]], data: st.DataObject
) -> None:
    width = data.draw(st.integers(min_value=1, max_value=len(batches)))
    minutes = [_hist(batch) for batch in batches]
    window = LogHistogram()
    for i, hist in enumerate(minutes):
        window.merge(hist)
        if i >= width:
            window.subtract(minutes[i - width])
        naive = _hist([v for batch in batches[max(0, i - width + 1) : i + 1] for v in batch])
        assert window == naive
        assert window.count == naive.count


@given(minute_batches)
def test_histogram_state_round_trips(batches: list[list[float]]) -> None:
    hist = merged(_hist(batch) for batch in batches)
    again = LogHistogram.from_state(_json(hist.to_state()))
    assert again == hist
    for q in (0.0, 0.5, 0.75, 1.0):
        assert math.isnan(hist.quantile(q)) or again.quantile(q) == hist.quantile(q)


@given(st.lists(st.floats(min_value=1.0, max_value=1e7), min_size=1, max_size=200), st.floats(0, 1))
def test_quantile_relative_error_bound(sample: list[float], q: float) -> None:
    hist = _hist(sample)
    exact = sorted(sample)[math.floor(q * (len(sample) - 1))]
    assert abs(hist.quantile(q) - exact) <= 0.02 * exact * (1 + 1e-9)


observations = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=5),  # minutes since the previous observation
        st.floats(min_value=-1e3, max_value=1e3),
        st.floats(min_value=-1.0, max_value=100.0),
    ),
    max_size=60,
)


@given(observations, st.integers(min_value=1, max_value=3))
@settings(max_examples=60)
def test_baseline_state_round_trips_and_continues_identically(
    obs: list[tuple[int, float, float]], slot_minutes: int
) -> None:
    baseline = SeasonalBaseline(slot_minutes=slot_minutes, slots=4, level_half_life_minutes=10.0)
    stats = EwStats(half_life_minutes=10.0)
    minute = 0
    for step, value, weight in obs:
        minute += step
        baseline.update(minute * MINUTE_MS, value, weight)
        stats.update(minute * MINUTE_MS, value, weight)
        again = SeasonalBaseline.from_state(_json(baseline.to_state()))
        assert again == baseline
        assert EwStats.from_state(_json(stats.to_state())) == stats
    later = (minute + 1) * MINUTE_MS
    again = SeasonalBaseline.from_state(_json(baseline.to_state()))
    assert again.expected(later) == baseline.expected(later) or math.isnan(baseline.expected(later))


@given(observations)
@settings(max_examples=60)
def test_baseline_stays_within_the_range_of_its_inputs(obs: list[tuple[int, float, float]]) -> None:
    baseline = SeasonalBaseline(slot_minutes=1, slots=3)
    minute, seen = 0, []
    for step, value, weight in obs:
        minute += step
        baseline.update(minute * MINUTE_MS, value, weight)
        if weight > 0:
            seen.append(value)
    if seen:
        spread = max(seen) - min(seen)
        # level and offsets are weighted means of inputs and of residuals within the spread
        assert min(seen) - 2 * spread - 1e-6 <= baseline.expected(minute * MINUTE_MS)
        assert baseline.expected(minute * MINUTE_MS) <= max(seen) + 2 * spread + 1e-6


minutes_st = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400),
        st.floats(min_value=5.0, max_value=9.0),
        st.floats(min_value=0.05, max_value=2.0),
    ),
    max_size=40,
)


@given(minutes_st)
def test_cusum_score_never_mutates_and_update_agrees(mins: list[tuple[int, float, float]]) -> None:
    cusum = LatencyCusum()
    for minute, (n, mean_log, sd) in enumerate(mins):
        before = cusum.to_state()
        verdict = cusum.score(minute * MINUTE_MS, n, mean_log, 7.0, sd)
        assert cusum.to_state() == before
        cusum.update(minute * MINUTE_MS, n, mean_log, 7.0, sd)
        assert cusum.statistic == verdict.statistic >= 0.0
        assert (verdict.started_ms is None) == (verdict.statistic == 0.0)
        assert verdict.started_ms is None or verdict.started_ms <= minute * MINUTE_MS
        assert LatencyCusum.from_state(_json(cusum.to_state())) == cusum


@given(st.lists(st.floats(min_value=-10.0, max_value=300.0), max_size=80))
def test_lag_cdf_is_a_cdf_and_round_trips(lags: list[float]) -> None:
    model = LagModel(horizon_minutes=90)
    for lag in lags:
        model.update(lag)
    ages = np.linspace(-1.0, 100.0, 203)
    cdf = model.cdf_array(ages)
    assert np.all(np.diff(cdf) >= -1e-15)
    assert cdf[0] == 0.0
    assert cdf[-1] == 1.0
    assert np.all((cdf >= 0.0) & (cdf <= 1.0))
    assert LagModel.from_state(_json(model.to_state())) == model
    assert model.beyond_horizon == sum(lag >= 90 for lag in lags)


scan_inputs = st.integers(min_value=1, max_value=150).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 200), min_size=n, max_size=n),
        st.lists(st.integers(0, 10), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n),
        st.integers(min_value=1, max_value=5000),
        st.integers(min_value=100, max_value=200_000),
    )
)


@given(scan_inputs)
@settings(max_examples=80)
def test_scan_p_value_is_a_probability_and_monotone_in_conversions(
    inputs: tuple[list[int], list[int], list[float], int, int],
) -> None:
    sessions, conversions, completeness, base_conv, base_sess = inputs
    minutes = np.arange(len(sessions)) * MINUTE_MS
    arrays = [np.array(sessions, float), np.array(conversions, float), np.array(completeness)]
    verdict = conversion_scan(
        minutes, arrays[0], arrays[1], arrays[2], float(base_conv), float(base_sess)
    )
    assert 0.0 <= verdict.p_value <= 1.0
    assert verdict.statistic <= 0.0
    assert (verdict.p_value < 1.0) <= (verdict.statistic < 0.0)
    fewer = arrays[1].copy()
    fewer[-1] = max(0.0, fewer[-1] - 1.0)  # one conversion less can only lower p
    lower = conversion_scan(
        minutes, arrays[0], fewer, arrays[2], float(base_conv), float(base_sess)
    )
    assert lower.p_value <= verdict.p_value * (1 + 1e-9)
