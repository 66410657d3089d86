"""What an alert says about where it happened: the device rows of ``detectors.localize`` as
the alert's evidence, and the end of its one-line summary ("; on mobile (...)")."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from detectors.localize import (
    conversions_differ_p,
    delay_shares,
    drop_devices,
    heterogeneity_p,
    missing_shares,
    slow_devices,
)
from detectors.verdicts import ConversionRow, DeviceRow


def device_evidence(rows: dict[str, DeviceRow] | None) -> dict[str, Any]:
    """Where the pages got slower (``detectors.localize``): per device its recent sessions,
    typical LCP change (``exp(shift) - 1``) with the log-shift's standard error, seconds of
    waiting added and their share; the heterogeneity test's p-value; the devices the
    slowdown is on (empty: every device, or unclear). Empty while slow pages are not priced.
    """
    if rows is None:
        return {}
    shares = delay_shares(rows)
    per_device = {
        name: {"sessions": round(n), "typical_lcp_change": _finite(math.expm1(shift)),
               "log_shift_se": _finite(se), "added_seconds": _finite(added),
               "share_of_added_wait": shares[name]}
        for name, (n, shift, se, added) in rows.items()}
    return {"devices": per_device, "devices_differ_p": _finite(heterogeneity_p(rows)),
            "slow_devices": list(slow_devices(rows))}


def conversion_device_evidence(rows: dict[str, ConversionRow] | None) -> dict[str, Any]:
    """Where conversion fell (``detectors.localize``): per device the conversions expected
    and observed in the shortfall's window, their ratio and the device's share of the
    missing; the test that the devices differ; the devices the drop is on (empty: every
    device, or unclear). Empty while no shortfall is priced."""
    if rows is None:
        return {}
    shares = missing_shares(rows)
    per_device = {name: {"expected": e, "observed": o, "ratio": o / e if e > 0 else None,
                         "share_of_missing": shares[name]} for name, (e, o) in rows.items()}
    return {"conversion_devices": per_device,
            "conversion_devices_differ_p": _finite(conversions_differ_p(rows)),
            "drop_devices": list(drop_devices(rows))}


def slowdown_place(facts: dict[str, Any]) -> str:
    """``; on mobile (typical LCP +150%, 97% of the added wait)`` when the slowdown is on
    some devices only (the typical change only when it is on one)."""
    return _on_devices(facts, ("slow_devices", "devices", "share_of_added_wait"),
                       lambda row: f"typical LCP {row['typical_lcp_change'] * 100:+.0f}%",
                       "of the added wait")


def drop_place(facts: dict[str, Any]) -> str:
    """``; on mobile (orders 10% of expected, 96% of the missing)`` when a conversion drop
    is on some devices only (the ratio only when it is on one)."""
    return _on_devices(facts, ("drop_devices", "conversion_devices", "share_of_missing"),
                       lambda row: f"orders {row['ratio'] * 100:.0f}% of expected",
                       "of the missing")


def _on_devices(facts: dict[str, Any], keys: tuple[str, str, str],
                one: Callable[[dict[str, Any]], str], what: str) -> str:
    named_key, rows_key, share_key = keys
    named = facts.get(named_key) or []
    if not named:
        return ""
    rows = facts[rows_key]
    share = f"{sum(rows[name][share_key] for name in named) * 100:.0f}%"
    first = f"{one(rows[named[0]])}, " if len(named) == 1 else ""
    return f"; on {' + '.join(named)} ({first}{share} {what})"


def _finite(value: float) -> float | None:
    """JSON has no nan or infinity: ``None`` for them."""
    return value if math.isfinite(value) else None
