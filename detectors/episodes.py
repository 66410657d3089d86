"""What one campaign-tick says: is it hot, of what kind, and how the alert reads.

The pieces :class:`detectors.incidents.IncidentManager` is built from, each pure and
stateless: the parameters, the :class:`Alert` record of the contract, Benjamini-Hochberg
across campaigns, the choice of kind, the evidence object and the one-line summary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from detectors.first_day import orders_stopped
from detectors.stakes import stake_per_hour, stake_weights, weighted_p_values
from detectors.verdicts import CampaignVerdict, Estimate
from detectors.where import conversion_device_evidence, device_evidence

PERFORMANCE = "performance_conversion_loss"
CONVERSION = "conversion_drop"
LATENCY = "latency_regression"
KINDS = (PERFORMANCE, CONVERSION, LATENCY)
FIRING = "firing"
RESOLVED = "resolved"
MINUTE_MS = 60_000
MINUTES_PER_DAY = 1440


def family(kind: str) -> str:
    """The cause family a kind belongs to: ``"latency"`` or ``"conversion"``."""
    return "conversion" if kind == CONVERSION else "latency"


@dataclass(frozen=True, slots=True)
class IncidentParams:
    """Tunables of :class:`detectors.incidents.IncidentManager` (see its docstring)."""

    false_alarms_per_campaign_day: float = 0.02
    independent_tests_per_day: float = 16.0  # calibrated: see alpha_per_tick
    min_revenue_per_hour: float = 100.0
    open_ticks_conversion: int = 2
    open_ticks_latency: int = 1
    quiet_ticks_to_resolve: int = 10
    update_every_ticks: int = 5
    site_join_minutes: int = 15
    site_min_campaigns: int = 3
    explained_fraction_min: float = 0.5
    currency: str = "USD"
    stake_weight_power: float = 0.5  # 0: every campaign at the same level (see stakes.py)
    stake_weight_floor: float = 0.25
    stake_weight_cap: float = 4.0
    conversion_hold_p: float = 0.05  # an open conversion_drop stays while its last-hour p <= this

    def __post_init__(self) -> None:
        if not 0 < self.false_alarms_per_campaign_day < self.independent_tests_per_day:
            msg = f"false_alarms_per_campaign_day must be in (0, independent tests): {self}"
            raise ValueError(msg)
        counts = (self.open_ticks_conversion, self.open_ticks_latency,
                  self.quiet_ticks_to_resolve, self.update_every_ticks, self.site_min_campaigns)
        if min(counts) < 1 or self.site_join_minutes < 0 or not self.min_revenue_per_hour >= 0:
            msg = f"tick counts must be >= 1 and minutes, money >= 0: {self}"
            raise ValueError(msg)
        if not (self.stake_weight_power >= 0
                and 0 <= self.stake_weight_floor <= 1 <= self.stake_weight_cap):
            msg = f"need stake_weight_power >= 0 and floor <= 1 <= cap: {self}"
            raise ValueError(msg)
        if not 0 < self.conversion_hold_p < 1:
            msg = f"conversion_hold_p must be in (0, 1): {self}"
            raise ValueError(msg)
        if not 0 <= self.explained_fraction_min <= 1 or not self.currency:
            msg = f"explained_fraction_min must be in [0, 1] and currency set: {self}"
            raise ValueError(msg)

    @property
    def alpha_per_tick(self) -> float:
        """The Benjamini-Hochberg level of one tick (one minute).

        The scan's windows (10 to 120 minutes) overlap from one tick to the next, so the
        1,440 tests of a day are far from independent, and the two-hot-tick rule and the
        10% tolerance make each one conservative: the budget is spread over
        ``independent_tests_per_day``, an effective count *calibrated* so that the
        realised false-alarm episodes on simulated days with no incident do not exceed the
        budget at any traffic level. ``bench/conversion_calibrate.py`` (2,000 null days
        at each of 0.25, 0.5, 1, 1.5, 3, 6 orders/min, seed 2) finds the level that
        spends 0.02 per campaign-day: 8.4, 10.3, 15.8, 12.9, 12.2, 7.8 tests a day by
        traffic level, 11.1 pooled; 16 is the conservative one (1 order/min). The old
        rough guess, 24 (one per hour), spent about 0.0073 (docs/CONVERSION-POWER.md).
        Calibrated at the default budget only: at looser budgets the ratio differs.
        """
        return self.false_alarms_per_campaign_day / self.independent_tests_per_day

    def open_ticks(self, kind: str) -> int:
        """Consecutive hot ticks that open an episode whose tick is of ``kind``."""
        return self.open_ticks_conversion if kind == CONVERSION else self.open_ticks_latency


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert update, field for field the contract's "Alert" (CONTRACT.md)."""

    alert_id: str
    incident_id: str
    scope: str
    ts: int
    campaign: str
    kind: str
    state: str
    started_at: int
    revenue_at_risk_per_hour: float
    revenue_at_risk_per_hour_low: float
    revenue_at_risk_per_hour_high: float
    revenue_lost: float
    evidence: dict[str, Any]
    summary: str
    # the 90% interval of ``revenue_lost`` (an extension of the contract's alert; an alert
    # of an older worker reads with ``revenue_lost`` for both)
    revenue_lost_low: float = 0.0
    revenue_lost_high: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able object of the contract (``nan`` becomes ``None``)."""
        data = {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}
        data["evidence"] = {key: _json_value(v) for key, v in self.evidence.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Rebuild an alert from :meth:`to_dict` output (extra keys are ignored)."""
        names = {f.name for f in fields(cls)}
        lost = data.get("revenue_lost", 0.0)
        return cls(**{"revenue_lost_low": lost, "revenue_lost_high": lost,
                      **{key: value for key, value in data.items() if key in names}})


@dataclass(frozen=True, slots=True)
class Heat:
    """Why one campaign-tick is hot: its kind and the start its evidence points to."""

    kind: str
    start_ms: int | None


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Benjamini-Hochberg step-up: which hypotheses are rejected at FDR level ``alpha``.

    Args:
        p_values: one p-value per hypothesis; ``nan`` counts as 1 (never rejected).
        alpha: the false discovery rate, in (0, 1).

    Returns:
        ``rejected[i]`` for each p-value, in the given order.

    Notes:
        Rejects the ``k`` smallest p-values, ``k`` the largest rank with
        ``p_(k) <= k * alpha / m``; checked against ``scipy.stats.false_discovery_control``
        in ``tests/unit/test_incidents.py``. Controls the FDR for independent or
        positively dependent tests (campaigns sharing a site).

    >>> benjamini_hochberg([0.02, 0.025, 0.9], 0.05)
    [True, True, False]
    """
    clean = [1.0 if math.isnan(p) else p for p in p_values]
    order = sorted(range(len(clean)), key=clean.__getitem__)
    cutoff = 0
    for rank, index in enumerate(order, start=1):
        if clean[index] <= rank * alpha / len(clean):
            cutoff = rank
    rejected = [False] * len(clean)
    for index in order[:cutoff]:
        rejected[index] = True
    return rejected


def conversion_rejections(warm: Sequence[CampaignVerdict], params: IncidentParams) -> set[str]:
    """The warmed-up campaigns whose conversion test rejects at this tick.

    Benjamini-Hochberg at level ``m * alpha``: the false-alarm budget is per campaign, so
    m campaigns may spend m budgets, and BH keeps the share of false ones among the
    rejections at that level (a single drop needs ``p <= alpha``; several at once need
    less each, which is what a site-wide problem looks like). Weighted (Genovese, Roeder &
    Wasserman 2006): each p-value is divided by its campaign's stake weight
    (:func:`campaign_weights`), so a campaign alone needs ``p <= w * alpha``.
    """
    level = min(params.alpha_per_tick * max(len(warm), 1), 0.05)
    flags = benjamini_hochberg(weighted_p_values(
        [v.conversion_p_value for v in warm], campaign_weights(warm, params)), level)
    return {verdict.campaign for verdict, flag in zip(warm, flags, strict=True) if flag}


def campaign_weights(warm: Sequence[CampaignVerdict], params: IncidentParams) -> list[float]:
    """Each campaign's stake weight (:mod:`detectors.stakes`), mean 1 over ``warm``."""
    return stake_weights([stake_per_hour(v) for v in warm], params.stake_weight_power,
                         params.stake_weight_floor, params.stake_weight_cap)


def classify(verdict: CampaignVerdict, conversion_rejected: bool,
             params: IncidentParams) -> Heat | None:
    """The kind of a campaign-tick, or ``None`` when it is not hot.

    A data gap (no sessions in the window) is never hot. The start is the earliest of the
    latency change point (if latency regressed) and the conversion drop's onset (if the
    conversion test rejected): the window start of the test that decided its p-value
    (``funnel.onset_of``), or the campaign's window's from a verdict without one.
    """
    if verdict.sessions_in_window <= 0:
        return None
    latency = verdict.latency_regressed
    if conversion_rejected:
        kind = PERFORMANCE if latency and _slow_pages_explain(verdict, params) else CONVERSION
    elif latency:
        costly = verdict.slow_page_loss_per_hour.value >= params.min_revenue_per_hour
        kind = PERFORMANCE if costly else LATENCY
    else:
        return None
    onset = verdict.conversion_onset_ms
    starts = [verdict.latency_started_ms if latency else None,
              (verdict.conversion_window_start_ms if onset is None else onset)
              if conversion_rejected else None]
    known = [start for start in starts if start is not None]
    return Heat(kind, min(known) if known else None)


def drop_persists(kind: str, verdict: CampaignVerdict | None, params: IncidentParams) -> bool:
    """Whether an open episode of ``kind`` is held open by conversion evidence although its
    tick is not hot: hysteresis, the resolve rule of a two-threshold detector.

    An episode opens when the scan's p-value passes the false-alarm level (about 1e-3 a
    tick), but a real drop does not keep it there: a 50% drop at 1.4 orders a minute
    hovers at 1e-3 to 4e-3 for many minutes on end while the orders stay at half of
    normal (docs/STATISTICS.md, "Episodes"). So a ``conversion_drop`` counts as quiet only
    once the scan over the last hour (windows of 10 to 60 minutes, Bonferroni over them:
    ``conversion_recent_p_value``) no longer shows the drop at ``conversion_hold_p``. The
    120-minute window is left out: it holds a drop's minutes for two hours after its
    start and kept episodes open 68-79 minutes after the drop had ended (benchmark seeds
    13-16). The false-alarm budget is spent on opening; holding an open episode raises
    no new alarm.
    """
    if kind != CONVERSION or verdict is None or verdict.sessions_in_window <= 0:
        return False
    return verdict.conversion_recent_p_value <= params.conversion_hold_p


def may_open(heat: Heat, verdict: CampaignVerdict | None, params: IncidentParams) -> bool:
    """Whether a hot tick may open (or count towards opening) an episode with the conversion
    test's evidence: a drop only while the last hour's scan shows it, the rule that holds an
    open one
    (:func:`drop_persists`). The 120-minute window keeps a drop's minutes for two hours
    after it began, and as their orders mature its p-value can pass the level again after
    the episode resolved (benchmark seeds 8 and 9): what the last hour does not show is
    not at risk now. Without it the tick is classified on its latency alone.
    """
    return heat.kind != CONVERSION or drop_persists(CONVERSION, verdict, params)


def next_kind(current: str, latest: str) -> str:
    """The kind follows the latest hot tick but never downgrades to a latency regression."""
    if latest == LATENCY and current != LATENCY:
        return current
    return latest


def _slow_pages_explain(verdict: CampaignVerdict, params: IncidentParams) -> bool:
    fraction = verdict.explained_fraction
    if not math.isnan(fraction) and fraction >= params.explained_fraction_min:
        return True
    slow, lost = verdict.slow_page_loss_per_hour, verdict.conversion_loss_per_hour
    return slow.high > 0 and slow.low <= lost.high and lost.low <= slow.high


def loss_for(kind: str, verdict: CampaignVerdict | None) -> Estimate:
    """Revenue at risk per hour for an episode of ``kind`` (zero without a verdict)."""
    if verdict is None:
        return Estimate.zero()
    est = verdict.slow_page_loss_per_hour
    if kind == CONVERSION:
        est = verdict.conversion_loss_per_hour
    parts = [max(x, 0.0) if math.isfinite(x) else 0.0 for x in (est.value, est.low, est.high)]
    return Estimate(parts[0], min(parts[1], parts[0]), max(parts[2], parts[0]))


def lost_so_far(kind: str, verdict: CampaignVerdict | None, risk: Estimate,
                before: Estimate) -> Estimate:
    """What an episode has cost by this tick, with a 90% interval, from ``before`` at the
    last. A conversion drop's cost is the money of the orders missing by now since its
    onset (``conversion_lost_so_far``), which stops growing once the orders are back,
    though the episode is held open; while none is priced it stays as it was. Slow pages
    add the money of the tick's newest closed minute (``slow_page_lost_minute``), so each
    minute counts once, when its beacons are in. Otherwise (a conversion drop priced
    without it, and a verdict of an older worker) a tick adds a minute of the risk per hour.

    The interval carries the relative bounds of the tick's risk per hour (``risk``): its
    width comes mostly from the curve's and the order value's errors, which every minute
    shares, so the minutes' bounds add up (the coverage over the benchmark's incidents:
    docs/STATISTICS.md, "What a slowdown has cost")."""
    if verdict is not None and kind == CONVERSION and verdict.conversion_lost_so_far > 0:
        return _bounded(verdict.conversion_lost_so_far, risk)
    if verdict is None or kind == CONVERSION or verdict.slow_page_minute_ms is None:
        return _plus(before, risk.value / 60, risk)
    return _plus(before, verdict.slow_page_lost_minute, risk)


def lost_at_open(kind: str, verdict: CampaignVerdict, risk: Estimate, started_ms: int
                 ) -> Estimate:
    """What an episode opening at ``verdict``'s tick has cost since ``started_ms``: a
    conversion drop's ``conversion_lost_so_far`` when priced; slow pages, the risk per
    hour over the minutes from the start to the newest closed one (the later ones are
    added by the ticks that close them, :func:`lost_so_far`); otherwise the risk per
    hour over the minutes to the tick. With the risk's interval, as there."""
    if kind == CONVERSION and verdict.conversion_lost_so_far > 0:
        return _bounded(verdict.conversion_lost_so_far, risk)
    end_ms = verdict.tick_ms
    if kind != CONVERSION and verdict.slow_page_minute_ms is not None:
        end_ms = verdict.slow_page_minute_ms + MINUTE_MS
    return risk.scaled(max(end_ms - started_ms, 0) / MINUTE_MS / 60)


def _relative(risk: Estimate) -> tuple[float, float]:
    """The bounds of ``risk`` as multiples of its value (1 and 1 without one)."""
    if risk.value > 0 and math.isfinite(risk.low) and math.isfinite(risk.high):
        return risk.low / risk.value, risk.high / risk.value
    return 1.0, 1.0


def _bounded(amount: float, risk: Estimate) -> Estimate:
    low, high = _relative(risk)
    return Estimate(amount, amount * low, amount * high)


def _plus(before: Estimate, amount: float, risk: Estimate) -> Estimate:
    """``before`` plus ``amount`` with ``risk``'s relative bounds, kept at 0 or more and
    in order (a minute faster than normal counts below 0)."""
    low, high = _relative(risk)
    value = max(before.value + amount, 0.0)
    return Estimate(value, min(max(before.low + amount * low, 0.0), value),
                    max(before.high + amount * high, value))


def evidence(verdict: CampaignVerdict, conversion_rejected: bool, *,
             stopped: bool = False) -> dict[str, Any]:
    """The alert's evidence object: rates, p75s, window size, test statistics.
    ``orders_stopped`` is true from the tick the orders surely stopped to the end of the
    episode (``stopped``: they did at an earlier tick of it), so a first-day drop that
    paged does not go back to "may be the shop's daily rhythm" when a later window, with
    some orders of the minutes before the stop in it, no longer proves it."""
    values: dict[str, Any] = {
        "conversion_rate": verdict.conversion_rate,
        "conversion_rate_baseline": verdict.conversion_rate_baseline,
        "lcp_p75_ms": verdict.lcp_p75_ms,
        "lcp_p75_baseline_ms": verdict.lcp_p75_baseline_ms,
        "sessions_in_window": verdict.sessions_in_window,
        "sessions_per_minute": verdict.sessions_per_minute,
        "latency_cusum": verdict.latency_statistic,
        "latency_threshold": verdict.latency_threshold,
        "latency_shift_log": verdict.latency_shift,
        "conversion_p_value": verdict.conversion_p_value,
        "conversion_observed": verdict.conversion_observed,
        "conversion_expected": verdict.conversion_expected,
        "conversion_window_minutes": window_minutes(verdict),
        "explained_fraction": verdict.explained_fraction,
        "average_order_value": verdict.average_order_value,
        "revenue_per_conversion": verdict.conversion_value,
        "latency_regressed": verdict.latency_regressed,
        "conversion_significant": conversion_rejected,
        "day_known": verdict.conversion_day_known,
        "orders_stopped": stopped or orders_stopped(verdict),
        "checkout_p_value": verdict.checkout_p_value,
        "checkout_orders_observed": verdict.checkout_observed,
        "checkout_orders_expected": verdict.checkout_expected,
        "checkout_window_minutes": _minutes_since(verdict, verdict.checkout_window_start_ms),
        "reach_p_value": verdict.reach_p_value,
        "reach_checkouts_observed": verdict.reach_observed,
        "reach_checkouts_expected": verdict.reach_expected,
        "reach_window_minutes": _minutes_since(verdict, verdict.reach_window_start_ms),
    }
    return {**{key: _json_value(value) for key, value in values.items()},
            **device_evidence(verdict.devices),
            **conversion_device_evidence(verdict.conversion_devices)}


def window_minutes(verdict: CampaignVerdict) -> int | None:
    """Minutes of the conversion scan's best window (the one ``conversion_observed`` and
    ``conversion_expected`` are of); None before the scan has one."""
    return _minutes_since(verdict, verdict.conversion_window_start_ms)


def _minutes_since(verdict: CampaignVerdict, start_ms: int | None) -> int | None:
    return None if start_ms is None else round((verdict.tick_ms - start_ms) / MINUTE_MS)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
