"""A short sustained-load run of ``bench/load.py`` against a real worker (CI-sized).

45 s of web-vitals beacon arrays at 40 requests/s (120 records/s) through the collector,
with orders straight to Kafka. Every record answered 204 must reach the beacons topic,
the collector's p99 must stay under 250 ms on this shared machine, the worker must catch
up (lag 0), and its RSS may grow only by what the live sessions hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import run_load

DURATION_S = 45.0
RATE = 40.0
MAX_RSS_GROWTH_KIB = 100 * 1024


@pytest.mark.integration
@pytest.mark.timeout(400)
async def test_sustained_load_loses_nothing_and_keeps_up(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    report = await run_load(kafka_bootstrap, tmp_path / "worker", duration_s=DURATION_S,
                            rate=RATE)
    print(report.summary())
    summary = report.summary()
    assert report.requests == int(DURATION_S * RATE), summary
    assert report.statuses == {"204": report.requests}, summary
    assert report.rate_held >= 0.95 * RATE, summary
    assert report.records_accepted == 3 * report.requests, summary
    assert report.lost == 0, summary
    assert report.p99_ms < 250, summary
    assert report.lag_zero_after_s < 60, summary
    assert report.orders_sent > 0, summary
    assert report.rss_start_kib > 0, summary
    assert report.rss_end_kib - report.rss_start_kib < MAX_RSS_GROWTH_KIB, summary
