"""Known robots by user agent: crawlers, monitoring, HTTP libraries and headless browsers.

The collector forwards every beacon (our own browser test runs HeadlessChrome and expects
its beacons on the topic); the sessionizer calls :func:`is_bot_user_agent` and flags the
session, so bots count nowhere but in a metric (CONTRACT.md, "Attribution").
"""

from __future__ import annotations

import re
from functools import lru_cache

# One alternation, matched case-insensitively anywhere in the user agent.
_BOT_PATTERN = re.compile(
    "|".join((
        # generic crawler words; "cubot" is a phone brand, not a robot
        r"(?<!cu)bot\b", r"(?<!cu)bot[-_/]", r"crawl", r"spider", r"slurp", r"scrape",
        # search engines and link previews whose names do not say "bot"
        r"bingpreview", r"facebookexternalhit", r"mediapartners-google",
        r"google-inspectiontool", r"google-pagerenderer", r"embedly", r"ia_archiver",
        # headless browsers and browser automation
        r"headless", r"phantomjs", r"slimerjs", r"puppeteer", r"playwright", r"selenium",
        r"webdriver",
        # performance and uptime monitoring
        r"lighthouse", r"pagespeed", r"gtmetrix", r"pingdom", r"uptimerobot", r"statuscake",
        r"site24x7", r"newrelicpinger", r"datadogsynthetics", r"catchpoint", r"dynatrace",
        r"webpagetest", r"ptst/", r"checkly", r"synthetic",
        # HTTP clients and scripting libraries
        r"\bcurl/", r"wget/", r"python-requests", r"python-urllib", r"python-httpx",
        r"aiohttp", r"go-http-client", r"okhttp", r"apache-httpclient", r"^java/",
        r"libwww-perl", r"node-fetch", r"axios/", r"scrapy", r"httpunit", r"postmanruntime",
    )),
    re.IGNORECASE,
)


@lru_cache(maxsize=8192)
def is_bot_user_agent(user_agent: str | None) -> bool:
    """Whether ``user_agent`` names a crawler, monitor, HTTP library or headless browser.

    A missing or empty user agent is not evidence of a bot (the collector may not stamp
    one). Results are cached: user agents repeat across sessions.

    Args:
        user_agent: the ``User-Agent`` header the beacon was sent with, if any.

    Returns:
        True for a known robot.

    >>> is_bot_user_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    True
    >>> is_bot_user_agent("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/126.0 Safari/537.36")
    True
    >>> is_bot_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1")
    False
    """
    if not user_agent:
        return False
    return _BOT_PATTERN.search(user_agent) is not None
