"""Faust tables as write-behind stores for the pure state machines.

The sessionizer and the monitor keep their live state in memory and report what changed
after each batch; :func:`write_changes` writes exactly those keys to the table's store and
returns the changelog messages, on the partition that owns each key, with no per-event
table write. This is the pattern FAUST-NOTES.md measured as several times faster than
writing per event. The caller produces the messages with the app's producer (Faust's
``Producer.send``): ``Table.send_changelog`` built a ``FutureMessage`` and went through
Faust's producer buffer per key, several times the cost of the message itself. The
consumer flushes that producer before it commits offsets, as it did with the buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping
from typing import Any

import orjson
from faust.utils import json as faust_json

JsonValue = Any


ChangelogRecord = tuple[int, bytes, bytes | None]
"""(partition, key, value) of one changelog message; value None deletes the key."""


def write_changes(table: Any, changes: Mapping[str, JsonValue | None],
                  partition_of: Callable[[str], int | None],
                  owned: Collection[int] | None = None) -> list[ChangelogRecord]:
    """Write ``changes`` (value None = delete) to ``table``'s store; return the changelog
    messages that make them durable, for the caller to produce (:func:`changelog_topic`).

    A key's partition is ``partition_of(key)``, else the one the table last saw it on
    (restored keys). The store remembers the partition of every key written here, so a
    rebalance drops the keys of revoked partitions as it drops recovered ones (Faust's
    memory store only tracks the keys it read from the changelog). ``owned``, when given,
    skips keys of other partitions (a batch that outlived a rebalance). Keys and values are
    serialized as Faust's ``json`` codec does (what the table's recovery reads back).
    """
    store = table.data
    records: list[ChangelogRecord] = []
    known = _key_partitions(table)
    for key, value in changes.items():
        partition = partition_of(key)
        if partition is None:
            partition = known.get(key)
        if partition is None or (owned is not None and partition not in owned):
            continue
        if value is None:
            store.pop(key, None)
            known.pop(key, None)
            records.append((partition, orjson.dumps(key), None))
        else:
            store[key] = value
            known[key] = partition
            records.append((partition, orjson.dumps(key), _dumps(value)))
    return records


def _dumps(value: JsonValue) -> bytes:
    """Faust's ``json`` codec (faust.utils.json.dumps with orjson), without its per-call
    schema machinery."""
    return orjson.dumps(value, default=faust_json.on_default,
                        option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)


def changelog_topic(table: Any) -> str:
    """The name of ``table``'s changelog topic."""
    return str(table.changelog_topic.get_topic_name())


def table_items(table: Any) -> Iterable[tuple[str, JsonValue]]:
    """Every (key, value) the table holds for this worker's active partitions."""
    return list(table.data.items())


def key_partitions(table: Any) -> dict[str, int]:
    """The partition of every key the table holds (a copy)."""
    return dict(_key_partitions(table))


def _key_partitions(table: Any) -> MutableMapping[str, int]:
    """The memory store's own key -> partition map (empty stand-in for other stores)."""
    found = getattr(table.data, "_key_partition", None)
    return found if isinstance(found, MutableMapping) else {}
