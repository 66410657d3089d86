"""The fields each RUM client sends, read into canonical beacon fields (pure).

:mod:`streams.beacons` reads a collector request and validates what these give with
:func:`streams.records.beacon_from_dict`; here is only what each client's wire format
means (RUM-BEACONS.md):

* **web-vitals** (the revwatch snippet's records): one metric a record, ``name`` and
  ``value``; the snippet adds ``session_id``, ``page_view_id``, ``page_ts``, ``page_url``
  and ``referrer``.
* **boomerang**: form pairs, the first value of a key counts; ``rt.si`` and ``pid`` make the
  page view's id; timers are strings of numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from streams.errors import InvalidRecord
from streams.records import MAX_URL_LEN
from streams.urls import origin_of

__all__ = ["BOOMERANG_METRICS", "MAX_USER_AGENT_LEN", "PASS_THROUGH", "WEB_VITALS_METRICS",
           "boomerang_fields", "clip_user_agent", "referrer_origin", "web_vitals_fields"]

MAX_USER_AGENT_LEN = 1_000
WEB_VITALS_METRICS = {"LCP": "lcp_ms", "FCP": "fcp_ms", "TTFB": "ttfb_ms", "INP": "inp_ms",
                      "CLS": "cls"}
BOOMERANG_METRICS = (("lcp_ms", "pt.lcp"), ("fcp_ms", "pt.fcp"), ("load_ms", "t_done"),
                     ("inp_ms", "et.inp"), ("cls", "c.cls"))
PASS_THROUGH = ("campaign", "page_group", "device")
PASS_THROUGH_SET = frozenset(PASS_THROUGH)


def web_vitals_fields(record: Mapping[str, Any], received_at_ms: int,
                       user_agent: str | None) -> dict[str, Any]:
    """The canonical fields of a web-vitals record (what :func:`parse_web_vitals` reads)."""
    session_id = record.get("session_id")
    if session_id is None or session_id == "":
        msg = ("web-vitals record has no 'session_id': web-vitals keeps no session of its "
               "own, so the page must add one (revwatch-rum.js does)")
        raise InvalidRecord(msg, field="session_id")
    field, value = _web_vitals_metric(record)
    beacon_id = f"{session_id}:{_page_view(record)}"
    ts = record.get("page_ts")
    if ts is None:
        ts = record.get("sent_at")
        if ts is None:
            ts = received_at_ms
    fields = {"beacon_id": beacon_id, "session_id": session_id, "ts": ts,
              "page_url": record.get("page_url") or record.get("navigationURL"),
              field: value, "received_at": received_at_ms,
              "user_agent": user_agent[:MAX_USER_AGENT_LEN] if user_agent else None}
    if not PASS_THROUGH_SET.isdisjoint(record):
        fields.update({key: record[key] for key in PASS_THROUGH if key in record})
    referrer = referrer_origin(record.get("referrer"))
    if referrer is not None:
        fields["referrer"] = referrer
    return fields


def boomerang_fields(params: Sequence[tuple[str, str]], received_at_ms: int,
                      user_agent: str | None) -> dict[str, Any]:
    """The canonical fields of a boomerang beacon (what :func:`parse_boomerang` reads)."""
    fields = _first_values(params)
    if not fields.get("rt.si"):
        raise InvalidRecord(_no_session_reason(fields), field="rt.si")
    if not fields.get("pid"):
        msg = "boomerang beacon has no 'pid' (page view id)"
        raise InvalidRecord(msg, field="pid")
    canonical = {
        "beacon_id": f"{fields['rt.si']}:{fields['pid']}",
        "session_id": fields["rt.si"],
        "ts": _boomerang_ts(fields, received_at_ms),
        "page_url": fields.get("u"),
        "ttfb_ms": _boomerang_ttfb(fields),
        **{field: _number(fields, key) for field, key in BOOMERANG_METRICS},
        "received_at": received_at_ms,
        "user_agent": clip_user_agent(user_agent),
        **{key: fields[key] for key in PASS_THROUGH if fields.get(key)},
    }
    referrer = referrer_origin(fields.get("r"))
    if referrer is not None:
        canonical["referrer"] = referrer
    return canonical


def _web_vitals_metric(record: Mapping[str, Any]) -> tuple[str, Any]:
    name = record.get("name")
    field = WEB_VITALS_METRICS.get(name) if isinstance(name, str) else None
    if field is None:
        msg = f"'name' must be one of {', '.join(sorted(WEB_VITALS_METRICS))}"
        raise InvalidRecord(msg, field="name")
    value = record.get("value")
    if value is None:
        msg = f"{name} record has no 'value'"
        raise InvalidRecord(msg, field="value")
    return field, value


def _page_view(record: Mapping[str, Any]) -> str:
    page_view = record.get("page_view_id") or record.get("navigationId")
    if isinstance(page_view, bool) or not isinstance(page_view, str | int):
        msg = ("web-vitals record needs a page view id: 'page_view_id' (revwatch-rum.js) "
               "or 'navigationId' (web-vitals >= 6), a string or an integer")
        raise InvalidRecord(msg, field="page_view_id")
    return str(page_view)


def _first_values(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in params:
        fields.setdefault(key, value)
    return fields


def _no_session_reason(fields: Mapping[str, str]) -> str:
    reason = "boomerang beacon has no 'rt.si' (session id)"
    if fields.get("nocookie") == "1":
        return (f"{reason} and says nocookie=1: boomerang could not set its cookie; set "
                "site_domain to the page's host name in BOOMR.init (the default cookie "
                "domain fails on IP hosts such as 127.0.0.1)")
    return f"{reason}: the RT plugin keeps it in a cookie; check site_domain in BOOMR.init"


def _number(fields: Mapping[str, str], key: str) -> float | None:
    text = fields.get(key)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        msg = f"'{key}' must be a finite number"
        raise InvalidRecord(msg, field=key)
    return value


def _boomerang_ts(fields: Mapping[str, str], default: int) -> float:
    start = _number(fields, "rt.tstart")
    if start is None:
        start = _number(fields, "nt_nav_st")
    return default if start is None else start


def _boomerang_ttfb(fields: Mapping[str, str]) -> float | None:
    ttfb = _number(fields, "t_resp")
    if ttfb is not None:
        return ttfb
    response, navigation = _number(fields, "nt_res_st"), _number(fields, "nt_nav_st")
    return None if response is None or navigation is None else response - navigation


def clip_user_agent(user_agent: str | None) -> str | None:
    return user_agent[:MAX_USER_AGENT_LEN] if user_agent else None


def referrer_origin(referrer: object) -> str | None:
    """The origin of a page's referrer (never its path or query); ``None`` when it has none.

    A referrer that is absent, empty, not a string, without an origin or too long is left
    out rather than refused: bad optional metadata must not cost the beacon its timings.
    """
    if not isinstance(referrer, str) or not referrer:
        return None
    origin = origin_of(referrer)
    return origin if 0 < len(origin) <= MAX_URL_LEN else None
