"""Event-time watermarks over several inputs, held back by the slowest active one.

A worker reads many partitions (and, downstream, heartbeats from many sessionizers). Kafka
does not deliver them in step: a small topic or a fast partition is read far ahead of the
others, and a watermark taken as the plain maximum would race ahead and make every record
of the slower inputs "late". As in Flink, the watermark is the minimum over the inputs of
the latest event time each has shown; an input that has been silent for ``idle_s`` of
wall-clock time (an empty partition, a stopped worker) stops holding it back.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


class InputWatermarks:
    """Per-input maxima of event time; the watermark is their minimum over active inputs.

    >>> clock = iter([0.0, 0.0, 1.0, 100.0]).__next__
    >>> w = InputWatermarks(idle_s=30.0, clock=clock)
    >>> w.observe("p0", 1_000); w.observe("p1", 5_000); w.value()
    1000
    >>> w.value()  # p0 silent for 100 s: no longer holds the watermark back
    5000
    """

    def __init__(self, *, idle_s: float, clock: Callable[[], float]) -> None:
        if idle_s <= 0:
            msg = "idle_s must be > 0"
            raise ValueError(msg)
        self.idle_s = idle_s
        self._clock = clock
        self._latest: dict[Hashable, int] = {}
        self._seen_at: dict[Hashable, float] = {}
        self._value: int | None = None

    def observe(self, source: Hashable, event_ms: int) -> None:
        """An event of ``source`` with event time ``event_ms`` arrived now."""
        if event_ms > self._latest.get(source, -1):
            self._latest[source] = event_ms
        self._seen_at[source] = self._clock()

    def value(self) -> int | None:
        """The watermark: never decreases; None before any input."""
        now = self._clock()
        active = [ms for src, ms in self._latest.items() if now - self._seen_at[src] <= self.idle_s]
        candidate = min(active) if active else max(self._latest.values(), default=None)
        if candidate is not None and (self._value is None or candidate > self._value):
            self._value = candidate
        return self._value

    def idle(self) -> bool:
        """True when no input has spoken for ``idle_s`` (or none ever did)."""
        now = self._clock()
        return all(now - seen > self.idle_s for seen in self._seen_at.values())
