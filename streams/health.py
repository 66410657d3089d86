"""Live campaign health for ``GET /campaigns`` and the campaign gauges of ``/metrics``.

Built from the latest verdict of each campaign this worker owns and the alerts its
incident stage holds open. With several workers each serves the campaigns of its own
partitions (Prometheus sums them; the JSON names the worker's share).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from detectors.first_day import orders_stopped
from detectors.incidents import Alert
from detectors.verdicts import CampaignVerdict, Estimate
from streams.metrics import CampaignHealth

EVIDENCE_P = 1e-3


def revenue_at_risk_estimate(verdict: CampaignVerdict) -> Estimate:
    """Revenue per hour at risk now with its 90% interval, counting only figures backed by
    evidence (the larger of them; zero when none is): a conversion shortfall in the shop's
    first day counts only if the orders stopped (before, it may be the shop's daily rhythm;
    ``detectors.first_day``)."""
    figures = [Estimate.zero()]
    if verdict.latency_regressed:
        figures.append(verdict.slow_page_loss_per_hour)
    if verdict.conversion_p_value < EVIDENCE_P and (
            verdict.conversion_day_known or orders_stopped(verdict)):
        figures.append(verdict.conversion_loss_per_hour)
    return max(figures, key=lambda figure: figure.value)


def revenue_at_risk(verdict: CampaignVerdict) -> float:
    """:func:`revenue_at_risk_estimate`'s value."""
    return revenue_at_risk_estimate(verdict).value


def revenue_per_hour(verdict: CampaignVerdict) -> tuple[float, float]:
    """The revenue per hour the campaign's sessions bring now, and at its normal conversion:
    sessions per minute x 60 x the conversion rate (now, lag-adjusted; or the baseline) x
    what a conversion brings (``nan`` while a rate is not known)."""
    money_per_session = verdict.sessions_per_minute * 60.0 * verdict.conversion_value
    return (money_per_session * verdict.conversion_rate,
            money_per_session * verdict.conversion_rate_baseline)


@dataclass(frozen=True)
class CampaignsView:
    verdicts: tuple[CampaignVerdict, ...]
    alerts: tuple[Alert, ...]
    currency: str

    def health_rows(self) -> list[CampaignHealth]:
        return [self._health(v) for v in self.verdicts]

    @staticmethod
    def _health(v: CampaignVerdict) -> CampaignHealth:
        risk = revenue_at_risk_estimate(v)
        return CampaignHealth(v.campaign, v.sessions_per_minute, v.conversion_rate,
                              v.conversion_rate_baseline, v.lcp_p75_ms, v.lcp_p75_baseline_ms,
                              risk.value, risk.low, risk.high, *revenue_per_hour(v))

    def to_json_obj(self) -> dict[str, Any]:
        firing: dict[str, list[dict[str, Any]]] = {}
        for alert in self.alerts:
            firing.setdefault(alert.campaign, []).append(alert.to_dict())
        rows = [self._row(v, firing.get(v.campaign, [])) for v in self.verdicts]
        rows.sort(key=lambda r: (-r["sessions_per_minute"], r["campaign"]))
        tick = max((v.tick_ms for v in self.verdicts), default=None)
        return {"as_of": tick, "currency": self.currency, "campaigns": rows}

    @staticmethod
    def _row(v: CampaignVerdict, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "campaign": v.campaign,
            "sessions_per_minute": round(v.sessions_per_minute, 3),
            "conversion_rate": _num(v.conversion_rate),
            "conversion_rate_baseline": _num(v.conversion_rate_baseline),
            "lcp_p75_ms": _num(v.lcp_p75_ms),
            "lcp_p75_baseline_ms": _num(v.lcp_p75_baseline_ms),
            **_risk_fields(revenue_at_risk_estimate(v)),
            "average_order_value": _num(v.average_order_value),
            "revenue_per_conversion": _num(v.conversion_value),
            **_revenue_fields(*revenue_per_hour(v)),
            "warmed_up": v.warmed_up,
            # False in the shop's first day: a partial conversion drop may be its rhythm
            "conversion_day_known": v.conversion_day_known,
            "firing_alerts": alerts,
        }


def _risk_fields(risk: Estimate) -> dict[str, float]:
    """The revenue at risk per hour and its 90% interval, named as in an alert."""
    return {"revenue_at_risk_per_hour": round(risk.value, 2),
            "revenue_at_risk_per_hour_low": round(risk.low, 2),
            "revenue_at_risk_per_hour_high": round(risk.high, 2)}


def _revenue_fields(now: float, normal: float) -> dict[str, float | None]:
    return {"revenue_per_hour": _num(now, 2), "revenue_per_hour_baseline": _num(normal, 2)}


def _num(value: float, digits: int = 6) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def build_view(verdicts: Iterable[CampaignVerdict], alerts: Iterable[Alert],
               currency: str) -> CampaignsView:
    return CampaignsView(tuple(verdicts), tuple(alerts), currency)


def campaigns_view(rt: Any) -> CampaignsView:
    """The view of a running worker (``streams.app.Runtime``)."""
    return build_view(rt.campaigns.latest.values(), rt.incidents.manager.open_alerts(),
                      rt.settings.currency)


def dumps_json(obj: Any) -> str:
    """JSON text for aiohttp's ``json_response`` (orjson: fast, NaN-safe via None)."""
    return orjson.dumps(obj).decode()
