"""The ``checkout`` session fact (docs/FUNNEL.md, "Records"): the sessionizer's rules, the
setting, the session state and the fact's JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from streams.errors import InvalidRecord
from streams.facts_codec import decode_facts
from streams.records import SessionFact
from streams.session_state import SessionParams, SessionState
from streams.sessions import Sessionizer
from streams.settings import Settings
from tests.unit.test_sessions import HUMAN_UA, MIN, SHOP, T0, beacon, only, order, run

CHECKOUT = f"{SHOP}/checkout/pay"


def kinds(facts: list[SessionFact]) -> list[tuple[str, str | None, int | None]]:
    return [(f.kind, f.order_id, f.checkout_ms) for f in facts]


def waiting() -> Sessionizer:
    """A session whose landing waits for its LCP (nothing sent yet)."""
    sz = Sessionizer()
    assert run(sz, beacon(ttfb_ms=100.0)) == []
    return sz


def landing_lcp() -> Any:
    return beacon(lcp_ms=1_500.0, received_at=T0 + 50_000)


# -- the sessionizer ----------------------------------------------------------------------

def test_a_checkout_page_after_the_session_fact_sends_the_checkout_fact_once() -> None:
    sz = Sessionizer()
    [session] = run(sz, beacon(lcp_ms=1_500.0, device="mobile"))
    [checkout] = run(sz, beacon("p2", ts=T0 + 3 * MIN, url=CHECKOUT))
    assert checkout == dataclasses.replace(session, kind="checkout", checkout_ms=T0 + 3 * MIN,
                                           watermark_ms=checkout.watermark_ms)
    assert run(sz, beacon("p3", ts=T0 + 4 * MIN, url=CHECKOUT)) == []
    assert run(sz, beacon("p4", ts=T0 + MIN, url=CHECKOUT)) == []  # sent: it stays
    state = sz.session("s1")
    assert state is not None
    assert state.checkout_ms == T0 + 3 * MIN


def test_a_checkout_page_before_the_session_fact_follows_it() -> None:
    sz = waiting()
    assert run(sz, beacon("p2", ts=T0 + 20_000, url=CHECKOUT, lcp_ms=900.0)) == []
    assert kinds(run(sz, landing_lcp())) == [("session", None, None),
                                            ("checkout", None, T0 + 20_000)]


def test_out_of_order_checkout_pages_the_earliest_wins_until_sent() -> None:
    sz = waiting()
    run(sz, beacon("p3", ts=T0 + 40_000, url=CHECKOUT), beacon("p2", ts=T0 + 20_000, url=CHECKOUT),
        beacon("p4", ts=T0 + 30_000, url=CHECKOUT))
    facts = run(sz, landing_lcp())
    assert kinds(facts) == [("session", None, None), ("checkout", None, T0 + 20_000)]
    assert run(sz, beacon("p5", ts=T0 + 10_000, url=CHECKOUT)) == []
    state = sz.session("s1")
    assert state is not None
    assert state.checkout_ms == T0 + 20_000


def test_an_order_before_any_checkout_page_reached_the_checkout_at_its_time() -> None:
    sz = Sessionizer()
    run(sz, beacon(lcp_ms=1_500.0))
    facts = run(sz, order(ts=T0 + 5 * MIN))
    assert kinds(facts) == [("checkout", None, T0 + 5 * MIN), ("order", "o1", T0 + 5 * MIN)]
    assert run(sz, beacon("p2", ts=T0 + 4 * MIN, url=CHECKOUT)) == []  # changes nothing
    assert kinds(run(sz, order("o2", ts=T0 + 6 * MIN))) == [("order", "o2", T0 + 5 * MIN)]


@pytest.mark.parametrize(("pages", "expected"), [
    pytest.param([], T0 - 2_000, id="no-checkout-page-the-first-order"),
    pytest.param([beacon("p2", ts=T0 + 20_000, url=CHECKOUT)], T0 + 20_000, id="checkout-page"),
])
def test_held_orders_are_released_after_the_checkout_fact(pages: list[Any],
                                                           expected: int) -> None:
    sz = Sessionizer()
    assert run(sz, order("o2", ts=T0 - 1_000), order("o1", ts=T0 - 2_000), *pages) == []
    facts = run(sz, beacon(lcp_ms=1_000.0))
    assert kinds(facts) == [("session", None, None), ("checkout", None, expected),
                            ("order", "o1", expected), ("order", "o2", expected)]


def test_orphan_orders_carry_no_checkout() -> None:
    sz = Sessionizer()
    run(sz, order(ts=T0), order("o2", ts=T0 + MIN))
    facts = only(sz.advance(to_ms=T0 + 200 * MIN), "order")
    assert [(f.known_session, f.checkout_ms) for f in facts] == [(False, None), (False, None)]
    assert only(facts, "checkout") == []


@pytest.mark.parametrize("records", [
    pytest.param([beacon(lcp_ms=1e3, user_agent="Googlebot/2.1"),
                  beacon("p2", ts=T0 + MIN, url=CHECKOUT), order()], id="user-agent"),
    pytest.param([beacon(ttfb_ms=100.0, user_agent=HUMAN_UA),
                  beacon("p2", ts=T0 + MIN, url=CHECKOUT, lcp_ms=50.0, ttfb_ms=300.0),
                  order()], id="timing"),
])
def test_bots_send_no_checkout(records: list[Any]) -> None:
    sz = Sessionizer()
    assert run(sz, *records) == []
    assert {f.kind for f in sz.advance(to_ms=T0 + 200 * MIN)} == {"heartbeat"}


def test_a_bot_flagged_after_its_session_fact_sends_no_checkout() -> None:
    sz = Sessionizer()
    run(sz, beacon(lcp_ms=1e3))
    assert run(sz, beacon("p2", ts=T0 + MIN, url=CHECKOUT, lcp_ms=50.0, ttfb_ms=300.0)) == []
    assert run(sz, order()) == []


# -- the setting and the page groups -------------------------------------------------------

def test_checkout_groups_from_the_environment() -> None:
    assert Settings().checkout_groups == ("checkout",)
    settings = Settings.from_env({"REVWATCH_CHECKOUT_GROUPS": "Kasse, pay,"})
    assert settings.checkout_groups == ("Kasse", "pay")
    assert Settings.from_env(settings.to_env()) == settings
    params = SessionParams.from_settings(settings)
    assert params.checkout_groups == frozenset({"kasse", "pay"})
    sz = Sessionizer.from_settings(settings)
    run(sz, beacon(lcp_ms=1e3))
    assert kinds(run(sz, beacon("p2", ts=T0 + MIN, url=f"{SHOP}/KASSE/1"))) == [
        ("checkout", None, T0 + MIN)]


@pytest.mark.parametrize(("url", "page_group", "checkout"), [
    pytest.param(CHECKOUT, None, True, id="first-segment"),
    pytest.param(f"{SHOP}/Checkout?utm_campaign=x", None, True, id="upper-case"),
    pytest.param("/checkout", None, True, id="relative"),
    pytest.param(f"{SHOP}/p/checkout", None, False, id="deeper"),
    pytest.param(f"{SHOP}/checkouts", None, False, id="prefix-only"),
    pytest.param(f"{SHOP}/p/1", "Checkout", True, id="page-group"),
    pytest.param(CHECKOUT, "cart", False, id="page-group-wins"),
])
def test_is_checkout(url: str, page_group: str | None, checkout: bool) -> None:
    assert SessionParams().is_checkout(url, page_group) == checkout
    sz = Sessionizer()
    run(sz, beacon(lcp_ms=1e3))
    facts = run(sz, beacon("p2", ts=T0 + MIN, url=url, page_group=page_group))
    assert len(only(facts, "checkout")) == checkout


# -- the session state -----------------------------------------------------------------------

def test_the_checkout_survives_a_restore_and_old_rows_have_none() -> None:
    sz = waiting()
    run(sz, beacon("p2", ts=T0 + 20_000, url=CHECKOUT))
    rows, _ = sz.drain_changes()
    assert rows["s1"]["co"] == T0 + 20_000
    assert SessionState.from_state(orjson.loads(orjson.dumps(rows["s1"]))) == sz.session("s1")
    old = {k: v for k, v in rows["s1"].items() if k != "co"}  # written before checkouts
    assert SessionState.from_state(old).checkout_ms is None
    restored = Sessionizer()
    restored.restore(rows.items(), sz.snapshot_watermark())
    assert kinds(run(restored, landing_lcp())) == [("session", None, None),
                                                  ("checkout", None, T0 + 20_000)]


# -- the fact's JSON -------------------------------------------------------------------------

def test_checkout_facts_round_trip_and_old_facts_without_the_key_parse() -> None:
    fact = SessionFact("checkout", "spring", T0, "s1", T0, 1_800.0, checkout_ms=T0 + MIN)
    assert SessionFact.from_json(fact.to_json()) == fact
    assert decode_facts(orjson.dumps([fact.as_dict()])) == [fact]
    old = {k: v for k, v in SessionFact("order", "spring", T0, "s1", T0, order_id="o1",
                                        order_ts_ms=T0).as_dict().items() if k != "checkout_ms"}
    assert SessionFact.from_json(orjson.dumps(old)).checkout_ms is None
    [decoded] = decode_facts(orjson.dumps([old]))
    assert isinstance(decoded, SessionFact)
    assert decoded.checkout_ms is None


@pytest.mark.parametrize("change", [
    pytest.param({"checkout_ms": "soon"}, id="string"),
    pytest.param({"checkout_ms": True}, id="bool"),
    pytest.param({"checkout_ms": 1.5}, id="float"),
    pytest.param({"checkout_ms": None}, id="checkout-without-its-time"),
])
def test_a_bad_checkout_ms_is_refused(change: dict[str, object]) -> None:
    data = {**SessionFact("checkout", "spring", T0, "s1", T0, checkout_ms=T0).as_dict(),
            **change}
    with pytest.raises(InvalidRecord, match="not a session fact"):
        SessionFact.from_json(orjson.dumps(data))
    [decoded] = decode_facts(orjson.dumps([data]))
    assert isinstance(decoded, tuple)
    assert isinstance(decoded[1], InvalidRecord)
