"""The tunables of one campaign's model (:class:`detectors.campaign.CampaignModel`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CampaignParams"]


@dataclass(frozen=True, slots=True)
class CampaignParams:
    """Tunables of one campaign's model (all in event-time minutes unless named)."""

    latency_delay_minutes: int = 2
    latency_learn_delay_minutes: int = 15
    horizon_minutes: int = 120
    recent_minutes: int = 15
    price_minutes: int = 10
    # slow pages are priced up to this long after a latency alarm: at least the incidents'
    # ``quiet_ticks_to_resolve``, so an open latency episode keeps its price until it resolves
    price_hold_minutes: int = 10
    # a conversion shortfall is priced from the earliest onset of the drop its likelihood
    # supports (``pricing.supported_onset``), at least this long before the tick (the
    # scan's shortest window)
    price_onset_min_minutes: int = 10
    p75_minutes: int = 5
    min_p75_sessions: int = 20
    latency_shift: float = math.log(1.25)
    latency_threshold: float = 10.0
    latency_max_excursion_minutes: int = 60
    min_latency_weight: float = 60.0
    default_sd_log: float = 0.5
    conversion_tolerance: float = 0.1
    # the share of the campaign's conversion level its own test gets; the rest is shared
    # by its devices' tests (``detectors.device_scan``; 1 tests the campaign alone)
    campaign_test_weight: float = 0.8
    # the share of that level the checkout funnel's test gets when warm (``detectors.funnel``;
    # 0: no funnel test); the campaign's and its devices' tests share the rest
    funnel_test_weight: float = 0.5
    # the share of the level the reach test gets when warm (``detectors.reach``: fewer
    # sessions reaching the checkout; 0: no reach test); the tests above share the rest
    reach_test_weight: float = 0.2
    conversion_windows: tuple[int, ...] = (10, 20, 30, 60, 120)
    conversion_hold_minutes: int = 60  # the scan's windows up to this say if a drop goes on
    conversion_half_life_minutes: float = 720.0
    # hour-of-day factors of the conversion rate (``detectors.conv_season``); False: none
    conversion_seasonality: bool = True
    conversion_season_half_life_days: float = 3.0
    # flagged minutes are learned once their run of flags has lasted this long: a lasting
    # change is a new normal, not an incident (``detectors.held``)
    accept_change_minutes: int = 720
    curve_half_life_minutes: float = 4320.0
    min_baseline_conversions: float = 20.0
    flag_latency_fraction: float = 1.0
    flag_conversion_p: float = 1e-3

    def __post_init__(self) -> None:
        if self.horizon_minutes < max(self.conversion_windows):
            msg = "horizon_minutes must cover the longest conversion window"
            raise ValueError(msg)
        if self.latency_threshold <= 0 or self.min_baseline_conversions <= 0:
            msg = "thresholds must be positive"
            raise ValueError(msg)
        if not 0.0 <= self.funnel_test_weight < 1.0:
            msg = f"funnel_test_weight must be in [0, 1), got {self.funnel_test_weight!r}"
            raise ValueError(msg)
        if not 0.0 <= self.reach_test_weight < 1.0:
            msg = f"reach_test_weight must be in [0, 1), got {self.reach_test_weight!r}"
            raise ValueError(msg)
        if not 0.0 < self.campaign_test_weight <= 1.0:
            msg = f"campaign_test_weight must be in (0, 1], got {self.campaign_test_weight!r}"
            raise ValueError(msg)

    @property
    def hold_windows(self) -> tuple[int, ...]:
        """The conversion windows of at most ``conversion_hold_minutes`` (the shortest one
        if none is that short): the last hour's scan, which holds an open drop."""
        short = tuple(w for w in self.conversion_windows if w <= self.conversion_hold_minutes)
        return short or (min(self.conversion_windows),)

    @property
    def keep_minutes(self) -> int:
        return self.horizon_minutes + self.latency_learn_delay_minutes + 5
