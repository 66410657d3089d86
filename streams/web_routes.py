"""The HTTP endpoints every worker serves, on Faust's web server (:mod:`streams.app`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.collector import install_collector
from streams.errors import InvalidRecord
from streams.health import campaigns_view, dumps_json

if TYPE_CHECKING:
    from streams.app import Runtime


def install_routes(rt: Runtime) -> None:
    """The collector, ``/campaigns``, ``/healthz``, ``/metrics`` and ``/readyz``."""
    def on_invalid(error: InvalidRecord, raw: bytes) -> None:
        value = orjson.dumps(error.to_dead_letter(rt.settings.beacons_topic, raw))
        rt.topics[rt.settings.dead_letter_topic].send_soon(key=None, value=value)
        rt.metrics.count_dead_letter(rt.settings.beacons_topic, error.reason)

    install_collector(rt.app, rt.settings, rt.sink, rt.metrics.count_beacons, on_invalid)

    async def campaigns(request: web.Request) -> web.Response:
        return web.json_response(campaigns_view(rt).to_json_obj(), dumps=dumps_json)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(rt.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(request: web.Request) -> web.Response:
        ready = rt.sink.connected and rt.app.consumer is not None and _assigned(rt)
        body = {"ready": ready, "broker": rt.sink.connected, "recovered": rt.recovered}
        return web.json_response(body, status=200 if ready else 503)

    router = cast(Any, rt.app.web).web_app.router
    router.add_get("/campaigns", campaigns)
    router.add_get("/healthz", healthz)
    router.add_get("/metrics", metrics)
    router.add_get("/readyz", readyz)


def _assigned(rt: Runtime) -> bool:
    try:
        return bool(rt.app.consumer.assignment())
    except Exception:
        return False
