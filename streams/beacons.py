"""RUM beacons as browsers send them -> canonical :class:`~streams.records.Beacon` (pure).

What arrives (RUM-BEACONS.md, observed with Chromium, web-vitals 6.2.3, boomerang 1.815.1):

* **web-vitals** defines no wire format; the page sends each metric as JSON with
  ``sendBeacon`` (``text/plain``; ``application/json`` for a Blob), one object or an array.
  The revwatch snippet (``streams/static/revwatch-rum.js``) adds ``session_id``,
  ``page_view_id``, ``page_ts``, ``page_url`` and, when there is one, ``referrer``. One
  record carries one metric.
* **boomerang** posts ``application/x-www-form-urlencoded`` (``sendBeacon``) or sends a
  ``GET`` image beacon: a page-load beacon and an unload beacon (``rt.quit``, with INP).
* **canonical** beacons (CONTRACT.md) may be posted by any producer as JSON.

Every beacon is validated by :func:`streams.records.beacon_from_dict` (ranges, lengths), its
``page_url`` keeps only ``utm_*`` and the allowed query parameters, its ``referrer`` only the
origin (web-vitals' ``referrer``, boomerang's ``r``; none when the page had none), and it
carries the collector's ``received_at`` and the request's user agent. What each client's
fields mean is read in :mod:`streams.client_fields`; this module reads the request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

from streams.client_fields import (
    boomerang_fields,
    clip_user_agent,
    referrer_origin,
    web_vitals_fields,
)
from streams.errors import InvalidRecord
from streams.records import Beacon, beacon_from_dict
from streams.scrub import MAX_EXTRA_DEPTH, MAX_RAW_BYTES, raw_form, raw_json, redact_raw, stamped

__all__ = ["MAX_ARRAY_LEN", "MAX_EXTRA_DEPTH", "MAX_RAW_BYTES", "ParseResult", "Source",
           "body_source", "parse_boomerang", "parse_canonical", "parse_collector_body",
           "parse_web_vitals", "redact_raw"]

Source = Literal["web-vitals", "boomerang", "canonical"]

MAX_ARRAY_LEN = 500
MAX_FORM_FIELDS = 1_000
_JSON_TYPES = frozenset({"text/plain", "application/json"})
_FORM_TYPE = "application/x-www-form-urlencoded"
_UNTYPED = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one collector request held.

    Attributes:
        beacons: the records that were read, scrubbed and stamped.
        errors: one per record that could not be read (an unreadable body raises instead).
        source: ``web-vitals``, ``boomerang`` or ``canonical`` (for counting).
        rejected_raw: parallel to ``errors``: each bad element as bytes for the dead-letter
            topic, with its URLs scrubbed and bulky fields dropped.
    """

    beacons: tuple[Beacon, ...]
    errors: tuple[InvalidRecord, ...]
    source: Source = "web-vitals"
    rejected_raw: tuple[bytes, ...] = ()

    def rejected(self) -> Iterator[tuple[InvalidRecord, bytes]]:
        """Each error with its raw element."""
        return zip(self.errors, self.rejected_raw, strict=True)


class _Request:
    """What the parse of one request needs besides the body (a plain class: built per request)."""

    __slots__ = ("allowed_params", "received_at_ms", "user_agent")

    def __init__(self, received_at_ms: int, user_agent: str | None,
                 allowed_params: Collection[str]) -> None:
        self.received_at_ms = received_at_ms
        self.user_agent = user_agent
        self.allowed_params = allowed_params


def parse_web_vitals(
    record: Mapping[str, Any], *, received_at_ms: int, user_agent: str | None
) -> Beacon:
    """Read one web-vitals metric record (the snippet's or the web-vitals README's shape).

    ``beacon_id`` is ``session_id:page_view_id`` (else ``:navigationId``); ``ts`` is
    ``page_ts``, else ``sent_at``, else the receive time.

    Raises:
        InvalidRecord: no ``session_id``, unknown metric name, bad value, or no page view id.
    """
    return beacon_from_dict(web_vitals_fields(record, received_at_ms, user_agent))


def parse_boomerang(
    params: Sequence[tuple[str, str]], *, received_at_ms: int, user_agent: str | None
) -> Beacon:
    """Read one boomerang beacon (page-load or ``rt.quit`` unload), as decoded pairs.

    ``beacon_id`` is ``rt.si:pid``; ``ts`` is ``rt.tstart``, else ``nt_nav_st``, else the
    receive time; ``ttfb_ms`` is ``t_resp``, else ``nt_res_st - nt_nav_st``.

    Raises:
        InvalidRecord: no ``rt.si`` or ``pid``, a non-numeric or out-of-range timer.
    """
    return beacon_from_dict(boomerang_fields(params, received_at_ms, user_agent))


def parse_canonical(obj: Mapping[str, Any]) -> Beacon:
    """Read one canonical beacon object (CONTRACT.md)."""
    return beacon_from_dict(dict(obj))


def body_source(method: str, content_type: str | None, body: bytes = b"") -> Source:
    """The source a request is counted under before (or without) reading its body."""
    base = _base_type(content_type) or (_sniff_type(body) if body else "")
    if method.upper() == "GET" or base == _FORM_TYPE:
        return "boomerang"
    return "web-vitals"


def parse_collector_body(
    method: str,
    content_type: str | None,
    body: bytes,
    query: str,
    *,
    received_at_ms: int,
    user_agent: str | None,
    allowed_params: Collection[str],
) -> ParseResult:
    """Read one ``/beacon`` request: JSON (object or array), a form POST, or a GET query.

    A body without a content type (or ``application/octet-stream``) is read as JSON when it
    starts with ``{`` or ``[``, else as a form.

    A readable body whose records are invalid returns them in ``errors``; the collector
    answers 204 when at least one record was read, else 400.

    Raises:
        InvalidRecord: the body cannot be read at all (empty, not UTF-8, bad JSON, wrong
            top-level type, too many elements, unsupported content type).
    """
    request = _Request(received_at_ms, user_agent, allowed_params)
    if method.upper() == "GET":
        return _boomerang_result(_decode_pairs(query.encode(), "query string"), request)
    base = _base_type(content_type) or _sniff_type(body)
    if base in _JSON_TYPES:
        return _json_result(_json_items(body), request)
    if base == _FORM_TYPE:
        return _boomerang_result(_decode_pairs(body, "form body"), request)
    msg = ("unsupported content type: send JSON as text/plain or application/json, or "
           "boomerang beacons as application/x-www-form-urlencoded")
    raise InvalidRecord(msg)


def _base_type(content_type: str | None) -> str:
    """The lower-cased media type; "" when absent or ``application/octet-stream``."""
    base = (content_type or "").partition(";")[0].strip().lower()
    return "" if base == _UNTYPED else base


def _sniff_type(body: bytes) -> str:
    """A body sent without a type (e.g. ``sendBeacon`` of an ArrayBuffer): JSON or a form."""
    return "application/json" if body.lstrip()[:1] in {b"{", b"["} else _FORM_TYPE


def _boomerang_result(pairs: list[tuple[str, str]], request: _Request) -> ParseResult:
    try:
        beacon = stamped(boomerang_fields(pairs, request.received_at_ms,
                                           request.user_agent), request.allowed_params)
    except InvalidRecord as exc:
        return ParseResult((), (exc,), "boomerang", (raw_form(pairs),))
    return ParseResult((beacon,), (), "boomerang")


def _json_result(items: list[Any], request: _Request) -> ParseResult:
    first = items[0]
    source: Source = "canonical" if isinstance(first, dict) and "beacon_id" in first \
        else "web-vitals"
    if len(items) == 1:  # what browsers send: one record a request
        try:
            return ParseResult((_json_item(first, request),), (), source)
        except InvalidRecord as exc:
            return ParseResult((), (exc,), source, (raw_json(first),))
    beacons: list[Beacon] = []
    errors: list[InvalidRecord] = []
    raws: list[bytes] = []
    for item in items:
        try:
            beacons.append(_json_item(item, request))
        except InvalidRecord as exc:
            errors.append(exc)
            raws.append(raw_json(item))
    return ParseResult(tuple(beacons), tuple(errors), source, tuple(raws))


def _json_item(item: Any, request: _Request) -> Beacon:
    if not isinstance(item, dict):
        msg = f"expected a JSON object, got {type(item).__name__}"
        raise InvalidRecord(msg)
    if "beacon_id" in item:
        return _canonical_beacon(item, request)
    if "name" in item and "value" in item:
        fields = web_vitals_fields(item, request.received_at_ms, request.user_agent)
        return stamped(fields, request.allowed_params)
    msg = ("neither a web-vitals metric (needs 'name' and 'value') nor a canonical beacon "
           "(needs 'beacon_id')")
    raise InvalidRecord(msg)


def _canonical_beacon(item: dict[str, Any], request: _Request) -> Beacon:
    """A canonical beacon stamped with ``received_at`` and, if it has none, the user agent;
    a string ``referrer`` is cut to its origin (dropped when it has none)."""
    agent = item.get("user_agent")
    if agent is None or agent == "":
        agent = clip_user_agent(request.user_agent)
    fields = {**item, "received_at": request.received_at_ms, "user_agent": agent}
    if "referrer" in item:  # cut to its origin; one that is not a URL string is ignored
        fields["referrer"] = referrer_origin(item["referrer"])
    try:
        return stamped(fields, request.allowed_params)
    except InvalidRecord as exc:
        if exc.field != "received_at":
            raise
    # an implausible clock (tests): stamp what it says, as the collector always did
    beacon = stamped({**fields, "received_at": None}, request.allowed_params)
    return dataclasses.replace(
        beacon, received_at=request.received_at_ms,
        user_agent=beacon.user_agent or clip_user_agent(request.user_agent))


def _json_items(body: bytes) -> list[Any]:
    if not body or body.isspace():  # (as ``not body.strip()``, without the copy)
        msg = "empty body"
        raise InvalidRecord(msg)
    try:
        data = orjson.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        msg = "body is not UTF-8"
        raise InvalidRecord(msg) from None
    except orjson.JSONDecodeError as exc:
        msg = f"not valid JSON: {exc.msg}"
        raise InvalidRecord(msg) from None
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list) or not data:
        msg = f"expected a JSON object or a non-empty array, got {type(data).__name__}"
        raise InvalidRecord(msg)
    if len(data) > MAX_ARRAY_LEN:
        msg = f"array of {len(data)} records; at most {MAX_ARRAY_LEN} per request"
        raise InvalidRecord(msg)
    return data


def _decode_pairs(raw: bytes, what: str) -> list[tuple[str, str]]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except UnicodeDecodeError:
        msg = f"{what} is not UTF-8"
        raise InvalidRecord(msg) from None
    except ValueError:
        msg = f"{what} has more than {MAX_FORM_FIELDS} fields"
        raise InvalidRecord(msg) from None
    if not pairs:
        msg = f"empty {what}"
        raise InvalidRecord(msg)
    return pairs
