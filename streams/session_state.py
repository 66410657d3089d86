"""Session parameters, counters and per-session state for :mod:`streams.sessions`.

:class:`SessionState` is one row of the sessionizer's Faust table: ``to_state()`` gives
plain, compact JSON-able data and ``from_state()`` rebuilds an equal object.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.records import NONE_CAMPAIGN, SessionFact
from streams.urls import clean_campaign, origin_of

if TYPE_CHECKING:
    from streams.records import BeaconRow, FactKind
    from streams.settings import Settings

MINUTE_MS = 60_000
NO_WATERMARK = -(1 << 62)  # the watermark before the first record
# A page view is a list: [ts, lcp_ms, fcp_ms, ttfb_ms, inp_ms, load_ms, cls, commerce].
TS, LCP, FCP, TTFB, INP, LOAD, CLS, COMMERCE = range(8)
PAGE_STRIDE = 9  # a page view in a stored state: beacon_id, then the 8 slots
_FIRST_PATH_SEGMENT = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://[^/?#]*)?/([^/?#]*)")

PendingOrder = tuple[str, int, float, str | None]  # order_id, ts, revenue, campaign
SentOrder = tuple[str, int, float]  # order_id, ts, revenue of an order fact sent, in order


@dataclass(frozen=True, slots=True)
class SessionParams:
    """How sessions are cut and judged. Times in epoch milliseconds."""

    session_timeout_ms: int = 30 * MINUTE_MS
    order_grace_ms: int = 60 * MINUTE_MS
    allowed_lateness_ms: int = 30_000
    lcp_wait_ms: int = MINUTE_MS
    non_commerce_groups: frozenset[str] = frozenset({"blog", "content", "help"})
    max_pages_per_minute: int = 60
    # origins of one shop: a page reached from any of them is no landing (its own: always)
    site_origins: frozenset[str] = frozenset()
    checkout_groups: frozenset[str] = frozenset({"checkout"})  # the shop's checkout pages

    def __post_init__(self) -> None:
        object.__setattr__(self, "non_commerce_groups",
                           frozenset(g.lower() for g in self.non_commerce_groups))
        object.__setattr__(self, "checkout_groups",
                           frozenset(g.lower() for g in self.checkout_groups))
        origins = frozenset(origin_of(o) for o in self.site_origins)
        if "" in origins:
            msg = f"site_origins must be origins like https://shop.example: {self.site_origins!r}"
            raise ValueError(msg)
        object.__setattr__(self, "site_origins", origins)
        checks = (("session_timeout_ms", self.session_timeout_ms > 0),
                  ("order_grace_ms", self.order_grace_ms >= 0),
                  ("allowed_lateness_ms", self.allowed_lateness_ms >= 0),
                  ("lcp_wait_ms", self.lcp_wait_ms >= 0),
                  ("max_pages_per_minute", self.max_pages_per_minute >= 1))
        for name, ok in checks:
            if not ok:
                msg = f"{name} out of range: {getattr(self, name)!r}"
                raise ValueError(msg)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionParams:
        """The parameters ``settings`` name (minutes and seconds become milliseconds)."""
        return cls(session_timeout_ms=round(settings.session_timeout_minutes * MINUTE_MS),
                   order_grace_ms=round(settings.order_grace_minutes * MINUTE_MS),
                   allowed_lateness_ms=round(settings.allowed_lateness_seconds * 1000),
                   lcp_wait_ms=round(settings.lcp_wait_seconds * 1000),
                   non_commerce_groups=frozenset(settings.non_commerce_groups),
                   site_origins=frozenset(settings.site_origins),
                   checkout_groups=frozenset(settings.checkout_groups))

    @property
    def ttl_ms(self) -> int:
        """How long after its last activity a session is kept."""
        return self.session_timeout_ms + self.order_grace_ms

    def page_group_of(self, url: str, page_group: str | None = None) -> str | None:
        """``page_group`` if set, else the URL's first path segment if it is non-commerce.

        >>> SessionParams().page_group_of("https://shop.example/blog/speed?utm_campaign=x")
        'blog'
        >>> SessionParams().page_group_of("https://shop.example/cart") is None
        True
        """
        if page_group:
            return page_group
        segment = first_path_segment(url)
        return segment if segment in self.non_commerce_groups else None

    def is_commerce(self, url: str, page_group: str | None = None) -> bool:
        """Whether a page view counts in the latency-to-conversion curve."""
        group = self.page_group_of(url, page_group)
        return group is None or group.lower() not in self.non_commerce_groups

    def is_checkout(self, url: str, page_group: str | None = None) -> bool:
        """Whether a page view is a checkout page: its ``page_group`` if set, else its URL's
        first path segment (lower case), is one of ``checkout_groups``.

        >>> SessionParams().is_checkout("https://shop.example/Checkout/pay?utm_campaign=x")
        True
        >>> SessionParams().is_checkout("https://shop.example/checkout", page_group="cart")
        False
        """
        key = page_group.lower() if page_group else first_path_segment(url)
        return key in self.checkout_groups


def first_path_segment(url: str) -> str:
    """The first segment of a URL's path, lower case ("" if none)."""
    match = _FIRST_PATH_SEGMENT.match(url)
    return match.group(1).lower() if match else ""


@dataclass(slots=True)
class SessionStats:
    """Counters since start (not persisted: they feed Prometheus counters)."""

    sessions_started: int = 0
    bot_sessions: int = 0
    bot_orders: int = 0
    duplicate_beacons: int = 0
    duplicate_orders: int = 0
    expired_sessions: int = 0
    late_records: int = 0
    late_dropped: int = 0
    orphan_orders: int = 0
    retracted_sessions: int = 0


@dataclass(slots=True, init=False)
class SessionState:
    """One session. ``landing`` is empty until the first beacon; ``lcp_ms`` is set on emission.

    ``campaign_ts`` is the ``ts`` of the beacon that named the campaign; ``lcp_count`` and
    ``log_lcp_sum`` summarise the LCP (ms, natural log) of the commerce page views.
    Once emitted, ``campaign``, ``start_ms``, ``lcp_ms``, ``commerce`` and ``device`` are what
    the session fact said and ``sent`` the order facts sent since (the first one is the
    conversion): exactly what a ``retract`` must cancel. ``checkout_ms`` is the event time of
    the session's first checkout page, or, none seen, of its first order (docs/FUNNEL.md);
    once emitted, the session's ``checkout`` fact has been sent whenever it is set, and it
    no longer changes.
    """

    campaign: str | None = None
    campaign_ts: int | None = None
    start_ms: int = 0
    landing: str = ""
    lcp_ms: float | None = None
    commerce: bool = True
    device: str | None = None
    is_bot: bool = False
    pages: dict[str, list[Any]] = field(default_factory=dict)
    order_ids: list[str] = field(default_factory=list)
    pending: list[PendingOrder] = field(default_factory=list)
    sent: list[SentOrder] = field(default_factory=list)
    converted: bool = False
    revenue: float = 0.0
    last_activity_ms: int = NO_WATERMARK
    emitted: bool = False
    lcp_count: int = 0
    log_lcp_sum: float = 0.0
    relanded_ms: int | None = None  # watermark when a late landing re-landed it
    # the landing page was reached from the page's own origin (its referrer): the page where
    # the visitor really landed was not seen, so the session has no landing LCP
    landing_inner: bool = False
    checkout_ms: int | None = None

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    # ``None`` for a list or dict: a new empty one (the fields' ``default_factory``).
    def __init__(  # noqa: PLR0917 (the dataclass's positional signature)
        self, campaign: str | None = None, campaign_ts: int | None = None, start_ms: int = 0,
        landing: str = "", lcp_ms: float | None = None, commerce: bool = True,
        device: str | None = None, is_bot: bool = False, pages: dict[str, list[Any]] | None = None,
        order_ids: list[str] | None = None, pending: list[PendingOrder] | None = None,
        sent: list[SentOrder] | None = None, converted: bool = False, revenue: float = 0.0,
        last_activity_ms: int = NO_WATERMARK, emitted: bool = False, lcp_count: int = 0,
        log_lcp_sum: float = 0.0, relanded_ms: int | None = None, landing_inner: bool = False,
        checkout_ms: int | None = None,
    ) -> None:
        self.campaign = campaign
        self.campaign_ts = campaign_ts
        self.start_ms = start_ms
        self.landing = landing
        self.lcp_ms = lcp_ms
        self.commerce = commerce
        self.device = device
        self.is_bot = is_bot
        self.pages = {} if pages is None else pages
        self.order_ids = [] if order_ids is None else order_ids
        self.pending = [] if pending is None else pending
        self.sent = [] if sent is None else sent
        self.converted = converted
        self.revenue = revenue
        self.last_activity_ms = last_activity_ms
        self.emitted = emitted
        self.lcp_count = lcp_count
        self.log_lcp_sum = log_lcp_sum
        self.relanded_ms = relanded_ms
        self.landing_inner = landing_inner
        self.checkout_ms = checkout_ms

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able data: one table row per live session.

        Short keys; page views (``"p"``), held orders (``"po"``) and sent orders (``"so"``)
        are flat lists, strides of ``1 + len(page)``, 4 and 3 (less GC work per drain).
        """
        pages: list[Any] = []
        for beacon_id, page in self.pages.items():
            pages.append(beacon_id)
            pages.extend(page)
        return {"c": self.campaign, "ct": self.campaign_ts, "s": self.start_ms,
                "l": self.landing, "lcp": self.lcp_ms, "cm": self.commerce, "d": self.device,
                "bot": self.is_bot, "p": pages, "o": list(self.order_ids),
                "po": [x for order in self.pending for x in order],
                "so": [x for order in self.sent for x in order],
                "cv": self.converted, "r": self.revenue, "a": self.last_activity_ms,
                "e": self.emitted, "n": self.lcp_count, "ll": self.log_lcp_sum,
                "rl": self.relanded_ms, "li": self.landing_inner, "co": self.checkout_ms}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> SessionState:
        """Rebuild the state :meth:`to_state` wrote (a row without ``"so"``, written by a version
        without retract facts, has no sent orders on record; one without ``"li"``, written
        before referrers were read, a landing from elsewhere; one without ``"co"``, written
        before checkout facts, no checkout known)."""
        flat, held, out = data["p"], data["po"], data.get("so", [])
        pages = {flat[i]: flat[i + 1:i + PAGE_STRIDE] for i in range(0, len(flat), PAGE_STRIDE)}
        pending = [(str(held[i]), int(held[i + 1]), float(held[i + 2]), held[i + 3])
                   for i in range(0, len(held), 4)]
        sent = [(str(out[i]), int(out[i + 1]), float(out[i + 2])) for i in range(0, len(out), 3)]
        return cls(campaign=data["c"], campaign_ts=data["ct"], start_ms=data["s"],
                   landing=data["l"], lcp_ms=data["lcp"], commerce=data["cm"],
                   device=data["d"], is_bot=data["bot"], pages=pages,
                   order_ids=list(data["o"]), pending=pending, sent=sent, converted=data["cv"],
                   revenue=data["r"], last_activity_ms=data["a"], emitted=data["e"],
                   lcp_count=data["n"], log_lcp_sum=data["ll"], relanded_ms=data.get("rl"),
                   landing_inner=data.get("li", False), checkout_ms=data.get("co"))


def merge_metrics(page: list[Any], st: SessionState, row: BeaconRow) -> bool:
    """Latest value of each metric wins; False when the record brings nothing new."""
    _, _, _, _, lcp, fcp, ttfb, inp, load, cls, _, _, _, _, _, _ = row
    changed = False
    if lcp is not None and lcp != page[LCP]:
        if page[COMMERCE]:
            add_lcp(st, page[LCP], lcp)
        page[LCP], changed = lcp, True
    if fcp is not None and fcp != page[FCP]:
        page[FCP], changed = fcp, True
    if ttfb is not None and ttfb != page[TTFB]:
        page[TTFB], changed = ttfb, True
    if inp is not None and inp != page[INP]:
        page[INP], changed = inp, True
    if load is not None and load != page[LOAD]:
        page[LOAD], changed = load, True
    if cls is not None and cls != page[CLS]:
        page[CLS], changed = cls, True
    return changed


def landing_lcp(st: SessionState) -> float | None:
    """The landing page's LCP, the session's; None when that page was reached from its own
    origin (``landing_inner``): the page where the visitor landed was not seen."""
    return None if st.landing_inner else st.pages[st.landing][LCP]


def add_lcp(st: SessionState, old_ms: float | None, new_ms: float) -> None:
    """Replace ``old_ms`` (None: add) by ``new_ms`` in the commerce LCP summary."""
    if old_ms is None:
        st.lcp_count += 1
    else:
        st.log_lcp_sum -= math.log(max(old_ms, 1.0))
    st.log_lcp_sum += math.log(max(new_ms, 1.0))


def pending_by_ts(order: PendingOrder) -> tuple[int, str]:
    """Pending orders sort by time, then id."""
    return order[1], order[0]


def note_campaign(st: SessionState, name: str | None, ts: int) -> None:
    """The earliest beacon (by ``ts``) that names a campaign names the session's (the caller
    checks that ``ts`` is earlier than the beacon that named it so far)."""
    if name:
        st.campaign, st.campaign_ts = name, ts


def too_fast(st: SessionState, max_pages_per_minute: int) -> bool:
    """More than ``max_pages_per_minute`` page views within one minute."""
    times = sorted(page[TS] for page in st.pages.values())
    k = max_pages_per_minute
    return any(times[i + k] - times[i] < MINUTE_MS for i in range(len(times) - k))


def reaches_checkout(st: SessionState, ts: int) -> bool:
    """Whether a checkout at ``ts`` is the session's first: none known yet, or an earlier one
    while its ``checkout`` fact was never sent (before the session's first emission; a
    re-landed session keeps the checkout it sent)."""
    known = st.checkout_ms
    return known is None or (ts < known and not st.emitted and st.relanded_ms is None)


def session_fact(kind: FactKind, sid: str, st: SessionState, watermark_ms: int,
                 checkout_ms: int | None = None) -> SessionFact:
    """A fact with the fields of the session's ``session`` fact: a ``session``, ``checkout``
    or ``retract`` fact (the session's state once emitted)."""
    return SessionFact(kind=kind, campaign=st.campaign or NONE_CAMPAIGN,
                       watermark_ms=watermark_ms, session_id=sid, start_ms=st.start_ms,
                       lcp_ms=st.lcp_ms, commerce=st.commerce, device=st.device,
                       checkout_ms=checkout_ms)


def release_held(sid: str, st: SessionState, watermark_ms: int) -> list[SessionFact]:
    """What follows a session's ``session`` fact: its ``checkout`` fact if a checkout is known
    (none seen: its first held order reached it), then its held orders by time."""
    held = sorted(st.pending, key=pending_by_ts)
    st.pending.clear()
    if st.checkout_ms is None and held:
        st.checkout_ms = held[0][1]
    facts = [] if st.checkout_ms is None else [
        session_fact("checkout", sid, st, watermark_ms, st.checkout_ms)]
    for order_id, ts, revenue, _ in held:
        facts.append(order_fact(sid, st, (order_id, ts, revenue), watermark_ms))
    return facts


def order_fact(sid: str, st: SessionState, order: SentOrder, watermark_ms: int) -> SessionFact:
    """The fact of an order of the emitted session ``st``, noted among those sent (the first
    is the conversion); it carries the session's checkout."""
    order_id, ts, revenue = order
    first, st.converted = not st.converted, True
    st.revenue += revenue
    st.sent.append(order)
    return SessionFact(kind="order", campaign=st.campaign or NONE_CAMPAIGN,
                       watermark_ms=watermark_ms, session_id=sid, start_ms=st.start_ms,
                       lcp_ms=st.lcp_ms, commerce=st.commerce, device=st.device,
                       order_id=order_id, order_ts_ms=ts, revenue=revenue,
                       first_order=first, checkout_ms=st.checkout_ms)


def orphan_facts(sid: str, st: SessionState, watermark_ms: int) -> list[SessionFact]:
    """Held orders of a session that never showed a beacon: revenue under their own campaign
    (no checkout known: ``checkout_ms`` None)."""
    return [SessionFact(kind="order", campaign=clean_campaign(campaign) or NONE_CAMPAIGN,
                        watermark_ms=watermark_ms, session_id=sid, start_ms=ts,
                        order_id=order_id, order_ts_ms=ts, revenue=revenue,
                        first_order=i == 0, known_session=False)
            for i, (order_id, ts, revenue, campaign)
            in enumerate(sorted(st.pending, key=pending_by_ts))]
