"""Each device's conversion tested on its own, and one p-value for the campaign.

A checkout broken in one browser stops that device's orders outright, but in the
campaign's orders as a whole it is only a drop of that device's share: phones with 40% of
the orders make it a drop to x0.6, which takes about as long to see as any drop of that
size (docs/CONVERSION-POWER.md). Scanned on its own, the device's series shows a drop to
x0, which is seen in a fraction of the time.

The campaign's test and its devices' tests share the campaign's per-tick level by
weighted Bonferroni: the campaign's p-value is ``min(p_c / w, p_d / ((1 - w) / k))`` over
the ``k`` devices whose learned baseline is warm (``w`` = ``campaign_weight``). Each test
is valid (``detectors.conversion``), so the minimum is a valid p-value for "no drop on the
campaign nor on any device" whatever their correlation, and the false-alarm budget of the
campaign is unchanged. ``k`` depends only on the learned baselines, not on the window's
data. A drop on every device costs the campaign test a factor ``1 / w`` in its level
(``log(1 / 0.8)`` = 0.22 nats of evidence): measured, a 50% drop at 1.5 orders a minute
takes 49.4 minutes on average instead of 48.0, and the phones' orders stopping 29.7
instead of 77.7 (``bench/device_scan_power.py``, docs/STATISTICS.md).

A drop a device's test found is priced on the dropped devices alone
(``price_device_drop``), from their own landings and learned rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from detectors.conversion import ConversionVerdict, conversion_scan_rows
from detectors.pricing import price_conversion_loss
from detectors.verdicts import Estimate
from detectors.window import TickWindow

FloatArray = npt.NDArray[np.float64]


class DeviceDrop(NamedTuple):
    """A drop a device's own test found: the first minute of its window, and the device
    strata whose own scan shows a drop (p <= ``ALSO_P``), the winner first."""

    start_ms: int
    strata: tuple[int, ...]


ALSO_P = 0.05


def combine(campaign: ConversionVerdict, devices: Sequence[ConversionVerdict],
            campaign_weight: float) -> tuple[ConversionVerdict, DeviceDrop | None]:
    """The campaign's verdict with the weighted-Bonferroni p-value of it and its warm
    devices (those with a window, in stratum order), and the drop on devices when a
    device's test gives the smaller adjusted p-value (``None`` when the campaign's does).

    Without a warm device, or with ``campaign_weight`` 1, the campaign's verdict as it is.
    The verdict's other figures (observed, expected, window) stay the campaign's: they are
    what the alert reads as the campaign's conversion.
    """
    warm = [d for d in devices if d.window_start_ms is not None]
    if not warm or campaign_weight >= 1.0 or campaign.window_start_ms is None:
        return campaign, None
    p_campaign = campaign.p_value / campaign_weight
    winner = min(range(len(devices)), key=lambda i: devices[i].p_value)
    p_device = devices[winner].p_value * len(warm) / (1.0 - campaign_weight)
    start = devices[winner].window_start_ms
    if p_campaign <= p_device or start is None:
        return _with_p(campaign, p_campaign), None
    others = tuple(i for i, d in enumerate(devices) if i != winner and d.p_value <= ALSO_P)
    return _with_p(campaign, p_device), DeviceDrop(start, (winner, *others))


def price_device_drop(window: TickWindow, drop: DeviceDrop,
                      baseline: tuple[FloatArray, FloatArray], *, tick_ms: int, aov: float,
                      aov_se: float) -> tuple[Estimate, float]:
    """Revenue per hour missing on the dropped devices in the winning device's window: their
    commerce landings against their own learned rate (``baseline``: sessions and
    conversions per stratum), scaled to eventual orders (``price_conversion_loss``); and
    the money of the orders missing there by now ((expected - observed) x AOV).

    The other devices are left out: in the campaign's orders their noise would swamp a
    drop on one device (at 1.5 orders a minute, a 25-minute window's shortfall of phones
    that stopped paying is 11 +- 5 orders in the campaign's, 11 +- 1 in their own). Like
    the slow-page loss, it counts landings with an LCP (the curve data's sessions).
    """
    first = window.first_from(drop.start_ms)
    rows = list(drop.strata)
    base_sessions, base_conversions = (float(b[rows].sum()) for b in baseline)
    if first == len(window) or base_sessions <= 0:
        return Estimate.zero(), 0.0
    sessions, conversions = drop_series(window, drop, first)
    expected = float(sessions @ window.weights[first:]) * base_conversions / base_sessions
    observed = float(conversions.sum())
    ratio = observed / expected if expected > 0 else math.nan
    return price_conversion_loss(
        ConversionVerdict(0.0, observed, expected, ratio, window.minutes[first], 0.0),
        tick_ms=tick_ms, window_sessions=float(sessions @ window.season[first:]),
        baseline_conversions=base_conversions, baseline_sessions=base_sessions,
        aov=aov, aov_se=aov_se), max(expected - observed, 0.0) * aov


def drop_series(window: TickWindow, drop: DeviceDrop, first: int
                ) -> tuple[FloatArray, FloatArray]:
    """The dropped devices' commerce landings and conversions per minute from ``first``."""
    sessions, conversions = window.device_series()
    rows = list(drop.strata)
    return sessions[rows, first:].sum(axis=0), conversions[rows, first:].sum(axis=0)


def scan_campaign(
    window: TickWindow, baseline: tuple[float, float],
    device_baseline: tuple[FloatArray, FloatArray], *, windows_minutes: Sequence[int],
    hold_minutes: Sequence[int], tolerance: float, min_baseline_conversions: float,
    campaign_weight: float,
) -> tuple[ConversionVerdict, DeviceDrop | None, ConversionVerdict]:
    """The campaign's conversion scan of ``window`` over ``windows_minutes`` and over
    ``hold_minutes``, each combined with its devices' (``combine``), and the drop on
    devices. ``baseline``: the campaign's learned conversions and sessions (warm);
    ``device_baseline``: the learned sessions and conversions per device stratum.

    One ``conversion_scan_rows`` call scans the campaign (its figures are exactly those of
    ``conversion_scan``) and its devices together.
    """
    base_sessions, base_conversions = device_baseline
    warm = (base_conversions >= min_baseline_conversions) & (base_sessions > 0)
    sessions, conversions = window.sessions[None, :], window.conversions()[None, :]
    campaign_c, campaign_s = np.array([baseline[0]]), np.array([baseline[1]])
    with_devices = campaign_weight < 1.0 and bool(warm.any())
    if with_devices:
        device_sessions, device_conversions = window.device_series()
        sessions = np.concatenate((sessions, device_sessions))
        conversions = np.concatenate((conversions, device_conversions))
        campaign_c = np.concatenate((campaign_c, base_conversions))
        campaign_s = np.concatenate((campaign_s, base_sessions))
    scans, holds = conversion_scan_rows(
        window.minute_array, sessions, conversions, window.weights, campaign_c,
        campaign_s, windows_minutes=windows_minutes, tolerance=tolerance,
        min_baseline_conversions=min_baseline_conversions, hold_minutes=hold_minutes)
    if not with_devices:
        return scans[0], None, holds[0]
    combined, drop = combine(scans[0], scans[1:], campaign_weight)
    return combined, drop, combine(holds[0], holds[1:], campaign_weight)[0]


def _with_p(verdict: ConversionVerdict, p_value: float) -> ConversionVerdict:
    return ConversionVerdict(min(1.0, p_value), verdict.observed, verdict.expected,
                             verdict.ratio, verdict.window_start_ms, verdict.statistic)
