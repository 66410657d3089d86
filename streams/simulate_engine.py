"""The simulator's engine: draws sessions, page views, checkouts and orders, shapes records.

:class:`Run` makes one pass over a :class:`~streams.simulate_model.Scenario`, a block of
minutes at a time, and releases records in arrival (``received_at``) order. Page views
travel as collectors receive them: one metric per record (web-vitals) in
``split_metrics_fraction`` of page views, a load and an unload record (boomerang) in
``boomerang_fraction``, a single record otherwise; retries, late arrivals, bots, and
nothing at all during a data gap. A session that reaches the checkout
(:mod:`streams.simulate_funnel`) shows the checkout page, and orders (or not) after it.
:class:`~streams.simulate_truth.Truth` is filled on the way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from streams.records import NONE_CAMPAIGN
from streams.simulate_funnel import (
    BoolArray,
    checkout_times,
    draw_funnel,
    order_times,
    split_conversion,
)
from streams.simulate_model import (
    DEVICE_LCP_FACTOR,
    DEVICES,
    LCP_SD_LOG,
    MAX_P,
    MINUTE_MS,
    SECOND_ORDER_FRACTION,
    TABLET_SHARE,
    CampaignSpec,
    FloatArray,
    IncidentSpec,
    IntArray,
    Scenario,
    affected_campaigns,
    conversion_probability,
    daily_conversion,
    human_rate,
    normal_rate,
    trap_factor,
)
from streams.simulate_pages import (
    BOT_USER_AGENTS,
    CHECKOUT_GROUP,
    CHECKOUT_LCP_FACTOR,
    CHECKOUT_URL,
    FURTHER_COUNT_P,
    FURTHER_GROUPS,
    FURTHER_LCP_FACTOR,
    FURTHER_URLS,
    FURTHER_WEIGHTS,
    LANDING_REFERRERS,
    SHOP_ORIGIN,
    USER_AGENTS,
    page_metrics,
    split_metrics,
)
from streams.simulate_truth import Truth

Kind = Literal["beacon", "order"]
Record = tuple[Kind, dict[str, Any]]
BLOCK_MINUTES = 15


@dataclass(slots=True)
class _Cohort:
    """Human sessions of one campaign drawn together: when each would show its checkout
    page, and its hour's conversion factor."""

    start: IntArray
    device: IntArray
    lcp_normal: FloatArray
    checkout_ms: IntArray
    day: FloatArray


@dataclass(slots=True)
class _Pages:
    """Page views of one batch of sessions, as Python lists ready to become records."""

    session: list[int]
    number: list[int]
    ts: list[int]
    url: list[str]
    group: list[str]
    metrics: list[list[float]]  # lcp, fcp, ttfb, inp (nan: none), cls, load, dwell


class Run:
    """One pass over a scenario: draws everything, buffers records by arrival minute."""

    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.rng = np.random.default_rng(s.seed)
        self.truth = Truth(s)
        self._buckets: defaultdict[int, list[tuple[int, int, Kind, dict[str, Any]]]] = (
            defaultdict(list))
        self._seq = 0
        self._n_sessions = 0
        self._n_orders = 0
        self._gaps = [t for t in s.traps if t.kind == "data_gap"]
        self._incidents = {c.name: [i for i in s.incidents if c.name in affected_campaigns(i, s)]
                           for c in s.campaigns}

    def records(self) -> Iterator[Record]:
        """Every record, by ``received_at`` (ties by generation order).

        Sessions are drawn a block of minutes at a time (rates stay per minute). A record
        is never received before its session starts, so once a block is drawn every record
        received before the block's end is known and can be released in order.
        """
        for first in range(0, self.s.minutes, BLOCK_MINUTES):
            block = range(first, min(first + BLOCK_MINUTES, self.s.minutes))
            t0 = np.array([self.s.start_ms + m * MINUTE_MS for m in block], dtype=np.int64)
            for spec in self.s.campaigns:
                self._campaign_block(spec, t0)
            for minute in block:
                yield from self._flush(minute)
        for minute in sorted(self._buckets):
            yield from self._flush(minute)

    def _flush(self, minute: int) -> Iterator[Record]:
        bucket = self._buckets.pop(minute, [])
        bucket.sort()  # (received_at, seq, ...): seq is unique, records are never compared
        counts = self.truth.records
        for _, _, kind, record in bucket:
            counts[kind + "s"] += 1
            yield kind, record

    def _push(self, kind: Kind, campaign: str, record: dict[str, Any]) -> None:
        received = record["received_at"]
        for gap in self._gaps:
            if gap.start_ms <= received < gap.end_ms and gap.covers(campaign):
                self.truth.records["dropped_in_gaps"] += 1
                return
        self._buckets[(received - self.s.start_ms) // MINUTE_MS].append(
            (received, self._seq, kind, record))
        self._seq += 1

    def _session_ids(self, n: int) -> list[str]:
        first = self._n_sessions
        self._n_sessions += n
        return [f"s{self.s.seed:x}-{i:07x}" for i in range(first, first + n)]

    # sessions ---------------------------------------------------------------------------
    def _campaign_block(self, spec: CampaignSpec, t0: IntArray) -> None:
        """Draw a block of minutes (``t0``: each minute's start) of one campaign."""
        s = self.s
        times = t0.tolist()
        human = [human_rate(s, spec, t) for t in times]
        burst = [trap_factor(s, "bot_burst", spec.name, t) or 0.0 for t in times]
        bots = [normal_rate(s, spec, t) * (s.background_bot_fraction + b)
                for t, b in zip(times, burst, strict=True)]
        n = self.rng.poisson(human)
        n_bots = self.rng.poisson(bots)
        if n.sum():
            self._humans(spec, self._starts(t0, n))
        if n_bots.sum():
            in_burst = int(n_bots[np.array(burst) > 0].sum())
            self._bots(spec, self._starts(t0, n_bots), in_burst)

    def _starts(self, t0: IntArray, counts: IntArray) -> IntArray:
        """Session start times: ``counts[i]`` uniform in minute ``t0[i]``, sorted."""
        start = np.repeat(t0, counts) + self.rng.integers(0, MINUTE_MS, int(counts.sum()))
        return np.sort(start)

    def _humans(self, spec: CampaignSpec, start: IntArray) -> None:
        rng, s = self.rng, self.s
        n = len(start)
        u = rng.random(n)
        device = np.where(u < spec.mobile_share, 1,
                          np.where(u < spec.mobile_share + TABLET_SHARE, 2, 0)).astype(np.int64)
        lcp_normal = spec.lcp_median_ms * DEVICE_LCP_FACTOR[device] * np.exp(
            LCP_SD_LOG * rng.standard_normal(n))
        cohort = _Cohort(start, device, lcp_normal,
                         checkout_times(rng, start, s.funnel.to_checkout),
                         daily_conversion(s.conversion_daily_amplitude, start))
        p_reach, p_order = self._account_incidents(spec, cohort)
        reached, ordered = draw_funnel(rng, p_reach, p_order)
        ids = self._session_ids(n)
        self.truth.add_sessions(spec.name, n, float((p_reach * p_order).sum()),
                                int(ordered.sum()), int(reached.sum()))
        uas = [USER_AGENTS[d][k % len(USER_AGENTS[d])] for d, k in
               zip(device.tolist(), rng.integers(0, 12, n).tolist(), strict=True)]
        pages = self._human_pages(spec, start, device, lcp_normal * self._factors(spec, cohort)[0])
        self._emit_pages(spec, ids, device.tolist(), uas, pages)
        if reached.any():
            checkouts = self._checkout_pages(spec, cohort, reached, pages)
            self._emit_pages(spec, ids, device.tolist(), uas, checkouts)
        self._orders(spec, [ids[i] for i in np.flatnonzero(ordered)], cohort.checkout_ms[ordered])

    def _factors(self, spec: CampaignSpec, c: _Cohort, without: IncidentSpec | None = None
                 ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per session, the products of the incidents' (``without``'s left out) landing LCP
        and cart-side conversion factors (by session start), and of their payment-side
        conversion factors (by checkout time)."""
        n = len(c.start)
        lcp, cart, payment = np.ones(n), np.ones(n), np.ones(n)
        for inc in self._incidents[spec.name]:
            if inc is without:
                continue
            started = inc.active(c.start, c.device)
            if inc.slows(spec.landing_group):
                lcp[started] *= inc.lcp_factor
            cart[started] *= inc.cart_factor
            payment[inc.active(c.checkout_ms, c.device)] *= inc.payment_factor
        return lcp, cart, payment

    def _funnel(self, spec: CampaignSpec, c: _Cohort, without: IncidentSpec | None = None
                ) -> tuple[FloatArray, FloatArray]:
        """P(reach the checkout) and P(order | reached) per session: the conversion before
        the payment (landing LCP, device, hour, cart-side incidents) over ``q``, and ``q``
        times the payment-side incidents' factors (``without``: as if it had not happened)."""
        lcp_factor, cart, payment = self._factors(spec, c, without)
        p = np.minimum(c.day * conversion_probability(
            spec, c.lcp_normal * lcp_factor, c.device, self.s.curve_slope_per_s), MAX_P)
        return split_conversion(p * cart, self.s.order_given_checkout(spec), payment)

    def _account_incidents(self, spec: CampaignSpec, c: _Cohort
                           ) -> tuple[FloatArray, FloatArray]:
        """The funnel's probabilities; truth: the expected conversions each incident takes
        from the sessions it touches (a checkout broken outright is recomputed, not divided
        out)."""
        p_reach, p_order = self._funnel(spec, c)
        for inc in self._incidents[spec.name]:
            touched = inc.touches(c.start, c.checkout_ms, c.device)
            if touched.any():
                reach, order = self._funnel(spec, c, without=inc)
                lost = float((reach * order - p_reach * p_order)[touched].sum())
                self.truth.add_incident_loss(inc.id, spec.name, int(touched.sum()), lost)
        return p_reach, p_order

    def _bots(self, spec: CampaignSpec, start: IntArray, in_burst: int) -> None:
        """Crawler and headless sessions: fast, many pages, never an order."""
        rng = self.rng
        n = len(start)
        ids = self._session_ids(n)
        uas = [BOT_USER_AGENTS[k] for k in rng.integers(0, len(BOT_USER_AGENTS), n).tolist()]
        counts = rng.integers(1, 9, n)
        gaps = rng.uniform(300.0, 3000.0, int(counts.sum()))
        lcp = 350.0 * np.exp(0.3 * rng.standard_normal(int(counts.sum())))
        pages = self._layout(spec, start, counts, gaps, lcp, content=False)
        self.truth.add_bots(spec.name, n, in_burst)
        self._emit_pages(spec, ids, [0] * n, uas, pages)

    # page views --------------------------------------------------------------------------
    def _human_pages(self, spec: CampaignSpec, start: IntArray, device: IntArray,
                     landing_lcp: FloatArray) -> _Pages:
        rng = self.rng
        counts = rng.choice(len(FURTHER_COUNT_P), size=len(start), p=FURTHER_COUNT_P) + 2
        total = int(counts.sum())
        gaps = np.clip(np.exp(np.log(40_000.0) + rng.standard_normal(total)), 3_000.0, 600_000.0)
        dev = np.repeat(device, counts)
        lcp = spec.lcp_median_ms * DEVICE_LCP_FACTOR[dev] * np.exp(
            LCP_SD_LOG * rng.standard_normal(total))
        first = np.cumsum(counts) - counts
        lcp[first] = landing_lcp
        return self._layout(spec, start, counts, gaps, lcp, content=not spec.commerce,
                            device=dev)

    def _layout(self, spec: CampaignSpec, start: IntArray, counts: IntArray, gaps: FloatArray,
                lcp: FloatArray, *, content: bool, device: IntArray | None = None) -> _Pages:
        """Place page views in time, pick their URLs, slow them by incidents, add metrics."""
        rng = self.rng
        total = int(counts.sum())
        first = np.cumsum(counts) - counts
        session = np.repeat(np.arange(len(counts)), counts)
        gaps[first] = 0.0
        cum = np.cumsum(gaps)
        ts = start[session] + (cum - cum[first][session]).astype(np.int64)
        weights = FURTHER_WEIGHTS[int(content)]
        page = rng.choice(len(FURTHER_URLS), size=total, p=weights / weights.sum())
        page[first] = -1
        lcp = lcp * np.where(page >= 0, FURTHER_LCP_FACTOR[page], 1.0)
        groups = [FURTHER_GROUPS[k] if k >= 0 else spec.landing_group for k in page.tolist()]
        self._slow_pages(spec.name, ts, groups, lcp, further=page >= 0,
                         device=np.zeros(total, dtype=np.int64) if device is None else device)
        dwell = np.append(gaps[1:], 0.0)
        last = np.append(first[1:], total) - 1
        dwell[last] = np.exp(np.log(30_000.0) + rng.standard_normal(len(counts)))
        metrics = page_metrics(rng, lcp, dwell, device)
        urls = [FURTHER_URLS[k] if k >= 0 else spec.landing_url for k in page.tolist()]
        number = (np.arange(total) - first[session]).tolist()
        return _Pages(session.tolist(), number, ts.tolist(), urls, groups, metrics)

    def _slow_pages(self, campaign: str, ts: IntArray, groups: list[str], lcp: FloatArray, *,
                    further: Any, device: IntArray) -> None:
        """Apply incidents' LCP factors to the pages after the landing, in place (bots'
        pages count as desktop ones)."""
        for inc in self._incidents[campaign]:
            if inc.lcp_factor == 1.0:
                continue
            slowed = np.array([inc.slows(g) for g in groups], dtype=bool)
            lcp[inc.active(ts, device) & slowed & further] *= inc.lcp_factor

    def _checkout_pages(self, spec: CampaignSpec, c: _Cohort, reached: BoolArray,
                        pages: _Pages) -> _Pages:
        """The checkout page view of each session that reached it, numbered after its
        other ``pages``."""
        rng = self.rng
        who = np.flatnonzero(reached)
        device, ts = c.device[who], c.checkout_ms[who]
        lcp = spec.lcp_median_ms * CHECKOUT_LCP_FACTOR * DEVICE_LCP_FACTOR[device] * np.exp(
            LCP_SD_LOG * rng.standard_normal(len(who)))
        groups = [CHECKOUT_GROUP] * len(who)
        self._slow_pages(spec.name, ts, groups, lcp, further=True, device=device)
        dwell = np.exp(np.log(30_000.0) + rng.standard_normal(len(who)))
        number = np.bincount(pages.session, minlength=len(reached))[who]
        return _Pages(who.tolist(), number.tolist(), ts.tolist(), [CHECKOUT_URL] * len(who),
                      groups, page_metrics(rng, lcp, dwell, device))

    # records ------------------------------------------------------------------------------
    def _emit_pages(self, spec: CampaignSpec, ids: list[str], device: list[int],
                    uas: list[str], pages: _Pages) -> None:
        """Each page view's records; a landing's referrer names where its visitor came from
        (:data:`LANDING_REFERRERS`, none if unknown), a later page's the shop itself."""
        campaign, rng = spec.name, self.rng
        referrers = (LANDING_REFERRERS.get(spec.utm_source), SHOP_ORIGIN)
        n = len(pages.ts)
        style = np.searchsorted(np.cumsum([self.s.split_metrics_fraction,
                                           self.s.boomerang_fraction]), rng.random(n),
                                side="right").tolist()  # 0 web-vitals, 1 boomerang, 2 single
        late = np.where(rng.random(n) < self.s.late_fraction,
                        rng.uniform(2 * MINUTE_MS, 20 * MINUTE_MS, n), 0.0)
        delay = (late[:, None] + np.exp(np.log(400.0) + 0.8 * rng.standard_normal((n, 5))))
        dup = (rng.random((n, 5)) < self.s.duplicate_fraction).tolist()
        delays = delay.astype(np.int64).tolist()
        self.truth.records["page_views"] += n
        self.truth.records["late_page_views"] += int(np.count_nonzero(late))
        for i in range(n):
            sid = ids[pages.session[i]]
            base = {"beacon_id": f"{sid}-p{pages.number[i]}", "session_id": sid,
                    "ts": pages.ts[i], "page_url": pages.url[i], "page_group": pages.group[i],
                    "device": DEVICES[device[pages.session[i]]],
                    "user_agent": uas[pages.session[i]]}
            referrer = referrers[pages.number[i] > 0]
            if referrer is not None:
                base["referrer"] = referrer
            for k, (offset, metrics) in enumerate(split_metrics(style[i], pages.metrics[i])):
                record = {**base, "received_at": pages.ts[i] + int(offset) + delays[i][k],
                          **metrics}
                self._push("beacon", campaign, record)
                if dup[i][k]:
                    self._duplicate("beacon", campaign, record)

    def _duplicate(self, kind: Kind, campaign: str, record: dict[str, Any]) -> None:
        """A retry: the same record again, received 1 s to 2 min later."""
        retry = int(self.rng.integers(1_000, 120_000))
        self.truth.records[f"duplicate_{kind}s"] += 1
        self._push(kind, campaign, {**record, "received_at": record["received_at"] + retry})

    def _orders(self, spec: CampaignSpec, ids: list[str], checkout_ms: IntArray) -> None:
        """Orders of the sessions that order: after their checkout page, a few a second."""
        rng = self.rng
        n = len(ids)
        if not n:
            return
        ts = order_times(rng, checkout_ms, self.s.funnel.to_order)
        second = rng.random(n) < SECOND_ORDER_FRACTION
        later = ts[second] + np.exp(np.log(10.0 * MINUTE_MS) + rng.standard_normal(
            int(second.sum()))).astype(np.int64)
        sessions = ids + [ids[i] for i in np.flatnonzero(second)]
        all_ts = np.concatenate([ts, later])
        revenue = rng.gamma(2.5, spec.aov / 2.5, len(sessions))
        tagged = rng.random(len(sessions)) < 0.5
        delay = np.exp(np.log(500.0) + rng.standard_normal(len(sessions))).astype(np.int64)
        dup = rng.random(len(sessions)) < self.s.duplicate_fraction
        for i, sid in enumerate(sessions):
            order = self._order(spec, sid, int(all_ts[i]), float(revenue[i]), bool(tagged[i]))
            order["received_at"] = order["ts"] + int(delay[i])
            self._push("order", spec.name, order)
            if dup[i]:
                self._duplicate("order", spec.name, order)

    def _order(self, spec: CampaignSpec, session_id: str, ts: int, revenue: float,
               tagged: bool) -> dict[str, Any]:
        self._n_orders += 1
        order: dict[str, Any] = {"order_id": f"o{self.s.seed:x}-{self._n_orders:07x}",
                                 "session_id": session_id, "ts": ts,
                                 "revenue": round(revenue, 2), "currency": self.s.currency}
        if tagged and spec.name != NONE_CAMPAIGN:
            order["campaign"] = spec.name
        self.truth.add_order(spec.name, order["revenue"])
        return order

