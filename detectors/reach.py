"""Fewer sessions reaching the checkout: a broken cart, seen before the orders are missing.

The checkout funnel (:mod:`detectors.funnel`) sees a payment that fails: the sessions that
reach the checkout stop ordering. A drop *before* the checkout (an add-to-cart button that
fails, a cart page that errors) leaves those reachers ordering as usual; fewer sessions get
there. The campaign's own test sees that too, in its orders, but only once the orders are
due: a session orders a median 6-7 minutes after it starts, of which about 4 to reach the
checkout, and only about half of the reachers order. Counting the reachers of each session
minute gives twice the events, sooner (docs/CONVERSION-POWER.md, "What the checkout funnel
would add": 38 against 22 minutes, oracle against oracle, for a cart that loses half).

The test is the funnel's, with sessions in the place of reachers: a :class:`Funnel` whose
"reachers" are a campaign's sessions per start minute and whose "orders" are those
sessions' first checkout pages, with a :class:`~detectors.lag.LagModel` of the delay from a
session's start to its checkout (prior median 4 minutes). A session reaches the checkout
with probability ``r`` (about twice the conversion rate), so the quasi-binomial rescale is
near 1 and the scan is nearly the campaign's conversion scan on checkouts.

It shares the campaign's per-tick level by weighted Bonferroni as the funnel does:
``min(p / (1 - w), p_reach / w)`` over the campaign's p-value already combined with its
devices' and the funnel's, ``w`` = ``CampaignParams.reach_test_weight``. Its adjusted
p-value counts only at ``funnel.COUNTS_BELOW`` or less (the funnel's code, given the reach's
counts and weight). Like the funnel, it is made at the
campaign's first checkout and has no test while its baseline holds fewer checkouts than
the campaign needs conversions.
"""

from __future__ import annotations

from typing import Any

from detectors.campaign_params import CampaignParams
from detectors.conversion import ConversionVerdict
from detectors.funnel import (
    COUNTS_BELOW,
    Funnel,
    counted_p,
    onset_of,
    price_funnel_drop,
    scan_funnel,
    with_funnel,
)
from detectors.verdicts import Estimate

__all__ = ["REACH_PRIOR_MEDIAN_MINUTES", "combine_reach", "new_reach", "price_reach_drop",
           "reach_decided", "reach_fields"]

REACH_PRIOR_MEDIAN_MINUTES = 4.0  # session start to its first checkout page, before learning


def new_reach(params: CampaignParams) -> Funnel:
    """A campaign's reach counts: sessions per start minute and their checkouts."""
    return Funnel.of(params, prior_median_minutes=REACH_PRIOR_MEDIAN_MINUTES)


def combine_reach(reach: Funnel | None, params: CampaignParams, tick_ms: int,  # noqa: PLR0917
                  conversion: ConversionVerdict, recent: ConversionVerdict, onset: int | None
                  ) -> tuple[ConversionVerdict, ConversionVerdict, ConversionVerdict, int | None]:
    """A campaign tick's reach part, as ``funnel.combine_funnel`` with the reach's weight:
    its scan (none while it is off, the campaign has seen no checkout, or too few checkouts
    are learned), the campaign's verdict and its last hour's (already combined with its
    devices' and the funnel's) combined with it, and the drop's onset (``onset``, the one
    so far, unless the reach's adjusted p-value counts and decides: its window's first
    session minute)."""
    weight = params.reach_test_weight
    scan = scan_funnel(reach, params, tick_ms, weight=weight)
    onset = onset_of(conversion, onset, scan[0], weight)
    conversion, recent = with_funnel(conversion, recent, scan, weight)
    return conversion, recent, scan[0], onset


def reach_decided(conversion: ConversionVerdict, reach: ConversionVerdict, weight: float
                  ) -> bool:
    """Whether the reach's adjusted p-value is the campaign's (``conversion``, combined by
    :func:`combine_reach`): it counts and no other test says more."""
    return weight > 0 and reach.window_start_ms is not None and \
        counted_p(reach, weight) <= min(conversion.p_value, COUNTS_BELOW)


def price_reach_drop(reach: Funnel, funnel: Funnel | None, verdict: ConversionVerdict,  # noqa: PLR0917
                     params: CampaignParams, tick_ms: int, aov: float, aov_se: float
                     ) -> tuple[Estimate, float]:
    """Revenue per hour missing with the checkouts missing in the reach's best window: each
    would have ordered with the funnel's learned ``P(order | checkout)``
    (``funnel.price_funnel_drop`` of the reach counts, at ``aov`` times it); zero unless
    the reach's evidence counts, or while the funnel has learned no order."""
    if funnel is None:
        return Estimate.zero(), 0.0
    orders, reachers = (float(v) for v in funnel.base.values)
    q = min(orders / reachers, 1.0) if reachers > 0 and orders > 0 else 0.0
    if q <= 0:
        return Estimate.zero(), 0.0
    return price_funnel_drop(reach, verdict, params, tick_ms=tick_ms, aov=aov * q,
                             aov_se=aov_se * q, weight=params.reach_test_weight)


def reach_fields(verdict: ConversionVerdict) -> dict[str, Any]:
    """The reach's verdict as the campaign verdict's ``reach_*`` fields."""
    return {"reach_p_value": verdict.p_value, "reach_observed": verdict.observed,
            "reach_expected": verdict.expected,
            "reach_window_start_ms": verdict.window_start_ms}
