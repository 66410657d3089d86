"""Issue "Reliability", item 1: a worker SIGKILLed several times during traffic loses nothing.

A real worker reads a simulated shop (about 34,000 records, 2 h of event time with a
slowdown on ``spring_sale``) played over 40 s, and is killed with SIGKILL at random moments
and restarted, three times. Afterwards the session facts, the conversion and session counts
of the campaigns table and the alert episodes must equal those of the same records run
offline with no kill (``bench/reliability.py`` has the shared helpers and the longer
version). Facts re-sent after a kill are allowed; counting them twice is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.reliability import (
    Comparison,
    compare,
    reference_for,
    run_with_kills,
    scenario_records,
)
from streams.topics import ensure_topics, revwatch_topics
from tests.integration.worker_harness import Worker, running_worker, worker_settings

pytestmark = pytest.mark.integration

FEED_S = 40.0
KILLS = 3


@pytest.fixture
def worker(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path
           ) -> Iterator[Worker]:
    settings = worker_settings(kafka_bootstrap, "crash", tmp_path / "w0", partitions=4)
    ensure_topics(kafka_bootstrap, revwatch_topics(settings))
    with running_worker(request, settings, tmp_path / "w0.log") as started:
        yield started


def explain(diff: Comparison) -> str:
    return (f"the run after {KILLS} kills differs from the no-kill reference: {diff}")


@pytest.mark.timeout(480)
async def test_sigkilled_worker_recovers_exact_counts_and_alerts_once(worker: Worker) -> None:
    records = scenario_records()
    reference = reference_for(worker.settings, records)
    assert reference.episodes.get("spring_sale"), \
        "the reference run must alert on spring_sale, or the test proves nothing"

    result, kills, timing = await run_with_kills(
        worker.settings, [worker], records, seconds=FEED_S, kills=KILLS, seed=11)
    diff = compare(reference, result)
    print(f"kills at {kills.killed_at_s} s, ready again after {kills.ready_after_s} s, "
          f"{timing}, {diff}")

    assert len(kills.killed_at_s) == KILLS
    assert all(t < 60 for t in kills.ready_after_s), f"slow recovery: {kills.ready_after_s}"
    assert (diff.missing_sessions, diff.missing_orders) == (0, 0), explain(diff)
    assert (diff.extra_sessions, diff.extra_orders) == (0, 0), explain(diff)
    assert diff.campaigns_differing == [], explain(diff)
    assert (diff.session_count_error, diff.conversion_count_error) == (0, 0), explain(diff)
    assert diff.episodes_differing == [], explain(diff)
    assert len(result.episodes["spring_sale"]) == 1, \
        f"the slowdown must be one episode, got {sorted(result.episodes['spring_sale'])}"
    assert worker.alive()

