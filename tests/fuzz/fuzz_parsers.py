"""Coverage-guided fuzzing (atheris / libFuzzer) of every record parser and the sessionizer.

Run it for as long as you like::

    .venv/bin/python tests/fuzz/fuzz_parsers.py -runs=1000000
    .venv/bin/python tests/fuzz/fuzz_parsers.py -max_total_time=600 corpus_dir/

Each input picks a target with its first byte and feeds it the rest. A target may return a
record or raise :class:`~streams.errors.InvalidRecord`; any other exception is a crash and
libFuzzer stops with the input that caused it. Accepted beacons must also serialise and
read back (what the collector's sink does), and the sessionizer must take them.
``tests/property/test_atheris_smoke.py`` runs a bounded number of iterations in the suite.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from streams.beacons import (
        parse_boomerang,
        parse_canonical,
        parse_collector_body,
        parse_web_vitals,
    )
    from streams.errors import InvalidRecord
    from streams.records import Beacon, SessionFact, parse_beacon, parse_order
    from streams.sessions import Sessionizer
    from streams.urls import campaign_from_url, scrub_url

import contextlib
from urllib.parse import urlencode

import orjson

NOW = 1_795_446_040_000
CONTENT_TYPES = (None, "text/plain", "application/json", "application/x-www-form-urlencoded",
                 "application/octet-stream", "text/xml")
_SESSIONIZER = Sessionizer()
CANARY = os.environ.get("REVWATCH_FUZZ_CANARY") == "1"  # the smoke test checks crash reports


def _check(beacon: Beacon) -> None:
    """An accepted beacon must survive the sink (to_json) and the sessionizer."""
    if parse_beacon(beacon.to_json()) != beacon:
        msg = f"beacon does not read back: {beacon!r}"
        raise AssertionError(msg)
    _SESSIONIZER.observe_beacon(beacon)
    if len(_SESSIONIZER) > 10_000:
        _SESSIONIZER.advance(_SESSIONIZER.watermark_ms + 10**10)


def _collector(fdp: atheris.FuzzedDataProvider) -> None:
    method = "GET" if fdp.ConsumeBool() else "POST"
    content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    query = body.decode("latin-1") if method == "GET" else ""
    result = parse_collector_body(method, content_type, body, query, received_at_ms=NOW,
                                  user_agent="fuzz", allowed_params=("sku",))
    for beacon in result.beacons:
        _check(beacon)
    if len(result.errors) != len(result.rejected_raw):
        msg = "errors and raw elements differ in number"
        raise AssertionError(msg)


def _json_object(fdp: atheris.FuzzedDataProvider) -> dict[str, object] | None:
    try:
        value = orjson.loads(fdp.ConsumeBytes(fdp.remaining_bytes()))
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _web_vitals(fdp: atheris.FuzzedDataProvider) -> None:
    record = _json_object(fdp)
    if record is not None:
        _check(parse_web_vitals(record, received_at_ms=NOW, user_agent=None))


def _canonical(fdp: atheris.FuzzedDataProvider) -> None:
    record = _json_object(fdp)
    if record is not None:
        _check(parse_canonical(record))


def _boomerang(fdp: atheris.FuzzedDataProvider) -> None:
    pairs = []
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        pairs.append((fdp.ConsumeUnicodeNoSurrogates(12), fdp.ConsumeUnicodeNoSurrogates(40)))
    _check(parse_boomerang(pairs, received_at_ms=NOW, user_agent=None))


def _topic_records(fdp: atheris.FuzzedDataProvider) -> None:
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    for reader in (parse_beacon, parse_order, SessionFact.from_json):
        with contextlib.suppress(InvalidRecord):
            reader(raw)


def _urls(fdp: atheris.FuzzedDataProvider) -> None:
    url = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    campaign_from_url(url)
    with contextlib.suppress(ValueError):  # documented: a URL urlsplit cannot read
        scrub_url(url, ("sku",))


TARGETS: tuple[Callable[[atheris.FuzzedDataProvider], None], ...] = (
    _collector, _collector, _web_vitals, _canonical, _boomerang, _topic_records, _urls)


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point: only InvalidRecord may escape a target."""
    if CANARY and b"revwatch-canary" in data:
        msg = "canary: the harness reports crashes"
        raise RuntimeError(msg)
    fdp = atheris.FuzzedDataProvider(data)
    target = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
    with contextlib.suppress(InvalidRecord):
        target(fdp)


def _prefix(target: int, count: int) -> bytes:
    """A byte that makes ``ConsumeIntInRange(0, count - 1)`` pick ``target``."""
    for byte in range(256):
        if atheris.FuzzedDataProvider(bytes([byte])).ConsumeIntInRange(0, count - 1) == target:
            return bytes([byte])
    msg = f"no byte picks {target}"
    raise AssertionError(msg)


def seeds() -> Iterator[bytes]:
    """Valid inputs of each target, for a fresh corpus (libFuzzer mutates from them)."""
    web_vitals = {"name": "LCP", "value": 508, "session_id": "s-1", "page_view_id": "pv",
                  "page_ts": NOW - 900, "page_url": "https://s.example/p?utm_campaign=a&sku=1",
                  "campaign": "c", "device": "mobile"}
    canonical = {"beacon_id": "b", "session_id": "s", "ts": NOW, "page_url": "https://s.example/",
                 "lcp_ms": 1200, "ttfb_ms": 80, "received_at": NOW, "custom": {"a": [1]}}
    boomerang = urlencode({"rt.si": "s", "pid": "p", "u": "https://s.example/?utm_source=x",
                           "rt.tstart": str(NOW), "t_resp": "5", "pt.lcp": "460", "c.cls": "0.1",
                           "et.inp": "128", "nt_nav_st": str(NOW), "nt_res_st": str(NOW + 5)})
    order = {"order_id": "o", "session_id": "s", "ts": NOW, "revenue": 12.5, "currency": "usd"}
    fact = {"kind": "session", "campaign": "c", "watermark_ms": NOW, "session_id": "s"}
    n = len(TARGETS)
    for body, ctype in ((orjson.dumps([web_vitals, canonical]), 1), (boomerang.encode(), 3),
                        (orjson.dumps(web_vitals), 0)):
        yield _prefix(0, n) + b"\x00" + _prefix(ctype, len(CONTENT_TYPES)) + body
    yield _prefix(1, n) + b"\x01" + b"\x00" + boomerang.encode()
    yield _prefix(2, n) + orjson.dumps(web_vitals)
    yield _prefix(3, n) + orjson.dumps(canonical)
    yield _prefix(4, n) + b"\x03" + b"rt.si\x00s\x00pid\x00p\x00u\x00https://s.example/"
    for record in (canonical, order, fact):
        yield _prefix(5, n) + orjson.dumps(record)
    yield _prefix(6, n) + b"https://u:p@s.example/p?utm_campaign=Spring%20Sale&sku=1#x"


def main() -> None:
    """libFuzzer's command line; an empty corpus directory given is filled with seeds first."""
    for arg in sys.argv[1:]:
        corpus = Path(arg)
        if not arg.startswith("-") and corpus.is_dir() and not any(corpus.iterdir()):
            for i, seed in enumerate(seeds()):
                (corpus / f"seed-{i:02d}").write_bytes(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
