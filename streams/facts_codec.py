"""The values of ``revwatch-session-facts``: a JSON array of session facts per record.

The sessionizer sends the facts of one batch for one campaign as one record (key: the
campaign), so the producer and the campaign stage handle one Kafka record per campaign and
batch instead of one per fact (docs/PERFORMANCE.md section 2). A record may also be a
single fact object (the format before 0.2, and what a hand-written heartbeat may be):
:func:`decode_facts` reads both.

An array may also hold **slope shares** (``"kind": "site"``): each worker's campaign stage
sends, for every facts partition it holds, what that partition's campaigns say about the
site-wide latency-to-conversion slope, to every facts partition (as heartbeats go), so that
every worker fits the site's slope and not only its own campaigns' (``detectors/site.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import orjson

from detectors.site import SlopeShare
from streams.errors import InvalidRecord
from streams.records import SessionFact

SITE_KIND = "site"

MAX_FACTS_PER_RECORD = 500
"""A record holds at most this many facts (~150 kB, far below Kafka's 1 MB default)."""


def encode_facts(facts: Iterable[SessionFact]) -> Iterator[bytes]:
    """Record values for ``facts``: JSON arrays of at most ``MAX_FACTS_PER_RECORD``."""
    chunk: list[dict[str, object]] = []
    for fact in facts:
        chunk.append(fact.as_dict())
        if len(chunk) == MAX_FACTS_PER_RECORD:
            yield orjson.dumps(chunk)
            chunk = []
    if chunk:
        yield orjson.dumps(chunk)


@dataclass(frozen=True, slots=True)
class ShareFact:
    """A slope share of facts partition ``partition`` (``detectors.site.SlopeShare``)."""

    partition: int
    share: SlopeShare


def encode_shares(shares: Mapping[int, SlopeShare]) -> bytes:
    """One record value holding the shares of the facts partitions in ``shares``."""
    return orjson.dumps([{"kind": SITE_KIND, "partition": partition, **share.to_state()}
                         for partition, share in sorted(shares.items())])


Decoded = SessionFact | ShareFact | tuple[bytes, InvalidRecord]


def decode_facts(raw: bytes) -> list[Decoded]:
    """The facts of one record, in order; an unreadable one as (its JSON, the error).

    A record that is not a JSON array is read as one fact (:meth:`SessionFact.from_json`).
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, list):
        try:
            return [SessionFact.from_json(raw)]
        except InvalidRecord as exc:
            return [(raw, exc)]
    return [_fact(item) for item in data]


def _fact(item: object) -> Decoded:
    raw = orjson.dumps(item)
    if not isinstance(item, dict):
        return raw, InvalidRecord("not a session fact: expected a JSON object")
    if item.get("kind") == SITE_KIND:
        return _share(item, raw)
    try:
        return SessionFact.from_dict(item)
    except InvalidRecord as exc:
        return raw, exc


def _share(item: dict[str, object], raw: bytes) -> ShareFact | tuple[bytes, InvalidRecord]:
    partition = item.get("partition")
    if type(partition) is not int or partition < 0:
        return raw, InvalidRecord("not a slope share: 'partition' must be an integer >= 0")
    try:
        return ShareFact(partition, SlopeShare.from_state(item))
    except ValueError as exc:
        return raw, InvalidRecord(str(exc))


def facts_of(raw: bytes) -> list[SessionFact]:
    """The readable facts of one record (tests and benchmarks reading the topic)."""
    return [f for f in decode_facts(raw) if isinstance(f, SessionFact)]
