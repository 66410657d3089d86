"""What a slowdown has cost: each closed minute's money counted once.

Before 2026-12-07 (night) an episode's "lost" summed a minute of the risk per hour at each
tick, and the risk per hour is priced over the last closed minutes, so the minutes of the
slowdown were counted again by the ticks after they had been backfilled, and the slow
minutes again after the slowdown ended, while they were still in the priced window: a
short slowdown read 0.98-1.73 of its truth on the demo's seeds. Now a tick adds the money
of the one minute it closes (``revenue.slow_page_gain``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors.elasticity import N_BINS
from detectors.incidents import IncidentManager
from detectors.revenue import slow_page_gain, stratified_slow_page_loss
from detectors.strata import fit_common_slope
from detectors.verdicts import CampaignVerdict, Estimate
from tests.unit.test_common_slope import _simulate
from tests.unit.test_incidents import at, run, slow, verdict


def test_the_minutes_add_up_to_the_window_price() -> None:
    """The money of each minute's sessions (counts @ gain x AOV) sums to the window's loss
    per hour times its hours, so a ledger of minutes counts what the window prices."""
    rng = np.random.default_rng(11)
    n, y, _ = _simulate(rng, 300_000)
    fit = fit_common_slope(n, y)
    assert fit is not None
    minutes = [_simulate(rng, 400, lcp_factor=1.0 + 0.3 * i)[0] for i in range(5)]
    now = np.sum(minutes, axis=0)
    window = stratified_slow_page_loss(fit, n, now, sessions_per_hour=float(now.sum()) * 60 / 5,
                                       average_order_value=80.0, aov_se=0.0)
    gain = slow_page_gain(fit, n)
    per_minute = [float(m @ gain) * 80.0 for m in minutes]
    assert window.value > 0
    assert sum(per_minute) == pytest.approx(window.value * 5 / 60, rel=1e-9)
    assert per_minute == sorted(per_minute)  # slower minutes lose more
    assert per_minute[0] == pytest.approx(0.0, abs=0.5 * per_minute[-1] / 4)  # normal: ~0


def test_the_gain_is_negative_where_pages_are_faster_and_zero_without_a_baseline() -> None:
    rng = np.random.default_rng(12)
    n, y, _ = _simulate(rng, 300_000)
    fit = fit_common_slope(n, y)
    assert fit is not None
    fast = _simulate(rng, 2_000, lcp_factor=0.5)[0]
    assert float(fast @ slow_page_gain(fit, n)) < 0
    no_phones = n.copy()
    no_phones[2 * N_BINS: 3 * N_BINS] = 0.0  # stratum 2 never seen
    assert not slow_page_gain(fit, no_phones)[2 * N_BINS: 3 * N_BINS].any()
    assert slow_page_gain(fit, n)[2 * N_BINS: 3 * N_BINS].any()
    with pytest.raises(ValueError, match="strata"):
        slow_page_gain(fit, n[: 2 * N_BINS])


def _ledgered(tick: int, minute_money: float, **overrides: Any) -> CampaignVerdict:
    """A slow verdict of a worker with the ledger: its newest closed minute is two minutes
    before the tick (``latency_delay_minutes`` 1), that minute costing ``minute_money``."""
    return slow("s", at(tick), slow_page_minute_ms=at(tick - 2),
                slow_page_lost_minute=minute_money, **overrides)


def test_an_episode_counts_each_closed_minute_once() -> None:
    """Opening, the minutes from the start to the newest closed one at the opening rate;
    then each tick its own closed minute; after the pages are fast again, the quiet ticks'
    minutes (here 0) while the risk per hour still prices the window's slow minutes."""
    manager = IncidentManager()
    ticks = [[_ledgered(i, 20.0)] for i in range(6)]
    # the slowdown is over: the window's price stays up, the new minutes cost nothing
    ticks += [[_ledgered(i, 0.0, latency_regressed=False, latency_statistic=3.0)]
              for i in range(6, 9)]
    out = run(manager, ticks)
    opening = out[0][0]
    assert opening.started_at == at(-5)
    assert opening.revenue_lost == pytest.approx(1240 / 60 * 4)  # minutes -5..-2
    assert manager.open_alerts()[0].revenue_lost == pytest.approx(1240 / 60 * 4 + 5 * 20.0)
    summed = IncidentManager()  # the same ticks priced without the ledger (an older worker)
    run(summed, [[slow("s", at(i))] for i in range(9)])
    assert summed.open_alerts()[0].revenue_lost == pytest.approx(1240 / 60 * (5 + 8))


def test_noise_below_normal_does_not_make_the_loss_negative() -> None:
    manager = IncidentManager()
    run(manager, [[_ledgered(0, 0.0, slow_page_loss_per_hour=Estimate(30.0, 0.0, 90.0))],
                  *([_ledgered(i, -50.0)] for i in range(1, 4))])
    assert manager.open_alerts()[0].revenue_lost == 0.0


def test_a_tick_without_slow_pages_priced_adds_nothing() -> None:
    """A tick whose verdict priced no slow pages (no minute) adds its zero risk."""
    manager = IncidentManager()
    run(manager, [[_ledgered(0, 20.0)], [verdict("s", at(1))], [_ledgered(2, 20.0)]])
    assert manager.open_alerts()[0].revenue_lost == pytest.approx(1240 / 60 * 4 + 20.0)


def test_the_minute_survives_the_verdict_round_trip() -> None:
    one = slow("s", at(0), slow_page_minute_ms=at(-2), slow_page_lost_minute=12.5)
    back = type(one).from_state(one.to_state())
    assert back == one
    assert (back.slow_page_minute_ms, back.slow_page_lost_minute) == (at(-2), 12.5)
    older = one.to_state()
    del older["slow_page_minute_ms"], older["slow_page_lost_minute"]
    assert type(one).from_state(older).slow_page_minute_ms is None
