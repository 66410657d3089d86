"""The hand-written dict builders equal ``dataclasses.asdict`` for any field values, so a
field added to the class and not to the builder fails here."""

from __future__ import annotations

from dataclasses import asdict, fields

from hypothesis import given
from hypothesis import strategies as st

from detectors.verdicts import CampaignVerdict, Estimate
from streams.records import SessionFact

floats = st.floats(allow_nan=True, allow_infinity=True)
optional_ints = st.none() | st.integers(min_value=0, max_value=2**53)
estimates = st.builds(Estimate, floats, floats, floats)


BY_ANNOTATION: dict[str, st.SearchStrategy[object]] = {
    "Estimate": estimates,
    "bool": st.booleans(),
    "int": st.integers(min_value=-(2**53), max_value=2**53),
    "int | None": optional_ints,
    "float": floats,
    "float | None": st.none() | floats,
    "str | None": st.none() | st.text(max_size=8),
    "FactKind": st.sampled_from(["session", "order", "heartbeat", "retract"]),
    "str": st.text(max_size=8),
}


def strategy_for(annotation: object) -> st.SearchStrategy[object]:
    return BY_ANNOTATION[str(annotation)]


facts = st.builds(SessionFact, **{f.name: strategy_for(f.type)
                                  for f in fields(SessionFact)})
verdicts = st.builds(CampaignVerdict, **{f.name: strategy_for(f.type)
                                         for f in fields(CampaignVerdict)})


@given(facts)
def test_session_fact_as_dict_is_asdict(fact: SessionFact) -> None:
    assert list(fact.as_dict().items()) == list(asdict(fact).items())


@given(verdicts)
def test_verdict_to_state_is_asdict(verdict: CampaignVerdict) -> None:
    state, reference = verdict.to_state(), asdict(verdict)
    assert list(state) == list(reference)
    assert repr(state) == repr(reference)  # nan compares unequal; its repr does not
