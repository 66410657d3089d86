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


texts = st.text(max_size=8)
optional_texts = st.none() | texts
ints = st.integers(min_value=-(2**53), max_value=2**53)
optional_floats = st.none() | floats

# By field name (the compiled classes of the mypyc build carry no annotation strings): a
# field added to a class and not here fails the test, which asks for it in the builder too.
FACT_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "kind": st.sampled_from(["session", "checkout", "order", "heartbeat", "retract"]),
    "campaign": texts, "watermark_ms": ints, "session_id": texts, "start_ms": ints,
    "lcp_ms": optional_floats, "commerce": st.booleans(), "device": optional_texts,
    "order_id": optional_texts, "order_ts_ms": optional_ints, "revenue": floats,
    "first_order": st.booleans(), "known_session": st.booleans(),
    "checkout_ms": optional_ints,
}
VERDICT_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "campaign": texts, "tick_ms": ints, "warmed_up": st.booleans(),
    "sessions_per_minute": floats, "sessions_in_window": ints, "conversion_rate": floats,
    "conversion_rate_baseline": floats, "lcp_p75_ms": floats, "lcp_p75_baseline_ms": floats,
    "latency_regressed": st.booleans(), "latency_statistic": floats,
    "latency_threshold": floats, "latency_started_ms": optional_ints,
    "latency_shift": floats, "conversion_p_value": floats, "conversion_observed": floats,
    "conversion_expected": floats, "conversion_ratio": floats,
    "conversion_window_start_ms": optional_ints, "average_order_value": floats,
    "slow_page_loss_per_hour": estimates, "conversion_loss_per_hour": estimates,
    "conversion_recent_p_value": floats,
    "devices": st.none() | st.dictionaries(texts, st.tuples(floats, floats, floats, floats),
                                           max_size=4),
    "conversion_devices": st.none() | st.dictionaries(texts, st.tuples(floats, floats),
                                                      max_size=4),
    "conversion_day_known": st.booleans(), "conversion_lost_so_far": floats,
    "checkout_p_value": floats, "checkout_observed": floats, "checkout_expected": floats,
    "checkout_window_start_ms": optional_ints,
    "conversion_onset_ms": optional_ints, "revenue_per_conversion": floats,
    "slow_page_lost_minute": floats, "slow_page_minute_ms": optional_ints,
    "reach_p_value": floats, "reach_observed": floats, "reach_expected": floats,
    "reach_window_start_ms": optional_ints,
}

facts = st.builds(SessionFact, **{f.name: FACT_FIELDS[f.name] for f in fields(SessionFact)})
verdicts = st.builds(CampaignVerdict, **{f.name: VERDICT_FIELDS[f.name]
                                         for f in fields(CampaignVerdict)})


@given(facts)
def test_session_fact_as_dict_is_asdict(fact: SessionFact) -> None:
    state, reference = fact.as_dict(), asdict(fact)
    assert list(state) == list(reference)
    assert repr(state) == repr(reference)  # nan compares unequal; its repr does not


@given(verdicts)
def test_verdict_to_state_is_asdict(verdict: CampaignVerdict) -> None:
    state, reference = verdict.to_state(), asdict(verdict)
    assert list(state) == list(reference)
    assert repr(state) == repr(reference)  # nan compares unequal; its repr does not
