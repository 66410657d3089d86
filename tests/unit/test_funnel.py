"""The checkout funnel's test (``detectors.funnel``): the quasi-Poisson scan is the window
scan of ``detectors.conversion`` when the reachers rarely order, keeps its size on
binomial reachers where the Poisson scan is far too conservative, sees a stopped payment
within minutes, and the funnel's counts, baseline and state behave like the campaign's.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import binom

from detectors.campaign import CampaignModel, CampaignParams, CampaignVerdict
from detectors.campaign_state import model_from_state, model_to_state
from detectors.conversion import MINUTE_MS, ConversionVerdict, conversion_scan
from detectors.funnel import (
    Funnel,
    checkout_fields,
    exact_p_values,
    funnel_scan,
    onset_of,
    price_funnel_drop,
    with_funnel,
)
from detectors.lag import LagModel
from detectors.verdicts import Estimate

WINDOWS = (10, 20, 30, 60, 120)
HOLD = (10, 20, 30, 60)
TO_ORDER = LagModel(prior_median_minutes=2.0, prior_sigma=0.7, prior_weight=1e6)
MINUTES = np.arange(120, dtype=np.int64) * MINUTE_MS
G = TO_ORDER.cdf_array((MINUTES[-1] - MINUTES) / MINUTE_MS + 0.5)


def _reachers(rng: np.random.Generator, per_minute: float, q: float, factor: float = 1.0,
              onset: int = 120) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Reachers per minute and their orders seen by the last minute (``factor`` x ``q`` from
    minute ``onset`` on)."""
    n = rng.poisson(per_minute, size=120)
    rate = np.where(np.arange(120) >= onset, q * factor, q)
    return n.astype(float), rng.binomial(n, rate * G).astype(float)


def test_with_rare_orders_it_is_the_conversion_scan() -> None:
    rng = np.random.default_rng(3)
    n, orders = _reachers(rng, 200.0, 1e-4 * 2, factor=0.0, onset=100)
    funnel, _ = funnel_scan(MINUTES, n, orders, G, 2.0, 1e4, windows_minutes=WINDOWS,
                            hold_minutes=HOLD, tolerance=0.1)
    poisson = conversion_scan(MINUTES, n, orders, G, 2.0, 1e4, windows_minutes=WINDOWS)
    assert funnel.p_value == pytest.approx(poisson.p_value, rel=0.05)
    assert funnel.window_start_ms == poisson.window_start_ms


def _rejections(q: float, *, quasi: bool, runs: int = 3000) -> float:
    rng = np.random.default_rng([7, int(q * 100)])
    hits = 0
    for _ in range(runs):
        n, orders = _reachers(rng, 1.2, q)
        base_reachers = rng.poisson(1.2 * 1000)
        base_orders = float(rng.binomial(base_reachers, q))
        if quasi:
            p = funnel_scan(MINUTES, n, orders, G, base_orders, float(base_reachers),
                            windows_minutes=WINDOWS, hold_minutes=(), tolerance=0.0)[0].p_value
        else:
            p = conversion_scan(MINUTES, n, orders, G, base_orders, float(base_reachers),
                                windows_minutes=WINDOWS, tolerance=0.0).p_value
        hits += p <= 0.05
    return hits / runs


def test_on_binomial_reachers_it_keeps_its_size_where_the_poisson_scan_is_too_careful() -> None:
    quasi, poisson = _rejections(0.5, quasi=True), _rejections(0.5, quasi=False)
    assert quasi <= 0.05 * 1.3  # Bonferroni over 5 windows: at most about its level
    assert quasi > 2.0 * poisson, (quasi, poisson)


def test_the_exact_p_values_are_the_binomial_when_the_rate_is_known() -> None:
    observed, reachers = np.array([0.0, 3.0, 9.0, 20.0]), np.array([12.0, 12.0, 30.0, 40.0])
    exposure = reachers.copy()  # every order due: G = 1
    p = exact_p_values(observed, reachers, exposure, 0.5, 1e9, 0.9)
    assert p[:3] == pytest.approx(binom.cdf(observed[:3], reachers[:3], 0.45), rel=1e-4)
    assert p[3] == 1.0  # 20 of 40 is no drop below 0.45
    unsure = exact_p_values(observed, reachers, exposure, 0.5, 50.0, 0.9)
    assert (unsure[:3] > p[:3]).all()  # a baseline of 50 reachers: a less sure rate
    assert p[0] == pytest.approx(0.55**12, rel=1e-4)  # the Poisson of 12 pseudo-orders: 6e-6


def test_a_stopped_payment_is_seen_within_minutes() -> None:
    rng = np.random.default_rng(5)
    n, orders = _reachers(rng, 3.0, 0.5, factor=0.0, onset=100)
    verdict, hold = funnel_scan(MINUTES, n, orders, G, 600.0, 1200.0, windows_minutes=WINDOWS,
                                hold_minutes=HOLD, tolerance=0.1)
    assert verdict.p_value < 1e-4
    assert verdict.window_start_ms == MINUTES[-20]  # the 20-minute window: all stopped
    assert verdict.observed == orders[-20:].sum() == 0
    assert verdict.expected == pytest.approx(0.5 * float(n[-20:] @ G[-20:]))
    assert verdict.statistic < 0
    assert hold.p_value < 1e-4


def test_no_drop_no_alarm_and_cold_baselines_give_none() -> None:
    rng = np.random.default_rng(8)
    n, orders = _reachers(rng, 1.2, 0.5)
    verdict, _ = funnel_scan(MINUTES, n, orders, G, 600.0, 1200.0, windows_minutes=WINDOWS,
                             hold_minutes=HOLD, tolerance=0.1)
    assert verdict.p_value > 0.01
    cold, cold_hold = funnel_scan(MINUTES, n, orders, G, 0.0, 0.0, windows_minutes=WINDOWS,
                                  hold_minutes=HOLD, tolerance=0.1)
    assert cold.p_value == cold_hold.p_value == 1.0
    assert cold.window_start_ms is None


def test_the_funnel_shares_the_campaign_level_by_weight() -> None:
    campaign = ConversionVerdict(0.01, 10.0, 20.0, 0.5, 0, -2.0)
    recent = ConversionVerdict(0.2, 10.0, 12.0, 0.8, 5, -0.5)
    checkout = (ConversionVerdict(0.0003, 1.0, 9.0, 0.1, 7, -3.0),
                ConversionVerdict(0.5, 1.0, 2.0, 0.5, 7, -0.5))
    conv, held = with_funnel(campaign, recent, checkout, 0.3)
    assert conv.p_value == pytest.approx(0.001)  # 0.0003 / 0.3 beats 0.01 / 0.7
    assert held.p_value == pytest.approx(0.2 / 0.7)
    assert (conv.observed, conv.expected, conv.window_start_ms) == (10.0, 20.0, 0)
    cold = (ConversionVerdict(1.0, 0.0, 0.0, math.nan, None, 0.0),) * 2
    assert with_funnel(campaign, recent, cold, 0.3) == (campaign, recent)
    assert with_funnel(campaign, recent, checkout, 0.0) == (campaign, recent)
    assert checkout_fields(checkout[0])["checkout_window_start_ms"] == 7


def test_the_onset_is_the_window_of_the_test_that_decided() -> None:
    """The campaign's window (0) unless a device's test won (its window, 3) or the funnel's
    adjusted p-value counts and is the smaller (its checkout minutes, 7)."""
    campaign = ConversionVerdict(0.01, 10.0, 20.0, 0.5, 0, -2.0)
    funnel = ConversionVerdict(0.0003, 1.0, 9.0, 0.1, 7, -3.0)
    assert onset_of(campaign, None, funnel, 0.3) == 7  # 0.0003 / 0.3 < 0.01 / 0.7
    assert onset_of(campaign, 3, funnel, 0.3) == 7
    weak = ConversionVerdict(0.006, 1.0, 9.0, 0.1, 7, -3.0)  # 0.02 > 0.01 / 0.7
    assert onset_of(campaign, None, weak, 0.3) == 0
    assert onset_of(campaign, 3, weak, 0.3) == 3
    assert onset_of(campaign, 3, funnel, 0.0) == 3  # the funnel's test off
    uncounted = ConversionVerdict(0.3, 1.0, 2.0, 0.5, 7, -0.5)
    assert onset_of(ConversionVerdict(0.9, 1.0, 1.0, 1.0, 0, 0.0), None, uncounted, 0.3) == 0
    cold = ConversionVerdict(1.0, 0.0, 0.0, math.nan, None, 0.0)
    assert onset_of(cold, 3, funnel, 0.3) is None
    assert onset_of(campaign, None, cold, 0.3) == 0


def test_a_drop_only_the_funnel_shows_is_priced_from_its_reachers() -> None:
    funnel = Funnel(horizon_minutes=120, keep_minutes=140, half_life_minutes=1e9)
    funnel.base.add(0, np.array([600.0, 1200.0]))  # q = 0.5
    tick = 200 * MINUTE_MS
    for minute in range(180, 200):
        for _ in range(3):
            funnel.observe_checkout(minute * MINUTE_MS)
    window = tick - 20 * MINUTE_MS
    seen = ConversionVerdict(1e-6, 0.0, 24.0, 0.0, window, -7.0)  # 0 of 24 due: a stop
    params = CampaignParams()
    lost, so_far = price_funnel_drop(funnel, seen, params, tick_ms=tick, aov=80.0, aov_se=1.0)
    # 60 reachers in 20 minutes, half of whom would order: 90 orders an hour at $80
    assert lost.value == pytest.approx(90 * 80.0, rel=0.01)
    assert lost.low < lost.value < lost.high
    assert so_far == pytest.approx(24 * 80.0)
    weak = ConversionVerdict(0.2, 20.0, 24.0, 0.83, window, -0.8)  # does not count: no price
    assert price_funnel_drop(funnel, weak, params, tick_ms=tick, aov=80.0,
                             aov_se=1.0) == (Estimate.zero(), 0.0)


def test_counts_retractions_maturing_and_flags() -> None:
    funnel = Funnel(horizon_minutes=10, keep_minutes=15, half_life_minutes=1e9)
    for minute in range(20):
        for _ in range(4):
            funnel.observe_checkout(minute * MINUTE_MS + 5)
        funnel.observe_order(minute * MINUTE_MS + 5, minute * MINUTE_MS + 125_000)
        funnel.observe_order(minute * MINUTE_MS + 5, minute * MINUTE_MS + 185_000)
    assert funnel.retract_checkout(3 * MINUTE_MS)
    assert funnel.retract_order(3 * MINUTE_MS, 5 * MINUTE_MS)
    funnel.flag(4 * MINUTE_MS, 6 * MINUTE_MS)  # minutes 4 and 5
    funnel.mature(20 * MINUTE_MS)  # learns minutes 0..9 but 4 and 5
    orders, reachers = funnel.base.values  # minutes 0-9 but 4 and 5, one of each retracted
    assert [float(orders), float(reachers)] == pytest.approx([15.0, 31.0])
    assert funnel.last_matured_minute == 9 * MINUTE_MS
    assert min(funnel.counts) == 5 * MINUTE_MS  # keeps 15 minutes
    assert not funnel.retract_checkout(9 * MINUTE_MS)  # matured: left as counted
    funnel.observe_checkout(2 * MINUTE_MS)  # too old: not counted
    assert 2 * MINUTE_MS not in funnel.counts
    minutes, n, seen, completeness = funnel.series(20 * MINUTE_MS)
    assert minutes.tolist() == [m * MINUTE_MS for m in range(10, 20)]
    assert n.tolist() == [4.0] * 10
    assert seen.tolist() == [2.0] * 10
    assert completeness[0] > completeness[-1]
    assert funnel.lag.weight == pytest.approx(39.0, abs=0.2)  # 40 learned (forgetting), 1 retracted


def test_flagged_minutes_are_learned_once_the_change_is_accepted() -> None:
    funnel = Funnel(horizon_minutes=10, keep_minutes=15, half_life_minutes=1e9)
    funnel.observe_checkout(0)
    funnel.flag(0, MINUTE_MS)
    funnel.mature(12 * MINUTE_MS, learn_flagged=True)
    assert funnel.base.values.tolist() == [0.0, 1.0]


class _Shop:
    """A campaign's traffic, delivered in event time: 30 sessions a minute, 10% of which
    reach the checkout a log-normal delay later (median 4 minutes, sigma 1), half of those
    ordering 2 minutes (log-normal, sigma 0.7) after that, none whose checkout comes at or
    after minute ``stop_from``."""

    def __init__(self, model: CampaignModel, stop_from: int, seed: int) -> None:
        self.model, self.stop_from = model, stop_from
        self.rng = np.random.default_rng(seed)
        # (time, kind: 0 checkout / 1 order, session start, checkout)
        self.due: list[tuple[int, int, int, int]] = []

    def minute(self, minute: int) -> CampaignVerdict:
        """Minute ``minute``'s sessions, every fact due before its end, and its tick."""
        t, rng, model = minute * MINUTE_MS, self.rng, self.model
        for s in range(30):
            model.observe_session(t + s, 1500.0, True, device="desktop")
        for _ in range(rng.poisson(3.0)):
            checkout = t + int(min(rng.lognormal(math.log(4.0), 1.0), 25.0) * MINUTE_MS)
            heapq.heappush(self.due, (checkout, 0, t, checkout))
            if checkout < self.stop_from * MINUTE_MS and rng.random() < 0.5:
                order = checkout + int(rng.lognormal(math.log(2.0), 0.7) * MINUTE_MS)
                heapq.heappush(self.due, (order, 1, t, checkout))
        while self.due and self.due[0][0] < t + MINUTE_MS:
            at, kind, start, checkout = heapq.heappop(self.due)
            if kind == 0:
                model.observe_checkout(at)
            else:
                model.observe_order(start, at, 50.0, first_order=True, known_session=True,
                                    lcp_ms=1500.0, device="desktop", checkout_ms=checkout)
        return model.tick("c", t + MINUTE_MS, None)


def test_a_campaign_sees_a_stopped_payment_through_its_funnel_and_keeps_it() -> None:
    model = CampaignModel(CampaignParams())
    shop = _Shop(model, 600, seed=2)
    for minute in range(600):
        shop.minute(minute)
    assert model.checkout_funnel().warm(20.0)
    restored = model_from_state(model_to_state(model))
    assert restored.checkout_funnel().to_state() == model.checkout_funnel().to_state()
    last = [shop.minute(minute) for minute in range(600, 620)][-1]
    assert last.checkout_p_value < 1e-3
    assert last.checkout_observed < last.checkout_expected
    assert last.conversion_loss_per_hour.value > 0  # priced, from the reachers if need be
    assert last.conversion_p_value <= last.checkout_p_value / 0.5 + 1e-12
    old = model_to_state(model)
    del old["fn"]  # a row written before the funnel
    assert model_from_state(old).funnel is None
    assert model_from_state(model_to_state(CampaignModel())).funnel is None


def _first_hot(weight: float, seed: int) -> int:
    """Minutes from a stopped payment to the campaign's first tick under the default level."""
    shop = _Shop(CampaignModel(CampaignParams(funnel_test_weight=weight)), 600, seed)
    for minute in range(600):
        shop.minute(minute)
    for minute in range(600, 660):
        if shop.minute(minute).conversion_p_value < 1.25e-3:
            return minute - 600
    return 60


def test_the_funnel_sees_a_stopped_payment_sooner_than_the_orders_alone() -> None:
    minutes = [(_first_hot(0.5, seed), _first_hot(0.0, seed)) for seed in (4, 5, 6)]
    with_funnel_minutes, alone = (float(np.median(m)) for m in zip(*minutes, strict=True))
    assert with_funnel_minutes + 3 <= alone, minutes
