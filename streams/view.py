"""Terminal rendering for the demo: one line per alert, a small table of campaign health."""

from __future__ import annotations

import time
from typing import Any

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


def format_alert(alert: dict[str, Any]) -> str:
    """One line a person reads: state and who it wakes (``page``, ``ticket``, ``info``),
    campaign, kind, money, and the alert's own summary."""
    state = alert.get("state", "?").upper()
    severity = (alert.get("evidence") or {}).get("severity")
    if severity:
        state = f"{state} {severity}"
    clock = time.strftime("%H:%M", time.gmtime(int(alert.get("ts", 0)) / 1000))
    return f"\n>>> [{state}] {clock} event time | {alert.get('kind')} | {alert.get('summary')}\n"


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.2f}%"


def _secs(value_ms: float | None) -> str:
    return "  -  " if value_ms is None else f"{value_ms / 1000:4.1f}s"


def format_health(body: dict[str, Any]) -> str:
    """The /campaigns JSON as a fixed-width table."""
    symbol = SYMBOLS.get(body.get("currency", "USD"), "")
    as_of = body.get("as_of")
    clock = time.strftime("%a %H:%M", time.gmtime(as_of / 1000)) if as_of else "warming up"
    lines = [f"-- campaigns at {clock} (event time) --",
             f"{'campaign':<18}{'sess/min':>9}  {'conv now':>8} {'normal':>7}  "
             f"{'p75 LCP':>7} {'normal':>6}  {'at risk/h':>10}  alert"]
    for row in body.get("campaigns", [])[:12]:
        alerts = row.get("firing_alerts") or []
        lines.append(
            f"{row['campaign'][:17]:<18}{row['sessions_per_minute']:>9.1f}  "
            f"{_pct(row.get('conversion_rate')):>8} "
            f"{_pct(row.get('conversion_rate_baseline')):>7}  "
            f"{_secs(row.get('lcp_p75_ms')):>7} {_secs(row.get('lcp_p75_baseline_ms')):>6}  "
            f"{symbol}{row.get('revenue_at_risk_per_hour', 0):>9,.0f}  "
            f"{alerts[0]['kind'] if alerts else ''}")
    return "\n".join(lines)
