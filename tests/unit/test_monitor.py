"""detectors.monitor: ticking by event time, eviction, and the table it keeps."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from detectors.campaign_state import model_to_state
from detectors.monitor import MODEL_KEY, Monitor, MonitorParams
from detectors.verdicts import CampaignVerdict
from tests.unit.test_campaign import MIN, T0, Traffic, drive

Table = dict[str, Any]


def apply(table: Table, changes: dict[str, Any]) -> None:
    """Write drained changes as the Faust table would (orjson; None deletes)."""
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


def test_first_advance_ticks_its_minute_then_one_tick_per_minute() -> None:
    monitor = Monitor()
    monitor.observe_session("b", T0 + 10_000, 1_800.0, True)
    monitor.observe_session("a", T0 + 20_000, 2_400.0, True)
    assert [(v.tick_ms, v.campaign) for v in monitor.advance(T0 + 30_000)] == [
        (T0, "a"), (T0, "b")]
    assert monitor.last_tick_ms == T0
    verdicts = monitor.advance(T0 + 3 * MIN + 59_999)
    assert [(v.tick_ms, v.campaign) for v in verdicts] == [
        (T0 + k * MIN, name) for k in (1, 2, 3) for name in ("a", "b")]
    assert monitor.advance(T0 + 3 * MIN + 59_999) == []


def test_watermark_going_back_ticks_nothing_and_keeps_the_clock() -> None:
    monitor = Monitor()
    monitor.observe_session("a", T0, 1_000.0, True)
    monitor.advance(T0)
    monitor.advance(T0 + 10 * MIN)
    assert monitor.advance(T0 + 2 * MIN) == []
    assert monitor.last_tick_ms == T0 + 10 * MIN
    assert [v.tick_ms for v in monitor.advance(T0 + 11 * MIN)] == [T0 + 11 * MIN]


def test_a_jump_beyond_max_catchup_ticks_only_the_last_minutes() -> None:
    params = MonitorParams(max_catchup_minutes=180, idle_ttl_minutes=30 * 24 * 60)
    monitor = Monitor(params)
    monitor.observe_session("a", T0, 1_000.0, True)
    monitor.observe_session("b", T0, 1_000.0, True)
    monitor.advance(T0)
    target = T0 + 10 * 24 * 60 * MIN  # ten days later
    began = time.perf_counter()
    verdicts = monitor.advance(target)
    elapsed = time.perf_counter() - began
    ticks = sorted({v.tick_ms for v in verdicts})
    assert len(ticks) <= params.max_catchup_minutes + 1
    assert ticks[-1] == target
    assert ticks == list(range(ticks[0], target + 1, MIN))
    assert monitor.last_tick_ms == target
    assert elapsed < 10.0


def test_idle_campaigns_are_evicted_and_all_their_keys_deleted() -> None:
    monitor = Monitor(MonitorParams(idle_ttl_minutes=30))
    busy, idle = Traffic(3, campaign="busy"), Traffic(4, campaign="idle", sessions_per_minute=5)
    table: Table = {}
    for i in range(10):  # both campaigns active for ten minutes
        busy.minute(monitor, T0 + i * MIN)
        idle.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
        apply(table, monitor.drain_changes())
    idle_keys = {k for k in table if k.startswith("idle|")}
    assert f"idle|{MODEL_KEY}" in idle_keys
    assert len(idle_keys) >= 10
    evicted_at = None
    for i in range(10, 60):  # only "busy" from now on
        busy.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
        changes = monitor.drain_changes()
        if evicted_at is None and "idle" not in monitor.models:
            evicted_at = i + 1
            assert idle_keys <= {k for k, v in changes.items() if v is None}
        apply(table, changes)
    assert evicted_at is not None, "an idle campaign was never evicted"
    last_seen = T0 + 10 * MIN  # its last fact was in minute 9 (or an order soon after)
    assert T0 + evicted_at * MIN - last_seen <= (30 + 5) * MIN
    assert not [k for k in table if k.startswith("idle|")]
    assert "busy" in monitor.models
    assert any(k.startswith("busy|") for k in table)


def test_drain_changes_reports_each_key_once_and_then_nothing() -> None:
    monitor = Monitor()
    traffic = Traffic(5)
    drive(monitor, traffic, 0, 3)
    changes = monitor.drain_changes()
    assert f"c|{MODEL_KEY}" in changes
    buckets = [k for k in changes if k != f"c|{MODEL_KEY}"]
    assert buckets
    assert all(k.startswith("c|") and int(k.split("|")[1]) % MIN == 0 for k in buckets)
    assert monitor.drain_changes() == {}


def test_dropped_buckets_are_deleted_from_the_table() -> None:
    monitor = Monitor()
    traffic = Traffic(6, sessions_per_minute=5)
    table: Table = {}
    keep = monitor.params.campaign.keep_minutes
    for i in range(keep + 30):
        traffic.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
        apply(table, monitor.drain_changes())
    minutes = sorted(int(k.split("|")[1]) for k in table if not k.endswith(MODEL_KEY))
    ring = [m for m, _ in monitor.models["c"].ring.span(0, 2**62)]
    assert minutes == sorted(ring)
    assert minutes[0] >= T0 + (keep + 30 - keep) * MIN - MIN


def test_restore_rebuilds_the_learned_state_and_buckets() -> None:
    monitor = Monitor()
    traffic = Traffic(7)
    table: Table = {}
    for i in range(200):
        traffic.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
        apply(table, monitor.drain_changes())
    restored = Monitor()
    restored.restore(reversed(list(table.items())))
    assert restored.last_tick_ms == monitor.last_tick_ms
    assert set(restored.models) == set(monitor.models)
    original, copy = monitor.models["c"], restored.models["c"]
    assert orjson.dumps(model_to_state(copy)) == orjson.dumps(model_to_state(original))
    assert copy.ring.to_state() == original.ring.to_state()


def test_restore_of_an_empty_table_gives_a_fresh_monitor() -> None:
    monitor = Monitor()
    monitor.restore([])
    assert monitor.models == {}
    assert monitor.last_tick_ms is None


def test_restart_before_the_first_tick_loses_no_tick() -> None:
    """A monitor restored right after its first advance ticks the next minute like the
    original does (the clock is derived from the models' last latency minute)."""
    original = Monitor()
    original.observe_session("a", T0 + 5_000, 1_500.0, True)
    assert [v.tick_ms for v in original.advance(T0 + MIN)] == [T0 + MIN]
    table: Table = {}
    apply(table, original.drain_changes())
    restored = Monitor()
    restored.restore(table.items())
    expected = [(v.campaign, v.tick_ms) for v in original.advance(T0 + 2 * MIN)]
    got = [(v.campaign, v.tick_ms) for v in restored.advance(T0 + 2 * MIN)]
    assert expected == [("a", T0 + 2 * MIN)]
    assert got == expected


@pytest.mark.parametrize("cut", [130, 137])
def test_restored_monitor_gives_identical_verdicts_including_slow_page_loss(cut: int) -> None:
    """A worker restart (restore from the table) must not change any later verdict.

    Fails while the site-wide curve (``Monitor.site_fit`` and its refit tick) is not part
    of what ``drain_changes`` writes: the restored monitor refits at once, out of phase with
    the original, and ``slow_page_loss_per_hour`` differs from then on.
    """
    original = Monitor()
    sources = [Traffic(8, campaign="a"), Traffic(9, campaign="b", sessions_per_minute=15)]
    table: Table = {}
    restored: Monitor | None = None
    compared = 0
    for i in range(cut + 30):
        if i == cut:
            restored = Monitor()
            restored.restore(table.items())
        sinks = [original] if restored is None else [original, restored]
        for source in sources:
            source.minute(_Tee(sinks), T0 + i * MIN, lcp_factor=1.6 if i >= cut else 1.0)
        expected = original.advance(T0 + (i + 1) * MIN)
        apply(table, original.drain_changes())
        if restored is not None:
            got = restored.advance(T0 + (i + 1) * MIN)
            restored.drain_changes()
            assert [v.campaign for v in got] == [v.campaign for v in expected]
            for mine, theirs in zip(got, expected, strict=True):
                assert differing_fields(mine, theirs) == [], f"minute {i}, {mine.campaign}"
            compared += len(got)
    assert compared == 60


def differing_fields(a: CampaignVerdict, b: CampaignVerdict) -> list[str]:
    """Names of the verdict fields that differ (NaN equals NaN)."""
    mine, theirs = a.to_state(), b.to_state()
    return [k for k in mine if orjson.dumps(mine[k]) != orjson.dumps(theirs[k])]


class _Tee:
    """Sends every fact to several monitors."""

    def __init__(self, sinks: list[Monitor]) -> None:
        self.sinks = sinks

    def observe_session(self, *args: Any, **kw: Any) -> None:
        for sink in self.sinks:
            sink.observe_session(*args, **kw)

    def observe_order(self, *args: Any, **kw: Any) -> None:
        for sink in self.sinks:
            sink.observe_order(*args, **kw)


def test_campaigns_beyond_the_cap_share_one_model() -> None:
    monitor = Monitor(MonitorParams(max_campaigns=3))
    for i in range(50):
        monitor.observe_session(f"invented-{i}", T0 + i, 1_500.0, True)
    assert sorted(monitor.models) == ["(other)", "invented-0", "invented-1", "invented-2"]
    assert monitor.models["(other)"].ring.get(T0).sessions == 47
    monitor.observe_session("invented-1", T0 + 99, 1_500.0, True)  # tracked ones stay
    assert monitor.models["invented-1"].ring.get(T0).sessions == 2
