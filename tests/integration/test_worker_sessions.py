"""Sessions and attribution through the real broker and a real ``revwatch worker``.

Scripted beacons and orders go straight to the beacons/orders topics (keyed by session id),
then filler traffic on *every* partition of both topics moves event time forward: the
sessionizer's watermark is the minimum over the active input partitions (topic, partition)
less the allowed lateness (streams/watermark.py, streams/stages.py), so one busy partition
alone would not move it until the others have been idle for 15 s of wall-clock time.
The session facts written to the internal facts topic must follow CONTRACT.md "Attribution".
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.worker_harness import (
    Consumed,
    Message,
    TopicReader,
    Worker,
    metric_value,
    produce,
    worker_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MINUTE = 60_000
B = (int(time.time() * 1000) // MINUTE) * MINUTE - 3 * 60 * MINUTE  # event time of the script
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/124.0.0.0 Safari/537.36")
SHOP = "https://shop.example"
FILLER = "filler-camp"
LATE_ORDER_AT = B + 43 * MINUTE  # 40 minutes after S_late's last page (B + 3 min)
EXPIRY_AT = B + 140 * MINUTE  # past every scripted session's 30 + 60 min timeout


def page(sid: str, bid: str, ts: int, path: str, ua: str = CHROME, **extra: Any) -> dict[str, Any]:
    return {"beacon_id": bid, "session_id": sid, "ts": ts, "page_url": SHOP + path,
            "user_agent": ua, "device": "desktop", **extra}


def order(sid: str, oid: str, ts: int, revenue: float, **extra: Any) -> dict[str, Any]:
    return {"order_id": oid, "session_id": sid, "ts": ts, "revenue": revenue,
            "currency": "USD", **extra}


def first_records() -> list[tuple[str, dict[str, Any]]]:
    """The very first records a fresh worker reads: one session, landing page and order."""
    return [("b", page("s-first", "s-first:1", B, "/w?utm_campaign=first-camp", lcp_ms=1100.0)),
            ("o", order("s-first", "o-first", B + MINUTE, 25.0))]


def early_orders() -> list[tuple[str, dict[str, Any]]]:
    """Orders that reach the worker before any beacon of their session."""
    return [("o", order("s-early", "o-early", B + 6 * MINUTE, 50.0)),
            ("o", order("s-bot2", "o-bot2", B + 5 * MINUTE, 70.0))]


def script() -> list[tuple[str, dict[str, Any]]]:
    """The scripted sessions (see the expectations below), in arrival order."""
    m = MINUTE
    return [
        # the session of the worker's first records goes on
        ("b", page("s-first", "s-first:2", B + 3 * m, "/product/9", lcp_ms=1300.0)),
        # utm_campaign on the landing page only; later pages count under it too
        ("b", page("s-utm", "s-utm:1", B, "/landing?utm_campaign=spring-sale&utm_source=g",
                   lcp_ms=1800.0, ttfb_ms=300.0)),
        ("b", page("s-utm", "s-utm:2", B + m, "/product/1", lcp_ms=1500.0)),
        ("b", page("s-utm", "s-utm:3", B + 2 * m, "/cart", lcp_ms=900.0)),
        ("o", order("s-utm", "o-utm", B + 3 * m, 80.0, campaign="wrong-camp")),
        ("b", page("s-utm2", "s-utm2:1", B + m, "/p?utm_campaign=spring-sale", lcp_ms=2500.0)),
        ("b", page("s-utm2", "s-utm2:2", B + 2 * m, "/product/2", lcp_ms=2100.0)),
        # an explicit campaign field overrides the URL's utm_campaign
        ("b", page("s-explicit", "s-explicit:1", B + m, "/p?utm_campaign=url-camp",
                   campaign="explicit-camp", lcp_ms=1200.0)),
        ("o", order("s-explicit", "o-explicit", B + 4 * m, 20.0)),
        # no campaign anywhere: "(none)"; two orders, one of them sent twice
        ("b", page("s-none", "s-none:1", B + m, "/", lcp_ms=1700.0)),
        ("b", page("s-none", "s-none:2", B + 2 * m, "/search?q=tent", lcp_ms=1600.0)),
        ("o", order("s-none", "o-none-1", B + 3 * m, 30.0)),
        ("o", order("s-none", "o-none-1", B + 3 * m, 30.0)),
        ("o", order("s-none", "o-none-2", B + 5 * m, 45.5)),
        # the order of this session came earlier (early_orders)
        ("b", page("s-early", "s-early:1", B + 2 * m, "/x?utm_campaign=early-camp",
                   lcp_ms=2000.0)),
        # its order comes 40 minutes of event time after its last page (late_order)
        ("b", page("s-late", "s-late:1", B + m, "/l?utm_campaign=late-camp", lcp_ms=1900.0)),
        ("b", page("s-late", "s-late:2", B + 3 * m, "/cart", lcp_ms=800.0)),
        # one page view in several records: TTFB first, a retry of it, the LCP, then
        # boomerang's unload record (INP and a later LCP); a second page sent twice;
        # one order sent twice
        ("b", page("s-dup", "s-dup:1", B + 2 * m, "/d?utm_campaign=dup-camp", ttfb_ms=250.0)),
        ("b", page("s-dup", "s-dup:1", B + 2 * m, "/d?utm_campaign=dup-camp", ttfb_ms=250.0)),
        ("b", page("s-dup", "s-dup:1", B + 2 * m, "/d?utm_campaign=dup-camp", lcp_ms=2100.0)),
        ("b", page("s-dup", "s-dup:1", B + 2 * m, "/d?utm_campaign=dup-camp", lcp_ms=2300.0,
                   inp_ms=150.0)),
        ("b", page("s-dup", "s-dup:2", B + 3 * m, "/product/3", lcp_ms=1000.0)),
        ("b", page("s-dup", "s-dup:2", B + 3 * m, "/product/3", lcp_ms=1000.0)),
        ("o", order("s-dup", "o-dup", B + 4 * m, 99.0)),
        ("o", order("s-dup", "o-dup", B + 4 * m, 99.0)),
        # no LCP ever: the session fact waits lcp_wait (60 s of event time)
        ("b", page("s-nolcp", "s-nolcp:1", B + m, "/n?utm_campaign=nolcp-camp", ttfb_ms=400.0)),
        # bots: a crawler and a headless browser, each with an order
        ("b", page("s-bot1", "s-bot1:1", B + m, "/b?utm_campaign=bot-camp", GOOGLEBOT,
                   lcp_ms=500.0)),
        ("o", order("s-bot1", "o-bot1", B + 2 * m, 60.0)),
        ("b", page("s-bot2", "s-bot2:1", B + 2 * m, "/b?utm_campaign=bot-camp", HEADLESS,
                   lcp_ms=700.0)),
        ("b", page("s-bot2", "s-bot2:2", B + 3 * m, "/cart", HEADLESS, lcp_ms=600.0)),
        # an order whose session never shows a beacon: its own campaign, known_session false
        ("o", order("s-orphan", "o-orphan", B + 4 * m, 15.0, campaign="orphan-camp")),
    ]


def late_order() -> dict[str, Any]:
    return order("s-late", "o-late", LATE_ORDER_AT, 120.0)


EXPECTED_SESSIONS = {"spring-sale": 2, "explicit-camp": 1, "(none)": 1, "early-camp": 1,
                     "late-camp": 1, "dup-camp": 1, "nolcp-camp": 1}
# (campaign, order_id, first_order, known_session, revenue)
EXPECTED_ORDERS = {
    ("spring-sale", "o-utm", True, True, 80.0),
    ("explicit-camp", "o-explicit", True, True, 20.0),
    ("(none)", "o-none-1", True, True, 30.0),
    ("(none)", "o-none-2", False, True, 45.5),
    ("early-camp", "o-early", True, True, 50.0),
    ("late-camp", "o-late", True, True, 120.0),
    ("dup-camp", "o-dup", True, True, 99.0),
    ("orphan-camp", "o-orphan", True, False, 15.0),
}
BOT_SESSIONS = {"s-bot1", "s-bot2"}


def filler(worker: Worker, at_ms: int, tag: str) -> list[Message]:
    """One converting filler session on every partition of the beacons and orders topics."""
    s = worker.settings
    out: list[Message] = []
    for p in range(s.partitions):
        sid = f"filler-{tag}-{p}"
        out.append(Message.of(s.beacons_topic, page(sid, f"{sid}:1", at_ms, "/f",
                                                    campaign=FILLER, lcp_ms=1000.0), sid, p))
        out.append(Message.of(s.orders_topic, order(sid, f"{sid}-o", at_ms, 10.0), sid, p))
    return out


def to_messages(worker: Worker, records: Sequence[tuple[str, dict[str, Any]]]) -> list[Message]:
    s = worker.settings
    return [Message.of(s.beacons_topic if kind == "b" else s.orders_topic, obj,
                       obj["session_id"]) for kind, obj in records]


@dataclass(frozen=True)
class Outcome:
    facts: list[dict[str, Any]]
    produced_beacons: int
    produced_orders: int
    campaigns: dict[str, Any]
    metrics: str


def heartbeat_at_least(ms: int) -> Any:
    def check(records: Sequence[Consumed]) -> bool:
        return any(f["kind"] == "heartbeat" and f["watermark_ms"] >= ms
                   for r in records for f in r.facts())
    return check


def scripted(facts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Facts of the scripted sessions but ``s-first`` (which has a test of its own)."""
    return [f for f in facts if f["kind"] != "heartbeat" and f["campaign"] != FILLER
            and f["session_id"] != "s-first"]


async def drive(worker: Worker) -> Outcome:
    s, bootstrap = worker.settings, worker.bootstrap
    sent: list[Message] = []

    async def send(messages: list[Message]) -> None:
        sent.extend(messages)
        await produce(bootstrap, messages)

    async with TopicReader(bootstrap, s.facts_topic) as reader:
        await send(to_messages(worker, first_records()))
        await reader.until(heartbeat_at_least(0), 60, "a heartbeat after the first records",
                           worker)
        await send(to_messages(worker, early_orders()))
        await send(filler(worker, B + 2 * MINUTE, "0"))  # behind the early orders everywhere
        await reader.until(heartbeat_at_least(B + MINUTE), 60,
                           "the watermark to pass B+1 min (early orders read)", worker)
        await send(to_messages(worker, script()))
        await send(filler(worker, B + 45 * MINUTE, "a"))
        await reader.until(heartbeat_at_least(B + 44 * MINUTE), 60,
                           "the watermark to pass B+44 min", worker)
        await send(to_messages(worker, [("o", late_order())]))
        await send(filler(worker, EXPIRY_AT, "b"))
        await reader.until(heartbeat_at_least(EXPIRY_AT - 2 * MINUTE), 60,
                           "the watermark to pass every session's expiry", worker)
        expected = sum(EXPECTED_SESSIONS.values()) + len(EXPECTED_ORDERS)
        await reader.until(lambda rs: len(scripted([f for r in rs for f in r.facts()]))
                           >= expected, 20,
                           f"{expected} scripted facts", worker, fail=False)
        await reader.drain(quiet_s=2.0)
        facts = reader.fact_values()
    campaigns = await _campaigns_once_processed(worker)
    return Outcome(facts, sum(m.topic == s.beacons_topic for m in sent),
                   sum(m.topic == s.orders_topic for m in sent), campaigns,
                   worker.metrics_text())


async def _campaigns_once_processed(worker: Worker, timeout_s: float = 30.0) -> dict[str, Any]:
    """``/campaigns`` once it lists every scripted campaign at the final watermark."""
    wanted = set(EXPECTED_SESSIONS) | {"orphan-camp"}
    deadline = time.monotonic() + timeout_s
    while True:
        reply = worker.get("/campaigns")
        assert reply.status == 200, f"/campaigns answered {reply.status}\n{worker.describe()}"
        body: dict[str, Any] = reply.json()
        names = {row["campaign"] for row in body.get("campaigns", [])}
        current = (body.get("as_of") or 0) >= EXPIRY_AT - 5 * MINUTE
        if (wanted <= names and current) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, kafka_bootstrap: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from worker_fixture(request, kafka_bootstrap, tmp_path_factory, "sessions",
                              partitions=4)


@pytest.fixture(scope="module")
def outcome(worker: Worker) -> Outcome:
    return asyncio.run(asyncio.wait_for(drive(worker), timeout=200))


def test_session_facts_per_campaign(outcome: Outcome) -> None:
    sessions = [f for f in scripted(outcome.facts) if f["kind"] == "session"]
    assert dict(Counter(f["campaign"] for f in sessions)) == EXPECTED_SESSIONS
    per_session = Counter(f["session_id"] for f in sessions)
    assert max(per_session.values()) == 1, f"a session counted twice: {per_session}"
    by_id = {f["session_id"]: f for f in sessions}
    assert by_id["s-utm"]["start_ms"] == B
    assert by_id["s-utm"]["lcp_ms"] == 1800.0
    assert by_id["s-dup"]["lcp_ms"] == 2100.0, "emitted when the landing page got its LCP"
    assert by_id["s-nolcp"]["lcp_ms"] is None
    assert all(f["device"] == "desktop" for f in sessions)


def test_first_records_of_a_fresh_worker_are_not_expired(outcome: Outcome) -> None:
    facts = [f for f in outcome.facts if f.get("session_id") == "s-first"]
    seen = sorted((f["kind"], f["campaign"], f["known_session"]) for f in facts)
    # its order, with no checkout page before it, marks the checkout (docs/FUNNEL.md)
    assert seen == [("checkout", "first-camp", True), ("order", "first-camp", True),
                    ("session", "first-camp", True)], (
        "the session of a fresh worker's first batch must live on (one session fact, its "
        f"order attributed to it), got {facts}")


def test_order_facts(outcome: Outcome) -> None:
    orders = [f for f in scripted(outcome.facts) if f["kind"] == "order"]
    seen = [(f["campaign"], f["order_id"], f["first_order"], f["known_session"], f["revenue"])
            for f in orders]
    assert len(seen) == len(set(seen)), f"an order counted twice: {Counter(seen)}"
    assert set(seen) == EXPECTED_ORDERS
    late = next(f for f in orders if f["order_id"] == "o-late")
    assert late["session_id"] == "s-late"
    assert late["order_ts_ms"] == LATE_ORDER_AT
    assert late["start_ms"] == B + MINUTE


def test_bots_count_nowhere(outcome: Outcome) -> None:
    leaked = [f for f in outcome.facts
              if f.get("session_id") in BOT_SESSIONS or f["campaign"] == "bot-camp"]
    assert leaked == [], f"bot sessions must emit no fact: {leaked}"
    names = {row["campaign"] for row in outcome.campaigns["campaigns"]}
    assert "bot-camp" not in names


def test_campaigns_endpoint_lists_processed_campaigns(outcome: Outcome) -> None:
    rows = {row["campaign"]: row for row in outcome.campaigns["campaigns"]}
    missing = (set(EXPECTED_SESSIONS) | {"orphan-camp", FILLER}) - rows.keys()
    assert not missing, f"/campaigns lacks {missing}: {sorted(rows)}"
    assert outcome.campaigns["currency"] == "USD"
    assert isinstance(outcome.campaigns["as_of"], int)
    assert outcome.campaigns["as_of"] >= EXPIRY_AT - 5 * MINUTE
    for row in rows.values():
        assert isinstance(row["sessions_per_minute"], float | int)
        assert row["firing_alerts"] == []


def test_the_worker_runs_the_eager_consumer(worker: Worker, outcome: Outcome) -> None:
    """The records the other tests here count came through streams/fast_drain.py's
    consumer, not Faust's own (``outcome``: the run is over)."""
    assert "consumer eager message callback" in worker.log_text(), worker.describe()


def test_metrics_count_orders_read(outcome: Outcome) -> None:
    orders = metric_value(outcome.metrics, "revwatch_orders_total", outcome="accepted")
    assert orders == outcome.produced_orders, (
        f"revwatch_orders_total{{outcome=accepted}} = {orders}, "
        f"{outcome.produced_orders} orders were written to the orders topic")


def test_metrics_count_beacons_read(outcome: Outcome) -> None:
    beacons = metric_value(outcome.metrics, "revwatch_beacons_total")
    assert beacons >= outcome.produced_beacons, (
        f"revwatch_beacons_total = {beacons}, but {outcome.produced_beacons} beacons were read "
        "from the beacons topic: the session stage counts no beacon it reads "
        "(only the HTTP collector counts)")


def test_metrics_count_bot_sessions(outcome: Outcome) -> None:
    bots = metric_value(outcome.metrics, "revwatch_bot_sessions_total")
    assert bots >= len(BOT_SESSIONS), (
        f"revwatch_bot_sessions_total = {bots}, {len(BOT_SESSIONS)} bot sessions were read; "
        "CONTRACT.md: bot sessions count nowhere but in a metric")


def test_campaign_watermark_waits_for_every_facts_partition(worker: Worker,
                                                            outcome: Outcome) -> None:
    """The campaign stage ticks only as far as the slowest facts partition has shown.

    A sessionizer sends its heartbeat to every facts partition, after the facts it sent
    there. If one partition is read ahead of the others, its heartbeat must not move the
    campaign stage's clock past facts still unread in the others (streams/watermark.py:
    the minimum over inputs, each input a (source, partition)).
    """
    s = worker.settings
    first, ahead = EXPIRY_AT + 60 * MINUTE, EXPIRY_AT + 90 * MINUTE

    def heartbeats(at_ms: int, partitions: Sequence[int]) -> list[Message]:
        fact = {"kind": "heartbeat", "campaign": "", "watermark_ms": at_ms,
                "session_id": "probe-sessionizer"}
        return [Message.of(s.facts_topic, fact, b"", p) for p in partitions]

    def newest_tick(records: Sequence[Consumed]) -> int:
        return max((r.json()["tick_ms"] for r in records), default=0)

    async def run() -> tuple[int, int]:
        everywhere, others = range(s.partitions), range(1, s.partitions)
        async with TopicReader(worker.bootstrap, s.verdicts_topic) as verdicts:
            # the stage re-reads its clock on input only: repeat until the worker's own
            # sessionizer (idle since the scenario ended) stops holding it back (15 s)
            for _ in range(15):
                await produce(worker.bootstrap, heartbeats(first, everywhere))
                await verdicts.until(lambda rs: newest_tick(rs) >= first, 3, "", fail=False)
                if newest_tick(verdicts.records) >= first:
                    break
            assert newest_tick(verdicts.records) >= first, worker.describe()
            # partition 0 runs 30 min ahead; the others repeat where they are (still active)
            await produce(worker.bootstrap, heartbeats(ahead, [0]) + heartbeats(first, others))
            await verdicts.drain(quiet_s=4.0, timeout_s=8.0)
            held = newest_tick(verdicts.records)
            await produce(worker.bootstrap, heartbeats(ahead, others))
            await verdicts.until(lambda rs: newest_tick(rs) >= ahead, 30,
                                 "verdicts once every partition is ahead", worker)
            return held, newest_tick(verdicts.records)

    held, final = asyncio.run(run())
    assert held < first + 2 * MINUTE, (
        f"one facts partition's heartbeat moved the campaign stage {(held - first) // MINUTE} "
        "min ahead of the other partitions: streams/stages.py CampaignStage keys its input "
        "watermarks by source only, not by (source, facts partition)")
    assert final == ahead
