"""Prometheus metrics of one worker (CONTRACT.md "Metrics"), every name prefixed ``revwatch_``.

Metrics never do I/O: the worker's ``GET /metrics`` serves the registry passed in here
(the one :class:`streams.faust_sensor.FaustCollector` is registered in too). Tests pass a
fresh ``CollectorRegistry()`` and read values with ``registry.get_sample_value(...)``.

The ``campaign`` label is bounded: :meth:`Metrics.set_campaign_health` exports the
busiest ``max_campaign_labels`` campaigns by sessions per minute (ties by name) and
folds the rest into ``campaign="other"``; label sets of campaigns that went away (idle,
or moved to another worker in a rebalance) are removed, so a worker never reports a
campaign it no longer owns. Durations are exported in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from detectors.elasticity import CurveFit
from detectors.episodes import Alert
from detectors.site_season import hour_factors

OTHER = "other"
"""The ``campaign`` label value of every campaign beyond the label budget."""

REASON_CLASSES = ("not_json", "not_object", "bad_field", "too_large", "other")
"""Bounded ``reason_class`` values of ``revwatch_dead_letter_total``."""


@dataclass(frozen=True, slots=True)
class CampaignHealth:
    """One campaign's health now. ``nan`` means "not known": that series is not exported.

    Attributes:
        campaign: campaign name (``(none)`` for sessions without one).
        sessions_per_minute: human sessions per minute, recent window.
        conversion_rate: converted sessions / sessions, lag-adjusted by the detector.
        conversion_rate_baseline: the campaign's normal conversion rate.
        lcp_p75_ms: p75 of session LCP now, milliseconds.
        lcp_p75_baseline_ms: the campaign's normal p75 LCP, milliseconds.
        revenue_at_risk_per_hour: expected revenue lost per hour now (reporting currency).
        revenue_at_risk_per_hour_low, revenue_at_risk_per_hour_high: its 90% interval.
        revenue_per_hour: the revenue per hour the campaign's sessions bring now (sessions
            per minute x 60 x conversion now x revenue per conversion).
        revenue_per_hour_baseline: the same sessions at the campaign's normal conversion.
    """

    campaign: str
    sessions_per_minute: float
    conversion_rate: float = math.nan
    conversion_rate_baseline: float = math.nan
    lcp_p75_ms: float = math.nan
    lcp_p75_baseline_ms: float = math.nan
    revenue_at_risk_per_hour: float = math.nan
    revenue_at_risk_per_hour_low: float = math.nan
    revenue_at_risk_per_hour_high: float = math.nan
    revenue_per_hour: float = math.nan
    revenue_per_hour_baseline: float = math.nan


def reason_class(reason: str) -> str:
    """Map a free-form :class:`~streams.errors.InvalidRecord` reason to a bounded class."""
    text = reason.lower()
    if "expected a json object" in text or "not a session fact" in text:
        return "not_object"
    if "json" in text:
        return "not_json"
    if "too large" in text or "size limit" in text:
        return "too_large"
    if text.startswith("'") or "must be" in text or "out of range" in text:
        return "bad_field"
    return "other"


class Metrics:
    """Every revwatch metric, registered on ``registry``.

    Args:
        registry: where to register (the one the worker's ``/metrics`` serves).
        max_campaign_labels: campaigns exported under their own name; the rest are
            ``other``. So each per-campaign metric has at most ``max + 1`` label values.

    Notes:
        ``other`` aggregates: sessions and revenue at risk are summed; conversion rates
        and p75 LCP (current and baseline alike) are session-weighted means of the
        members that have them. Quantiles do not merge exactly; the weighted mean of the
        p75s equals the pooled p75 when the members share a distribution, and unlike the
        max it is not driven by the smallest campaign's one slow session. Current and
        baseline use the same weights, so their ratio stays meaningful.
    """

    def __init__(self, registry: CollectorRegistry, *, max_campaign_labels: int = 50) -> None:
        if max_campaign_labels < 1:
            msg = f"max_campaign_labels must be >= 1, got {max_campaign_labels}"
            raise ValueError(msg)
        self.max_campaign_labels = max_campaign_labels
        self._define_counters(registry)
        self._define_pipeline_gauges(registry)
        self._define_campaign_gauges(registry)
        self._exported: dict[str, set[str]] = {name: set() for name in self._campaign_gauges}
        self._labelled: list[str] = []
        self._firing: set[tuple[str, str]] = set()
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}  # see _child
        self._lost_counted: dict[str, float] = {}  # alert_id -> its revenue_lost counted
        self._lost_names: set[str] = set()

    def _define_counters(self, r: CollectorRegistry) -> None:
        self.beacons = Counter("revwatch_beacons", "Beacon records read, by source and outcome.",
                               ["source", "outcome"], registry=r)
        self.orders = Counter("revwatch_orders", "Order records read, by outcome.",
                              ["outcome"], registry=r)
        self.dead_letters = Counter("revwatch_dead_letter", "Records sent to the dead-letter "
                                    "topic, by source topic and reason class.",
                                    ["topic", "reason_class"], registry=r)
        self.sessions = Counter("revwatch_sessions", "Human sessions started.", registry=r)
        self.bot_sessions = Counter("revwatch_bot_sessions",
                                    "Sessions flagged as bots (counted nowhere else).", registry=r)
        self.alerts_emitted = Counter("revwatch_alerts_emitted", "Alert updates emitted.",
                                      ["kind", "state"], registry=r)
        self.deliveries = Counter("revwatch_delivery", "Alert deliveries by receiver and outcome "
                                  "(delivered, retried, failed, dropped).",
                                  ["receiver", "outcome"], registry=r)
        self.revenue_lost = Counter(
            "revwatch_campaign_revenue_lost", "Revenue lost as the alert episodes count it "
            "(their revenue_lost), counted as it grows, by campaign and kind.",
            ["campaign", "kind"], registry=r)

    def _define_pipeline_gauges(self, r: CollectorRegistry) -> None:
        self.event_lag = Gauge("revwatch_event_lag_seconds", "Wall clock minus the event-time "
                               "watermark, per input topic.", ["topic"], registry=r)
        self.delivery_queue = Gauge("revwatch_delivery_queue_depth",
                                    "Alerts waiting for delivery, per receiver.",
                                    ["receiver"], registry=r)
        self.collector_buffered = Gauge("revwatch_collector_buffered_records", "Beacons "
                                        "accepted by the collector, not yet sent to Kafka.",
                                        registry=r)
        self.campaigns_tracked = Gauge("revwatch_campaigns_tracked",
                                       "Campaigns this worker tracks (before label bounding).",
                                       registry=r)
        self.alerts_firing = Gauge("revwatch_alerts_firing", "Firing revwatch alerts "
                                   "(1 per campaign and kind; a count for other).",
                                   ["campaign", "kind"], registry=r)
        self.site_partitions = Gauge("revwatch_site_curve_partitions", "Facts partitions "
                                     "behind this worker's site-wide slope: its own, and "
                                     "the other workers' shares.", ["source"], registry=r)
        self.site_conversions = Gauge("revwatch_site_curve_conversions", "Conversions "
                                      "behind the site-wide slope (this worker's curves and "
                                      "the other workers' shares).", registry=r)
        self.site_slope = Gauge("revwatch_site_curve_slope", "The site-wide slope of log "
                                "conversion per second of LCP (NaN before the first fit).",
                                registry=r)
        self.site_hour_factor = Gauge(
            "revwatch_site_conversion_hour_factor", "The site's hour-of-day pattern of "
            "conversion: each UTC hour's conversion against the day's mean (1 at every "
            "hour until a pattern is clear).", ["hour"], registry=r)
        self.site_day_known = Gauge(
            "revwatch_site_conversion_day_known", "1 once some campaign has learned a whole "
            "day of orders (the shop's hour-of-day pattern, or that it has none, is known); "
            "0 in the shop's first day, when partial conversion drops are tickets.",
            registry=r)

    def _define_campaign_gauges(self, r: CollectorRegistry) -> None:
        specs = {
            "sessions_per_minute": "Human sessions per minute.",
            "conversion_rate": "Converted sessions / sessions (lag-adjusted).",
            "conversion_rate_baseline": "The campaign's normal conversion rate.",
            "lcp_p75_seconds": "p75 of session LCP now, seconds.",
            "lcp_p75_baseline_seconds": "The campaign's normal p75 LCP, seconds.",
            "revenue_at_risk_per_hour": "Expected revenue lost per hour now.",
            "revenue_at_risk_per_hour_low": "Lower bound of the 90% interval of the revenue "
                                            "at risk per hour (for other: the sum of bounds).",
            "revenue_at_risk_per_hour_high": "Upper bound of the 90% interval of the revenue "
                                             "at risk per hour (for other: the sum of bounds).",
            "revenue_per_hour": "Revenue per hour the campaign's sessions bring now: sessions "
                                "per minute x 60 x conversion now x revenue per conversion.",
            "revenue_per_hour_baseline": "Revenue per hour the same sessions would bring at the "
                                         "campaign's normal conversion.",
        }
        self._campaign_gauges = {
            name: Gauge(f"revwatch_campaign_{name}", doc, ["campaign"], registry=r)
            for name, doc in specs.items()
        }

    # --- counters -------------------------------------------------------------------

    def count_beacons(self, source: str, outcome: str, n: int = 1) -> None:
        """Count beacon records (``source``: web-vitals, boomerang, canonical...)."""
        self._child(self.beacons, source, outcome).inc(n)

    def count_orders(self, outcome: str, n: int = 1) -> None:
        self._child(self.orders, outcome).inc(n)

    def _child(self, counter: Counter, *labels: str) -> Any:
        """``counter.labels(*labels)``, kept: ``labels`` takes a lock and checks its
        arguments on every call, and these counters move once per record."""
        key = (counter, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        return child

    def count_dead_letter(self, topic: str, reason: str) -> None:
        """Count one dead-lettered record; ``reason`` is mapped by :func:`reason_class`."""
        self.dead_letters.labels(topic, reason_class(reason)).inc()

    def count_sessions(self, n: int = 1, *, bot: bool = False) -> None:
        (self.bot_sessions if bot else self.sessions).inc(n)

    def count_alert(self, kind: str, state: str) -> None:
        self.alerts_emitted.labels(kind, state).inc()

    def count_revenue_lost(self, before: Iterable[Alert], emitted: Iterable[Alert],
                           after: Iterable[Alert]) -> None:
        """Add to ``revwatch_campaign_revenue_lost_total`` what the episodes say they lost
        since the last batch: the episodes open ``before`` it (restored after a restart or a
        takeover, whose figure the process before counted) from their figure then, one
        opened in it from 0, each up to its latest figure (its resolve, or ``after``).
        A figure that shrinks (a conversion drop's late orders) is not taken back: an
        episode counts its highest. Campaigns keep the label they were first counted under,
        named up to ``max_campaign_labels`` of them, then ``other``."""
        for alert in before:
            self._lost_counted.setdefault(alert.alert_id, alert.revenue_lost)
        still_open = list(after)
        for alert in [*emitted, *still_open]:
            counted = self._lost_counted.get(alert.alert_id, 0.0)
            if math.isfinite(alert.revenue_lost) and alert.revenue_lost > counted:
                self._child(self.revenue_lost, self._lost_label(alert.campaign),
                            alert.kind).inc(alert.revenue_lost - counted)
                self._lost_counted[alert.alert_id] = alert.revenue_lost
        open_ids = {alert.alert_id for alert in still_open}
        self._lost_counted = {k: v for k, v in self._lost_counted.items() if k in open_ids}

    def _lost_label(self, campaign: str) -> str:
        if campaign not in self._lost_names and len(self._lost_names) < self.max_campaign_labels:
            self._lost_names.add(campaign)
        return campaign if campaign in self._lost_names else OTHER

    def count_delivery(self, receiver: str, outcome: str) -> None:
        """Fits :class:`~streams.delivery.Dispatcher`'s ``on_outcome``."""
        self.deliveries.labels(receiver, outcome).inc()

    # --- gauges ---------------------------------------------------------------------

    def set_event_lag(self, topic: str, seconds: float) -> None:
        self.event_lag.labels(topic).set(seconds)

    def set_delivery_queue_depth(self, receiver: str, depth: int) -> None:
        """Fits :class:`~streams.delivery.Dispatcher`'s ``on_queue_depth``."""
        self.delivery_queue.labels(receiver).set(depth)

    def set_site_curve(self, own: int, shared: int, conversions: float,
                       fit: CurveFit | None) -> None:
        self.site_partitions.labels("own").set(own)
        self.site_partitions.labels("shared").set(shared)
        self.site_conversions.set(conversions)
        self.site_slope.set(math.nan if fit is None else fit.slope)

    def set_site_season(self, coefficients: npt.NDArray[np.float64] | None, *,
                        day_known: bool = True) -> None:
        """The site's hour-of-day pattern (``detectors.site_season``), one series per hour,
        and whether the site knows its day yet."""
        for hour, factor in enumerate(hour_factors(coefficients)):
            self.site_hour_factor.labels(str(hour)).set(float(factor))
        self.site_day_known.set(1.0 if day_known else 0.0)

    def set_collector_buffered(self, records: int) -> None:
        self.collector_buffered.set(records)

    def set_campaign_health(self, rows: Sequence[CampaignHealth]) -> None:
        """Export every campaign's health now; remove campaigns no longer present."""
        self.campaigns_tracked.set(len(rows))
        kept, rest = self._split(rows)
        self._labelled = [row.campaign for row in kept]
        exported = [*kept, _aggregate(rest)] if rest else kept
        for name, gauge in self._campaign_gauges.items():
            values = {row.campaign: _gauge_value(row, name) for row in exported}
            present = {c for c, v in values.items() if not math.isnan(v)}
            for campaign in present:
                gauge.labels(campaign).set(values[campaign])
            for campaign in self._exported[name] - present:
                gauge.remove(campaign)
            self._exported[name] = present

    def set_alerts_firing(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Export the firing ``(campaign, kind)`` pairs; remove the ones that stopped.

        Campaigns already labelled by :meth:`set_campaign_health` keep their name first,
        then others by name, up to ``max_campaign_labels``; the rest count under ``other``.
        """
        unique = set(pairs)
        labelled = set(self._labelled)
        ranked = sorted({c for c, _ in unique}, key=lambda c: (c not in labelled, c))
        named = set(ranked[: self.max_campaign_labels]) - {OTHER}
        counts: dict[tuple[str, str], int] = {}
        for campaign, kind in unique:
            key = (campaign if campaign in named else OTHER, kind)
            counts[key] = counts.get(key, 0) + 1
        for (campaign, kind), count in counts.items():
            self.alerts_firing.labels(campaign, kind).set(count)
        for campaign, kind in self._firing - counts.keys():
            self.alerts_firing.remove(campaign, kind)
        self._firing = set(counts)

    def _split(self, rows: Sequence[CampaignHealth]) -> tuple[list[CampaignHealth],
                                                             list[CampaignHealth]]:
        """The busiest ``max_campaign_labels`` campaigns (not named ``other``), and the rest."""
        ranked = sorted(rows, key=lambda row: (-_finite(row.sessions_per_minute), row.campaign))
        named = [row for row in ranked if row.campaign != OTHER]
        kept = named[: self.max_campaign_labels]
        kept_names = {row.campaign for row in kept}
        return kept, [row for row in ranked if row.campaign not in kept_names]


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _gauge_value(row: CampaignHealth, name: str) -> float:
    if name == "lcp_p75_seconds":
        return row.lcp_p75_ms / 1000.0
    if name == "lcp_p75_baseline_seconds":
        return row.lcp_p75_baseline_ms / 1000.0
    value: float = getattr(row, name)
    return value


def _weighted(rows: Sequence[CampaignHealth], attr: str) -> float:
    """Session-weighted mean of ``attr`` over rows that have it (nan if none do)."""
    pairs = [(_finite(r.sessions_per_minute), float(getattr(r, attr))) for r in rows]
    pairs = [(w, v) for w, v in pairs if math.isfinite(v)]
    total = math.fsum(w for w, _ in pairs)
    if not pairs:
        return math.nan
    if total <= 0:
        return math.fsum(v for _, v in pairs) / len(pairs)
    return math.fsum(w * v for w, v in pairs) / total


def _sum(rows: Sequence[CampaignHealth], attr: str) -> float:
    values = [float(getattr(r, attr)) for r in rows]
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) if finite else math.nan


def _aggregate(rows: Sequence[CampaignHealth]) -> CampaignHealth:
    """Fold campaigns beyond the label budget into one ``other`` row (see Metrics Notes)."""
    return CampaignHealth(
        campaign=OTHER,
        sessions_per_minute=_sum(rows, "sessions_per_minute"),
        conversion_rate=_weighted(rows, "conversion_rate"),
        conversion_rate_baseline=_weighted(rows, "conversion_rate_baseline"),
        lcp_p75_ms=_weighted(rows, "lcp_p75_ms"),
        lcp_p75_baseline_ms=_weighted(rows, "lcp_p75_baseline_ms"),
        revenue_at_risk_per_hour=_sum(rows, "revenue_at_risk_per_hour"),
        # the sums of the bounds: wider than the sum's own 90% interval when the campaigns'
        # errors are about normal (the quantiles of normal figures add up to at least the sum's)
        revenue_at_risk_per_hour_low=_sum(rows, "revenue_at_risk_per_hour_low"),
        revenue_at_risk_per_hour_high=_sum(rows, "revenue_at_risk_per_hour_high"),
        revenue_per_hour=_sum(rows, "revenue_per_hour"),
        revenue_per_hour_baseline=_sum(rows, "revenue_per_hour_baseline"),
    )
