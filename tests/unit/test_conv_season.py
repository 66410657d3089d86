"""detectors.conv_season: hour-of-day conversion factors, with known answers.

The campaign-level tests drive one campaign (``tests.unit.test_campaign.Traffic``: 40
sessions a minute, about 2.4 orders a minute) whose conversion follows a daily pattern
``1 + amp x cos(2 pi (hour - 20) / 24)`` (UTC hours: best at 20:00, worst at 08:00).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from detectors.campaign import CampaignParams
from detectors.campaign_state import model_from_state, model_to_state
from detectors.conv_season import DAY_MS, HOUR_MS, ConversionSeason, season_factors
from detectors.monitor import Monitor, MonitorParams
from detectors.verdicts import CampaignVerdict
from tests.unit.test_campaign import MIN, T0, Traffic

LEVEL = 0.02 / 16  # the per-tick alarm level before stake weights (IncidentParams)
HOURS = np.arange(24)


def daily(amp: float, hour: float | np.ndarray) -> float | np.ndarray:
    return 1.0 + amp * np.cos(2 * math.pi * (hour - 20.0) / 24.0)


def normalised(truth: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    return truth / (truth @ sessions / sessions.sum())


# -- the factors ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_factors_recover_a_known_daily_pattern(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sessions = 10_000.0 * (0.3 + 0.7 * daily(0.6, HOURS) / 1.6)  # fewer visits at night
    truth = daily(0.4, HOURS)
    conversions = rng.poisson(sessions * 0.03 * truth).astype(float)
    factors = season_factors(conversions, sessions)
    assert factors @ sessions / sessions.sum() == pytest.approx(1.0, abs=1e-12)
    error = np.log(factors) - np.log(normalised(truth, sessions))
    assert np.abs(error).max() < 0.3, error  # a slot has 90-500 conversions: sd 0.05-0.1
    assert np.sqrt(np.mean(error ** 2)) < 0.1
    raw = conversions / sessions
    assert np.sqrt(np.mean(error ** 2)) < np.sqrt(np.mean(
        (np.log(normalised(raw, sessions)) - np.log(normalised(truth, sessions))) ** 2)) + 0.01


NIGHT_AND_DAY = np.array([0.55, 0.40, 0.30, 0.30, 0.30, 0.35, 0.45, 0.55, 0.65, 0.72, 0.78,
                          0.82, 0.85, 0.87, 0.88, 0.89, 0.90, 0.92, 0.95, 0.98, 1.0, 0.95,
                          0.85, 0.70])  # the simulator's traffic by hour: few visits at night


@pytest.mark.parametrize("total", [100, 300, 1_000])
def test_noise_alone_gives_no_pattern(total: int) -> None:
    """A flat rate seen through few conversions (at 300 in all, most night slots have a
    handful): the factors stay 1 on at least 198 of 200 seeds, and never move by more than
    40% (a harmonic needs chi-square(2) > 13.8 to count; below 200 conversions, none)."""
    sessions = NIGHT_AND_DAY / NIGHT_AND_DAY.sum() * total / 0.025
    flat, worst = 0, 0.0
    for seed in range(200):
        conversions = np.random.default_rng(seed).poisson(sessions * 0.025).astype(float)
        factors = season_factors(conversions, sessions)
        flat += bool(np.all(factors == 1.0))
        worst = max(worst, float(np.abs(np.log(factors)).max()))
    assert flat >= 198
    assert worst < math.log(1.4)


def test_a_real_pattern_is_kept_from_a_few_hundred_conversions() -> None:
    truth = daily(0.4, HOURS + 0.5)
    sessions = NIGHT_AND_DAY / NIGHT_AND_DAY.sum() * 1_000 / 0.025
    for seed in range(50):
        conversions = np.random.default_rng(seed).poisson(sessions * 0.025 * truth)
        factors = season_factors(conversions.astype(float), sessions)
        assert factors[20] / factors[8] > 1.6, seed  # truth 2.32


def test_factors_are_one_until_a_whole_day_is_learned() -> None:
    season = ConversionSeason()
    rate = daily(0.5, HOURS) * 0.05
    for minute in range(0, DAY_MS, MIN):
        season.learn(T0 + minute, float(rate[((T0 + minute) % DAY_MS) // HOUR_MS] * 100), 100.0)
    assert not season.whole_day()
    assert np.array_equal(season.factors(), np.ones(24))
    season.learn(T0 + DAY_MS, 5.0, 100.0)
    assert season.whole_day()
    factors = season.factors()
    assert factors[20] / factors[8] == pytest.approx(1.5 / 0.5, rel=0.05)


def test_state_round_trip_keeps_the_factors_and_when_they_change() -> None:
    season = ConversionSeason()
    rng = np.random.default_rng(3)
    for minute in range(0, DAY_MS + 90 * MIN, MIN):
        hour = ((T0 + minute) % DAY_MS) // HOUR_MS
        season.learn(T0 + minute, float(rng.poisson(3 * daily(0.4, hour))), 60.0)
    season.factors()
    copy = ConversionSeason.from_state(season.to_state())
    assert copy == season
    assert np.array_equal(copy.factors(), season.factors())
    for twin in (season, copy):  # the next minute of the same hour keeps the factors
        twin.learn(T0 + DAY_MS + 90 * MIN, 3.0, 60.0)
    assert np.array_equal(copy.factors(), season.factors())
    assert copy == season


def test_a_campaign_row_from_before_the_factors_loads_without_them() -> None:
    monitor, traffic = Monitor(), Traffic(1)
    drive(monitor, traffic, 0, 180)
    state = model_to_state(monitor.models["c"])
    assert "cz" in state
    del state["cz"]
    model = model_from_state(state)
    assert model.season == ConversionSeason()


# -- the campaign -----------------------------------------------------------------------------

def drive(monitor: Monitor, traffic: Traffic, first: int, last: int, *, amp: float = 0.0,
          drop_from: int | None = None, drop: float = 0.5) -> list[CampaignVerdict]:
    """Minutes ``first..last-1`` from T0 with the daily pattern ``amp``, conversion times
    ``drop`` from minute ``drop_from`` on."""
    verdicts: list[CampaignVerdict] = []
    for i in range(first, last):
        minute = T0 + i * MIN
        factor = float(daily(amp, (minute % DAY_MS) / HOUR_MS))
        if drop_from is not None and i >= drop_from:
            factor *= drop
        traffic.minute(monitor, minute, conversion_factor=factor)
        verdicts.extend(monitor.advance(minute + MIN))
    return verdicts


def monitor_of(seasonal: bool) -> Monitor:
    return Monitor(MonitorParams(campaign=CampaignParams(conversion_seasonality=seasonal)))


def hot_pairs(verdicts: list[CampaignVerdict]) -> int:
    """Ticks that are the second of two in a row under the alarm level (an alarm's rule)."""
    hot = [v.conversion_p_value < LEVEL for v in verdicts]
    return sum(a and b for a, b in itertools.pairwise(hot))


DAYS_2_TO_4 = (26 * 60, 4 * 24 * 60)  # from two hours after the first whole day is learned


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_daily_conversion_pattern_is_no_drop(seed: int) -> None:
    """x0.6 at 08:00 to x1.4 at 20:00: without the factors the troughs are a drop every
    day; with them, at most a stray pair of hot ticks in two and a half days."""
    results = {}
    for seasonal in (True, False):
        monitor, traffic = monitor_of(seasonal), Traffic(seed)
        drive(monitor, traffic, 0, DAYS_2_TO_4[0], amp=0.4)
        results[seasonal] = drive(monitor, traffic, *DAYS_2_TO_4, amp=0.4)
    assert hot_pairs(results[False]) > 500
    assert hot_pairs(results[True]) <= 5
    # what the verdict calls normal is the last hour's (at 08:00 the trough's, at 20:00 the
    # peak's): the campaign's mean rate (as in test_campaign) times that hour's factor
    lcp = np.random.default_rng(0).lognormal(math.log(2.0), 0.5, 200_000)
    mean_rate = float(np.mean(0.08 * np.exp(-0.15 * lcp)))
    by_tick = {v.tick_ms: v for v in results[True]}
    for hour in (8, 20):
        verdict = by_tick[T0 + (3 * 24 + hour - 12 - 24 * (hour > 12)) * 60 * MIN]
        assert verdict.conversion_rate_baseline == pytest.approx(
            mean_rate * float(daily(0.4, hour - 0.5)), rel=0.1), hour


def first_hot(verdicts: list[CampaignVerdict]) -> int | None:
    return next((i for i, v in enumerate(verdicts) if v.conversion_p_value < LEVEL), None)


def minutes_to_catch(seed: int, *, seasonal: bool, amp: float, hour: int, factor: float
                     ) -> int | None:
    """Minutes from a drop to ``factor`` at ``hour`` (UTC) of the third day to the first
    tick under the alarm level (``None``: not within two hours)."""
    monitor, traffic = monitor_of(seasonal), Traffic(seed)
    onset = 2 * 24 * 60 + (hour - 12) * 60  # T0 is 12:00 UTC
    drive(monitor, traffic, 0, onset, amp=amp)
    return first_hot(drive(monitor, traffic, onset, onset + 120, amp=amp, drop_from=onset,
                           drop=factor))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_drop_is_still_caught_at_the_trough_and_at_the_peak(seed: int) -> None:
    """Conversion x0.3 (a checkout mostly broken), with the daily pattern: at the trough
    the campaign has 1.4 orders a minute, at the peak 3.4 (measured over seeds 1-6: 19-53
    minutes at the trough, 15-19 at the peak)."""
    trough = minutes_to_catch(seed, seasonal=True, amp=0.4, hour=8, factor=0.3)
    peak = minutes_to_catch(seed, seasonal=True, amp=0.4, hour=20, factor=0.3)
    assert trough is not None
    assert trough <= 60
    assert peak is not None
    assert peak <= 25


@pytest.mark.parametrize("seed", [1, 2])
def test_without_a_daily_pattern_nothing_changes(seed: int) -> None:
    """Flat conversion: the factors stay near 1 and a 50% drop is caught at the same minute
    as without them."""
    monitor, traffic = monitor_of(True), Traffic(seed)
    drive(monitor, traffic, 0, 3 * 24 * 60)
    factors = monitor.models["c"].season.factors()
    assert np.all(factors == 1.0), factors
    caught = [minutes_to_catch(seed, seasonal=seasonal, amp=0.0, hour=20, factor=0.5)
              for seasonal in (True, False)]
    assert caught[0] is not None
    assert abs(caught[0] - caught[1]) <= 1, caught


def slow_page_estimate(seed: int, hour: int) -> float:
    """The slow-page loss priced 10 minutes into an LCP x2 slowdown at ``hour`` (UTC) of
    the third day, with the +-40% daily pattern."""
    monitor, traffic = monitor_of(True), Traffic(seed)
    onset = 2 * 24 * 60 + (hour - 12) * 60
    drive(monitor, traffic, 0, onset, amp=0.4)
    verdicts = []
    for i in range(onset, onset + 10):
        minute = T0 + i * MIN
        traffic.minute(monitor, minute, lcp_factor=2.0,
                       conversion_factor=float(daily(0.4, (minute % DAY_MS) / HOUR_MS)))
        verdicts.extend(monitor.advance(minute + MIN))
    return verdicts[-1].slow_page_loss_per_hour.value


@pytest.mark.parametrize("seed", [1, 2])
def test_slow_pages_are_priced_at_the_hours_conversion(seed: int) -> None:
    """The curve is learned over whole days; the loss of slow pages at 08:00 is that of the
    trough's buyers (x0.6), at 20:00 that of the peak's (x1.4). The truth, as in
    ``test_campaign``: 40 sessions a minute x (p(LCP) - p(2 LCP)) x the hour's factor x 80."""
    lcp = np.random.default_rng(0).lognormal(math.log(2_000.0), 0.5, 100_000) / 1000.0
    drop = float(np.mean(0.08 * np.exp(-0.15 * lcp)) - np.mean(0.08 * np.exp(-0.3 * lcp)))
    for hour in (8, 20):
        truth = 40 * 60 * drop * 80.0 * float(daily(0.4, hour + 0.5))
        assert slow_page_estimate(seed, hour) == pytest.approx(truth, rel=0.5), hour
