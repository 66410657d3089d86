"""What really happened in a simulation: the contents of ``truth.json``.

:class:`Truth` is filled while :mod:`streams.simulate` draws the traffic. An incident's
revenue lost is an expectation over the sessions actually drawn: for each session it
touches (started during it; for a drop at the payment, whose checkout page, reached or not,
would fall in it), its probability of ordering without the incident (same LCP and checkout
time draws, no slowdown, no conversion drop) minus its probability with it, times the
campaign's revenue per conversion (``aov`` x (1 + the share of sessions with a second
order)). ``funnel``: where the incident acts, at the ``payment`` (P(order | reached the
checkout)) or the ``cart`` (P(reach the checkout); slow pages act there).

``campaigns`` counts human sessions, those that reached the checkout
(``checkout_sessions``), bot sessions and unique orders as drawn (including those a data
gap then hid); ``records`` counts what was emitted (retries included), page views, late
page views, retries and records dropped in data gaps.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from streams.simulate_model import (
    HOUR_MS,
    SECOND_ORDER_FRACTION,
    Scenario,
    affected_campaigns,
)


class Truth:
    """Counters and expected losses; :meth:`to_dict` is what ``truth.json`` holds."""

    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.campaigns: dict[str, dict[str, Any]] = {c.name: {
            "sessions": 0, "checkout_sessions": 0, "bot_sessions": 0,
            "expected_conversions": 0.0,
            "converted_sessions": 0, "orders": 0, "revenue": 0.0} for c in s.campaigns}
        self.incident_sessions: dict[str, dict[str, int]] = {
            i.id: dict.fromkeys(affected_campaigns(i, s), 0) for i in s.incidents}
        self.incident_lost: dict[str, dict[str, float]] = {
            i.id: dict.fromkeys(affected_campaigns(i, s), 0.0) for i in s.incidents}
        self.burst_bots = 0
        self.records: dict[str, int] = dict.fromkeys(
            ("beacons", "orders", "page_views", "late_page_views", "duplicate_beacons",
             "duplicate_orders", "dropped_in_gaps"), 0)

    def add_sessions(self, campaign: str, n: int, expected: float, converted: int,
                     reached: int) -> None:
        row = self.campaigns[campaign]
        row["sessions"] += n
        row["checkout_sessions"] += reached
        row["expected_conversions"] += expected
        row["converted_sessions"] += converted

    def add_bots(self, campaign: str, n: int, in_burst: int) -> None:
        self.campaigns[campaign]["bot_sessions"] += n
        self.burst_bots += in_burst

    def add_order(self, campaign: str, revenue: float) -> None:
        self.campaigns[campaign]["orders"] += 1
        self.campaigns[campaign]["revenue"] += revenue

    def add_incident_loss(self, incident: str, campaign: str, sessions: int,
                          conversions_lost: float) -> None:
        value = self.s.campaign(campaign).aov * (1.0 + SECOND_ORDER_FRACTION)
        self.incident_sessions[incident][campaign] += sessions
        self.incident_lost[incident][campaign] += conversions_lost * value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: scenario, incidents, traps, campaigns, record counts."""
        return {
            "scenario": self._scenario(),
            "incidents": [self._incident(i) for i in range(len(self.s.incidents))],
            "traps": [self._trap(i) for i in range(len(self.s.traps))],
            "campaigns": {name: self._campaign(name) for name in self.campaigns},
            "records": dict(self.records),
        }

    def _scenario(self) -> dict[str, Any]:
        s = self.s
        return {"seed": s.seed, "start_ms": s.start_ms, "end_ms": s.end_ms, "days": s.days,
                "scale": s.scale, "curve_slope_per_s": s.curve_slope_per_s,
                "funnel": asdict(s.funnel), "currency": s.currency,
                "second_order_fraction": SECOND_ORDER_FRACTION}

    def _incident(self, index: int) -> dict[str, Any]:
        inc = self.s.incidents[index]
        hours = (inc.end_ms - inc.start_ms) / HOUR_MS
        lost = self.incident_lost[inc.id]
        return {"id": inc.id, "kind": inc.kind, "campaigns": list(affected_campaigns(inc, self.s)),
                "scope": inc.scope, "start_ms": inc.start_ms, "end_ms": inc.end_ms,
                "lcp_factor": inc.lcp_factor, "conversion_factor": inc.conversion_factor,
                "page_group": inc.page_group, "devices": list(inc.devices),
                "funnel": "payment" if inc.payment_factor != 1.0 else "cart",
                "sessions": dict(self.incident_sessions[inc.id]),
                "revenue_lost_per_hour": {c: round(v / hours, 2) for c, v in lost.items()},
                "revenue_lost_per_hour_total": round(sum(lost.values()) / hours, 2),
                "revenue_lost_total": round(sum(lost.values()), 2)}

    def _trap(self, index: int) -> dict[str, Any]:
        trap = self.s.traps[index]
        row: dict[str, Any] = {
            "id": trap.id, "kind": trap.kind, "start_ms": trap.start_ms, "end_ms": trap.end_ms,
            "campaigns": list(trap.campaigns) or [c.name for c in self.s.campaigns],
            "factor": trap.factor}
        if trap.kind == "bot_burst":
            row["bot_sessions_in_bursts"] = self.burst_bots
        return row

    def _campaign(self, name: str) -> dict[str, Any]:
        spec = self.s.campaign(name)
        row = self.campaigns[name]
        return {**row, "expected_conversions": round(row["expected_conversions"], 2),
                "revenue": round(row["revenue"], 2), "aov": spec.aov,
                "conversion_rate": spec.conversion_rate, "landing_path": spec.landing_path,
                "commerce": spec.commerce, "lcp_median_ms": spec.lcp_median_ms,
                "order_given_checkout": self.s.order_given_checkout(spec)}
