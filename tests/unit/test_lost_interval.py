"""The 90% interval of what an episode has cost (``revenue_lost_low``, ``_high``)."""

from __future__ import annotations

import pytest

from detectors.episodes import CONVERSION, PERFORMANCE, lost_at_open, lost_so_far
from detectors.incidents import IncidentManager
from detectors.verdicts import Estimate
from tests.unit.test_incidents import at, dropped, run, slow

RISK = Estimate(1200.0, 600.0, 2400.0)  # half to twice


def test_each_minute_carries_the_risks_relative_bounds() -> None:
    before = Estimate(100.0, 50.0, 200.0)
    tick = slow("s", at(0), slow_page_minute_ms=at(-2), slow_page_lost_minute=30.0)
    assert lost_so_far(PERFORMANCE, tick, RISK, before) == Estimate(130.0, 65.0, 260.0)
    older = slow("s", at(0))  # no minute: a minute of the risk per hour
    assert lost_so_far(PERFORMANCE, older, RISK, before) == Estimate(120.0, 60.0, 240.0)


def test_a_faster_minute_keeps_the_bounds_in_order_and_at_zero_or_more() -> None:
    tick = slow("s", at(0), slow_page_minute_ms=at(-2), slow_page_lost_minute=-80.0)
    got = lost_so_far(PERFORMANCE, tick, RISK, Estimate(100.0, 50.0, 120.0))
    assert got.low <= got.value <= got.high
    assert (got.value, got.low) == (20.0, 10.0)
    assert got.high == 20.0  # 120 - 160 is below the figure
    assert lost_so_far(PERFORMANCE, tick, RISK, Estimate(10.0, 5.0, 20.0)) == Estimate.zero()


def test_a_drops_missing_orders_take_its_shortfalls_relative_bounds() -> None:
    tick = dropped("s", at(0), conversion_lost_so_far=900.0)
    shortfall = tick.conversion_loss_per_hour  # 2,300 (1,800-2,900) an hour
    got = lost_so_far(CONVERSION, tick, shortfall, Estimate.zero())
    assert (got.value, got.low, got.high) == pytest.approx(
        (900.0, 900.0 * 1800 / 2300, 900.0 * 2900 / 2300))
    assert lost_at_open(CONVERSION, tick, shortfall, at(-20)) == got


def test_opening_scales_the_whole_interval() -> None:
    tick = slow("s", at(0), slow_page_minute_ms=at(-2))
    assert lost_at_open(PERFORMANCE, tick, RISK, at(-5)) == Estimate(80.0, 40.0, 160.0)


def test_an_episode_stored_before_the_interval_loads_with_its_figure_for_both() -> None:
    manager = IncidentManager()
    run(manager, [[slow("s", at(i))] for i in range(3)])
    state = manager.to_state()
    for episode in state["episodes"].values():
        del episode["lost_low"], episode["lost_high"]
    (alert,) = IncidentManager.from_state(state).open_alerts()
    assert alert.revenue_lost > 0
    assert alert.revenue_lost_low == alert.revenue_lost_high == alert.revenue_lost
    (fresh,) = manager.open_alerts()
    assert fresh.revenue_lost_low < fresh.revenue_lost < fresh.revenue_lost_high


def test_an_episode_stored_by_a_newer_worker_loads_without_what_it_does_not_know() -> None:
    manager = IncidentManager()
    run(manager, [[slow("s", at(i))] for i in range(3)])
    state = manager.to_state()
    for episode in state["episodes"].values():
        episode["a_later_field"] = 1.0
    assert IncidentManager.from_state(state).open_alerts() == manager.open_alerts()
