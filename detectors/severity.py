"""Who is woken for an alert: ``page``, ``ticket`` or ``info``, read from the alert alone.

An alert reaches people three ways: the ``alerts`` topic, the webhook and Alertmanager
(CONTRACT.md). All three carry the same answer, computed here when the alert is emitted
and put in its evidence (``severity``); Alertmanager routes on it as the label
``severity`` (``deploy/alertmanager/alertmanager.yml``).

- A conversion loss (``performance_conversion_loss``, ``conversion_drop``) pages when its
  revenue at risk is at least the paging budget, ``PAGE_FACTOR`` times the smallest
  revenue at risk worth an alert (``IncidentParams.min_revenue_per_hour``); below it, a
  ticket. The money is the larger of the alert's own and its incident's
  (``incident_revenue_at_risk_per_hour``): an incident is one notification, so a
  site-wide slowdown costing 600/h over campaigns of 200/h each pages at a 500/h budget.
- A partial conversion drop in the shop's first day is a ticket whatever its size
  (:func:`detectors.first_day.first_day_drop`).
- A latency regression, slower pages that cost little, is ``info``.
- An episode's severity only escalates (:func:`escalated`): a page that turned into a
  ticket would re-notify, and a person already woken is not un-woken.

Pure: reads an alert's kind, money and evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectors.first_day import first_day_drop

SEVERITIES = ("info", "ticket", "page")
"""Ascending."""
CONVERSION_KINDS = frozenset({"performance_conversion_loss", "conversion_drop"})
PAGE_FACTOR = 5.0
SEVERITY = "severity"  # evidence key: the highest severity of the episode so far
INCIDENT_RISK = "incident_revenue_at_risk_per_hour"  # evidence key: the incident's total


def severity(kind: str, revenue_at_risk_per_hour: float, page_revenue_per_hour: float,
             *, first_day: bool = False) -> str:
    """``page`` for a conversion loss at or above the budget, ``ticket`` below, else
    ``info``; a partial conversion drop in the shop's first day (``first_day``) is a
    ``ticket`` whatever its size."""
    if kind not in CONVERSION_KINDS:
        return "info"
    if first_day:
        return "ticket"
    return "page" if revenue_at_risk_per_hour >= page_revenue_per_hour else "ticket"


def alert_severity(kind: str, revenue_at_risk_per_hour: float, evidence: Mapping[str, Any],
                   page_revenue_per_hour: float) -> str:
    """:func:`severity` of one alert update, on the larger of its own money and its
    incident's (the evidence's ``incident_revenue_at_risk_per_hour``; an older worker's
    alert without it is judged on its own)."""
    revenue = max(float(revenue_at_risk_per_hour or 0.0),
                  float(evidence.get(INCIDENT_RISK) or 0.0))
    return severity(kind, revenue, page_revenue_per_hour,
                    first_day=first_day_drop(kind, evidence))


def rank(name: object) -> int:
    """Position in :data:`SEVERITIES`; -1 for anything else (an older alert's none)."""
    return SEVERITIES.index(name) if name in SEVERITIES else -1


def escalated(previous: object, new: str) -> str:
    """The higher of an episode's severity so far and a new update's.

    >>> escalated("page", "ticket"), escalated("ticket", "page"), escalated(None, "info")
    ('page', 'page', 'info')
    """
    return previous if isinstance(previous, str) and rank(previous) > rank(new) else new
