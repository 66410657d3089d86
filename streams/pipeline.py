"""The detection chain without Kafka: Sessionizer -> Monitor -> IncidentManager.

The Faust agents run these same three objects, one per stage and topic; ``revwatch replay``
and the tests run them here, in one process, so that what is measured offline is what runs
live. Nothing in this module does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from detectors.incidents import Alert, IncidentManager, IncidentParams
from detectors.monitor import Monitor, MonitorParams
from detectors.verdicts import CampaignVerdict
from streams.records import Beacon, Order, SessionFact, beacon_from_dict, order_from_dict
from streams.sessions import Sessionizer
from streams.settings import Settings


def apply_fact(monitor: Monitor, fact: SessionFact) -> None:
    """Feed one session fact to the monitor (heartbeats only move the clock).

    A ``retract`` undoes the session, checkout or order fact whose fields it carries, while
    that fact's minute bucket is live (``CampaignModel.retract_session``); else the count
    stays.
    """
    if fact.kind == "session":
        monitor.observe_session(fact.campaign, fact.start_ms, fact.lcp_ms, fact.commerce,
                                device=fact.device)
    elif fact.kind == "checkout" and fact.checkout_ms is not None:
        monitor.observe_checkout(fact.campaign, fact.start_ms, fact.checkout_ms,
                                 device=fact.device)
    elif fact.kind == "order":
        monitor.observe_order(
            fact.campaign, fact.start_ms, fact.order_ts_ms or fact.start_ms, fact.revenue,
            first_order=fact.first_order, known_session=fact.known_session,
            lcp_ms=fact.lcp_ms, commerce=fact.commerce, device=fact.device,
            checkout_ms=fact.checkout_ms)
    elif fact.kind == "retract":
        _retract(monitor, fact)


def _retract(monitor: Monitor, fact: SessionFact) -> None:
    """A retract cancels an order (``order_id`` set), else a checkout (``checkout_ms`` set),
    else a session."""
    if fact.order_id is not None:
        monitor.retract_order(
            fact.campaign, fact.start_ms, fact.order_ts_ms or fact.start_ms, fact.revenue,
            first_order=fact.first_order, known_session=fact.known_session,
            lcp_ms=fact.lcp_ms, commerce=fact.commerce, device=fact.device,
            checkout_ms=fact.checkout_ms)
    elif fact.checkout_ms is not None:
        monitor.retract_checkout(fact.campaign, fact.start_ms, fact.checkout_ms,
                                 device=fact.device)
    else:
        monitor.retract_session(fact.campaign, fact.start_ms, fact.lcp_ms, fact.commerce,
                                device=fact.device)


def incident_params(settings: Settings) -> IncidentParams:
    return IncidentParams(
        false_alarms_per_campaign_day=settings.false_alarms_per_campaign_day,
        min_revenue_per_hour=settings.min_revenue_per_hour,
        currency=settings.currency, stake_weight_power=settings.conversion_stake_power)


class TickAssembler:
    """Collects verdicts by tick; a tick is complete once a later tick has begun.

    Verdicts of one tick may come from several workers (one per campaign partition), so a
    tick is released only when a verdict at least ``settle_ticks`` minutes newer arrives.
    """

    def __init__(self, settle_ms: int = 60_000) -> None:
        self.settle_ms = settle_ms
        self.pending: dict[int, dict[str, CampaignVerdict]] = {}
        self.released_ms: int | None = None

    def add(self, verdict: CampaignVerdict) -> list[tuple[int, list[CampaignVerdict]]]:
        if self.released_ms is not None and verdict.tick_ms <= self.released_ms:
            return []  # a straggler of a tick already judged
        self.pending.setdefault(verdict.tick_ms, {})[verdict.campaign] = verdict
        return self.release(verdict.tick_ms - self.settle_ms)

    def release(self, up_to_ms: int) -> list[tuple[int, list[CampaignVerdict]]]:
        ready = sorted(t for t in self.pending if t <= up_to_ms)
        out = [(t, list(self.pending.pop(t).values())) for t in ready]
        if ready:
            self.released_ms = ready[-1]
        return out


FLUSH_EVERY = 1000  # records between flushes: a replay batch, like an agent's ``take_events``


@dataclass
class Pipeline:
    """All three stages in one process, clocked by the records' event time."""

    sessionizer: Sessionizer
    monitor: Monitor
    incidents: IncidentManager

    @classmethod
    def from_settings(cls, settings: Settings, monitor_params: MonitorParams | None = None
                      ) -> Pipeline:
        return cls(Sessionizer.from_settings(settings), Monitor(monitor_params),
                   IncidentManager(incident_params(settings)))

    def beacon(self, beacon: Beacon) -> list[Alert]:
        return self._facts(self.sessionizer.observe_beacon(beacon))

    def order(self, order: Order) -> list[Alert]:
        return self._facts(self.sessionizer.observe_order(order))

    def play(self, records: Iterable[tuple[str, dict[str, Any]]]) -> list[Alert]:
        """Records as ``revwatch simulate`` gives them (``("beacon" | "order", dict)``), in
        order, flushed every ``FLUSH_EVERY`` records and at the end as the replay does; the
        alerts."""
        alerts: list[Alert] = []
        for count, (kind, obj) in enumerate(records, start=1):
            if kind == "beacon":
                alerts += self.beacon(beacon_from_dict(obj))
            else:
                alerts += self.order(order_from_dict(obj))
            if count % FLUSH_EVERY == 0:
                alerts += self.flush()
        return alerts + self.flush()

    def flush(self) -> list[Alert]:
        """Emit what became due at the current watermark (call after each batch)."""
        return self._facts(self.sessionizer.advance())

    def apply(self, facts: Iterable[SessionFact]) -> list[Alert]:
        """Feed session facts on (the sessionizer's output); the alerts they give."""
        return self._facts(facts)

    def _facts(self, facts: Iterable[SessionFact]) -> list[Alert]:
        alerts: list[Alert] = []
        for fact in facts:
            apply_fact(self.monitor, fact)
            if fact.kind == "heartbeat":
                alerts.extend(self._tick(fact.watermark_ms))
        return alerts

    def _tick(self, watermark_ms: int) -> list[Alert]:
        verdicts = self.monitor.advance(watermark_ms)
        by_tick: dict[int, list[CampaignVerdict]] = {}
        for verdict in verdicts:
            by_tick.setdefault(verdict.tick_ms, []).append(verdict)
        alerts: list[Alert] = []
        for tick in sorted(by_tick):
            alerts.extend(self.incidents.process_tick(tick, by_tick[tick]))
        return alerts
