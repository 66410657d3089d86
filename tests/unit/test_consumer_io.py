"""streams.consumer_io and its use in streams.app: a stalled partition goes back among those
fetched and is sought to its next offset; seeks run through ``seek_wait``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams import app as app_module
from streams.consumer_io import fetch_again, highwater_probe, read_again
from streams.continuity import OffsetGuard
from streams.fence import WriteFence, fenced_longer


@dataclass
class FakeConsumer:
    """The parts of Faust's consumer the repair touches, as Faust keeps them."""

    _active_partitions: set[TP] = field(default_factory=set)
    _buffered_partitions: set[TP] = field(default_factory=set)
    _paused_partitions: set[TP] = field(default_factory=set)
    _read_offset: dict[TP, int] = field(default_factory=dict)
    ends: dict[TP, int] = field(default_factory=dict)
    _gap: dict[TP, list[int]] = field(default_factory=dict)
    sought: list[dict[TP, int]] = field(default_factory=list)
    fail: bool = False

    def assignment(self) -> set[TP]:
        return set(self.ends)

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        if self.fail:
            msg = "partition not assigned"
            raise RuntimeError(msg)
        self.sought.append(dict(offsets))

    def on_buffer_drop(self, tp: TP) -> None:  # Faust's own
        if tp in self._buffered_partitions:
            self._active_partitions.add(tp)
            self._buffered_partitions.discard(tp)

    def resume_partitions(self, tps: set[TP]) -> None:
        self._active_partitions.update(tps)
        self._paused_partitions.difference_update(tps)

    def highwater(self, tp: TP) -> int:
        return self.ends[tp]


@dataclass
class FakeApp:
    consumer: FakeConsumer


def test_a_partition_left_out_of_the_fetch_set_is_put_back() -> None:
    a, b, c, d = (TP("beacons", p) for p in range(4))
    consumer = FakeConsumer(_active_partitions={a}, _buffered_partitions={b},
                            _paused_partitions={c})
    fetch_again(FakeApp(consumer), {("beacons", 1): 6950, ("beacons", 2): 7005,
                                    ("beacons", 3): 10})
    assert consumer._active_partitions == {a, b, c, d}
    assert consumer._buffered_partitions == set()
    assert consumer._paused_partitions == set()


def test_the_high_water_probe_says_none_when_unknown() -> None:
    consumer = FakeConsumer(ends={TP("beacons", 0): 42})
    end = highwater_probe(FakeApp(consumer))
    assert end("beacons", 0) == 42
    assert end("beacons", 1) is None  # KeyError inside: not assigned


def test_read_again_seeks_in_the_consumer_thread_and_clears_the_gap() -> None:
    tp = TP("beacons", 3)
    consumer = FakeConsumer(_gap={tp: [7872]})
    asyncio.run(read_again(FakeApp(consumer), {("beacons", 3): 7871}))
    assert consumer.sought == [{tp: 7871}]
    assert consumer._gap == {}
    consumer.fail = True  # a failed seek is logged; the guard seeks again later
    asyncio.run(read_again(FakeApp(consumer), {("beacons", 3): 7871}))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_batch_finds_a_stalled_partition_and_seeks_it() -> None:
    """The wiring in streams.app._guarded: every batch, and the idle timer's empty ones, ask
    the guard about every partition Kafka assigned, and stalled ones are fetched again."""
    one, three = TP("facts", 1), TP("facts", 3)
    consumer = FakeConsumer(_active_partitions={one}, _buffered_partitions={three},
                            ends={one: 48, three: 155})
    clock = Clock()
    guard = OffsetGuard(committed=lambda topic, partition: {1: 48, 3: 100}[partition],
                        clock=clock, stall_s=15.0)
    rt: Any = SimpleNamespace(app=FakeApp(consumer), guards={"campaigns": guard},
                              topics={"facts": SimpleNamespace(topics=("facts",))})
    assert app_module._guarded(rt, "campaigns", []) == ([], {})
    clock.now = 15.0
    assert app_module._guarded(rt, "campaigns", []) == ([], {("facts", 3): 100})
    assert three in consumer._active_partitions


def test_a_fence_closed_too_long_is_named() -> None:
    async def scenario() -> dict[str, int]:
        fences = {"sessions": WriteFence(), "campaigns": WriteFence()}
        fences["sessions"].close()
        assert fenced_longer(fences, 30.0) == {}
        assert fences["sessions"].closed_at is not None
        fences["sessions"].closed_at -= 31.0
        late = fenced_longer(fences, 30.0)
        fences["sessions"].open()
        assert fenced_longer(fences, 0.0) == {}
        return late

    assert asyncio.run(scenario()) == {"sessions": 31}
