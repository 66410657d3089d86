"""What a campaign's tick prices (``CampaignModel.tick``'s money): the slow-page loss, the
conversion shortfall per hour and what a drop has cost so far, each only where the tests
see something (most ticks of most campaigns need none of it).

Pure functions of the model at its tick; they read its learned state and write only the
shortfall ledger (``detectors.shortfall``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.buckets import MINUTE_MS, MinuteBucket, minute_of
from detectors.conversion import ConversionVerdict
from detectors.device_scan import DeviceDrop, price_device_drop
from detectors.elasticity import CurveFit
from detectors.funnel import Funnel, price_funnel_drop
from detectors.localize import device_conversions
from detectors.pricing import onset_window, price_conversion_loss, price_slowdown
from detectors.reach import price_reach_drop, reach_decided
from detectors.shortfall import range_shortfall
from detectors.verdicts import ConversionRow, DeviceRow, Estimate
from detectors.window import TickWindow

if TYPE_CHECKING:
    from detectors.campaign import CampaignModel

__all__ = ["PLACE_CONVERSION_P", "PRICE_CONVERSION_P", "price_tick"]

PRICE_CONVERSION_P = 0.5  # price a conversion shortfall only when the scan sees one
# say which devices it is on only when it is clear enough to matter: an open drop is held
# while its last hour's p is at most 0.05 (``IncidentParams.conversion_hold_p``)
PLACE_CONVERSION_P = 0.05


def price_tick(model: CampaignModel, tick_ms: int, conv: ConversionVerdict,  # noqa: PLR0917
               site_fit: CurveFit | None, window: TickWindow, drop: DeviceDrop | None,
               funnels: tuple[ConversionVerdict, ConversionVerdict]) -> dict[str, Any]:
    """Price what the tests see; a figure with no evidence behind it is zero (and not
    computed: most ticks of most campaigns need neither).

    Slow pages are priced while the latency CUSUM is above 0 and either it alarmed
    within ``price_hold_minutes`` (all a latency episode reads, from its first hot tick
    until it resolves) or a conversion shortfall is priced (which the slow pages may
    explain: the alert's ``explained_fraction``). A shortfall a device's own test found
    (``drop``) is priced on the dropped devices, and put on devices, from its window;
    one the session minutes do not show yet, from the checkout's reachers
    (``funnel.price_funnel_drop``) or else from the sessions that did not reach the
    checkout (``reach.price_reach_drop``; ``funnels``: the funnel's and the reach's
    verdicts). A shortfall the reach test found (its p-value decided the campaign's) with
    no latency alarm lately is priced per hour from the checkouts missing.
    """
    order_value, order_se = model.average_order_value()
    ratio = model.orders_per_conversion()
    aov, aov_se = order_value * ratio, order_se * ratio  # what a lost conversion costs
    slow = lost = Estimate.zero()
    devices: dict[str, DeviceRow] | None = None
    priced_shortfall = conv.p_value < PRICE_CONVERSION_P and conv.window_start_ms is not None
    slow_minute_ms: int | None = None
    slow_lost = 0.0
    if model.latency.last.statistic > 0 and (priced_shortfall or _alarmed_lately(model, tick_ms)):
        slow_minute_ms = _closed_minute(model, tick_ms)
        slow, devices, slow_lost = price_slowdown(
            _current_window(model, tick_ms), model.curve_sessions.values,
            model.curve_conversions.values, site_fit, model.factors(), aov=aov, aov_se=aov_se,
            ledger_minute_ms=slow_minute_ms)
    conversion_devices: dict[str, ConversionRow] | None = None
    so_far = 0.0
    if priced_shortfall and conv.p_value <= PLACE_CONVERSION_P:
        conversion_devices = _conversions_by_device(
            model, window, drop.start_ms if drop else conv.window_start_ms or tick_ms)
    if priced_shortfall and drop is not None:
        lost, so_far = price_device_drop(window, drop, model.device_baseline(),
                                         tick_ms=tick_ms, aov=aov, aov_se=aov_se)
        so_far = _lost_of_run(model, window, drop, 0, so_far, aov)
    elif priced_shortfall:
        base_conv, base_sessions = model.baseline()
        priced = _pricing_window(model, tick_ms, conv, window)
        first = window.first_from(priced.window_start_ms or tick_ms)
        lost = price_conversion_loss(
            priced, tick_ms=tick_ms,
            window_sessions=float(window.sessions[first:] @ window.season[first:]),
            baseline_conversions=float(base_conv), baseline_sessions=float(base_sessions),
            aov=aov, aov_se=aov_se)
        so_far = _lost_of_run(model, window, None, first,
                              max(priced.expected - priced.observed, 0.0) * aov, aov)
        if model.reach is not None and not _alarmed_lately(model, tick_ms) and \
                reach_decided(conv, funnels[1], model.params.reach_test_weight):
            lost = _reach_price(model, model.reach, funnels[1], (tick_ms, aov, aov_se), lost)
    if priced_shortfall and lost.value <= 0 and model.funnel is not None:
        lost, so_far = price_funnel_drop(model.funnel, funnels[0], model.params, tick_ms=tick_ms,
                                         aov=aov, aov_se=aov_se)
    if priced_shortfall and lost.value <= 0 and model.reach is not None:
        lost, so_far = price_reach_drop(model.reach, model.funnel, funnels[1], model.params,
                                        tick_ms, aov, aov_se)
    return {"average_order_value": order_value, "revenue_per_conversion": aov,
            "slow_page_loss_per_hour": slow, "conversion_loss_per_hour": lost, "devices": devices,
            "conversion_devices": conversion_devices,
            "conversion_lost_so_far": so_far if lost.value > 0 else 0.0,
            "slow_page_lost_minute": slow_lost, "slow_page_minute_ms": slow_minute_ms}


def _reach_price(model: CampaignModel, counts: Funnel, reach: ConversionVerdict,
                 at: tuple[int, float, float], orders: Estimate) -> Estimate:
    """The risk per hour of a drop the reach test found with normal page speed (a broken
    cart): from the checkouts missing (``reach.price_reach_drop``), which show it with
    about twice the events of the orders and before they are due; ``orders`` (the
    orders' price) when it gives none. The money lost so far stays the orders' (with the
    run's minutes that left the window). On `bench/quality.py --cart` the orders'
    price of the cart read 0.77 of the truth at the catch, with 7 of 14 intervals holding
    it (docs/FUNNEL.md)."""
    tick_ms, aov, aov_se = at
    priced, _ = price_reach_drop(counts, model.funnel, reach, model.params, tick_ms, aov, aov_se)
    return priced if priced.value > 0 else orders


def _lost_of_run(model: CampaignModel, window: TickWindow, drop: DeviceDrop | None,  # noqa: PLR0917
                 first: int, in_range: float, aov: float) -> float:
    """The money of the orders missing of a drop priced from ``first`` (the campaign's) or
    on ``drop``'s devices, with those of its minutes that left the window during the run
    (``detectors.shortfall``); the window's own figure ``in_range`` outside a run (and
    nothing computed)."""
    if not model.shortfall.running(window.tick_ms,
                                   model.params.conversion_hold_minutes * MINUTE_MS):
        return in_range
    run = model.shortfall.missing(window, *range_shortfall(
        window, first, drop, model.baseline(), model.device_baseline()))
    return max(run, 0.0) * aov


def _conversions_by_device(model: CampaignModel, window: TickWindow, start_ms: int
                           ) -> dict[str, ConversionRow]:
    """The shortfall's window by device (``detectors.localize``): commerce landings
    weighted by their completeness, and their conversions, against each device's
    learned rate."""
    first = window.first_from(start_ms)
    sessions, conversions = window.device_series()
    return device_conversions(*model.device_baseline(),
                              sessions[:, first:] @ window.weights[first:],
                              conversions[:, first:].sum(axis=1))


def _alarmed_lately(model: CampaignModel, tick_ms: int) -> bool:
    last = model.last_alarm_ms
    return last is not None and tick_ms - last <= model.params.price_hold_minutes * MINUTE_MS


def _pricing_window(model: CampaignModel, tick_ms: int, conv: ConversionVerdict,
                    window: TickWindow) -> ConversionVerdict:
    """The shortfall to price (``pricing.onset_window``)."""
    base_conv, base_sessions = model.baseline()
    return onset_window(conv, window, float(base_conv / base_sessions),
                        tick_ms - model.params.price_onset_min_minutes * MINUTE_MS + 1)


def _closed_minute(model: CampaignModel, tick_ms: int) -> int:
    """The newest minute whose beacons are in (``latency_delay_minutes``)."""
    return tick_ms - (model.params.latency_delay_minutes + 1) * MINUTE_MS


def _current_window(model: CampaignModel, tick_ms: int) -> list[tuple[int, MinuteBucket]]:
    """Minutes that show the latency now: the last ``price_minutes`` closed minutes, or
    fewer when the shift began more recently (so an early estimate is not diluted)."""
    closed = _closed_minute(model, tick_ms)
    start = closed - (model.params.price_minutes - 1) * MINUTE_MS
    started = model.latency.last.started_ms
    if started is not None:
        start = max(start, minute_of(started))
    return list(model.ring.span(start, closed + MINUTE_MS))
