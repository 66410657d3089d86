"""streams.facts_codec: facts-topic values are arrays of facts; a single object still reads."""

from __future__ import annotations

import orjson

from streams.errors import InvalidRecord
from streams.facts_codec import MAX_FACTS_PER_RECORD, decode_facts, encode_facts, facts_of
from streams.records import SessionFact

T0 = 1_700_000_040_000


def fact(n: int) -> SessionFact:
    return SessionFact("session", "spring", T0, f"s{n}", T0 + n, 1_800.0)


def test_facts_round_trip_in_order_in_bounded_records() -> None:
    facts = [fact(n) for n in range(MAX_FACTS_PER_RECORD + 3)]
    values = list(encode_facts(facts))
    assert [len(orjson.loads(v)) for v in values] == [MAX_FACTS_PER_RECORD, 3]
    assert [f for v in values for f in facts_of(v)] == facts


def test_a_single_fact_object_still_reads() -> None:
    assert decode_facts(fact(1).to_json()) == [fact(1)]


def test_bad_facts_come_back_with_their_json_and_the_error() -> None:
    value = orjson.dumps([orjson.loads(fact(1).to_json()), 7, {"kind": "session", "x": 1}])
    decoded = decode_facts(value)
    assert decoded[0] == fact(1)
    raws = [d[0] for d in decoded[1:] if isinstance(d, tuple)]
    assert raws == [b"7", b'{"kind":"session","x":1}']
    assert all(isinstance(d[1], InvalidRecord) for d in decoded[1:] if isinstance(d, tuple))
    assert isinstance(decode_facts(b"{")[0], tuple)
