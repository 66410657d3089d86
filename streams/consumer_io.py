"""What the offset guard (streams/continuity.py) asks of Faust's consumer.

They use private consumer state (``_committed_offset``, ``_gap``) of faust-streaming
0.15.3, as ``streams.app._backlog_probe`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from faust.types import TP

log = logging.getLogger(__name__)


def committed_probe(app: Any) -> Callable[[str, int], int | None]:
    """The group's committed offset of an input partition, as the consumer last knew it."""
    def committed(topic: str, partition: int) -> int | None:
        try:
            found = getattr(app.consumer, "_committed_offset", {}).get(TP(topic, partition))
        except Exception:  # no consumer yet
            return None
        return found if isinstance(found, int) else None
    return committed


async def read_again(app: Any, seeks: dict[tuple[str, int], int]) -> None:
    """Seek partitions back to records that were jumped over (streams/continuity.py); the
    consumer's gap bookkeeping for them is cleared, so its commit cannot pass them.

    ``seek_wait`` seeks in the consumer's own thread, where aiokafka's fetcher runs (Faust's
    ``seek`` changes the fetcher's state from the event loop's thread), and resets Faust's
    read offset, below which it drops records."""
    if not seeks:
        return
    consumer = app.consumer
    offsets = {TP(topic, partition): offset for (topic, partition), offset in seeks.items()}
    for tp in offsets:
        getattr(consumer, "_gap", {}).pop(tp, None)
    try:
        await consumer.seek_wait(offsets)
    except Exception as exc:  # e.g. a partition revoked meanwhile: the guard seeks again
        log.warning("seeking back to %s failed: %r", offsets, exc)


def highwater_probe(app: Any) -> Callable[[str, int], int | None]:
    """The consumer's high-water mark of a partition (None: unknown or not assigned)."""
    def end(topic: str, partition: int) -> int | None:
        try:
            found = app.consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned (any more), or no consumer yet
            return None
        return found if isinstance(found, int) else None
    return end


def fetch_again(app: Any, stalled: dict[tuple[str, int], int]) -> None:
    """Put stalled partitions back among those Faust's consumer fetches, saying what held
    them (the caller then seeks them to the offset given). Faust drops a partition from its
    fetch set while its stream buffer is full and adds it back when a read finds the
    buffer drained; a pause is Faust's during a recovery, and this runs only outside one."""
    consumer = app.consumer
    active: set[TP] | None = getattr(consumer, "_active_partitions", None)
    buffered: set[TP] = getattr(consumer, "_buffered_partitions", set())
    paused: set[TP] = getattr(consumer, "_paused_partitions", set())
    for (topic, partition), offset in stalled.items():
        tp = TP(topic, partition)
        log.warning("%s/%d: records from %d waiting, none read for a while (fetched %s, "
                    "buffer full %s, paused %s, read offset %s): fetching again from %d",
                    topic, partition, offset, active is None or tp in active, tp in buffered,
                    tp in paused, getattr(consumer, "_read_offset", {}).get(tp), offset)
        if tp in paused:
            consumer.resume_partitions({tp})
        if tp in buffered:
            consumer.on_buffer_drop(tp)
        elif active is not None:
            active.add(tp)


def assigned_partitions(app: Any) -> set[TP]:
    """The partitions Kafka gave this worker's consumer (those it owns, and any batch of a
    revocation under way still holds)."""
    try:
        return set(app.consumer.assignment())
    except Exception:  # no consumer yet
        return set()
