"""Issue "Reliability", item 2: two workers share the partitions, one dies, a third joins.

Workers A and B read the simulated shop of ``bench/reliability.py`` together. A is killed
with SIGKILL and not restarted: B must take A's partitions, recover their state from the
changelogs and go on (the slowdown on ``spring_sale`` comes after the kill, so its alert
comes from a survivor). Then C joins and must get partitions of its own. At the end the
counts and the alert episodes must equal the offline no-kill reference, and no alert
update may be sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.reliability import compare, finish, play, read_back, reference_for, scenario_records
from tests.integration.worker_harness import Worker, metric_value, worker_group

pytestmark = pytest.mark.integration

# Event time runs 48 times faster than the wall clock here, so the ~10 s a dead worker holds
# its partitions are ~8 event-minutes of lag for them: well inside the 30 min a record may
# be late and still open a session (at 45 s, 27 minutes made that flaky; at 90 s, 13
# minutes split 10 sessions in one CI run on a loaded machine).
FEED_S = 150.0
KILL_AT_S = 33.0  # event time ~27 min: long before the slowdown (minute 60)
JOIN_AT_S = 83.0


@pytest.fixture
def workers(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path
            ) -> Iterator[list[Worker]]:
    """A, B (started and ready) and C (not started); all stopped at the end."""
    with worker_group(request, kafka_bootstrap, tmp_path, "failover", ("a", "b", "c"),
                      started=2) as trio:
        yield trio


@pytest.mark.timeout(480)
async def test_a_survivor_takes_over_and_a_newcomer_shares_the_load(
        workers: list[Worker]) -> None:
    a, b, c = workers
    settings = a.settings
    records = scenario_records()
    reference = reference_for(settings, records)
    assert reference.episodes.get("spring_sale"), "the reference must alert on spring_sale"

    began = time.monotonic()
    feeding = asyncio.create_task(play(settings, records, FEED_S))
    await asyncio.sleep(KILL_AT_S)
    a.kill()
    await asyncio.sleep(JOIN_AT_S - (time.monotonic() - began))
    c.start()
    c_ready_s = await asyncio.to_thread(c.wait_ready)  # /readyz: C has partitions
    await feeding
    catch_up_s = await finish(settings, records, [b, c])
    result = await read_back(settings)
    diff = compare(reference, result)
    print(f"C ready after {c_ready_s:.1f} s, caught up {catch_up_s:.1f} s after the feed, {diff}")

    assert not a.alive()
    b.assert_alive()
    c.assert_alive()
    for worker in (b, c):
        received = metric_value(worker.metrics_text(), "revwatch_faust_messages_received_total")
        assert received > 0, f"{worker.settings.web_port} read nothing\n{worker.describe()}"
    assert (diff.missing_sessions, diff.missing_orders) == (0, 0), diff
    assert (diff.extra_sessions, diff.extra_orders) == (0, 0), diff
    assert diff.campaigns_differing == [], diff
    assert diff.episodes_differing == [], diff
    assert len(result.episodes["spring_sale"]) == 1, result.episodes
    assert diff.duplicate_alert_messages == 0, f"alert updates sent twice: {diff}"
