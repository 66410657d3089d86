"""Faust tables as write-behind stores for the pure state machines.

The sessionizer and the monitor keep their live state in memory and report what changed
after each batch; :func:`write_changes` writes exactly those keys to the table (store and
changelog), on the partition that owns them, with no per-event table write. This is the
pattern FAUST-NOTES.md measured as several times faster than writing per event; it uses
``Table.send_changelog`` (public in faust-streaming 0.15.3, pinned) instead of the
"current event" machinery that table assignment needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

JsonValue = Any


def write_changes(table: Any, changes: Mapping[str, JsonValue | None],
                  partition_of: Callable[[str], int | None]) -> int:
    """Write ``changes`` (value None = delete) to ``table``; return how many were written."""
    written = 0
    for key, value in changes.items():
        partition = partition_of(key)
        if partition is None:
            continue
        if value is None:
            table.data.pop(key, None)
            table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            table.data[key] = value
            table.send_changelog(partition, key, value)
        written += 1
    return written


def table_items(table: Any) -> Iterable[tuple[str, JsonValue]]:
    """Every (key, value) the table holds for this worker's active partitions."""
    return list(table.data.items())
