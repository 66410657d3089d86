"""detectors.buckets and detectors.ewcounts: minute accounting, ring order, state round trips."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from detectors.buckets import MINUTE_MS, MinuteBucket, MinuteRing, minute_of
from detectors.elasticity import lcp_bin
from detectors.ewcounts import EwVector

T0 = 1_741_000_020_000  # a whole minute


def test_minute_of_floors_to_the_minute() -> None:
    assert minute_of(T0) == T0
    assert minute_of(T0 + 59_999) == T0
    assert minute_of(T0 + 60_000) == T0 + MINUTE_MS
    assert minute_of(T0 - 1) == T0 - MINUTE_MS


def test_add_session_counts_sessions_and_lcp_separately() -> None:
    bucket = MinuteBucket()
    bucket.add_session(2_000.0, commerce=True)
    bucket.add_session(None, commerce=True)  # no LCP: a session, but no latency sample
    bucket.add_session(0.0, commerce=True)  # LCP 0 is no sample either
    bucket.add_session(4_000.0, commerce=False)  # content page: not in the curve's bins
    assert (bucket.sessions, bucket.lcp_n, bucket.sketch.count) == (4, 2, 2)
    assert bucket.commerce_sessions == {lcp_bin(2_000.0): 1}
    assert bucket.mean_log == pytest.approx((math.log(2_000.0) + math.log(4_000.0)) / 2)
    assert bucket.conversions == 0


def test_add_conversion_counts_every_conversion_but_bins_only_commerce_with_lcp() -> None:
    bucket = MinuteBucket()
    bucket.add_conversion(2_600.0, commerce=True)
    bucket.add_conversion(2_600.0, commerce=True)
    bucket.add_conversion(None, commerce=True)
    bucket.add_conversion(900.0, commerce=False)
    assert bucket.conversions == 4
    assert bucket.commerce_conversions == {lcp_bin(2_600.0): 2}


def test_mean_and_var_log_match_numpy() -> None:
    rng = np.random.default_rng(5)
    lcp = rng.lognormal(math.log(2_500.0), 0.6, size=500)
    bucket = MinuteBucket()
    for value in lcp:
        bucket.add_session(float(value), commerce=True)
    logs = np.log(lcp)
    assert bucket.mean_log == pytest.approx(float(logs.mean()), rel=1e-12)
    assert bucket.var_log == pytest.approx(float(logs.var(ddof=1)), rel=1e-9)


def test_var_log_is_nan_below_two_samples_and_never_negative() -> None:
    bucket = MinuteBucket()
    assert math.isnan(bucket.mean_log)
    assert math.isnan(bucket.var_log)
    bucket.add_session(1_234.5, commerce=True)
    assert math.isnan(bucket.var_log)
    for _ in range(50):  # identical values: rounding must not give a negative variance
        bucket.add_session(1_234.5, commerce=True)
    assert bucket.var_log >= 0.0
    assert bucket.var_log == pytest.approx(0.0, abs=1e-9)


def test_bucket_state_round_trips_through_json() -> None:
    bucket = MinuteBucket()
    for lcp, commerce in ((1_800.0, True), (5_300.0, True), (700.0, False), (None, True)):
        bucket.add_session(lcp, commerce)
    bucket.add_conversion(1_800.0, commerce=True)
    bucket.flagged = True
    state = orjson.loads(orjson.dumps(bucket.to_state()))  # as the Faust table stores it
    back = MinuteBucket.from_state(state)
    assert back == bucket
    assert back.to_state() == bucket.to_state()
    assert back.var_log == bucket.var_log


def test_ring_keeps_minutes_in_order_when_they_arrive_out_of_order() -> None:
    ring = MinuteRing()
    order = [5, 2, 9, 0, 7, 3]
    for k in order:
        ring.bucket(T0 + k * MINUTE_MS).add_session(1_000.0 + k, commerce=True)
    minutes = [m for m, _ in ring.span(0, 2**62)]
    assert minutes == sorted(T0 + k * MINUTE_MS for k in order)
    assert len(ring) == len(order)
    assert ring.bucket(T0 + 5 * MINUTE_MS).sessions == 1  # the same bucket, not a new one
    assert ring.get(T0 + 4 * MINUTE_MS) is None


def test_ring_span_is_half_open() -> None:
    ring = MinuteRing()
    for k in range(5):
        ring.bucket(T0 + k * MINUTE_MS)
    inside = [m for m, _ in ring.span(T0 + MINUTE_MS, T0 + 3 * MINUTE_MS)]
    assert inside == [T0 + MINUTE_MS, T0 + 2 * MINUTE_MS]


def test_drop_before_returns_exactly_the_dropped_minutes() -> None:
    ring = MinuteRing()
    for k in (4, 1, 3, 0, 6):
        ring.bucket(T0 + k * MINUTE_MS)
    dropped = ring.drop_before(T0 + 3 * MINUTE_MS)
    assert sorted(dropped) == [T0, T0 + MINUTE_MS]
    assert [m for m, _ in ring.span(0, 2**62)] == [T0 + k * MINUTE_MS for k in (3, 4, 6)]
    assert ring.drop_before(T0 + 3 * MINUTE_MS) == []


def test_ring_restore_and_state_round_trip_keep_order_and_content() -> None:
    ring = MinuteRing()
    for k in (2, 0, 1):
        ring.bucket(T0 + k * MINUTE_MS).add_session(1_000.0 * (k + 1), commerce=True)
    state = orjson.loads(orjson.dumps(ring.to_state()))
    back = MinuteRing.from_state(state)
    assert back.to_state() == ring.to_state()
    rebuilt = MinuteRing()
    for minute, bucket in reversed(list(ring.span(0, 2**62))):  # restore in any order
        rebuilt.restore(minute, MinuteBucket.from_state(bucket.to_state()))
    assert rebuilt.to_state() == ring.to_state()


def test_ewvector_halves_per_half_life_of_event_time() -> None:
    vector = EwVector(2, half_life_minutes=30.0)
    vector.add(T0, np.array([8.0, 4.0]))
    vector.decay_to(T0 + 30 * MINUTE_MS)
    assert vector.values.tolist() == pytest.approx([4.0, 2.0])
    vector.add(T0 + 90 * MINUTE_MS, np.array([1.0, 0.0]))
    assert vector.values.tolist() == pytest.approx([1.0 + 1.0, 0.5])


def test_ewvector_never_unforgets_when_time_goes_back() -> None:
    vector = EwVector(1, half_life_minutes=10.0)
    vector.add(T0 + 10 * MINUTE_MS, np.array([2.0]))
    vector.add(T0, np.array([1.0]))  # an earlier minute: added without growing the old mass
    assert vector.values.tolist() == pytest.approx([3.0])
    vector.decay_to(T0 + 20 * MINUTE_MS)
    assert vector.values.tolist() == pytest.approx([1.5])


def test_ewvector_rejects_bad_parameters_and_round_trips() -> None:
    with pytest.raises(ValueError, match="size"):
        EwVector(0, half_life_minutes=1.0)
    with pytest.raises(ValueError, match="half_life"):
        EwVector(2, half_life_minutes=0.0)
    vector = EwVector(3, half_life_minutes=45.0)
    assert EwVector.from_state(orjson.loads(orjson.dumps(vector.to_state()))) == vector
    vector.add(T0, np.array([1.0, 2.5, 0.0]))
    back = EwVector.from_state(orjson.loads(orjson.dumps(vector.to_state())))
    assert back == vector
    back.add(T0 + 45 * MINUTE_MS, np.zeros(3))
    vector.add(T0 + 45 * MINUTE_MS, np.zeros(3))
    assert back == vector
    assert back != EwVector(3, half_life_minutes=45.0)
