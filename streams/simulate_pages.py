"""What the simulated browsers and pages look like: user agents, the pages after the
landing (URLs, groups, LCP factors, referrers), the checkout page, a page view's metrics
and how they travel as records.

Only a session that reaches the checkout (:mod:`streams.simulate_funnel`) shows the
checkout page; the other pages after the landing are drawn from :data:`FURTHER_URLS`.
"""

from __future__ import annotations

import math

import numpy as np

from streams.records import MAX_TIMING_MS
from streams.simulate_model import FloatArray, IntArray, page_group

USER_AGENTS: tuple[tuple[str, ...], ...] = (  # by device code: desktop, mobile, tablet
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36",
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
     "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Mobile Safari/537.36",
     "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"),
    ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1",
     "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36"),
)
BOT_USER_AGENTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)

# Pages after the landing: path, LCP factor, weight after a commerce / a content landing.
_FURTHER = (
    ("/product/trail-runner-3000", 1.0, 0.08, 0.04), ("/product/rain-jacket", 1.0, 0.08, 0.04),
    ("/product/wool-socks", 1.0, 0.07, 0.04), ("/product/headlamp", 1.0, 0.07, 0.04),
    ("/product/tent-2p", 1.0, 0.07, 0.04), ("/product/bottle", 1.0, 0.07, 0.04),
    ("/category/shoes", 0.9, 0.08, 0.04), ("/category/outdoor", 0.9, 0.07, 0.04),
    ("/cart", 0.75, 0.12, 0.04), ("/", 0.9, 0.10, 0.10),
    ("/search?q=jacket", 0.85, 0.07, 0.04),
    ("/blog/how-to-choose-trail-shoes", 0.8, 0.03, 0.25),
    ("/blog/packing-list", 0.8, 0.03, 0.23),
)
SHOP_ORIGIN = "https://shop.example"
CHECKOUT_URL = f"{SHOP_ORIGIN}/checkout"  # only sessions that reach the checkout show it
CHECKOUT_GROUP = page_group("/checkout")
CHECKOUT_LCP_FACTOR = 0.8
FURTHER_URLS = tuple(f"{SHOP_ORIGIN}{p[0]}" for p in _FURTHER)
# A landing's referrer by utm_source (none: typed, e-mail, QR code); later pages: the shop.
LANDING_REFERRERS = {s: f"https://{h}" for s, h in (
    ("google", "www.google.com"), ("facebook", "www.facebook.com"), ("tiktok", "www.tiktok.com"),
    ("affiliate", "deals.example"), ("partner", "partner.example"))}
FURTHER_GROUPS = tuple(page_group(p[0]) for p in _FURTHER)
FURTHER_LCP_FACTOR = np.array([p[1] for p in _FURTHER])
FURTHER_WEIGHTS = (np.array([p[2] for p in _FURTHER]), np.array([p[3] for p in _FURTHER]))
FURTHER_COUNT_P = np.array([0.5, 0.25, 0.12, 0.08, 0.05])  # 1..5 pages after the landing


def page_metrics(rng: np.random.Generator, lcp: FloatArray, dwell: FloatArray,
                 device: IntArray | None) -> list[list[float]]:
    """Columns lcp, fcp, ttfb, inp (nan: none), cls, load, dwell (one row per page view);
    ``device`` None: bots' pages (no interaction, no INP)."""
    n = len(lcp)
    z = rng.standard_normal((5, n))
    lcp = np.clip(lcp, 50.0, MAX_TIMING_MS)
    ttfb = lcp * 0.25 * np.exp(0.2 * z[0])
    fcp = np.minimum(lcp, np.maximum(ttfb * 1.2, lcp * 0.6 * np.exp(0.15 * z[1])))
    load = np.minimum(lcp * 1.25 * np.exp(0.15 * np.abs(z[2])), MAX_TIMING_MS)
    inp_median = 120.0 if device is None else np.where(device == 1, 220.0, 120.0)
    inp = np.minimum(inp_median * np.exp(0.6 * z[3]), MAX_TIMING_MS)
    inp[rng.random(n) < (1.0 if device is None else 0.25)] = np.nan
    cls = np.where(rng.random(n) < 0.3, 0.0, 0.03 * np.exp(z[4]))
    dwell = np.maximum(dwell, load + 500.0)
    rows = np.column_stack([np.round(lcp, 1), np.round(fcp, 1), np.round(ttfb, 1),
                            np.round(inp, 0), np.round(cls, 4), np.round(load, 1), dwell])
    result: list[list[float]] = rows.tolist()
    return result


def split_metrics(style: int, row: list[float]) -> list[tuple[float, dict[str, float]]]:
    """How one page view's metrics travel: (send offset after ts in ms, metrics) per record.

    web-vitals: one metric per record (TTFB and FCP after load, LCP after the first
    interaction, CLS and INP on hide); boomerang: a load beacon and an unload beacon
    carrying INP; a single record at load otherwise.
    """
    lcp, fcp, ttfb, inp, cls, load, dwell = row
    has_inp = not math.isnan(inp)  # nan: no interaction, no INP
    if style == 0:
        records = [(fcp, {"ttfb_ms": ttfb}), (fcp, {"fcp_ms": fcp}),
                   (min(lcp + 1_000.0, dwell), {"lcp_ms": lcp}), (dwell, {"cls": cls})]
        return [*records, (dwell, {"inp_ms": inp})] if has_inp else records
    timings = {"lcp_ms": lcp, "fcp_ms": fcp, "ttfb_ms": ttfb, "load_ms": load}
    if style == 1:
        unload = {"inp_ms": inp, "cls": cls} if has_inp else {"cls": cls}
        return [(load, timings), (dwell, unload)]
    return [(load, {**timings, "cls": cls})]
