"""streams.app._backlog_probe: what the worker tells its session stage about unread records."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from faust.types import TP

from streams.app import Runtime, _backlog_probe


class FakeConsumer:
    """High-water marks as aiokafka reports them (None before the first fetch)."""

    def __init__(self, high: dict[TP, int | None], committed: dict[TP, int]) -> None:
        self.high = high
        self._committed_offset = committed

    def highwater(self, tp: TP) -> int | None:
        return self.high[tp]  # KeyError for a partition not held (aiokafka raises too)


def probe(high: dict[TP, int | None], committed: dict[TP, int] | None = None) -> Any:
    rt = SimpleNamespace(app=SimpleNamespace(consumer=FakeConsumer(high, committed or {})))
    return _backlog_probe(cast(Runtime, rt))


def test_records_past_the_last_processed_offset_are_a_backlog() -> None:
    backlog = probe({TP("beacons", 0): 10})
    assert backlog("beacons", 0, 8)
    assert not backlog("beacons", 0, 9), "offset 9 is the last record: nothing left"


def test_an_unknown_high_water_mark_or_partition_counts_as_behind() -> None:
    backlog = probe({TP("beacons", 0): None})
    assert backlog("beacons", 0, 100), "no fetch answered since the assignment"
    assert backlog("beacons", 1, 100), "not assigned (a rebalance is under way)"


def test_a_task_that_read_nothing_compares_from_the_committed_offset() -> None:
    backlog = probe({TP("orders", 2): 40, TP("orders", 3): 0, TP("orders", 4): 7},
                    committed={TP("orders", 2): 40, TP("orders", 4): 5})
    assert not backlog("orders", 2, None), "committed at the end: quiet"
    assert not backlog("orders", 3, None), "an empty partition"
    assert backlog("orders", 4, None), "offsets 5 and 6 are still to read"
