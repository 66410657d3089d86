"""Stake weights of the conversion test: mean 1, floor and cap, monotone; the levels used."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from detectors.episodes import benjamini_hochberg
from detectors.incidents import IncidentManager, IncidentParams
from detectors.stakes import stake_per_hour, stake_weights, weighted_p_values
from detectors.verdicts import CampaignVerdict, Estimate
from streams.pipeline import incident_params
from streams.settings import Settings

MIN = 60_000
T0 = 28_333_334 * MIN
ALPHA = 0.02 / 16


def verdict(campaign: str, sessions_per_minute: float, p: float = 0.6,
            tick_ms: int = T0, **overrides: Any) -> CampaignVerdict:
    """A warmed-up verdict converting 3% at $80 an order (stake: sessions x 144 $/h)."""
    fields: dict[str, Any] = {
        "campaign": campaign, "tick_ms": tick_ms, "warmed_up": True,
        "sessions_per_minute": sessions_per_minute, "sessions_in_window": 1200,
        "conversion_rate": 0.03, "conversion_rate_baseline": 0.03,
        "lcp_p75_ms": 2300.0, "lcp_p75_baseline_ms": 2300.0,
        "latency_regressed": False, "latency_statistic": 0.4, "latency_threshold": 8.0,
        "latency_started_ms": None, "latency_shift": 0.0,
        "conversion_p_value": p, "conversion_observed": 37.0, "conversion_expected": 37.2,
        "conversion_ratio": 0.99, "conversion_window_start_ms": T0 - 30 * MIN,
        "average_order_value": 80.0,
        "slow_page_loss_per_hour": Estimate.zero(),
        "conversion_loss_per_hour": Estimate(2300, 1800, 2900),
    }
    fields.update(overrides)
    fields.setdefault("conversion_recent_p_value", p)  # the last hour shows what the scan does
    return CampaignVerdict(**fields)


def test_known_weights() -> None:
    # sqrt stakes 30, 10, 0: the empty one at the floor, t (30 + 10) = 3 - 0.25
    assert stake_weights([900.0, 100.0, 0.0], 0.5) == pytest.approx([2.0625, 0.6875, 0.25])
    # one huge stake: at the cap would be 4 with three at the floor (mean 1.75): scaled down
    assert stake_weights([1e6, 1.0, 1.0, 1.0], 1.0) == pytest.approx([3.25, 0.25, 0.25, 0.25])
    assert stake_weights([1e6] + [1.0] * 9, 1.0) == pytest.approx([4.0] + [6 / 9] * 9)


@pytest.mark.parametrize("stakes", [[], [5.0], [0.0, 0.0], [math.nan, 0.0], [3.0, 3.0, 3.0]])
def test_no_information_gives_equal_weights(stakes: list[float]) -> None:
    assert stake_weights(stakes, 0.5) == pytest.approx([1.0] * len(stakes))


def test_power_zero_is_the_unweighted_test() -> None:
    assert stake_weights([1e6, 1.0, 0.0], 0.0) == [1.0, 1.0, 1.0]


def test_random_stakes_keep_mean_one_within_floor_and_cap_and_order() -> None:
    rng = np.random.default_rng(7)
    for _ in range(500):
        m = int(rng.integers(2, 40))
        stakes = rng.lognormal(5, 2.5, m) * (rng.random(m) > 0.1)  # some without revenue
        power = float(rng.choice([0.25, 0.5, 1.0, 2.0]))
        floor, cap = float(rng.choice([0.0, 0.1, 0.25])), float(rng.choice([1.5, 4.0, 10.0]))
        w = np.asarray(stake_weights(list(stakes), power, floor, cap))
        assert w.mean() == pytest.approx(1.0, abs=1e-9)
        assert w.min() >= floor - 1e-12
        assert w.max() <= cap + 1e-12
        order = np.argsort(stakes, kind="stable")
        assert np.all(np.diff(w[order]) >= -1e-12)  # monotone in the stake
        assert np.all(w[stakes == 0] == floor)
        # the scale is the one a bisection finds
        raw = stakes ** power
        lo, hi = 0.0, cap / raw[raw > 0].min()
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.clip(mid * raw, floor, cap).mean() < 1 else (lo, mid)
        assert w == pytest.approx(np.clip(hi * raw, floor, cap), abs=1e-9)


def test_weights_grow_with_revenue_and_with_the_power() -> None:
    stakes = [5000.0, 600.0, 450.0, 60.0]
    flat, root, linear = (stake_weights(stakes, p) for p in (0.0, 0.5, 1.0))
    assert flat == [1.0] * 4
    assert root[0] > root[1] > root[2] > root[3]
    assert linear[0] > root[0]
    assert linear[3] <= root[3]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="floor"):
        stake_weights([1.0], 0.5, floor=1.5)
    with pytest.raises(ValueError, match="floor"):
        stake_weights([1.0], -1.0)
    with pytest.raises(ValueError, match="stake_weight"):
        IncidentParams(stake_weight_cap=0.5)


def test_stake_per_hour() -> None:
    assert stake_per_hour(verdict("a", 10.0)) == pytest.approx(10 * 0.03 * 80 * 60)
    assert stake_per_hour(verdict("a", 10.0, average_order_value=math.nan)) == 0.0
    assert stake_per_hour(verdict("a", 0.0)) == 0.0
    assert stake_per_hour(verdict("a", 10.0, conversion_rate_baseline=math.nan)) == 0.0


def test_weighted_bh_with_unit_weights_is_bh() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = list(rng.random(8) ** 4)
        assert benjamini_hochberg(weighted_p_values(p, [1.0] * 8), 0.05) == \
            benjamini_hochberg(p, 0.05)
    assert weighted_p_values([0.01, math.nan], [2.0, 1.0])[0] == 0.005
    assert math.isnan(weighted_p_values([0.01, math.nan], [2.0, 1.0])[1])
    assert weighted_p_values([0.01], [0.0]) == [math.inf]


def shop() -> list[CampaignVerdict]:
    return [verdict("big", 65.0), verdict("mid", 12.0), verdict("small", 3.0),
            verdict("tiny", 0.2)]


def test_levels_follow_the_stakes_and_keep_the_total() -> None:
    levels = IncidentManager().conversion_levels(shop())
    weights = stake_weights([65.0 * 144, 12.0 * 144, 3.0 * 144, 0.2 * 144], 0.5)
    assert levels == pytest.approx({c: w * ALPHA for c, w in
                                    zip(["big", "mid", "small", "tiny"], weights, strict=True)})
    assert sum(levels.values()) == pytest.approx(4 * ALPHA)
    assert levels["big"] > ALPHA > levels["tiny"]
    flat = IncidentManager(IncidentParams(stake_weight_power=0.0)).conversion_levels(shop())
    assert flat == pytest.approx(dict.fromkeys(["big", "mid", "small", "tiny"], ALPHA))
    cold = [*shop(), verdict("new", 50.0, warmed_up=False)]
    assert IncidentManager().conversion_levels(cold).keys() == levels.keys()


def opens(params: IncidentParams, hot: str, p: float) -> bool:
    """Whether two ticks with ``hot`` at conversion p-value ``p`` open its episode."""
    manager = IncidentManager(params)
    alerts = []
    for k in range(2):
        tick = T0 + k * MIN
        ticks = [verdict(v.campaign, v.sessions_per_minute, p if v.campaign == hot else 0.6,
                         tick_ms=tick) for v in shop()]
        alerts += manager.process_tick(tick, ticks)
    return any(a.campaign == hot and a.kind == "conversion_drop" for a in alerts)


def test_a_drop_between_the_levels_opens_only_where_the_stake_is() -> None:
    weighted, flat = IncidentParams(), IncidentParams(stake_weight_power=0.0)
    w_big = stake_weights([65.0 * 144, 12.0 * 144, 3.0 * 144, 0.2 * 144], 0.5)[0]
    p = 0.0018  # above alpha, below w_big * alpha
    assert ALPHA < p < w_big * ALPHA
    assert opens(weighted, "big", p)
    assert not opens(flat, "big", p)
    assert opens(flat, "tiny", 0.9 * ALPHA)
    assert not opens(weighted, "tiny", 0.9 * ALPHA)


def test_the_setting_reaches_the_params() -> None:
    assert incident_params(Settings()).stake_weight_power == 0.5
    off = Settings.from_env({"REVWATCH_CONVERSION_STAKE_POWER": "0"})
    assert incident_params(off).stake_weight_power == 0.0


def test_a_campaign_without_revenue_history_gets_the_floor() -> None:
    verdicts = [*shop(), verdict("fresh", 30.0, average_order_value=math.nan)]
    levels = IncidentManager().conversion_levels(verdicts)
    assert levels["fresh"] == pytest.approx(0.25 * ALPHA)
    assert sum(levels.values()) == pytest.approx(5 * ALPHA)
    alone = IncidentManager().conversion_levels([verdict("fresh", 30.0, average_order_value=0.0)])
    assert alone == {"fresh": pytest.approx(ALPHA)}
