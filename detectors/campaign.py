"""One campaign's detectors, fed with session facts and ticked once per event-time minute.

``CampaignModel`` keeps the minute buckets of the last ``keep_minutes`` and what it has
learned of the campaign's normal: a seasonal baseline of log-LCP, the order-lag
distribution, the conversion rate of matured sessions, the latency-to-conversion data and
the order value. At each tick it runs the latency CUSUM on newly closed minutes, the
conversion window scan on the recent ones, and prices what it sees (``CampaignVerdict``;
the pricing is ``detectors.campaign_money``).

Learning is protected: a minute the latency test or the conversion test flags is not
learned into the baselines (the river habit of keeping anomalies out of the baseline),
unless its run of flags lasts ``accept_change_minutes``: a lasting change of conversion is
then learned as the new normal (``detectors.held``).
"""

from __future__ import annotations

import math

import numpy as np

from detectors.buckets import MINUTE_MS, MinuteBucket, MinuteRing, minute_of
from detectors.campaign_money import PLACE_CONVERSION_P, PRICE_CONVERSION_P, price_tick
from detectors.campaign_params import CampaignParams
from detectors.conv_season import ConversionSeason
from detectors.conversion import ConversionVerdict
from detectors.device_scan import DeviceDrop, scan_campaign
from detectors.elasticity import CurveFit
from detectors.ewcounts import EwVector
from detectors.funnel import Funnel, checkout_fields, combine_funnel
from detectors.held import HeldMinutes
from detectors.lag import LagModel
from detectors.latency_track import LatencyTrack
from detectors.reach import combine_reach, new_reach, reach_fields
from detectors.revenue import average_order_value, orders_per_conversion
from detectors.shortfall import ShortfallLedger
from detectors.strata import CURVE_SIZE, by_stratum, device_stratum
from detectors.verdicts import CampaignVerdict
from detectors.window import TickWindow, recent_p75, recent_rate

__all__ = ["PLACE_CONVERSION_P", "PRICE_CONVERSION_P", "CampaignModel", "CampaignParams",
           "CampaignVerdict"]

_NO_SCAN = ConversionVerdict(1.0, 0.0, 0.0, math.nan, None, 0.0)



class CampaignModel:
    """The state and detectors of one campaign (see the module docstring)."""

    def __init__(self, params: CampaignParams | None = None) -> None:
        self.params = p = params or CampaignParams()
        self.ring = MinuteRing()
        self.latency = LatencyTrack(
            shift=p.latency_shift, threshold=p.latency_threshold,
            max_excursion_minutes=p.latency_max_excursion_minutes,
            delay_minutes=p.latency_delay_minutes,
            learn_delay_minutes=p.latency_learn_delay_minutes, keep_minutes=p.keep_minutes,
            min_weight=p.min_latency_weight, default_sd_log=p.default_sd_log,
            flag_fraction=p.flag_latency_fraction)
        self.lag = LagModel(horizon_minutes=p.horizon_minutes)
        self.conv_base = EwVector(2, half_life_minutes=p.conversion_half_life_minutes)
        self.season = ConversionSeason(half_life_days=p.conversion_season_half_life_days,
                                       base_half_life_minutes=p.conversion_half_life_minutes)
        self.curve_sessions = EwVector(CURVE_SIZE, half_life_minutes=p.curve_half_life_minutes)
        self.curve_conversions = EwVector(CURVE_SIZE, half_life_minutes=p.curve_half_life_minutes)
        self.orders = EwVector(3, half_life_minutes=p.curve_half_life_minutes)
        # orders of known sessions, and how many of them were a session's first: a lost
        # conversion costs the orders a converting session places, not one order
        self.session_orders = EwVector(2, half_life_minutes=p.curve_half_life_minutes)
        self.held = HeldMinutes(p)  # flagged minutes, learned if their change lasts
        self.funnel: Funnel | None = None  # from the campaign's first checkout reacher
        self.reach: Funnel | None = None  # sessions reaching the checkout; made with the funnel
        self.last_matured_minute: int | None = None
        self.last_alarm_ms: int | None = None  # the latest tick with a latency alarm
        self.shortfall = ShortfallLedger()  # a drop's minutes that left the window
        self.last_seen_ms = 0
        self.touched: set[int] = set()  # minutes whose buckets changed since the last drain
        self.dropped: list[int] = []  # minutes whose buckets were dropped since the last drain

    # -- facts ---------------------------------------------------------------------------
    def observe_session(self, start_ms: int, lcp_ms: float | None, commerce: bool, *,
                        device: str | None = None) -> None:
        """A human session started at ``start_ms`` (its landing LCP and device, if known)."""
        minute = minute_of(start_ms)
        if self._too_old(minute):
            return
        self.ring.bucket(minute).add_session(lcp_ms, commerce, device_stratum(device))
        self.touched.add(minute)
        self.last_seen_ms = max(self.last_seen_ms, start_ms)
        if self.reach is not None:
            self.reach.observe_checkout(start_ms)  # a session that may reach the checkout

    def observe_checkout(self, checkout_ms: int, start_ms: int | None = None) -> None:
        """A session (started at ``start_ms``, when known) reached the checkout at
        ``checkout_ms`` (``detectors.funnel``, ``detectors.reach``)."""
        self.checkout_funnel().observe_checkout(checkout_ms)
        self.last_seen_ms = max(self.last_seen_ms, checkout_ms)
        if start_ms is not None and self.reach is not None:
            self.reach.observe_order(start_ms, checkout_ms)

    def retract_checkout(self, checkout_ms: int, start_ms: int | None = None) -> bool:
        """Undo :meth:`observe_checkout` while its minutes are live; False: the funnel's
        count is left as counted."""
        if start_ms is not None and self.reach is not None:
            self.reach.retract_order(start_ms, checkout_ms)
        return self.funnel is not None and self.funnel.retract_checkout(checkout_ms)

    def observe_order(self, start_ms: int, order_ts_ms: int, revenue: float, *,
                      first_order: bool, known_session: bool, lcp_ms: float | None = None,
                      commerce: bool = True, device: str | None = None,
                      checkout_ms: int | None = None) -> None:
        """An order; the first of a known session is its conversion (and, with the
        session's ``checkout_ms``, the conversion of a checkout reacher)."""
        self.orders.add(minute_of(order_ts_ms), np.array([1.0, revenue, revenue * revenue]))
        self.last_seen_ms = max(self.last_seen_ms, order_ts_ms)
        if known_session:
            self.session_orders.add(minute_of(order_ts_ms), np.array([1.0, float(first_order)]))
        if not (first_order and known_session):
            return
        if checkout_ms is not None:
            self.checkout_funnel().observe_order(checkout_ms, order_ts_ms)
        self.lag.update(max(order_ts_ms - start_ms, 0) / MINUTE_MS)
        minute = minute_of(start_ms)
        bucket = self.ring.get(minute)
        if bucket is not None:
            bucket.add_conversion(lcp_ms, commerce, device_stratum(device))
            self.touched.add(minute)

    def retract_session(self, start_ms: int, lcp_ms: float | None, commerce: bool, *,
                        device: str | None = None) -> bool:
        """Undo :meth:`observe_session` while its minute is live; False: left as counted.

        Live means in the ring and not yet matured: a matured minute has been learned from
        and a dropped or too-old one never held the session, so they keep their counts. In
        a minute the latency test has scored, the log-LCP sums stay as scored (the baseline
        learns them later; learning sums the test never saw would bias it).
        """
        minute = minute_of(start_ms)
        bucket = self._live(minute)
        if bucket is None or bucket.sessions == 0:
            return False
        keep = self.latency.retracting(minute, lcp_ms is not None)
        bucket.remove_session(lcp_ms, commerce, device_stratum(device), keep_log_sums=keep)
        self.touched.add(minute)
        if self.reach is not None:
            self.reach.retract_checkout(start_ms)
        return True

    def retract_order(self, start_ms: int, order_ts_ms: int, revenue: float, *,
                      first_order: bool, known_session: bool, lcp_ms: float | None = None,
                      commerce: bool = True, device: str | None = None,
                      checkout_ms: int | None = None) -> bool:
        """Undo :meth:`observe_order` while the session's minute is live (as
        :meth:`retract_session`); False: left as counted.

        The order-value series takes the order off at its minute as it was added (forgetting
        since then, at most a few minutes of a 3-day half-life, is not undone).
        """
        minute = minute_of(start_ms)
        bucket = self._live(minute)
        if bucket is None:
            return False
        self.orders.add(minute_of(order_ts_ms), -np.array([1.0, revenue, revenue * revenue]))
        if known_session:
            self.session_orders.add(minute_of(order_ts_ms), -np.array([1.0, float(first_order)]))
        if first_order and known_session:
            if checkout_ms is not None and self.funnel is not None:
                self.funnel.retract_order(checkout_ms, order_ts_ms)
            self.lag.revert(max(order_ts_ms - start_ms, 0) / MINUTE_MS)
            if bucket.conversions > 0:
                bucket.remove_conversion(lcp_ms, commerce, device_stratum(device))
                self.touched.add(minute)
        return True

    def _live(self, minute: int) -> MinuteBucket | None:
        return None if self._too_old(minute) else self.ring.get(minute)

    def _too_old(self, minute: int) -> bool:
        done = self.last_matured_minute
        return done is not None and minute <= done

    # -- tick ------------------------------------------------------------------------------
    def tick(self, campaign: str, tick_ms: int, site_fit: CurveFit | None) -> CampaignVerdict:
        """Close the minutes before ``tick_ms``, learn what matured, and say what we see."""
        self.latency.run(self.ring, tick_ms, self._flag)
        if self.latency.last.is_regression:
            self.last_alarm_ms = tick_ms
        self._mature(tick_ms)
        window = TickWindow(self.ring, self.lag, tick_ms, self.params.horizon_minutes,
                            self.factors())
        conversion, drop, recent = self._scan_conversion(window)
        conversion, recent, checkout, onset = combine_funnel(
            self.funnel, self.params, tick_ms, conversion, recent, drop)
        conversion, recent, reach, onset = combine_reach(
            self.reach, self.params, tick_ms, conversion, recent, onset)
        if conversion.p_value < self.params.flag_conversion_p and conversion.window_start_ms:
            # flags only: the window holds; a device's window may start before the campaign's
            start = min(conversion.window_start_ms, drop.start_ms if drop else tick_ms,
                        checkout[0].window_start_ms or tick_ms, reach.window_start_ms or tick_ms)
            self._flag(start, tick_ms)
            self.shortfall.flagged(tick_ms, self.params.conversion_hold_minutes * MINUTE_MS)
            if self.funnel is not None:
                self.funnel.flag(start, tick_ms)
        return self._verdict(campaign, window, conversion, site_fit, recent.p_value, drop,
                             (checkout[0], reach), onset)

    def _flag(self, start_ms: int, end_ms: int) -> None:
        """Keep the minutes from ``start_ms`` up to ``end_ms`` out of the baselines (the
        reach's too: slow or failing minutes are not its normal)."""
        for minute, bucket in self.ring.span(minute_of(start_ms), end_ms):
            if not bucket.flagged:
                bucket.flagged = True
                self.touched.add(minute)
        if self.reach is not None:
            self.reach.flag(start_ms, end_ms)

    def _mature(self, tick_ms: int) -> None:
        horizon = self.params.horizon_minutes * MINUTE_MS
        last = minute_of(tick_ms - horizon) - MINUTE_MS
        start = -1 if self.last_matured_minute is None else self.last_matured_minute + 1
        for minute, bucket in zip(*self.ring.span_lists(start, last + 1), strict=True):
            if not bucket.flagged:
                self._learn_matured(minute, bucket)
                if self.held.ended(minute):
                    self.held = HeldMinutes(self.params)
            else:
                self._learn_flagged(minute, bucket)
        if self.last_matured_minute is None or last > self.last_matured_minute:
            self.last_matured_minute = last
        if self.funnel is not None:
            self.funnel.mature(tick_ms, learn_flagged=self.held.accepted)
        if self.reach is not None:
            self.reach.mature(tick_ms, learn_flagged=self.held.accepted)
        self.dropped.extend(self.ring.drop_before(tick_ms - self.params.keep_minutes * MINUTE_MS))

    def _learn_flagged(self, minute: int, bucket: MinuteBucket) -> None:
        """A flagged matured minute: held, or learned once its run of flags has lasted
        (``detectors.held``)."""
        if self.held.accepted:
            self._learn_matured(minute, bucket)
            self.held.last_flagged_ms = minute
            return
        first_day = not self.season.whole_day()
        if first_day:  # the first day's troughs, flagged as drops
            self.season.learn(minute, bucket.conversions, bucket.sessions)
        self.held.hold(minute, bucket, season=not first_day)
        if self.held.due(minute) and not self.held.stopped(
                self.conv_base, self.curve_sessions, self.curve_conversions):
            held = self.held
            self.conv_base.merge(held.conv)
            self.season.merge(held.season)
            self.curve_sessions.merge(held.curve_sessions)
            self.curve_conversions.merge(held.curve_conversions)
            self.held = HeldMinutes(self.params)
            self.held.first_ms, self.held.last_flagged_ms = held.first_ms, minute
            self.held.accepted = True

    def _learn_matured(self, minute: int, bucket: MinuteBucket) -> None:
        self.conv_base.add_counts(minute, {0: bucket.conversions, 1: bucket.sessions})
        self.season.learn(minute, bucket.conversions, bucket.sessions)
        self.season.learn_base(minute, bucket.sessions)
        self.curve_sessions.add_counts(minute, bucket.commerce_sessions)
        self.curve_conversions.add_counts(minute, bucket.commerce_conversions)

    def _scan_conversion(self, window: TickWindow
                         ) -> tuple[ConversionVerdict, DeviceDrop | None, ConversionVerdict]:
        """The campaign's scan combined with its devices' (``detectors.device_scan``), the
        drop on devices when a device's test says most, and the last hour's scan (which
        holds an open drop), combined the same way."""
        p = self.params
        base_conv, base_sessions = self.baseline()
        if base_conv < p.min_baseline_conversions or not len(window):
            return _NO_SCAN, None, _NO_SCAN
        return scan_campaign(
            window, (float(base_conv), float(base_sessions)), self.device_baseline(),
            windows_minutes=p.conversion_windows, hold_minutes=p.hold_windows,
            tolerance=p.conversion_tolerance, min_baseline_conversions=p.min_baseline_conversions,
            campaign_weight=p.campaign_test_weight)

    def checkout_funnel(self) -> Funnel:
        """The campaign's funnel, made at its first checkout (``detectors.funnel``)."""
        if self.funnel is None:
            self.funnel = Funnel.of(self.params)
            self.reach = new_reach(self.params)
        return self.funnel

    # -- reporting ------------------------------------------------------------------------
    def _verdict(self, campaign: str, window: TickWindow, conv: ConversionVerdict,  # noqa: PLR0917
                 site_fit: CurveFit | None, recent_p: float, drop: DeviceDrop | None,
                 funnels: tuple[ConversionVerdict, ConversionVerdict], onset: int | None
                 ) -> CampaignVerdict:
        p = self.params
        tick_ms, buckets = window.tick_ms, window.buckets
        first_recent = window.first_from(tick_ms - p.recent_minutes * MINUTE_MS)
        recent = buckets[first_recent:]
        base_conv, base_sessions = self.baseline()
        lat = self.latency.last
        expected = self.latency.expected(tick_ms)
        return CampaignVerdict(
            campaign=campaign, tick_ms=tick_ms,
            warmed_up=bool(base_conv >= p.min_baseline_conversions),
            sessions_per_minute=float(_SUM(window.sessions[first_recent:])) / p.recent_minutes,
            sessions_in_window=int(_SUM(window.sessions)),  # whole numbers: exact sums
            conversion_rate=recent_rate(window, tick_ms - 60 * MINUTE_MS),
            conversion_rate_baseline=(base_conv / base_sessions * window.season_of(
                window.first_from(tick_ms - 60 * MINUTE_MS)) if base_sessions else math.nan),
            lcp_p75_ms=recent_p75(window, (p.p75_minutes, p.recent_minutes, 60),
                                  p.min_p75_sessions),
            lcp_p75_baseline_ms=self.latency.baseline_p75(expected),
            latency_regressed=lat.is_regression,
            latency_statistic=lat.statistic, latency_threshold=lat.threshold,
            latency_started_ms=lat.started_ms,
            latency_shift=self.latency.recent_shift(expected, recent),
            conversion_p_value=conv.p_value, conversion_observed=conv.observed,
            conversion_expected=conv.expected, conversion_ratio=conv.ratio,
            conversion_window_start_ms=conv.window_start_ms, conversion_recent_p_value=recent_p,
            conversion_day_known=not p.conversion_seasonality or self.season.day_known(),
            **price_tick(self, tick_ms, conv, site_fit, window, drop, funnels),
            **checkout_fields(funnels[0]), **reach_fields(funnels[1]), conversion_onset_ms=onset,
        )

    def baseline(self) -> tuple[float, float]:
        """The learned conversions and their (seasonal) sessions."""
        conversions, sessions = self.conv_base.values
        if self.factors() is None:
            return float(conversions), float(sessions)
        return float(conversions), float(sessions) * self.season.base_factor()

    def factors(self) -> np.ndarray | None:
        """The hour-of-day conversion factors (None before a whole day is learned and
        without a site pattern, or when the campaign is set to have none)."""
        if self.params.conversion_seasonality and self.season.in_use():
            return self.season.factors()
        return None

    def device_baseline(self) -> tuple[np.ndarray, np.ndarray]:
        """The learned commerce landings and their conversions per device stratum."""
        return (by_stratum(self.curve_sessions.values).sum(axis=1),
                by_stratum(self.curve_conversions.values).sum(axis=1))

    def last_tick_ms(self) -> int | None:
        """The tick that scored the latest closed minute (``None`` before the first)."""
        last = self.latency.last_minute
        return None if last is None else last + (self.params.latency_delay_minutes + 1) * MINUTE_MS

    def average_order_value(self) -> tuple[float, float]:
        n, total, total_sq = self.orders.values
        return average_order_value(float(total), float(total_sq), float(n))

    def orders_per_conversion(self) -> float:
        """The orders a converting session places (``revenue.orders_per_conversion``): a
        lost conversion costs the average order value times it."""
        orders, first = (float(v) for v in self.session_orders.values)
        return orders_per_conversion(orders, first)


_SUM = np.add.reduce
