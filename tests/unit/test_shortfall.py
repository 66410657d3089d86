"""What a conversion drop has cost when it outlasts the tick window (``detectors.shortfall``):
the minutes that leave the window during a run of flagged ticks are banked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import lognorm

from detectors.buckets import MinuteRing
from detectors.lag import LagModel
from detectors.shortfall import ShortfallLedger
from detectors.window import TickWindow
from tests.unit.test_campaign import MIN, T0, WARM, Traffic, drive, warm

RESET = 60 * MIN


def window(tick: int, horizon: int = 5) -> TickWindow:
    """The tick window at minute ``tick`` (from T0) of a ring with a bucket every minute:
    minutes ``tick - horizon .. tick - 1``."""
    ring = MinuteRing()
    for minute in range(tick - horizon - 3, tick + 1):
        ring.bucket(T0 + minute * MIN)
    return TickWindow(ring, LagModel(), T0 + tick * MIN, horizon)


def ranged(ledger: ShortfallLedger, tick: int, first: int, per_minute: float,
           horizon: int = 5) -> float | None:
    """The ledger's figure at ``tick`` for a range of the window from index ``first``, as
    the pricing asks for it (``None``: no run)."""
    if not ledger.running(T0 + tick * MIN, RESET):
        return None
    return ledger.missing(window(tick, horizon), first, np.full(horizon - first, per_minute))


def test_outside_a_run_nothing_is_kept() -> None:
    ledger = ShortfallLedger()
    assert ranged(ledger, 10, 0, 2.0) is None
    ledger.flagged(T0 + 10 * MIN, RESET)
    assert ranged(ledger, 10 + 61, 0, 2.0) is None  # the run ended an hour after its flag
    assert (ledger.banked, ledger.range) == (0.0, {})


def test_minutes_that_leave_the_window_in_the_range_are_banked() -> None:
    ledger = ShortfallLedger()
    ledger.flagged(T0 + 10 * MIN, RESET)
    assert ranged(ledger, 10, 2, 1.0) == 3.0  # minutes 7, 8, 9
    assert ranged(ledger, 11, 1, 1.0) == 4.0  # minutes 7..10: nothing has left yet
    assert ranged(ledger, 13, 0, 1.0) == 6.0  # 8..12 in the window, 7 banked
    assert ledger.banked == 1.0
    # a tick whose range starts later: 9..12 are no longer the drop's, 8 left in the range
    assert ranged(ledger, 14, 4, 1.0) == 3.0  # 7 and 8 banked, 13 in the range
    assert ranged(ledger, 20, 0, 0.0) == 3.0  # 13 banked as it left; 9..12 never were


def test_a_new_run_starts_from_nothing() -> None:
    ledger = ShortfallLedger()
    ledger.flagged(T0, RESET)
    assert ranged(ledger, 1, 0, 1.0) == 5.0
    assert ranged(ledger, 9, 0, 1.0) == 10.0  # -4..0 banked as they left, 4..8 in the range
    ledger.flagged(T0 + 200 * MIN, RESET)  # long after: a new run
    assert ranged(ledger, 201, 3, 1.0) == 2.0


def test_the_ledger_survives_a_state_round_trip() -> None:
    ledger = ShortfallLedger()
    ledger.flagged(T0, RESET)
    ranged(ledger, 1, 0, 1.5)
    ranged(ledger, 3, 0, 1.5)
    again = ShortfallLedger.from_state(ledger.to_state())
    assert (again.last_flag_ms, again.banked, again.range) == (
        ledger.last_flag_ms, ledger.banked, ledger.range)
    assert ranged(again, 4, 0, 1.5) == ranged(ledger, 4, 0, 1.5)
    assert ShortfallLedger.from_state(None).last_flag_ms is None  # a row written before


@pytest.mark.parametrize("seed", [1, 2])
def test_a_checkout_stopped_longer_than_the_window_is_counted_whole(seed: int) -> None:
    """Orders stop for 150 minutes, longer than the 120-minute window. What the drop has
    cost at its end is the orders missing over all 150 (the truth: the traffic's rate,
    matured by the lag), not over the window's last 120 (~0.8 of it)."""
    monitor, traffic, _ = warm(seed)
    verdicts = drive(monitor, traffic, WARM, WARM + 150, conversion_factor=0.0)
    last = verdicts[-1]
    assert last.conversion_window_start_ms is not None
    orders = last.conversion_lost_so_far / last.average_order_value
    assert orders / _true_missing(traffic, 150) == pytest.approx(1.0, abs=0.12)


def _true_missing(traffic: Traffic, minutes: int) -> float:
    """Orders the sessions of the last ``minutes`` would have placed by the tick after them."""
    lcp = np.random.default_rng(0).lognormal(math.log(traffic.lcp_median_ms), traffic.lcp_sigma,
                                              1_000_000)
    rate = float(np.mean(np.minimum(traffic.rate_at_zero * np.exp(
        traffic.slope_per_s * lcp / 1000.0), 1.0)))
    ages = np.arange(minutes) + 0.5  # each minute's middle, minutes before the tick
    matured = lognorm.cdf(ages, traffic.lag_sigma, scale=traffic.lag_median_min)
    return traffic.sessions_per_minute * rate * float(matured.sum())
