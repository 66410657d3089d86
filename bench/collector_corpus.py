"""Behaviour check for collector speed work: a fixed corpus through the collector, as lines.

Generated inputs (seeded, so the same on every run) go through ``scrub_url``,
``parse_collector_body``, the sink's record batching (``KafkaSink._send`` with a fake
producer: topic, partition, key, value in order) and HTTP requests through
``collector_routes`` (status, headers but ``Date``/``Server``, body, counts, dead letters,
beacons handed to the sink). Every result is one line; compare the lines of two versions:

    python bench/collector_corpus.py --write /tmp/before.txt      # before a change
    python bench/collector_corpus.py --compare /tmp/before.txt    # after: exit 1 on a diff
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.beacons import parse_collector_body
from streams.collector import RateLimiter, collector_routes
from streams.errors import InvalidRecord
from streams.records import Beacon
from streams.settings import Settings
from streams.sink import KafkaSink, ListSink
from streams.urls import scrub_url

SEED = 20261204
LONG = "https://shop.example/" + "a" * 4040
URLS: list[Any] = [
    "https://shop.example/p?utm_campaign=spring_sale&utm_source=news&sku=123",
    "https://u:pw@shop.example/p?sku=1&utm_source=news&email=a%40b#top",
    "https://shop.example/p#utm_campaign=x", "http://[::1]:8080/x?utm_x=1&q=2",
    "http://[::1/x?utm_a=1", "http://[zz]/", "", "   ", "?utm_a=1&b=2", "/relative?q=1",
    "https://shop.example/p?%75tm_campaign=x&UTM_Source=1&a=1&&utm_b&utm_c=",
    "https://shop.example/\u00e9t\u00e9?utm_campaign=\u00e9&q=\u00e9", "javascript:alert(1)",
    LONG + "?utm_a=1", LONG + "?" + "q=1&" * 20, LONG + "a" * 60, "https://shop.example",
    "https://shop.example/p?sku=9&q=x&sku=10", 7, None, ["x"], {"a": 1}, True,
    "http://127.0.0.1:8720/product.html?utm_campaign=spring_sale&utm_source=newsletter",
]
NUMBERS: list[Any] = [0, 508, 2310.5, -1, 600_000, 600_000.5, 600_001, True, "12", None, 1e308,
                      0.1, 2**70, [], 33]
IDS: list[Any] = ["s-0123456789abcdef", "", "x" * 200, "x" * 201, 7, None, "\u00e9\u00e8",
                  "7e06ee96-7380-47a5-87b4-5539bdcd0cca", "s-2", "s-3", "s-4", "s-5"]
TS: list[Any] = [1740960000734, 946_684_799_999, 946_684_800_000, 4_102_444_800_000,
                 4_102_444_800_001, 1.5e12, 1740960000734.7, "x", True, None, -5, 2**70]
STRINGS: list[Any] = [None, "", "spring_sale", "x" * 201, 5, "mobile", "desktop", "tablet",
                      "Mobile", "checkout"]
AGENTS: list[Any] = [None, "", "Mozilla/5.0 (X11; Linux x86_64)", "u" * 1500, 3]
EXTRAS: list[tuple[str, Any]] = [
    ("referrer", URLS[1]), ("referrer", ""), ("u", URLS[0]), ("r", URLS[4]), ("pgu", 5),
    ("nu", URLS[3]), ("navigationURL", URLS[2]), ("attribution", {"url": URLS[0], "t": [1]}),
    ("entries", [1, 2]), ("restiming", "{}"), ("lib", "web-vitals"), ("rating", "good"),
]
CONTENT_TYPES = ["text/plain;charset=UTF-8", "application/json", "APPLICATION/JSON; x=y",
                 None, "application/octet-stream", "application/x-www-form-urlencoded",
                 "text/html", ""]
ORIGINS = [None, "https://shop.example", "https://evil.example", "null", "garbage",
           "https://" + "o" * 300, "http://[::1]:8080"]


def _deep(n: int) -> Any:
    value: Any = 1
    for _ in range(n):
        value = [value]
    return value


def web_vitals(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": rng.choice(["LCP", "FCP", "TTFB", "INP", "CLS"]), "value": 2310.5,
        "rating": "needs-improvement", "id": "v4-1740960000734-1234",
        "session_id": rng.choice(IDS[7:]), "page_view_id": f"pv-{rng.randrange(50)}",
        "page_ts": 1740960000734 + rng.randrange(10**6), "page_url": rng.choice(URLS[:3]),
    }
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3])):
        key = rng.choice(["name", "value", "session_id", "page_view_id", "navigationId",
                          "page_ts", "sent_at", "page_url", "navigationURL", "campaign",
                          "page_group", "device", "extra", "deep", "drop"])
        if key == "drop":
            record.pop(rng.choice(list(record)), None)
        elif key == "extra":
            record.update([rng.choice(EXTRAS)])
        elif key == "deep":
            record["attribution"] = _deep(rng.choice([30, 31, 32, 33, 40]))
        else:
            pool = {"name": ["LCP", "XYZ", 1, None], "value": NUMBERS, "session_id": IDS,
                    "page_view_id": [*IDS, 4385, True, 0], "navigationId": [4385, "n", None],
                    "page_ts": TS, "sent_at": TS, "page_url": URLS,
                    "navigationURL": URLS}.get(key, STRINGS)
            record[key] = rng.choice(pool)
    return record


def canonical(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {"beacon_id": f"b-{rng.randrange(10**6)}",
                              "session_id": rng.choice(IDS[7:]),
                              "ts": 1740960000734 + rng.randrange(10**6),
                              "page_url": rng.choice(URLS[:3]), "lcp_ms": 508}
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        key = rng.choice(["beacon_id", "session_id", "ts", "page_url", "lcp_ms", "fcp_ms",
                          "ttfb_ms", "inp_ms", "load_ms", "cls", "received_at", "campaign",
                          "page_group", "device", "user_agent", "extra"])
        if key == "extra":
            record.update([rng.choice(EXTRAS)])
            continue
        pool = {"beacon_id": IDS, "session_id": IDS, "ts": TS, "received_at": TS,
                "page_url": URLS, "user_agent": AGENTS}.get(key, STRINGS if key in (
                    "campaign", "page_group", "device") else NUMBERS)
        record[key] = rng.choice(pool)
    return record


def boomerang(rng: random.Random) -> list[tuple[str, str]]:
    pairs = {"rt.si": rng.choice(["bs-1", "bs-2", "bs-3"]), "pid": f"p{rng.randrange(99)}",
             "u": rng.choice(URLS[:3]), "rt.tstart": "1795446035900", "pt.lcp": "460",
             "t_done": "359", "t_resp": "5", "nt_nav_st": "1795446035900",
             "nt_res_st": "1795446035905", "restiming": "{}"}
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        key = rng.choice(["rt.si", "pid", "u", "r", "rt.tstart", "pt.lcp", "t_done", "t_resp",
                          "et.inp", "c.cls", "nocookie", "campaign", "device", "drop"])
        if key == "drop":
            pairs.pop(rng.choice(list(pairs)), None)
        elif key in ("u", "r"):
            url = rng.choice(URLS)
            pairs[key] = url if isinstance(url, str) else str(url)
        else:
            pairs[key] = rng.choice(["", "1", "abc", "inf", "nan", "-3", "700000", "1e3",
                                     "mobile", "x" * 201])
    items = list(pairs.items())
    if rng.random() < 0.1:
        items.append(("u", "https://second.example/?q=1"))
    return items


def body(rng: random.Random) -> tuple[str, str | None, bytes, str]:
    """method, content type, body, query."""
    kind = rng.random()
    if kind < 0.12:
        return "GET", None, b"", urlencode(boomerang(rng))
    if kind < 0.25:
        return "POST", rng.choice(CONTENT_TYPES[3:6]), urlencode(boomerang(rng)).encode(), ""
    if kind < 0.33:
        raw = rng.choice([b"", b"  ", b"{", b"[]", b"[1]", b"null", b"\xff\xfe", b"{\"a\":NaN}",
                          b"a=1&b", b"%%%", b"[" + b"{}," * 500 + b"{}]", b"\"x\""])
        return "POST", rng.choice(CONTENT_TYPES), raw, ""
    make = canonical if rng.random() < 0.3 else web_vitals
    if rng.random() < 0.2:
        data: Any = [make(rng) if rng.random() < 0.9 else rng.choice([1, "x", None, []])
                     for _ in range(rng.randrange(1, 6))]
    else:
        data = make(rng)
    try:
        raw = orjson.dumps(data)
    except TypeError:
        raw = b'{"beacon_id":1}'
    return "POST", rng.choice(CONTENT_TYPES[:5]), raw, ""


def parse_lines(rng: random.Random, n: int) -> Iterator[str | Beacon]:
    for url in URLS:
        for allowed in ((), ("sku", "q")):
            try:
                yield f"scrub {url!r} {allowed} -> {scrub_url(url, allowed)!r}"
            except (ValueError, TypeError, AttributeError) as exc:
                yield f"scrub {url!r} {allowed} -> {type(exc).__name__}"
    for i in range(n):
        method, ctype, raw, query = body(rng)
        agent = rng.choice(AGENTS[:4])
        allowed = rng.choice([(), ("sku",), ("sku", "q")])
        head = f"parse {i} {method} {ctype!r} {raw[:2000]!r} {query!r} {agent!r} {allowed}"
        try:
            result = parse_collector_body(method, ctype, raw, query, received_at_ms=1795446040000
                                          + i, user_agent=agent, allowed_params=allowed)
        except InvalidRecord as exc:
            yield f"{head} -> raise {exc.reason!r} {exc.field!r}"
            continue
        yield f"{head} -> {result.source}"
        for beacon in result.beacons:
            yield f"  beacon {beacon.to_json()!r} {beacon!r}"
            yield beacon
        for error, element in result.rejected():
            yield f"  error {error.reason!r} {error.field!r} {element!r}"


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, timestamp: int | None, key: bytes, value: bytes) -> object:
        if len(self.records) >= 7:
            return None
        self.records.append((key, value))
        return object()


class _Producer:
    def __init__(self, partitions: int, out: list[str]) -> None:
        self.partitions, self.out = partitions, out

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.out.extend(f"sink {topic} {partition} {k!r} {v!r}" for k, v in batch.records)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def sink_lines(beacons: list[Beacon]) -> list[str]:
    out: list[str] = []
    sink = KafkaSink(Settings(), topic="beacons")
    for partitions in (1, 3, 8):
        for start in range(0, len(beacons), 500):
            chunk = beacons[start:start + 500]
            _, count = await sink._send(_Producer(partitions, out), chunk)
            out.append(f"sink sent {count}")
    return out


async def http_lines(rng: random.Random, n: int) -> list[str]:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    out: list[str] = []
    ticks = iter(range(10**9))
    variants = [
        (Settings(), ListSink()),
        (Settings(cors_origins=("https://shop.example", "null"), allowed_query_params=("sku",),
                  rate_limit_per_minute=30), ListSink()),
        (Settings(max_body_bytes=1024), ListSink(capacity=40)),
    ]
    for v, (settings, sink) in enumerate(variants):
        app = web.Application()
        app.add_routes(collector_routes(
            settings, sink, lambda s, o, c: out.append(f"  count {s} {o} {c}"),
            lambda e, raw: out.append(f"  dead {e.reason!r} {e.field!r} {raw!r}"),
            clock=lambda: 1_795_446_040.0 + next(ticks) / 1000,
            limiter=RateLimiter(settings.rate_limit_per_minute,
                                clock=lambda: next(ticks) / 10)))
        async with TestClient(TestServer(app)) as client:
            for i in range(n):
                method, ctype, raw, query = body(rng)
                method = rng.choice([method] * 8 + ["OPTIONS", "PUT"])
                headers = {k: h for k, h in (("Content-Type", ctype), ("Origin", rng.choice(
                    ORIGINS)), ("User-Agent", rng.choice(AGENTS[:4]))) if h is not None}
                if rng.random() < 0.05:
                    raw = raw * 40
                data: Any = raw
                if rng.random() < 0.1:
                    async def chunks(raw: bytes = raw) -> Any:
                        for start in range(0, len(raw), 100):
                            yield raw[start:start + 100]
                    data = chunks()
                out.append(f"http {v} {i} {method} {headers} {query!r} {raw[:2000]!r}")
                reply = await client.request(method, "/beacon?" + query if query else "/beacon",
                                             data=data, headers=headers,
                                             skip_auto_headers=["User-Agent", "Content-Type"])
                kept = [(k, h) for k, h in reply.headers.items() if k not in ("Date", "Server")]
                out.append(f"  -> {reply.status} {kept} {await reply.read()!r}")
        out.extend(f"  sink {b.to_json()!r}" for b in sink.beacons)
    return out


def corpus(n_parse: int = 30_000, n_http: int = 2_500) -> list[str]:
    rng = random.Random(SEED)
    lines: list[str] = []
    beacons: list[Beacon] = []
    for item in parse_lines(rng, n_parse):
        if isinstance(item, Beacon):
            beacons.append(item)
        else:
            lines.append(item)
    lines += asyncio.run(sink_lines(beacons))
    lines += asyncio.run(http_lines(rng, n_http))
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args(argv)
    text = "\n".join(corpus()) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    if args.write:
        args.write.write_text(text)
        print(f"{text.count(chr(10))} lines, sha256 {digest}")
        return 0
    before = args.compare.read_text().splitlines()
    after = text.splitlines()
    diff = [i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b]
    if diff or len(before) != len(after):
        first = diff[0] if diff else min(len(before), len(after))
        print(f"DIFFERENT: {len(diff)} lines differ, {len(before)} vs {len(after)} lines; "
              f"first at line {first + 1}:\n- {before[first:first + 1]}\n"
              f"+ {after[first:first + 1]}")
        return 1
    print(f"identical: {len(after)} lines, sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
