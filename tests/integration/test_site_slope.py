"""Two workers share the site-wide slope through the real broker.

Each worker holds the campaigns of its facts partitions; the slope every campaign's curve
is shrunk towards is the whole site's (``detectors/site.py``): each worker sends its
partitions' slope shares to every facts partition, and fits the site on its own campaigns
plus the others' shares. Four and a half hours of the benchmark shop by day (eleven
campaigns over three of the four partitions, ~180k records) are fed in 90 s to two
workers. Each must report a site slope built from partitions of its own and shares of the
other's, resting on the conversions of the whole site as the offline replay (one process,
every campaign) counts them. The slopes are compared loosely (1.5 standard errors): while
the curves are this young each 10-minute refit moves the slope by a third of a standard
error, and a share is one refit old; how close the shared slope is, is measured in
``tests/unit/test_site.py`` and by ``bench/quality.py --workers 4 --share``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.reliability import (
    TAIL_AFTER_MS,
    finish,
    last_event_ms,
    play,
    tail_messages,
    tail_records,
)
from detectors.elasticity import CurveFit
from streams.pipeline import Pipeline
from streams.records import beacon_from_dict, order_from_dict
from streams.settings import Settings
from streams.simulate import Record, default_scenario, generate
from streams.simulate_model import DEFAULT_START_MS, Scenario
from streams.topics import campaign_partition, ensure_topics, revwatch_topics
from tests.integration.worker_harness import Worker, free_port, metric_value, worker_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

HOUR_MS = 3_600_000
# Paced (~180 event-minutes a wall minute) as live traffic is, so the two workers tick in
# step: read as one backlog, one may finish its last tick before the other's first share.
FEED_S = 90.0


def shop() -> Scenario:
    scenario = default_scenario(1, days=0.19, start_ms=DEFAULT_START_MS + 8 * HOUR_MS)
    assert not scenario.incidents
    return scenario


def offline_site_fit(settings: Settings, recs: list[Record]) -> CurveFit:
    """The site fit of the replay of the same records and tail, in one process."""
    pipeline = Pipeline.from_settings(settings)
    tail = tail_records(tail_messages(settings, last_event_ms(recs) + TAIL_AFTER_MS))
    for count, (kind, obj) in enumerate([*recs, *tail], start=1):
        if kind == "beacon":
            pipeline.beacon(beacon_from_dict(obj))
        else:
            pipeline.order(order_from_dict(obj))
        if count % 1000 == 0:
            pipeline.flush()
    pipeline.flush()
    fit = pipeline.monitor.site_fit
    assert fit is not None, "the replay fitted no site curve"
    return fit


@pytest.fixture
def workers(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path
            ) -> Iterator[list[Worker]]:
    settings = worker_settings(kafka_bootstrap, "site", tmp_path / "a", partitions=4)
    ensure_topics(kafka_bootstrap, revwatch_topics(settings))
    pair = [Worker(settings.replace(web_port=settings.web_port if name == "a" else free_port(),
                                    data_dir=tmp_path / name), tmp_path / f"{name}.log")
            for name in ("a", "b")]
    failed_before = request.session.testsfailed
    try:
        for worker in pair:
            worker.start()
        for worker in pair:
            worker.wait_ready()
        yield pair
    finally:
        for worker in pair:
            worker.stop()
        if request.session.testsfailed > failed_before:
            for worker in pair:
                print(worker.describe(lines=80))


async def test_two_workers_fit_the_whole_sites_slope(workers: list[Worker]) -> None:
    settings = workers[0].settings
    scenario = shop()
    recs = list(generate(scenario))
    held = {campaign_partition(c.name, settings.partitions) for c in scenario.campaigns}
    assert len(held) >= 3, "campaigns on 3 of 4 partitions: each worker holds one"
    reference = asyncio.create_task(asyncio.to_thread(offline_site_fit, settings, recs))
    await play(settings, recs, FEED_S)
    await finish(settings, recs, workers)
    whole = await reference
    se = math.sqrt(whole.cov[1][1])
    for worker in workers:
        print(worker.settings.web_port, [line for line in worker.metrics_text().splitlines()
                                         if line.startswith("revwatch_site_curve")])
    for worker in workers:
        text = worker.metrics_text()
        own = metric_value(text, "revwatch_site_curve_partitions", source="own")
        shared = metric_value(text, "revwatch_site_curve_partitions", source="shared")
        slope = metric_value(text, "revwatch_site_curve_slope")
        converted = metric_value(text, "revwatch_site_curve_conversions")
        where = (f"worker {worker.settings.web_port}: own {own}, shared {shared}, slope {slope}, "
                 f"{converted:.0f} conversions; replay {whole.slope:.4f} +- {se:.4f}, "
                 f"{whole.conversions:.0f} conversions")
        assert own >= 1, where
        assert shared >= 1, f"{where}: no share of the other worker arrived"
        assert own + shared <= len(held), where
        # the whole site's conversions (a worker alone has a third or two thirds of them),
        # within one refit's growth while the curves are young
        assert converted == pytest.approx(whole.conversions, rel=0.15), where
        assert abs(slope - whole.slope) < 1.5 * se, where
