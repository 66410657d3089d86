"""Orders that arrive ahead of the watermark wait until event time reaches them.

When a worker works through a backlog, Kafka hands it the small ``orders`` topic long before
the beacons of the same hours. Applied at once, such an order would open a beacon-less
session that expires (and turns into an orphan order) before its beacons are read. Held
here until the watermark reaches the order's time, it meets its session as it would have
live. Held orders are part of the session table (keys with ``PREFIX``), so a crash loses
none of them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from streams.records import Order, order_from_dict

PREFIX = "~early~"


class EarlyOrders:
    """A time-ordered buffer of orders, with the table changes it needs."""

    def __init__(self, margin_ms: int = 5 * 60_000) -> None:
        self.margin_ms = margin_ms
        self._heap: list[tuple[int, int, Order]] = []
        self._seq = itertools.count()
        self.changes: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def is_early(self, order: Order, watermark_ms: int | None) -> bool:
        return watermark_ms is None or order.ts > watermark_ms + self.margin_ms

    def hold(self, order: Order) -> None:
        heapq.heappush(self._heap, (order.ts, next(self._seq), order))
        self.changes[PREFIX + order.order_id] = {"o": asdict(order)}

    def release(self, watermark_ms: int | None) -> list[Order]:
        """Orders now within ``margin_ms`` of the watermark, oldest first."""
        out: list[Order] = []
        while self._heap and watermark_ms is not None \
                and self._heap[0][0] <= watermark_ms + self.margin_ms:
            order = heapq.heappop(self._heap)[2]
            self.changes[PREFIX + order.order_id] = None
            out.append(order)
        return out

    def drain_changes(self) -> dict[str, Any]:
        changes, self.changes = self.changes, {}
        return changes

    def restore(self, items: Iterable[tuple[str, Any]]) -> None:
        for key, value in items:
            if key.startswith(PREFIX) and value is not None:
                order = order_from_dict(value["o"])
                heapq.heappush(self._heap, (order.ts, next(self._seq), order))

