"""streams.faust_sensor: Faust's figures from plain counters, exported at scrape time."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from streams.faust_sensor import FaustCollector, LeanMonitor


def sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def test_sends_past_faust_are_counted_with_their_failures() -> None:
    monitor = LeanMonitor()
    registry = CollectorRegistry()
    registry.register(FaustCollector(monitor, name_prefix="revwatch_faust"))
    loop = asyncio.new_event_loop()
    try:
        futures = [loop.create_future() for _ in range(3)]
        for future in futures:
            monitor.messages_sent += 1
            future.add_done_callback(monitor.count_send_outcome)
        futures[0].set_result(None)
        futures[1].set_exception(RuntimeError("broker refused"))
        futures[2].cancel()
        loop.run_until_complete(asyncio.sleep(0))  # run the done-callbacks
    finally:
        loop.close()
    assert sample(registry, "revwatch_faust_total_sent_messages_total") == 3
    assert sample(registry, "revwatch_faust_total_error_messages_sent_total") == 1
