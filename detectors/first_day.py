"""The shop's first day: a partial conversion drop before the shop's day is known.

Until some campaign has learned a whole day of orders, the conversion baseline cannot
know the hour of day (``detectors.conv_season``, ``detectors.site_season``). A shop whose
conversion follows the hour of day then shows its morning trough as a drop as deep as a
broken checkout's: x0.6 of the day's mean at 08:00 against a baseline learned at x1.2
in the night reads as a 50% drop (docs/STATISTICS.md, "The shop's first day"). So such a
drop is still an alert, but says so, and is delivered as a ticket, not a page
(``detectors.severity``). Orders that stopped are no daily rhythm: when the
orders are surely under ``STOPPED_RATIO`` of those expected (the one-sided
``STOPPED_CONFIDENCE`` upper bound of their Poisson mean, below that share of the
expected), on the campaign or on one device, the alert pages as on any day. A point
estimate would not do: a device expecting 5.6 orders that saw 1 is under a fifth of them
about one time in 40 by chance, and the benchmark's first day met it.

Pure: reads a verdict or an alert's evidence object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scipy.special import gammaincinv

from detectors.verdicts import CampaignVerdict

CONVERSION = "conversion_drop"
NOTE = "; first day here: may be the shop's daily rhythm"
STOPPED_RATIO = 0.25  # deeper than a shop's daily trough against its day's mean
STOPPED_CONFIDENCE = 0.99


def orders_stopped(verdict: CampaignVerdict) -> bool:
    """Whether the window's orders are surely under ``STOPPED_RATIO`` of those expected,
    on the campaign, on a device (the devices are known while a shortfall is priced) or
    among the sessions that reached the checkout (``detectors.funnel``)."""
    rows = [(verdict.conversion_expected, verdict.conversion_observed),
            (verdict.checkout_expected, verdict.checkout_observed),
            *(verdict.conversion_devices or {}).values()]
    return any(surely_below(observed, expected) for expected, observed in rows)


def surely_below(observed: float, expected: float) -> bool:
    """Whether the ``STOPPED_CONFIDENCE`` upper bound of the Poisson mean of ``observed``
    orders is under ``STOPPED_RATIO x expected``: with none seen, from 18.4 expected on.

    >>> surely_below(0.0, 18.0), surely_below(0.0, 19.0), surely_below(1.0, 5.6)
    (False, True, False)
    """
    if not (math.isfinite(expected) and math.isfinite(observed)) or expected <= 0:
        return False
    upper = float(gammaincinv(max(observed, 0.0) + 1.0, STOPPED_CONFIDENCE))
    return upper < STOPPED_RATIO * expected


def first_day_drop(kind: str, evidence: Mapping[str, Any]) -> bool:
    """Whether an alert is a partial conversion drop in the shop's first day: its
    evidence says the day is not known yet and the orders did not stop. Evidence of an
    older worker, without ``day_known``, counts as known."""
    return (kind == CONVERSION and evidence.get("day_known") is False
            and not evidence.get("orders_stopped", False))
