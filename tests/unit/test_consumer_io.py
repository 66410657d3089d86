"""streams.consumer_io.fetch_again: a stalled partition goes back among those fetched."""

from __future__ import annotations

from dataclasses import dataclass, field

from faust.types import TP

from streams.consumer_io import fetch_again, highwater_probe


@dataclass
class FakeConsumer:
    """The parts of Faust's consumer the repair touches, as Faust keeps them."""

    _active_partitions: set[TP] = field(default_factory=set)
    _buffered_partitions: set[TP] = field(default_factory=set)
    _paused_partitions: set[TP] = field(default_factory=set)
    _read_offset: dict[TP, int] = field(default_factory=dict)
    ends: dict[TP, int] = field(default_factory=dict)

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
