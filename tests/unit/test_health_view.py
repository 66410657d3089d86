"""streams.health (GET /campaigns, campaign gauges) and streams.view (terminal rendering)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson
import pytest

from detectors.episodes import Alert
from detectors.verdicts import CampaignVerdict, Estimate
from streams.health import (
    build_view,
    dumps_json,
    revenue_at_risk,
    revenue_at_risk_estimate,
    revenue_per_hour,
)
from streams.view import format_alert, format_health
from tests.unit.test_pipeline import verdict

T0 = 1_741_003_200_000  # 2025-03-03 12:00 UTC, a Monday


def row(campaign: str, spm: float, **kw: Any) -> CampaignVerdict:
    return dataclasses.replace(verdict(campaign, T0), sessions_per_minute=spm, **kw)


def alert(campaign: str, kind: str = "performance_conversion_loss") -> Alert:
    return Alert(alert_id="a1", incident_id="i1", scope="campaign", ts=T0, campaign=campaign,
                 kind=kind, state="firing", started_at=T0 - 600_000,
                 revenue_at_risk_per_hour=1200.0, revenue_at_risk_per_hour_low=800.0,
                 revenue_at_risk_per_hour_high=1600.0, revenue_lost=200.0,
                 evidence={"lcp_p75_ms": 5200.0, "explained_fraction": math.nan},
                 summary="spring: slow pages cost ~$1,200/h")


SLOW = Estimate(700.0, 300.0, 1_100.0)
LOST = Estimate(1_500.0, 900.0, 2_100.0)


@pytest.mark.parametrize(("regressed", "p_value", "expected"), [
    (False, 1.0, 0.0),  # money without evidence is not at risk
    (True, 1.0, 700.0),
    (False, 1e-4, 1_500.0),
    (True, 1e-4, 1_500.0),  # the larger of the two evidenced figures
    (True, 1e-3, 700.0),  # p exactly at the level is not evidence
])
def test_revenue_at_risk_counts_only_evidenced_figures(regressed: bool, p_value: float,
                                                       expected: float) -> None:
    v = row("c", 10.0, latency_regressed=regressed, conversion_p_value=p_value,
            slow_page_loss_per_hour=SLOW, conversion_loss_per_hour=LOST)
    assert revenue_at_risk(v) == expected
    risk = revenue_at_risk_estimate(v)  # the interval is the chosen figure's own
    assert (risk.low, risk.high) == {0.0: (0.0, 0.0), 700.0: (SLOW.low, SLOW.high),
                                     1_500.0: (LOST.low, LOST.high)}[expected]


def test_json_rows_sorted_by_traffic_with_nan_as_null_and_alerts_attached() -> None:
    verdicts = [row("b", 5.0), row("a", 5.0, conversion_day_known=False),
                row("spring", 40.1234, conversion_rate=0.031234567, lcp_p75_ms=2_812.5,
                    latency_regressed=True, slow_page_loss_per_hour=SLOW)]
    view = build_view(verdicts, [alert("spring")], "EUR")
    body = orjson.loads(dumps_json(view.to_json_obj()))
    assert body["as_of"] == T0
    assert body["currency"] == "EUR"
    assert [r["campaign"] for r in body["campaigns"]] == ["spring", "a", "b"]
    top = body["campaigns"][0]
    assert top["sessions_per_minute"] == 40.123
    assert top["conversion_rate"] == 0.031235
    assert top["conversion_rate_baseline"] is None
    assert top["lcp_p75_ms"] == 2_812.5
    assert top["revenue_at_risk_per_hour"] == 700.0
    assert (top["revenue_at_risk_per_hour_low"], top["revenue_at_risk_per_hour_high"]) == (
        300.0, 1_100.0)
    assert (body["campaigns"][2]["revenue_at_risk_per_hour_low"],
            body["campaigns"][2]["revenue_at_risk_per_hour_high"]) == (0.0, 0.0)
    assert top["warmed_up"] is False
    assert top["conversion_day_known"] is True
    assert body["campaigns"][1]["conversion_day_known"] is False  # "a"
    assert [a["kind"] for a in top["firing_alerts"]] == ["performance_conversion_loss"]
    assert top["firing_alerts"][0]["evidence"]["explained_fraction"] is None
    assert body["campaigns"][1]["firing_alerts"] == []


def test_empty_view_has_no_as_of() -> None:
    body = build_view([], [], "USD").to_json_obj()
    assert body == {"as_of": None, "currency": "USD", "campaigns": []}


def test_health_rows_feed_the_gauges_one_per_campaign() -> None:
    verdicts = [row("a", 3.0, latency_regressed=True, slow_page_loss_per_hour=SLOW),
                row("b", 4.0)]
    rows = build_view(verdicts, [], "USD").health_rows()
    assert [(r.campaign, r.sessions_per_minute, r.revenue_at_risk_per_hour,
             r.revenue_at_risk_per_hour_low, r.revenue_at_risk_per_hour_high) for r in rows] == [
        ("a", 3.0, 700.0, 300.0, 1_100.0), ("b", 4.0, 0.0, 0.0, 0.0)]
    assert math.isnan(rows[0].conversion_rate_baseline)


def test_revenue_per_hour_now_and_at_the_normal_conversion() -> None:
    """What marketing reads beside the revenue at risk: 40 sessions a minute, 2.5% of them
    ordering now (3% normally), $80 an order: $4,800 an hour now against $5,760."""
    v = row("spring", 40.0, conversion_rate=0.025, conversion_rate_baseline=0.03,
            average_order_value=80.0)
    assert revenue_per_hour(v) == pytest.approx((4_800.0, 5_760.0))
    health = build_view([v], [], "USD").health_rows()[0]
    assert (health.revenue_per_hour, health.revenue_per_hour_baseline) == pytest.approx(
        (4_800.0, 5_760.0))
    body = orjson.loads(dumps_json(build_view([v, row("cold", 2.0)], [], "USD").to_json_obj()))
    spring, cold = body["campaigns"]
    assert (spring["revenue_per_hour"], spring["revenue_per_hour_baseline"],
            spring["average_order_value"]) == (4_800.0, 5_760.0, 80.0)
    # what a converting session brings, where the verdict has it (1.05 orders each)
    priced = dataclasses.replace(v, revenue_per_conversion=84.0)
    assert revenue_per_hour(priced) == pytest.approx((5_040.0, 6_048.0))
    assert orjson.loads(dumps_json(build_view([priced], [], "USD").to_json_obj()))[
        "campaigns"][0]["revenue_per_conversion"] == 84.0
    # rates not known yet: no figure (null), as for the rates themselves
    assert (cold["revenue_per_hour"], cold["revenue_per_hour_baseline"]) == (None, None)
    assert math.isnan(build_view([row("cold", 2.0)], [], "USD").health_rows()[0]
                      .revenue_per_hour)


def test_format_alert_is_one_readable_line() -> None:
    text = format_alert(alert("spring").to_dict())
    assert "[FIRING]" in text  # an alert without evidence.severity
    paged = alert("spring").to_dict()
    paged["evidence"]["severity"] = "page"
    assert "[FIRING page] 12:00 event time" in format_alert(paged)
    assert "12:00 event time" in text
    assert "performance_conversion_loss" in text
    assert "spring: slow pages cost ~$1,200/h" in text
    assert format_alert({}).strip().startswith(">>> [?]")


def test_format_health_renders_a_fixed_width_table() -> None:
    verdicts = [row(f"campaign-{i:02d}-with-a-long-name", float(i),
                    conversion_rate=0.0312, conversion_rate_baseline=0.0401,
                    lcp_p75_ms=5_200.0, lcp_p75_baseline_ms=2_600.0) for i in range(15)]
    body = orjson.loads(dumps_json(build_view(verdicts, [alert("campaign-14-with-a-long-name")],
                                              "GBP").to_json_obj()))
    lines = format_health(body).splitlines()
    assert lines[0] == "-- campaigns at Mon 12:00 (event time) --"
    assert len(lines) == 2 + 12, "at most twelve campaigns are shown"
    first = lines[2]
    assert first.startswith("campaign-14-with-")  # busiest first, name cut to 17 characters
    assert " 3.12% " in first
    assert " 4.01% " in first
    assert "5.2s" in first
    assert "2.6s" in first
    assert "£" in first
    assert first.endswith("performance_conversion_loss")
    assert len({len(line) for line in lines[3:]}) == 1, "rows without alerts line up"


def test_format_health_before_any_tick_and_with_unknown_values() -> None:
    body = build_view([row("x", 1.0)], [], "JPY").to_json_obj()
    body["as_of"] = None
    text = format_health(body)
    assert "warming up" in text
    assert "   -  " in text
    assert "  -  " in text
