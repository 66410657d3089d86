"""streams.pipeline: apply_fact, TickAssembler, and the one-process Pipeline."""

from __future__ import annotations

import math

import pytest

from detectors.monitor import Monitor
from detectors.verdicts import CampaignVerdict, Estimate
from streams.pipeline import Pipeline, TickAssembler, apply_fact, incident_params
from streams.records import Beacon, Order, SessionFact
from streams.settings import Settings

MIN = 60_000
T0 = 1_741_003_200_000
SHOP = "https://shop.example"


def verdict(campaign: str, tick_ms: int) -> CampaignVerdict:
    nan = math.nan
    return CampaignVerdict(
        campaign=campaign, tick_ms=tick_ms, warmed_up=False, sessions_per_minute=0.0,
        sessions_in_window=0, conversion_rate=nan, conversion_rate_baseline=nan,
        lcp_p75_ms=nan, lcp_p75_baseline_ms=nan, latency_regressed=False,
        latency_statistic=0.0, latency_threshold=10.0, latency_started_ms=None,
        latency_shift=nan, conversion_p_value=1.0, conversion_observed=0.0,
        conversion_expected=0.0, conversion_ratio=nan, conversion_window_start_ms=None,
        average_order_value=nan, slow_page_loss_per_hour=Estimate.zero(),
        conversion_loss_per_hour=Estimate.zero())


def test_assembler_releases_a_tick_once_a_later_tick_begins() -> None:
    assembler = TickAssembler()
    assert assembler.add(verdict("a", T0)) == []
    assert assembler.add(verdict("b", T0)) == []
    released = assembler.add(verdict("a", T0 + MIN))
    assert [(t, sorted(v.campaign for v in vs)) for t, vs in released] == [(T0, ["a", "b"])]
    assert assembler.released_ms == T0
    assert list(assembler.pending) == [T0 + MIN]


def test_assembler_releases_in_tick_order_after_a_jump() -> None:
    assembler = TickAssembler()
    for tick in (T0 + MIN, T0):  # T0 arrives late, before anything is released
        assert assembler.add(verdict("a", tick)) == []
    released = assembler.add(verdict("a", T0 + 5 * MIN))
    assert [t for t, _ in released] == [T0, T0 + MIN]
    assert list(assembler.pending) == [T0 + 5 * MIN]


def test_assembler_drops_stragglers_of_released_ticks() -> None:
    assembler = TickAssembler()
    assembler.add(verdict("a", T0))
    assembler.add(verdict("a", T0 + MIN))  # releases T0
    assert assembler.add(verdict("late", T0)) == []
    assert T0 not in assembler.pending
    assert assembler.add(verdict("older", T0 - MIN)) == []
    assert set(assembler.pending) == {T0 + MIN}


def test_assembler_keeps_the_latest_verdict_per_campaign_in_a_tick() -> None:
    assembler = TickAssembler()
    first, second = verdict("a", T0), verdict("a", T0)
    assembler.add(first)
    assembler.add(second)
    (_, verdicts), = assembler.add(verdict("a", T0 + MIN))
    assert len(verdicts) == 1
    assert verdicts[0] is second


def test_assembler_settle_time_holds_ticks_longer() -> None:
    assembler = TickAssembler(settle_ms=3 * MIN)
    for k in range(3):
        assert assembler.add(verdict("a", T0 + k * MIN)) == []
    assert [t for t, _ in assembler.add(verdict("a", T0 + 3 * MIN))] == [T0]


def test_apply_fact_routes_sessions_and_orders_and_ignores_heartbeats() -> None:
    monitor = Monitor()
    apply_fact(monitor, SessionFact("heartbeat", "", T0))
    assert monitor.models == {}
    apply_fact(monitor, SessionFact("session", "spring", T0, "s1", T0 + 5_000, 2_200.0))
    model = monitor.models["spring"]
    bucket = model.ring.get(T0)
    assert bucket is not None
    assert (bucket.sessions, bucket.lcp_n) == (1, 1)
    apply_fact(monitor, SessionFact("order", "spring", T0, "s1", T0 + 5_000, 2_200.0,
                                    order_id="o1", order_ts_ms=T0 + 4 * MIN, revenue=55.0,
                                    first_order=True))
    assert bucket.conversions == 1
    assert model.orders.values.tolist() == pytest.approx([1.0, 55.0, 55.0**2])
    apply_fact(monitor, SessionFact("order", "spring", T0, "s1", T0 + 5_000, 2_200.0,
                                    order_id="o2", order_ts_ms=T0 + 6 * MIN, revenue=20.0,
                                    first_order=False))
    assert bucket.conversions == 1, "a second order is not a second conversion"
    assert model.orders.values[0] == pytest.approx(2.0, rel=1e-3)  # decays slowly


def test_incident_params_come_from_settings() -> None:
    params = incident_params(Settings(false_alarms_per_campaign_day=0.5,
                                      min_revenue_per_hour=7.0, currency="EUR"))
    assert (params.false_alarms_per_campaign_day, params.min_revenue_per_hour,
            params.currency) == (0.5, 7.0, "EUR")


def test_pipeline_ticks_the_monitor_on_heartbeats_of_event_time() -> None:
    pipeline = Pipeline.from_settings(Settings())
    for k in range(6):
        ts = T0 + k * MIN
        pipeline.beacon(Beacon(f"b{k}", f"s{k}", ts, f"{SHOP}/p?utm_campaign=spring",
                               lcp_ms=1_800.0, ttfb_ms=200.0, received_at=ts + 500))
    pipeline.order(Order("o1", "s0", T0 + 3 * MIN, 40.0, received_at=T0 + 3 * MIN + 500))
    assert pipeline.flush() == []
    model = pipeline.monitor.models["spring"]
    assert sum(b.sessions for _, b in model.ring.span(0, 2**62)) == 6
    assert sum(b.conversions for _, b in model.ring.span(0, 2**62)) == 1
    last = pipeline.monitor.last_tick_ms
    assert last is not None
    assert last >= T0 + 4 * MIN, "heartbeats should have ticked the monitor"
    assert last <= pipeline.sessionizer.watermark_ms
