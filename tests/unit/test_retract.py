"""Late landings: ``retract`` facts from the sessionizer through the campaign stage.

A session fact may go out from page 2 before the landing page (the one naming the
campaign) arrives; the sessionizer then retracts what it sent and sends it again under the
true campaign, and every consumer must end with the counts of an on-time stream.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from detectors.buckets import MinuteBucket, minute_of
from detectors.campaign import CampaignModel
from detectors.campaign_state import model_from_state, model_to_state
from detectors.elasticity import N_BINS, lcp_bin
from detectors.lag import LagModel
from detectors.monitor import Monitor
from detectors.sketch import LogHistogram
from detectors.strata import device_stratum
from streams.facts_codec import encode_facts
from streams.pipeline import apply_fact
from streams.records import Beacon, Order, SessionFact
from streams.session_state import SessionState
from streams.sessions import Sessionizer
from streams.stages import CampaignStage
from tests.unit.test_sessions import HUMAN_UA, MIN, SHOP, T0, beacon, order, run
from tests.unit.test_stages import TOPICS, Event, Message, metrics

SPRING = f"{SHOP}/p/1?utm_campaign=spring"


def page2(**kw: Any) -> Beacon:
    return beacon("p2", ts=T0 + 30_000, url=f"{SHOP}/cart", lcp_ms=900.0, **kw)


def landing(url: str = SPRING, late_ms: int = 8 * MIN, **kw: Any) -> Beacon:
    kw.setdefault("lcp_ms", 2_100.0)
    return beacon("p1", ts=T0, url=url, received_at=T0 + late_ms, **kw)


def late_stream() -> list[Beacon | Order]:
    """Page 2 first (session sent as (none)), an order, then the landing 8 minutes late."""
    return [page2(), order(ts=T0 + 2 * MIN), landing(), order("o2", ts=T0 + 9 * MIN)]


def on_time_stream() -> list[Beacon | Order]:
    return [landing(late_ms=1_000), page2(), order(ts=T0 + 2 * MIN), order("o2", ts=T0 + 9 * MIN)]


def shape(f: SessionFact) -> tuple[object, ...]:
    return f.kind, f.campaign, f.start_ms, f.lcp_ms, f.order_id, f.first_order, f.checkout_ms


# -- the sessionizer ----------------------------------------------------------------------

def test_late_landing_retracts_the_session_and_its_orders_and_sends_them_again() -> None:
    facts = run(Sessionizer(), *late_stream())
    checkout = T0 + 2 * MIN  # the order's: no checkout page came
    assert [shape(f) for f in facts] == [
        ("session", "(none)", T0 + 30_000, 900.0, None, False, None),
        ("checkout", "(none)", T0 + 30_000, 900.0, None, False, checkout),
        ("order", "(none)", T0 + 30_000, 900.0, "o1", True, checkout),
        # orders first, then the checkout, then the session
        ("retract", "(none)", T0 + 30_000, 900.0, "o1", True, checkout),
        ("retract", "(none)", T0 + 30_000, 900.0, None, False, checkout),
        ("retract", "(none)", T0 + 30_000, 900.0, None, False, None),
        ("session", "spring", T0, 2_100.0, None, False, None),
        ("checkout", "spring", T0, 2_100.0, None, False, checkout),
        ("order", "spring", T0, 2_100.0, "o1", True, checkout),
        ("order", "spring", T0, 2_100.0, "o2", False, checkout)]
    retracted_order = facts[2]
    assert (retracted_order.revenue, retracted_order.order_ts_ms) == (40.0, T0 + 2 * MIN)


def test_late_landing_net_facts_equal_the_on_time_facts() -> None:
    def net(facts: list[SessionFact]) -> list[tuple[object, ...]]:
        cancelled = {(f.campaign, f.order_id) for f in facts if f.kind == "retract"}
        return sorted(shape(f) for f in facts
                      if f.kind != "retract" and (f.campaign, f.order_id) not in cancelled)

    assert net(run(Sessionizer(), *late_stream())) == net(run(Sessionizer(), *on_time_stream()))


@pytest.mark.parametrize("late", [
    landing(url=f"{SHOP}/p/1"),  # names no campaign
    landing(url=f"{SHOP}/p/1?utm_campaign=summer"),  # names the campaign already sent
    landing(lcp_ms=100.0, ttfb_ms=300.0),  # a timing bot
    landing(user_agent="Googlebot/2.1"),  # a bot user agent
])
def test_no_retract_for_same_campaign_no_campaign_or_bots(late: Beacon) -> None:
    sz = Sessionizer()
    first = run(sz, beacon("p2", ts=T0 + 30_000, url=f"{SHOP}/cart?utm_campaign=summer",
                           lcp_ms=900.0, user_agent=HUMAN_UA))
    assert [f.campaign for f in first] == ["summer"]
    assert run(sz, late) == []
    st = sz.session("s1")
    assert st is not None
    assert st.start_ms == T0 + 30_000  # a start change alone is left


def test_a_repeated_late_landing_retracts_once() -> None:
    sz = Sessionizer()
    facts = run(sz, *late_stream())
    assert run(sz, landing(late_ms=9 * MIN)) == []  # the duplicate beacon
    assert sz.stats.retracted_sessions == 1
    assert sum(f.kind == "retract" for f in facts) == 3  # order, checkout, session


def test_late_landing_without_its_lcp_is_sent_when_the_lcp_comes_or_is_due() -> None:
    sz = Sessionizer()
    run(sz, page2())  # its wait (till T0 + 90 s) is still queued when the landing comes
    retracts = run(sz, landing(lcp_ms=None, ttfb_ms=200.0))
    assert [f.kind for f in retracts] == ["retract"]  # the new fact waits for the LCP
    again = run(sz, landing(late_ms=8 * MIN + 500))
    assert [shape(f) for f in again] == [("session", "spring", T0, 2_100.0, None, False, None)]
    sz = Sessionizer()
    run(sz, page2())
    run(sz, landing(lcp_ms=None, ttfb_ms=200.0))
    rows, _ = sz.drain_changes()
    sz = Sessionizer()  # the wait survives a restore
    sz.restore(rows.items(), T0 + 8 * MIN - 30_000)
    arrived = sz.watermark_ms
    assert [f.kind for f in sz.advance(to_ms=arrived + MIN - 1_000)] == ["heartbeat"]
    due = sz.advance(to_ms=arrived + MIN)
    assert [shape(f) for f in due if f.kind == "session"] == [
        ("session", "spring", T0, None, None, False, None)]


def test_sent_orders_survive_a_restore_so_the_retract_still_names_them() -> None:
    sz = Sessionizer()
    run(sz, page2(), order(ts=T0 + 2 * MIN))
    rows, _ = sz.drain_changes()
    assert rows["s1"]["so"] == ["o1", T0 + 2 * MIN, 40.0]
    fresh = Sessionizer()
    fresh.restore(rows.items(), sz.snapshot_watermark())
    facts = run(fresh, landing())
    assert [(f.kind, f.order_id, f.checkout_ms) for f in facts] == [
        ("retract", "o1", T0 + 2 * MIN), ("retract", None, T0 + 2 * MIN),
        ("retract", None, None), ("session", None, None), ("checkout", None, T0 + 2 * MIN),
        ("order", "o1", T0 + 2 * MIN)]


def test_a_converted_row_from_before_retracts_is_left_alone() -> None:
    sz = Sessionizer()
    run(sz, page2(), order(ts=T0 + 2 * MIN))
    rows, _ = sz.drain_changes()
    old = {k: v for k, v in rows["s1"].items() if k != "so"}  # written without "so"
    assert SessionState.from_state(old).sent == []
    fresh = Sessionizer()
    fresh.restore([("s1", old)], sz.snapshot_watermark())
    assert run(fresh, landing()) == []  # its orders are unknown: retracting would lose them


# -- the detectors --------------------------------------------------------------------------

def buckets_of(monitor: Monitor) -> dict[tuple[str, int], list[object]]:
    return {(name, minute): bucket.to_state() for name, model in monitor.models.items()
            for minute, bucket in model.ring.span(0, 1 << 62) if bucket.sessions}


def fed(facts: list[SessionFact]) -> Monitor:
    monitor = Monitor()
    for fact in facts:
        apply_fact(monitor, fact)
    return monitor


def test_bucket_counts_after_retract_equal_the_on_time_counts() -> None:
    late = fed(run(Sessionizer(), *late_stream()))
    on_time = fed(run(Sessionizer(), *on_time_stream()))
    assert buckets_of(late) == buckets_of(on_time)
    assert set(buckets_of(late)) == {("spring", T0)}
    none = late.models["(none)"]
    assert [b.sessions for _, b in none.ring.span(0, 1 << 62)] == [0]
    assert none.orders.values == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    spring, spring_on_time = late.models["spring"], on_time.models["spring"]
    assert spring.orders.values == pytest.approx(spring_on_time.orders.values)
    assert spring.lag.pmf() == pytest.approx(spring_on_time.lag.pmf())


@pytest.mark.parametrize("device", ["mobile", "tablet", None])
def test_a_late_landing_of_a_device_moves_its_curve_counts_in_its_stratum(
        device: str | None) -> None:
    def stream(late_ms: int) -> list[Beacon | Order]:
        kw = {"device": device}
        first = [landing(late_ms=late_ms, **kw), page2(**kw)]
        return [*(first if late_ms < MIN else first[::-1]), order(ts=T0 + 2 * MIN)]

    late, on_time = fed(run(Sessionizer(), *stream(8 * MIN))), \
        fed(run(Sessionizer(), *stream(1_000)))
    assert buckets_of(late) == buckets_of(on_time)
    bucket = late.models["spring"].ring.get(T0)
    assert bucket is not None
    key = lcp_bin(2_100.0) + N_BINS * device_stratum(device)
    assert (bucket.commerce_sessions, bucket.commerce_conversions) == ({key: 1}, {key: 1})
    none = late.models["(none)"].ring.get(minute_of(T0 + 30_000))
    assert none is not None
    assert (none.commerce_sessions, none.commerce_conversions) == ({}, {})


def test_a_retract_takes_the_session_from_its_own_stratum_only() -> None:
    model = CampaignModel()
    for device in ("desktop", "mobile"):
        model.observe_session(T0, 2_000.0, True, device=device)
        model.observe_order(T0, T0 + MIN, 40.0, first_order=True, known_session=True,
                            lcp_ms=2_000.0, device=device)
    assert model.retract_order(T0, T0 + MIN, 40.0, first_order=True, known_session=True,
                               lcp_ms=2_000.0, device="mobile")
    assert model.retract_session(T0, 2_000.0, True, device="mobile")
    bucket = model.ring.get(T0)
    assert bucket is not None
    desktop = lcp_bin(2_000.0) + N_BINS * device_stratum("desktop")
    assert (bucket.commerce_sessions, bucket.commerce_conversions) == ({desktop: 1},
                                                                      {desktop: 1})
    assert bucket.sessions == bucket.conversions == 1


def test_a_retract_leaves_a_matured_bucket_as_counted() -> None:
    model = CampaignModel()
    model.observe_session(T0, 2_000.0, True)
    model.observe_order(T0, T0 + MIN, 40.0, first_order=True, known_session=True, lcp_ms=2_000.0)
    model.tick("spring", T0 + 200 * MIN, None)  # T0 has matured (and been dropped)
    assert not model.retract_session(T0, 2_000.0, True)
    assert not model.retract_order(T0, T0 + MIN, 40.0, first_order=True, known_session=True)
    fresh = CampaignModel()
    assert not fresh.retract_session(T0, 2_000.0, True)  # never counted: nothing to undo
    assert len(fresh.ring) == 0


def test_a_retract_in_a_passed_minute_without_a_checkpoint_keeps_the_log_sums() -> None:
    # the tick passes minute T0 without folding it in (the baseline is cold), so there is
    # nothing to re-score: the log sums stay as they were when the test passed the minute
    def bucket_after(tick: bool) -> MinuteBucket:
        model = CampaignModel()
        for lcp in (1_500.0, 4_000.0):
            model.observe_session(T0, lcp, True)
        if tick:
            model.tick("spring", T0 + 4 * MIN, None)  # passes minute T0
            assert T0 not in model.latency.checkpoints
        assert model.retract_session(T0, 4_000.0, True)
        found = model.ring.get(T0)
        assert found is not None
        return found

    unscored, scored = bucket_after(tick=False), bucket_after(tick=True)
    assert (unscored.sessions, unscored.lcp_n, unscored.sketch.count) == (1, 1, 1)
    assert unscored.sum_log == pytest.approx(math.log(1_500.0))
    assert (scored.sessions, scored.lcp_n, scored.sketch.count) == (1, 2, 1)
    assert scored.sum_log == pytest.approx(math.log(1_500.0) + math.log(4_000.0))
    assert scored.commerce_sessions == unscored.commerce_sessions


def test_bucket_remove_undoes_add_exactly() -> None:
    bucket, other = MinuteBucket(), MinuteBucket()
    for lcp in (1_200.0, 2_500.0, None):
        bucket.add_session(lcp, True)
        other.add_session(lcp, True)
    other.add_conversion(2_500.0, True)
    bucket.add_session(3_100.0, True)
    bucket.add_conversion(3_100.0, True)
    bucket.add_conversion(2_500.0, True)
    bucket.remove_conversion(3_100.0, True)
    bucket.remove_session(3_100.0, True)
    assert (bucket.sessions, bucket.lcp_n, bucket.conversions) == (3, 2, 1)
    assert bucket.sketch == other.sketch
    assert (bucket.commerce_sessions, bucket.commerce_conversions) == \
        (other.commerce_sessions, other.commerce_conversions)
    assert bucket.sum_log == pytest.approx(other.sum_log)
    emptied = MinuteBucket()
    emptied.add_session(1_700.0, True)
    emptied.remove_session(1_700.0, True)
    emptied.remove_session(1_700.0, True)  # never below zero
    assert emptied.to_state() == MinuteBucket().to_state()


def test_sketch_discard_and_lag_revert() -> None:
    hist = LogHistogram()
    hist.add(900.0, 2)
    assert hist.discard(905.0)  # same bucket (2% accuracy)
    assert not hist.discard(5_000.0)
    assert hist.count == 1
    lag, ref = LagModel(), LagModel()
    for minutes in (3.0, 7.5, 200.0):
        lag.update(minutes)
    ref.update(3.0)
    lag.revert(7.5)
    lag.revert(200.0)
    assert lag.beyond_horizon == ref.beyond_horizon == 0
    assert lag.pmf() == pytest.approx(ref.pmf(), rel=1e-3)


# -- the campaign stage ---------------------------------------------------------------------

def events(facts: list[SessionFact]) -> list[Event]:
    return [Event(value, Message("facts", 0)) for value in encode_facts(facts)]


def test_campaign_stage_applies_each_retract_once_even_when_facts_come_again() -> None:
    facts = run(Sessionizer(), *late_stream())
    stage = CampaignStage(Monitor(), TOPICS, metrics())
    stage.batch(events(facts))
    once = buckets_of(stage.monitor)
    stage.batch(events(facts))  # everything re-sent, retracts included
    assert buckets_of(stage.monitor) == once == buckets_of(fed(run(Sessionizer(),
                                                                   *on_time_stream())))
    assert stage.repeats == len(facts)
    assert stage.seen[f"(none)|{minute_of(T0 + 30_000)}"] == {
        "s1", "c:s1", "o:o1", "r:s1", "r:c:s1", "r:o:o1"}


def test_campaign_stage_recognises_a_retract_again_after_a_restore() -> None:
    facts = run(Sessionizer(), *late_stream())
    stage = CampaignStage(Monitor(), TOPICS, metrics())
    changes = stage.batch(events(facts)).changes
    restored = CampaignStage(Monitor(), TOPICS, metrics())
    restored.restore((k, v) for k, v in changes.items() if v is not None)
    restored.batch(events([f for f in facts if f.kind == "retract"]))
    assert buckets_of(restored.monitor) == buckets_of(stage.monitor)
    assert restored.repeats == 3


def test_campaign_stage_never_decrements_a_bucket_that_did_not_count_the_session() -> None:
    facts = run(Sessionizer(), *late_stream())
    retracts = [f for f in facts if f.kind == "retract"]
    stage = CampaignStage(Monitor(), TOPICS, metrics())
    other = dataclasses.replace(facts[0], session_id="s9")  # another session, same bucket
    stage.batch(events([other, *retracts]))
    assert stage.unproven_retracts == 3
    bucket = stage.monitor.models["(none)"].ring.get(minute_of(T0 + 30_000))
    assert bucket is not None
    assert bucket.sessions == 1


def test_campaign_stage_a_retract_read_before_its_fact_still_cancels_it() -> None:
    """Facts and retracts net out in either order: a fact that reaches the stage after its
    retract (sent late by a worker the group had already replaced) is skipped, not counted."""
    facts = run(Sessionizer(), *late_stream())
    retracts = [f for f in facts if f.kind == "retract"]
    cancelled = [f for f in facts if f.campaign == "(none)" and f.kind != "retract"]
    rest = [f for f in facts if f.campaign != "(none)"]
    stage = CampaignStage(Monitor(), TOPICS, metrics())
    stage.batch(events([*retracts, *rest]))
    stage.batch(events(cancelled))
    assert buckets_of(stage.monitor) == buckets_of(fed(run(Sessionizer(), *on_time_stream())))
    assert stage.repeats == len(cancelled)
    assert stage.seen[f"(none)|{minute_of(T0 + 30_000)}"] == {"r:s1", "r:c:s1", "r:o:o1"}


def _warm_model(rng: np.random.Generator, minutes: int = 90) -> CampaignModel:
    """A campaign of 12 sessions a minute with ordinary LCPs, ticked at each minute's end."""
    model = CampaignModel()
    for i in range(minutes):
        for lcp in rng.lognormal(math.log(2_000.0), 0.4, 12):
            model.observe_session(T0 + i * MIN + 1_000, float(lcp), True)
        model.tick("c", T0 + (i + 1) * MIN, None)
    return model


def _slow_minute(with_misattributed: bool) -> tuple[CampaignModel, int]:
    """A warm model whose minute 90 holds ordinary sessions and, if asked, 6 slow ones that
    belong to another campaign; the tick at minute 94 has scored minute 90."""
    rng = np.random.default_rng(5)
    model = _warm_model(rng)
    minute = T0 + 90 * MIN
    for lcp in rng.lognormal(math.log(2_000.0), 0.4, 12):
        model.observe_session(minute + 1_000, float(lcp), True)
    if with_misattributed:
        for _ in range(6):
            model.observe_session(minute + 2_000, 9_000.0, True)
    for i in range(91, 95):
        model.tick("c", T0 + i * MIN, None)
    assert model.latency.last_minute is not None
    assert model.latency.last_minute >= minute
    return model, minute


def test_a_retract_into_a_scored_minute_is_taken_out_of_the_latency_test() -> None:
    model, minute = _slow_minute(with_misattributed=True)
    clean, _ = _slow_minute(with_misattributed=False)
    # the slow sessions scored
    assert model.latency.cusum.statistic > clean.latency.cusum.statistic + 1.0
    for _ in range(6):
        assert model.retract_session(minute + 2_000, 9_000.0, True)
    restored = model_from_state(model_to_state(model))  # a worker restarting in between
    restored.ring = model.ring
    verdicts = [m.tick("c", T0 + 95 * MIN, None) for m in (model, clean, restored)]
    assert model.latency.cusum.statistic == pytest.approx(clean.latency.cusum.statistic, abs=0.05)
    assert verdicts[0].latency_statistic == pytest.approx(verdicts[1].latency_statistic, abs=0.05)
    assert repr(verdicts[2].to_state()) == repr(verdicts[0].to_state())  # nan-safe
    bucket = model.ring.get(minute)
    assert bucket is not None
    assert bucket.lcp_n == 12  # the log sums follow the retract


def test_a_retract_into_a_learned_minute_leaves_the_test_as_scored() -> None:
    model, minute = _slow_minute(with_misattributed=True)
    twin, _ = _slow_minute(with_misattributed=True)
    for m in (model, twin):
        for i in range(95, 112):  # minute 90 is learned 15 minutes after it was scored
            m.tick("c", T0 + i * MIN, None)
    assert model.retract_session(minute + 2_000, 9_000.0, True)
    assert model.latency.rescore_from is None
    assert minute not in model.latency.checkpoints
    for m in (model, twin):
        m.tick("c", T0 + 112 * MIN, None)
    bucket = model.ring.get(minute)
    assert bucket is not None
    assert bucket.lcp_n == 18  # kept as scored and learned
    assert model.latency.cusum.position() == twin.latency.cusum.position()


def test_a_pending_re_score_is_stored_for_a_restarted_worker() -> None:
    model, minute = _slow_minute(with_misattributed=True)
    monitor = Monitor()
    monitor.models["c"] = model
    monitor.drain_changes()
    assert monitor.retract_session("c", minute + 2_000, 9_000.0, True)
    stored = monitor.drain_changes()["c|model"]
    assert stored["rf"] == minute
    assert [row[0] for row in stored["ck"]] == sorted(model.latency.checkpoints)
