"""``revwatch_campaign_revenue_lost_total``: what the episodes say was lost, counted as it grows,
once, across a restart of the worker that holds the incidents."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from detectors.incidents import Alert, IncidentManager
from detectors.verdicts import CampaignVerdict
from streams.metrics import OTHER, Metrics
from tests.unit.test_incidents import at, slow, verdict

KIND = "performance_conversion_loss"


def lost(registry: CollectorRegistry, campaign: str, kind: str = KIND) -> float:
    value = registry.get_sample_value("revwatch_campaign_revenue_lost_total",
                                      {"campaign": campaign, "kind": kind})
    return 0.0 if value is None else value


def batch(manager: IncidentManager, metrics: Metrics, minute: int,
          verdicts: list[CampaignVerdict]) -> list[Alert]:
    """One batch of the incidents agent: one tick."""
    before = manager.open_alerts()
    emitted = manager.process_tick(at(minute), verdicts)
    metrics.count_revenue_lost(before, emitted, manager.open_alerts())
    return emitted


def slowdown(minute: int) -> list[CampaignVerdict]:
    """Slow for ten minutes at a growing cost, then quiet."""
    if minute < 10:
        return [slow("s", at(minute), loss=(600 + 60 * minute, 300, 1500))]
    return [verdict("s", at(minute))]


def test_the_counter_ends_at_what_the_resolve_says_was_lost() -> None:
    registry = CollectorRegistry()
    metrics, manager = Metrics(registry), IncidentManager()
    seen = []
    for minute in range(30):
        seen += batch(manager, metrics, minute, slowdown(minute))
        if minute == 4:
            assert lost(registry, "s") == pytest.approx(manager.open_alerts()[0].revenue_lost)
    (resolved,) = [a for a in seen if a.state == "resolved"]
    assert resolved.revenue_lost > 0
    assert lost(registry, "s") == pytest.approx(resolved.revenue_lost)


def test_a_restarted_worker_counts_only_what_the_episode_adds_after_it() -> None:
    """The process before counted the episode up to the restart (Prometheus sees its counter
    reset); the restored episode's figure then is not counted again."""
    first = CollectorRegistry()
    metrics, manager = Metrics(first), IncidentManager()
    for minute in range(5):
        batch(manager, metrics, minute, slowdown(minute))
    at_restart = lost(first, "s")
    assert at_restart == pytest.approx(manager.open_alerts()[0].revenue_lost)
    again = CollectorRegistry()
    restored = IncidentManager.from_state(manager.to_state())
    metrics = Metrics(again)
    seen = []
    for minute in range(5, 30):
        seen += batch(restored, metrics, minute, slowdown(minute))
    (resolved,) = [a for a in seen if a.state == "resolved"]
    assert at_restart > 50
    assert lost(again, "s") == pytest.approx(resolved.revenue_lost - at_restart)


def test_a_shrinking_figure_is_not_taken_back() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    first = Alert.from_dict(_alert(revenue_lost=500.0))
    metrics.count_revenue_lost([], [first], [first])
    lower = replace(first, revenue_lost=420.0)
    metrics.count_revenue_lost([first], [lower], [lower])
    higher = replace(first, revenue_lost=560.0, state="resolved")
    metrics.count_revenue_lost([lower], [higher], [])
    assert lost(registry, "s") == 560.0  # its highest


def test_campaign_labels_are_bounded_and_kept() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, max_campaign_labels=1)
    a = Alert.from_dict(_alert(campaign="a", alert_id="1", revenue_lost=10.0))
    b = Alert.from_dict(_alert(campaign="b", alert_id="2", revenue_lost=7.0))
    metrics.count_revenue_lost([], [a, b], [a, b])
    a2 = replace(a, revenue_lost=15.0)
    metrics.count_revenue_lost([a, b], [a2], [a2, b])
    assert (lost(registry, "a"), lost(registry, "b"), lost(registry, OTHER)) == (15.0, 0.0, 7.0)


def _alert(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "alert_id": "e1", "incident_id": "i1", "scope": "campaign", "campaign": "s",
        "kind": KIND, "state": "firing", "ts": at(0), "started_at": at(-5),
        "revenue_at_risk_per_hour": 1000.0, "revenue_at_risk_per_hour_low": 500.0,
        "revenue_at_risk_per_hour_high": 1500.0, "revenue_lost": 0.0, "currency": "USD",
        "evidence": {}, "summary": "s",
    }
    body.update(fields)
    return body
