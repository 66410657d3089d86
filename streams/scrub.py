"""The scrubbing the collector applies to beacons, and to what it sends to the dead letter.

A beacon keeps only ``utm_*`` and the allowed query parameters of its ``page_url`` and of
the URL-valued unknown fields it carries (``referrer``, boomerang's ``u``, ...); an element
or body that cannot be read is kept for the dead-letter topic with every URL query cut and
bulky fields dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from streams.errors import InvalidRecord
from streams.records import MAX_URL_LEN, Beacon, beacon_from_dict
from streams.urls import scrub_url

MAX_RAW_BYTES = 4_096
SCRUB_CACHE_SIZE = 2_048  # page URLs whose scrubbed form is kept (pages send several beacons)
MAX_CACHED_URL_LEN = 1_024  # longer URLs are scrubbed each time (bounds the cache's memory)
MAX_EXTRA_DEPTH = 32  # unknown fields nested deeper cannot be serialised safely (orjson: 254)
_URL_KEYS = frozenset({"page_url", "navigationURL", "referrer", "u", "r", "pgu", "nu"})
# never canonical fields: they stay in ``extra`` (``referrer`` is canonical, cut to its origin)
_EXTRA_URL_KEYS = _URL_KEYS - {"page_url", "referrer"}
_BULKY_KEYS = frozenset({"attribution", "entries", "restiming"})
_QUERY_IN_RAW = re.compile(rb"\?[^\s\"'#]*|%3[Ff][^\s\"'&#]*")


def redact_raw(raw: bytes) -> bytes:
    """An unreadable body for the dead-letter topic: every URL query (plain or %-encoded) cut.

    >>> redact_raw(b'{"page_url":"https://s.example/p?email=a@b","v":')
    b'{"page_url":"https://s.example/p","v":'
    """
    return _QUERY_IN_RAW.sub(b"", raw[:MAX_RAW_BYTES])


def stamped(fields: dict[str, Any], allowed_params: Collection[str]) -> Beacon:
    """``beacon_from_dict(fields)`` with its URLs scrubbed (``fields`` is changed).

    The beacon (or the error) is the one :func:`_scrub` gives after reading ``fields`` as
    they are; it is built once, from scrubbed fields, when the ``page_url`` passes the
    record reader's check both before and after scrubbing (always, but for edge cases).
    """
    url = fields.get("page_url")
    scrubbed = _scrubbed_url(url, allowed_params)
    if scrubbed is None:
        return _scrub(beacon_from_dict(fields), allowed_params)
    fields["page_url"] = scrubbed
    if not _EXTRA_URL_KEYS.isdisjoint(fields):
        for key in _EXTRA_URL_KEYS.intersection(fields):
            fields[key] = _scrub_raw_value(key, fields[key], allowed_params)
    beacon = beacon_from_dict(fields)
    if beacon.extra:
        _check_depth(beacon.extra)
    return beacon


def _scrubbed_url(url: Any, allowed_params: Collection[str]) -> str | None:
    """``url`` scrubbed, when it and the result are both valid ``page_url`` s; else None."""
    if type(url) is not str or not 0 < len(url) <= MAX_URL_LEN:
        return None
    if len(url) <= MAX_CACHED_URL_LEN and isinstance(allowed_params, tuple | frozenset):
        return _scrubbed_url_cached(url, allowed_params)
    return _scrubbed_str(url, allowed_params)


def _scrubbed_str(url: str, allowed_params: Collection[str]) -> str | None:
    try:
        scrubbed = scrub_url(url, allowed_params)
    except ValueError:
        return None
    return scrubbed if 0 < len(scrubbed) <= MAX_URL_LEN else None


_scrubbed_url_cached = functools.lru_cache(maxsize=SCRUB_CACHE_SIZE)(_scrubbed_str)


def _scrub(beacon: Beacon, allowed_params: Collection[str]) -> Beacon:
    """A read beacon with its URLs scrubbed (the reference :func:`stamped` matches)."""
    try:
        page_url = scrub_url(beacon.page_url, allowed_params)
    except ValueError:
        msg = "'page_url' is not a URL"
        raise InvalidRecord(msg, field="page_url") from None
    if not beacon.extra:
        return dataclasses.replace(beacon, page_url=page_url)
    _check_depth(beacon.extra)
    extra = {key: _scrub_raw_value(key, value, allowed_params)
             for key, value in beacon.extra.items()}
    return dataclasses.replace(beacon, page_url=page_url, extra=extra)


def _check_depth(extra: dict[str, Any]) -> None:
    if not _shallow(extra, MAX_EXTRA_DEPTH):
        msg = f"unknown fields nested more than {MAX_EXTRA_DEPTH} deep"
        raise InvalidRecord(msg)


def _shallow(value: Any, limit: int) -> bool:
    """Whether ``value`` (JSON data) nests lists and objects at most ``limit`` deep."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return True
    return False


def raw_json(item: Any) -> bytes:
    """A bad element for the dead-letter topic: URLs scrubbed, bulky fields dropped."""
    if isinstance(item, dict):
        item = {key: _scrub_raw_value(key, value) for key, value in item.items()
                if key not in _BULKY_KEYS}
    try:
        raw = orjson.dumps(item)
    except TypeError:  # e.g. integers beyond 64 bits
        raw = b'"(not serialisable)"'
    return raw[:MAX_RAW_BYTES]


def raw_form(params: Sequence[tuple[str, str]]) -> bytes:
    """A bad boomerang beacon for the dead-letter topic: URLs scrubbed, ``restiming`` dropped."""
    kept = [(key, _scrub_raw_value(key, value)) for key, value in params
            if key not in _BULKY_KEYS]
    return urlencode(kept).encode()[:MAX_RAW_BYTES]


def _scrub_raw_value(key: str, value: Any, allowed_params: Collection[str] = ()) -> Any:
    if key not in _URL_KEYS or not isinstance(value, str):
        return value
    try:
        return scrub_url(value, allowed_params)
    except ValueError:
        return "(unreadable URL)"
