"""The simulator's engine: draws sessions, page views and orders, shapes them into records.

:class:`Run` makes one pass over a :class:`~streams.simulate_model.Scenario`, a block of
minutes at a time, and releases records in arrival (``received_at``) order. Page views
travel as collectors receive them: one metric per record (web-vitals) in
``split_metrics_fraction`` of page views, a load and an unload record (boomerang) in
``boomerang_fraction``, a single record otherwise; retries, late arrivals, bots, and
nothing at all during a data gap. :class:`~streams.simulate_truth.Truth` is filled on the way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from streams.records import MAX_TIMING_MS, NONE_CAMPAIGN
from streams.simulate_model import (
    BOT_USER_AGENTS,
    DAY_MS,
    DEVICE_LCP_FACTOR,
    DEVICES,
    FURTHER_COUNT_P,
    FURTHER_GROUPS,
    FURTHER_LCP_FACTOR,
    FURTHER_URLS,
    FURTHER_WEIGHTS,
    HOUR_MS,
    LANDING_REFERRERS,
    LCP_SD_LOG,
    MAX_P,
    MINUTE_MS,
    SECOND_ORDER_FRACTION,
    SHOP_ORIGIN,
    TABLET_SHARE,
    USER_AGENTS,
    CampaignSpec,
    FloatArray,
    IncidentSpec,
    IntArray,
    Scenario,
    affected_campaigns,
    conversion_probability,
    human_rate,
    normal_rate,
    trap_factor,
)
from streams.simulate_truth import Truth


def daily_conversion(amplitude: float, start: IntArray) -> FloatArray:
    """Conversion's hour-of-day factor, ``1 + amplitude cos(2 pi (hour - 20) / 24)`` (UTC;
    best at 20:00): ``Scenario.conversion_daily_amplitude``, 0 by default (flat)."""
    hours = (start % DAY_MS) / HOUR_MS
    factor: FloatArray = 1.0 + amplitude * np.cos(2.0 * np.pi * (hours - 20.0) / 24.0)
    return factor


Kind = Literal["beacon", "order"]
Record = tuple[Kind, dict[str, Any]]
BLOCK_MINUTES = 15


@dataclass(slots=True)
class _Cohort:
    """Human sessions of one campaign drawn together, with incident factors per session."""

    start: IntArray
    device: IntArray
    lcp_normal: FloatArray
    lcp_factor: FloatArray
    conv_factor: FloatArray


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
        rng = self.rng
        n = len(start)
        u = rng.random(n)
        device = np.where(u < spec.mobile_share, 1,
                          np.where(u < spec.mobile_share + TABLET_SHARE, 2, 0)).astype(np.int64)
        lcp_normal = spec.lcp_median_ms * DEVICE_LCP_FACTOR[device] * np.exp(
            LCP_SD_LOG * rng.standard_normal(n))
        cohort = _Cohort(start, device, lcp_normal, *self._landing_effects(spec, start, device))
        p = self._account_incidents(spec, cohort)
        converted = rng.random(n) < p
        ids = self._session_ids(n)
        self.truth.add_sessions(spec.name, n, float(p.sum()), int(converted.sum()))
        uas = [USER_AGENTS[d][k % len(USER_AGENTS[d])] for d, k in
               zip(device.tolist(), rng.integers(0, 12, n).tolist(), strict=True)]
        pages = self._human_pages(spec, start, device, lcp_normal * cohort.lcp_factor)
        self._emit_pages(spec, ids, device.tolist(), uas, pages)
        self._orders(spec, [ids[i] for i in np.flatnonzero(converted)], start[converted])

    def _landing_effects(self, spec: CampaignSpec, start: IntArray, device: IntArray
                         ) -> tuple[FloatArray, FloatArray]:
        """Per session: the product of active incidents' LCP and conversion factors."""
        lcp_f = np.ones(len(start))
        conv_f = np.ones(len(start))
        for inc in self._incidents[spec.name]:
            active = (start >= inc.start_ms) & (start < inc.end_ms) & inc.on_devices(device)
            if inc.slows(spec.landing_group):
                lcp_f[active] *= inc.lcp_factor
            conv_f[active] *= inc.conversion_factor
        return lcp_f, conv_f

    def _account_incidents(self, spec: CampaignSpec, c: _Cohort) -> FloatArray:
        """Conversion probabilities; truth: the expected conversions each incident takes."""
        slope = self.s.curve_slope_per_s
        day = daily_conversion(self.s.conversion_daily_amplitude, c.start)
        p = np.minimum(day * conversion_probability(spec, c.lcp_normal * c.lcp_factor,
                                                    c.device, slope), MAX_P)
        p *= c.conv_factor
        for inc in self._incidents[spec.name]:
            active = (c.start >= inc.start_ms) & (c.start < inc.end_ms) & inc.on_devices(c.device)
            if not active.any():
                continue
            undo = inc.lcp_factor if inc.slows(spec.landing_group) else 1.0
            lcp = c.lcp_normal[active] * c.lcp_factor[active] / undo
            p_without = np.minimum(day[active] * conversion_probability(
                spec, lcp, c.device[active], slope), MAX_P)
            p_without *= self._conversion_without(spec, c, inc, active)
            lost = float((p_without - p[active]).sum())
            self.truth.add_incident_loss(inc.id, spec.name, int(active.sum()), lost)
        return p

    def _conversion_without(self, spec: CampaignSpec, c: _Cohort, inc: IncidentSpec,
                            active: Any) -> FloatArray:
        """For the sessions ``active`` in ``inc``: the product of the other incidents'
        conversion factors (a checkout broken outright, factor 0, cannot be divided out)."""
        factor = np.ones(int(active.sum()))
        start, device = c.start[active], c.device[active]
        for other in self._incidents[spec.name]:
            if other is not inc:
                hit = (start >= other.start_ms) & (start < other.end_ms) & other.on_devices(device)
                factor[hit] *= other.conversion_factor
        return factor

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
        metrics = self._metrics(lcp, dwell, device)
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
            active = ((ts >= inc.start_ms) & (ts < inc.end_ms) & slowed & further
                      & inc.on_devices(device))
            lcp[active] *= inc.lcp_factor

    def _metrics(self, lcp: FloatArray, dwell: FloatArray, device: IntArray | None
                 ) -> list[list[float]]:
        """Columns lcp, fcp, ttfb, inp, cls, load, dwell (one row per page view)."""
        rng = self.rng
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
            for k, (offset, metrics) in enumerate(_split(style[i], pages.metrics[i])):
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

    def _orders(self, spec: CampaignSpec, ids: list[str], start: IntArray) -> None:
        rng = self.rng
        n = len(ids)
        if not n:
            return
        median_ms = self.s.order_lag_median_min * MINUTE_MS
        lag = np.exp(np.log(median_ms) + self.s.order_lag_sigma * rng.standard_normal(n))
        ts = start + np.clip(lag, 20_000.0, 90.0 * MINUTE_MS).astype(np.int64)
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


def _split(style: int, row: list[float]) -> list[tuple[float, dict[str, float]]]:
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
