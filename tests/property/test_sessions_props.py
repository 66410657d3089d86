"""streams.sessions under any arrival order, duplication and batching (hypothesis)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.records import Beacon, Order, SessionFact
from streams.sessions import Sessionizer

T0 = 1_700_000_000_000
MIN = 60_000
FAR = T0 + 10 * 60 * MIN
HUMAN_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1"
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
KINDS = ("human", "ua_bot", "timing_bot", "orders_only")
Record = Beacon | Order


@dataclass
class Traffic:
    """Records in arrival order, and the truth about each session."""

    records: list[Record]
    kinds: dict[str, str] = field(default_factory=dict)
    orders: dict[str, set[str]] = field(default_factory=dict)
    campaigns: dict[str, set[str]] = field(default_factory=dict)
    checkouts: dict[str, set[int]] = field(default_factory=dict)  # checkout pages', order ts


def page_records(draw: st.DrawFn, sid: str, kind: str, page: int, ts: int) -> list[Beacon]:
    """The records of one page view: one, or web-vitals style one metric group per record."""
    ttfb = draw(st.floats(50, 500))
    lcp = ttfb / 2 if kind == "timing_bot" else draw(st.none() | st.floats(ttfb, 8_000))
    campaign = draw(st.sampled_from([None, "spring", "summer"]))
    query = f"?utm_campaign={campaign}" if campaign and draw(st.booleans()) else ""
    common: dict[str, Any] = {"received_at": ts + draw(st.integers(0, 20_000)), "device": "mobile",
              "user_agent": BOT_UA if kind == "ua_bot" else HUMAN_UA,
              "campaign": None if query else campaign}
    group = draw(st.sampled_from(["p", "checkout"]))
    url = f"https://shop.example/{group}/{page}{query}"
    bid = f"{sid}-p{page}"
    if kind == "timing_bot" or not draw(st.booleans()):
        return [Beacon(bid, sid, ts, url, lcp_ms=lcp, ttfb_ms=ttfb, **common)]
    return [Beacon(bid, sid, ts, url, ttfb_ms=ttfb, fcp_ms=ttfb * 1.5, **common),
            Beacon(bid, sid, ts, url, lcp_ms=lcp, **common)]


def named(b: Beacon) -> str:
    return b.campaign or b.page_url.partition("utm_campaign=")[2] or "(none)"


def session_records(draw: st.DrawFn, sid: str, kind: str, truth: Traffic, *,
                    span_ms: int, order_delay_ms: int) -> list[Record]:
    start = T0 + draw(st.integers(0, span_ms))
    records: list[Record] = []
    for page in range(0 if kind == "orders_only" else draw(st.integers(1, 4))):
        pages = page_records(draw, sid, kind, page, start + draw(st.integers(0, 5 * MIN)))
        truth.campaigns[sid].update(named(b) for b in pages)
        truth.checkouts[sid].update(b.ts for b in pages if "/checkout/" in b.page_url)
        records += pages
    for n in range(draw(st.integers(0, 2))):
        ts = start + draw(st.integers(0, order_delay_ms))
        records.append(Order(f"{sid}-o{n}", sid, ts, draw(st.floats(0, 500)), campaign="promo"))
        truth.orders[sid].add(f"{sid}-o{n}")
        truth.checkouts[sid].add(ts)
    copies = draw(st.lists(st.sampled_from(records), max_size=3)) if records else []
    return records + copies


def arrival(record: Record) -> int:
    return record.ts if record.received_at is None else record.received_at


@st.composite
def traffic(draw: st.DrawFn, sessions: int = 6, span_ms: int = 10 * MIN,
            order_delay_ms: int = 15 * MIN, shuffled: bool = True) -> Traffic:
    """Sessions starting within ``span_ms``; records in any order, or by arrival time.

    Shuffled, every ``ts`` stays within the session timeout of the watermark (no record
    is late), so the truth holds whatever the order.
    """
    truth = Traffic([])
    for i in range(draw(st.integers(1, sessions))):
        sid = f"s{i}"
        truth.kinds[sid] = draw(st.sampled_from(KINDS))
        truth.orders[sid], truth.campaigns[sid], truth.checkouts[sid] = set(), set(), set()
        truth.records += session_records(draw, sid, truth.kinds[sid], truth, span_ms=span_ms,
                                         order_delay_ms=order_delay_ms)
    if shuffled:
        truth.records = draw(st.permutations(truth.records))
    else:
        truth.records.sort(key=arrival)
    return truth


def feed(sz: Sessionizer, records: list[Record], every: int) -> list[SessionFact]:
    facts: list[SessionFact] = []
    for i, record in enumerate(records, start=1):
        if isinstance(record, Beacon):
            facts += sz.observe_beacon(record)
        else:
            facts += sz.observe_order(record)
        if i % every == 0:
            facts += sz.advance()
    return facts + sz.advance()


def cancelled(fact: SessionFact) -> tuple[str, str, str | None, int, bool]:
    checkout = fact.kind == "checkout" or (fact.kind == "retract" and fact.order_id is None
                                           and fact.checkout_ms is not None)
    return fact.campaign, fact.session_id, fact.order_id, fact.start_ms, checkout


def net(facts: list[SessionFact]) -> list[SessionFact]:
    """The session, checkout and order facts not cancelled by a later ``retract`` (which
    must find the fact it cancels)."""
    live: list[SessionFact] = []
    for fact in facts:
        if fact.kind == "retract":
            match = [f for f in live if cancelled(f) == cancelled(fact)]
            assert len(match) == 1, fact
            assert (match[0].lcp_ms, match[0].first_order, match[0].checkout_ms) == (
                fact.lcp_ms, fact.first_order, fact.checkout_ms)
            live.remove(match[0])
        elif fact.kind != "heartbeat":
            live.append(fact)
    return live


@settings(max_examples=150, deadline=None)
@given(traffic(), st.integers(1, 7))
def test_each_human_session_emits_once_and_memory_is_freed(t: Traffic, every: int) -> None:
    """Once net of retracts (a late landing naming another campaign moves the session)."""
    sz = Sessionizer()
    all_facts = feed(sz, t.records, every) + sz.advance(to_ms=FAR)
    facts = net(all_facts)
    sessions = Counter(f.session_id for f in facts if f.kind == "session")
    for sid, kind in t.kinds.items():
        assert sessions[sid] == (kind == "human")
        orders = [f for f in facts if f.kind == "order" and f.session_id == sid]
        expected = t.orders[sid] if kind in {"human", "orders_only"} else set()
        assert sorted(f.order_id or "" for f in orders) == sorted(expected)
        assert sum(f.first_order for f in orders) == (len(expected) > 0)
        assert all(f.known_session == (kind == "human") for f in orders)
        if kind == "human":
            own = [f for f in facts if f.session_id == sid]
            assert own[0].kind == "session"  # held orders follow the session fact
            assert own[0].campaign in t.campaigns[sid]
            assert {f.campaign for f in own} == {own[0].campaign}
            _check_checkout(own, t.checkouts[sid])
        else:
            assert all(f.checkout_ms is None for f in orders)  # orphans (bots send nothing)
            assert not [f for f in facts if f.kind == "checkout" and f.session_id == sid]
    assert len(sz) == 0
    marks = [f.watermark_ms for f in all_facts]
    assert marks == sorted(marks)
    beats = [f.watermark_ms // MIN for f in all_facts if f.kind == "heartbeat"]
    assert beats == sorted(set(beats))


def _check_checkout(own: list[SessionFact], times: set[int]) -> None:
    """One checkout fact if the session showed a checkout page or an order, before its
    orders, at one of those times; every order carries it."""
    checkouts = [f for f in own if f.kind == "checkout"]
    assert len(checkouts) == (len(times) > 0)
    if checkouts:
        [checkout] = checkouts
        assert checkout.checkout_ms in times
        assert own.index(checkout) < min((i for i, f in enumerate(own) if f.kind == "order"),
                                         default=len(own))
        assert all(f.checkout_ms == checkout.checkout_ms for f in own if f.kind == "order")


def apply_drain(sz: Sessionizer, table: dict[str, bytes]) -> None:
    """What the agent does after a batch: write changed rows, delete expired ones."""
    changed, deleted = sz.drain_changes()
    assert not set(changed) & set(deleted)
    for sid in deleted:
        table.pop(sid, None)
    table.update((sid, orjson.dumps(state)) for sid, state in changed.items())


@settings(max_examples=150, deadline=None)
@given(traffic() | traffic(sessions=12, span_ms=5 * 60 * MIN, order_delay_ms=80 * MIN,
                           shuffled=False),
       st.integers(1, 5), st.data())
def test_restored_state_gives_identical_outputs(t: Traffic, every: int,
                                                data: st.DataObject) -> None:
    batches = [t.records[i:i + every] for i in range(0, len(t.records), every)]
    cut = data.draw(st.integers(0, len(batches)))
    live, table = Sessionizer(), dict[str, bytes]()
    for batch in batches[:cut]:
        feed(live, batch, len(batch))
        apply_drain(live, table)
    restored = Sessionizer()
    restored.restore(((k, orjson.loads(v)) for k, v in table.items()),
                     live.snapshot_watermark())
    assert len(restored) == len(live)
    for batch in batches[cut:]:
        assert feed(live, batch, len(batch)) == feed(restored, batch, len(batch))
        assert live.drain_changes() == restored.drain_changes()
    assert live.advance(to_ms=FAR) == restored.advance(to_ms=FAR)
    assert len(live) == len(restored) == 0
