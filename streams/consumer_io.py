"""What the offset guard (streams/continuity.py) asks of Faust's consumer.

They use private consumer state (``_committed_offset``, ``_gap``) of faust-streaming
0.15.3, as ``streams.app._backlog_probe`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.types import TP


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
    consumer's gap bookkeeping for them is cleared, so its commit cannot pass them."""
    if not seeks:
        return
    consumer = app.consumer
    for (topic, partition), offset in seeks.items():
        tp = TP(topic, partition)
        getattr(consumer, "_gap", {}).pop(tp, None)
        await consumer.seek(tp, offset)
