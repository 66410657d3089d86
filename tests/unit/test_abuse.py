"""Abuse of the collector and of the state behind it (issue "Reliability", item 5).

Over a real aiohttp server: body limits, the per-client rate limit (not bypassed by
spoofed headers), hostile strings never reflected unescaped, client IP addresses never in
a stored record, query parameters off the allow-list dropped before anything is stored
(beacons and dead letters). In process: one client inventing 10,000 campaigns cannot grow
the Prometheus label sets past ``max_campaign_labels + 1``, and the sessionizer and the
monitor give their memory back (measured with tracemalloc) once sessions expire by the
watermark and idle campaigns are evicted.
"""

from __future__ import annotations

import gc
import io
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from detectors.monitor import Monitor, MonitorParams
from streams.collector import RateLimiter, collector_routes
from streams.errors import InvalidRecord
from streams.health import build_view
from streams.metrics import OTHER, CampaignHealth, Metrics
from streams.pipeline import apply_fact
from streams.records import Beacon
from streams.sessions import Sessionizer
from streams.settings import Settings
from streams.sink import ListSink
from tests.unit.test_beacons import boomerang_load, snippet_record

EPOCH_S = 1_795_446_040.0
T0 = 1_795_446_000_000
SPOOFED_IP = "203.0.113.77"
PII = ("email", "a%40b.example", "token", "gclid", "fbclid", "sku", "s3cr3t")
PAYLOADS = ('<script>alert(1)</script>', '"><img src=x onerror=alert(1)>',
            "javascript:alert(1)", "</style><svg/onload=alert(1)>", "{{7*7}}${7*7}")


class Dead:
    """Collects dead letters (what the worker would write to the dead-letter topic)."""

    def __init__(self) -> None:
        self.records: list[tuple[InvalidRecord, bytes]] = []

    def __call__(self, error: InvalidRecord, raw: bytes) -> None:
        self.records.append((error, raw))


Make = Callable[..., Awaitable[tuple[TestClient[web.Request, web.Application], ListSink, Dead]]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def build(limiter: RateLimiter | None = None, **settings: Any) -> tuple[
            TestClient[web.Request, web.Application], ListSink, Dead]:
        sink, dead, app = ListSink(), Dead(), web.Application()
        app.add_routes(collector_routes(Settings(**settings), sink, on_invalid=dead,
                                        clock=lambda: EPOCH_S, limiter=limiter))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client, sink, dead

    yield build
    for client in clients:
        await client.close()


def stored(sink: ListSink, dead: Dead) -> bytes:
    """Everything that would reach Kafka: the beacons' JSON and the dead letters."""
    values = [b.to_json() for b in sink.beacons]
    values += [orjson.dumps(error.to_dead_letter("rum-beacons", raw, 0))
               for error, raw in dead.records]
    return b"\n".join(values)


# --- body size and rate --------------------------------------------------------------------


async def test_bodies_over_the_limit_are_refused_before_they_are_read(make: Make) -> None:
    client, sink, dead = await make(max_body_bytes=4_096)
    megabyte = orjson.dumps([snippet_record(value=i) for i in range(5_000)])
    assert len(megabyte) > 1_000_000
    declared = await client.post("/beacon", data=io.BytesIO(megabyte),
                                 headers={"Content-Type": "text/plain"})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 16_384

    chunked = await client.post("/beacon", data=chunks())
    query = await client.get("/beacon?" + urlencode([*boomerang_load(), ("x", "y" * 5_000)]))
    assert [r.status for r in (declared, chunked, query)] == [413, 413, 413]
    assert (await declared.json())["error"] == "body larger than 4096 bytes"
    # a request line beyond aiohttp's own limit (8190 bytes) never reaches the collector;
    # aiohttp answers as text/plain quoting ~100 bytes of the (percent-encoded) line
    huge = await client.get("/beacon?" + urlencode({"x": "<script>" * 10_000}))
    assert (huge.status, huge.content_type) == (400, "text/plain")
    assert b"<" not in await huge.read()
    assert (sink.beacons, dead.records) == ([], [])  # nothing parsed, nothing stored


async def test_rate_limit_is_per_client_and_spoofed_headers_do_not_reset_it(make: Make) -> None:
    client, sink, _ = await make(limiter=RateLimiter(5, clock=lambda: 100.0))
    body = orjson.dumps(snippet_record())
    statuses = []
    for i in range(8):
        response = await client.post("/beacon", data=body, headers={
            "X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"198.51.100.{i}",
            "Forwarded": f"for=198.51.100.{i}"})
        statuses.append(response.status)
    assert statuses == [204] * 5 + [429] * 3
    assert int(response.headers["Retry-After"]) == 12  # 5 a minute: a token every 12 s
    # another client address (127.0.0.2 on the loopback) has its own bucket
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other, \
            other.post(client.make_url("/beacon"), data=body) as response:
        assert response.status == 204
    assert len(sink.beacons) == 6


def test_rate_limiter_memory_is_bounded_with_many_clients() -> None:
    limiter = RateLimiter(60, max_clients=1_000, clock=lambda: 0.0)
    tracemalloc.start()
    try:
        for i in range(20_000):
            limiter.retry_after_s(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(limiter._buckets) == 1_000
    assert used < 1_000_000, f"{used} bytes for 1,000 tracked clients"


# --- reflection ------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_hostile_strings_are_never_reflected(make: Make, payload: str) -> None:
    client, _, _ = await make()
    attempts = [
        client.post("/beacon", data=payload.encode(), headers={"Content-Type": "text/plain"}),
        client.post("/beacon", data=orjson.dumps(snippet_record(name=payload))),
        client.post("/beacon", data=orjson.dumps({payload: payload})),
        client.post("/beacon", data=orjson.dumps(snippet_record(value=payload))),
        client.post("/beacon", data=urlencode({"rt.si": payload, "pid": payload}).encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"}),
        client.get("/beacon?" + urlencode({payload: payload})),
        client.post("/beacon", data=b"{}", headers={"Content-Type": payload}),
        client.post("/beacon", data=b"{}", headers={"Origin": "https://a.example" + payload}),
        client.options("/beacon", headers={"Origin": payload}),
        client.post("/beacon", data=b"{}", headers={"User-Agent": payload}),
    ]
    for attempt in attempts:
        response = await attempt
        raw = await response.read()
        assert 400 <= response.status < 500
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.content_type == "application/json"
        assert list(orjson.loads(raw)) == ["error"]
        exposed = raw + repr(dict(response.headers)).encode()
        for fragment in ("<", ">", "alert", "onerror", "javascript:", "{{7*7}}"):
            assert fragment.encode() not in exposed, (payload, response.status, exposed)


# --- what is stored: no IP, no query parameter off the allow-list --------------------------


async def test_client_addresses_are_never_stored(make: Make) -> None:
    client, sink, dead = await make()
    spoof = {"X-Forwarded-For": f"{SPOOFED_IP}, 10.1.2.3", "X-Real-IP": SPOOFED_IP,
             "Forwarded": f"for={SPOOFED_IP}", "Client-IP": SPOOFED_IP}
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0))
    async with aiohttp.ClientSession(connector=connector, headers=spoof) as session:
        for data, ctype in (
            (orjson.dumps([snippet_record(), snippet_record(value=-1)]), "text/plain"),
            (urlencode(boomerang_load()).encode(), "application/x-www-form-urlencoded"),
            (orjson.dumps({"beacon_id": "b", "session_id": "s", "ts": T0,
                           "page_url": "https://shop.example/"}), "application/json"),
            (b'{"truncated":', "text/plain"),
        ):
            async with session.post(client.make_url("/beacon"), data=data,
                                    headers={"Content-Type": ctype}) as response:
                assert response.status in (204, 400)
    assert len(sink.beacons) == 3
    assert len(dead.records) == 2
    everything = stored(sink, dead)
    for address in (SPOOFED_IP, "10.1.2.3", "127.0.0.9"):
        assert address.encode() not in everything


async def test_query_parameters_off_the_allow_list_are_dropped_before_storage(
        make: Make) -> None:
    client, sink, dead = await make(allowed_query_params=("variant",))
    url = ("https://u:pw@shop.example/p?utm_campaign=spring&email=a%40b.example&token=s3cr3t"
           "&variant=b&gclid=G1&fbclid=F1&sku=9#frag")
    bodies = [
        (orjson.dumps(snippet_record(page_url=url)), "text/plain"),
        (urlencode(boomerang_load(u=url)).encode(), "application/x-www-form-urlencoded"),
        (orjson.dumps({"beacon_id": "b", "session_id": "s", "ts": T0, "page_url": url,
                       "referrer": url}), "application/json"),
        (orjson.dumps([snippet_record(page_url=url, value=-5)]), "text/plain"),  # invalid
        (b'[{"page_url":"' + url.encode() + b'","value":', "text/plain"),  # unreadable
        (urlencode(boomerang_load(u=url)).encode() + b"&\xff", "application/x-www-form-"
         "urlencoded"),  # unreadable (not UTF-8)
    ]
    for data, ctype in bodies:
        await client.post("/beacon", data=data, headers={"Content-Type": ctype})
    await client.get("/beacon?" + urlencode(boomerang_load(u=url)))
    assert len(sink.beacons) == 4
    assert len(dead.records) == 3
    for beacon in sink.beacons:
        parts = urlsplit(beacon.page_url)
        assert dict(parse_qsl(parts.query)) == {"utm_campaign": "spring", "variant": "b"}
        assert (parts.fragment, parts.username) == ("", None)
    everything = stored(sink, dead)
    for secret in PII:
        assert secret.encode() not in everything, secret


# --- labels and table keys a single client can create --------------------------------------


def _series(registry: CollectorRegistry, label: str) -> dict[str, set[str]]:
    """Distinct values of ``label`` per metric family in the exposition text."""
    found: dict[str, set[str]] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("#") or f'{label}="' not in line:
            continue
        name = line.partition("{")[0]
        found.setdefault(name, set()).add(line.partition(f'{label}="')[2].partition('"')[0])
    return found


def test_ten_thousand_campaigns_keep_labels_bounded() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, max_campaign_labels=50)
    rows = [CampaignHealth(f"c{i}", sessions_per_minute=float(i % 97), conversion_rate=0.02,
                           conversion_rate_baseline=0.03, lcp_p75_ms=2000.0,
                           lcp_p75_baseline_ms=1800.0, revenue_at_risk_per_hour=1.0)
            for i in range(10_000)]
    metrics.set_campaign_health(rows)
    metrics.set_alerts_firing((f"c{i}", "latency_regression") for i in range(10_000))
    for name, values in _series(registry, "campaign").items():
        assert len(values) <= 51, (name, len(values))
        assert OTHER in values
    assert registry.get_sample_value("revwatch_campaigns_tracked") == 10_000
    assert registry.get_sample_value("revwatch_alerts_firing", {
        "campaign": OTHER, "kind": "latency_regression"}) == 10_000 - 50
    metrics.set_campaign_health([])
    metrics.set_alerts_firing([])
    assert _series(registry, "campaign") == {}  # campaigns that went away are removed


def _beacon(i: int, campaign: str, ts: int) -> Beacon:
    return Beacon(beacon_id=f"b{i}", session_id=f"s{i}", ts=ts, received_at=ts,
                  page_url=f"https://shop.example/?utm_campaign={campaign}", lcp_ms=1500.0)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_invented_campaigns_reach_the_monitor_and_metrics_bounded_then_evicted() -> None:
    """Sessionizer -> Monitor -> Metrics with 2,000 campaigns (10,000 take ~5 s per tick)."""
    n = 2_000
    sessionizer = Sessionizer()
    cap = 500
    monitor = Monitor(MonitorParams(idle_ttl_minutes=3, max_campaigns=cap))
    registry = CollectorRegistry()
    metrics = Metrics(registry, max_campaign_labels=20)
    facts = [fact for i in range(n)
             for fact in sessionizer.observe_beacon(_beacon(i, f"inv-{i}", T0 + 30 * i))]
    assert len({fact.campaign for fact in facts}) == n
    tracemalloc.start()
    try:
        monitor.advance(T0)
        before = _traced()
        for fact in facts:
            apply_fact(monitor, fact)
        verdicts = monitor.advance(T0 + 2 * 60_000)
        metrics.set_campaign_health(build_view(verdicts, [], "USD").health_rows())
        assert len(monitor.models) == cap + 1  # the first 500, and (other) for the rest
        assert monitor.models["(other)"].ring.get(T0) is not None
        grown = _traced() - before
        assert {len(v) for v in _series(registry, "campaign").values()} <= set(range(22))
        verdicts = monitor.advance(T0 + 7 * 60_000)  # idle for > 3 minutes: evicted
        changes = monitor.drain_changes()
        del verdicts
        left = _traced() - before
    finally:
        tracemalloc.stop()
    assert monitor.models == {}
    assert sum(1 for key, value in changes.items()
               if key.endswith("|model") and value is None) == cap + 1  # keys deleted
    assert grown / (cap + 1) < 20_000, f"{grown / (cap + 1):.0f} bytes per campaign"
    assert left < grown / 10, f"{left} bytes kept of {grown} after eviction"


def test_invented_sessions_expire_by_watermark_and_memory_stays_flat() -> None:
    sessionizer = Sessionizer()
    ttl = sessionizer.params.ttl_ms
    tracemalloc.start()
    try:
        before, peaks, residues = _traced(), [], []
        for round_ in range(3):
            start = T0 + round_ * 2 * ttl
            for i in range(5_000):
                sessionizer.observe_beacon(_beacon(i, "c", start + i))
            sessionizer.advance()
            sessionizer.drain_changes()
            peaks.append(_traced() - before)
            sessionizer.advance(start + 5_000 + ttl + 60_000)
            _, deleted = sessionizer.drain_changes()
            assert (len(sessionizer), len(deleted)) == (0, 5_000)
            residues.append(_traced() - before)
    finally:
        tracemalloc.stop()
    assert peaks[0] / 5_000 < 3_000, f"{peaks[0] / 5_000:.0f} bytes per live session"
    assert residues[2] <= residues[0] + 100_000, residues  # flat: nothing accumulates
    assert sessionizer._due == []


def test_one_hundred_thousand_invented_sessions_all_expire() -> None:
    sessionizer = Sessionizer()
    for i in range(100_000):
        sessionizer.observe_beacon(_beacon(i, f"c{i % 10_000}", T0 + i))
    assert len(sessionizer) == 100_000
    sessionizer.advance(T0 + 100_000 + sessionizer.params.ttl_ms + 60_000)
    changed, deleted = sessionizer.drain_changes()
    assert (len(sessionizer), len(changed), len(deleted)) == (0, 0, 100_000)
    assert sessionizer._due == []
