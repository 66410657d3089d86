"""Two workers share the site-wide slope through the real broker.

Each worker holds the campaigns of its facts partitions; the slope every campaign's curve
is shrunk towards is the whole site's (``detectors/site.py``): each worker sends its
partitions' slope shares to every facts partition, and fits the site on its own campaigns
plus the others' shares. Four and a half hours of the benchmark shop by day (eleven
campaigns over three of the four partitions, ~180k records) are fed in 90 s to two
workers. Each must report a site slope built from partitions of its own and shares of the
other's, resting on the conversions of the whole site as the offline replay (one process,
every campaign) counts them, and a slope within half its standard error. Three tails of 10
event-minutes after the feed let both workers refit in step with each other's latest
shares (the curves are young here: each refit moves the slope by a third of a standard
error, so workers an event-half-hour apart would differ by more). How close the shared
slope is over days is measured in ``tests/unit/test_site.py`` and by ``bench/quality.py
--workers 4 --share``.
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
from streams.settings import Settings
from streams.simulate import Record, default_scenario, generate
from streams.simulate_model import DEFAULT_START_MS, Scenario
from streams.topics import campaign_partition
from tests.integration.worker_harness import Worker, metric_value, worker_group

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

HOUR_MS = 3_600_000
# Paced (~180 event-minutes a wall minute) as live traffic is, so the two workers tick in
# step: read as one backlog, one may finish its last tick before the other's first share.
FEED_S = 90.0
# After the feed, three tails move event time on by 10 minutes each, so each worker refits
# at least twice with the other's share of the same data: however far apart the two were
# at the end of the feed (a loaded CI machine), they end in step, as live workers are.
TAILS = 3


def shop() -> Scenario:
    scenario = default_scenario(1, days=0.19, start_ms=DEFAULT_START_MS + 8 * HOUR_MS)
    assert not scenario.incidents
    return scenario


def with_tails(settings: Settings, recs: list[Record], tails: int) -> list[list[Record]]:
    """``recs``, then with 1, 2... ``tails`` tails (each 10 event-minutes after the last)."""
    runs = [list(recs)]
    for _ in range(tails):
        fed = runs[-1]
        runs.append([*fed, *tail_records(tail_messages(settings,
                                                         last_event_ms(fed) + TAIL_AFTER_MS))])
    return runs


def offline_site_fit(settings: Settings, recs: list[Record]) -> CurveFit:
    """The site fit of the replay of the same records, in one process."""
    pipeline = Pipeline.from_settings(settings)
    pipeline.play(recs)
    fit = pipeline.monitor.site_fit
    assert fit is not None, "the replay fitted no site curve"
    return fit


@pytest.fixture
def workers(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path
            ) -> Iterator[list[Worker]]:
    with worker_group(request, kafka_bootstrap, tmp_path, "site", ("a", "b"),
                      started=2) as pair:
        yield pair


async def test_two_workers_fit_the_whole_sites_slope(workers: list[Worker]) -> None:
    settings = workers[0].settings
    scenario = shop()
    recs = list(generate(scenario))
    held = {campaign_partition(c.name, settings.partitions) for c in scenario.campaigns}
    assert len(held) >= 3, "campaigns on 3 of 4 partitions: each worker holds one"
    runs = with_tails(settings, recs, TAILS)
    reference = asyncio.create_task(asyncio.to_thread(offline_site_fit, settings, runs[-1]))
    await play(settings, recs, FEED_S)
    for fed in runs[:-1]:  # each sends the next tail and waits for its last tick
        await finish(settings, fed, workers)
    whole = await reference
    se = math.sqrt(whole.cov[1][1])
    for worker in workers:
        print(worker.settings.web_port, [line for line in worker.metrics_text().splitlines()
                                         if line.startswith("revwatch_site_curve")],
              f"replay {whole.slope:.4f} +- {se:.4f}, {whole.conversions:.0f} conversions")
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
        # the whole site's conversions (a worker alone has two fifths or three fifths)
        assert converted == pytest.approx(whole.conversions, rel=0.1), where
        assert abs(slope - whole.slope) < 0.5 * se, where
