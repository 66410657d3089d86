"""Checkout facts downstream of the sessionizer: late landings retract and re-send them,
``apply_fact`` hands them to the monitor, the campaign stage counts each once."""

from __future__ import annotations

from typing import Any, cast

import pytest

from detectors.buckets import minute_of
from detectors.monitor import Monitor
from streams.pipeline import apply_fact
from streams.records import FactKind, SessionFact
from streams.sessions import Sessionizer
from streams.stages import CampaignStage, _ident
from tests.unit.test_retract import events, landing, page2
from tests.unit.test_sessions import MIN, SHOP, T0, beacon, order, run
from tests.unit.test_stages import TOPICS, metrics

CHECKOUT = f"{SHOP}/checkout"


def funnel_row(monitor: Monitor, campaign: str, checkout_ms: int) -> list[int]:
    """Reachers at ``checkout_ms``'s minute and their orders, in the campaign's funnel."""
    funnel = monitor.models[campaign].funnel
    row = None if funnel is None else funnel.counts.get(minute_of(checkout_ms))
    return [0, 0] if row is None else row[:2]


def shape(f: SessionFact) -> tuple[object, ...]:
    return f.kind, f.campaign, f.order_id, f.checkout_ms


def sent_with_a_checkout_page() -> tuple[Sessionizer, list[SessionFact]]:
    """Page 2 first (session sent as (none)), a checkout page, an order."""
    sz = Sessionizer()
    facts = run(sz, page2(), beacon("p3", ts=T0 + 2 * MIN, url=CHECKOUT),
                order(ts=T0 + 3 * MIN))
    return sz, facts


# -- late landings ---------------------------------------------------------------------------

def test_a_late_landing_retracts_the_checkout_between_the_orders_and_the_session() -> None:
    sz, facts = sent_with_a_checkout_page()
    reached = T0 + 2 * MIN
    assert [shape(f) for f in facts] == [
        ("session", "(none)", None, None), ("checkout", "(none)", None, reached),
        ("order", "(none)", "o1", reached)]
    assert [shape(f) for f in run(sz, landing())] == [
        ("retract", "(none)", "o1", reached),  # the order, with the checkout it carried
        ("retract", "(none)", None, reached),  # the checkout
        ("retract", "(none)", None, None),  # the session
        ("session", "spring", None, None), ("checkout", "spring", None, reached),
        ("order", "spring", "o1", reached)]


def test_a_re_landed_session_keeps_the_checkout_it_sent() -> None:
    sz = Sessionizer()
    run(sz, page2(), beacon("p3", ts=T0 + 2 * MIN, url=CHECKOUT))
    retracts = run(sz, landing(lcp_ms=None, ttfb_ms=200.0))  # waits for its LCP
    assert [shape(f) for f in retracts] == [("retract", "(none)", None, T0 + 2 * MIN),
                                            ("retract", "(none)", None, None)]
    assert run(sz, beacon("p4", ts=T0 + MIN, url=CHECKOUT, received_at=T0 + 8 * MIN)) == []
    again = run(sz, landing(late_ms=8 * MIN + 500))
    assert [shape(f) for f in again] == [("session", "spring", None, None),
                                         ("checkout", "spring", None, T0 + 2 * MIN)]


def test_the_checkout_retract_survives_a_restore() -> None:
    sz, _ = sent_with_a_checkout_page()
    rows, _ = sz.drain_changes()
    fresh = Sessionizer()
    fresh.restore(rows.items(), sz.snapshot_watermark())
    assert [shape(f) for f in run(fresh, landing())][:3] == [
        ("retract", "(none)", "o1", T0 + 2 * MIN), ("retract", "(none)", None, T0 + 2 * MIN),
        ("retract", "(none)", None, None)]


# -- apply_fact ------------------------------------------------------------------------------

class Recorder:
    """A stand-in monitor that notes every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))
        return record


SESSION = SessionFact("session", "spring", T0, "s1", T0, 1_500.0, device="mobile")
ORDER_FIELDS = {"order_id": "o1", "order_ts_ms": T0 + 3 * MIN, "revenue": 40.0,
                "first_order": True, "checkout_ms": T0 + 2 * MIN}
ORDER_CALL = (("spring", T0, T0 + 3 * MIN, 40.0),
              {"first_order": True, "known_session": True, "lcp_ms": 1_500.0, "commerce": True,
               "device": "mobile", "checkout_ms": T0 + 2 * MIN})


def fact(kind: FactKind, **fields: Any) -> SessionFact:
    return SessionFact(kind, "spring", T0, "s1", T0, 1_500.0, device="mobile", **fields)


@pytest.mark.parametrize(("sent", "call"), [
    pytest.param(fact("checkout", checkout_ms=T0 + 2 * MIN),
                 ("observe_checkout", ("spring", T0, T0 + 2 * MIN), {"device": "mobile"}),
                 id="checkout"),
    pytest.param(fact("order", **ORDER_FIELDS), ("observe_order", *ORDER_CALL), id="order"),
    pytest.param(fact("retract", **ORDER_FIELDS), ("retract_order", *ORDER_CALL),
                 id="retract-order"),
    pytest.param(fact("retract", checkout_ms=T0 + 2 * MIN),
                 ("retract_checkout", ("spring", T0, T0 + 2 * MIN), {"device": "mobile"}),
                 id="retract-checkout"),
    pytest.param(fact("retract"),
                 ("retract_session", ("spring", T0, 1_500.0, True), {"device": "mobile"}),
                 id="retract-session"),
])
def test_apply_fact_calls_the_monitor(sent: SessionFact,
                                      call: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
    monitor = Recorder()
    apply_fact(cast(Monitor, monitor), sent)
    assert monitor.calls == [call]


def test_the_monitor_counts_the_checkout_under_the_campaign_it_ends_in() -> None:
    sz, facts = sent_with_a_checkout_page()
    monitor = Monitor()
    for sent in facts + run(sz, landing()):
        apply_fact(monitor, sent)
    assert funnel_row(monitor, "(none)", T0 + 2 * MIN) == [0, 0]  # reachers, orders
    assert funnel_row(monitor, "spring", T0 + 2 * MIN) == [1, 1]


# -- the campaign stage ----------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "ident"), [
    pytest.param(SESSION, "s1", id="session"),
    pytest.param(fact("checkout", checkout_ms=T0), "c:s1", id="checkout"),
    pytest.param(fact("order", order_id="o1", checkout_ms=T0), "o:o1", id="order"),
    pytest.param(fact("retract"), "r:s1", id="retract-session"),
    pytest.param(fact("retract", checkout_ms=T0), "r:c:s1", id="retract-checkout"),
    pytest.param(fact("retract", order_id="o1", checkout_ms=T0), "r:o:o1", id="retract-order"),
])
def test_each_fact_has_its_own_ident(sent: SessionFact, ident: str) -> None:
    assert _ident(sent) == ident


def test_the_campaign_stage_counts_a_checkout_once() -> None:
    _, facts = sent_with_a_checkout_page()
    stage = CampaignStage(Monitor(), TOPICS, metrics())
    stage.batch(events(facts))
    stage.batch(events(facts))  # sent again (at least once delivery)
    assert stage.repeats == len(facts)
    assert funnel_row(stage.monitor, "(none)", T0 + 2 * MIN) == [1, 1]
    assert "c:s1" in stage.seen[f"(none)|{minute_of(T0 + 30_000)}"]
