"""streams.continuity.OffsetGuard: a record past the next one expected is not processed,
not acknowledged, and its partition is read again from the expected offset."""

from __future__ import annotations

from dataclasses import dataclass

from streams.continuity import OffsetGuard
from tests.unit.clock import Clock

T = "beacons"


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    acked: bool = False


@dataclass
class Event:
    message: Message


def batch(partition: int, first: int, last: int) -> list[Event]:
    return [Event(Message(T, partition, o)) for o in range(first, last + 1)]


def offsets(events: list[Event]) -> list[int]:
    return [e.message.offset for e in events]


def test_consecutive_records_pass_and_repeats_too() -> None:
    guard = OffsetGuard(committed=lambda topic, partition: 10)
    kept, seeks = guard.check(batch(1, 10, 12))
    assert (offsets(kept), seeks) == ([10, 11, 12], {})
    kept, seeks = guard.check(batch(1, 11, 14))  # re-read after a rebalance: repeats pass
    assert (offsets(kept), seeks, guard.expected[(T, 1)]) == ([11, 12, 13, 14], {}, 15)


def test_a_partition_taken_over_past_its_committed_offset_is_read_again() -> None:
    """The failover test's loss: committed 2052, the first records delivered from 2678."""
    clock = Clock()
    guard = OffsetGuard(committed=lambda topic, partition: 2052, clock=clock)
    first = batch(1, 2678, 2680)
    kept, seeks = guard.check(first)
    assert (kept, seeks) == ([], {(T, 1): 2052})
    assert all(e.message.acked for e in first)  # so the consumer never acknowledges them
    clock.now = 0.5
    kept, seeks = guard.check(batch(1, 2681, 2683))  # still queued from before the seek
    assert (kept, seeks, guard.skipped) == ([], {(T, 1): 2052}, 6)  # sought back again
    kept, seeks = guard.check(batch(1, 2052, 2700))  # the re-read
    assert (offsets(kept)[:2], len(kept), seeks) == ([2052, 2053], 649, {})
    assert (T, 1) not in guard.rereading


def test_records_that_do_not_come_again_are_taken_as_gone_after_the_wait() -> None:
    clock = Clock()
    guard = OffsetGuard(committed=lambda topic, partition: None, clock=clock, wait_s=10.0)
    guard.check(batch(0, 5, 6))
    kept, seeks = guard.check(batch(0, 9, 9))  # 7 and 8 missing
    assert (kept, seeks) == ([], {(T, 0): 7})
    clock.now = 11.0
    kept, seeks = guard.check(batch(0, 9, 10))  # the log starts at 9 now (retention)
    assert (offsets(kept), seeks, guard.expected[(T, 0)]) == ([9, 10], {}, 11)


def test_other_partitions_go_on_and_revoked_ones_are_forgotten() -> None:
    guard = OffsetGuard(committed=lambda topic, partition: 0)
    kept, seeks = guard.check([*batch(0, 0, 1), *batch(1, 5, 5), *batch(2, 0, 0)])
    assert (offsets(kept), seeks) == ([0, 1, 0], {(T, 1): 0})
    guard.keep_only([(T, 0)])
    assert set(guard.expected) == {(T, 0)}
    assert guard.rereading == {}


def test_a_re_read_with_nothing_read_since_its_last_seek_is_sought_again() -> None:
    """The CI stall: a seek overtaken by records fetched before it, and none held after it
    to seek again; the partition would wait for good."""
    clock = Clock()
    guard = OffsetGuard(committed=lambda topic, partition: 7871, clock=clock, reseek_s=5.0)
    kept, seeks = guard.check(batch(3, 7873, 7900))
    assert (kept, seeks) == ([], {(T, 3): 7871})
    clock.now = 4.9
    assert guard.overdue() == {}
    clock.now = 5.0
    assert guard.overdue() == {(T, 3): 7871}
    assert guard.overdue() == {}  # sought just now
    clock.now = 10.0
    assert guard.overdue() == {(T, 3): 7871}
    assert guard.reseeks == 2
    kept, _ = guard.check(batch(3, 7871, 7880))  # the re-read came: nothing left to seek
    assert len(kept) == 10
    clock.now = 20.0
    assert guard.overdue() == {}


def test_a_held_record_resets_the_reseek_clock() -> None:
    clock = Clock()
    guard = OffsetGuard(committed=lambda topic, partition: 0, clock=clock, reseek_s=5.0)
    guard.check(batch(0, 3, 3))
    clock.now = 4.0
    guard.check(batch(0, 4, 4))  # held again, sought again with the batch
    clock.now = 8.0
    assert guard.overdue() == {}
    clock.now = 9.0
    assert guard.overdue() == {(T, 0): 0}


def test_a_partition_with_records_waiting_and_no_progress_is_found_stalled() -> None:
    clock = Clock()
    committed = {1: 6950, 2: 8400}
    guard = OffsetGuard(committed=lambda topic, partition: committed[partition], clock=clock,
                        stall_s=15.0)
    ends = {(T, 1): 8313, (T, 2): 8449}
    keys = list(ends)
    guard.check(batch(2, 8400, 8448))  # partition 2 read to its end
    assert guard.stalled(keys, lambda t, p: ends[(t, p)]) == {}
    clock.now = 14.9
    assert guard.stalled(keys, lambda t, p: ends[(t, p)]) == {}
    clock.now = 15.0
    assert guard.stalled(keys, lambda t, p: ends[(t, p)]) == {(T, 1): 6950}
    assert guard.stalled(keys, lambda t, p: ends[(t, p)]) == {}  # once per stall_s
    clock.now = 20.0
    guard.check(batch(1, 6950, 7000))  # it moves again
    clock.now = 34.0
    assert guard.stalled(keys, lambda t, p: ends[(t, p)]) == {}
    assert guard.unstalled == 1


def test_no_stall_without_records_waiting_or_a_known_end() -> None:
    clock = Clock()
    guard = OffsetGuard(committed=lambda topic, partition: 10, clock=clock, stall_s=1.0)
    for now in (0.0, 5.0, 10.0):
        clock.now = now
        assert guard.stalled([(T, 0), (T, 1)], lambda t, p: 10 if p == 0 else None) == {}
