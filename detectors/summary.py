"""The alerts' one-line summaries: what a person reads on a phone (docs/STATISTICS.md).

Pure text from an episode's kind, its money and its evidence object
(:func:`detectors.episodes.evidence`); :mod:`detectors.incidents` calls it.
"""

from __future__ import annotations

import math
from typing import Any

from detectors.episodes import CONVERSION, PERFORMANCE
from detectors.first_day import NOTE, first_day_drop
from detectors.verdicts import Estimate
from detectors.where import drop_place, slowdown_place

_CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
# an open drop's update when no shortfall is priced at this tick (the orders of the last
# minutes came in as expected) but the last hour's test still holds the episode open: "$0/h
# at risk" read as "it is over" while the alert stays firing
HELD_OPEN = "orders as expected in the last minutes, held open while the last hour shows the drop"


def held_open(kind: str, risk_high: float) -> bool:
    """Whether a firing update is :data:`HELD_OPEN`'s case: a conversion drop with no
    shortfall priced at its tick (nothing above 0 even in its interval). The summary and
    Alertmanager's description both say so instead of "0/h at risk"."""
    return kind == CONVERSION and not risk_high > 0


def firing_summary(campaign: str, kind: str, risk: Estimate, facts: dict[str, Any],
                   currency: str) -> str:
    """One phone-sized line for a firing alert (``facts`` is the :func:`evidence` object)."""
    lcp = f"p75 LCP {_seconds(facts['lcp_p75_ms'])} vs {_seconds(facts['lcp_p75_baseline_ms'])}"
    rates = f"{_percent(facts['conversion_rate'])} vs {_percent(facts['conversion_rate_baseline'])}"
    value = _money(risk.value, currency)
    band = f"(90%: {_money(risk.low, currency)}-{_money(risk.high, currency)})"
    recovering = not facts["latency_regressed"]  # an update after the pages sped up again
    if kind == PERFORMANCE:
        if recovering:
            return (f"{campaign}: page speed recovering ({lcp} normal); ~{value}/h at risk "
                    f"{band}; conversion {rates}")
        return (f"{campaign}: slow pages cost ~{value}/h {band}; {lcp} normal; "
                f"conversion {rates}{slowdown_place(facts)}")
    if kind == CONVERSION:
        speed = (f"more than slower pages explain ({lcp})" if facts["latency_regressed"]
                 else f"with normal page speed ({lcp})")
        note = NOTE if first_day_drop(kind, facts) else ""
        money = HELD_OPEN if held_open(kind, risk.high) else f"~{value}/h at risk {band}"
        return (f"{campaign}: checkout? {_as_tested(facts, rates)}{_at_checkout(facts)}"
                f"{_reaching(facts)} "
                f"{speed}; {money}{drop_place(facts)}{note}")
    if recovering:
        return (f"{campaign}: the latency test no longer finds pages slower ({lcp} normal); "
                f"resolves once quiet")
    return (f"{campaign}: pages slower ({_typical(facts)}{lcp}) but little revenue effect "
            f"(~{value}/h){slowdown_place(facts)}")


def _as_tested(facts: dict[str, Any], rates: str) -> str:
    """Conversion now against normal as the conversion test saw it: over the scan's best
    window, ``baseline x observed / expected`` (the lag-adjusted rate there), with the
    orders. The last hour's rate (``rates``) dilutes a drop younger than the hour, whose
    sessions have few of their orders due yet. Without a window showing fewer orders than
    expected (an older alert, or an episode held open by the last hour's test): ``rates``."""
    window, seen = facts.get("conversion_window_minutes"), facts["conversion_observed"]
    expected, base = facts["conversion_expected"], facts["conversion_rate_baseline"]
    if not window or seen is None or not expected or base is None or seen >= expected:
        return f"conversion {rates}"
    orders = "1 order" if round(seen) == 1 else f"{seen:.0f} orders"
    return (f"conversion {_percent(base * seen / expected)} vs {_percent(base)} in the last "
            f"{window} min ({orders}, {expected:.0f} expected)")


def _at_checkout(facts: dict[str, Any]) -> str:
    """The orders of the sessions that reached the checkout, against those expected, when
    their scan sees fewer (``detectors.funnel``); empty otherwise (and for older alerts)."""
    window = facts.get("checkout_window_minutes")
    seen, expected = facts.get("checkout_orders_observed"), facts.get("checkout_orders_expected")
    if not window or seen is None or not expected or seen >= 0.9 * expected:
        return ""
    orders = "1 order" if round(seen) == 1 else f"{seen:.0f} orders"
    return f"; {orders} vs {expected:.0f} expected after the checkout in the last {window} min"


def _reaching(facts: dict[str, Any]) -> str:
    """The sessions that reached the checkout, against those expected, when the reach scan
    sees fewer (``detectors.reach``: a broken cart); empty otherwise (and for older alerts)."""
    window = facts.get("reach_window_minutes")
    seen, expected = facts.get("reach_checkouts_observed"), facts.get("reach_checkouts_expected")
    if not window or seen is None or not expected or seen >= 0.9 * expected:
        return ""
    return (f"; {seen:.0f} sessions reached the checkout vs {expected:.0f} expected in the "
            f"last {window} min")


def _typical(facts: dict[str, Any]) -> str:
    """How much slower the recent sessions' typical LCP is than normal, with the p75 after it.

    The latency test is on the mean log-LCP, so it can fire while the p75 has barely moved
    (a shift in the middle of the distribution): ``exp(shift) - 1`` is what it saw, as the
    change of the geometric mean (the median of a log-normal LCP). Empty when unknown or
    not above 0.5%."""
    shift = facts["latency_shift_log"]
    if shift is None or shift < math.log1p(0.005):
        return ""
    return f"typical LCP +{math.expm1(shift) * 100:.0f}%; "


def resolved_summary(campaign: str, kind: str, minutes: float, lost: Estimate,
                     currency: str) -> str:
    """One line for the last alert of an episode: how long, and what it cost (with the
    interval, when it has one)."""
    text = (f"resolved: {campaign} {kind} after {_duration(minutes)}; "
            f"~{_money(lost.value, currency)} lost")
    if lost.high > lost.low:
        text += f" (90%: {_money(lost.low, currency)}-{_money(lost.high, currency)})"
    return text


def site_prefix(campaigns: int) -> str:
    """The prefix of a site-wide alert's summary."""
    return f"site-wide ({campaigns} campaigns): "


def _money(amount: float, currency: str) -> str:
    text = f"{_round_significant(amount, 3):,.0f}"
    symbol = _CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{currency} {text}"


def _round_significant(amount: float, digits: int) -> float:
    if amount <= 0 or not math.isfinite(amount):
        return 0.0
    return round(amount, digits - 1 - math.floor(math.log10(amount)))


def _percent(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    return f"{rate * 100:.1f}%" if rate >= 0.01 else f"{rate * 100:.2f}%"


def _seconds(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms / 1000:.1f} s"


def _duration(minutes: float) -> str:
    whole = max(round(minutes), 0)
    if whole < 90:
        return f"{whole} min"
    return f"{whole // 60} h {whole % 60} min"
