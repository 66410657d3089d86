"""Real browser -> collector -> Kafka: web-vitals + revwatch-rum.js, and boomerang.

Debian's Chromium (/usr/bin/chromium) driven headless by Python Playwright (no browser
download). Pages are served from one local port and beacon cross-origin to the collector on
another (as in production); the product page loads ``revwatch-rum.js`` from the collector's
``/revwatch-rum.js``, as docs/INTEGRATION.md tells sites to. The collector runs the real
routes and a KafkaSink producing to a unique topic on the test broker; the test reads that
topic back. Scenario per page: load, click (for INP), wait 2 s (web-vitals processes
interactions in an idle callback with a 1 s timeout: RUM-BEACONS.md gotcha 1), navigate
away (the only way to go hidden in headless Chromium: gotcha 2). The product page leaves
from within the page (``location.assign``, as a link does) to a cart page that runs the
snippet too, so the cart's records carry the site's origin as ``referrer`` and the product
page's (opened directly) none. Beacons sent during unload are only visible on the collector
side (gotcha 3), so every assertion is on what Kafka holds. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from playwright.async_api import Browser, async_playwright

from streams.collector import collector_routes
from streams.records import METRICS, Beacon, parse_beacon
from streams.settings import Settings
from streams.sink import KafkaSink
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "tests" / "browser"
PAGES = BROWSER_DIR / "pages"
WEB_VITALS_JS = BROWSER_DIR / "node_modules" / "web-vitals" / "dist" / "web-vitals.iife.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
LANDING_QUERY = "?utm_campaign=spring_sale&utm_source=newsletter&sku=1"
HERO_DELAY_S = 0.3
INP_SETTLE_S = 2.0
KAFKA_WAIT_S = 25.0
NEXT_PAGE_SETTLE_S = 1.0  # the cart page's TTFB and FCP are sent after its load
# Where the product page leads (kept here, not in pages/, as only this test serves it): the
# snippet again, with its own page group.
CART_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cart</title>
<script src="/js/web-vitals.iife.js"></script>
<script src="__COLLECTOR__/revwatch-rum.js" data-endpoint="__COLLECTOR__/beacon"
        data-page-group="cart"></script>
</head><body><h1>Cart</h1><p>1 item</p></body></html>
"""

Records = list[tuple[bytes, Beacon]]


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress((b"\x00" + bytes(rgb) * width) * height)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def boomerang_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """boomerang 1.815.1 built from the npm sources (default flavor)."""
    if not WEB_VITALS_JS.exists():
        pytest.fail("tests/browser/node_modules is missing: run `npm ci` in tests/browser")
    out = tmp_path_factory.mktemp("boomerang") / "boomerang.js"
    subprocess.run(["node", str(BROWSER_DIR / "build-boomerang.mjs"), str(out)], check=True,
                   timeout=60, capture_output=True)
    return out


def _page_app(collector: dict[str, str], boomerang: Path) -> web.Application:
    """The shop pages; ``collector["origin"]`` is filled in once the collector listens."""
    hero = _png(600, 300, (200, 60, 40))

    pages = {path.name: path.read_text() for path in PAGES.glob("*.html")}
    pages["cart.html"] = CART_HTML

    async def page(request: web.Request) -> web.Response:
        html = pages[request.match_info["name"]]
        return web.Response(text=html.replace("__COLLECTOR__", collector["origin"]),
                            content_type="text/html")

    async def image(_: web.Request) -> web.Response:
        await asyncio.sleep(HERO_DELAY_S)
        return web.Response(body=hero, content_type="image/png",
                            headers={"Cache-Control": "no-store"})

    def script(path: Path) -> Callable[[web.Request], Awaitable[web.Response]]:
        text = path.read_text()

        async def handler(_: web.Request) -> web.Response:
            return web.Response(text=text, content_type="text/javascript")
        return handler

    app = web.Application()
    app.add_routes([
        web.get("/js/web-vitals.iife.js", script(WEB_VITALS_JS)),
        web.get("/js/boomerang.js", script(boomerang)),
        web.get("/img/hero.png", image),
        web.get("/{name:[a-z]+\\.html}", page),
    ])
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def _visit(browser: Browser, url: str, next_url: str, before_leaving: str | None = None,
                 *, in_page: bool = False) -> dict[str, Any]:
    """Load, click, settle, optionally evaluate ``before_leaving``, navigate away.

    ``in_page``: the page itself goes to ``next_url`` (so that page's ``document.referrer``
    is this one, as after a link), and the next page is given time to send its first records.
    """
    context = await browser.new_context()
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    try:
        await page.goto(url, wait_until="load", timeout=15_000)
        await page.wait_for_timeout(800)
        await page.click("#add-to-cart", timeout=5_000)
        await page.wait_for_timeout(INP_SETTLE_S * 1000)
        info = await page.evaluate(before_leaving) if before_leaving else {}
        if in_page:
            async with page.expect_navigation(wait_until="load", timeout=15_000):
                await page.evaluate("url => { location.assign(url); }", next_url)
            await page.wait_for_timeout(NEXT_PAGE_SETTLE_S * 1000)
        else:
            await page.goto(next_url, wait_until="load", timeout=15_000)
            await page.wait_for_timeout(500)
    finally:
        await context.close()
    return {"info": info, "console": console}


SEND_JSON_BLOB = """() => {
  const saved = JSON.parse(localStorage.getItem("revwatch_session"));
  const beacon = {beacon_id: "blob:" + saved.id, session_id: saved.id, ts: Date.now(),
                  page_url: location.href, lcp_ms: 1234};
  const endpoint = document.querySelector("script[data-endpoint]").dataset.endpoint;
  const sent = navigator.sendBeacon(endpoint,
      new Blob([JSON.stringify(beacon)], {type: "application/json"}));
  return {session_id: saved.id, sent: sent};
}"""


async def _run_browser(site: str) -> tuple[dict[str, Any], dict[str, Any]]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                   timeout=30_000)
        try:
            return await asyncio.gather(
                _visit(browser, f"{site}/product.html{LANDING_QUERY}", f"{site}/cart.html",
                       SEND_JSON_BLOB, in_page=True),
                _visit(browser, f"{site}/boomerang.html{LANDING_QUERY}", f"{site}/next.html"))
        finally:
            await browser.close()


async def _consume_until(bootstrap: str, topic: str,
                         done: Callable[[Records], bool]) -> Records:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await asyncio.wait_for(consumer.start(), timeout=20)
    records: Records = []
    deadline = time.monotonic() + KAFKA_WAIT_S
    try:
        while not done(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            records += [(m.key, parse_beacon(m.value)) for ms in batches.values() for m in ms]
    finally:
        await consumer.stop()
    return records


def _merged(records: Records) -> dict[str, dict[str, Any]]:
    """Per beacon_id: the latest non-null value of every metric, plus the records."""
    views: dict[str, dict[str, Any]] = {}
    for _, beacon in records:
        view = views.setdefault(beacon.beacon_id, {"records": []})
        view["records"].append(beacon)
        view.update({m: getattr(beacon, m) for m in METRICS if getattr(beacon, m) is not None})
    return views


def _complete(records: Records) -> bool:
    views = _merged(records).values()
    web_vitals = [v for v in views if "product.html" in v["records"][0].page_url
                  and not v["records"][0].beacon_id.startswith("blob:")]
    boomerang = [v for v in views if "boomerang.html" in v["records"][0].page_url]
    blob = [v for v in views if v["records"][0].beacon_id.startswith("blob:")]
    cart = [v for v in views if v["records"][0].page_url.endswith("/cart.html")]
    return bool(web_vitals and boomerang and blob and cart) \
        and all(m in web_vitals[0] for m in ("lcp_ms", "fcp_ms", "ttfb_ms", "cls", "inp_ms")) \
        and all(m in boomerang[0] for m in ("lcp_ms", "ttfb_ms", "load_ms", "inp_ms"))


Counts = dict[tuple[str, str], int]


async def _start_collector(bootstrap: str, topic: str, site: str,
                           counts: Counts) -> tuple[web.AppRunner, str, KafkaSink]:
    settings = Settings(broker=f"kafka://{bootstrap}", cors_origins=(site,))
    sink = KafkaSink(settings, topic=topic)

    def count(source: str, outcome: str, n: int) -> None:
        counts[source, outcome] = counts.get((source, outcome), 0) + n

    app = web.Application()
    app.add_routes(collector_routes(settings, sink, count))
    await sink.start()
    runner, origin = await _serve(app)
    return runner, origin, sink


async def test_real_browser_beacons_reach_kafka(
    kafka_bootstrap: str, unique_name: str, boomerang_js: Path,
) -> None:
    ensure_topics(kafka_bootstrap, {unique_name: 3})
    collector_origin: dict[str, str] = {}
    page_runner, site = await _serve(_page_app(collector_origin, boomerang_js))
    counts: Counts = {}
    runner, collector_origin["origin"], sink = await _start_collector(
        kafka_bootstrap, unique_name, site, counts)
    try:
        started = time.monotonic()
        web_vitals_run, boomerang_run = await _run_browser(site)
        browser_s = time.monotonic() - started
        records = await _consume_until(kafka_bootstrap, unique_name, _complete)
    finally:
        await sink.stop(flush_timeout_s=10)
        await runner.cleanup()
        await page_runner.cleanup()
    context = f"counts={counts} wv={web_vitals_run} boomr={boomerang_run} records={records}"
    assert browser_s < 30, context
    _check_keys(records)
    _check_web_vitals(records, web_vitals_run["info"], context)
    _check_referrers(records, web_vitals_run["info"], site, context)
    _check_boomerang(records, context)
    assert counts.get(("web-vitals", "invalid"), 0) == 0, context
    assert counts.get(("boomerang", "invalid"), 0) == 0, context
    assert sink.sent == sum(n for (_, outcome), n in counts.items() if outcome == "accepted")


def _check_keys(records: Records) -> None:
    assert records
    for key, beacon in records:
        assert key == beacon.session_id.encode()
        assert beacon.received_at is not None
        assert beacon.user_agent is not None
        assert "HeadlessChrome" in beacon.user_agent


def _check_web_vitals(records: Records, info: dict[str, Any], context: str) -> None:
    session_id = info["session_id"]
    views = [v for k, v in _merged(records).items()
             if k.startswith(f"{session_id}:") and v["records"][0].page_group == "product"]
    assert len(views) == 1, context  # one page view: every metric record shares its beacon_id
    view = views[0]
    for beacon in view["records"]:
        assert beacon.page_url.endswith(
            "/product.html?utm_campaign=spring_sale&utm_source=newsletter"), beacon.page_url
        assert beacon.page_group == "product"
        assert abs(beacon.ts - beacon.received_at) < 60_000  # page_ts: the page's time origin
    assert 0 < view["ttfb_ms"] <= view["fcp_ms"] <= view["lcp_ms"], view
    assert view["lcp_ms"] >= HERO_DELAY_S * 1000 * 0.9, view  # LCP is the late hero image
    assert view["cls"] > 0, view  # the late banner shifted the page
    assert view["inp_ms"] >= 50, view  # the click handler is busy for 60 ms
    names = sorted(m for r in view["records"] for m in METRICS if getattr(r, m) is not None)
    assert names == ["cls", "fcp_ms", "inp_ms", "lcp_ms", "ttfb_ms"], names  # each once
    blob = _merged(records)[f"blob:{session_id}"]  # application/json Blob: CORS preflight
    assert info["sent"] is True
    assert blob["lcp_ms"] == 1234, context


def _check_referrers(records: Records, info: dict[str, Any], site: str, context: str) -> None:
    """The product page was opened directly: no referrer. The cart page was reached from it:
    the site's origin, and never the product page's path or query."""
    views = {v["records"][0].page_group: v["records"] for k, v in _merged(records).items()
             if k.startswith(f"{info['session_id']}:")}
    assert sorted(views) == ["cart", "product"], context  # the same session on both pages
    assert [b.referrer for b in views["product"]] == [None] * len(views["product"]), context
    assert [b.referrer for b in views["cart"]] == [site] * len(views["cart"]), context
    assert views["cart"][0].page_url == f"{site}/cart.html", context
    boomerang = [b for _, b in records if "boomerang.html" in b.page_url]
    assert [b.referrer for b in boomerang] == [None] * len(boomerang), context


def _check_boomerang(records: Records, context: str) -> None:
    views = [v for v in _merged(records).values()
             if "boomerang.html" in v["records"][0].page_url]
    assert len(views) == 1, context
    view = views[0]
    load, unload = view["records"][0], view["records"][-1]
    assert len(view["records"]) == 2, context  # the page-load and the unload (rt.quit) beacon
    assert load.page_url.endswith(
        "/boomerang.html?utm_campaign=spring_sale&utm_source=newsletter"), load.page_url
    assert load.lcp_ms is not None, load
    assert load.ttfb_ms is not None, load
    assert load.load_ms is not None, load
    assert load.load_ms >= HERO_DELAY_S * 1000 * 0.9, load
    assert unload.inp_ms is not None, unload
    assert unload.inp_ms >= 50, unload
    assert load.session_id == unload.session_id
    assert load.beacon_id == f"{load.session_id}:{load.beacon_id.rsplit(':', 1)[1]}"
