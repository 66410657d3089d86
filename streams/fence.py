"""No state written across a rebalance: a stage's batches stop at a revocation until its table
is recovered (docs/RELIABILITY.md, "Rebalances").

Faust's memory store rebuilds a table after every rebalance by reading its changelog up to
the high-water mark it saw when recovery began, over the live store, for the partitions a
worker keeps as well as the new ones. A batch that wrote the store while the recovery was
reading, with its changelog records not yet in the log, had its rows put back to older
values, and the stage was then rebuilt from them: the batch's facts were forgotten (their
offsets were committed), its retracts too, and the next write of each row made that final.
A batch of a partition handed to another worker could likewise write after the new owner
had read the changelog. With ``stream_wait_empty=False`` nothing stopped either.

:class:`WriteFence` closes when partitions are revoked; :meth:`WriteFence.drain` waits for
the batch under way, so that the caller can flush the producer before the worker rejoins
(every row it wrote is then below any high-water mark the recovery reads). Batches wait
while it is closed; it opens again when the stage has been rebuilt from the recovered table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping


class WriteFence:
    """One stage's gate: open in normal running, closed from a revocation to the reload."""

    def __init__(self, *, open_: bool = True) -> None:
        self._open = asyncio.Event()
        self._lock = asyncio.Lock()  # one batch of the stage at a time
        self.closed_at: float | None = None  # monotonic time of the last close, while closed
        if open_:
            self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def close(self) -> None:
        self._open.clear()
        self.closed_at = time.monotonic()

    def open(self) -> None:
        self._open.set()
        self.closed_at = None

    def closed_for(self) -> float:
        """Seconds since the fence closed (0 while open)."""
        if self.closed_at is None:
            return 0.0
        return time.monotonic() - self.closed_at

    async def drain(self) -> None:
        """Wait until no batch of the stage is under way (call after :meth:`close`)."""
        async with self._lock:
            pass

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Hold the stage for one batch, once the fence is open (waits while closed)."""
        while True:
            await self._open.wait()
            await self._lock.acquire()
            if self._open.is_set():
                break
            self._lock.release()  # closed while we waited for the lock: wait again
        try:
            yield
        finally:
            self._lock.release()


def fenced_longer(fences: Mapping[str, WriteFence], limit_s: float) -> dict[str, int]:
    """The fences closed for more than ``limit_s``, with their seconds closed."""
    return {name: round(f.closed_for()) for name, f in fences.items()
            if f.closed_for() > limit_s}
