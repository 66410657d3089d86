"""bench/funnel_power.py and bench/funnel_scan.py: the simulated funnel and the shortcuts
their figures rest on (docs/CONVERSION-POWER.md, "What the checkout funnel would add")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.conversion_cusum import GRID, cusum_episodes
from bench.conversion_power import openings
from bench.funnel_power import HORIZON, seen_shares, simulate, threshold_at
from bench.funnel_scan import fast_openings, rules_for

ROWS = 600


def test_fast_openings_are_the_episode_rule_s() -> None:
    """The bench reads 65 levels off every null day from the hot ticks alone: the same
    openings as ``openings`` (two hot ticks in a row open, ten quiet ones resolve)."""
    rules, rng = rules_for(1)[0], np.random.default_rng(5)
    for _ in range(500):
        p = list(rng.random(300) ** rng.uniform(0.5, 8.0))
        for alpha in (1e-3, 0.05, 0.3, 0.7):
            assert fast_openings(p, alpha, rules) == openings(p, alpha, rules)


def test_without_an_incident_reachers_order_at_q_and_come_at_their_rate() -> None:
    level, q = 1.5, 0.5
    world = simulate(np.random.default_rng(2), (level, 1.0, "payment", q), ROWS, math.inf)
    rows = slice(60, ROWS - HORIZON)  # sessions from before row 0 reach no checkout
    reachers, ordered = world.reachers[rows].sum(), world.reach_seen[rows, -1].sum()
    assert reachers / (rows.stop - rows.start) == pytest.approx(level / q, rel=0.08)
    assert ordered / reachers == pytest.approx(q, rel=0.1)
    minutes = rows.stop - rows.start  # and the sessions bring `level` orders a minute
    assert world.orders_seen[rows, -1].sum() == pytest.approx(level * minutes, rel=0.1)


def test_a_broken_payment_takes_the_orders_and_leaves_the_reachers() -> None:
    onset = 300
    world = simulate(np.random.default_rng(3), (1.5, 0.0, "payment", 0.5), ROWS, onset)
    assert world.reach_seen[onset:, -1].sum() == 0
    assert world.reach_seen[:onset - 10, -1].sum() > 0
    assert world.reachers[onset:].mean() == pytest.approx(3.0, rel=0.1)


def test_a_broken_cart_takes_the_reachers_and_leaves_their_conversion() -> None:
    onset = 300
    world = simulate(np.random.default_rng(4), (1.5, 0.5, "cart", 0.5), ROWS, onset)
    after, before = world.reachers[onset:ROWS - HORIZON], world.reachers[:onset]
    assert after.mean() == pytest.approx(0.5 * before.mean(), rel=0.15)
    ordered = world.reach_seen[onset:ROWS - HORIZON, -1].sum() / after.sum()
    assert ordered == pytest.approx(0.5, rel=0.1)


def test_orders_come_sooner_after_the_checkout_than_after_the_session_start() -> None:
    f, g = seen_shares(np.random.default_rng(6), n=50_000)  # ages HORIZON .. 1
    for share in (f, g):
        assert np.all(np.diff(share) <= 0)  # older minutes have more of their orders in
        assert share.min() >= 0.0
        assert share.max() <= 1.0
    assert np.all(g >= f)
    assert g[-5] > 0.5 > f[-5]  # 5 minutes after: most checkouts' orders, few sessions'


def test_threshold_at_is_the_lowest_of_the_grid_within_the_rate() -> None:
    rng = np.random.default_rng(7)
    paths = [rng.exponential(2.0, 1440) for _ in range(40)]
    chosen = threshold_at(paths, 0.5)

    def count(threshold: float) -> int:
        return sum(len(cusum_episodes(p, threshold, 10)) for p in paths)

    allowed = 0.5 * len(paths)
    assert count(chosen) <= allowed
    below = GRID[:int(np.searchsorted(GRID, chosen))]  # the grid's levels under it
    assert below.size == 0 or count(float(below[-1])) > allowed
