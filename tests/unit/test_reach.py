"""The reach test (``detectors.reach``): fewer sessions reaching the checkout (a broken cart).

It keeps its size on a campaign's sessions and checkouts, sees a cart that fails for half
the shoppers sooner than the orders do, shares the campaign's level by its weight, is priced
from the checkouts missing, and its counts follow the sessions' retractions and state.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from detectors.campaign import CampaignModel, CampaignParams, CampaignVerdict
from detectors.campaign_state import model_from_state, model_to_state
from detectors.conversion import MINUTE_MS, ConversionVerdict
from detectors.funnel import Funnel, funnel_scan
from detectors.lag import LagModel
from detectors.reach import combine_reach, price_reach_drop, reach_fields
from detectors.summary import firing_summary
from detectors.verdicts import Estimate

WINDOWS = (10, 20, 30, 60, 120)
MINUTES = np.arange(120, dtype=np.int64) * MINUTE_MS
TO_CHECKOUT = LagModel(prior_median_minutes=4.0, prior_sigma=1.0, prior_weight=1e6)
H = TO_CHECKOUT.cdf_array((MINUTES[-1] - MINUTES) / MINUTE_MS + 0.5)
LEVEL = 1.25e-3  # about the default per-tick conversion level


def test_on_sessions_and_their_checkouts_it_keeps_its_size() -> None:
    """30 sessions a minute, 10% reaching the checkout: at a nominal 5% the scan rejects at
    most about 5% of 2,000 windows with no drop (Bonferroni over 5 windows: less)."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(2000):
        sessions = rng.poisson(30.0, size=120).astype(float)
        reached = rng.binomial(sessions.astype(np.int64), 0.1 * H).astype(float)
        base_sessions = float(rng.poisson(30.0 * 1000))
        base_reached = float(rng.binomial(int(base_sessions), 0.1))
        verdict, _ = funnel_scan(MINUTES, sessions, reached, H, base_reached, base_sessions,
                                 windows_minutes=WINDOWS, hold_minutes=(), tolerance=0.0)
        hits += verdict.p_value <= 0.05
    assert 0.005 <= hits / 2000 <= 0.05 * 1.2, hits


class _CartShop:
    """A campaign's traffic in event time: 30 sessions a minute, 10% of them reaching the
    checkout a log-normal delay after their start (median 4 minutes, sigma 1), half of
    those ordering 2 minutes (sigma 0.7) later; sessions that start at or after minute
    ``broken_from`` reach it ``factor`` times as often (a cart that fails)."""

    def __init__(self, model: CampaignModel, broken_from: int, factor: float, seed: int) -> None:
        self.model, self.broken_from, self.factor = model, broken_from, factor
        self.rng = np.random.default_rng(seed)
        # (time, 0 checkout / 1 order, session start, checkout)
        self.due: list[tuple[int, int, int, int]] = []

    def minute(self, minute: int) -> CampaignVerdict:
        t, rng, model = minute * MINUTE_MS, self.rng, self.model
        reach = 0.1 * (self.factor if minute >= self.broken_from else 1.0)
        for s in range(30):
            model.observe_session(t + s, 1500.0, True, device="desktop")
            if rng.random() >= reach:
                continue
            checkout = t + s + int(min(rng.lognormal(math.log(4.0), 1.0), 25.0) * MINUTE_MS)
            heapq.heappush(self.due, (checkout, 0, t + s, checkout))
            if rng.random() < 0.5:
                order = checkout + int(rng.lognormal(math.log(2.0), 0.7) * MINUTE_MS)
                heapq.heappush(self.due, (order, 1, t + s, checkout))
        while self.due and self.due[0][0] < t + MINUTE_MS:
            at, kind, start, checkout = heapq.heappop(self.due)
            if kind == 0:
                model.observe_checkout(at, start)
            else:
                model.observe_order(start, at, 50.0, first_order=True, known_session=True,
                                    lcp_ms=1500.0, device="desktop", checkout_ms=checkout)
        return model.tick("c", t + MINUTE_MS, None)


def _first_hot(weight: float, seed: int) -> int:
    """Minutes from a cart that fails for half the shoppers to the campaign's first tick
    under the level (60: not within the hour)."""
    shop = _CartShop(CampaignModel(CampaignParams(reach_test_weight=weight)), 600, 0.5, seed)
    for minute in range(600):
        shop.minute(minute)
    for minute in range(600, 660):
        if shop.minute(minute).conversion_p_value < LEVEL:
            return minute - 600
    return 60


def test_the_reach_sees_a_broken_cart_sooner_than_the_orders_alone() -> None:
    minutes = [(_first_hot(0.2, seed), _first_hot(0.0, seed)) for seed in (1, 2, 3, 4, 5)]
    with_reach, alone = (float(np.median(m)) for m in zip(*minutes, strict=True))
    assert with_reach + 5 <= alone, minutes


def test_a_warm_campaign_keeps_its_reach_and_reads_it_in_its_verdict() -> None:
    model = CampaignModel(CampaignParams())
    shop = _CartShop(model, 400, 0.2, seed=7)
    quiet = [shop.minute(minute) for minute in range(400)]
    assert model.reach is not None
    assert model.reach.warm(20.0)
    assert min(v.reach_p_value for v in quiet[300:]) > LEVEL / 0.2  # no drop: never counts
    restored = model_from_state(model_to_state(model))
    assert restored.reach is not None
    assert restored.reach.to_state() == model.reach.to_state()
    last = [shop.minute(minute) for minute in range(400, 425)][-1]
    assert last.reach_p_value < 1e-4
    assert last.reach_observed < 0.5 * last.reach_expected
    assert last.reach_window_start_ms is not None
    assert last.reach_window_start_ms >= 390 * MINUTE_MS  # the cart broke at 400
    assert last.conversion_p_value <= last.reach_p_value / 0.2 + 1e-12
    # the truth: 30 sessions a minute x 10% reaching x 80% lost x half ordering x $50, an hour
    truth = 30 * 0.1 * 0.8 * 0.5 * 50.0 * 60
    loss = last.conversion_loss_per_hour
    assert 0.7 * truth < loss.value < 1.3 * truth, loss
    assert loss.low < truth < loss.high, loss
    old = model_to_state(model)
    del old["rc"]  # a row written before the reach test: a new, cold reach
    assert model_from_state(old).reach is not None
    assert not model_from_state(old).reach.warm(1.0)  # type: ignore[union-attr]


def test_the_reach_shares_the_level_and_decides_the_onset_when_it_counts() -> None:
    params = CampaignParams(reach_test_weight=0.2)
    reach = Funnel.of(params)
    reach.base.add(0, np.array([300.0, 3000.0]))  # 10% of sessions reach the checkout
    tick = 200 * MINUTE_MS
    for minute in range(80, 200):
        for s in range(30):
            reach.observe_checkout(minute * MINUTE_MS + s)  # a session
        for _ in range(3 if minute < 170 else 0):  # none reach it in the last 30 minutes
            reach.observe_order(minute * MINUTE_MS, minute * MINUTE_MS + 60_000)
    campaign = ConversionVerdict(0.01, 10.0, 20.0, 0.5, 150 * MINUTE_MS, -2.0)
    recent = ConversionVerdict(0.2, 10.0, 12.0, 0.8, 150 * MINUTE_MS, -0.5)
    conv, held, verdict, onset = combine_reach(reach, params, tick, campaign, recent, 5)
    assert verdict.p_value < 1e-6
    assert conv.p_value == pytest.approx(verdict.p_value / 0.2)
    assert onset == verdict.window_start_ms
    assert onset is not None
    assert onset >= 160 * MINUTE_MS
    assert (conv.observed, conv.expected) == (10.0, 20.0)  # the campaign's figures stay
    assert held.p_value <= recent.p_value / 0.8 + 1e-12
    off = combine_reach(reach, CampaignParams(reach_test_weight=0.0), tick, campaign, recent, 5)
    assert (off[0], off[1], off[3]) == (campaign, recent, 5)
    assert off[2].window_start_ms is None
    assert off[2].p_value == 1.0
    assert reach_fields(verdict)["reach_window_start_ms"] == verdict.window_start_ms


def test_a_drop_only_the_reach_shows_is_priced_from_the_checkouts_missing() -> None:
    params = CampaignParams(reach_test_weight=0.2)
    reach, funnel = Funnel.of(params), Funnel.of(params)
    reach.base.add(0, np.array([300.0, 3000.0]))  # 10% reach the checkout
    funnel.base.add(0, np.array([150.0, 300.0]))  # half of those order
    tick = 200 * MINUTE_MS
    for minute in range(180, 200):
        for s in range(30):
            reach.observe_checkout(minute * MINUTE_MS + s)
    window = tick - 20 * MINUTE_MS
    seen = ConversionVerdict(1e-6, 0.0, 60.0, 0.0, window, -9.0)  # none of 60 due came
    lost, so_far = price_reach_drop(reach, funnel, seen, params, tick, 80.0, 1.0)
    # 600 sessions in 20 minutes, 10% reaching it, half ordering: 90 orders an hour at $80
    assert lost.value == pytest.approx(90 * 80.0, rel=0.02)
    assert lost.low < lost.value < lost.high
    assert so_far == pytest.approx(60 * 0.5 * 80.0)
    weak = ConversionVerdict(0.05, 55.0, 60.0, 0.9, window, -0.5)  # does not count
    assert price_reach_drop(reach, funnel, weak, params, tick, 80.0, 1.0) == (Estimate.zero(), 0.0)
    assert price_reach_drop(reach, None, seen, params, tick, 80.0, 1.0) == (Estimate.zero(), 0.0)


def test_retracted_sessions_and_checkouts_leave_the_reach() -> None:
    model = CampaignModel(CampaignParams())
    model.observe_checkout(5 * MINUTE_MS)  # the first checkout makes the funnel and the reach
    assert model.reach is not None
    model.observe_session(10 * MINUTE_MS, 1500.0, True)
    model.observe_session(10 * MINUTE_MS + 1, 1500.0, True)
    model.observe_checkout(13 * MINUTE_MS, 10 * MINUTE_MS)
    assert model.reach.counts[10 * MINUTE_MS][:2] == [2, 1]
    assert model.retract_session(10 * MINUTE_MS + 1, 1500.0, True)
    assert model.retract_checkout(13 * MINUTE_MS, 10 * MINUTE_MS)
    assert model.reach.counts[10 * MINUTE_MS][:2] == [1, 0]
    assert model.funnel is not None
    assert model.funnel.counts[13 * MINUTE_MS][0] == 0


def test_the_alert_line_says_fewer_sessions_reached_the_checkout() -> None:
    facts = {"lcp_p75_ms": 2000.0, "lcp_p75_baseline_ms": 2000.0, "conversion_rate": 0.01,
             "conversion_rate_baseline": 0.02, "latency_regressed": False,
             "conversion_window_minutes": 30, "conversion_observed": 20.0,
             "conversion_expected": 40.0, "day_known": True, "orders_stopped": False,
             "reach_window_minutes": 20, "reach_checkouts_observed": 31.0,
             "reach_checkouts_expected": 64.4}
    line = firing_summary("spring_sale", "conversion_drop", Estimate(900.0, 500.0, 1300.0),
                          facts, "USD")
    assert "31 sessions reached the checkout vs 64 expected in the last 20 min" in line
    facts["reach_checkouts_observed"] = 62.0  # no fewer than 90% of expected: not said
    line = firing_summary("spring_sale", "conversion_drop", Estimate(900.0, 500.0, 1300.0),
                          facts, "USD")
    assert "reached the checkout" not in line
