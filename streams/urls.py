"""Page-URL helpers: the campaign a URL names, a URL's origin, and the query scrubbing the
collector applies.

Both work on the raw query text (split on ``&``), so the parameters that are kept stay
byte-for-byte as the browser sent them (no re-encoding).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import lru_cache
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MAX_CAMPAIGN_LEN = 100
_UTM_PREFIX = "utm_"


def campaign_from_url(url: str) -> str | None:
    """The first non-empty ``utm_campaign`` of ``url``'s query, stripped, at most 100 characters.

    The value is kept as sent (not lower-cased). Used by the sessionizer on every beacon, so
    URLs that do not mention ``utm_campaign`` return at once.

    >>> campaign_from_url("https://shop.example/p?sku=1&utm_campaign=Spring%20Sale+")
    'Spring Sale'
    >>> campaign_from_url("https://shop.example/p#utm_campaign=x") is None
    True
    """
    if "utm_campaign" not in url:
        return None
    query = url.partition("?")[2].partition("#")[0]
    for piece in query.split("&"):
        key, _, value = piece.partition("=")
        if unquote_plus(key) == "utm_campaign":
            campaign = unquote_plus(value).strip()[:MAX_CAMPAIGN_LEN].strip()
            if campaign:
                return campaign
    return None


# Landing URLs repeat across sessions (one per ad or e-mail link): parse each once.
_campaign_of_url = lru_cache(maxsize=4096)(campaign_from_url)


def campaign_named(campaign: str | None, url: str) -> str | None:
    """The campaign a beacon names: its own ``campaign`` field, else its URL's utm_campaign."""
    return clean_campaign(campaign) or _campaign_of_url(url)


def clean_campaign(campaign: str | None) -> str | None:
    """A campaign name as reported: stripped, at most ``MAX_CAMPAIGN_LEN`` characters."""
    if campaign is None:
        return None
    return campaign.strip()[:MAX_CAMPAIGN_LEN].strip() or None


_DEFAULT_PORTS = {"https": ":443", "http": ":80"}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, without user info or a default
    port; empty when ``url`` has no scheme and host.

    >>> origin_of("HTTPS://u:pw@Shop.Example:443/p?q=1")
    'https://shop.example'
    >>> origin_of("/relative/path") or origin_of("x?a=://b/c")
    ''
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return ""
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop, 0, end)
        if found >= 0:
            end = found
    host = rest[:end].rpartition("@")[2].lower()
    scheme = scheme.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and host.endswith(default):
        host = host[:-len(default)]
    return f"{scheme}://{host}" if host else ""


# Referrers and landing URLs repeat across sessions: parse each once.
_origin_of = lru_cache(maxsize=4096)(origin_of)


def same_origin(referrer: str | None, url: str, site: frozenset[str] = frozenset()) -> bool:
    """Whether a page's referrer is the page's own origin, or both are origins of one shop
    (``site``, from :func:`origin_of`): the page was reached from within the shop, so it is
    not where the visitor landed.

    >>> same_origin("https://shop.example", "https://shop.example/cart")
    True
    >>> same_origin("https://www.google.com/", "https://shop.example/p") or same_origin(None, "x")
    False
    >>> same_origin("https://www.shop.example", "https://shop.example/cart",
    ...             frozenset({"https://shop.example", "https://www.shop.example"}))
    True
    """
    if not referrer:
        return False
    origin = _origin_of(referrer)
    if not origin:
        return False
    page = _origin_of(url)
    return origin == page or (origin in site and page in site)


def scrub_url(url: str, allowed_params: Collection[str] = ()) -> str:
    """``url`` without its fragment, its user info and every query parameter but ``utm_*``.

    Parameters named in ``allowed_params`` are kept too. Raises ``ValueError`` for a URL
    :func:`urllib.parse.urlsplit` cannot read (e.g. a broken IPv6 host).

    >>> scrub_url("https://u:pw@shop.example/p?sku=1&utm_source=news&email=a%40b#top")
    'https://shop.example/p?utm_source=news'
    >>> scrub_url("https://shop.example/p?sku=1&q=x", allowed_params={"sku"})
    'https://shop.example/p?sku=1'
    """
    parts = urlsplit(url)
    kept = [piece for piece in parts.query.split("&") if _keep(piece, allowed_params)]
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), ""))


def _keep(piece: str, allowed_params: Collection[str]) -> bool:
    if not piece:
        return False
    key = unquote_plus(piece.partition("=")[0])
    return key.lower().startswith(_UTM_PREFIX) or key in allowed_params
