"""The demo's scenario: a few hours of a small shop, then one incident on its biggest campaign.

``revwatch demo`` (and ``revwatch simulate --scenario demo``) play it. The incident is
either what revwatch is for, **slow pages** that cost orders (``slow-pages``: LCP x2.5), or
the case it must tell apart, a **checkout** that takes no orders while the pages stay fast
(``checkout``: conversion x0 at the payment, a payment provider down: sessions still reach
the checkout page, no order follows), or a **cart** that fails for most shoppers while
the pages stay fast (``cart``: four in five sessions that would reach the checkout never get
there, an add-to-cart that errors; those that do order as usual).
"""

from __future__ import annotations

from typing import Literal, get_args

from streams.records import NONE_CAMPAIGN
from streams.simulate_model import (
    DAY_MS,
    DEFAULT_START_MS,
    HOUR_MS,
    MINUTE_MS,
    IncidentSpec,
    Scenario,
    _campaigns,
    _h,
)

DemoIncident = Literal["slow-pages", "checkout", "cart"]
DEMO_INCIDENTS: tuple[str, ...] = get_args(DemoIncident)
DEMO_CAMPAIGNS = ("spring_sale", "google_shopping", "partner_promo", "blog_guides", NONE_CAMPAIGN)
# How long each incident lasts by default, and the traffic after it: a stopped checkout pages
# once about 18 orders are missing (the shop's first day, docs/STATISTICS.md), and resolves
# once the last hour no longer shows the stop (`conversion_hold_p`), so it gets longer.
DEMO_MINUTES: dict[str, float] = {"slow-pages": 20.0, "checkout": 30.0, "cart": 45.0}
DEMO_TAIL_MINUTES: dict[str, float] = {"slow-pages": 40.0, "checkout": 60.0, "cart": 60.0}
CART_FACTOR = 0.2  # the ``cart`` demo: the share of would-be reachers that still get there


def demo_scenario(seed: int = 1, *, warmup_hours: float = 4.0,
                  incident_minutes: float | None = None, start_ms: int | None = None,
                  devices: tuple[str, ...] = (), incident: DemoIncident = "slow-pages"
                  ) -> Scenario:
    """A short run: five campaigns, one incident on the biggest after the warm-up.

    The scenario goes on :data:`DEMO_TAIL_MINUTES` after the incident, so a detector sees
    it resolve.
    ``devices``: only these devices' sessions are hit (default: every device's).
    ``incident_minutes``: default :data:`DEMO_MINUTES` of the incident.
    """
    if incident not in DEMO_INCIDENTS:
        msg = f"demo incident {incident!r}: known are {', '.join(DEMO_INCIDENTS)}"
        raise ValueError(msg)
    start = DEFAULT_START_MS + 12 * HOUR_MS if start_ms is None else start_ms
    campaigns = tuple(c for c in _campaigns(start) if c.name in DEMO_CAMPAIGNS)
    inc_start = _h(start, warmup_hours)
    minutes = DEMO_MINUTES[incident] if incident_minutes is None else incident_minutes
    inc_end = inc_start + round(minutes * MINUTE_MS)
    spec = (IncidentSpec("demo-slowdown", "performance_conversion_loss", ("spring_sale",),
                         inc_start, inc_end, lcp_factor=2.5, devices=devices)
            if incident == "slow-pages" else
            IncidentSpec("demo-checkout", "conversion_drop", ("spring_sale",), inc_start,
                         inc_end, conversion_factor=0.0, devices=devices, funnel="payment")
            if incident == "checkout" else
            IncidentSpec("demo-cart", "conversion_drop", ("spring_sale",), inc_start, inc_end,
                         conversion_factor=CART_FACTOR, devices=devices, funnel="cart"))
    days = (inc_end + round(DEMO_TAIL_MINUTES[incident] * MINUTE_MS) - start) / DAY_MS
    return Scenario(seed=seed, start_ms=start, days=days, campaigns=campaigns, incidents=(spec,))
