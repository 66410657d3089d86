"""detectors.held: a lasting change becomes the new normal; an incident is never learned.

One campaign (``tests.unit.test_campaign.Traffic``: 40 sessions a minute, about 2.4
orders a minute), its first day and two hours learned before anything changes.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.campaign import CampaignParams
from detectors.campaign_state import model_from_state, model_to_state
from detectors.ewcounts import EwVector
from detectors.held import HeldMinutes
from detectors.monitor import Monitor, MonitorParams
from detectors.strata import CURVE_SIZE, N_BINS
from detectors.verdicts import CampaignVerdict
from tests.unit.test_campaign import MIN, T0, Traffic
from tests.unit.test_conv_season import LEVEL, drive

ONSET = 26 * 60  # minutes from T0: two hours after the first whole day
HOUR = 60


def monitor_of(accept_minutes: int = 720) -> Monitor:
    return Monitor(MonitorParams(campaign=CampaignParams(accept_change_minutes=accept_minutes)))


def hot_share(verdicts: list[CampaignVerdict], first_hour: int, last_hour: int) -> float:
    """The share of the ticks under the alarm level from ``first_hour`` to ``last_hour``
    after the onset."""
    hot = [v.conversion_p_value < LEVEL for v in verdicts[first_hour * HOUR:last_hour * HOUR]]
    return float(np.mean(hot))


def lasting_drop(seed: int, accept_minutes: int) -> tuple[list[CampaignVerdict], Monitor]:
    """Conversion x0.6 from ``ONSET`` on, for 48 hours."""
    monitor, traffic = monitor_of(accept_minutes), Traffic(seed)
    drive(monitor, traffic, 0, ONSET)
    return drive(monitor, traffic, ONSET, ONSET + 48 * HOUR, drop_from=ONSET, drop=0.6), monitor


@pytest.mark.parametrize("seed", [1, 2])
def test_a_lasting_drop_becomes_the_new_normal(seed: int) -> None:
    """Measured (seed 1): under the alarm level in 73-100% of the ticks of the first 12
    hours, then learned; from 24 hours on, none. Kept out for ever (the behaviour before),
    the drop is still an alarm two days later, at the old rate."""
    learned, _ = lasting_drop(seed, 720)
    assert hot_share(learned, 0, 6) > 0.5  # an alarm first: it could have been a bug
    assert hot_share(learned, 24, 48) < 0.02
    truth = learned[0].conversion_rate_baseline * 0.6
    assert learned[-1].conversion_rate_baseline == pytest.approx(truth, rel=0.15)
    never, _ = lasting_drop(seed, 10**7)
    assert hot_share(never, 24, 48) > 0.5
    assert never[-1].conversion_rate_baseline == pytest.approx(learned[0].conversion_rate_baseline,
                                                               rel=0.05)


def test_an_incident_is_never_learned() -> None:
    """Conversion x0.3 for two hours: its flagged minutes are held, then forgotten when
    the run ends; the baseline afterwards is the one without the incident (within the
    noise of the unflagged minutes around it)."""
    rates = {}
    for factor in (1.0, 0.3):
        monitor, traffic = monitor_of(), Traffic(3)
        drive(monitor, traffic, 0, ONSET)
        drive(monitor, traffic, ONSET, ONSET + 2 * HOUR, drop_from=ONSET, drop=factor)
        after = drive(monitor, traffic, ONSET + 2 * HOUR, ONSET + 8 * HOUR)
        model = monitor.models["c"]
        assert model.held.first_ms is None  # the run ended, nothing held
        assert not model.held.accepted
        rates[factor] = after[-1].conversion_rate_baseline
    assert rates[0.3] == pytest.approx(rates[1.0], rel=0.03)


def test_a_held_run_survives_a_restart() -> None:
    monitor, traffic = monitor_of(), Traffic(4)
    drive(monitor, traffic, 0, ONSET)
    drive(monitor, traffic, ONSET, ONSET + 5 * HOUR, drop_from=ONSET, drop=0.6)
    model = monitor.models["c"]
    assert model.held.first_ms is not None
    state = model_to_state(model)
    copy = model_from_state(state, model.params)
    assert model_to_state(copy) == state
    del state["hd"]  # a row from before: nothing held
    assert model_from_state(state, model.params).held.first_ms is None


def test_merge_is_adding_the_same_counts() -> None:
    rng = np.random.default_rng(0)
    whole = EwVector(3, half_life_minutes=90.0)
    parts = [EwVector(3, half_life_minutes=90.0), EwVector(3, half_life_minutes=90.0)]
    for minute in sorted(rng.integers(0, 600, 40)):
        counts = rng.poisson(5.0, 3).astype(float)
        whole.add(T0 + int(minute) * MIN, counts)
        parts[int(minute) % 2].add(T0 + int(minute) * MIN, counts)
    empty = EwVector(3, half_life_minutes=90.0)
    empty.merge(parts[1])
    parts[0].merge(parts[1])
    parts[0].decay_to(T0 + 600 * MIN)
    whole.decay_to(T0 + 600 * MIN)
    assert np.allclose(parts[0].values, whole.values, rtol=1e-12)
    empty.merge(EwVector(3, half_life_minutes=90.0))  # an empty one adds nothing
    assert np.array_equal(empty.values, parts[1].values)


def test_orders_that_stopped_are_never_the_new_normal() -> None:
    """A checkout broken outright for a whole day is held, never learned: the baseline is
    the one from before when it is mended (the same campaign's drop to x0.6 was learned
    by the 12th hour, above). Measured: without the check it was learned at the 12th
    hour (and still an alarm: no learned rate reaches zero)."""
    monitor, traffic = monitor_of(), Traffic(1)
    drive(monitor, traffic, 0, ONSET)
    broken = drive(monitor, traffic, ONSET, ONSET + 24 * HOUR, drop_from=ONSET, drop=0.0)
    assert hot_share(broken, 18, 24) > 0.9
    held = monitor.models["c"].held
    assert not held.accepted
    assert held.first_ms is not None


def test_a_device_whose_orders_stopped_is_no_new_normal() -> None:
    """On one device: the campaign's orders fall to x0.6, that device's stop."""
    params = CampaignParams()
    learned_s, learned_c = (EwVector(CURVE_SIZE, half_life_minutes=60.0) for _ in range(2))
    learned_s.values[:] = 100.0
    learned_c.values[:] = 4.0  # every stratum and bin converts at 4%
    base = EwVector(2, half_life_minutes=60.0)
    base.values[:] = [4.0 * CURVE_SIZE, 100.0 * CURVE_SIZE]
    for phones_convert in (0.0, 0.5):
        held = HeldMinutes(params)
        held.curve_sessions.values[:] = 10.0
        held.curve_conversions.values[:] = 0.4
        held.curve_conversions.values[:N_BINS] = 0.4 * phones_convert  # stratum 0's bins
        total_c = float(held.curve_conversions.values.sum())
        held.conv.values[:] = [total_c, 10.0 * CURVE_SIZE]
        stopped = held.stopped(base, learned_s, learned_c)
        assert stopped == (phones_convert == 0.0)
    held.conv.values[:] = [0.0, 10.0 * CURVE_SIZE]  # the whole campaign's stopped
    assert held.stopped(base, learned_s, learned_c)
