"""Property-based fuzzing of every record parser and of the sessionizer (hypothesis).

Whatever the input (random bytes, truncated or deeply nested JSON, enormous numbers, NaN,
negative timings, timestamps in 1970 or 2099, unknown fields) the parsers either return a
valid record or raise :class:`~streams.errors.InvalidRecord`; nothing else may escape.
Good records mixed with bad ones in one array are all returned, in order, and every bad
one is reported (as an error with its raw element for the dead-letter topic).
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.beacons import (
    MAX_RAW_BYTES,
    ParseResult,
    parse_boomerang,
    parse_canonical,
    parse_collector_body,
    parse_web_vitals,
)
from streams.errors import InvalidRecord
from streams.records import (
    MAX_TIMING_MS,
    METRICS,
    Beacon,
    Order,
    SessionFact,
    _beacon_checked,
    parse_beacon,
    parse_order,
)
from streams.session_state import SessionParams
from streams.sessions import Sessionizer

NOW = 1_795_446_040_000
TS_MIN, TS_MAX = 946_684_800_000, 4_102_444_800_000
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- strategies -------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, -0.0, 1e308, -1e308, 5e-324, 2**63, 2**64, TS_MIN - 1, TS_MAX + 1,
                     0.5, 600_000, 600_001, NOW, NOW * 1000, 1.0e15]),
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "LCP", "CLS", "INP", "TTFB", "FCP", "lcp", "<script>x</script>",
                     "http://[::1", "https://u:pw@s.example/p?email=a%40b&utm_campaign=c#f",
                     "\x00", "\ud7ff", "a" * 300, "NaN", "1e400", "-5"]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
keys = st.sampled_from(["beacon_id", "session_id", "ts", "page_url", "received_at", "name",
                        "value", "page_view_id", "navigationId", "page_ts", "sent_at",
                        "campaign", "device", "user_agent", "page_group", "navigationURL",
                        "referrer", "order_id", "revenue", "currency", "kind",
                        "watermark_ms", *METRICS])
records = st.dictionaries(st.one_of(keys, st.text(max_size=6)), json_values, max_size=12)


def dumps(value: Any) -> bytes:
    """JSON as a sloppy sender writes it: huge integers, NaN and Infinity included."""
    return json.dumps(value).encode()


def valid_json(value: Any) -> bytes:
    """Strict JSON (what ``JSON.stringify`` writes): non-finite numbers become null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return json.dumps(clean(value)).encode()


def good_web_vitals(i: int) -> dict[str, Any]:
    return {"name": "LCP", "value": 100 + i, "session_id": f"s{i % 3}",
            "page_view_id": f"pv{i}", "page_ts": NOW - 1000,
            "page_url": f"https://shop.example/p?utm_campaign=c{i}&email=x%40y"}


def good_canonical(i: int) -> dict[str, Any]:
    return {"beacon_id": f"b{i}", "session_id": f"s{i}", "ts": NOW - 5000,
            "page_url": "https://shop.example/?gclid=1", "ttfb_ms": 10.5, "custom": [i]}


def check_beacon(beacon: Beacon) -> None:
    """What every accepted beacon guarantees downstream."""
    assert beacon.beacon_id
    assert len(beacon.beacon_id) <= 200
    assert TS_MIN <= beacon.ts <= TS_MAX
    for name in METRICS:
        value = getattr(beacon, name)
        assert value is None or (math.isfinite(value) and value >= 0)
        assert value is None or name == "cls" or value <= MAX_TIMING_MS
    assert parse_beacon(beacon.to_json()) == beacon  # what the sink writes reads back


def check_result(result: ParseResult, n_items: int | None = None) -> None:
    for beacon in result.beacons:
        check_beacon(beacon)
        query = beacon.page_url.partition("?")[2]
        assert all(key.lower().startswith("utm_")
                   for key, _ in parse_qsl(query, keep_blank_values=True))
    assert len(result.errors) == len(result.rejected_raw)
    for error, raw in result.rejected():
        assert isinstance(error, InvalidRecord)
        assert error.reason
        assert isinstance(raw, bytes)
        assert len(raw) <= MAX_RAW_BYTES
    if n_items is not None:
        assert len(result.beacons) + len(result.errors) == n_items


def collector(body: bytes, content_type: str | None = "text/plain", method: str = "POST",
              query: str = "") -> ParseResult:
    return parse_collector_body(method, content_type, body, query, received_at_ms=NOW,
                                user_agent="Mozilla/5.0", allowed_params=())


# --- single-record readers ------------------------------------------------------------


@FUZZ
@given(records)
def test_parse_web_vitals_returns_a_beacon_or_raises_invalid_record(
        record: dict[str, Any]) -> None:
    try:
        beacon = parse_web_vitals(record, received_at_ms=NOW, user_agent="ua")
    except InvalidRecord:
        return
    check_beacon(beacon)


@FUZZ
@given(records)
def test_parse_canonical_returns_a_beacon_or_raises_invalid_record(
        record: dict[str, Any]) -> None:
    try:
        beacon = parse_canonical(record)
    except InvalidRecord:
        with pytest.raises(InvalidRecord):  # the fast path refuses what the reference does
            _beacon_checked(record)
        return
    assert beacon.beacon_id == record["beacon_id"]
    reference = _beacon_checked(record)
    assert (beacon, beacon.extra) == (reference, reference.extra)


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.sampled_from(
    ["rt.si", "pid", "u", "rt.tstart", "nt_nav_st", "nt_res_st", "t_resp", "t_done", "pt.lcp",
     "pt.fcp", "et.inp", "c.cls", "device", "campaign", "nocookie"]), st.text(max_size=5)),
    st.one_of(texts, numbers.map(str))), max_size=14))
def test_parse_boomerang_returns_a_beacon_or_raises_invalid_record(
        pairs: list[tuple[str, str]]) -> None:
    try:
        beacon = parse_boomerang(pairs, received_at_ms=NOW, user_agent=None)
    except InvalidRecord:
        return
    check_beacon(beacon)


@FUZZ
@given(st.one_of(st.binary(max_size=300), records.map(dumps),
                 json_values.map(lambda v: dumps(v)[:-1])))
def test_topic_readers_raise_only_invalid_record(raw: bytes) -> None:
    for reader in (parse_beacon, parse_order, SessionFact.from_json):
        try:
            record = reader(raw)
        except InvalidRecord:
            continue
        assert isinstance(record, Beacon | Order | SessionFact)
        if isinstance(record, Order):
            assert math.isfinite(record.revenue)
            assert record.revenue >= 0


@pytest.mark.parametrize("depth", [100, 300, 600, 1023, 1024, 5000])
def test_deeply_nested_json_is_refused_or_read_never_crashes(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    body = orjson.dumps(good_canonical(1))[:-1] + b',"deep":' + nested + b"}"
    for reader in (parse_beacon, parse_order, SessionFact.from_json):
        with pytest.raises(InvalidRecord):
            reader(nested)
    if depth >= 1024:  # beyond orjson's limit: the body is unreadable (400)
        with pytest.raises(InvalidRecord, match="JSON"):
            collector(body)
        return
    result = collector(body)
    assert result.beacons == ()  # too deep to store: dead-lettered, not a poisoned sink
    check_result(result, 1)


# --- the collector's body reader ------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400),
       st.sampled_from([None, "text/plain", "application/json", "application/octet-stream",
                        "application/x-www-form-urlencoded", "text/html", "TEXT/PLAIN; x=y"]),
       st.sampled_from(["POST", "GET", "post"]), st.text(max_size=60))
def test_collector_body_random_bytes(body: bytes, content_type: str | None, method: str,
                                     query: str) -> None:
    try:
        result = collector(body, content_type, method, query)
    except InvalidRecord:
        return
    check_result(result)


@FUZZ
@given(st.lists(st.one_of(st.integers(0, 50).map(good_web_vitals), records, json_values),
                min_size=1, max_size=30))
def test_good_records_among_bad_ones_are_all_returned(items: list[Any]) -> None:
    result = collector(valid_json(items))
    check_result(result, len(items))
    expected = [f"{item['session_id']}:{item['page_view_id']}" for item in items
                if isinstance(item, dict) and item.keys() == good_web_vitals(0).keys()
                and item["name"] == "LCP" and item["page_ts"] == NOW - 1000]
    got = [b.beacon_id for b in result.beacons]
    assert [b for b in got if b in expected] == expected  # every good one, in order


@FUZZ
@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40))
def test_good_canonical_and_truncated_records_are_all_counted(n_good: int, n_bad: int,
                                                              seed: int) -> None:
    bad = [good_canonical(i) | {"ts": [math.nan, -1, 10**30, "x", None, 1e400, 0][(seed + i) % 7]}
           for i in range(n_bad)]
    good = [good_canonical(i) for i in range(n_good)]
    items = [x for pair in zip(good, bad, strict=False) for x in pair] + good[len(bad):] \
        + bad[len(good):]
    if not items:
        return
    result = collector(valid_json(items))
    check_result(result, len(items))
    assert sorted(b.beacon_id for b in result.beacons) == sorted(g["beacon_id"] for g in good)
    assert all(b.page_url == "https://shop.example/" for b in result.beacons)


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=6), st.one_of(texts, numbers.map(str))),
                max_size=10))
def test_boomerang_forms_and_queries(pairs: list[tuple[str, str]]) -> None:
    form = urlencode([("rt.si", "s"), ("pid", "p"), ("u", "https://s.example/?q=1"), *pairs])
    for method, body, query in (("POST", form.encode(), ""), ("GET", b"", form)):
        try:
            result = collector(body, "application/x-www-form-urlencoded", method, query)
        except InvalidRecord:
            continue
        check_result(result, 1)


def test_one_megabyte_body_is_refused_quickly() -> None:
    items = [good_web_vitals(i) for i in range(7000)]
    body = orjson.dumps(items)
    assert len(body) > 1_000_000
    with pytest.raises(InvalidRecord, match="at most 500"):
        collector(body)
    for body, content_type in ((b"x" * 1_000_000, "application/x-www-form-urlencoded"),
                               (orjson.dumps(good_web_vitals(1) | {"session_id": "s" * 10**6}),
                                "text/plain")):
        result = collector(body, content_type)
        assert result.beacons == ()
        check_result(result, 1)


def test_non_standard_json_tokens_make_the_body_unreadable() -> None:
    """NaN/Infinity are not JSON (browsers write null): the whole body is a clear 400."""
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        body = b"[" + orjson.dumps(good_web_vitals(1)) + b',{"value":' + token + b"}]"
        with pytest.raises(InvalidRecord, match="not valid JSON"):
            collector(body)


# --- the sessionizer --------------------------------------------------------------------

timings = st.one_of(st.none(), st.floats(0, MAX_TIMING_MS))
beacons = st.builds(
    Beacon, beacon_id=st.sampled_from(["b1", "b2", "b3", "b4"]),
    session_id=st.sampled_from(["s1", "s2", "s3"]), ts=st.integers(TS_MIN, TS_MAX),
    page_url=st.sampled_from(["https://s.example/?utm_campaign=" + "x" * 150,
                              "https://s.example/blog/", "/", "https://s.example/?utm_campaign="]),
    lcp_ms=timings, ttfb_ms=timings, inp_ms=timings, cls=st.one_of(st.none(), st.floats(0, 1e9)),
    received_at=st.one_of(st.none(), st.integers(TS_MIN, TS_MAX)),
    campaign=st.one_of(st.none(), st.text(max_size=120)),
    user_agent=st.sampled_from([None, "Mozilla/5.0", "Googlebot/2.1"]))
orders = st.builds(
    Order, order_id=st.sampled_from(["o1", "o2"]), session_id=st.sampled_from(["s1", "s4"]),
    ts=st.integers(TS_MIN, TS_MAX), revenue=st.floats(0, 1e300),
    campaign=st.one_of(st.none(), st.text(max_size=120)),
    received_at=st.one_of(st.none(), st.integers(TS_MIN, TS_MAX)))


@FUZZ
@given(st.lists(st.one_of(beacons, orders, st.none()), max_size=40))
def test_sessionizer_takes_any_valid_records_and_expires_everything(
        events: list[Beacon | Order | None]) -> None:
    sessionizer = Sessionizer(SessionParams(max_pages_per_minute=2))
    facts: list[SessionFact] = []
    for event in events:
        if event is None:
            facts.extend(sessionizer.advance())
        elif isinstance(event, Beacon):
            facts.extend(sessionizer.observe_beacon(event))
        else:
            facts.extend(sessionizer.observe_order(event))
    facts.extend(sessionizer.advance(TS_MAX + sessionizer.params.ttl_ms + 60_000))
    assert len(sessionizer) == 0  # every session expired by the watermark
    for fact in facts:
        assert SessionFact.from_json(fact.to_json()) == fact
        if fact.kind != "heartbeat":
            assert 0 < len(fact.campaign) <= 100
    assert all(math.isfinite(f.revenue) for f in facts)
