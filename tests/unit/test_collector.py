"""The /beacon endpoint over real HTTP (aiohttp test server), the rate limiter and the sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from streams.collector import (
    PREFLIGHT_HEADERS,
    RateLimiter,
    collector_routes,
    install_collector,
    snippet_path,
)
from streams.errors import InvalidRecord
from streams.records import Beacon
from streams.settings import Settings
from streams.sink import KEY_CACHE_SIZE, KafkaSink, ListSink, _key_hash
from tests.unit.test_beacons import (
    BOOMR_SESSION,
    SCRUBBED,
    SESSION,
    boomerang_load,
    boomerang_unload,
    snippet_record,
    web_vitals_record,
)

SITE = "https://shop.example"
EPOCH_S = 1_795_446_040.0


class Recorder:
    """Collects on_result and on_invalid calls."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.dead: list[tuple[InvalidRecord, bytes]] = []

    def on_result(self, source: str, outcome: str, count: int) -> None:
        self.counts[source, outcome] = self.counts.get((source, outcome), 0) + count

    def on_invalid(self, error: InvalidRecord, raw: bytes) -> None:
        self.dead.append((error, raw))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(sink: Any = None, recorder: Recorder | None = None,
                   limiter: RateLimiter | None = None, **settings: Any) -> TestClient[
                       web.Request, web.Application]:
        app = web.Application()
        recorder = recorder or Recorder()
        app.add_routes(collector_routes(
            Settings(**settings), sink if sink is not None else ListSink(), recorder.on_result,
            recorder.on_invalid, clock=lambda: EPOCH_S, limiter=limiter))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_web_vitals_text_plain_beacon(make_client: MakeClient) -> None:
    sink, recorder = ListSink(), Recorder()
    client = await make_client(sink, recorder)
    body = orjson.dumps(web_vitals_record())
    response = await client.post("/beacon", data=body,
                                 headers={"Content-Type": "text/plain;charset=UTF-8",
                                          "User-Agent": "HeadlessChrome/156"})
    assert response.status == 204
    assert await response.read() == b""
    (beacon,) = sink.beacons
    assert (beacon.page_url, beacon.lcp_ms, beacon.received_at) == (SCRUBBED, 508, EPOCH_S * 1000)
    assert beacon.user_agent == "HeadlessChrome/156"
    assert recorder.counts == {("web-vitals", "accepted"): 1}


@pytest.mark.parametrize("referrer", [
    pytest.param("https://shop.example/cart?x=1", id="full-url"),
    pytest.param("https://shop.example", id="origin"),  # what revwatch-rum.js sends
])
async def test_referrer_reaches_the_sink_as_its_origin_only(make_client: MakeClient,
                                                            referrer: str) -> None:
    sink, recorder = ListSink(), Recorder()
    client = await make_client(sink, recorder)
    bodies = [(orjson.dumps(web_vitals_record(referrer=referrer)), "text/plain"),
              (urlencode(boomerang_load(r=referrer)).encode(),
               "application/x-www-form-urlencoded")]
    for body, content_type in bodies:
        response = await client.post("/beacon", data=body,
                                     headers={"Content-Type": content_type})
        assert response.status == 204
    image = await client.get("/beacon?" + urlencode(boomerang_unload(r=referrer)))
    assert image.status == 204
    assert [b.referrer for b in sink.beacons] == [SITE] * 3
    for beacon in sink.beacons:
        assert b"cart" not in beacon.to_json()
        assert b"x=1" not in beacon.to_json()


@pytest.mark.parametrize("referrer", [
    pytest.param("", id="empty"),
    pytest.param(None, id="missing"),
    pytest.param(17, id="number"),
    pytest.param({"href": "https://shop.example/cart"}, id="object"),
    pytest.param("not a url", id="no-origin"),
])
async def test_beacon_without_a_usable_referrer_is_accepted_without_one(
        make_client: MakeClient, referrer: Any) -> None:
    sink, recorder = ListSink(), Recorder()
    client = await make_client(sink, recorder)
    body = orjson.dumps(web_vitals_record(referrer=referrer))
    response = await client.post("/beacon", data=body, headers={"Content-Type": "text/plain"})
    assert response.status == 204
    (beacon,) = sink.beacons
    assert (beacon.referrer, beacon.lcp_ms) == (None, 508)
    assert b"referrer" not in beacon.to_json()
    assert recorder.counts == {("web-vitals", "accepted"): 1}


async def test_json_array_beacon(make_client: MakeClient) -> None:
    sink = ListSink()
    client = await make_client(sink)
    records = [snippet_record(), snippet_record(name="CLS", value=0.08)]
    response = await client.post("/beacon", data=orjson.dumps(records),
                                 headers={"Content-Type": "application/json"})
    assert response.status == 204
    assert [b.cls for b in sink.beacons] == [None, 0.08]


async def test_boomerang_form_post_and_get(make_client: MakeClient) -> None:
    sink, recorder = ListSink(), Recorder()
    client = await make_client(sink, recorder)
    form = await client.post("/beacon", data=urlencode(boomerang_load()), headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    image = await client.get("/beacon?" + urlencode(boomerang_unload()))
    assert (form.status, image.status) == (204, 204)
    assert [b.beacon_id for b in sink.beacons] == [f"{BOOMR_SESSION}:tv3oaekg"] * 2
    assert [b.inp_ms for b in sink.beacons] == [None, 128]
    assert recorder.counts == {("boomerang", "accepted"): 2}


async def test_partly_bad_array_accepts_the_good_and_dead_letters_the_bad(
    make_client: MakeClient,
) -> None:
    sink, recorder = ListSink(), Recorder()
    client = await make_client(sink, recorder)
    body = orjson.dumps([snippet_record(), snippet_record(value=-1), "junk"])
    response = await client.post("/beacon", data=body, headers={"Content-Type": "text/plain"})
    assert response.status == 204
    assert len(sink.beacons) == 1
    assert recorder.counts == {("web-vitals", "accepted"): 1, ("web-vitals", "invalid"): 2}
    assert [raw for _, raw in recorder.dead][1] == b'"junk"'
    assert "out of range" in recorder.dead[0][0].reason


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    pytest.param(b'{"name":"LCP","value":', "text/plain", "not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe{}", "text/plain", "body is not UTF-8", id="not-utf8"),
    pytest.param(b"[1, 2]", "application/json", "expected a JSON object, got int",
                 id="wrong-types"),
    pytest.param(orjson.dumps(web_vitals_record(session_id=None)), "text/plain",
                 "web-vitals record has no 'session_id'", id="no-session"),
    pytest.param(b'{"name":"LCP","value":NaN,"session_id":"s"}', "text/plain",
                 "not valid JSON", id="nan"),
    pytest.param(orjson.dumps(snippet_record(value=-20)), "text/plain", "out of range",
                 id="negative"),
    pytest.param(orjson.dumps(snippet_record(value={"a": [{"b": None}]})), "text/plain",
                 "must be a number", id="nested-junk"),
    pytest.param(b"x=1", "application/xml", "unsupported content type", id="xml"),
    pytest.param(urlencode(boomerang_load(**{"rt.si": None, "nocookie": "1"})).encode(),
                 "application/x-www-form-urlencoded", "site_domain", id="boomerang-nocookie"),
])
async def test_unreadable_bodies_get_400_json(make_client: MakeClient, body: bytes,
                                              content_type: str, reason: str) -> None:
    sink, recorder = ListSink(), Recorder()
    client = await make_client(sink, recorder)
    response = await client.post("/beacon", data=body, headers={"Content-Type": content_type})
    assert response.status == 400
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert reason in error
    assert sink.beacons == []
    ((_, outcome), count), = recorder.counts.items()
    assert outcome == "invalid"
    assert count == len(recorder.dead) == (2 if body == b"[1, 2]" else 1)


@pytest.mark.parametrize("body", [
    pytest.param(b'{"name": "<script>alert(1)</script>", "value": 1}', id="name"),
    pytest.param(b"<script>alert(1)</script>", id="whole-body"),
    pytest.param(orjson.dumps(snippet_record(session_id="<img src=x onerror=alert(1)>" * 20)),
                 id="long-session"),
    pytest.param(orjson.dumps(snippet_record(page_url={"<b>": "&amp;"})), id="url-object"),
    pytest.param(orjson.dumps(snippet_record(value="<svg/onload=alert(1)>")), id="value"),
])
async def test_errors_never_echo_input(make_client: MakeClient, body: bytes) -> None:
    client = await make_client()
    response = await client.post("/beacon", data=body, headers={"Content-Type": "text/plain"})
    raw = await response.read()
    assert response.status == 400
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert list(orjson.loads(raw)) == ["error"]
    for fragment in (b"<", b">", b"alert", b"onerror", b"&amp;"):
        assert fragment not in raw


async def test_error_reasons_are_json_escaped() -> None:
    from streams.collector import _error_response, _Reject

    response = _error_response(_Reject(400, "invalid", 'bad <tag> & "quote"'), {})
    assert isinstance(response.body, bytes)
    assert response.body == b'{"error":"bad \\u003ctag\\u003e \\u0026 \\"quote\\""}'
    assert orjson.loads(response.body) == {"error": 'bad <tag> & "quote"'}


async def test_body_over_the_limit_by_content_length_is_413(make_client: MakeClient) -> None:
    recorder = Recorder()
    client = await make_client(recorder=recorder, max_body_bytes=2048)
    body = orjson.dumps([snippet_record()] * 20)
    assert len(body) > 2048
    response = await client.post("/beacon", data=body, headers={"Content-Type": "text/plain"})
    assert response.status == 413
    assert "larger than 2048 bytes" in (await response.json())["error"]
    assert recorder.counts == {("web-vitals", "too_large"): 1}


async def test_chunked_body_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"[" + b" " * 1000

    response = await client.post("/beacon", data=chunks(), headers={"Content-Type": "text/plain"})
    assert response.status == 413


async def test_get_query_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)
    response = await client.get("/beacon?" + urlencode([*boomerang_load(), ("pad", "x" * 1024)]))
    assert response.status == 413


async def test_full_sink_is_503_with_retry_after(make_client: MakeClient) -> None:
    sink, recorder = ListSink(capacity=1), Recorder()
    client = await make_client(sink, recorder)
    body = orjson.dumps([snippet_record(), snippet_record(name="FCP", value=100)])
    response = await client.post("/beacon", data=body, headers={"Content-Type": "text/plain"})
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert sink.beacons == []  # all or nothing
    assert recorder.counts == {("web-vitals", "overloaded"): 2}


async def test_rate_limit_is_429_per_client_and_refills(make_client: MakeClient) -> None:
    clock, recorder = FakeClock(), Recorder()
    client = await make_client(recorder=recorder, limiter=RateLimiter(2, clock=clock))
    body = orjson.dumps(snippet_record())
    statuses = [(await client.post("/beacon", data=body)).status for _ in range(2)]
    limited = await client.post("/beacon", data=body)
    assert [*statuses, limited.status] == [204, 204, 429]
    assert limited.headers["Retry-After"] == "30"  # 2 a minute: one token every 30 s
    clock.now += 30
    assert (await client.post("/beacon", data=body)).status == 204
    assert recorder.counts[("web-vitals", "rate_limited")] == 1


def test_rate_limiter_is_per_client_bounded_and_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, max_clients=3, clock=clock)
    assert [limiter.retry_after_s("a") for _ in range(60)] == [0.0] * 60
    assert limiter.retry_after_s("a") == pytest.approx(1.0)
    assert limiter.retry_after_s("b") == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert limiter.retry_after_s("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.retry_after_s("a") == 0.0
    for client in ("c", "d", "e"):
        limiter.retry_after_s(client)
    assert len(limiter._buckets) == 3  # least recently seen dropped
    assert "a" not in limiter._buckets
    assert RateLimiter(0).retry_after_s("x") == 0.0  # 0 turns it off


@pytest.mark.parametrize(("cors_origins", "origin", "status"), [
    pytest.param((SITE,), SITE, 204, id="listed"),
    pytest.param((), "https://anyone.example", 204, id="any-when-empty"),
    pytest.param((SITE,), "https://evil.example", 403, id="not-listed"),
    pytest.param((), "https://" + "x" * 400, 403, id="garbage-origin"),
])
async def test_cors_preflight(make_client: MakeClient, cors_origins: tuple[str, ...],
                              origin: str, status: int) -> None:
    client = await make_client(cors_origins=cors_origins)
    response = await client.options("/beacon", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert response.status == status
    assert response.headers["Vary"] == "Origin"
    if status == 204:
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        for name, value in PREFLIGHT_HEADERS.items():
            assert response.headers[name] == value
        assert PREFLIGHT_HEADERS == {"Access-Control-Allow-Methods": "POST, GET, OPTIONS",
                                     "Access-Control-Allow-Headers": "content-type",
                                     "Access-Control-Max-Age": "600"}
    else:
        assert "Access-Control-Allow-Origin" not in response.headers
        assert await response.json() == {"error": "origin not allowed"}


async def test_post_responses_carry_cors_headers(make_client: MakeClient) -> None:
    sink = ListSink()
    client = await make_client(sink, cors_origins=(SITE,))
    ok = await client.post("/beacon", data=orjson.dumps(snippet_record()),
                           headers={"Origin": SITE, "Content-Type": "application/json"})
    bad = await client.post("/beacon", data=b"{", headers={"Origin": SITE})
    for response in (ok, bad):
        assert response.headers["Access-Control-Allow-Origin"] == SITE
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert (ok.status, bad.status) == (204, 400)
    other = await client.post("/beacon", data=orjson.dumps(snippet_record()),
                              headers={"Origin": "https://evil.example"})
    assert other.status == 403
    assert "Access-Control-Allow-Origin" not in other.headers
    no_origin = await client.get("/beacon?" + urlencode(boomerang_load()))  # <img> beacons
    assert no_origin.status == 204
    assert len(sink.beacons) == 2


async def test_snippet_is_served(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/revwatch-rum.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert b"navigator.sendBeacon" in await response.read()


def test_the_snippet_is_read_from_the_source_folder_even_when_compiled() -> None:
    # built with mypyc, collector.__file__ is in .native/, which holds no static files
    source = Path(__file__).resolve().parents[2] / "streams" / "static" / "revwatch-rum.js"
    assert snippet_path() == source
    assert snippet_path().read_bytes() == source.read_bytes()


def test_install_collector_adds_routes_to_a_faust_app() -> None:
    import faust

    app = faust.App("revwatch-test-collector", broker="kafka://127.0.0.1:1",
                    store="memory://", web_enabled=True)
    install_collector(app, Settings(), ListSink())
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]  # aiohttp driver
    routes = {(r.method, r.resource.canonical) for r in web_app.router.routes()
              if r.resource is not None}
    assert {("POST", "/beacon"), ("GET", "/beacon"), ("OPTIONS", "/beacon")} <= routes


# --- KafkaSink with a fake producer ------------------------------------------------------


class FakeBroker:
    """A producer factory whose producers fail ``down_starts`` starts and ``down_sends`` sends."""

    def __init__(self, down_starts: int = 0, down_sends: int = 0) -> None:
        self.down_starts = down_starts
        self.down_sends = down_sends
        self.log: list[tuple[str, bytes, bytes]] = []
        self.partitions_of: list[int] = []
        self.partitions = 1
        self.batch_records = 1_000
        self.stopped = 0

    def __call__(self) -> FakeBroker.Producer:
        return FakeBroker.Producer(self)

    class Producer:
        def __init__(self, broker: FakeBroker) -> None:
            self.broker = broker

        async def start(self) -> None:
            if self.broker.down_starts > 0:
                self.broker.down_starts -= 1
                msg = "broker away"
                raise KafkaConnectionError(msg)

        async def stop(self) -> None:
            self.broker.stopped += 1

        async def partitions_for(self, topic: str) -> set[int]:
            return set(range(self.broker.partitions))

        def create_batch(self) -> FakeBroker.Batch:
            return FakeBroker.Batch(self.broker.batch_records)

        async def send_batch(self, batch: FakeBroker.Batch, topic: str, *,
                             partition: int) -> asyncio.Future[None]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self.broker.down_sends > 0:
                self.broker.down_sends -= 1
                future.set_exception(KafkaTimeoutError())
            else:
                self.broker.log.extend((topic, key, value) for key, value in batch.records)
                self.broker.partitions_of.extend(partition for _ in batch.records)
                future.set_result(None)
            return future

    class Batch:
        """Holds up to ``size`` records (the first always)."""

        def __init__(self, size: int) -> None:
            self.size = size
            self.records: list[tuple[bytes, bytes]] = []

        def append(self, *, timestamp: int | None, key: bytes, value: bytes) -> object:
            if self.records and len(self.records) >= self.size:
                return None
            self.records.append((key, value))
            return object()


def beacons(n: int, session: str = SESSION) -> Sequence[Beacon]:
    return [Beacon(beacon_id=f"{session}:{i}", session_id=session, ts=1_795_446_035_000 + i,
                   page_url="https://s.example/", lcp_ms=float(i)) for i in range(n)]


async def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"not true within {timeout_s} s")


async def test_sink_retries_until_the_broker_returns_and_loses_nothing() -> None:
    broker = FakeBroker(down_starts=2, down_sends=1)
    sink = KafkaSink(Settings(buffer_max_records=10), topic="beacons", producer_factory=broker)
    assert sink.offer(beacons(4))
    await sink.start()
    await wait_for(lambda: sink.sent == 4)
    assert sink.failed_attempts == 3
    assert sink.buffered == 0
    assert sink.connected
    values = [orjson.loads(v) for _, _, v in broker.log]
    assert {v["beacon_id"] for v in values} == {f"{SESSION}:{i}" for i in range(4)}
    assert {(t, k) for t, k, _ in broker.log} == {("beacons", SESSION.encode())}
    await sink.stop(flush_timeout_s=1)
    assert not sink.connected


async def test_sink_batches_each_record_to_its_key_partition_in_order() -> None:
    broker = FakeBroker()
    broker.partitions, broker.batch_records = 8, 3  # full batches are sent and restarted
    sink = KafkaSink(Settings(), topic="beacons", producer_factory=broker)
    offered = [b for n in range(6) for b in beacons(4, session=f"session-{n}")]
    assert sink.offer(offered)
    await sink.start()
    await wait_for(lambda: sink.sent == len(offered))
    await sink.stop(flush_timeout_s=1)
    by_key = {b.session_id.encode(): b for b in offered}
    expected = {key: DefaultPartitioner()(key, list(range(8)), list(range(8)))
                for key in by_key}
    assert len(set(expected.values())) > 1
    assert [(k, p) for (_, k, _), p in zip(broker.log, broker.partitions_of, strict=True)] \
        == [(k, expected[k]) for _, k, _ in broker.log]
    assert sorted(v for _, _, v in broker.log) == sorted(b.to_json() for b in offered)
    for key in by_key:  # one session's records keep their order
        assert [v for _, k, v in broker.log if k == key] == \
            [b.to_json() for b in offered if b.session_id.encode() == key]


def test_sink_key_cache_gives_the_default_partitioner_s_partition_and_is_bounded() -> None:
    keys = [f"s-{n}-\u00e9" * (n % 7) for n in range(1, 3_000)] + ["", "7" * 200]
    for count in (1, 3, 8, 12):
        partitions = list(range(count))
        for key in keys * 2:  # cold, then cached
            raw, hashed = _key_hash(key)
            assert raw == key.encode()
            assert partitions[hashed % count] == DefaultPartitioner()(raw, partitions,
                                                                       partitions)
    for n in range(KEY_CACHE_SIZE + 100):
        _key_hash(f"fill-{n}")
    assert _key_hash.cache_info().currsize == KEY_CACHE_SIZE


async def test_sink_buffer_is_bounded_and_all_or_nothing() -> None:
    sink = KafkaSink(Settings(buffer_max_records=5), producer_factory=FakeBroker(down_starts=99))
    assert sink.offer(beacons(3))
    assert not sink.offer(beacons(3))
    assert sink.offer(beacons(2))
    assert sink.buffered == 5
    assert not sink.offer(beacons(1))


async def test_sink_stop_flushes_then_gives_up_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    sink = KafkaSink(Settings(), producer_factory=broker)
    await sink.start()
    sink.offer(beacons(3))
    await sink.stop(flush_timeout_s=2)
    assert sink.sent == 3
    away = KafkaSink(Settings(), producer_factory=FakeBroker(down_starts=10**6))
    await away.start()
    away.offer(beacons(2))
    await away.stop(flush_timeout_s=0.3)
    assert away.buffered == 2
    assert "stopped with 2 records unsent" in caplog.text


async def test_sink_behind_the_collector_end_to_end(make_client: MakeClient) -> None:
    broker = FakeBroker(down_starts=1)
    sink = KafkaSink(Settings(), topic="rum", producer_factory=broker)
    await sink.start()
    client = await make_client(sink)
    response = await client.post("/beacon", data=orjson.dumps(snippet_record()))
    assert response.status == 204
    await wait_for(lambda: sink.sent == 1)
    await sink.stop(flush_timeout_s=1)
    (_, key, value), = broker.log
    assert key == SESSION.encode()
    assert orjson.loads(value)["beacon_id"] == f"{SESSION}:eb31f3fd89badeff"
