"""Late landings: what an emitted session cancels, and how it lands again (pure).

RUM beacons arrive minutes late, so a session fact may go out from page 2 before the
landing page, the one whose URL names the campaign, arrives. When a page earlier than the
emitted landing (and than the page that named its campaign) arrives and names another
campaign, :class:`~streams.sessions.Sessionizer` sends :func:`retractions` under the old
campaign, :func:`reland` resets the session on its earliest page, and the session fact
and its orders go out again under the new campaign (ARCHITECTURE.md, "Sessions").
"""

from __future__ import annotations

from dataclasses import replace

from streams.records import NONE_CAMPAIGN, SessionFact
from streams.session_state import COMMERCE, TS, SessionState


def retractions(sid: str, st: SessionState, watermark_ms: int) -> list[SessionFact]:
    """One ``retract`` per fact sent for the session: its orders (latest first), then the
    session fact, each with the fields of the fact it cancels."""
    base = SessionFact(kind="retract", campaign=st.campaign or NONE_CAMPAIGN,
                       watermark_ms=watermark_ms, session_id=sid, start_ms=st.start_ms,
                       lcp_ms=st.lcp_ms, commerce=st.commerce, device=st.device)
    orders = [replace(base, order_id=order_id, order_ts_ms=ts, revenue=revenue,
                      first_order=i == 0)
              for i, (order_id, ts, revenue) in enumerate(st.sent)]
    return [*reversed(orders), base]


def reland(st: SessionState, campaign: str, named_ts: int, watermark_ms: int) -> None:
    """Make ``st`` an unsent session of ``campaign`` (named by the page at ``named_ts``),
    landing on its earliest page, with the orders it had sent held to follow it again; its
    wait for the landing's LCP runs from ``watermark_ms``."""
    st.pending.extend((order_id, ts, revenue, None) for order_id, ts, revenue in st.sent)
    st.sent.clear()
    st.emitted, st.converted, st.revenue, st.lcp_ms = False, False, 0.0, None
    st.campaign, st.campaign_ts, st.relanded_ms = campaign, named_ts, watermark_ms
    st.start_ms, st.landing = min((page[TS], bid) for bid, page in st.pages.items())
    st.commerce = st.pages[st.landing][COMMERCE]
