"""LogHistogram: relative accuracy against exact quantiles, merging, subtraction, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.sketch import LogHistogram, merged


def _filled(values: np.ndarray, **params: float) -> LogHistogram:
    hist = LogHistogram(**params)
    for value in values:
        hist.add(float(value))
    return hist


@pytest.mark.parametrize(
    ("accuracy", "sigma"),
    [
        pytest.param(0.02, 0.5, id="default-lcp-like"),
        pytest.param(0.01, 1.5, id="fine-wide"),
        pytest.param(0.05, 0.1, id="coarse-narrow"),
    ],
)
def test_quantiles_within_relative_accuracy(accuracy: float, sigma: float) -> None:
    values = np.random.default_rng(1).lognormal(np.log(2500.0), sigma, size=5000)
    hist = _filled(values, relative_accuracy=accuracy)
    ordered = np.sort(values)
    for q in (0.0, 0.01, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0):
        exact = ordered[math.floor(q * (len(values) - 1))]
        assert abs(hist.quantile(q) - exact) <= accuracy * exact * (1 + 1e-9)


def test_values_below_min_value_share_the_lowest_bucket() -> None:
    hist = LogHistogram(min_value=10.0)
    for value in (0.0, 0.5, 9.99, 10.0):
        hist.add(value)
    assert hist.to_state()["bins"] == [[0, 4]]
    assert hist.quantile(0.5) == pytest.approx(10.0, rel=0.02)


def test_empty_histogram_is_nan() -> None:
    hist = LogHistogram()
    assert hist.count == 0
    assert math.isnan(hist.quantile(0.5))
    assert math.isnan(hist.mean_log())
    assert math.isnan(hist.var_log())


def test_mean_and_variance_of_log_match_the_values() -> None:
    values = np.random.default_rng(2).lognormal(7.5, 0.6, size=4000)
    hist = _filled(values)
    assert hist.mean_log() == pytest.approx(np.log(values).mean(), abs=0.02)
    assert hist.var_log() == pytest.approx(np.log(values).var(), rel=0.02)


def test_add_with_count_equals_repeated_adds() -> None:
    once = LogHistogram()
    once.add(1234.0, 5)
    repeated = _filled(np.full(5, 1234.0))
    assert once == repeated
    assert once.count == 5


def test_merge_equals_histogram_of_concatenation() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(7.0, 0.7, size=n) for n in (10, 200, 3000)]
    hists = [_filled(part) for part in parts]
    whole = _filled(np.concatenate(parts))
    assert merged(hists) == whole
    assert merged(hists).count == 3210
    assert hists[0].count == 10  # merged() does not touch its inputs


def test_merged_of_nothing_is_empty() -> None:
    assert merged([]).count == 0


def test_subtract_undoes_merge() -> None:
    rng = np.random.default_rng(4)
    a = _filled(rng.lognormal(7.0, 0.5, size=300))
    b = _filled(rng.lognormal(8.0, 0.5, size=300))
    window = merged([a, b])
    window.subtract(a)
    assert window == b


def test_subtract_that_would_go_negative_raises_and_changes_nothing() -> None:
    a = LogHistogram()
    a.add(1000.0)
    b = LogHistogram()
    b.add(1000.0)
    b.add(5000.0)
    before = b.copy()
    with pytest.raises(ValueError, match="negative"):
        a.subtract(b)
    assert a.count == 1
    assert b == before


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(LogHistogram(relative_accuracy=0.01), id="accuracy"),
        pytest.param(LogHistogram(min_value=2.0), id="min-value"),
    ],
)
def test_incompatible_histograms_do_not_combine(other: LogHistogram) -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        LogHistogram().merge(other)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"relative_accuracy": 0.0}, id="accuracy-zero"),
        pytest.param({"relative_accuracy": 1.0}, id="accuracy-one"),
        pytest.param({"min_value": 0.0}, id="min-zero"),
        pytest.param({"min_value": math.inf}, id="min-inf"),
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LogHistogram(**params)


@pytest.mark.parametrize(
    ("value", "count"),
    [
        pytest.param(-1.0, 1, id="negative"),
        pytest.param(math.nan, 1, id="nan"),
        pytest.param(math.inf, 1, id="inf"),
        pytest.param(100.0, -1, id="negative-count"),
    ],
)
def test_bad_values_are_rejected(value: float, count: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        LogHistogram().add(value, count)


def test_quantile_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be"):
        LogHistogram().quantile(1.5)


def test_state_round_trips_through_json() -> None:
    hist = _filled(np.random.default_rng(5).lognormal(7.0, 1.0, size=500), min_value=5.0)
    state = json.loads(json.dumps(hist.to_state()))
    again = LogHistogram.from_state(state)
    assert again == hist
    assert again.quantile(0.75) == hist.quantile(0.75)
    assert again.count == hist.count


def test_copy_is_independent() -> None:
    hist = LogHistogram()
    hist.add(100.0)
    clone = hist.copy()
    clone.add(200.0)
    assert hist.count == 1
    assert clone != hist
