"""streams.sessions / streams.bots: scripted sessions whose facts are known in advance."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson
import pytest

from streams.bots import is_bot_user_agent
from streams.records import Beacon, Order, SessionFact
from streams.sessions import NO_WATERMARK, Sessionizer, SessionParams, SessionState
from streams.settings import Settings

T0 = 1_700_000_040_000  # a whole minute
MIN = 60_000
SHOP = "https://shop.example"
HUMAN_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0.0.0 Safari/537.36"


def beacon(bid: str = "p1", sid: str = "s1", ts: int = T0, url: str = f"{SHOP}/p/1",
           **kw: Any) -> Beacon:
    kw.setdefault("received_at", ts + 1_000)
    return Beacon(bid, sid, ts, url, **kw)


def order(oid: str = "o1", sid: str = "s1", ts: int = T0 + 5 * MIN, revenue: float = 40.0,
          **kw: Any) -> Order:
    return Order(oid, sid, ts, revenue, **kw)


def run(sz: Sessionizer, *records: Beacon | Order) -> list[SessionFact]:
    facts: list[SessionFact] = []
    for record in records:
        observe = sz.observe_beacon if isinstance(record, Beacon) else sz.observe_order
        facts += observe(record)  # type: ignore[arg-type]
    return [f for f in facts + sz.advance() if f.kind != "heartbeat"]


def only(facts: list[SessionFact], kind: str) -> list[SessionFact]:
    return [f for f in facts if f.kind == kind]


def test_utm_on_landing_carried_to_session_and_orders() -> None:
    sz = Sessionizer()
    facts = run(sz, beacon(url=f"{SHOP}/p/1?utm_campaign=Spring%20Sale", lcp_ms=2100.0,
                           ttfb_ms=300.0, device="mobile"),
                beacon("p2", ts=T0 + 30_000, url=f"{SHOP}/cart", lcp_ms=900.0),
                order(ts=T0 + 2 * MIN))
    session, checkout, placed = facts
    assert (session.kind, session.campaign, session.start_ms) == ("session", "Spring Sale", T0)
    assert (session.lcp_ms, session.commerce, session.device) == (2100.0, True, "mobile")
    assert checkout == dataclasses.replace(session, kind="checkout", checkout_ms=T0 + 2 * MIN,
                                           watermark_ms=placed.watermark_ms)
    assert placed.checkout_ms == T0 + 2 * MIN
    assert (placed.kind, placed.campaign, placed.first_order) == ("order", "Spring Sale", True)
    assert (placed.start_ms, placed.order_ts_ms, placed.revenue) == (T0, T0 + 2 * MIN, 40.0)
    assert placed.lcp_ms == 2100.0
    assert placed.known_session


@pytest.mark.parametrize(("kw", "url", "expected"), [
    pytest.param({"campaign": "email-42"}, f"{SHOP}/?utm_campaign=spring", "email-42",
                 id="field-overrides-url"),
    pytest.param({}, f"{SHOP}/?utm_source=x&utm_campaign=+spring+", "spring", id="url"),
    pytest.param({}, f"{SHOP}/?utm_source=news", "(none)", id="no-utm"),
    pytest.param({"campaign": "  "}, f"{SHOP}/p", "(none)", id="blank-field"),
    pytest.param({}, f"{SHOP}/?utm_campaign=" + "x" * 150, "x" * 100, id="capped-at-100"),
])
def test_campaign_naming(kw: dict[str, Any], url: str, expected: str) -> None:
    facts = run(Sessionizer(), beacon(url=url, lcp_ms=1500.0, **kw))
    assert [f.campaign for f in facts] == [expected]


def test_later_page_names_campaign_while_waiting_for_lcp() -> None:
    sz = Sessionizer()
    facts = run(sz, beacon(ttfb_ms=200.0),
                beacon("p2", ts=T0 + 20_000, url=f"{SHOP}/p/2?utm_campaign=late"))
    assert facts == []
    [session] = only(sz.advance(to_ms=T0 + MIN), "session")
    assert (session.campaign, session.lcp_ms, session.start_ms) == ("late", None, T0)


def test_out_of_order_earlier_page_becomes_landing_and_names_campaign() -> None:
    sz = Sessionizer()
    assert run(sz, beacon("p2", ts=T0 + 20_000, url=f"{SHOP}/help/faq?utm_campaign=b")) == []
    [session] = run(sz, beacon("p1", ts=T0, url=f"{SHOP}/p/1?utm_campaign=a", lcp_ms=1800.0))
    assert (session.campaign, session.start_ms, session.lcp_ms) == ("a", T0, 1800.0)
    assert session.commerce  # the landing is /p/1, not /help/


def test_lcp_wait_emits_once_with_lcp_none() -> None:
    sz = Sessionizer()
    assert run(sz, beacon(ttfb_ms=250.0)) == []
    assert only(sz.advance(to_ms=T0 + MIN - 1), "session") == []
    [session] = only(sz.advance(to_ms=T0 + MIN), "session")
    assert session.lcp_ms is None
    assert session.watermark_ms == T0 + MIN
    assert run(sz, beacon(lcp_ms=3000.0, received_at=T0 + MIN + 5_000)) == []


def test_web_vitals_records_merge_into_one_page_view() -> None:
    sz = Sessionizer()
    facts = run(sz, beacon(ttfb_ms=300.0), beacon(fcp_ms=900.0), beacon(lcp_ms=2500.0),
                beacon(inp_ms=120.0), beacon(cls=0.05), beacon(lcp_ms=2600.0))
    [session] = facts
    assert session.lcp_ms == 2500.0  # the fact is out at the first LCP
    state = sz.session("s1")
    assert state is not None
    assert state.pages["p1"][1:] == [2600.0, 900.0, 300.0, 120.0, None, 0.05, True]
    assert sz.stats.duplicate_beacons == 0
    assert sz.stats.sessions_started == 1


def test_exact_duplicate_beacons_and_orders_count_once() -> None:
    sz = Sessionizer()
    record = beacon(lcp_ms=2000.0, ttfb_ms=100.0)
    facts = run(sz, record, record, order("o1"), order("o1"), record, order("o2", revenue=5.0))
    assert [(f.kind, f.order_id, f.first_order) for f in facts] == [
        ("session", None, False), ("checkout", None, False), ("order", "o1", True),
        ("order", "o2", False)]
    assert (sz.stats.duplicate_beacons, sz.stats.duplicate_orders) == (2, 1)
    state = sz.session("s1")
    assert state is not None
    assert (state.converted, state.revenue) == (True, 45.0)


def test_order_before_beacons_follows_the_session_fact() -> None:
    sz = Sessionizer()
    assert run(sz, order("o2", ts=T0 - 1_000, revenue=7.0), order("o1", ts=T0 - 2_000)) == []
    facts = run(sz, beacon(url=f"{SHOP}/?utm_campaign=c", lcp_ms=1000.0))
    assert [(f.kind, f.order_id, f.first_order, f.campaign) for f in facts] == [
        ("session", None, False, "c"), ("checkout", None, False, "c"),
        ("order", "o1", True, "c"), ("order", "o2", False, "c")]


def test_order_waits_for_the_lcp_deadline() -> None:
    sz = Sessionizer()
    assert run(sz, beacon(ttfb_ms=100.0), order(ts=T0 + 10_000)) == []
    facts = sz.advance(to_ms=T0 + MIN)
    assert [(f.kind, f.first_order) for f in facts if f.kind != "heartbeat"] == [
        ("session", False), ("checkout", False), ("order", True)]


def test_late_order_within_grace_counts_then_session_expires() -> None:
    sz = Sessionizer()
    run(sz, beacon(lcp_ms=1000.0))
    sz.advance(to_ms=T0 + 85 * MIN)
    _, placed = run(sz, order(ts=T0 + 85 * MIN, received_at=T0 + 85 * MIN))  # checkout first
    assert (placed.first_order, placed.known_session, placed.start_ms) == (True, True, T0)
    assert len(sz) == 1
    sz.advance(to_ms=T0 + 85 * MIN + 90 * MIN + 1)
    assert len(sz) == 0
    assert sz.stats.expired_sessions == 1


def test_expiry_follows_last_activity_not_creation() -> None:
    sz = Sessionizer()
    run(sz, beacon(sid="old", lcp_ms=1e3), beacon(sid="new", ts=T0 + 20 * MIN, lcp_ms=1e3))
    run(sz, order(sid="old", ts=T0 + 50 * MIN))
    sz.advance(to_ms=T0 + 20 * MIN + 91 * MIN)
    assert (sz.session("old") is not None, sz.session("new") is None) == (True, True)
    assert sz.drain_changes()[1] == ["new"]


def test_orders_without_beacons_emit_as_unknown_on_expiry() -> None:
    sz = Sessionizer()
    run(sz, order("o1", ts=T0, campaign="promo"), order("o2", ts=T0 + 1, revenue=3.0))
    facts = only(sz.advance(to_ms=T0 + 90 * MIN + 30_000), "order")
    assert [(f.order_id, f.campaign, f.start_ms, f.known_session, f.first_order)
            for f in facts] == [("o1", "promo", T0, False, True),
                                ("o2", "(none)", T0 + 1, False, False)]
    assert sz.stats.orphan_orders == 2


def test_beacon_after_expiry_starts_a_new_session() -> None:
    sz = Sessionizer()
    run(sz, beacon(lcp_ms=900.0))
    later = T0 + 3 * 60 * MIN
    sz.advance(to_ms=later)
    [session] = run(sz, beacon("p9", ts=later, lcp_ms=950.0))
    assert (session.start_ms, sz.stats.sessions_started) == (later, 2)


def test_late_record_never_creates_a_session_but_merges_into_a_live_one() -> None:
    sz = Sessionizer()
    run(sz, beacon("p1", sid="live", ttfb_ms=100.0))
    sz.advance(to_ms=T0 + 40 * MIN)
    old = T0 + 40 * MIN - 31 * MIN
    assert run(sz, beacon("x", sid="new", ts=old, lcp_ms=800.0)) == []
    assert sz.session("new") is None
    run(sz, beacon("p1", sid="live", ts=T0, lcp_ms=1200.0))
    state = sz.session("live")
    assert state is not None
    assert state.pages["p1"][1] == 1200.0
    assert (sz.stats.late_records, sz.stats.late_dropped) == (2, 1)


HUMANS = [
    pytest.param(HUMAN_UA, id="chrome"),
    pytest.param("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", id="iphone"),
    pytest.param("Mozilla/5.0 (Linux; Android 10; CUBOT P40) AppleWebKit/537.36 Chrome/120 "
                 "Mobile Safari/537.36", id="cubot-phone"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                 id="firefox"),
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
]
BOTS = [
    pytest.param("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                 id="googlebot"),
    pytest.param("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                 id="bingbot"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "HeadlessChrome/126.0.0.0 Safari/537.36", id="headless-chrome"),
    pytest.param("Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
                 "PhantomJS/2.1.1 Safari/538.1", id="phantomjs"),
    pytest.param("Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 "
                 "Chrome/119 Mobile Safari/537.36 Chrome-Lighthouse", id="lighthouse"),
    pytest.param("Mozilla/5.0 (compatible; Pingdom.com_bot_version_1.4_(http://www.pingdom.com/))",
                 id="pingdom"),
    pytest.param("curl/8.5.0", id="curl"),
    pytest.param("python-requests/2.32.3", id="python-requests"),
    pytest.param("AdsBot-Google (+http://www.google.com/adsbot.html)", id="adsbot"),
    pytest.param("facebookexternalhit/1.1", id="facebook-preview"),
]


@pytest.mark.parametrize("ua", HUMANS)
def test_human_user_agents(ua: str | None) -> None:
    assert not is_bot_user_agent(ua)
    assert len(run(Sessionizer(), beacon(lcp_ms=1000.0, user_agent=ua))) == 1


@pytest.mark.parametrize("ua", BOTS)
def test_bot_user_agents_never_emit(ua: str) -> None:
    assert is_bot_user_agent(ua)
    sz = Sessionizer()
    facts = run(sz, order("o0", ts=T0 - 1), beacon(lcp_ms=1000.0, user_agent=ua),
                beacon("p2", ts=T0 + 5_000, lcp_ms=1000.0), order())
    facts += only(sz.advance(to_ms=T0 + 5 * 60 * MIN), "order")
    assert facts == []
    assert (sz.stats.bot_sessions, sz.stats.bot_orders, len(sz)) == (1, 2, 0)


def test_lcp_below_ttfb_is_a_bot() -> None:
    sz = Sessionizer()
    facts = run(sz, beacon(lcp_ms=100.0, ttfb_ms=400.0), order())
    facts += sz.advance(to_ms=T0 + 2 * MIN)
    assert only(facts, "session") + only(facts, "order") == []
    assert sz.stats.bot_sessions == 1


@pytest.mark.parametrize(("pages", "spacing_ms", "bot"), [
    pytest.param(60, 1_000, False, id="60-in-a-minute"),
    pytest.param(61, 900, True, id="61-in-a-minute"),
    pytest.param(120, 1_010, False, id="120-spread-out"),
])
def test_pages_per_minute(pages: int, spacing_ms: int, bot: bool) -> None:
    sz = Sessionizer()
    records = [beacon(f"p{i}", ts=T0 + i * spacing_ms, ttfb_ms=50.0) for i in range(pages)]
    facts = run(sz, *records) + sz.advance(to_ms=T0 + 5 * MIN)
    assert len(only(facts, "session")) == (0 if bot else 1)
    assert sz.stats.bot_sessions == int(bot)


@pytest.mark.parametrize(("url", "page_group", "group", "commerce"), [
    pytest.param(f"{SHOP}/blog/fast-pages?utm_campaign=x", None, "blog", False, id="blog"),
    pytest.param(f"{SHOP}/Help", None, "help", False, id="help-upper"),
    pytest.param("/content/a", None, "content", False, id="relative"),
    pytest.param(f"{SHOP}/p/blog", None, None, True, id="blog-deeper"),
    pytest.param(f"{SHOP}/blogger", None, None, True, id="prefix-only"),
    pytest.param(SHOP, None, None, True, id="no-path"),
    pytest.param(f"{SHOP}/blog/x", "checkout", "checkout", True, id="group-field-wins"),
    pytest.param(f"{SHOP}/p/1", "help", "help", False, id="group-field-non-commerce"),
])
def test_page_groups(url: str, page_group: str | None, group: str | None,
                     commerce: bool) -> None:
    params = SessionParams()
    assert params.page_group_of(url, page_group) == group
    assert params.is_commerce(url, page_group) == commerce
    [session] = only(run(Sessionizer(), beacon(url=url, page_group=page_group, lcp_ms=1e3)),
                     "session")
    assert session.commerce == commerce


def test_lcp_summary_counts_commerce_pages_latest_value() -> None:
    sz = Sessionizer()
    run(sz, beacon("p1", lcp_ms=1000.0), beacon("p2", ts=T0 + 1, url=f"{SHOP}/blog/a",
                                                lcp_ms=5000.0),
        beacon("p3", ts=T0 + 2, lcp_ms=3000.0), beacon("p3", ts=T0 + 2, lcp_ms=4000.0))
    state = sz.session("s1")
    assert state is not None
    assert state.lcp_count == 2
    assert state.log_lcp_sum == pytest.approx(math.log(1000.0) + math.log(4000.0))


def test_heartbeat_once_per_minute_crossed() -> None:
    sz = Sessionizer()
    assert sz.watermark_ms == NO_WATERMARK
    assert sz.advance() == []
    sz.observe_beacon(beacon(ts=T0, received_at=T0))  # watermark T0 - 30 s: minute m
    [beat] = sz.advance()
    assert (beat.kind, beat.campaign, beat.watermark_ms) == ("heartbeat", "", T0 - 30_000)
    sz.observe_beacon(beacon("p2", ts=T0 + 15_000, received_at=T0 + 15_000))
    assert only(sz.advance(), "heartbeat") == []  # T0 - 15 s: same minute
    sz.observe_beacon(beacon("p3", ts=T0 + 25_000, received_at=T0 + 5 * MIN))
    assert [f.watermark_ms for f in only(sz.advance(), "heartbeat")] == [T0 + 5 * MIN - 30_000]


def test_watermark_is_monotone_and_uses_received_at() -> None:
    sz = Sessionizer()
    sz.observe_beacon(beacon(ts=T0, received_at=T0 + 10_000))
    sz.observe_order(order(ts=T0 + 90_000))  # no received_at: its ts
    sz.observe_beacon(beacon("p2", ts=T0, received_at=T0 + 1))
    assert sz.watermark_ms == T0 + 60_000
    assert sz.snapshot_watermark() == T0 + 60_000


def test_drain_changes_reports_changed_and_deleted() -> None:
    sz = Sessionizer()
    run(sz, beacon(sid="a", lcp_ms=1e3), order(sid="b", ts=T0))
    changed, deleted = sz.drain_changes()
    assert (sorted(changed), deleted) == (["a", "b"], [])
    assert sz.drain_changes() == ({}, [])
    sz.advance(to_ms=T0 + 2 * 60 * MIN)
    assert sz.drain_changes() == ({}, ["a", "b"])
    state = SessionState.from_state(orjson.loads(orjson.dumps(changed["a"])))
    assert state.to_state() == changed["a"]
    assert (state.campaign, state.emitted, state.lcp_ms) == (None, True, 1e3)


def test_restore_continues_identically() -> None:
    first = Sessionizer()
    run(first, order("o0", sid="orphan", ts=T0), beacon(sid="a", ttfb_ms=100.0),
        beacon(sid="b", lcp_ms=2000.0))
    changed, _ = first.drain_changes()
    second = Sessionizer()
    second.restore(orjson.loads(orjson.dumps(changed)).items(), first.snapshot_watermark())
    rest: list[Beacon | Order] = [order("o1", sid="a", ts=T0 + 20_000),
                                  beacon("p2", sid="b", ts=T0 + 30_000),
                                  order("o2", sid="b", ts=T0 + MIN)]
    assert run(first, *rest) == run(second, *rest)
    assert first.advance(to_ms=T0 + 3 * 60 * MIN) == second.advance(to_ms=T0 + 3 * 60 * MIN)
    assert len(first) == len(second) == 0


def test_restore_keeps_expiry_in_activity_order() -> None:
    first = Sessionizer()
    run(first, beacon(sid="a", lcp_ms=1e3), beacon(sid="b", ts=T0 + 60 * MIN, lcp_ms=1e3))
    changed, _ = first.drain_changes()
    second = Sessionizer()
    second.restore(sorted(changed.items(), reverse=True), first.snapshot_watermark())
    second.advance(to_ms=T0 + 91 * MIN)
    assert (second.session("a"), second.drain_changes()[1]) == (None, ["a"])
    assert second.session("b") is not None


@pytest.mark.parametrize("bad", [
    pytest.param({"session_timeout_ms": 0}, id="timeout"),
    pytest.param({"order_grace_ms": -1}, id="grace"),
    pytest.param({"allowed_lateness_ms": -5}, id="lateness"),
    pytest.param({"lcp_wait_ms": -1}, id="lcp-wait"),
    pytest.param({"max_pages_per_minute": 0}, id="pages"),
])
def test_params_reject_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SessionParams(**bad)


def test_params_from_settings() -> None:
    settings = Settings(session_timeout_minutes=10, order_grace_minutes=0.5,
                        allowed_lateness_seconds=2.5, lcp_wait_seconds=90,
                        non_commerce_groups=("Docs",))
    params = Sessionizer.from_settings(settings).params
    assert (params.session_timeout_ms, params.order_grace_ms, params.allowed_lateness_ms,
            params.lcp_wait_ms) == (600_000, 30_000, 2_500, 90_000)
    assert params.non_commerce_groups == frozenset({"docs"})
    assert params.ttl_ms == 630_000
