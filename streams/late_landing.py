"""Late landings: what an emitted session cancels, and how it lands again (pure).

RUM beacons arrive minutes late, so a session fact may go out from page 2 before the
landing page, the one whose URL names the campaign, arrives. When a page earlier than the
emitted landing (and than the page that named its campaign) arrives and names another
campaign, :class:`~streams.sessions.Sessionizer` sends :func:`retractions` under the old
campaign, :func:`reland` resets the session on its earliest page, and the session fact,
its checkout fact (same ``checkout_ms``) and its orders go out again under the new campaign
(ARCHITECTURE.md, "Sessions").
"""

from __future__ import annotations

from dataclasses import replace

from streams.records import SessionFact
from streams.session_state import COMMERCE, TS, SessionState, session_fact


def retractions(sid: str, st: SessionState, watermark_ms: int) -> list[SessionFact]:
    """One ``retract`` per fact sent for the session: its orders (latest first), its checkout
    fact, then the session fact, each with the fields of the fact it cancels.

    An emitted session with a checkout known has sent its checkout fact, before any order
    fact, and the checkout no longer changes: so every order fact carried it too.
    """
    base = session_fact("retract", sid, st, watermark_ms)
    checkout = st.checkout_ms
    orders = [replace(base, order_id=order_id, order_ts_ms=ts, revenue=revenue,
                      first_order=i == 0, checkout_ms=checkout)
              for i, (order_id, ts, revenue) in enumerate(st.sent)]
    checkouts = [] if checkout is None else [replace(base, checkout_ms=checkout)]
    return [*reversed(orders), *checkouts, base]


def reland(st: SessionState, campaign: str, named_ts: int, watermark_ms: int) -> None:
    """Make ``st`` an unsent session of ``campaign`` (named by the page at ``named_ts``),
    landing on its earliest page, with the orders it had sent held to follow it again (and
    its checkout, unchanged, to go before them); its wait for the landing's LCP runs from
    ``watermark_ms``."""
    st.pending.extend((order_id, ts, revenue, None) for order_id, ts, revenue in st.sent)
    st.sent.clear()
    st.emitted, st.converted, st.revenue, st.lcp_ms = False, False, 0.0, None
    st.campaign, st.campaign_ts, st.relanded_ms = campaign, named_ts, watermark_ms
    st.start_ms, st.landing = min((page[TS], bid) for bid, page in st.pages.items())
    st.commerce = st.pages[st.landing][COMMERCE]
