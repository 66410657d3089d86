"""The unknown-onset oracle of bench/conversion_cusum.py: its statistic and its episodes."""

from __future__ import annotations

import math

import numpy as np

from bench.conversion_cusum import cusum_episodes, cusum_path
from bench.conversion_oracle import seen_probability
from bench.conversion_power import CONVERSION_RATE, Episodes, Stream, simulate


def test_episodes_are_those_of_the_episode_rule_with_one_hot_tick() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        path = rng.random(400) * (rng.random(400) < 0.05) * 10.0
        rule = Episodes(1, 10)
        expected = [n for n, value in enumerate(path) if rule.step(bool(value > 3.0))]
        assert cusum_episodes(path, 3.0, 10) == expected


def test_no_orders_at_all_gives_half_the_expected_orders_as_log_likelihood_ratio() -> None:
    # no orders: log LR of x0.5 against normal since the oldest minute = 0.5 x expected
    horizon, rows = 120, 121
    sessions = np.full(rows, 40.0)
    stream = Stream(sessions, np.zeros((rows, horizon + 1), dtype=np.int32))
    path = cusum_path(stream, horizon, 0.5)
    ages = np.arange(horizon, 0, -1, dtype=np.float64)
    expected = float((sessions[1:] * CONVERSION_RATE * seen_probability(ages)).sum())
    assert path.shape == (1,)
    assert math.isclose(path[0], 0.5 * expected, rel_tol=1e-12)


def test_a_sustained_halving_is_found_and_normal_traffic_stays_low() -> None:
    rng = np.random.default_rng(5)
    normal = simulate(rng, 1.5, 400, onset=10**9, factor=1.0, horizon=120)
    dropped = simulate(rng, 1.5, 400, onset=120, factor=0.5, horizon=120)
    # per minute of sessions the log LR drifts by 1.5 x (ln 0.5 + 0.5) = -0.29 under
    # normal traffic and by 1.5 x (1 - 0.5 + 0.5 ln 0.5) = +0.23 after a halving: about 25
    # over the 120-minute window (standard deviation about 6), against a threshold near 10
    assert cusum_path(normal, 120, 0.5).max() < 8.0
    assert cusum_path(dropped, 120, 0.5).max() > 15.0
