"""Device strata through the Monitor: where facts land, old state without strata, and the
slow-page loss of a campaign whose mobile sessions are slower and convert less anyway."""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
import pytest

from detectors.buckets import MinuteBucket
from detectors.campaign_state import model_to_state
from detectors.elasticity import N_BINS, lcp_bin
from detectors.monitor import MODEL_KEY, SEPARATOR, Monitor
from detectors.strata import CURVE_SIZE, by_stratum, fold_strata
from streams.pipeline import apply_fact
from streams.records import SessionFact

MIN = 60_000
T0 = 1_741_003_200_000
# desktop, mobile: (share, LCP median ms, conversion probability at the desktop median)
DEVICES = {"desktop": (0.4, 1_600.0, 0.10), "mobile": (0.6, 2_600.0, 0.05)}
SLOPE = -0.15  # per second, the same for both devices
AOV = 80.0


class DeviceTraffic:
    """Seeded sessions of two devices; orders 5 minutes after the session starts."""

    def __init__(self, seed: int, sessions_per_minute: float, *, devices: bool = True) -> None:
        self.rng = np.random.default_rng(seed)
        self.rate = sessions_per_minute
        self.devices = devices
        self.pending: list[tuple[int, int, float, str]] = []

    def minute(self, monitor: Monitor, minute_ms: int, lcp_factor: float = 1.0) -> None:
        r = self.rng
        for device, (share, median, p) in DEVICES.items():
            n = int(r.poisson(self.rate * share))
            starts = minute_ms + np.sort(r.integers(0, MIN, n))
            lcp = r.lognormal(math.log(median * lcp_factor), 0.45, n)
            converted = r.random(n) < p * np.exp(SLOPE * (lcp - 1_600.0) / 1000.0)
            seen = device if self.devices else None
            for i in range(n):
                monitor.observe_session("c", int(starts[i]), float(lcp[i]), True, device=seen)
                if converted[i]:
                    heapq.heappush(self.pending, (int(starts[i]) + 5 * MIN, int(starts[i]),
                                                  float(lcp[i]), device))
        while self.pending and self.pending[0][0] < minute_ms + MIN:
            ts, start, lcp_ms, device = heapq.heappop(self.pending)
            monitor.observe_order("c", start, ts, AOV, first_order=True, known_session=True,
                                  lcp_ms=lcp_ms, device=device if self.devices else None)


def true_loss_per_hour(sessions_per_minute: float, lcp_factor: float) -> float:
    """Expected revenue per hour lost to LCP x ``lcp_factor`` (large Monte Carlo)."""
    z = np.random.default_rng(0).standard_normal(2_000_000)
    lost = 0.0
    for share, median, p in DEVICES.values():
        lcp_s = median * np.exp(0.45 * z) / 1000.0
        before = p * np.exp(SLOPE * (lcp_s - 1.6))
        after = p * np.exp(SLOPE * (lcp_s * lcp_factor - 1.6))
        lost += share * float((before - after).mean())
    return sessions_per_minute * 60.0 * lost * AOV


def run(devices: bool, *, warm: int = 600, slow: int = 12) -> list[Any]:
    monitor, traffic = Monitor(), DeviceTraffic(3, 60.0, devices=devices)
    for i in range(warm):
        traffic.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
    verdicts = []
    for i in range(warm, warm + slow):
        traffic.minute(monitor, T0 + i * MIN, lcp_factor=2.0)
        verdicts.extend(monitor.advance(T0 + (i + 1) * MIN))
    return verdicts


def test_facts_land_in_their_device_stratum() -> None:
    monitor = Monitor()
    monitor.observe_session("c", T0, 2_000.0, True, device="mobile")
    monitor.observe_session("c", T0 + 1, 2_000.0, True, device="tablet")
    monitor.observe_session("c", T0 + 2, 2_000.0, True)  # unknown device: stratum 0
    monitor.observe_session("c", T0 + 3, 2_000.0, True, device="desktop")
    monitor.observe_order("c", T0, T0 + 5 * MIN, 50.0, first_order=True, known_session=True,
                          lcp_ms=2_000.0, device="mobile")
    bucket = monitor.models["c"].ring.get(T0)
    assert bucket is not None
    b = lcp_bin(2_000.0)
    assert bucket.commerce_sessions == {b + 2 * N_BINS: 1, b + 3 * N_BINS: 1, b: 1,
                                        b + N_BINS: 1}
    assert bucket.commerce_conversions == {b + 2 * N_BINS: 1}
    monitor.advance(T0 + 200 * MIN)  # matured into the curve data
    model = monitor.models["c"]
    assert model.curve_sessions.values.shape == (CURVE_SIZE,)
    assert by_stratum(model.curve_conversions.values)[2, b] > 0.0
    assert fold_strata(model.curve_sessions.values)[b] > 0.0


def test_pipeline_passes_the_device_on() -> None:
    monitor = Monitor()
    apply_fact(monitor, SessionFact("session", "c", T0, "s1", T0, lcp_ms=2_000.0,
                                    commerce=True, device="tablet"))
    bucket = monitor.models["c"].ring.get(T0)
    assert bucket is not None
    assert bucket.commerce_sessions == {lcp_bin(2_000.0) + 3 * N_BINS: 1}


def test_old_state_without_strata_restores_into_stratum_zero() -> None:
    monitor, traffic = Monitor(), DeviceTraffic(5, 20.0, devices=False)
    for i in range(200):
        traffic.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
    table = {k: v for k, v in monitor.drain_changes().items() if v is not None}
    key = f"c{SEPARATOR}{MODEL_KEY}"
    new = table[key]
    old = {k: v for k, v in new.items() if k not in ("css", "ccs")}  # as written before
    assert len(old["cs"]["v"]) == N_BINS
    restored = Monitor()
    restored.restore([*table.items(), (key, old)])
    model = restored.models["c"]
    assert model.curve_sessions.values.shape == (CURVE_SIZE,)
    assert np.array_equal(model.curve_sessions.values, monitor.models["c"].curve_sessions.values)
    assert model_to_state(model) == model_to_state(monitor.models["c"])
    # and it keeps working, now with devices
    traffic.devices = True
    for i in range(200, 340):  # past the 2 h maturing horizon
        traffic.minute(restored, T0 + i * MIN)
        assert len(restored.advance(T0 + (i + 1) * MIN)) == 1
    assert by_stratum(restored.models["c"].curve_sessions.values)[1:].sum() > 0.0


@pytest.fixture(scope="module")
def with_devices() -> list[Any]:
    return run(devices=True)


@pytest.fixture(scope="module")
def without_devices() -> list[Any]:
    return run(devices=False)


def test_stratified_slow_page_loss_is_near_the_truth(with_devices: list[Any],
                                                    without_devices: list[Any]) -> None:
    truth = true_loss_per_hour(60.0, 2.0)
    strat = with_devices[-1].slow_page_loss_per_hour
    pooled = without_devices[-1].slow_page_loss_per_hour
    assert strat.low <= truth <= strat.high
    assert abs(strat.value / truth - 1.0) < 0.15
    # the same traffic without devices: mobile's lower conversion is read as an LCP effect
    assert pooled.value > 1.2 * truth
    assert abs(strat.value - truth) < abs(pooled.value - truth)


def test_a_stored_row_keeps_a_pooled_curve_for_a_worker_from_before_the_strata() -> None:
    """A rollback reads ``"cs"``/``"cc"`` as ``N_BINS``-long vectors (the pooled curve); the
    strata travel under ``"css"``/``"ccs"`` and come back exactly."""
    monitor, traffic = Monitor(), DeviceTraffic(5, 20.0, devices=True)
    for i in range(200):
        traffic.minute(monitor, T0 + i * MIN)
        monitor.advance(T0 + (i + 1) * MIN)
    model = monitor.models["c"]
    row = model_to_state(model)
    for key, vector in (("cs", model.curve_sessions), ("cc", model.curve_conversions)):
        assert len(row[key]["v"]) == N_BINS
        assert np.allclose(row[key]["v"], fold_strata(vector.values))
        assert np.array_equal(row[key + "s"]["v"], vector.values.tolist())
    assert fold_strata(model.curve_sessions.values).sum() > 0
    assert by_stratum(model.curve_sessions.values)[2].sum() > 0  # mobile sessions learned
    restored = Monitor()
    restored.restore([(f"c{SEPARATOR}{MODEL_KEY}", row)])
    assert model_to_state(restored.models["c"]) == row


def test_a_bucket_row_keeps_folded_counts_where_a_worker_from_before_reads_them() -> None:
    """Fields 6 and 7 hold the counts per LCP bin (a worker from before the strata reads
    them); 9 and 10 the counts by stratum, which come back exactly; a 9-field row from
    before the strata restores into stratum 0."""
    bucket = MinuteBucket()
    for stratum in (1, 2, 2):
        bucket.add_session(2_000.0, True, stratum)
        bucket.add_conversion(2_000.0, True, stratum)
    row = bucket.to_state()
    b = lcp_bin(2_000.0)
    assert row[6] == [[b, 3]]
    assert row[7] == [[b, 3]]
    assert row[9] == [[b + N_BINS, 1], [b + 2 * N_BINS, 2]]
    assert MinuteBucket.from_state(row) == bucket
    old = MinuteBucket.from_state(row[:9])
    assert old.commerce_sessions == {b: 3}
    assert old.commerce_conversions == {b: 3}
