"""detectors.campaign through the Monitor: seeded synthetic traffic with known answers.

Traffic per minute: Poisson sessions, log-normal LCP, conversion probability on a known
curve of LCP, log-normal order lags, gamma order values. The warm-up (six hours) is run
once per seed and copied into each scenario.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
import pytest

from detectors.campaign import PLACE_CONVERSION_P, PRICE_CONVERSION_P, CampaignParams
from detectors.campaign_state import model_from_state, model_to_state
from detectors.episodes import IncidentParams
from detectors.monitor import Monitor
from detectors.verdicts import CampaignVerdict

MIN = 60_000
T0 = 1_741_003_200_000  # a whole hour (UTC)
WARM = 360  # minutes of normal traffic before anything happens
TRUE_P75_MS = 2_000.0 * math.exp(0.6744897501960817 * 0.5)  # of log-normal(2000 ms, 0.5)


class Sink(Protocol):
    def observe_session(self, campaign: str, start_ms: int, lcp_ms: float | None,
                        commerce: bool) -> None: ...

    def observe_order(self, campaign: str, start_ms: int, order_ts_ms: int, revenue: float, *,
                      first_order: bool, known_session: bool, lcp_ms: float | None = None,
                      commerce: bool = True) -> None: ...


@dataclass
class Traffic:
    """One campaign's seeded traffic; ``minute()`` feeds a sink one minute of facts."""

    seed: int
    campaign: str = "c"
    sessions_per_minute: float = 40.0
    lcp_median_ms: float = 2_000.0
    lcp_sigma: float = 0.5
    rate_at_zero: float = 0.08  # conversion probability at LCP 0
    slope_per_s: float = -0.15  # log conversion probability per second of LCP
    lag_median_min: float = 8.0
    lag_sigma: float = 0.8
    aov: float = 80.0
    rng: np.random.Generator = field(init=False)
    pending: list[tuple[int, int, float, float, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def minute(self, sink: Sink, minute_ms: int, *, lcp_factor: float = 1.0,
               conversion_factor: float = 1.0, gap: bool = False) -> int:
        """Sessions starting in ``minute_ms`` and the orders placed in it; returns sessions.

        ``gap``: the sessions happen but are never seen (their orders come as unknown)."""
        r = self.rng
        n = int(r.poisson(self.sessions_per_minute))
        starts = minute_ms + np.sort(r.integers(0, MIN, n))
        lcp = r.lognormal(math.log(self.lcp_median_ms * lcp_factor), self.lcp_sigma, n)
        p = np.minimum(self.rate_at_zero * np.exp(self.slope_per_s * lcp / 1000.0), 1.0)
        converted = r.random(n) < p * conversion_factor
        lags = r.lognormal(math.log(self.lag_median_min), self.lag_sigma, n)
        revenue = r.gamma(4.0, self.aov / 4.0, n)
        for i in range(n):
            if not gap:
                sink.observe_session(self.campaign, int(starts[i]), float(lcp[i]), True)
            if converted[i] and lags[i] < 120:
                order = (int(starts[i] + lags[i] * MIN), int(starts[i]), float(lcp[i]),
                         float(revenue[i]), not gap)
                heapq.heappush(self.pending, order)
        while self.pending and self.pending[0][0] < minute_ms + MIN:
            ts, start, lcp_ms, value, known = heapq.heappop(self.pending)
            sink.observe_order(self.campaign, start, ts, value, first_order=True,
                               known_session=known, lcp_ms=lcp_ms)
        return n


def drive(monitor: Monitor, traffic: Traffic, first: int, last: int,
          **incident: Any) -> list[CampaignVerdict]:
    """Minutes ``first..last-1`` (from T0): feed, then advance the watermark to the minute's end."""
    verdicts: list[CampaignVerdict] = []
    for i in range(first, last):
        traffic.minute(monitor, T0 + i * MIN, **incident)
        verdicts.extend(monitor.advance(T0 + (i + 1) * MIN))
    return verdicts


def warm(seed: int) -> tuple[Monitor, Traffic, list[CampaignVerdict]]:
    """A fresh monitor and traffic after WARM normal minutes, and its verdicts.

    Built anew for each test, not deep-copied: the compiled build's frozen dataclasses
    cannot be deep-copied (mypyc's ``__setstate__`` assigns their fields)."""
    monitor, traffic = Monitor(), Traffic(seed)
    return monitor, traffic, drive(monitor, traffic, 0, WARM)


def minutes_after(verdict: CampaignVerdict, start_ms: int) -> int:
    return (verdict.tick_ms - start_ms) // MIN


def first_where(verdicts: list[CampaignVerdict], pred: Any) -> CampaignVerdict | None:
    return next((v for v in verdicts if pred(v)), None)


INCIDENT = T0 + WARM * MIN


@pytest.mark.parametrize("seed", [1, 2])
def test_steady_traffic_raises_no_alarm_and_learns_the_truth(seed: int) -> None:
    monitor, traffic, warmup = warm(seed)
    verdicts = warmup + drive(monitor, traffic, WARM, WARM + 120)
    warmed = [v for v in verdicts if v.warmed_up]
    assert warmed, "the conversion baseline never warmed up in 8 hours"
    assert minutes_after(warmed[0], T0) <= 150, "warm-up should take about the 2 h horizon"
    assert not any(v.latency_regressed for v in verdicts)
    assert max(v.latency_statistic for v in verdicts) < 0.7 * verdicts[-1].latency_threshold
    assert min(v.conversion_p_value for v in warmed) > 1e-3
    last = verdicts[-1]
    assert last.lcp_p75_baseline_ms == pytest.approx(TRUE_P75_MS, rel=0.05)
    assert last.lcp_p75_ms == pytest.approx(TRUE_P75_MS, rel=0.15)
    true_rate = float(np.mean(0.08 * np.exp(-0.15 * traffic.rng.lognormal(
        math.log(2.0), 0.5, 200_000))))
    assert last.conversion_rate_baseline == pytest.approx(true_rate, rel=0.1)
    assert last.average_order_value == pytest.approx(80.0, rel=0.1)
    assert last.sessions_per_minute == pytest.approx(40.0, rel=0.15)
    assert abs(last.latency_shift) < 0.1


@pytest.mark.parametrize("seed", [1, 2])
def test_lcp_doubling_is_a_latency_regression_within_ten_minutes_and_priced(seed: int) -> None:
    monitor, traffic, _ = warm(seed)
    verdicts = drive(monitor, traffic, WARM, WARM + 30, lcp_factor=2.0)
    hit = first_where(verdicts, lambda v: v.latency_regressed)
    assert hit is not None, "an LCP x2 shift was never flagged"
    assert minutes_after(hit, INCIDENT) <= 10
    assert hit.latency_started_ms is not None
    assert abs(hit.latency_started_ms - INCIDENT) <= 3 * MIN
    later = verdicts[-1]
    assert later.latency_regressed
    assert later.latency_shift == pytest.approx(math.log(2.0), abs=0.15)
    assert later.lcp_p75_ms == pytest.approx(2 * TRUE_P75_MS, rel=0.15)
    for v in (hit, later):
        loss = v.slow_page_loss_per_hour
        assert loss.value > 0
        assert loss.low <= loss.value <= loss.high
    # the truth: 40 sessions/min x (p(at 2 s) - p(at 4 s)) x AOV 80, per hour
    lcp = np.random.default_rng(0).lognormal(math.log(2_000.0), 0.5, 100_000) / 1000.0
    drop = float(np.mean(0.08 * np.exp(-0.15 * lcp)) - np.mean(0.08 * np.exp(-0.15 * 2 * lcp)))
    truth = 40 * 60 * drop * 80.0
    assert later.slow_page_loss_per_hour.value == pytest.approx(truth, rel=0.6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_half_the_conversions_is_a_conversion_drop_within_an_hour(seed: int) -> None:
    monitor, traffic, _ = warm(seed)
    verdicts = drive(monitor, traffic, WARM, WARM + 60, conversion_factor=0.5)
    hit = first_where(verdicts, lambda v: v.conversion_p_value < 1e-4)
    assert hit is not None, (
        f"p never below 1e-4 in 60 min (min {min(v.conversion_p_value for v in verdicts):.2g})")
    assert hit.conversion_loss_per_hour.value > 0
    assert hit.conversion_loss_per_hour.low <= hit.conversion_loss_per_hour.value \
        <= hit.conversion_loss_per_hour.high
    assert hit.conversion_observed < hit.conversion_expected
    assert hit.conversion_window_start_ms is not None
    assert hit.conversion_window_start_ms >= INCIDENT - 10 * MIN
    assert not any(v.latency_regressed for v in verdicts), "LCP did not change"


def test_long_incident_is_not_learned_into_the_baselines() -> None:
    monitor, traffic, warmup = warm(1)
    before = warmup[-1]
    verdicts = drive(monitor, traffic, WARM, WARM + 240, lcp_factor=2.0, conversion_factor=0.6)
    after = verdicts[-1]
    assert after.latency_regressed, "a 4-hour LCP x2 incident stopped being a regression"
    assert after.conversion_p_value < 1e-6
    assert after.lcp_p75_baseline_ms == pytest.approx(before.lcp_p75_baseline_ms, rel=0.05)
    assert after.lcp_p75_baseline_ms == pytest.approx(TRUE_P75_MS, rel=0.05)
    assert after.conversion_rate_baseline == pytest.approx(before.conversion_rate_baseline,
                                                           rel=0.05)
    model = monitor.models["c"]
    incident_buckets = [b for m, b in model.ring.span(INCIDENT + 5 * MIN, after.tick_ms)]
    assert incident_buckets
    assert all(b.flagged for b in incident_buckets)


def test_a_data_gap_is_not_a_conversion_drop() -> None:
    monitor, traffic, _ = warm(1)
    verdicts = drive(monitor, traffic, WARM, WARM + 10, gap=True)
    verdicts += drive(monitor, traffic, WARM + 10, WARM + 130)
    assert min(v.conversion_p_value for v in verdicts) > 1e-3
    assert not any(v.latency_regressed for v in verdicts)
    gap_minutes = list(monitor.models["c"].ring.span(INCIDENT, INCIDENT + 10 * MIN))
    assert gap_minutes == []


def test_facts_of_one_batch_give_the_same_verdict_in_any_order() -> None:
    """A minute whose first session arrives after a later minute's (an LCP-wait session, a
    slower sessionizer) must not change what the detectors say at the next tick."""

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

        def observe_session(self, *args: Any, **kw: Any) -> None:
            self.calls.append(("observe_session", args, kw))

        def observe_order(self, *args: Any, **kw: Any) -> None:
            self.calls.append(("observe_order", args, kw))

    def prepared() -> tuple[Monitor, Traffic]:
        monitor, traffic, _ = warm(1)
        drive(monitor, traffic, WARM, WARM + 1, gap=True)  # minute WARM: nothing seen yet
        return monitor, traffic

    _, traffic = prepared()
    late: tuple[str, tuple[Any, ...], dict[str, Any]] = (
        "observe_session", ("c", INCIDENT + 30_000, 2_100.0, True), {})
    recorder = Recorder()
    traffic.minute(recorder, INCIDENT + MIN)
    verdicts = []
    for calls in ([*recorder.calls, late], [late, *recorder.calls]):
        copied, _ = prepared()  # the same monitor each time (seeded)
        for name, args, kw in calls:
            getattr(copied, name)(*args, **kw)
        verdicts.append([orjson.dumps(v.to_state()) for v in
                         copied.advance(INCIDENT + 2 * MIN)])
        minutes = [m for m, _ in copied.models["c"].ring.span(0, 2**62)]
        assert minutes == sorted(minutes), "minute buckets out of order"
    assert verdicts[0] == verdicts[1]


def test_too_old_sessions_are_ignored_and_unknown_orders_only_count_revenue() -> None:
    monitor = Monitor()
    old = T0 + 70 * MIN
    monitor.observe_session("c", old, 1_500.0, True)
    monitor.advance(T0)
    monitor.advance(T0 + 200 * MIN)  # minute `old` has matured but is still kept
    model = monitor.models["c"]
    assert model.last_matured_minute is not None
    assert model.last_matured_minute >= old
    bucket = model.ring.get(old)
    assert bucket is not None
    assert bucket.sessions == 1
    monitor.observe_session("c", old + 30_000, 1_500.0, True)
    assert bucket.sessions == 1, "a session of a matured minute was counted"
    before = model.orders.values.copy()
    monitor.observe_order("c", T0 + 199 * MIN, T0 + 200 * MIN, 50.0, first_order=True,
                          known_session=False)
    assert model.orders.values[0] == pytest.approx(before[0] + 1)
    assert model.lag.to_state() == Monitor().model("x").lag.to_state(), \
        "an order without a known session must not teach the lag model"


def test_campaign_params_reject_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="horizon"):
        CampaignParams(horizon_minutes=30)
    with pytest.raises(ValueError, match="positive"):
        CampaignParams(latency_threshold=0.0)
    assert CampaignParams().keep_minutes >= CampaignParams().horizon_minutes


@pytest.mark.parametrize("seed", [1, 2])
def test_the_last_hour_says_whether_a_drop_still_goes_on(seed: int) -> None:
    """``conversion_recent_p_value`` (the scan over windows of 10-60 minutes, what holds an
    open conversion episode) sees a drop while it lasts and forgets it once the last hour
    is normal."""
    monitor, traffic, _ = warm(seed)
    during = drive(monitor, traffic, WARM, WARM + 60, conversion_factor=0.5)
    after = drive(monitor, traffic, WARM + 60, WARM + 150)
    assert max(v.conversion_recent_p_value for v in during[30:]) <= 0.05
    settled = after[70:]
    assert min(v.conversion_recent_p_value for v in settled) > 0.05


def _alarmed_within(verdicts: list[CampaignVerdict], index: int, minutes: int) -> bool:
    tick = verdicts[index].tick_ms
    return any(v.latency_regressed and tick - v.tick_ms <= minutes * MIN
               for v in verdicts[:index + 1])


def _shortfall_priced(verdict: CampaignVerdict) -> bool:
    return (verdict.conversion_p_value < PRICE_CONVERSION_P
            and verdict.conversion_window_start_ms is not None)


def test_slow_pages_are_priced_after_an_alarm_and_for_a_shortfall_only() -> None:
    """A CUSUM above 0 is not evidence enough: slow pages are priced from a latency alarm
    until ``price_hold_minutes`` after the last one (what an open episode reads), or when a
    conversion shortfall is priced (which they may explain), and are zero otherwise."""
    hold = CampaignParams().price_hold_minutes
    monitor, traffic, warmup = warm(1)
    incident = drive(monitor, traffic, WARM, WARM + 20, lcp_factor=2.0)
    verdicts = warmup + incident + drive(monitor, traffic, WARM + 20, WARM + 60)
    evidence = [v.latency_statistic > 0 and (_alarmed_within(verdicts, i, hold)
                                             or _shortfall_priced(v))
                for i, v in enumerate(verdicts)]
    priced = [v.slow_page_loss_per_hour.value > 0 for v in verdicts]
    assert not any(p and not e for p, e in zip(priced, evidence, strict=True))
    unpriced_positive = [v for v, e in zip(verdicts, evidence, strict=True)
                         if v.latency_statistic > 0 and not e]
    assert len(unpriced_positive) > 20  # the rule has ticks to leave out (they were priced)
    last_alarm = max(i for i, v in enumerate(verdicts) if v.latency_regressed)
    assert all(priced[last_alarm - 5:last_alarm + 1])  # during the alarm
    after = verdicts[last_alarm + 1]
    assert not after.latency_regressed
    assert after.latency_statistic > 0
    assert after.slow_page_loss_per_hour.value > 0  # held: its slow minutes are still in view


def test_the_price_is_held_as_long_as_an_episode_stays_open() -> None:
    assert CampaignParams().price_hold_minutes >= IncidentParams().quiet_ticks_to_resolve


def test_the_last_alarm_is_stored_and_an_older_row_keeps_pricing() -> None:
    monitor, traffic, _ = warm(2)
    drive(monitor, traffic, WARM, WARM + 20, lcp_factor=2.0)
    model = monitor.models["c"]
    assert model.last_alarm_ms is not None
    assert model.latency.last.statistic > 0
    state = model_to_state(model)
    assert model_from_state(state).last_alarm_ms == model.last_alarm_ms
    del state["la"]  # a row from before the rule: a CUSUM above 0 is priced as before
    older = model_from_state(state)
    assert older.last_alarm_ms == model.latency.last_minute + 3 * MIN
    state["lat"][0] = 0.0  # ... and a CUSUM at 0 has nothing to price
    assert model_from_state(state).last_alarm_ms is None


def test_shortfalls_are_priced_and_placed_by_device_only_when_clear() -> None:
    """A conversion shortfall is priced from p < PRICE_CONVERSION_P on; the conversions by
    device are worked out only from p <= PLACE_CONVERSION_P (the pricing does not wait
    for it: a first gate put it around both, and shortfalls at 0.05 < p < 0.5 lost their
    price and the alerts their ``explained_fraction``)."""
    monitor, traffic, warmup = warm(1)
    verdicts = warmup + drive(monitor, traffic, WARM, WARM + 60, conversion_factor=0.5)
    shortfalls = [v for v in verdicts if _shortfall_priced(v)]
    assert all((v.conversion_devices is not None) == (v.conversion_p_value <= PLACE_CONVERSION_P)
               for v in verdicts)
    faint = [v for v in shortfalls if v.conversion_p_value > PLACE_CONVERSION_P]
    assert any(v.conversion_loss_per_hour.value > 0 for v in faint)
    assert any(v.conversion_devices for v in shortfalls)
