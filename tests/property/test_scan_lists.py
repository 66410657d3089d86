"""The scans' plain-list helpers give what the numpy and scipy calls they replace give, so
a tick's verdicts stay the same figures (docs/PERFORMANCE.md, "the scans' verdicts from
lists")."""

from __future__ import annotations

import math

import numpy as np
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

from detectors.conversion import MINUTE_MS, start_indices, window_p_values, window_starts
from detectors.scan_lists import argmin_of, min_or_nan, p_values_rows, xlogy

p_values = st.floats(min_value=0.0, max_value=1.0) | st.just(math.nan)


@given(st.lists(p_values, min_size=1, max_size=12), st.data())
def test_argmin_of_is_numpy_argmin_over_the_columns(values: list[float], data: st.DataObject
                                                    ) -> None:
    cols = sorted(data.draw(st.sets(st.integers(0, len(values) - 1), min_size=1)))
    expected = cols[int(np.argmin(np.array(values)[cols]))]
    assert argmin_of(values, cols) == expected
    assert argmin_of(values, range(len(values))) == int(np.argmin(np.array(values)))


@given(st.floats(min_value=0.0, max_value=1e6) | st.just(0.0),
       st.floats(min_value=0.0, max_value=1e6) | st.just(0.0) | st.just(math.nan))
def test_xlogy_is_scipys_on_floats(x: float, y: float) -> None:
    expected = float(scipy.special.xlogy(x, y))
    got = xlogy(x, y)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_xlogy_of_a_negative_y_is_nan_as_scipys() -> None:
    assert math.isnan(xlogy(2.0, -1.0))
    assert math.isnan(float(scipy.special.xlogy(2.0, -1.0)))


def _window_starts_before(minute: np.ndarray, windows: list[int]) -> list[int]:
    """The definition before the lists (commit 8106c33), to compare against."""
    cutoffs = [int(minute[-1]) - w * MINUTE_MS for w in sorted(set(windows), reverse=True)]
    starts = minute.searchsorted(cutoffs, side="right")
    distinct = starts[np.concatenate(([True], starts[1:] != starts[:-1]))]
    return [int(s) for s in distinct]


@given(st.sets(st.integers(0, 300), min_size=1, max_size=140),
       st.lists(st.integers(1, 200), min_size=1, max_size=6))
def test_start_indices_are_the_distinct_window_starts(minutes: set[int], windows: list[int]
                                                      ) -> None:
    minute = np.array(sorted(minutes), dtype=np.int64) * MINUTE_MS
    expected = _window_starts_before(minute, windows)
    assert start_indices(minute, windows) == expected
    assert window_starts(minute, windows).tolist() == expected
    assert window_starts(minute, windows).dtype == np.intp


counts = st.floats(min_value=0.0, max_value=1e4, allow_subnormal=False)


@given(st.lists(st.tuples(counts, counts), min_size=1, max_size=6),
       st.floats(min_value=1.0, max_value=1e4), st.floats(min_value=10.0, max_value=1e6),
       st.floats(min_value=0.5, max_value=1.0))
def test_p_values_rows_are_window_p_values(windows: list[tuple[float, float]], base_c: float,
                                           base_s: float, r0: float) -> None:
    exposure = [e for e, _ in windows]
    observed = [o for _, o in windows]
    expected, p0, p_values = window_p_values(np.array(exposure), np.array(observed), base_c,
                                             base_s, r0)
    got = p_values_rows([exposure], [observed], [base_c], [base_s], r0)
    assert got == ([expected.tolist()], [p0.tolist()], [p_values.tolist()])


@given(st.lists(p_values, min_size=1, max_size=12))
def test_min_or_nan_is_numpy_min(values: list[float]) -> None:
    expected = float(np.min(np.array(values)))
    got = min_or_nan(values)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected
