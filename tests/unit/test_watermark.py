"""streams.watermark.InputWatermarks: minimum over active inputs, idleness, monotone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.watermark import InputWatermarks


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_none_before_any_input() -> None:
    assert InputWatermarks(idle_s=5.0, clock=Clock()).value() is None


def test_minimum_over_inputs_of_each_inputs_latest_event_time() -> None:
    w = InputWatermarks(idle_s=5.0, clock=Clock())
    w.observe("p0", 3_000)
    w.observe("p0", 1_000)  # out of order inside p0: its latest stays 3000
    w.observe("p1", 2_000)
    assert w.value() == 2_000
    w.observe("p1", 9_000)
    assert w.value() == 3_000
    w.observe(("topic", 2), 10_000)  # any hashable names an input
    assert w.value() == 3_000


def test_a_silent_input_stops_holding_back_after_idle_seconds() -> None:
    clock = Clock()
    w = InputWatermarks(idle_s=5.0, clock=clock)
    w.observe("slow", 1_000)
    w.observe("fast", 8_000)
    clock.now = 5.0
    assert w.value() == 1_000  # silent exactly idle_s: still active
    w.observe("fast", 9_000)
    clock.now = 5.5
    assert w.value() == 9_000
    w.observe("slow", 2_000)  # back, behind: the watermark does not go back
    assert w.value() == 9_000
    w.observe("slow", 12_000)
    w.observe("fast", 11_000)
    assert w.value() == 11_000


def test_all_inputs_idle_gives_the_largest_seen() -> None:
    clock = Clock()
    w = InputWatermarks(idle_s=1.0, clock=clock)
    w.observe("a", 4_000)
    w.observe("b", 7_000)
    clock.now = 100.0
    assert w.value() == 7_000


def test_rejects_non_positive_idle() -> None:
    with pytest.raises(ValueError, match="idle_s"):
        InputWatermarks(idle_s=0.0, clock=Clock())


events = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 10**6),
                            st.floats(0.0, 3.0)), max_size=60)


@given(events)
def test_value_never_decreases_and_never_exceeds_the_largest_event(
        stream: list[tuple[str, int, float]]) -> None:
    clock = Clock()
    w = InputWatermarks(idle_s=2.0, clock=clock)
    last: int | None = None
    latest: dict[str, int] = {}
    for source, event_ms, wait in stream:
        clock.now += wait
        w.observe(source, event_ms)
        latest[source] = max(latest.get(source, -1), event_ms)
        value = w.value()
        assert value is not None
        assert last is None or value >= last
        assert value <= max(latest.values())
        assert value >= min(latest.values())
        last = value


def test_idle_when_every_input_is_silent_for_longer_than_idle_s() -> None:
    clock = Clock()
    w = InputWatermarks(idle_s=10.0, clock=clock)
    assert w.idle(), "no input ever spoke"
    w.observe("a", 1_000)
    clock.now = 5.0
    w.observe("b", 2_000)
    clock.now = 12.0  # a silent 12 s, b 7 s
    assert not w.idle()
    clock.now = 15.5
    assert w.idle()
