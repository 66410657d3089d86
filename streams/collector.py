"""The ``/beacon`` endpoint (CONTRACT.md "HTTP"), as raw aiohttp routes.

Answers (bodies are JSON ``{"error": reason}``; the reason is short, never the raw input,
and JSON-escaped with ``<``, ``>``, ``&`` written as ``\\u00XX``):

====  =================================================================================
204   read; at least one record handed to the sink (bad elements of an array are
      reported through ``on_invalid`` and counted ``invalid``)
400   nothing in the body could be read
403   the request's ``Origin`` is not in ``cors_origins`` (preflight or beacon)
413   the body (or a GET query) is longer than ``max_body_bytes``
429   this client sent more than ``rate_limit_per_minute`` (token bucket, ``Retry-After``)
503   the sink's buffer is full (broker away too long; ``Retry-After``)
====  =================================================================================

CORS: the allowed ``Origin`` is echoed with ``Access-Control-Allow-Credentials: true``,
because ``sendBeacon`` always sends credentials and ``*`` is refused then (RUM-BEACONS.md).
An empty ``cors_origins`` allows every origin. The client address is used, in memory only,
for the rate limit; it is never logged or stored.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict

import streams
from streams.beacons import Source, body_source, parse_collector_body
from streams.errors import InvalidRecord
from streams.scrub import redact_raw
from streams.settings import Settings
from streams.sink import BeaconSink

OnResult = Callable[[str, str, int], None]
OnInvalid = Callable[[InvalidRecord, bytes], None]
Clock = Callable[[], float]

MAX_TRACKED_CLIENTS = 10_000
MAX_REASON_CHARS = 200
MAX_ORIGIN_CHARS = 300
MAX_CACHED_ORIGINS = 1_024  # origins whose CORS answer is kept (the cache is emptied when full)
OVERLOADED_RETRY_AFTER_S = 5
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Allow-Headers": "content-type",
    "Access-Control-Max-Age": "600",
}
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_PLAIN_HEADERS = {"Cache-Control": "no-store", **_NOSNIFF}
SNIPPET_NAME = "revwatch-rum.js"
_READ_CHUNK = 16_384
# scheme://host[:port] (what browsers send; IPv6 in brackets), or "null" (file:, sandboxes)
_ORIGIN = re.compile(r"null|[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9._~%-]+(?::[0-9]{1,5})?"
                     r"|[A-Za-z][A-Za-z0-9+.-]*://\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


class RateLimiter:
    """A token bucket per client, in memory only; the least recently seen client is dropped.

    Each bucket holds up to ``per_minute`` tokens and refills ``per_minute`` a minute.
    ``per_minute <= 0`` turns the limit off.
    """

    def __init__(self, per_minute: int, *, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Clock = time.monotonic) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def retry_after_s(self, client: str) -> float:
        """Take a token for ``client``: 0.0 if it had one, else seconds until it will."""
        if self.per_minute <= 0:
            return 0.0
        now, rate_per_s = self._clock(), self.per_minute / 60.0
        tokens, last = self._buckets.pop(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate_per_s)
        wait_s = 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate_per_s
        self._buckets[client] = (tokens - 1.0 if wait_s == 0.0 else tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait_s


class _Reject(Exception):
    """A request answered with an error status (control flow inside this module)."""

    def __init__(self, status: int, outcome: str, reason: str, *, count: int = 1,
                 retry_after_s: float = 0.0, source: Source | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.outcome = outcome
        self.reason = reason
        self.count = count
        self.retry_after_s = retry_after_s
        self.source = source


class _BeaconView:
    def __init__(self, settings: Settings, sink: BeaconSink, *, on_result: OnResult | None,
                 on_invalid: OnInvalid | None, clock: Clock, limiter: RateLimiter) -> None:
        self._settings = settings
        self._sink = sink
        self._on_result = on_result
        self._on_invalid = on_invalid
        self._clock = clock
        self._limiter = limiter
        # origin -> the 204's headers (None: not allowed); built once per origin
        self._accepted_headers: dict[str | None, CIMultiDict[str] | None] = {}

    async def beacon(self, request: web.Request) -> web.Response:
        """``POST`` and ``GET /beacon``."""
        request_headers = request.headers
        content_type = request_headers.get(hdrs.CONTENT_TYPE)
        origin = request_headers.get(hdrs.ORIGIN)
        try:
            accepted_headers = self._accepted_headers[origin]
        except KeyError:
            accepted_headers = self._accepted_headers_of(origin)
        try:
            if accepted_headers is None:
                raise _Reject(403, "invalid", "origin not allowed")
            limiter = self._limiter
            if limiter.per_minute > 0 or type(limiter) is not RateLimiter:
                self._check_rate(request)
            body = await _read_body(request, self._settings.max_body_bytes)
            accepted, source = self._accept(request, content_type, body)
        except _Reject as reject:
            self._count(reject.source or body_source(request.method, content_type),
                        reject.outcome, reject.count)
            headers = cors_headers(origin, self._settings.cors_origins)
            return _error_response(reject, headers or {hdrs.VARY: "Origin"})
        self._count(source, "accepted", accepted)
        return web.Response(status=204, headers=accepted_headers)  # (copied by aiohttp)

    def _accepted_headers_of(self, origin: str | None) -> CIMultiDict[str] | None:
        """The headers of a 204 to ``origin`` (None: not allowed), kept for the next time."""
        headers = cors_headers(origin, self._settings.cors_origins)
        accepted = None if headers is None else CIMultiDict({**_PLAIN_HEADERS, **headers})
        if len(self._accepted_headers) >= MAX_CACHED_ORIGINS:
            self._accepted_headers.clear()
        self._accepted_headers[origin] = accepted
        return accepted

    async def preflight(self, request: web.Request) -> web.Response:
        """``OPTIONS /beacon``: the CORS preflight of ``application/json`` Blob beacons."""
        headers = cors_headers(request.headers.get(hdrs.ORIGIN), self._settings.cors_origins)
        if headers is None:
            return _error_response(_Reject(403, "invalid", "origin not allowed"),
                                   {hdrs.VARY: "Origin"})
        return web.Response(status=204, headers={**_PLAIN_HEADERS, **headers,
                                                 **PREFLIGHT_HEADERS})

    def _check_rate(self, request: web.Request) -> None:
        wait_s = self._limiter.retry_after_s(request.remote or "")
        if wait_s > 0:
            raise _Reject(429, "rate_limited", "too many beacons from this client",
                          retry_after_s=wait_s)

    def _accept(self, request: web.Request, content_type: str | None,
                body: bytes) -> tuple[int, Source]:
        try:
            result = parse_collector_body(
                request.method, content_type, body,
                request.query_string, received_at_ms=int(self._clock() * 1000),
                user_agent=request.headers.get(hdrs.USER_AGENT),
                allowed_params=self._settings.allowed_query_params)
        except InvalidRecord as exc:
            self._dead_letter(exc, redact_raw(body or request.query_string.encode()))
            source = body_source(request.method, content_type, body)
            raise _Reject(400, "invalid", exc.reason, source=source) from None
        if result.errors:
            for error, element in result.rejected():
                self._dead_letter(error, element)
        if not result.beacons:
            raise _Reject(400, "invalid", result.errors[0].reason, count=len(result.errors),
                          source=result.source)
        self._count(result.source, "invalid", len(result.errors))
        if not self._sink.offer(result.beacons):
            raise _Reject(503, "overloaded", "collector is overloaded; retry later",
                          count=len(result.beacons), retry_after_s=OVERLOADED_RETRY_AFTER_S,
                          source=result.source)
        return len(result.beacons), result.source

    def _count(self, source: str, outcome: str, count: int) -> None:
        if self._on_result is not None and count > 0:
            self._on_result(source, outcome, count)

    def _dead_letter(self, error: InvalidRecord, raw: bytes) -> None:
        if self._on_invalid is not None:
            self._on_invalid(error, raw)


def collector_routes(
    settings: Settings,
    sink: BeaconSink,
    on_result: OnResult | None = None,
    on_invalid: OnInvalid | None = None,
    *,
    clock: Clock = time.time,
    limiter: RateLimiter | None = None,
) -> list[web.RouteDef]:
    """The ``/beacon`` routes (POST, GET, OPTIONS) and ``GET /revwatch-rum.js``.

    Args:
        settings: ``max_body_bytes``, ``cors_origins``, ``allowed_query_params`` and
            ``rate_limit_per_minute`` are read.
        sink: receives every accepted beacon.
        on_result: called as ``(source, outcome, count)`` for ``revwatch_beacons_total``.
        on_invalid: called with each unreadable record and its raw bytes (dead letter).
        clock: epoch seconds, for ``received_at``.
        limiter: replaces the default per-client :class:`RateLimiter`.
    """
    view = _BeaconView(settings, sink, on_result=on_result, on_invalid=on_invalid, clock=clock,
                       limiter=limiter or RateLimiter(settings.rate_limit_per_minute))
    return [
        web.post("/beacon", view.beacon),
        web.get("/beacon", view.beacon, allow_head=False),
        web.options("/beacon", view.preflight),
        web.get("/revwatch-rum.js", _snippet),
    ]


def snippet_path() -> Path:
    """``streams/static/revwatch-rum.js`` in the package's source folder.

    Not beside ``__file__``: built with mypyc (``streams.native``), this module's file is
    in ``.native/``, which holds no static files; ``streams.__path__`` lists both folders.
    """
    for folder in streams.__path__:
        path = Path(folder) / "static" / SNIPPET_NAME
        if path.is_file():
            return path
    return Path(__file__).parent / "static" / SNIPPET_NAME


@functools.cache
def _snippet_bytes() -> bytes:
    return snippet_path().read_bytes()


async def _snippet(_: web.Request) -> web.Response:
    """``GET /revwatch-rum.js``: the page snippet (docs/INTEGRATION.md)."""
    return web.Response(body=_snippet_bytes(), content_type="text/javascript", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600", **_NOSNIFF})


def install_collector(
    faust_app: Any,
    settings: Settings,
    sink: BeaconSink,
    on_result: OnResult | None = None,
    on_invalid: OnInvalid | None = None,
) -> None:
    """Add the ``/beacon`` routes to a Faust app's aiohttp web server (before it starts).

    Faust's aiohttp driver exposes its :class:`aiohttp.web.Application` as
    ``app.web.web_app``; raw routes added there are served by every worker (on the worker's
    event loop unless ``web_in_thread`` is set, which the sink does not support). The caller
    starts and stops a :class:`~streams.sink.KafkaSink` with the worker.
    """
    web_app: web.Application = faust_app.web.web_app
    web_app.router.add_routes(collector_routes(settings, sink, on_result, on_invalid))


def cors_headers(origin: str | None, allowed: tuple[str, ...]) -> dict[str, str] | None:
    """Response CORS headers for ``origin``, or None when it is not allowed."""
    if origin is None:
        return {hdrs.VARY: "Origin"}
    plausible = len(origin) <= MAX_ORIGIN_CHARS and _ORIGIN.fullmatch(origin) is not None
    if not plausible or (allowed and origin not in allowed):
        return None
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
            hdrs.VARY: "Origin"}


async def _read_body(request: web.Request, max_bytes: int) -> bytes:
    if request.method == "GET":
        if len(request.query_string) > max_bytes:
            raise _too_large(max_bytes)
        return b""
    length = request.content_length
    if length is not None:
        if length > max_bytes:
            raise _too_large(max_bytes)
        content = request.content
        if content.is_eof():  # all of it received already (the usual small beacon)
            return content.read_nowait()
        return await content.read()  # the parser stops at Content-Length
    body = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


def _too_large(max_bytes: int) -> _Reject:
    return _Reject(413, "too_large", f"body larger than {max_bytes} bytes")


def _error_response(reject: _Reject, headers: dict[str, str]) -> web.Response:
    body = orjson.dumps({"error": reject.reason[:MAX_REASON_CHARS]})
    for char in b"<>&":
        body = body.replace(bytes([char]), f"\\u{char:04x}".encode())
    extra: dict[str, str] = {}
    if reject.retry_after_s > 0:
        extra[hdrs.RETRY_AFTER] = str(max(1, math.ceil(reject.retry_after_s)))
    return web.Response(status=reject.status, body=body, content_type="application/json",
                        headers={**_PLAIN_HEADERS, **headers, **extra})
