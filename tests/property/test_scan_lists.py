"""The scans' plain-list helpers give what the numpy and scipy calls they replace give, so
a tick's verdicts stay the same figures (docs/PERFORMANCE.md, "the scans' verdicts from
lists")."""

from __future__ import annotations

import math

import numpy as np
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

from detectors.conversion import MINUTE_MS, argmin_of, start_indices, window_starts, xlogy

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
