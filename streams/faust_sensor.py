"""Faust's own figures at the cost of a few integer additions per record.

``faust.sensors.prometheus`` updates labelled Prometheus counters for every message and
every event (a ``labels()`` lookup and a lock each): about 7% of a worker's time in the
worker benchmark (docs/PERFORMANCE.md section 2). :class:`LeanMonitor` keeps plain
counters instead, and :class:`FaustCollector` turns them into ``revwatch_faust_*`` series
when ``/metrics`` is scraped: events and messages (per topic), the end and committed offset
of each partition (consumer lag, the Grafana dashboard's panel) and rebalances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from time import monotonic
from typing import Any

from faust.sensors import Monitor
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class LeanMonitor(Monitor):
    """A Faust monitor that only counts per record (no timings, no per-event dicts)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.messages_received_total += 1
        self.by_topic[tp.topic] += 1

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.events_total += 1
        # read by the consumer's "stream is slow/idle" diagnostics
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                          valsize: int) -> None:
        self.messages_sent += 1

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.send_errors += 1

    def count_send_outcome(self, future: Any) -> None:
        """Done-callback of a record produced past Faust's send path (streams/app.py)."""
        if not future.cancelled() and future.exception() is not None:
            self.send_errors += 1

    @property
    def by_topic(self) -> Counter[str]:
        found = self.__dict__.get("_by_topic")
        if found is None:
            found = self.__dict__["_by_topic"] = Counter()
        return found


class FaustCollector(Collector):
    """``revwatch_faust_*`` series read from a :class:`LeanMonitor` at scrape time."""

    def __init__(self, monitor: LeanMonitor, *, name_prefix: str) -> None:
        self.monitor = monitor
        self.prefix = name_prefix

    def collect(self) -> Iterator[Metric]:
        """The same names as Faust's Prometheus sensor gives these figures."""
        m, p = self.monitor, self.prefix
        yield CounterMetricFamily(f"{p}_total_events", "Total events received",
                                  value=m.events_total)
        yield CounterMetricFamily(f"{p}_messages_received", "Total messages received",
                                  value=m.messages_received_total)
        per_topic = CounterMetricFamily(f"{p}_messages_received_per_topic",
                                        "Messages received per topic", labels=["topic"])
        for topic, count in sorted(m.by_topic.items()):
            per_topic.add_metric([topic], count)
        yield per_topic
        yield CounterMetricFamily(f"{p}_total_sent_messages", "Total messages sent",
                                  value=m.messages_sent)
        yield CounterMetricFamily(f"{p}_total_error_messages_sent", "Total error messages sent",
                                  value=m.send_errors)
        yield CounterMetricFamily(f"{p}_total_rebalances", "Total rebalances",
                                  value=m.rebalances)
        yield _offsets(f"{p}_topic_partition_end_offset", "Offset ends per topic/partition",
                       m.tp_end_offsets)
        yield _offsets(f"{p}_topic_partition_offset_commited",
                       "Offset commited per topic/partition", m.tp_committed_offsets)


def _offsets(name: str, text: str, offsets: Mapping[Any, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=["topic", "partition"])
    for tp, offset in sorted(offsets.items()):
        family.add_metric([tp.topic, str(tp.partition)], offset)
    return family
