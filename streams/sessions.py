"""The sessionizer: beacons and orders in, session facts out (pure; time comes from records).

One :class:`Sessionizer` owns the sessions of the partitions it is given. Per session it
keeps a :class:`SessionState` and emits (ARCHITECTURE.md, "Sessions"):

* one ``session`` fact per human session, when the landing page view (earliest ``ts``) has
  its LCP, or ``lcp_wait_ms`` after the landing with ``lcp_ms=None``; a landing whose
  referrer is the page's own origin was reached from within the site, so the real landing
  was not seen (late or lost): its fact goes out as any other, with ``lcp_ms=None``;
* one ``checkout`` fact per session that reached the checkout (docs/FUNNEL.md), right
  after the session fact or when its first checkout page (or, none seen, order) comes;
* one ``order`` fact per distinct order; ``first_order`` marks the conversion. Orders seen
  before the session fact wait and follow it; orders whose session never shows a beacon are
  emitted on expiry with ``known_session=False`` under the order's own campaign;
* ``retract`` facts when a late landing moves an emitted session to another campaign
  (:mod:`streams.late_landing`): each cancels a fact sent under the old campaign, and the
  session and its orders are sent again under the new one;
* one ``heartbeat`` each time the watermark enters a new minute.

The watermark is the largest ``received_at`` (else ``ts``) seen, less the allowed lateness;
it never goes back. A session is deleted once the watermark passes its last activity by
``session_timeout_ms + order_grace_ms``; a later beacon with the same id starts a new
session. A record older than ``watermark - session_timeout_ms`` is counted late; it still
updates a live session but never creates one (it would recount an expired session).

Bots (known user agents, LCP below TTFB, more than ``max_pages_per_minute`` page views in
a minute) emit nothing from the moment they are flagged. Live state stays in memory; the
Faust agent writes :meth:`Sessionizer.drain_changes` to its table after each batch and
reloads it with :meth:`Sessionizer.restore`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from streams.bots import is_bot_user_agent
from streams.late_landing import reland, retractions
from streams.records import Beacon, BeaconRow, Order, SessionFact, row_of_beacon
from streams.session_state import (
    LCP,
    MINUTE_MS,
    NO_WATERMARK,
    TTFB,
    SessionParams,
    SessionState,
    SessionStats,
    add_lcp,
    first_path_segment,
    landing_lcp,
    merge_metrics,
    note_campaign,
    order_fact,
    orphan_facts,
    reaches_checkout,
    release_held,
    session_fact,
    too_fast,
)
from streams.urls import campaign_named, same_origin

if TYPE_CHECKING:
    from streams.settings import Settings

__all__ = ["NO_WATERMARK", "SessionParams", "SessionState", "SessionStats", "Sessionizer"]


class Sessionizer:
    """Sessions of beacons and orders -> :class:`~streams.records.SessionFact` records.

    Call :meth:`observe_beacon` / :meth:`observe_order` per record and :meth:`advance`
    after each batch; each returns the facts to send, in order.
    """

    def __init__(self, params: SessionParams | None = None, *,
                 external_watermark: bool = False) -> None:
        self.params = params or SessionParams()
        self.external_watermark = external_watermark  # True: only advance(to_ms) moves it
        self.stats = SessionStats()
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()  # by last activity
        self._due: list[tuple[int, str]] = []  # (landing + lcp_wait, session id), lazy
        self._wm = NO_WATERMARK
        self._heartbeat_minute: int | None = None
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self._lateness_ms = self.params.allowed_lateness_ms  # read per record
        self._timeout_ms = self.params.session_timeout_ms

    @classmethod
    def from_settings(cls, settings: Settings, *, external_watermark: bool = False
                      ) -> Sessionizer:
        return cls(SessionParams.from_settings(settings), external_watermark=external_watermark)

    @property
    def watermark_ms(self) -> int:
        """Event time: largest ``received_at`` (else ``ts``) less the lateness."""
        return self._wm

    def __len__(self) -> int:
        return len(self._sessions)

    def session(self, session_id: str) -> SessionState | None:
        """The live state of a session (for inspection; do not mutate)."""
        return self._sessions.get(session_id)

    def observe_beacon(self, b: Beacon) -> list[SessionFact]:
        """Merge one beacon record; returns the session fact if it became due."""
        return self.observe_row(row_of_beacon(b))

    def observe_row(self, row: BeaconRow) -> list[SessionFact]:
        """:meth:`observe_beacon` for a beacon's fields (:func:`~streams.records.beacon_row`).

        The per-record path of the replay and the agents: one tuple unpacked into locals.
        """
        bid, sid, ts, url, _, _, _, _, _, _, received, campaign, _, _, agent, ref = row
        st = self._arrive(sid, ts, received)
        if st is None or st.is_bot:
            return []
        if agent is not None and is_bot_user_agent(agent):
            self._flag_bot(st)
            return []
        page = st.pages.get(bid)
        checkout = False  # a new checkout page (a page's later records add metrics only)
        if page is None:
            page, checkout = self._add_page(row, st)
        elif not merge_metrics(page, st, row):
            self.stats.duplicate_beacons += 1
            return []
        lcp, ttfb = page[LCP], page[TTFB]
        if lcp is not None and ttfb is not None and lcp < ttfb:
            self._flag_bot(st)
        if st.is_bot:
            return []
        return self._after_page(sid, st, campaign, url, ts, ref=ref, checkout=checkout)

    def _after_page(self, sid: str, st: SessionState, campaign: str | None, url: str, ts: int,
                    *, ref: str | None, checkout: bool) -> list[SessionFact]:
        """The session fact if the page made it due, a late landing's re-sent facts, or the
        session's checkout fact if the page is its first checkout page."""
        if st.emitted:  # only a late landing naming another campaign changes what was sent
            facts = self._late_landing(sid, st, campaign, url, ts, ref=ref) \
                if ts < st.start_ms else []
            return (facts + self._reach_checkout(sid, st, ts)) if checkout else facts
        if checkout:
            self._reach_checkout(sid, st, ts)  # noted: it follows the session fact
        if st.campaign_ts is None or ts < st.campaign_ts:
            note_campaign(st, campaign_named(campaign, url), ts)
        if st.pages[st.landing][LCP] is not None:
            return self._emit_session(sid, st)
        return []

    def _arrive(self, sid: str, ts: int, received: int | None) -> SessionState | None:
        """:meth:`_see` and :meth:`_touch` for a beacon, the common case inline."""
        wm = self._wm
        if not self.external_watermark:
            seen = (ts if received is None else received) - self._lateness_ms
            if seen > wm:
                if wm == NO_WATERMARK:
                    self._stamp_first(seen)
                self._wm = wm = seen
        st = self._sessions.get(sid)
        if st is None or ts < wm - self._timeout_ms:  # new or late: the full _touch
            return self._touch(sid, ts)
        if st.last_activity_ms != wm:
            st.last_activity_ms = wm
            self._sessions.move_to_end(sid)
        self._changed.add(sid)
        return st

    def observe_order(self, o: Order) -> list[SessionFact]:
        """Record one order; returns its fact if its session fact is already out."""
        if not self.external_watermark:
            self._see(o.ts if o.received_at is None else o.received_at)
        st = self._touch(o.session_id, o.ts)
        if st is None:
            return []
        if st.is_bot:
            self.stats.bot_orders += 1
            return []
        if o.order_id in st.order_ids:
            self.stats.duplicate_orders += 1
            return []
        st.order_ids.append(o.order_id)
        if st.emitted:  # no checkout seen yet: the order reached it (docs/FUNNEL.md)
            return [*self._reach_checkout(o.session_id, st, o.ts),
                    order_fact(o.session_id, st, (o.order_id, o.ts, o.revenue), self._wm)]
        st.pending.append((o.order_id, o.ts, o.revenue, o.campaign))
        return []

    def advance(self, to_ms: int | None = None) -> list[SessionFact]:
        """Emit what is due at the watermark: LCP waits, expiries, then a heartbeat.

        Args:
            to_ms: raise the watermark to at least this first (end of a replay, tests).
        """
        if to_ms is not None:
            self._see(to_ms + self.params.allowed_lateness_ms)
        facts = self._emit_due()
        facts.extend(self._expire())
        minute = self._wm // MINUTE_MS
        if self._wm != NO_WATERMARK and (self._heartbeat_minute is None
                                         or minute > self._heartbeat_minute):
            self._heartbeat_minute = minute
            facts.append(SessionFact(kind="heartbeat", campaign="", watermark_ms=self._wm))
        return facts

    # -- persistence -------------------------------------------------------------------

    def drain_changes(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """States of the sessions changed since the last drain, and the ids deleted since."""
        sessions = self._sessions
        changed = {sid: sessions[sid].to_state() for sid in self._changed if sid in sessions}
        deleted = sorted(self._deleted)
        self._changed.clear()
        self._deleted.clear()
        return changed, deleted

    def snapshot_watermark(self) -> int:
        """The watermark to store with the table (pass it back to :meth:`restore`)."""
        return self._wm

    def restore(self, items: Iterable[tuple[str, dict[str, Any]]], watermark_ms: int) -> None:
        """Load table rows written by :meth:`drain_changes` (any order; adds to live ones).

        After ``advance()``, drain and restore give a sessionizer with identical outputs.
        """
        loaded = [(sid, SessionState.from_state(data)) for sid, data in items]
        merged = [*self._sessions.items(), *loaded]
        merged.sort(key=lambda item: item[1].last_activity_ms)
        self._sessions = OrderedDict(merged)
        for sid, st in loaded:
            if st.landing and not st.emitted and not st.is_bot:
                heapq.heappush(self._due, (self._due_ms(st), sid))
        if watermark_ms > self._wm:
            self._wm = watermark_ms
            self._heartbeat_minute = watermark_ms // MINUTE_MS

    def forget(self, session_ids: Iterable[str]) -> None:
        """Drop sessions without emitting or recording a deletion (partitions revoked)."""
        for sid in session_ids:
            self._sessions.pop(sid, None)
            self._changed.discard(sid)

    # -- internals ---------------------------------------------------------------------

    def _see(self, arrival_ms: int) -> None:
        watermark = arrival_ms - self.params.allowed_lateness_ms
        if watermark > self._wm:
            if self._wm == NO_WATERMARK:
                self._stamp_first(watermark)
            self._wm = watermark

    def _stamp_first(self, watermark: int) -> None:
        """Sessions seen before the first watermark get it as their last activity, so the
        first ``advance`` does not expire them as if they were ancient."""
        for sid, st in self._sessions.items():
            if st.last_activity_ms == NO_WATERMARK:
                st.last_activity_ms = watermark
                self._changed.add(sid)

    def _touch(self, sid: str, ts: int) -> SessionState | None:
        """The live session ``sid`` (created if new), moved to the back; None: dropped."""
        wm = self._wm
        st = self._sessions.get(sid)
        late = ts < wm - self.params.session_timeout_ms
        if late:
            self.stats.late_records += 1
        if st is None:
            if late:
                self.stats.late_dropped += 1
                return None
            st = self._sessions[sid] = SessionState(last_activity_ms=wm)
            self._deleted.discard(sid)
        elif st.last_activity_ms != wm:  # else already among the newest: order holds
            st.last_activity_ms = wm
            self._sessions.move_to_end(sid)
        self._changed.add(sid)
        return st

    def _add_page(self, row: BeaconRow, st: SessionState) -> tuple[list[Any], bool]:
        """The new page view, and whether it is a checkout page."""
        bid, sid, ts, url, lcp, fcp, ttfb, inp, load, cls, _, _, group, device, _, ref = row
        # what ``is_commerce`` and ``is_checkout`` give, with one look at the URL at most
        key = group.lower() if group else first_path_segment(url)
        commerce = key not in self.params.non_commerce_groups
        page = [ts, lcp, fcp, ttfb, inp, load, cls, commerce]
        pages = st.pages
        pages[bid] = page
        if len(pages) == 1:
            self.stats.sessions_started += 1
        if st.device is None:
            st.device = device
        if not st.emitted and (not st.landing or (ts, bid) < (st.start_ms, st.landing)):
            st.start_ms, st.landing, st.commerce = ts, bid, commerce
            st.landing_inner = ref is not None and same_origin(ref, url, self.params.site_origins)
            heapq.heappush(self._due, (ts + self.params.lcp_wait_ms, sid))
        if commerce and lcp is not None:
            add_lcp(st, None, lcp)
        k = self.params.max_pages_per_minute
        if len(pages) > k and too_fast(st, k):
            self._flag_bot(st)
        return page, key in self.params.checkout_groups

    def _flag_bot(self, st: SessionState) -> None:
        if not st.is_bot:
            st.is_bot = True
            self.stats.bot_sessions += 1
            self.stats.bot_orders += len(st.pending)
            st.pages.clear()
            st.pending.clear()

    def _emit_session(self, sid: str, st: SessionState) -> list[SessionFact]:
        """The session fact, its checkout fact if known, then its held orders."""
        st.emitted = True
        st.lcp_ms = landing_lcp(st)
        facts = [session_fact("session", sid, st, self._wm), *release_held(sid, st, self._wm)]
        self._changed.add(sid)
        return facts

    def _reach_checkout(self, sid: str, st: SessionState, ts: int) -> list[SessionFact]:
        """A checkout page (or order) at ``ts``: noted if it is the session's first (the
        earliest until its checkout is sent); its ``checkout`` fact if the session is out."""
        if not reaches_checkout(st, ts):
            return []
        st.checkout_ms = ts
        return [session_fact("checkout", sid, st, self._wm, ts)] if st.emitted else []

    def _late_landing(self, sid: str, st: SessionState, campaign: str | None, url: str,
                      ts: int, *, ref: str | None) -> list[SessionFact]:
        """A page earlier than the emitted landing names another campaign: retract what was
        sent, re-land the session on its earliest page and send it again (now if that page
        has its LCP, else ``lcp_wait_ms`` after it arrived), its orders following."""
        name = campaign_named(campaign, url)
        if not name or (st.campaign_ts is not None and ts >= st.campaign_ts):
            return []  # names nothing, or an earlier page already named the campaign
        if name == st.campaign:
            st.campaign_ts = ts  # the same campaign, named earlier: only noted
            return []
        if st.converted and not st.sent:
            return []  # a converted row from before retracts: its orders are unknown
        facts = retractions(sid, st, self._wm)
        reland(st, name, ts, self._wm)
        # the earliest page is this one, unless an earlier one that named nothing came first
        st.landing_inner = (st.start_ms == ts and ref is not None
                            and same_origin(ref, url, self.params.site_origins))
        self.stats.retracted_sessions += 1
        if st.pages[st.landing][LCP] is not None:
            return facts + self._emit_session(sid, st)
        heapq.heappush(self._due, (self._due_ms(st), sid))
        return facts

    def _due_ms(self, st: SessionState) -> int:
        """When an unsent session stops waiting for its landing's LCP: ``lcp_wait_ms`` after
        the landing, or after a late landing arrived."""
        since = st.start_ms if st.relanded_ms is None else max(st.start_ms, st.relanded_ms)
        return since + self.params.lcp_wait_ms

    def _emit_due(self) -> list[SessionFact]:
        """Session facts whose landing has waited ``lcp_wait_ms`` for its LCP."""
        facts: list[SessionFact] = []
        due = self._due
        while due and due[0][0] <= self._wm:
            sid = heapq.heappop(due)[1]
            st = self._sessions.get(sid)
            if (st is not None and st.landing and not st.emitted and not st.is_bot
                    and self._due_ms(st) <= self._wm):
                facts.extend(self._emit_session(sid, st))
        return facts

    def _expire(self) -> list[SessionFact]:
        """Delete sessions idle for ``ttl_ms``; flush what they still hold (by session id)."""
        limit = self._wm - self.params.ttl_ms
        sessions, expired = self._sessions, []
        while sessions:
            sid = next(iter(sessions))
            if sessions[sid].last_activity_ms >= limit:
                break
            expired.append((sid, sessions.popitem(last=False)[1]))
            self._changed.discard(sid)
            self._deleted.add(sid)
        self.stats.expired_sessions += len(expired)
        facts: list[SessionFact] = []
        for sid, st in sorted(expired, key=lambda item: item[0]):
            facts.extend(self._flush(sid, st))
        return facts

    def _flush(self, sid: str, st: SessionState) -> list[SessionFact]:
        if st.is_bot:
            return []
        if st.landing and not st.emitted:
            return self._emit_session(sid, st)
        facts = orphan_facts(sid, st, self._wm)  # orders whose session showed no beacon
        self.stats.orphan_orders += len(facts)
        return facts
