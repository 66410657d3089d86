"""Beacon parsing: web-vitals and boomerang payloads as Chromium sends them (RUM-BEACONS.md)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest

from streams.beacons import (
    MAX_ARRAY_LEN,
    body_source,
    parse_boomerang,
    parse_canonical,
    parse_collector_body,
    parse_web_vitals,
)
from streams.errors import InvalidRecord
from streams.records import Beacon
from streams.scrub import (
    MAX_CACHED_URL_LEN,
    SCRUB_CACHE_SIZE,
    _scrubbed_str,
    _scrubbed_url,
    _scrubbed_url_cached,
)
from streams.urls import campaign_from_url, scrub_url

NOW = 1_795_446_040_000
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0"
LANDING = ("http://127.0.0.1:8720/product.html?utm_campaign=spring_sale&utm_source=newsletter"
           "&utm_medium=email&sku=TR3000")
SCRUBBED = ("http://127.0.0.1:8720/product.html?utm_campaign=spring_sale&utm_source=newsletter"
            "&utm_medium=email")
SESSION = "7e06ee96-7380-47a5-87b4-5539bdcd0cca"
BOOMR_SESSION = "1c5b9f9e-3d0a-4a43-9d57-0c2b3f0f4f0b-sbk2zm"


def web_vitals_record(**changes: Any) -> dict[str, Any]:
    """The LCP record of RUM-BEACONS.md 3a (attribution build), as the README example sends."""
    record: dict[str, Any] = {
        "lib": "web-vitals", "lib_version": "6.2.3", "page_url": LANDING, "referrer": "",
        "session_id": SESSION, "sent_at": 1795446038836, "name": "LCP", "value": 508,
        "rating": "good", "delta": 508, "id": "v6-1795446035920-7405000288489",
        "navigationType": "navigate", "navigationId": 4385, "navigationURL": LANDING,
        "navigationStartTime": 0, "entries_count": 1,
        "attribution": {"timeToFirstByte": 22.5, "resourceLoadDelay": 117.3,
                        "resourceLoadDuration": 311.1, "elementRenderDelay": 57.1,
                        "target": "#hero", "url": "http://127.0.0.1:8720/img/hero.png?v=1"},
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def snippet_record(**changes: Any) -> dict[str, Any]:
    """What streams/static/revwatch-rum.js sends."""
    record: dict[str, Any] = {
        "name": "TTFB", "value": 33.2, "id": "v6-1795446035920-1111111111111",
        "navigationId": 4385, "rating": "good", "session_id": SESSION,
        "page_view_id": "eb31f3fd89badeff", "page_ts": 1795446035900, "page_url": LANDING,
        "sent_at": 1795446036100,
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def boomerang_load(**changes: str | None) -> list[tuple[str, str]]:
    """The page-load beacon of RUM-BEACONS.md 3b (abridged, same fields and formats)."""
    params: dict[str, str | None] = {
        "mob.etype": "4g", "mob.dl": "10", "mob.rtt": "50", "c.e": "lz1k2", "c.tti.m": "lt",
        "pt.fp": "140", "pt.fcp": "140", "pt.lcp": "460", "pt.lcp.src": "img",
        "pt.lcp.el": "IMG", "pt.lcp.e": "img#hero", "pt.lcp.s": "180000",
        "nt_nav_st": "1795446035900", "nt_fet_st": "1795446035902",
        "nt_req_st": "1795446035903", "nt_res_st": "1795446035905",
        "nt_res_end": "1795446035906", "nt_load_end": "1795446036259", "nt_nav_type": "0",
        "nt_protocol": "http/1.1", "u": LANDING, "v": "1.815.1", "sm": "i",
        "rt.si": BOOMR_SESSION, "rt.ss": "1795446035950", "rt.sl": "1", "vis.st": "visible",
        "ua.plt": "Linux", "ua.vnd": "", "pid": "tv3oaekg", "n": "1",
        "restiming": '{"http://127.0.0.1:8720/":{"js/boomerang.js":"31u,t,s,r*17p5r,8c*20*7h1.1"}}',
        "t_resp": "5", "t_page": "354", "t_done": "359",
        "t_other": "t_domloaded|149,boomerang|5,boomr_fb|113",
        "rt.tt": "359", "rt.obo": "0", "rt.start": "navigation", "rt.tstart": "1795446035900",
        "rt.bstart": "1795446036013", "rt.end": "1795446036259", "rt.bmr": "1,5,0,0",
        "scr.xy": "1280x800", "sb": "1",
    }
    params.update(changes)
    return [(k, v) for k, v in params.items() if v is not None]


def boomerang_unload(**changes: str | None) -> list[tuple[str, str]]:
    """The unload beacon (rt.quit, n=2, EventTiming)."""
    params: dict[str, str | None] = {
        "rt.quit": "", "n": "2", "u": LANDING, "v": "1.815.1", "pid": "tv3oaekg",
        "rt.si": BOOMR_SESSION, "rt.ss": "1795446035950", "rt.sl": "1",
        "rt.tstart": "1795446035900", "rt.bstart": "1795446036013", "rt.end": "1795446040100",
        "t_done": "359", "et.inp": "128", "et.inp.e": "button#add-to-cart", "et.inp.t": "1830",
        "et.fid": "3", "et.e": "~(~(c~1~d~'40~p~1~s~1830~t~1))", "vis.st": "hidden", "sb": "1",
    }
    params.update(changes)
    return [(k, v) for k, v in params.items() if v is not None]


def read(body: bytes, content_type: str | None = "text/plain;charset=UTF-8", *,
         method: str = "POST", query: str = "", allowed: tuple[str, ...] = ()) -> Any:
    return parse_collector_body(method, content_type, body, query, received_at_ms=NOW,
                                user_agent=UA, allowed_params=allowed)


# --- web-vitals ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "field"), [
    pytest.param("LCP", 508, "lcp_ms", id="lcp"),
    pytest.param("FCP", 164.3, "fcp_ms", id="fcp"),
    pytest.param("TTFB", 33, "ttfb_ms", id="ttfb"),
    pytest.param("INP", 136, "inp_ms", id="inp"),
    pytest.param("CLS", 0.07755859375, "cls", id="cls"),
])
def test_web_vitals_metric_maps_to_one_field(name: str, value: float, field: str) -> None:
    beacon = parse_web_vitals(web_vitals_record(name=name, value=value), received_at_ms=NOW,
                              user_agent=UA)
    metrics = {m: getattr(beacon, m) for m in ("lcp_ms", "fcp_ms", "ttfb_ms", "inp_ms", "cls")}
    assert metrics == {m: (value if m == field else None) for m in metrics}
    assert beacon.load_ms is None


def test_web_vitals_readme_record_without_snippet_fields() -> None:
    beacon = parse_web_vitals(web_vitals_record(), received_at_ms=NOW, user_agent=UA)
    assert beacon.beacon_id == f"{SESSION}:4385"
    assert beacon.session_id == SESSION
    assert beacon.ts == 1795446038836  # sent_at: no page_ts
    assert beacon.page_url == LANDING  # parse_web_vitals does not scrub; the body reader does
    assert (beacon.received_at, beacon.user_agent) == (NOW, UA)
    assert beacon.extra == {}  # attribution and the rest are not stored


def test_snippet_record_uses_page_view_id_and_page_ts() -> None:
    beacon = parse_web_vitals(snippet_record(), received_at_ms=NOW, user_agent=None)
    assert beacon.beacon_id == f"{SESSION}:eb31f3fd89badeff"
    assert beacon.ts == 1795446035900
    assert beacon.user_agent is None


@pytest.mark.parametrize(("changes", "ts"), [
    pytest.param({}, 1795446035900, id="page_ts"),
    pytest.param({"page_ts": None}, 1795446036100, id="sent_at"),
    pytest.param({"page_ts": None, "sent_at": None}, NOW, id="received_at"),
])
def test_web_vitals_ts_precedence(changes: dict[str, Any], ts: int) -> None:
    beacon = parse_web_vitals(snippet_record(**changes), received_at_ms=NOW, user_agent=UA)
    assert beacon.ts == ts


def test_navigation_url_stands_in_for_page_url() -> None:
    record = web_vitals_record(page_url=None)
    assert parse_web_vitals(record, received_at_ms=NOW, user_agent=UA).page_url == LANDING


def test_web_vitals_explicit_fields_pass_through() -> None:
    record = snippet_record(campaign="Spring", page_group="product", device="mobile")
    beacon = parse_web_vitals(record, received_at_ms=NOW, user_agent=UA)
    assert (beacon.campaign, beacon.page_group, beacon.device) == ("Spring", "product", "mobile")


def test_web_vitals_without_session_says_why() -> None:
    with pytest.raises(InvalidRecord, match="web-vitals keeps no session") as info:
        parse_web_vitals(web_vitals_record(session_id=None), received_at_ms=NOW, user_agent=UA)
    assert info.value.field == "session_id"


@pytest.mark.parametrize(("changes", "match"), [
    pytest.param({"value": math.nan}, "'lcp_ms' must be a number", id="nan"),
    pytest.param({"value": math.inf}, "'lcp_ms' must be a number", id="inf"),
    pytest.param({"value": -5}, "out of range", id="negative"),
    pytest.param({"value": 1e9}, "out of range", id="huge"),
    pytest.param({"value": "508"}, "must be a number", id="string-value"),
    pytest.param({"value": True}, "must be a number", id="bool-value"),
    pytest.param({"value": {"nested": [1, 2]}}, "must be a number", id="nested-value"),
    pytest.param({"name": "FID"}, "'name' must be one of", id="unknown-name"),
    pytest.param({"name": ["LCP"]}, "'name' must be one of", id="list-name"),
    pytest.param({"session_id": 17}, "'session_id' must be a non-empty string", id="int-session"),
    pytest.param({"session_id": "s" * 300}, "longer than", id="long-session"),
    pytest.param({"navigationId": None}, "page view id", id="no-page-view"),
    pytest.param({"navigationId": 1.5}, "page view id", id="float-navigation-id"),
    pytest.param({"page_url": None, "navigationURL": None}, "'page_url'", id="no-url"),
    pytest.param({"page_url": 42}, "'page_url'", id="int-url"),
    pytest.param({"sent_at": "yesterday"}, "'ts'", id="string-sent-at"),
    pytest.param({"sent_at": 12}, "not a plausible epoch-ms", id="seconds-sent-at"),
])
def test_bad_web_vitals_records(changes: dict[str, Any], match: str) -> None:
    record = web_vitals_record()
    record.update(changes)
    record = {k: v for k, v in record.items() if v is not None}
    with pytest.raises(InvalidRecord, match=match):
        parse_web_vitals(record, received_at_ms=NOW, user_agent=UA)


def test_missing_value_is_invalid_not_null() -> None:
    record = web_vitals_record()
    record["value"] = None
    with pytest.raises(InvalidRecord, match="no 'value'"):
        parse_web_vitals(record, received_at_ms=NOW, user_agent=UA)


def test_long_user_agent_is_clipped() -> None:
    beacon = parse_web_vitals(snippet_record(), received_at_ms=NOW, user_agent="x" * 5000)
    assert beacon.user_agent == "x" * 1000


REFERRER_ORIGINS = [
    pytest.param("https://shop.example/cart?x=1", "https://shop.example", id="internal"),
    pytest.param("https://www.google.com/", "https://www.google.com", id="external"),
    pytest.param("HTTPS://u:pw@Shop.Example:443/p#f", "https://shop.example", id="normalised"),
    pytest.param("http://127.0.0.1:8720/product.html?sku=1", "http://127.0.0.1:8720",
                 id="port-kept"),
    pytest.param(None, None, id="missing"),
    pytest.param("", None, id="empty"),
    pytest.param("/cart?x=1", None, id="no-origin"),
    pytest.param("https://" + "a" * 5000 + "/p", None, id="origin-too-long"),
]


@pytest.mark.parametrize(("referrer", "origin"), [
    *REFERRER_ORIGINS,
    pytest.param(42, None, id="number"),
    pytest.param(True, None, id="bool"),
    pytest.param(["https://a.example/"], None, id="list"),
    pytest.param({"url": "https://a.example/"}, None, id="object"),
])
def test_web_vitals_referrer_keeps_its_origin_only(referrer: Any, origin: str | None) -> None:
    beacon = parse_web_vitals(web_vitals_record(referrer=referrer), received_at_ms=NOW,
                              user_agent=UA)
    assert beacon.referrer == origin
    assert beacon.lcp_ms == 508  # a bad referrer never costs the beacon its timing
    assert beacon.extra == {}


# --- boomerang ----------------------------------------------------------------------------


def test_boomerang_page_load_beacon() -> None:
    beacon = parse_boomerang(boomerang_load(), received_at_ms=NOW, user_agent=UA)
    assert beacon.beacon_id == f"{BOOMR_SESSION}:tv3oaekg"
    assert beacon.session_id == BOOMR_SESSION  # kept whole, base36 suffix included
    assert beacon.ts == 1795446035900
    assert (beacon.lcp_ms, beacon.fcp_ms, beacon.ttfb_ms, beacon.load_ms) == (460, 140, 5, 359)
    assert (beacon.inp_ms, beacon.cls) == (None, None)
    assert beacon.page_url == LANDING
    assert (beacon.received_at, beacon.user_agent) == (NOW, UA)


def test_boomerang_unload_beacon_carries_inp() -> None:
    beacon = parse_boomerang(boomerang_unload(), received_at_ms=NOW, user_agent=UA)
    assert beacon.beacon_id == f"{BOOMR_SESSION}:tv3oaekg"  # same page view as the load beacon
    assert (beacon.inp_ms, beacon.load_ms, beacon.lcp_ms) == (128, 359, None)


def test_boomerang_fallbacks_for_ttfb_and_ts() -> None:
    params = boomerang_load(**{"t_resp": None, "rt.tstart": None})
    beacon = parse_boomerang(params, received_at_ms=NOW, user_agent=UA)
    assert beacon.ttfb_ms == 5  # nt_res_st - nt_nav_st
    assert beacon.ts == 1795446035900  # nt_nav_st
    bare = [(k, v) for k, v in params if not k.startswith("nt_")]
    beacon = parse_boomerang(bare, received_at_ms=NOW, user_agent=UA)
    assert (beacon.ttfb_ms, beacon.ts) == (None, NOW)


def test_boomerang_cls_and_first_of_repeated_keys() -> None:
    params = [*boomerang_load(**{"c.cls": "0.078"}), ("pt.lcp", "9999")]
    beacon = parse_boomerang(params, received_at_ms=NOW, user_agent=UA)
    assert beacon.cls == pytest.approx(0.078)
    assert beacon.lcp_ms == 460


@pytest.mark.parametrize(("referrer", "origin"), REFERRER_ORIGINS)
def test_boomerang_referrer_keeps_its_origin_only(referrer: str | None,
                                                  origin: str | None) -> None:
    for params in (boomerang_load(r=referrer), boomerang_unload(r=referrer)):
        beacon = parse_boomerang(params, received_at_ms=NOW, user_agent=UA)
        assert beacon.referrer == origin
        assert beacon.load_ms == 359


@pytest.mark.parametrize(("changes", "match"), [
    pytest.param({"rt.si": None, "nocookie": "1"}, "site_domain.*IP host", id="nocookie"),
    pytest.param({"rt.si": None}, "no 'rt.si'", id="no-session"),
    pytest.param({"rt.si": ""}, "no 'rt.si'", id="empty-session"),
    pytest.param({"pid": None}, "no 'pid'", id="no-pid"),
    pytest.param({"pt.lcp": "NaN"}, "'pt.lcp' must be a finite number", id="nan"),
    pytest.param({"pt.lcp": "Infinity"}, "'pt.lcp' must be a finite number", id="infinity"),
    pytest.param({"t_done": "abc"}, "'t_done' must be a finite number", id="text"),
    pytest.param({"t_resp": "-5"}, "out of range", id="negative"),
    pytest.param({"t_done": "9e12"}, "out of range", id="huge"),
    pytest.param({"rt.tstart": "1795446035"}, "not a plausible epoch-ms", id="seconds"),
    pytest.param({"u": None}, "'page_url'", id="no-url"),
])
def test_bad_boomerang_beacons(changes: dict[str, str | None], match: str) -> None:
    with pytest.raises(InvalidRecord, match=match):
        parse_boomerang(boomerang_load(**changes), received_at_ms=NOW, user_agent=UA)


# --- request bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    pytest.param("text/plain;charset=UTF-8", id="sendBeacon-string"),
    pytest.param("application/json", id="json-blob"),
    pytest.param("Application/JSON; charset=utf-8", id="case-and-params"),
])
def test_json_object_body(content_type: str) -> None:
    result = read(orjson.dumps(web_vitals_record()), content_type)
    assert result.source == "web-vitals"
    assert result.errors == ()
    (beacon,) = result.beacons
    assert beacon.page_url == SCRUBBED  # sku dropped, utm_* kept
    assert beacon.lcp_ms == 508


def test_json_array_body_of_snippet_records() -> None:
    records = [snippet_record(name=n, value=v)
               for n, v in [("FCP", 164), ("TTFB", 33), ("LCP", 460), ("INP", 136)]]
    result = read(orjson.dumps(records), "application/json")
    assert len(result.beacons) == 4
    assert {b.beacon_id for b in result.beacons} == {f"{SESSION}:eb31f3fd89badeff"}


def test_array_with_bad_elements_keeps_the_good_ones() -> None:
    bad_url = "http://shop.example/p?email=a%40b.c&utm_campaign=x#frag"
    records = [snippet_record(), snippet_record(value=-1, page_url=bad_url), 7,
               {"hello": "world"}, snippet_record(name="CLS", value=0.1)]
    result = read(orjson.dumps(records))
    assert [b.cls for b in result.beacons] == [None, 0.1]
    assert len(result.errors) == 3
    assert "out of range" in result.errors[0].reason
    assert "expected a JSON object" in result.errors[1].reason
    assert "neither a web-vitals metric" in result.errors[2].reason
    raws = [raw for _, raw in result.rejected()]
    assert orjson.loads(raws[0])["page_url"] == "http://shop.example/p?utm_campaign=x"
    assert raws[1:] == [b"7", b'{"hello":"world"}']


def test_dead_letter_raw_drops_attribution() -> None:
    result = read(orjson.dumps([web_vitals_record(value=-3)]))
    raw = orjson.loads(next(result.rejected())[1])
    assert "attribution" not in raw
    assert raw["navigationURL"] == SCRUBBED


def test_single_invalid_object_is_an_error_not_a_raise() -> None:
    result = read(orjson.dumps(web_vitals_record(session_id=None)))
    assert result.beacons == ()
    assert "session" in result.errors[0].reason


@pytest.mark.parametrize("body", [
    pytest.param(orjson.dumps(snippet_record(referrer="https://shop.example/cart?x=1")),
                 id="web-vitals"),
    pytest.param(urlencode(boomerang_load(r="https://shop.example/cart?x=1")).encode(),
                 id="boomerang"),
    pytest.param(orjson.dumps({"beacon_id": "pv", "session_id": "s", "ts": NOW,
                               "page_url": "https://shop.example/p",
                               "referrer": "https://shop.example/cart?x=1"}), id="canonical"),
])
def test_collector_body_keeps_the_referrer_origin_only(body: bytes) -> None:
    (beacon,) = read(body, None).beacons
    assert beacon.referrer == "https://shop.example"
    stored = beacon.to_json()
    assert orjson.loads(stored)["referrer"] == "https://shop.example"
    assert b"/cart" not in stored
    assert b"x=1" not in stored
    assert parse_canonical(orjson.loads(stored)) == beacon


@pytest.mark.parametrize(("referrer", "stored"), [
    pytest.param("/cart", None, id="no-origin"),
    pytest.param("", None, id="empty"),
    pytest.param(42, None, id="not-a-string"),
    pytest.param("https://www.google.com/search?q=shoes", "https://www.google.com",
                 id="external"),
])
def test_canonical_referrer_is_cut_to_its_origin(referrer: Any, stored: str | None) -> None:
    canonical = {"beacon_id": "pv", "session_id": "s", "ts": NOW,
                 "page_url": "https://shop.example/p", "referrer": referrer}
    (beacon,) = read(orjson.dumps(canonical)).beacons
    assert beacon.referrer == stored


def test_canonical_beacons_in_json() -> None:
    canonical = {"beacon_id": "pv-1", "session_id": "s-1", "ts": NOW - 5000,
                 "page_url": "https://shop.example/?utm_campaign=a&gclid=xyz", "lcp_ms": 2100,
                 "received_at": 1, "campaign": "Launch", "custom": {"kept": True}}
    result = read(orjson.dumps([canonical, {**canonical, "beacon_id": "pv-2",
                                            "user_agent": "shop-backend"}]))
    assert result.source == "canonical"
    first, second = result.beacons
    assert first.page_url == "https://shop.example/?utm_campaign=a"
    assert first.received_at == NOW  # the collector stamps it
    assert (first.user_agent, second.user_agent) == (UA, "shop-backend")
    assert first.campaign == "Launch"
    assert first.extra == {"custom": {"kept": True}}


def test_parse_canonical_defers_to_the_record_reader() -> None:
    beacon = parse_canonical({"beacon_id": "pv", "session_id": "s", "ts": NOW,
                              "page_url": "https://s.example/", "cls": 0.2, "extra_field": 1})
    assert (beacon.cls, beacon.extra) == (0.2, {"extra_field": 1})
    with pytest.raises(InvalidRecord, match="'ts'"):
        parse_canonical({"beacon_id": "pv", "session_id": "s", "ts": "now", "page_url": "/"})


def test_campaign_comes_only_from_an_explicit_field() -> None:
    (beacon,) = read(orjson.dumps(snippet_record())).beacons
    assert beacon.campaign is None  # utm attribution is the sessionizer's job


def test_allowed_params_and_fragment() -> None:
    url = "https://u:pw@shop.example/p?sku=1&utm_campaign=a&q=shoes&token=s3cr3t#reviews"
    (beacon,) = read(orjson.dumps(snippet_record(page_url=url)), allowed=("sku", "q")).beacons
    assert beacon.page_url == "https://shop.example/p?sku=1&utm_campaign=a&q=shoes"


def test_boomerang_form_post_body() -> None:
    body = urlencode(boomerang_load()).encode()
    result = read(body, "application/x-www-form-urlencoded")
    assert result.source == "boomerang"
    (beacon,) = result.beacons
    assert beacon.page_url == SCRUBBED
    assert beacon.lcp_ms == 460


def test_boomerang_get_query() -> None:
    result = read(b"", None, method="GET", query=urlencode(boomerang_unload()))
    (beacon,) = result.beacons
    assert beacon.inp_ms == 128
    assert beacon.page_url == SCRUBBED


def test_invalid_boomerang_form_goes_to_errors_with_scrubbed_raw() -> None:
    body = urlencode(boomerang_load(**{"rt.si": None, "nocookie": "1"})).encode()
    result = read(body, "application/x-www-form-urlencoded")
    assert result.beacons == ()
    error, raw = next(result.rejected())
    assert "site_domain" in error.reason
    fields = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    assert fields["u"] == SCRUBBED
    assert "restiming" not in fields


@pytest.mark.parametrize(("body", "content_type", "match"), [
    pytest.param(b'{"name": "LCP", "value": 5', "text/plain", "not valid JSON", id="truncated"),
    pytest.param(b"", "text/plain", "empty body", id="empty"),
    pytest.param(b"  \n", "application/json", "empty body", id="blank"),
    pytest.param(b'{"name":"LCP","page_url":"\xff\xfe"}', "text/plain", "not UTF-8",
                 id="not-utf8"),
    pytest.param(b"42", "text/plain", "got int", id="number"),
    pytest.param(b'"LCP"', "text/plain", "got str", id="string"),
    pytest.param(b"null", "text/plain", "got NoneType", id="null"),
    pytest.param(b"[]", "text/plain", "non-empty array", id="empty-array"),
    pytest.param(b'{"value": NaN}', "text/plain", "not valid JSON", id="nan-literal"),
    pytest.param(b"[" * 5000 + b"]" * 5000, "text/plain", "not valid JSON", id="deep-nesting"),
    pytest.param(orjson.dumps([{}] * (MAX_ARRAY_LEN + 1)), "text/plain", "at most 500",
                 id="long-array"),
    pytest.param(b"--x\r\n", "multipart/form-data; boundary=x", "unsupported content type",
                 id="multipart"),
    pytest.param(b"u=%ff%fe&rt.si=a", "application/x-www-form-urlencoded", "not UTF-8",
                 id="form-bad-escape"),
    pytest.param(b"\xff=1", "application/x-www-form-urlencoded", "not UTF-8", id="form-bytes"),
    pytest.param(b"&".join([b"a=1"] * 1001), "application/x-www-form-urlencoded",
                 "more than 1000 fields", id="form-too-many-fields"),
    pytest.param(b"", "application/x-www-form-urlencoded", "empty form body", id="form-empty"),
])
def test_unreadable_bodies_raise(body: bytes, content_type: str | None, match: str) -> None:
    with pytest.raises(InvalidRecord, match=match):
        read(body, content_type)


@pytest.mark.parametrize(("body", "content_type", "source"), [
    pytest.param(orjson.dumps(snippet_record()), None, "web-vitals", id="json-no-type"),
    pytest.param(b" " + orjson.dumps([snippet_record()]), "application/octet-stream",
                 "web-vitals", id="json-octet-stream"),
    pytest.param(urlencode(boomerang_load()).encode(), None, "boomerang", id="form-no-type"),
])
def test_untyped_bodies_are_sniffed(body: bytes, content_type: str | None, source: str) -> None:
    result = read(body, content_type)
    assert result.source == source
    assert len(result.beacons) == 1
    assert body_source("POST", content_type, body) == source


def test_body_source_before_reading() -> None:
    assert body_source("GET", None) == "boomerang"
    assert body_source("POST", "application/x-www-form-urlencoded; charset=UTF-8") == "boomerang"
    assert body_source("POST", "text/plain") == "web-vitals"
    assert body_source("POST", None) == "web-vitals"


def test_empty_get_query_raises() -> None:
    with pytest.raises(InvalidRecord, match="empty query string"):
        read(b"", None, method="GET", query="")


def test_500_elements_are_accepted() -> None:
    records = [snippet_record(page_view_id=f"pv{i}") for i in range(MAX_ARRAY_LEN)]
    assert len(read(orjson.dumps(records)).beacons) == MAX_ARRAY_LEN


def test_parsed_beacons_round_trip_through_canonical_json() -> None:
    (beacon,) = read(orjson.dumps(snippet_record())).beacons
    assert parse_canonical(orjson.loads(beacon.to_json())) == beacon
    assert isinstance(beacon, Beacon)


# --- urls ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "campaign"), [
    pytest.param(LANDING, "spring_sale", id="plain"),
    pytest.param("https://s.example/?utm_campaign=Spring%20Sale", "Spring Sale", id="escaped"),
    pytest.param("https://s.example/?utm_campaign=+Spring+", "Spring", id="stripped"),
    pytest.param("https://s.example/?utm_campaign=&utm_campaign=b", "b", id="first-non-empty"),
    pytest.param("https://s.example/?utm_campaign=" + "x" * 300, "x" * 100, id="clipped"),
    pytest.param("https://s.example/?utm_campaigns=a", None, id="other-key"),
    pytest.param("https://s.example/#utm_campaign=a", None, id="fragment"),
    pytest.param("https://s.example/?utm_source=a", None, id="absent"),
    pytest.param("https://s.example/?utm_campaign=%20", None, id="blank"),
])
def test_campaign_from_url(url: str, campaign: str | None) -> None:
    assert campaign_from_url(url) == campaign


@pytest.mark.parametrize(("url", "allowed", "scrubbed"), [
    pytest.param(LANDING, (), SCRUBBED, id="landing"),
    pytest.param("https://s.example/a?UTM_Source=x&b=1", (), "https://s.example/a?UTM_Source=x",
                 id="utm-any-case"),
    pytest.param("https://s.example/a?utm_term=a%26b&x=1", (), "https://s.example/a?utm_term=a%26b",
                 id="kept-verbatim"),
    pytest.param("https://s.example/a?b=1&&c", ("c",), "https://s.example/a?c", id="bare-key"),
    pytest.param("/relative?x=1#y", (), "/relative", id="relative"),
])
def test_scrub_url(url: str, allowed: tuple[str, ...], scrubbed: str) -> None:
    assert scrub_url(url, allowed) == scrubbed


def test_scrubbed_page_urls_are_cached_without_changing_them() -> None:
    urls = [LANDING, "http://[::1/p", "https://s.example/?b=1", "?x=1", "",
            "https://s.example/" + "a" * (MAX_CACHED_URL_LEN + 5) + "?utm_a=1&b=2"]
    for allowed in ((), ("b",), frozenset({"b"}), ["b"]):
        for url in urls * 2:  # cold, then cached
            assert _scrubbed_url(url, allowed) == _scrubbed_str(url, allowed)
    for n in range(SCRUB_CACHE_SIZE + 10):
        _scrubbed_url(f"https://s.example/{n}?q=1", ())
    assert _scrubbed_url_cached.cache_info().currsize == SCRUB_CACHE_SIZE


def test_unreadable_url_is_invalid() -> None:
    result = read(orjson.dumps(snippet_record(page_url="http://[::1/p")))
    assert result.beacons == ()
    assert result.errors[0].reason == "'page_url' is not a URL"
    assert orjson.loads(result.rejected_raw[0])["page_url"] == "(unreadable URL)"
