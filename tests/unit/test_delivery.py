"""streams.delivery and streams.alertmanager: retries, isolation, overflow, payload shape."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from streams.alertmanager import alertmanager_alert, iso_utc, severity
from streams.delivery import AlertmanagerReceiver, DeliveryError, Dispatcher, WebhookReceiver

T0 = 1_714_554_000_000  # 2024-05-01T09:00:00Z
MINUTE = 60_000


def make_alert(alert_id: str = "a1", *, state: str = "firing", kind: str = "conversion_drop",
               revenue: float = 800.0, ts: int = T0 + 10 * MINUTE, **extra: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "alert_id": alert_id, "incident_id": f"inc-{alert_id}", "scope": "campaign",
        "ts": ts, "campaign": "spring-sale", "kind": kind, "state": state,
        "started_at": T0, "revenue_at_risk_per_hour": revenue,
        "revenue_at_risk_per_hour_low": revenue * 0.6,
        "revenue_at_risk_per_hour_high": revenue * 1.5, "revenue_lost": revenue / 6,
        "evidence": {"conversion_rate": 0.012, "conversion_rate_baseline": 0.031,
                     "lcp_p75_ms": 4200.0, "lcp_p75_baseline_ms": 2100.0,
                     "sessions_in_window": 5400},
        "summary": "spring-sale: conversion -61%, 800 USD/h at risk",
    }
    alert.update(extra)
    return alert


class Recorder:
    """A receiver that records every batch; optionally fails or hangs."""

    def __init__(self, name: str, *, max_batch: int = 16, fail_first: int = 0,
                 hang: bool = False) -> None:
        self.name = name
        self.max_batch = max_batch
        self.fail_first = fail_first
        self.hang = hang
        self.calls = 0
        self.received: list[dict[str, Any]] = []
        self.closed = False

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.calls <= self.fail_first:
            msg = "receiver down"
            raise ConnectionError(msg)
        self.received.extend(batch)

    async def close(self) -> None:
        self.closed = True


class Outcomes:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def __call__(self, receiver: str, outcome: str) -> None:
        self.counts[receiver, outcome] += 1


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture
async def flaky_server() -> AsyncIterator[tuple[BaseTestServer, list[tuple[str, str, Any]]]]:
    """Answers 503 to the first two requests, then 200; records (path, type, body)."""
    seen: list[tuple[str, str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.path, request.content_type, await request.json()))
        return web.Response(status=503 if len(seen) <= 2 else 200, text="busy")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    async with TestServer(app) as server:
        yield server, seen


async def test_webhook_retries_then_delivers_once(
        flaky_server: tuple[BaseTestServer, list[tuple[str, str, Any]]]) -> None:
    server, seen = flaky_server
    outcomes, sleep = Outcomes(), FakeSleep()
    receiver = WebhookReceiver(str(server.make_url("/hook")))
    dispatcher = Dispatcher([receiver], queue_max=10, on_outcome=outcomes, sleep=sleep,
                            rng=random.Random(1))
    await dispatcher.start()
    alert = make_alert()
    dispatcher.submit(alert)
    await wait_until(lambda: outcomes.counts["webhook", "delivered"] == 1)
    assert await dispatcher.stop(timeout_s=1.0) == 0
    assert len(seen) == 3
    assert all(item == ("/hook", "application/json", alert) for item in seen)
    assert outcomes.counts == Counter({("webhook", "retried"): 2, ("webhook", "delivered"): 1})
    assert len(sleep.delays) == 2
    assert 0.25 <= sleep.delays[0] < 0.5
    assert 0.5 <= sleep.delays[1] < 1.0


async def test_alertmanager_receiver_posts_to_api_v2(
        flaky_server: tuple[BaseTestServer, list[tuple[str, str, Any]]]) -> None:
    server, seen = flaky_server
    outcomes = Outcomes()
    receiver = AlertmanagerReceiver(str(server.make_url("/")), now_ms=lambda: T0 + 11 * MINUTE)
    dispatcher = Dispatcher([receiver], queue_max=10, on_outcome=outcomes, sleep=FakeSleep())
    await dispatcher.start()
    dispatcher.submit(make_alert("a1"))
    dispatcher.submit(make_alert("a2"))
    await wait_until(lambda: outcomes.counts["alertmanager", "delivered"] == 2)
    await dispatcher.stop(timeout_s=1.0)
    path, content_type, body = seen[-1]
    assert (path, content_type) == ("/api/v2/alerts", "application/json")
    assert {item["labels"]["alert_id"] for item in body} == {"a1", "a2"}


async def test_hanging_receiver_blocks_neither_caller_nor_others() -> None:
    stuck, healthy = Recorder("stuck", hang=True), Recorder("healthy", max_batch=4)
    outcomes = Outcomes()
    dispatcher = Dispatcher([stuck, healthy], queue_max=50, on_outcome=outcomes,
                            attempt_timeout_s=60.0)
    await dispatcher.start()
    alerts = [make_alert(f"a{i}") for i in range(200)]
    started = time.perf_counter()
    for alert in alerts:
        dispatcher.submit(alert)
    submit_s = time.perf_counter() - started
    await wait_until(lambda: len(healthy.received) == 50)  # 150 dropped before it ran
    for i in range(200, 210):  # while the stuck receiver hangs on its first batch
        dispatcher.submit(make_alert(f"a{i}"))
    await wait_until(lambda: len(healthy.received) == 60)
    assert submit_s < 0.1  # about 1 ms here; the bound is loose for a loaded CI machine
    assert stuck.calls == 1
    assert outcomes.counts["stuck", "dropped"] == 150
    assert outcomes.counts["healthy", "dropped"] == 150
    assert outcomes.counts["healthy", "delivered"] == 60
    abandoned = await dispatcher.stop(timeout_s=0.1)
    assert abandoned == 60  # 16 in flight + 44 queued for the stuck receiver
    assert stuck.closed
    assert healthy.closed


async def test_attempt_timeout_counts_as_failure() -> None:
    stuck, outcomes, sleep = Recorder("stuck", hang=True), Outcomes(), FakeSleep()
    dispatcher = Dispatcher([stuck], queue_max=5, on_outcome=outcomes, max_attempts=3,
                            attempt_timeout_s=0.02, sleep=sleep)
    await dispatcher.start()
    dispatcher.submit(make_alert())
    await wait_until(lambda: outcomes.counts["stuck", "failed"] == 1)
    assert stuck.calls == 3
    assert outcomes.counts["stuck", "retried"] == 2
    assert await dispatcher.stop(timeout_s=0.5) == 0


async def test_gives_up_after_max_attempts_with_capped_backoff() -> None:
    down, outcomes, sleep = Recorder("down", fail_first=10**9), Outcomes(), FakeSleep()
    dispatcher = Dispatcher([down], queue_max=5, on_outcome=outcomes, max_attempts=8,
                            base_delay_s=0.5, max_delay_s=10.0, sleep=sleep,
                            rng=random.Random(7))
    await dispatcher.start()
    dispatcher.submit(make_alert())
    await wait_until(lambda: outcomes.counts["down", "failed"] == 1)
    await dispatcher.stop(timeout_s=0.5)
    assert down.calls == 8
    assert outcomes.counts["down", "retried"] == 7
    ceilings = [min(10.0, 0.5 * 2**k) for k in range(7)]
    assert all(c / 2 <= d < c for d, c in zip(sleep.delays, ceilings, strict=True))
    assert len(set(sleep.delays)) == 7  # jittered


@pytest.mark.parametrize(
    ("queued", "incoming", "dropped", "left"),
    [
        pytest.param(["f1", "r1", "f2"], "f3", "f1", ["r1", "f2", "f3"], id="oldest-firing"),
        pytest.param(["r1", "f1", "r2"], "r3", "f1", ["r1", "r2", "r3"], id="resolve-evicts"),
        pytest.param(["r1", "r2", "r3"], "f1", "f1", ["r1", "r2", "r3"], id="drop-incoming"),
        pytest.param(["r1", "r2", "r3"], "r4", "r1", ["r2", "r3", "r4"], id="only-resolves"),
    ],
)
async def test_overflow_drops_oldest_firing(queued: list[str], incoming: str, dropped: str,
                                            left: list[str]) -> None:
    def alert(name: str) -> dict[str, Any]:
        return make_alert(name, state="resolved" if name.startswith("r") else "firing")

    recorder, outcomes = Recorder("r"), Outcomes()
    depths: list[int] = []
    dispatcher = Dispatcher([recorder], queue_max=3, on_outcome=outcomes,
                            on_queue_depth=lambda _name, depth: depths.append(depth))
    for name in [*queued, incoming]:
        dispatcher.submit(alert(name))
    assert outcomes.counts["r", "dropped"] == 1
    assert depths == [1, 2, 3, 3]
    await dispatcher.start()
    await wait_until(lambda: len(recorder.received) == 3)
    await dispatcher.stop(timeout_s=0.5)
    assert [a["alert_id"] for a in recorder.received] == left
    assert dropped not in left


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"queue_max": 0}, "queue_max", id="queue"),
        pytest.param({"queue_max": 5, "max_attempts": 0}, "max_attempts", id="attempts"),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Dispatcher([Recorder("x")], **kwargs)


def test_rejects_duplicate_receiver_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        Dispatcher([Recorder("x"), Recorder("x")], queue_max=5)


# --- Alertmanager payload -------------------------------------------------------------

NOW = T0 + 10 * MINUTE + 30_000


def test_firing_payload_shape() -> None:
    item = alertmanager_alert(make_alert(), now_ms=NOW, generator_url="http://w1:6066/campaigns")
    assert item["labels"] == {
        "alertname": "RevwatchConversionDrop", "service": "revwatch",
        "campaign": "spring-sale", "kind": "conversion_drop", "severity": "page",
        "incident_id": "inc-a1", "scope": "campaign", "alert_id": "a1",
    }
    assert item["startsAt"] == "2024-05-01T09:00:00.000Z"
    assert item["endsAt"] == iso_utc(NOW + 15 * MINUTE) == "2024-05-01T09:25:30.000Z"
    assert item["generatorURL"] == "http://w1:6066/campaigns"
    notes = item["annotations"]
    assert all(isinstance(v, str) for v in notes.values())
    assert notes["revenue_at_risk_per_hour"] == "800.00"
    assert notes["revenue_at_risk_per_hour_low"] == "480.00"
    assert notes["revenue_at_risk_per_hour_high"] == "1200.00"
    assert notes["started_at"] == "2024-05-01T09:00:00.000Z"
    assert notes["summary"] == "spring-sale: conversion -61%, 800 USD/h at risk"
    assert notes["description"] == (
        "Revenue at risk 800 USD/h (90% interval 480 to 1,200); 133 USD lost since "
        "2024-05-01T09:00:00.000Z. Conversion 1.20% vs baseline 3.10%. p75 LCP 4.20 s vs "
        "baseline 2.10 s. 5,400 sessions in the window.")


def test_the_interval_of_what_was_lost_is_annotated_and_described() -> None:
    """An alert with ``revenue_lost_low`` and ``_high`` carries them as annotations and says
    them in the description; one without them (an older worker's) reads as before."""
    item = alertmanager_alert(make_alert(revenue_lost_low=80.0, revenue_lost_high=190.0),
                              now_ms=NOW)
    notes = item["annotations"]
    assert (notes["revenue_lost_low"], notes["revenue_lost_high"]) == ("80.00", "190.00")
    assert "133 USD lost (90% interval 80 to 190) since 2024-05-01T09:00:00.000Z." in (
        notes["description"])
    older = alertmanager_alert(make_alert(), now_ms=NOW)["annotations"]
    assert "133 USD lost since" in older["description"]


def test_a_drop_held_open_with_nothing_priced_says_so_in_the_description() -> None:
    """The description of an open drop's update with no shortfall priced at its tick says
    it is held open, as its summary does, not "Revenue at risk 0 USD/h (0 to 0)"; a
    slowdown, or a drop whose band is above 0, keeps the figures."""
    held = alertmanager_alert(make_alert(revenue=0.0), now_ms=NOW)["annotations"]
    assert held["description"].startswith(
        "No shortfall priced at this minute: orders as expected in the last minutes, held open "
        "while the last hour shows the drop. 0 USD lost since 2024-05-01T09:00:00.000Z.")
    assert held["revenue_at_risk_per_hour"] == "0.00"  # the figures stay for rules
    slow = make_alert(revenue=0.0, kind="performance_conversion_loss")
    assert alertmanager_alert(slow, now_ms=NOW)["annotations"]["description"].startswith(
        "Revenue at risk 0 USD/h")
    banded = make_alert(revenue=0.0, revenue_at_risk_per_hour_high=150.0)
    assert alertmanager_alert(banded, now_ms=NOW)["annotations"]["description"].startswith(
        "Revenue at risk 0 USD/h (90% interval 0 to 150)")
    resolved = make_alert(revenue=0.0, state="resolved")
    assert alertmanager_alert(resolved, now_ms=NOW)["annotations"]["description"].startswith(
        "Revenue at risk 0 USD/h")


def test_resolved_payload_ends_at_ts() -> None:
    item = alertmanager_alert(make_alert(state="resolved"), now_ms=NOW)
    assert item["endsAt"] == iso_utc(T0 + 10 * MINUTE)


@pytest.mark.parametrize(
    ("state", "ts", "now", "starts", "ends"),
    [
        pytest.param("resolved", T0 + 90 * MINUTE, T0 + 20 * MINUTE, T0, T0 + 20 * MINUTE,
                     id="event-time-ahead-resolves-now"),
        pytest.param("firing", T0 - 600 * MINUTE, T0 - 500 * MINUTE, T0 - 500 * MINUTE,
                     T0 - 485 * MINUTE, id="replay-in-past-fires-until-now-plus-15m"),
    ],
)
def test_payload_times_follow_wall_clock(state: str, ts: int, now: int, starts: int,
                                         ends: int) -> None:
    item = alertmanager_alert(make_alert(state=state, ts=ts), now_ms=now)
    assert (item["startsAt"], item["endsAt"]) == (iso_utc(starts), iso_utc(ends))


@pytest.mark.parametrize(
    ("kind", "revenue", "expected"),
    [
        pytest.param("performance_conversion_loss", 500.0, "page", id="perf-at-budget"),
        pytest.param("conversion_drop", 499.0, "ticket", id="drop-below-budget"),
        pytest.param("latency_regression", 10_000.0, "info", id="latency"),
    ],
)
def test_severity(kind: str, revenue: float, expected: str) -> None:
    assert severity(kind, revenue, 500.0) == expected


async def test_label_change_expires_old_label_set_and_severity_sticks() -> None:
    posted: list[Any] = []

    async def accept(request: web.Request) -> web.Response:
        posted.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", accept)
    async with TestServer(app) as server:
        receiver = AlertmanagerReceiver(str(server.make_url("/")), now_ms=lambda: NOW)
        await receiver.send([make_alert(revenue=100.0)])  # ticket
        await receiver.send([make_alert(revenue=900.0)])  # escalates to page
        await receiver.send([make_alert(revenue=50.0)])  # stays page: no flapping
        await receiver.send([make_alert(state="resolved", revenue=0.0)])
        await receiver.close()
    assert [item["labels"]["severity"] for item in posted[0]] == ["ticket"]
    expired, current = posted[1]
    assert expired["labels"]["severity"] == "ticket"
    assert expired["endsAt"] == iso_utc(NOW)
    assert current["labels"]["severity"] == "page"
    assert [item["labels"]["severity"] for item in posted[2]] == ["page"]
    assert [item["labels"]["severity"] for item in posted[3]] == ["page"]
    assert receiver._sent == {}


def test_a_restarted_worker_resolves_the_page_it_sent() -> None:
    """A fresh receiver (a worker restarted between firing and resolve) remembers no label
    set; the resolve's evidence says the episode paged, so it ends the same label set
    instead of leaving the page open until its ``endsAt``. Without the key (an older
    worker), $0/h at risk would read as a ticket."""
    resolved = make_alert(state="resolved", revenue=0.0)
    resolved["evidence"]["severity"] = "page"
    fresh = AlertmanagerReceiver("http://am.invalid:9093", now_ms=lambda: NOW)
    (item,) = fresh.payload([resolved])
    assert item["labels"]["severity"] == "page"
    assert item["endsAt"] == iso_utc(T0 + 10 * MINUTE)
    (older,) = fresh.payload([make_alert(state="resolved", revenue=0.0)])
    assert older["labels"]["severity"] == "ticket"


def test_the_evidence_never_lowers_what_the_money_says() -> None:
    """An alert whose evidence says ticket but whose money is over this receiver's budget
    pages (the higher of the two: a receiver may run with a lower budget)."""
    alert = make_alert(revenue=900.0)
    alert["evidence"]["severity"] = "ticket"
    assert alertmanager_alert(alert, now_ms=NOW)["labels"]["severity"] == "page"


async def test_last_update_per_alert_wins_within_a_batch() -> None:
    receiver = AlertmanagerReceiver("http://am.invalid:9093", now_ms=lambda: NOW)
    body = receiver.payload([make_alert("a1"), make_alert("a2"),
                             make_alert("a1", state="resolved")])
    assert [(i["labels"]["alert_id"], i["endsAt"]) for i in body] == [
        ("a1", iso_utc(T0 + 10 * MINUTE)), ("a2", iso_utc(NOW + 15 * MINUTE))]


async def test_http_error_raises_delivery_error() -> None:
    async def refuse(_request: web.Request) -> web.Response:
        return web.Response(status=400, text="bad alert")

    app = web.Application()
    app.router.add_post("/hook", refuse)
    async with TestServer(app) as server:
        receiver = WebhookReceiver(str(server.make_url("/hook")))
        with pytest.raises(DeliveryError, match="HTTP 400: bad alert") as info:
            await receiver.send([make_alert()])
        await receiver.close()
    assert info.value.status == 400
