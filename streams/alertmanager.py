"""Alertmanager API v2 payloads for revwatch alerts: pure functions, no I/O.

:func:`alertmanager_alert` maps one CONTRACT alert to a ``postableAlert``; the labels are
what ``deploy/alertmanager/alertmanager.yml`` routes and groups on (``incident_id``,
``kind``, ``severity``). Alertmanager runs on the wall clock while alerts carry event
time, so ``endsAt`` is taken from the wall clock (see :func:`alertmanager_alert`).
:class:`streams.delivery.AlertmanagerReceiver` sends them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from detectors.severity import SEVERITIES, SEVERITY, escalated, severity
from detectors.severity import alert_severity as detector_severity
from detectors.summary import HELD_OPEN, held_open

Alert = dict[str, Any]

KIND_ALERTNAMES = {
    "performance_conversion_loss": "RevwatchPerformanceConversionLoss",
    "conversion_drop": "RevwatchConversionDrop",
    "latency_regression": "RevwatchLatencyRegression",
}
__all__ = ["KIND_ALERTNAMES", "SEVERITIES", "alert_severity", "alertmanager_alert", "expired_copy",
           "iso_utc", "severity", "wall_clock_ms"]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def iso_utc(epoch_ms: float) -> str:
    """``2024-05-01T09:00:00.000Z``: RFC 3339 in UTC, as Alertmanager expects."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_alert(alert: Alert, *, now_ms: int, resolve_timeout_s: float = 900.0,
                       page_revenue_per_hour: float = 500.0, currency: str = "USD",
                       generator_url: str = "") -> dict[str, Any]:
    """One CONTRACT alert as an Alertmanager API v2 ``postableAlert``.

    ``startsAt`` is ``started_at`` (event time, never after ``now_ms``). A firing update
    ends at ``now_ms + resolve_timeout_s``, so it expires if revwatch stops re-sending it;
    a resolve ends at ``ts``, or ``now_ms`` if ``ts`` is later. Live, event time trails the
    wall clock by seconds and these equal ``ts + 15 min`` and ``ts``; in a replay or the
    time-compressed demo the wall clock keeps Alertmanager from resolving a firing alert
    early or holding a resolved one open.
    """
    starts = min(int(alert["started_at"]), now_ms)
    if alert.get("state") == "resolved":
        ends = max(min(int(alert["ts"]), now_ms), starts)
    else:
        ends = now_ms + round(resolve_timeout_s * 1000)
    item: dict[str, Any] = {
        "labels": _labels(alert, page_revenue_per_hour),
        "annotations": _annotations(alert, currency),
        "startsAt": iso_utc(starts),
        "endsAt": iso_utc(ends),
    }
    if generator_url:
        item["generatorURL"] = generator_url
    return item


def expired_copy(labels: dict[str, str], starts_at: str, now_ms: int) -> dict[str, Any]:
    """An update that ends the alert with ``labels`` now (its labels were superseded)."""
    return {"labels": labels, "annotations": {}, "startsAt": starts_at,
            "endsAt": iso_utc(now_ms)}


def alert_severity(alert: Alert, page_revenue_per_hour: float) -> str:
    """The severity one CONTRACT alert is delivered with: the higher of what its evidence
    says (``severity``, the episode's highest so far, set when it was emitted) and
    :func:`detectors.severity.alert_severity` of the alert at ``page_revenue_per_hour``
    (the only answer for an older worker's alert, without the key)."""
    evidence = alert.get("evidence") or {}
    now = detector_severity(str(alert["kind"]), float(alert.get("revenue_at_risk_per_hour")
                                                      or 0.0), evidence, page_revenue_per_hour)
    return escalated(evidence.get(SEVERITY), now)


def _labels(alert: Alert, page_revenue_per_hour: float) -> dict[str, str]:
    kind = str(alert["kind"])
    return {
        "alertname": KIND_ALERTNAMES.get(kind, "RevwatchAlert"),
        "service": "revwatch",
        "campaign": str(alert["campaign"]),
        "kind": kind,
        "severity": alert_severity(alert, page_revenue_per_hour),
        "incident_id": str(alert["incident_id"]),
        "scope": str(alert.get("scope", "campaign")),
        "alert_id": str(alert["alert_id"]),
    }


def _annotations(alert: Alert, currency: str) -> dict[str, str]:
    figures = ("revenue_at_risk_per_hour", "revenue_at_risk_per_hour_low",
               "revenue_at_risk_per_hour_high", "revenue_lost", "revenue_lost_low",
               "revenue_lost_high")
    notes = {name: f"{float(alert.get(name) or 0.0):.2f}" for name in figures}
    notes.update(
        summary=str(alert.get("summary") or _default_summary(alert)),
        description=_description(alert, currency),
        currency=currency,
        started_at=iso_utc(int(alert["started_at"])),
        evidence=orjson.dumps(alert.get("evidence") or {}).decode(),
    )
    return notes


def _default_summary(alert: Alert) -> str:
    return f"{alert['kind']} on campaign {alert['campaign']}"


def _description(alert: Alert, currency: str) -> str:
    def money(name: str) -> str:
        return f"{float(alert.get(name) or 0.0):,.0f}"

    since = f"{money('revenue_lost')} {currency} lost"
    if float(alert.get("revenue_lost_high") or 0.0) > float(alert.get("revenue_lost_low") or 0.0):
        since += f" (90% interval {money('revenue_lost_low')} to {money('revenue_lost_high')})"
    since += f" since {iso_utc(int(alert['started_at']))}."
    risk_high = float(alert.get("revenue_at_risk_per_hour_high") or 0.0)
    if alert.get("state") == "firing" and held_open(str(alert.get("kind")), risk_high):
        parts = [f"No shortfall priced at this minute: {HELD_OPEN}. {since}"]
    else:
        parts = [
            f"Revenue at risk {money('revenue_at_risk_per_hour')} {currency}/h (90% interval "
            f"{money('revenue_at_risk_per_hour_low')} to "
            f"{money('revenue_at_risk_per_hour_high')}); {since}"
        ]
    evidence = alert.get("evidence") or {}
    cr = _pick(evidence, "conversion_rate", "current_conversion_rate")
    crb = _pick(evidence, "conversion_rate_baseline", "baseline_conversion_rate")
    if cr is not None and crb is not None:
        parts.append(f"Conversion {cr:.2%} vs baseline {crb:.2%}.")
    lcp = _pick(evidence, "lcp_p75_ms", "current_lcp_p75_ms")
    lcpb = _pick(evidence, "lcp_p75_baseline_ms", "baseline_lcp_p75_ms")
    if lcp is not None and lcpb is not None:
        parts.append(f"p75 LCP {lcp / 1000:.2f} s vs baseline {lcpb / 1000:.2f} s.")
    sessions = _pick(evidence, "sessions_in_window", "sessions")
    if sessions is not None:
        parts.append(f"{sessions:,.0f} sessions in the window.")
    parts.extend(_device_notes(evidence))
    if alert.get("scope") == "site":
        total = _pick(evidence, "incident_revenue_at_risk_per_hour")
        cost = "" if total is None else f", {total:,.0f} {currency}/h at risk in all"
        parts.append(f"Part of site-wide incident {alert['incident_id']}{cost}.")
    return " ".join(parts)


def _device_notes(evidence: dict[str, Any]) -> list[str]:
    """``Slower on mobile: typical LCP +85% (94% of the added wait).`` per device a slowdown
    is on, ``Conversion down on mobile: 10% of the expected orders (96% of the missing).``
    per device a conversion drop is on."""
    devices = evidence.get("devices") or {}
    rows = evidence.get("conversion_devices") or {}
    return [f"Slower on {name}: typical LCP {devices[name]['typical_lcp_change']:+.0%} "
            f"({devices[name]['share_of_added_wait']:.0%} of the added wait)."
            for name in evidence.get("slow_devices") or [] if name in devices] + [
            f"Conversion down on {name}: {rows[name]['ratio']:.0%} of the expected orders "
            f"({rows[name]['share_of_missing']:.0%} of the missing)."
            for name in evidence.get("drop_devices") or [] if name in rows]


def _pick(evidence: dict[str, Any], *names: str) -> float | None:
    for name in names:
        value = evidence.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
