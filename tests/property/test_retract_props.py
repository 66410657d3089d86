"""Retracts under any arrival order (hypothesis): per-campaign totals equal the in-order ones.

Each session's landing (its earliest page) names its campaign, or no page names one (the
shape of real traffic: the ad link carries ``utm_campaign``, later pages may carry another
one). Every page view is one beacon with its LCP, and every record stays within the session
timeout of the watermark and no minute matures, so nothing is too old: whatever the arrival
order, once retracts are applied every campaign counts the sessions, conversions and LCPs
it counts when the records arrive in event-time order.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.monitor import Monitor
from streams.pipeline import apply_fact
from streams.records import Beacon, Order
from streams.sessions import Sessionizer

T0 = 1_700_000_000_000
MIN = 60_000
FAR = T0 + 10 * 60 * MIN
NAMES = ("spring", "summer", "autumn")
Record = Beacon | Order


@st.composite
def session(draw: st.DrawFn, sid: str) -> list[Record]:
    start = T0 + draw(st.integers(0, 10 * MIN))
    campaign = draw(st.sampled_from((None, *NAMES)))
    offsets = sorted(draw(st.sets(st.integers(1, 5 * MIN), max_size=3)))
    records: list[Record] = []
    for page, offset in enumerate([0, *offsets]):
        named = campaign if page == 0 else draw(st.sampled_from((None, *NAMES)))
        query = f"?utm_campaign={named}" if campaign and named else ""
        records.append(Beacon(f"{sid}-p{page}", sid, start + offset,
                              f"https://shop.example/p/{page}{query}", ttfb_ms=100.0,
                              lcp_ms=draw(st.floats(200.0, 8_000.0))))
    for n in range(draw(st.integers(0, 2))):
        ts = start + draw(st.integers(0, 15 * MIN))
        records.append(Order(f"{sid}-o{n}", sid, ts, draw(st.floats(1.0, 500.0))))
    return records


@st.composite
def traffic(draw: st.DrawFn) -> list[Record]:
    records = [r for i in range(draw(st.integers(1, 6))) for r in draw(session(f"s{i}"))]
    copies = draw(st.lists(st.sampled_from(records), max_size=3))
    return records + copies


def totals(records: list[Record], every: int) -> dict[str, tuple[int, int, int]]:
    """Sessions, conversions and LCPs per campaign, summed over the minute buckets."""
    sz, monitor = Sessionizer(), Monitor()
    facts = []
    for i, record in enumerate(records, start=1):
        facts += (sz.observe_beacon(record) if isinstance(record, Beacon)
                  else sz.observe_order(record))
        if i % every == 0:
            facts += sz.advance()
    facts += sz.advance(to_ms=FAR)
    for fact in facts:
        apply_fact(monitor, fact)  # no tick: no minute matures
    out: dict[str, tuple[int, int, int]] = {}
    for name, model in monitor.models.items():
        buckets = [b for _, b in model.ring.span(0, 1 << 62)]
        row = (sum(b.sessions for b in buckets), sum(b.conversions for b in buckets),
               sum(b.lcp_n for b in buckets))
        if any(row):
            out[name] = row
    return out


@settings(max_examples=300, deadline=None)
@given(traffic(), st.data(), st.integers(1, 7))
def test_totals_after_retracts_equal_the_in_order_totals(records: list[Record],
                                                        data: st.DataObject, every: int) -> None:
    expected = totals(sorted(records, key=lambda r: r.ts), every)
    assert totals(data.draw(st.permutations(records)), every) == expected
    humans = {r.session_id for r in records if isinstance(r, Beacon)}
    assert sum(s for s, _, _ in expected.values()) == len(humans)  # each session counted once
    converted = {r.session_id for r in records if isinstance(r, Order)}
    assert sum(c for _, c, _ in expected.values()) == len(converted)
