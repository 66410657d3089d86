"""streams.metrics: names, label bounding, stale removal, ``other`` aggregation, promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streams.metrics import OTHER, CampaignHealth, Metrics, reason_class

PER_CAMPAIGN = [
    "revwatch_campaign_sessions_per_minute",
    "revwatch_campaign_conversion_rate",
    "revwatch_campaign_conversion_rate_baseline",
    "revwatch_campaign_lcp_p75_seconds",
    "revwatch_campaign_lcp_p75_baseline_seconds",
    "revwatch_campaign_revenue_at_risk_per_hour",
    "revwatch_campaign_revenue_at_risk_per_hour_low",
    "revwatch_campaign_revenue_at_risk_per_hour_high",
    "revwatch_campaign_revenue_per_hour",
    "revwatch_campaign_revenue_per_hour_baseline",
]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def row(name: str, spm: float, cr: float = 0.03, lcp_ms: float = 2000.0,
        rar: float = 0.0) -> CampaignHealth:
    return CampaignHealth(name, spm, cr, cr, lcp_ms, lcp_ms * 0.9, rar, rar * 0.5, rar * 2.0,
                          spm * 60 * cr * 50.0, spm * 60 * cr * 50.0)


def label_values(registry: CollectorRegistry, metric: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in registry.collect()
        for sample in family.samples
        if sample.name == metric
    }


def test_counters_and_lag(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    m.count_beacons("web-vitals", "accepted", 3)
    m.count_beacons("web-vitals", "accepted")
    m.count_orders("duplicate")
    m.count_sessions(5)
    m.count_sessions(2, bot=True)
    m.count_dead_letter("rum-beacons", "not valid JSON: unexpected character")
    m.count_delivery("alertmanager", "delivered")
    m.set_event_lag("orders", 12.5)
    get = registry.get_sample_value
    assert get("revwatch_beacons_total", {"source": "web-vitals", "outcome": "accepted"}) == 4
    assert get("revwatch_orders_total", {"outcome": "duplicate"}) == 1
    assert get("revwatch_sessions_total") == 5
    assert get("revwatch_bot_sessions_total") == 2
    assert get("revwatch_dead_letter_total",
               {"topic": "rum-beacons", "reason_class": "not_json"}) == 1
    assert get("revwatch_delivery_total",
               {"receiver": "alertmanager", "outcome": "delivered"}) == 1
    assert get("revwatch_event_lag_seconds", {"topic": "orders"}) == 12.5


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        pytest.param("not valid JSON: unexpected character", "not_json", id="json"),
        pytest.param("expected a JSON object, got list", "not_object", id="object"),
        pytest.param("'ts' must be epoch milliseconds (a number)", "bad_field", id="field"),
        pytest.param("'lcp_ms' is out of range: -3", "bad_field", id="range"),
        pytest.param("body too large", "too_large", id="size"),
        pytest.param("something new and \u00e9trange", "other", id="unknown"),
    ],
)
def test_reason_class_is_bounded(reason: str, expected: str) -> None:
    assert reason_class(reason) == expected


def test_campaign_health_units_and_values(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    m.set_campaign_health([CampaignHealth("spring", 120.0, 0.031, 0.035, 2500.0, 2100.0, 840.0,
                                          510.0, 1_170.0, 11_160.0, 12_600.0)])
    get = registry.get_sample_value
    labels = {"campaign": "spring"}
    assert get("revwatch_campaign_sessions_per_minute", labels) == 120.0
    assert get("revwatch_campaign_conversion_rate", labels) == 0.031
    assert get("revwatch_campaign_conversion_rate_baseline", labels) == 0.035
    assert get("revwatch_campaign_lcp_p75_seconds", labels) == pytest.approx(2.5)
    assert get("revwatch_campaign_lcp_p75_baseline_seconds", labels) == pytest.approx(2.1)
    assert get("revwatch_campaign_revenue_at_risk_per_hour", labels) == 840.0
    assert get("revwatch_campaign_revenue_at_risk_per_hour_low", labels) == 510.0
    assert get("revwatch_campaign_revenue_at_risk_per_hour_high", labels) == 1_170.0
    assert get("revwatch_campaign_revenue_per_hour", labels) == 11_160.0
    assert get("revwatch_campaign_revenue_per_hour_baseline", labels) == 12_600.0
    assert get("revwatch_campaigns_tracked") == 1


def test_nan_is_not_exported(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    m.set_campaign_health([CampaignHealth("warmup", 3.0)])
    get = registry.get_sample_value
    assert get("revwatch_campaign_sessions_per_minute", {"campaign": "warmup"}) == 3.0
    assert get("revwatch_campaign_conversion_rate", {"campaign": "warmup"}) is None
    m.set_campaign_health([CampaignHealth("warmup", 3.0, conversion_rate=0.02)])
    assert get("revwatch_campaign_conversion_rate", {"campaign": "warmup"}) == 0.02
    m.set_campaign_health([CampaignHealth("warmup", 3.0)])
    assert get("revwatch_campaign_conversion_rate", {"campaign": "warmup"}) is None


def test_thousand_campaigns_are_bounded(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_campaign_labels=50)
    m.set_campaign_health([row(f"c{i:04d}", float(i)) for i in range(1000)])
    for metric in PER_CAMPAIGN:
        values = label_values(registry, metric, "campaign")
        assert len(values) == 51, metric
        assert OTHER in values
    kept = label_values(registry, PER_CAMPAIGN[0], "campaign") - {OTHER}
    assert kept == {f"c{i:04d}" for i in range(950, 1000)}  # the busiest 50
    assert registry.get_sample_value("revwatch_campaigns_tracked") == 1000


def test_ties_are_broken_by_name(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_campaign_labels=2)
    m.set_campaign_health([row("b", 5.0), row("c", 5.0), row("a", 5.0), row("z", 1.0)])
    assert label_values(registry, PER_CAMPAIGN[0], "campaign") == {"a", "b", OTHER}


def test_other_aggregation(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_campaign_labels=1)
    m.set_campaign_health([
        CampaignHealth("big", 100.0, 0.05, 0.05, 1000.0, 1000.0, 1.0),
        CampaignHealth("s1", 30.0, 0.02, 0.04, 3000.0, 2000.0, 200.0, 120.0, 310.0, 1_800.0,
                       3_600.0),
        CampaignHealth("s2", 10.0, 0.06, 0.04, 1000.0, 1000.0, 50.0, 20.0, 90.0, 1_800.0,
                       1_200.0),
        CampaignHealth("s3", 5.0),  # no rates yet: counts in sessions only
    ])
    other = {"campaign": OTHER}
    get = registry.get_sample_value
    assert get("revwatch_campaign_sessions_per_minute", other) == 45.0
    assert get("revwatch_campaign_conversion_rate", other) == pytest.approx(
        (30 * 0.02 + 10 * 0.06) / 40)
    assert get("revwatch_campaign_conversion_rate_baseline", other) == pytest.approx(0.04)
    assert get("revwatch_campaign_lcp_p75_seconds", other) == pytest.approx(
        (30 * 3.0 + 10 * 1.0) / 40)
    assert get("revwatch_campaign_lcp_p75_baseline_seconds", other) == pytest.approx(
        (30 * 2.0 + 10 * 1.0) / 40)
    assert get("revwatch_campaign_revenue_at_risk_per_hour", other) == 250.0
    assert get("revwatch_campaign_revenue_at_risk_per_hour_low", other) == 140.0
    assert get("revwatch_campaign_revenue_at_risk_per_hour_high", other) == 400.0
    assert get("revwatch_campaign_revenue_per_hour", other) == 3_600.0
    assert get("revwatch_campaign_revenue_per_hour_baseline", other) == 4_800.0


def test_real_campaign_named_other_folds_into_other(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_campaign_labels=1)
    m.set_campaign_health([row(OTHER, 50.0), row("a", 10.0), row("b", 5.0)])
    assert label_values(registry, PER_CAMPAIGN[0], "campaign") == {"a", OTHER}
    assert registry.get_sample_value(PER_CAMPAIGN[0], {"campaign": OTHER}) == 55.0


def test_stale_campaigns_are_removed(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_campaign_labels=2)
    m.set_campaign_health([row("a", 9.0), row("b", 8.0), row("c", 7.0)])
    assert label_values(registry, PER_CAMPAIGN[0], "campaign") == {"a", "b", OTHER}
    m.set_campaign_health([row("b", 8.0)])  # a moved to another worker, c went idle
    for metric in PER_CAMPAIGN:
        assert label_values(registry, metric, "campaign") == {"b"}, metric
    m.set_campaign_health([])
    for metric in PER_CAMPAIGN:
        assert label_values(registry, metric, "campaign") == set(), metric


def test_alerts_firing_removal_and_bounding(registry: CollectorRegistry) -> None:
    m = Metrics(registry, max_campaign_labels=3)
    m.set_campaign_health([row("z-busy", 100.0), row("a", 1.0)])
    get = registry.get_sample_value
    pairs = [(f"c{i:03d}", "latency_regression") for i in range(200)]
    m.set_alerts_firing([*pairs, ("z-busy", "conversion_drop")])
    assert get("revwatch_alerts_firing", {"campaign": "z-busy", "kind": "conversion_drop"}) == 1
    # labelled campaigns first (z-busy), then by name: c000, c001; the other 198 fold
    names = label_values(registry, "revwatch_alerts_firing", "campaign")
    assert names == {"z-busy", "c000", "c001", OTHER}
    assert get("revwatch_alerts_firing", {"campaign": OTHER, "kind": "latency_regression"}) == 198
    m.set_alerts_firing([("c000", "latency_regression")])
    assert label_values(registry, "revwatch_alerts_firing", "campaign") == {"c000"}
    m.set_alerts_firing([])
    assert label_values(registry, "revwatch_alerts_firing", "campaign") == set()


def test_rejects_zero_label_budget(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="max_campaign_labels"):
        Metrics(registry, max_campaign_labels=0)


def test_exposition_passes_promtool(registry: CollectorRegistry, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install -y prometheus"
    m = Metrics(registry, max_campaign_labels=5)
    m.set_campaign_health([row(f"camp-{i}", float(i), rar=float(i)) for i in range(20)])
    m.set_alerts_firing([("camp-19", "performance_conversion_loss")])
    m.count_beacons("boomerang", "accepted")
    m.count_orders("accepted")
    m.count_dead_letter("orders", "'revenue' must be a finite number >= 0")
    m.count_alert("performance_conversion_loss", "firing")
    m.set_delivery_queue_depth("webhook", 3)
    m.set_collector_buffered(7)
    m.set_event_lag("rum-beacons", 1.5)
    body = generate_latest(registry)
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    assert result.stdout.decode().strip() == ""  # promtool prints every lint problem
    assert b'revwatch_campaign_revenue_at_risk_per_hour{campaign="other"} 105.0' in body
