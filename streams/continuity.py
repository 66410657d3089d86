"""Every input record processed once the group owns it: no offset is jumped over.

Faust's consumer can hand a stream the records of a partition taken over from a dead
worker past a range it never delivered (seen twice in the failover test: several hundred
rum-beacons records of the taken-over partition read while the table recovery ran, dropped
by the stream, and the range then counted as acknowledged through the consumer's "gap"
bookkeeping, so the next commit jumped over it; docs/experiments/retract-rebalance.md).
:class:`OffsetGuard` sees the offsets of what a stage processes: a record past the next one
expected (the last processed + 1, or the group's committed offset for a partition not read
yet) means records were skipped. That partition's records are then left unprocessed and
unacknowledged, and the caller seeks it back to the expected offset (again after each batch
holding one), until the expected record comes again; if it has not come within ``wait_s``
(records really gone, e.g. deleted by retention) the jump is accepted and logged.

A seek can be overtaken: records Faust fetched before it are still delivered and move its
read offset past the re-read, which it then drops unseen. Each held record seeks again,
but when none comes after the last seek, nothing would; so :meth:`OffsetGuard.overdue`
names the re-reads with nothing read for ``reseek_s`` since their last seek, and the caller
seeks them again (the idle timer asks every few seconds). A worker stalled for good on one
partition was seen once in CI before this (all other partitions went on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, int]  # topic, partition


@dataclass
class OffsetGuard:
    """The next offset expected per input partition, and the re-reads under way."""

    committed: Callable[[str, int], int | None]  # the group's committed offset, if known
    wait_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    expected: dict[Key, int] = field(default_factory=dict)
    rereading: dict[Key, tuple[int, float]] = field(default_factory=dict)  # offset, deadline
    reseek_s: float = 5.0
    sought: dict[Key, float] = field(default_factory=dict)  # when each re-read last sought
    skipped: int = 0  # records left unprocessed, to be read again
    reseeks: int = 0  # seeks repeated by :meth:`overdue`
    stall_s: float = 15.0
    progress: dict[Key, tuple[int, float]] = field(default_factory=dict)  # want, since when
    unstalled: int = 0  # partitions found stalled by :meth:`stalled`

    def check(self, events: Sequence[Any]) -> tuple[list[Any], dict[Key, int]]:
        """The events to process, and the partitions to seek back (to the offset given)."""
        kept: list[Any] = []
        seeks: dict[Key, int] = {}
        now = self.clock()
        for event in events:
            message = event.message
            key = (message.topic, message.partition)
            offset: int = message.offset
            want = self.expected.get(key)
            if want is None:
                want = self.committed(*key)
            if want is not None and offset > want and self._hold(key, want, offset, now,
                                                                  seeks):
                # marked acked so that Faust's ack() of the batch returns early for it:
                # its offset never joins the acknowledged ones the commit moves past
                message.acked = True
                self.skipped += 1
                continue
            if self.rereading.pop(key, None) is not None:
                self.sought.pop(key, None)
            self.expected[key] = max(offset + 1, self.expected.get(key, 0))
            kept.append(event)
        return kept, seeks

    def _hold(self, key: Key, want: int, offset: int, now: float,
              seeks: dict[Key, int]) -> bool:
        """Whether a record past ``want`` waits for the re-read (starting one if need be)."""
        started = self.rereading.get(key)
        if started is None or started[0] != want:
            started = self.rereading[key] = (want, now + self.wait_s)
            log.error("%s/%d: record %d read while %d was expected: reading from %d again",
                      key[0], key[1], offset, want, want)
        if now < started[1]:
            # seek again at each record held: one delivered after the last seek moved the
            # consumer's read offset past the re-read, which it would drop
            seeks[key] = want
            self.sought[key] = now
            return True
        log.warning("%s/%d: records %d-%d did not come again within %.0f s: taken as gone",
                    key[0], key[1], want, offset - 1, self.wait_s)
        return False

    def overdue(self) -> dict[Key, int]:
        """The re-reads to seek again: nothing of theirs read for ``reseek_s`` since their
        last seek (it was overtaken, or lost)."""
        now = self.clock()
        due = {key: want for key, (want, _) in self.rereading.items()
               if now - self.sought.get(key, now) >= self.reseek_s}
        for key, want in due.items():
            self.sought[key] = now
            self.reseeks += 1
            log.warning("%s/%d: record %d not read again %.0f s after seeking it: seeking again",
                        key[0], key[1], want, self.reseek_s)
        return due

    def stalled(self, keys: Iterable[Key], end: Callable[[str, int], int | None]
                ) -> dict[Key, int]:
        """Partitions with records waiting (``end``: the high-water mark) whose next offset
        has not moved for ``stall_s``, each with that offset: fetching them has stopped.

        Seen in CI: after a restart, two beacon partitions of a worker stopped being
        fetched with ~1,300 records each behind, no record held, no error, while the rest
        went on (docs/RELIABILITY.md, "Offsets"). Reported at most once per ``stall_s``.
        """
        now = self.clock()
        found: dict[Key, int] = {}
        for key in keys:
            want = self.expected.get(key)
            if want is None:
                want = self.committed(*key)
            high = end(*key)
            if want is None or high is None or high <= want:
                self.progress.pop(key, None)
                continue
            since = self.progress.get(key)
            if since is None or since[0] != want:
                self.progress[key] = (want, now)
            elif now - since[1] >= self.stall_s:
                found[key] = want
                self.progress[key] = (want, now)
        self.unstalled += len(found)
        return found

    def keep_only(self, owned: Iterable[Key]) -> None:
        """Forget the partitions no longer owned (after a rebalance)."""
        keep = set(owned)
        for table in (self.expected, self.rereading, self.sought, self.progress):
            for key in [k for k in table if k not in keep]:
                del table[key]
