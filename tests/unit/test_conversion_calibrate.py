"""bench/conversion_calibrate.py: reading the calibrated per-tick level off the grid counts."""

from __future__ import annotations

import math

import pytest

from bench.conversion_calibrate import GRID, calibrate, crossing


def power_law_counts(days: int, rate_at: float, alpha_at: float, slope: float) -> list[int]:
    """Episodes per grid level when the rate is ``rate_at * (alpha / alpha_at) ** slope``."""
    return [round(days * rate_at * (a / alpha_at) ** slope) for a in GRID]


@pytest.mark.parametrize(("alpha", "slope"), [(1.25e-3, 1.15), (2.4e-3, 1.6), (8e-4, 0.9)])
def test_crossing_recovers_the_level_of_a_power_law(alpha: float, slope: float) -> None:
    counts = power_law_counts(10**7, 0.02, alpha, slope)  # huge counts: rounding negligible
    found = crossing(counts, 10**7, 0.02)
    assert found == pytest.approx(alpha, rel=1e-3)


def test_crossing_is_none_when_the_budget_is_never_or_always_reached() -> None:
    assert crossing([0] * len(GRID), 1000, 0.02) is None
    assert crossing([100] * len(GRID), 1000, 0.02) is None  # already over at the lowest level


def test_crossing_ignores_a_dip_in_the_counts() -> None:
    counts = power_law_counts(10**6, 0.02, 2e-3, 1.2)
    j = next(n for n, a in enumerate(GRID) if a > 2e-3) - 3  # well below the crossing
    dipped = [*counts[:j], 0, *counts[j + 1:]]  # made monotone, the dip changes nothing
    assert crossing(dipped, 10**6, 0.02) == pytest.approx(crossing(counts, 10**6, 0.02))


def test_calibrate_gives_tests_per_day_and_a_range_around_it() -> None:
    row = calibrate(power_law_counts(2000, 0.02, 1.6e-3, 1.2), 2000, 0.02, 1.5)
    assert row["tests_per_day"] == pytest.approx(0.02 / row["alpha"])
    assert row["alpha"] == pytest.approx(1.6e-3, rel=0.02)
    low, high = row["tests_per_day_ci95"]
    assert low < row["tests_per_day"] < high
    assert row["slope"] == pytest.approx(1.2, abs=0.05)
    assert math.isfinite(row["rate_at_current_level"])
