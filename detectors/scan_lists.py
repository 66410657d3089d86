"""The window scans' arithmetic on plain lists of a few numbers.

A campaign's tick scans five windows of a handful of series (the campaign, its devices,
its checkout's reachers). The windows' sums come from one ``cumsum`` per scan; from there
on a scan handles a few dozen numbers, where numpy's cost is its calls, not its
arithmetic (docs/PERFORMANCE.md, "the scans on lists"). Compiled by mypyc, loops over
lists do the same operations in the same order (the p-values are
``detectors.conversion.window_p_values``'s formulas, term by term), so the figures are the
same floats; the incomplete beta function is called once, for the windows short of
expectation only, where the p-value is not simply 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import betainc

__all__ = ["argmin_of", "min_or_nan", "p_values_rows", "xlogy"]


def p_values_rows(
    exposure: list[list[float]], observed: list[list[float]], baseline_conversions: list[float],
    baseline_sessions: list[float], r0: float,
) -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
    """Expected conversions, null proportion ``p0`` and p-value of each window of each row,
    as ``detectors.conversion.window_p_values`` gives them for the row's baseline."""
    expected, p0, p_values = [], [], []
    cells: list[tuple[int, int]] = []
    args: tuple[list[float], list[float], list[float]] = ([], [], [])
    for i, (row_exposure, row_observed) in enumerate(zip(exposure, observed, strict=True)):
        base_c, base_s = baseline_conversions[i], baseline_sessions[i]
        rate = base_c / base_s
        row_expected = [e * rate for e in row_exposure]
        row_p0 = []
        for j, e in enumerate(row_exposure):
            null = r0 * e
            row_p0.append(null / (null + base_s))
            if not row_observed[j] >= r0 * row_expected[j]:
                cells.append((i, j))
                args[0].append(base_c)
                args[1].append(row_observed[j] + 1.0)
                args[2].append(1.0 - row_p0[j])
        expected.append(row_expected)
        p0.append(row_p0)
        p_values.append([1.0] * len(row_exposure))
    if cells:
        found: list[float] = betainc(*(np.array(a, dtype=np.float64) for a in args)).tolist()
        for (i, j), p in zip(cells, found, strict=True):
            p_values[i][j] = p
    return expected, p0, p_values


def argmin_of(values: list[float], cols: Sequence[int]) -> int:
    """The index in ``cols`` of the smallest of ``values`` there, as ``numpy.argmin``
    picks it: the first nan if there is one, else the first of the smallest."""
    best = cols[0]
    low = values[best]
    if math.isnan(low):
        return best
    for j in cols[1:]:
        value = values[j]
        if math.isnan(value):
            return j
        if value < low:
            best, low = j, value
    return best


def min_or_nan(values: list[float]) -> float:
    """``numpy.min``: nan if any value is nan, else the smallest."""
    low = values[0]
    for value in values:
        if math.isnan(value):
            return math.nan
        low = min(low, value)
    return low


def xlogy(x: float, y: float) -> float:
    """``x log(y)``, 0 where ``x`` is 0 (``scipy.special.xlogy`` on floats, without a
    ufunc call per number)."""
    if x == 0 and not math.isnan(y):
        return 0.0
    return x * math.log(y) if y > 0 else (math.nan if y < 0 or math.isnan(y) else -math.inf)
