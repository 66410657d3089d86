"""Retracts under any arrival order (hypothesis): per-campaign totals equal the in-order ones.

Each session's landing (its earliest page) names its campaign, or no page names one (the
shape of real traffic: the ad link carries ``utm_campaign``, later pages may carry another
one). Every page view is one beacon with its LCP, and every record stays within the session
timeout of the watermark and no minute matures, so nothing is too old: whatever the arrival
order, once retracts are applied every campaign counts the sessions, conversions and LCPs
it counts when the records arrive in event-time order, its curve counts by device stratum
included (each session is on one device, or none is known). Curve counts are compared by
stratum, not by LCP bin: a late landing that names no other campaign is not retracted, so
the session keeps the LCP of the page it was sent from. The checkout funnel's reachers and
their orders are compared in total per campaign, not by minute: with no checkout page, a
session reached the checkout at the time of the first of its orders to arrive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.elasticity import N_BINS
from detectors.monitor import Monitor
from detectors.strata import device_stratum
from streams.pipeline import apply_fact
from streams.records import Beacon, Order
from streams.sessions import Sessionizer

T0 = 1_700_000_000_000
MIN = 60_000
FAR = T0 + 10 * 60 * MIN
NAMES = ("spring", "summer", "autumn")
DEVICES = ("desktop", "mobile", "tablet")
Record = Beacon | Order


@st.composite
def session(draw: st.DrawFn, sid: str) -> list[Record]:
    start = T0 + draw(st.integers(0, 10 * MIN))
    campaign = draw(st.sampled_from((None, *NAMES)))
    offsets = sorted(draw(st.sets(st.integers(1, 5 * MIN), max_size=3)))
    device = draw(st.sampled_from((None, *DEVICES)))
    records: list[Record] = []
    for page, offset in enumerate([0, *offsets]):
        named = campaign if page == 0 else draw(st.sampled_from((None, *NAMES)))
        query = f"?utm_campaign={named}" if campaign and named else ""
        records.append(Beacon(f"{sid}-p{page}", sid, start + offset,
                              f"https://shop.example/p/{page}{query}", ttfb_ms=100.0,
                              lcp_ms=draw(st.floats(200.0, 8_000.0)), device=device))
    for n in range(draw(st.integers(0, 2))):
        ts = start + draw(st.integers(0, 15 * MIN))
        records.append(Order(f"{sid}-o{n}", sid, ts, draw(st.floats(1.0, 500.0))))
    return records


@st.composite
def traffic(draw: st.DrawFn) -> list[Record]:
    records = [r for i in range(draw(st.integers(1, 6))) for r in draw(session(f"s{i}"))]
    copies = draw(st.lists(st.sampled_from(records), max_size=3))
    return records + copies


Totals = dict[str, tuple[int, int, int, dict[int, int], dict[int, int], int, int]]


def totals(records: list[Record], every: int) -> Totals:
    """Sessions, conversions and LCPs per campaign, summed over the minute buckets, its
    curve counts (sessions, conversions) by device stratum, and its checkout reachers and
    their orders."""
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
    out: Totals = {}
    for name, model in monitor.models.items():
        buckets = [b for _, b in model.ring.span(0, 1 << 62)]
        row = (sum(b.sessions for b in buckets), sum(b.conversions for b in buckets),
               sum(b.lcp_n for b in buckets))
        funnel = [] if model.funnel is None else list(model.funnel.counts.values())
        if any(row) or any(r[0] for r in funnel):
            out[name] = (*row, _summed(b.commerce_sessions for b in buckets),
                         _summed(b.commerce_conversions for b in buckets),
                         sum(r[0] for r in funnel), sum(r[1] for r in funnel))
    return out


def _summed(counts: Iterable[dict[int, int]]) -> dict[int, int]:
    total: Counter[int] = Counter()
    for mapping in counts:
        for key, n in mapping.items():
            total[key // N_BINS] += n
    return {key: n for key, n in total.items() if n}


@settings(max_examples=300, deadline=None)
@given(traffic(), st.data(), st.integers(1, 7))
def test_totals_after_retracts_equal_the_in_order_totals(records: list[Record],
                                                        data: st.DataObject, every: int) -> None:
    expected = totals(sorted(records, key=lambda r: r.ts), every)
    assert totals(data.draw(st.permutations(records)), every) == expected
    humans = {r.session_id for r in records if isinstance(r, Beacon)}
    assert sum(row[0] for row in expected.values()) == len(humans)  # each session once
    converted = {r.session_id for r in records if isinstance(r, Order)}
    assert sum(row[1] for row in expected.values()) == len(converted)
    assert sum(row[5] for row in expected.values()) == len(converted)  # reached the checkout
    assert sum(row[6] for row in expected.values()) == len(converted)
    strata = {device_stratum(r.device) for r in records if isinstance(r, Beacon)}
    assert {s for row in expected.values() for s in row[3]} <= strata  # their own strata
    assert sum(sum(row[3].values()) for row in expected.values()) == len(humans)
