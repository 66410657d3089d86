"""IncidentManager over random hot/quiet sequences: episode invariants and state round-trip."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.incidents import Alert, IncidentManager, IncidentParams
from detectors.verdicts import CampaignVerdict, Estimate

MIN = 60_000
T0 = 28_333_334 * MIN
CAMPAIGNS = ("a", "b", "c", "d")
STATES = ("missing", "quiet", "gap", "latency", "costly", "conversion")
LATENCY_HOT = {"latency", "costly"}

Script = list[dict[str, str]]


def verdict(campaign: str, tick_ms: int, state: str) -> CampaignVerdict:
    """A verdict of one scripted state ("missing" is handled by the caller)."""
    fields: dict[str, Any] = {
        "campaign": campaign, "tick_ms": tick_ms, "warmed_up": True,
        "sessions_per_minute": 30.0, "sessions_in_window": 900,
        "conversion_rate": 0.03, "conversion_rate_baseline": 0.03,
        "lcp_p75_ms": 2300.0, "lcp_p75_baseline_ms": 2300.0,
        "latency_regressed": False, "latency_statistic": 1.0, "latency_threshold": 8.0,
        "latency_started_ms": None, "latency_shift": 0.0,
        "conversion_p_value": 0.5, "conversion_observed": 27.0, "conversion_expected": 27.0,
        "conversion_ratio": 1.0, "conversion_window_start_ms": None,
        "average_order_value": 70.0,
        "slow_page_loss_per_hour": Estimate.zero(), "conversion_loss_per_hour": Estimate.zero(),
    }
    if state == "gap":
        fields.update(sessions_in_window=0, latency_regressed=True, conversion_p_value=1e-12)
    if state in LATENCY_HOT:
        cost = (900.0, 500.0, 1300.0) if state == "costly" else (30.0, 0.0, 70.0)
        fields.update(latency_regressed=True, lcp_p75_ms=4000.0,
                      latency_started_ms=tick_ms - 3 * MIN, slow_page_loss_per_hour=Estimate(*cost))
    if state == "conversion":
        fields.update(conversion_p_value=1e-10, conversion_rate=0.01,
                      conversion_window_start_ms=tick_ms - 15 * MIN,
                      conversion_loss_per_hour=Estimate(1500.0, 1000.0, 2000.0))
    return CampaignVerdict(**fields)


def tick_verdicts(tick: dict[str, str], tick_ms: int) -> list[CampaignVerdict]:
    return [verdict(name, tick_ms, state) for name, state in tick.items() if state != "missing"]


params_strategy = st.builds(
    IncidentParams,
    open_ticks_conversion=st.integers(1, 3),
    quiet_ticks_to_resolve=st.integers(1, 5),
    update_every_ticks=st.integers(1, 6),
    site_min_campaigns=st.integers(2, 4),
)
script_strategy = st.lists(
    st.fixed_dictionaries({name: st.sampled_from(STATES) for name in CAMPAIGNS}),
    min_size=1, max_size=40,
)


def with_quiet_tail(script: Script, params: IncidentParams) -> Script:
    return script + [dict.fromkeys(CAMPAIGNS, "quiet")] * params.quiet_ticks_to_resolve


def check_tick(tick_alerts: list[Alert], open_ids: dict[str, Alert]) -> None:
    """One tick's alerts against the episodes open before it; updates ``open_ids``."""
    campaigns = [alert.campaign for alert in tick_alerts]
    assert len(campaigns) == len(set(campaigns)), "more than one alert per campaign per tick"
    for alert in tick_alerts:
        previous = open_ids.get(alert.campaign)
        assert alert.scope in {"campaign", "site"}
        if previous is not None:
            assert alert.alert_id == previous.alert_id
            assert alert.incident_id == previous.incident_id
            assert alert.started_at == previous.started_at
            assert alert.revenue_lost >= previous.revenue_lost - 1e-9
        else:
            assert alert.state == "firing", "an episode starts with a firing alert"
        if alert.state == "resolved":
            assert previous is not None
            assert (alert.revenue_at_risk_per_hour, alert.revenue_at_risk_per_hour_low,
                    alert.revenue_at_risk_per_hour_high) == (0.0, 0.0, 0.0)
            del open_ids[alert.campaign]
        else:
            assert 0 <= alert.revenue_at_risk_per_hour_low <= alert.revenue_at_risk_per_hour
            assert alert.revenue_at_risk_per_hour <= alert.revenue_at_risk_per_hour_high
            open_ids[alert.campaign] = alert


@settings(max_examples=200, deadline=None)
@given(params=params_strategy, script=script_strategy)
def test_episode_invariants(params: IncidentParams, script: Script) -> None:
    manager = IncidentManager(params)
    open_ids: dict[str, Alert] = {}
    seen_ids: set[str] = set()
    for i, tick in enumerate(with_quiet_tail(script, params)):
        alerts = manager.process_tick(T0 + i * MIN, tick_verdicts(tick, T0 + i * MIN))
        new_ids = {a.alert_id for a in alerts if a.campaign not in open_ids}
        assert not new_ids & seen_ids, "an alert_id is reused by a later episode"
        seen_ids |= new_ids
        open_before = set(open_ids)
        check_tick(alerts, open_ids)
        assert {a.campaign for a in manager.open_alerts()} == set(open_ids)
        for name, state in tick.items():
            if state in LATENCY_HOT:
                assert name in open_ids, "a latency regression opens an episode at once"
            if state in {"missing", "quiet", "gap"} and name not in open_before:
                assert all(a.campaign != name for a in alerts), "a quiet tick opened an episode"
    assert open_ids == {}, "every episode ends with one resolved alert after enough quiet"


@settings(max_examples=150, deadline=None)
@given(params=params_strategy, script=script_strategy, data=st.data())
def test_state_round_trip_gives_identical_alerts(params: IncidentParams, script: Script,
                                                 data: st.DataObject) -> None:
    full = with_quiet_tail(script, params)
    split = data.draw(st.integers(0, len(full)), label="split")
    reference, interrupted = IncidentManager(params), IncidentManager(params)
    expected: list[list[Alert]] = []
    for i, tick in enumerate(full):
        tick_ms = T0 + i * MIN
        if i == split:
            state = json.loads(json.dumps(interrupted.to_state(), allow_nan=False))
            interrupted = IncidentManager.from_state(state, params)
        expected.append(reference.process_tick(tick_ms, tick_verdicts(tick, tick_ms)))
        assert interrupted.process_tick(tick_ms, tick_verdicts(tick, tick_ms)) == expected[-1]
        assert interrupted.open_alerts() == reference.open_alerts()
