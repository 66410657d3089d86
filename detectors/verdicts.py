"""What one campaign's detectors say at one tick, and a figure with its 90% interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

# per device: recent sessions, log-shift, its standard error, seconds of waiting added
# (``detectors.localize``)
DeviceRow = tuple[float, float, float, float]
# per device: conversions expected of the recent sessions, and observed
ConversionRow = tuple[float, float]


@dataclass(frozen=True, slots=True, init=False)
class Estimate:
    """A non-negative figure with a 90% interval: ``low <= value <= high``."""

    value: float
    low: float
    high: float

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(self, value: float, low: float, high: float) -> None:
        # numpy scalars in, builtin floats out (JSON-able)
        object.__setattr__(self, "value", float(value))
        object.__setattr__(self, "low", float(low))
        object.__setattr__(self, "high", float(high))

    @classmethod
    def zero(cls) -> Estimate:
        """The zero figure (one shared instance: estimates are immutable)."""
        return _ZERO

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.value * factor, self.low * factor, self.high * factor)


@dataclass(frozen=True, slots=True, init=False)
class CampaignVerdict:
    """One campaign at one tick (a whole event-time minute, epoch ms).

    Rates are per minute of event time; money is in the reporting currency.
    ``nan`` means "not known yet" (warm-up, no traffic).
    """

    campaign: str
    tick_ms: int
    warmed_up: bool
    sessions_per_minute: float
    sessions_in_window: int
    conversion_rate: float
    conversion_rate_baseline: float
    lcp_p75_ms: float
    lcp_p75_baseline_ms: float
    # latency: sequential test of a shift in log-LCP
    latency_regressed: bool
    latency_statistic: float
    latency_threshold: float
    latency_started_ms: int | None
    latency_shift: float
    # conversion: window-scan test of observed vs lag-adjusted expected conversions
    conversion_p_value: float
    conversion_observed: float
    conversion_expected: float
    conversion_ratio: float
    conversion_window_start_ms: int | None
    # money
    average_order_value: float
    slow_page_loss_per_hour: Estimate
    conversion_loss_per_hour: Estimate
    # the same scan over the last hour only (``conversion_hold_windows``): holds an open drop
    conversion_recent_p_value: float = 1.0
    # the slowdown by device while slow pages are priced (``detectors.localize``), else None
    devices: dict[str, DeviceRow] | None = None
    # the conversions by device while a shortfall is priced (``detectors.localize``), else None
    conversion_devices: dict[str, ConversionRow] | None = None
    # whether the conversion baseline knows the shop's day: a whole day of orders learned
    # (here or on another worker), so the hour of day is accounted for or known not to
    # matter; False in the shop's first day
    conversion_day_known: bool = True
    # the orders a priced conversion shortfall is missing by now, since its onset
    # (``pricing``), in money: (expected - observed) x AOV; 0 while none is priced
    conversion_lost_so_far: float = 0.0
    # the checkout funnel's scan (``detectors.funnel``): its p-value (before the campaign
    # shares its level with it), the reachers' orders in its best window against those
    # expected, and the window's first checkout minute; 1, 0, 0, None while it is cold
    checkout_p_value: float = 1.0
    checkout_observed: float = 0.0
    checkout_expected: float = 0.0
    checkout_window_start_ms: int | None = None
    # where the drop began by the test that decided the campaign's conversion p-value (the
    # first minute of its best window: the campaign's scan, a device's, or the funnel's
    # checkout minutes; ``funnel.onset_of``); None without a window (and from a worker before
    # 2026-12-07: the conversion window's start is read then)
    conversion_onset_ms: int | None = None
    # what a conversion brings: the average order value times the orders per converting
    # session; what every money figure is priced at (0 from a worker before 2026-12-07)
    revenue_per_conversion: float = 0.0
    # while slow pages are priced: the newest closed minute (``slow_page_minute_ms``) and
    # the money its sessions lose to their LCP (``revenue.slow_page_gain``), what an
    # episode's "lost" adds for that minute, each minute once; 0 and None otherwise (and
    # from an older worker, whose episodes add a minute of the risk per hour a tick)
    slow_page_lost_minute: float = 0.0
    slow_page_minute_ms: int | None = None
    # the reach scan (``detectors.reach``: sessions per start minute that reach the
    # checkout): its p-value (before the campaign shares its level with it), the checkouts
    # in its best window against those expected, and the window's first session minute; 1,
    # 0, 0, None while it is cold (and from a worker before 2026-12-08)
    reach_p_value: float = 1.0
    reach_observed: float = 0.0
    reach_expected: float = 0.0
    reach_window_start_ms: int | None = None

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(  # noqa: PLR0917 (the dataclass's positional signature)
        self, campaign: str, tick_ms: int, warmed_up: bool, sessions_per_minute: float,
        sessions_in_window: int, conversion_rate: float, conversion_rate_baseline: float,
        lcp_p75_ms: float, lcp_p75_baseline_ms: float, latency_regressed: bool,
        latency_statistic: float, latency_threshold: float, latency_started_ms: int | None,
        latency_shift: float, conversion_p_value: float, conversion_observed: float,
        conversion_expected: float, conversion_ratio: float, conversion_window_start_ms: int | None,
        average_order_value: float, slow_page_loss_per_hour: Estimate,
        conversion_loss_per_hour: Estimate, conversion_recent_p_value: float = 1.0,
        devices: dict[str, DeviceRow] | None = None,
        conversion_devices: dict[str, ConversionRow] | None = None,
        conversion_day_known: bool = True, conversion_lost_so_far: float = 0.0,
        checkout_p_value: float = 1.0, checkout_observed: float = 0.0,
        checkout_expected: float = 0.0, checkout_window_start_ms: int | None = None,
        conversion_onset_ms: int | None = None, revenue_per_conversion: float = 0.0,
        slow_page_lost_minute: float = 0.0, slow_page_minute_ms: int | None = None,
        reach_p_value: float = 1.0, reach_observed: float = 0.0, reach_expected: float = 0.0,
        reach_window_start_ms: int | None = None,
    ) -> None:
        object.__setattr__(self, "campaign", campaign)
        object.__setattr__(self, "tick_ms", int(tick_ms))
        object.__setattr__(self, "warmed_up", warmed_up)
        object.__setattr__(self, "sessions_per_minute", float(sessions_per_minute))
        object.__setattr__(self, "sessions_in_window", int(sessions_in_window))
        object.__setattr__(self, "conversion_rate", float(conversion_rate))
        object.__setattr__(self, "conversion_rate_baseline", float(conversion_rate_baseline))
        object.__setattr__(self, "lcp_p75_ms", float(lcp_p75_ms))
        object.__setattr__(self, "lcp_p75_baseline_ms", float(lcp_p75_baseline_ms))
        object.__setattr__(self, "latency_regressed", latency_regressed)
        object.__setattr__(self, "latency_statistic", float(latency_statistic))
        object.__setattr__(self, "latency_threshold", float(latency_threshold))
        object.__setattr__(self, "latency_started_ms", latency_started_ms)
        object.__setattr__(self, "latency_shift", float(latency_shift))
        object.__setattr__(self, "conversion_p_value", float(conversion_p_value))
        object.__setattr__(self, "conversion_observed", float(conversion_observed))
        object.__setattr__(self, "conversion_expected", float(conversion_expected))
        object.__setattr__(self, "conversion_ratio", float(conversion_ratio))
        object.__setattr__(self, "conversion_window_start_ms", conversion_window_start_ms)
        object.__setattr__(self, "average_order_value", float(average_order_value))
        object.__setattr__(self, "slow_page_loss_per_hour", slow_page_loss_per_hour)
        object.__setattr__(self, "conversion_loss_per_hour", conversion_loss_per_hour)
        object.__setattr__(self, "conversion_recent_p_value", float(conversion_recent_p_value))
        object.__setattr__(self, "devices", devices)
        object.__setattr__(self, "conversion_devices", conversion_devices)
        object.__setattr__(self, "conversion_day_known", bool(conversion_day_known))
        object.__setattr__(self, "conversion_lost_so_far", float(conversion_lost_so_far))
        object.__setattr__(self, "checkout_p_value", float(checkout_p_value))
        object.__setattr__(self, "checkout_observed", float(checkout_observed))
        object.__setattr__(self, "checkout_expected", float(checkout_expected))
        object.__setattr__(self, "checkout_window_start_ms", checkout_window_start_ms)
        object.__setattr__(self, "conversion_onset_ms", conversion_onset_ms)
        object.__setattr__(self, "revenue_per_conversion", float(revenue_per_conversion))
        object.__setattr__(self, "slow_page_lost_minute", float(slow_page_lost_minute))
        object.__setattr__(self, "slow_page_minute_ms", slow_page_minute_ms)
        object.__setattr__(self, "reach_p_value", float(reach_p_value))
        object.__setattr__(self, "reach_observed", float(reach_observed))
        object.__setattr__(self, "reach_expected", float(reach_expected))
        object.__setattr__(self, "reach_window_start_ms", reach_window_start_ms)

    @property
    def conversion_value(self) -> float:
        """What a conversion brings: ``revenue_per_conversion``, or for a verdict of a worker
        before it the average order value."""
        value = self.revenue_per_conversion
        return value if value > 0 else self.average_order_value

    @property
    def explained_fraction(self) -> float:
        """Share of the missing revenue that the slower pages explain (nan if none missing)."""
        missing = self.conversion_loss_per_hour.value
        if missing <= 0:
            return math.nan
        return self.slow_page_loss_per_hour.value / missing

    def to_state(self) -> dict[str, Any]:
        """``dataclasses.asdict(self)`` without its recursion and copies (one verdict per
        campaign per tick goes to the table)."""
        state = {name: getattr(self, name) for name in _FIELDS}
        for name in _ESTIMATES:
            est = state[name]
            state[name] = {"value": est.value, "low": est.low, "high": est.high}
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CampaignVerdict:
        """:meth:`to_state` back; fields this version does not know are left out (a verdict
        of a newer worker), ones it knows and the state lacks take their defaults."""
        data: dict[str, Any] = {k: (math.nan if v is None and k in _FLOATS else v)
                                for k, v in state.items() if k in _KNOWN}
        for name in _ESTIMATES:
            est = data[name]
            data[name] = Estimate(*(math.nan if est[k] is None else float(est[k])
                                    for k in ("value", "low", "high")))
        devices = data.get("devices")
        if devices is not None:
            data["devices"] = {str(name): _device_row(row) for name, row in devices.items()}
        rows = data.get("conversion_devices")
        if rows is not None:
            data["conversion_devices"] = {str(name): (float(e), float(o))
                                          for name, (e, o) in rows.items()}
        return cls(**data)


def _device_row(row: Any) -> DeviceRow:
    n, shift, se, added = (math.nan if v is None else float(v) for v in row)
    return n, shift, se, added


_ZERO = Estimate(0.0, 0.0, 0.0)
_FIELDS = tuple(f.name for f in fields(CampaignVerdict))
_KNOWN = frozenset(_FIELDS)
_ESTIMATES = ("slow_page_loss_per_hour", "conversion_loss_per_hour")

_FLOATS = frozenset({
    "sessions_per_minute", "conversion_rate", "conversion_rate_baseline", "lcp_p75_ms",
    "lcp_p75_baseline_ms", "latency_statistic", "latency_threshold", "latency_shift",
    "conversion_p_value", "conversion_observed", "conversion_expected", "conversion_ratio",
    "average_order_value", "conversion_recent_p_value", "conversion_lost_so_far",
    "checkout_p_value", "checkout_observed", "checkout_expected", "reach_p_value",
    "reach_observed", "reach_expected"})
