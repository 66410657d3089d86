"""Turn a campaign's evidence into money: slow-page loss and missing-conversion loss.

Thin glue between ``campaign.py`` and the statistics in ``revenue.py``: it decides when a
figure is zero (no curve, no traffic, no shortfall) and scales the conversion shortfall of
a window that is still filling (orders lag the pages) to its eventual size.
"""

from __future__ import annotations

import math

import numpy as np

from detectors.buckets import MinuteBucket
from detectors.conv_season import mean_factor
from detectors.conversion import ConversionVerdict
from detectors.elasticity import CurveFit
from detectors.localize import device_shifts
from detectors.revenue import conversion_loss, slow_page_gain, stratified_slow_page_loss
from detectors.strata import CURVE_SIZE, StrataFit, shrunk_strata_fit
from detectors.verdicts import DeviceRow, Estimate
from detectors.window import TickWindow

HOUR_MS = 3_600_000
ONSET_SUPPORT = 1.92  # chi2(1) 95% / 2: log-likelihood support of a plausible onset


def price_slow_pages(fit: StrataFit | None, baseline_mix: np.ndarray, current_mix: np.ndarray,
                     *, minutes: int, aov: float, aov_se: float) -> Estimate:
    """Revenue per hour the current sessions lose to their LCP mix, against the normal mix,
    within device strata (curve vectors of ``CURVE_SIZE``)."""
    observed = float(current_mix.sum())
    if fit is None or observed <= 0 or float(baseline_mix.sum()) <= 0 or minutes <= 0:
        return Estimate.zero()
    return stratified_slow_page_loss(fit, baseline_mix, current_mix,
                                     sessions_per_hour=observed * 60.0 / minutes,
                                     average_order_value=aov, aov_se=aov_se)


def supported_onset(expected: np.ndarray, observed: np.ndarray, last: int) -> int:
    """Where a drop began, at the earliest the data allow: of the starts ``i <= last``
    whose suffix ``[i:]`` of per-minute conversions (``observed``, against their
    lag-adjusted ``expected``) has a Poisson log-likelihood ratio of a lower rate,
    ``O log(O / E) - O + E`` (0 where ``O >= E``), within ``ONSET_SUPPORT`` of the largest
    (a 95% likelihood set for the onset of a step down), the earliest. The largest alone
    is where noise made the drop look deepest: pricing from it overstated partial drops
    (x0.5 read up to 1.7 times its loss). A stop keeps its onset: each normal minute
    before it costs its orders' worth of likelihood. 0 when no suffix falls short."""
    e = np.cumsum(expected[::-1])[::-1][:last + 1]
    o = np.cumsum(observed[::-1])[::-1][:last + 1]
    short = o < e
    ratio = np.where(short & (o > 0), o / np.where(e > 0, e, 1.0), 1.0)
    llr = np.where(short, o * np.log(ratio) - o + e, 0.0)
    best = float(llr.max()) if llr.size else 0.0
    if best <= 0.0:
        return 0
    return int(np.flatnonzero(llr >= best - ONSET_SUPPORT)[0])


def price_conversion_loss(conv: ConversionVerdict, *, tick_ms: int, window_sessions: float,
                          baseline_conversions: float, baseline_sessions: float,
                          aov: float, aov_se: float) -> Estimate:
    """Revenue per hour missing from the scan's best window, scaled to eventual orders.

    The window's expected conversions are lag-adjusted (only the share of orders that should
    have arrived by now); the shortfall priced from the counts seen so far (so the Poisson
    noise is that of the real counts) is scaled by the inverse of that share to the
    eventual shortfall of the window's sessions. ``window_sessions`` counts each session by
    its hour-of-day factor (``detectors.conv_season``), as the expected conversions do.
    """
    start = conv.window_start_ms
    if start is None or conv.expected <= conv.observed or baseline_sessions <= 0:
        return Estimate.zero()
    rate = baseline_conversions / baseline_sessions
    exposure = conv.expected / rate
    scale = window_sessions / exposure if exposure > 0 else 1.0
    hours = max((tick_ms - start) / HOUR_MS, 1.0 / 60.0)
    return conversion_loss(
        observed=conv.observed, expected=conv.expected,
        baseline_conversions=baseline_conversions, baseline_sessions=baseline_sessions,
        exposure_sessions=exposure, window_hours=hours,
        average_order_value=aov, aov_se=aov_se).scaled(scale)


def onset_window(conv: ConversionVerdict, window: TickWindow, baseline_rate: float,
                 latest_onset_ms: int) -> ConversionVerdict:
    """The shortfall to price: ``conv`` from the earliest onset of the drop its likelihood
    supports (:func:`supported_onset` over the tick's window, no later than
    ``latest_onset_ms``, i.e. at least ``price_onset_min_minutes`` old). The scan's own best
    window is the one of smallest p-value, not the drop's: a drop 20 minutes old is often
    best shown by the 30- or 60-minute window, whose normal minutes dilute its price
    (before 2026-12-07 the price was taken over at least 45 minutes, which priced a
    checkout stopped 20 minutes before at 14-48% of its loss on the demo's seeds)."""
    last = window.first_from(latest_onset_ms) - 1
    if last < 0:
        return conv
    # the tick's own arrays: F(age) at each minute's middle, times its hour's factor
    expected = window.sessions * window.weights * baseline_rate
    conversions = np.fromiter((b.conversions for b in window.buckets), float, len(window))
    first = supported_onset(expected, conversions, last)
    seen, due = float(np.add.reduce(conversions[first:])), float(np.add.reduce(expected[first:]))
    return ConversionVerdict(conv.p_value, seen, due, seen / due if due > 0 else math.nan,
                             window.minutes[first], conv.statistic)


def price_slowdown(
    current_window: list[tuple[int, MinuteBucket]], curve_sessions: np.ndarray,
    curve_conversions: np.ndarray, site_fit: CurveFit | None, factors: np.ndarray | None, *,
    aov: float, aov_se: float, ledger_minute_ms: int | None = None,
) -> tuple[Estimate, dict[str, DeviceRow], float]:
    """The slow-page loss, the slowdown by device (``detectors.localize``), both from
    the commerce landings of ``current_window`` against the learned curve data, scaled by
    the hour-of-day ``factors`` (the curve's level is the day's, these minutes' is theirs),
    and the money the sessions of ``ledger_minute_ms`` lose to their LCP (0 unless it is
    the window's newest minute): what an episode's "lost" adds for that minute."""
    current = np.zeros(CURVE_SIZE)
    for _, bucket in current_window:
        _add_commerce(current, bucket)
    if not (np.add.reduce(current) > 0 and np.add.reduce(curve_sessions) > 0):
        return Estimate.zero(), {}, 0.0  # what the pricing says without the fit
    devices = device_shifts(curve_sessions, current)
    fit = shrunk_strata_fit(curve_sessions, curve_conversions, site_fit)
    loss = price_slow_pages(fit, curve_sessions, current,
                            minutes=max(len(current_window), 1), aov=aov, aov_se=aov_se)
    minute_ms, bucket = current_window[-1]
    lost = 0.0
    if fit is not None and minute_ms == ledger_minute_ms:
        sessions = _add_commerce(np.zeros(CURVE_SIZE), bucket)
        factor = 1.0 if factors is None else mean_factor(factors, current_window[-1:])
        lost = float(sessions @ slow_page_gain(fit, curve_sessions)) * aov * factor
    if factors is None:
        return loss, devices, lost
    return loss.scaled(mean_factor(factors, current_window)), devices, lost


def _add_commerce(curve: np.ndarray, bucket: MinuteBucket) -> np.ndarray:
    """Add a minute's commerce landings to a curve vector (bin + N_BINS x stratum)."""
    for index, count in bucket.commerce_sessions.items():
        curve[index] += count
    return curve
