"""From per-campaign verdicts to alerts: false-alarm control, episodes, site incidents.

Each tick (one event-time minute) :class:`IncidentManager` takes every campaign's
:class:`~detectors.verdicts.CampaignVerdict` and

1. tests conversion across the warmed-up campaigns with Benjamini-Hochberg at level
   ``m x alpha_per_tick``, each p-value divided by its campaign's stake weight
   (:mod:`detectors.stakes`: weighted BH, mean weight 1 over the campaigns of the tick);
   latency evidence is the CUSUM's verdict, its threshold already set for the budget;
2. marks each campaign hot or quiet, with a kind (:func:`detectors.episodes.classify`);
   a data gap (no sessions in the window) and a missing verdict are quiet;
3. runs at most one episode per campaign: opened after ``open_ticks_*`` consecutive hot
   ticks (a drop counts only while the scan over the last hour shows it at
   ``conversion_hold_p``: :func:`detectors.episodes.may_open`), re-emitted at most once a
   tick (on a change of kind or scope, revenue moved by more than 20%, or every
   ``update_every_ticks``), resolved after ``quiet_ticks_to_resolve`` quiet ticks with one
   ``resolved`` alert (a ``conversion_drop`` stays while the last hour shows it).
4. files each new episode under an open incident of the same cause family that started
   within ``site_join_minutes`` of it, or a new one; an incident spanning enough campaigns
   is site-wide, and all its alerts say so.

Ticks must increase: a tick at or before the last one changes nothing and returns no
alerts (re-delivery after a restart). All of one tick's verdicts come in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from detectors import severity
from detectors.episodes import (
    FIRING,
    LATENCY,
    MINUTE_MS,
    PERFORMANCE,
    RESOLVED,
    Alert,
    Heat,
    IncidentParams,
    campaign_weights,
    classify,
    conversion_rejections,
    drop_persists,
    evidence,
    family,
    loss_for,
    lost_at_open,
    lost_so_far,
    may_open,
    next_kind,
)
from detectors.incident_state import (
    SCOPE_CAMPAIGN,
    SCOPE_SITE,
    Episode,
    Incident,
    Streak,
    episode_from_state,
)
from detectors.summary import firing_summary, resolved_summary, site_prefix
from detectors.verdicts import CampaignVerdict, Estimate

__all__ = ["Alert", "IncidentManager", "IncidentParams"]

REVENUE_MOVE = 0.2  # a firing update is re-emitted when revenue at risk moves by more than this
STATE_VERSION = 1
DEFAULT_PARAMS = IncidentParams()


class IncidentManager:
    """Turns each tick's campaign verdicts into contract alerts (see the module docstring).

    Example:
        >>> manager = IncidentManager()
        >>> manager.process_tick(60_000, [])
        []
        >>> manager.open_alerts()
        []
    """

    def __init__(self, params: IncidentParams = DEFAULT_PARAMS) -> None:
        self.params = params
        self._last_tick_ms: int | None = None
        self._streaks: dict[str, Streak] = {}
        self._episodes: dict[str, Episode] = {}
        self._incidents: dict[str, Incident] = {}

    def process_tick(self, tick_ms: int, verdicts: Sequence[CampaignVerdict]) -> list[Alert]:
        """Advance every campaign by one tick; return the alerts to emit now.

        Args:
            tick_ms: the tick (epoch ms of a whole event-time minute), after the last one.
            verdicts: every live campaign's verdict at this tick.

        Returns:
            New, updated and resolved alerts, at most one per campaign, ordered by
            incident then campaign.
        """
        if self._last_tick_ms is not None and tick_ms <= self._last_tick_ms:
            return []
        self._last_tick_ms = tick_ms
        latest = {verdict.campaign: verdict for verdict in verdicts}
        rejected = conversion_rejections([v for v in latest.values() if v.warmed_up],
                                         self.params)
        heats = {name: classify(v, name in rejected, self.params) for name, v in latest.items()}
        resolved = self._advance_episodes(tick_ms, latest, heats, rejected)
        opened = self._advance_streaks(tick_ms, latest, heats, rejected)
        for episode in sorted(opened, key=lambda e: (e.started_at, e.campaign)):
            self._join_incident(episode)
        self._update_scopes(len(latest))
        alerts = resolved + self._due_updates(tick_ms)
        self._drop_idle_incidents()
        return sorted(alerts, key=lambda alert: (alert.incident_id, alert.campaign))

    def open_alerts(self) -> list[Alert]:
        """The latest state of every firing episode, as of the last tick, by campaign."""
        if self._last_tick_ms is None:
            return []
        tick_ms = self._last_tick_ms
        return [self._firing_alert(self._episodes[name], tick_ms)
                for name in sorted(self._episodes)]

    def conversion_levels(self, verdicts: Sequence[CampaignVerdict]) -> dict[str, float]:
        """The per-tick level at which each warmed-up campaign's conversion p-value
        alone is rejected, ``w_c x alpha_per_tick`` (pure: changes nothing)."""
        warm = [verdict for verdict in verdicts if verdict.warmed_up]
        alpha = self.params.alpha_per_tick
        return {v.campaign: w * alpha
                for v, w in zip(warm, campaign_weights(warm, self.params), strict=True)}

    def _advance_episodes(self, tick_ms: int, latest: dict[str, CampaignVerdict],
                          heats: dict[str, Heat | None], rejected: set[str]) -> list[Alert]:
        resolved: list[Alert] = []
        for name, episode in list(self._episodes.items()):
            verdict, heat = latest.get(name), heats.get(name)
            if verdict is not None:
                episode.facts = evidence(verdict, name in rejected,
                                         stopped=bool(episode.facts.get("orders_stopped")))
            if heat is not None:
                episode.quiet_ticks = 0
                episode.kind = next_kind(episode.kind, heat.kind)
            elif drop_persists(episode.kind, verdict, self.params):
                episode.quiet_ticks = 0
            else:
                episode.quiet_ticks += 1
                if episode.quiet_ticks >= self.params.quiet_ticks_to_resolve:
                    resolved.append(self._resolve(episode, tick_ms))
                    continue
            episode.risk = loss_for(episode.kind, verdict)
            episode.set_lost(lost_so_far(episode.kind, verdict, episode.risk, episode.lost()))
        return resolved

    def _advance_streaks(self, tick_ms: int, latest: dict[str, CampaignVerdict],
                         heats: dict[str, Heat | None], rejected: set[str]) -> list[Episode]:
        opened: list[Episode] = []
        hot = {name for name, heat in heats.items() if heat is not None}
        for name in sorted((set(self._streaks) | hot) - set(self._episodes)):
            heat = heats.get(name)
            if heat is not None and not may_open(heat, latest[name], self.params):
                heat = classify(latest[name], False, self.params)  # what the latency says
            if heat is None:
                self._streaks.pop(name, None)
                continue
            streak = self._streaks.setdefault(name, Streak(0, tick_ms, None))
            streak.count += 1
            streak.start_ms = _earliest(streak.start_ms, heat.start_ms)
            if streak.count >= self.params.open_ticks(heat.kind):
                del self._streaks[name]
                opened.append(self._open(tick_ms, streak, heat, latest[name], rejected))
        return opened

    def _open(self, tick_ms: int, streak: Streak, heat: Heat, verdict: CampaignVerdict,
              rejected: set[str]) -> Episode:
        started = streak.first_tick_ms - MINUTE_MS if streak.start_ms is None else streak.start_ms
        started = min(started, tick_ms)
        risk = loss_for(heat.kind, verdict)
        backfill = lost_at_open(heat.kind, verdict, risk, started)
        episode = Episode(
            campaign=verdict.campaign,
            alert_id=_digest(f"{verdict.campaign}\x00{tick_ms}")[:16],
            started_at=started,
            kind=heat.kind,
            risk=risk,
            revenue_lost=backfill.value,
            lost_low=backfill.low,
            lost_high=backfill.high,
            facts=evidence(verdict, verdict.campaign in rejected),
        )
        self._episodes[verdict.campaign] = episode
        return episode

    def _join_incident(self, episode: Episode) -> None:
        cause = family(episode.kind)
        window_ms = self.params.site_join_minutes * MINUTE_MS
        near = [inc for inc in self._incidents.values()
                if inc.family == cause and abs(inc.started_at - episode.started_at) <= window_ms]
        if near:
            incident = min(near, key=lambda i: (abs(i.started_at - episode.started_at),
                                                i.incident_id))
        else:
            incident_id = "inc-" + _digest(episode.alert_id)[:12]
            incident = Incident(incident_id, cause, episode.started_at, [])
            self._incidents[incident_id] = incident
        if episode.campaign not in incident.campaigns:
            incident.campaigns.append(episode.campaign)
        incident.started_at = min(incident.started_at, episode.started_at)
        episode.incident_id = incident.incident_id

    def _update_scopes(self, campaigns_in_tick: int) -> None:
        for incident in self._incidents.values():
            count = len(incident.campaigns)
            most = count >= 2 and 0 < campaigns_in_tick <= 2 * count
            if count >= self.params.site_min_campaigns or most:
                incident.site = True  # sticky: a site incident stays one until it ends
        for episode in self._episodes.values():
            site = self._incidents[episode.incident_id].site
            episode.scope = SCOPE_SITE if site else SCOPE_CAMPAIGN
        self._price_site_slowdowns()

    def _price_site_slowdowns(self) -> None:
        """A site-wide slowdown is judged on what it costs in total, not per campaign.

        Each campaign of a site-wide slowdown sees only its share of the loss; the small
        ones alone fall under ``min_revenue_per_hour`` and would say "latency regression"
        while the incident as a whole costs real money. When the incident's slow-page loss
        (the sum over its campaigns) is costly, every campaign of it says
        ``performance_conversion_loss`` (and keeps its own revenue at risk).
        """
        members: dict[str, list[Episode]] = {}
        for episode in self._episodes.values():
            incident = self._incidents[episode.incident_id]
            if incident.site and incident.family == family(LATENCY):
                members.setdefault(incident.incident_id, []).append(episode)
        for episodes in members.values():
            if sum(e.risk.value for e in episodes) >= self.params.min_revenue_per_hour:
                for episode in episodes:
                    if episode.kind == LATENCY:
                        episode.kind = PERFORMANCE

    def _due_updates(self, tick_ms: int) -> list[Alert]:
        alerts = []
        for episode in self._episodes.values():
            if self._is_due(episode, tick_ms):
                alerts.append(self._firing_alert(episode, tick_ms))
                episode.severity = alerts[-1].evidence[severity.SEVERITY]  # as emitted
                episode.emitted_ms, episode.emitted_risk = tick_ms, episode.risk.value
                episode.emitted_kind, episode.emitted_scope = episode.kind, episode.scope
        return alerts

    def _is_due(self, episode: Episode, tick_ms: int) -> bool:
        if episode.emitted_ms is None:
            return True
        if episode.kind != episode.emitted_kind or episode.scope != episode.emitted_scope:
            return True
        if severity.rank(self._severity_now(episode)) > severity.rank(episode.severity):
            return True  # whoever it now wakes hears it at once
        if tick_ms - episode.emitted_ms >= self.params.update_every_ticks * MINUTE_MS:
            return True
        # relative move, floored so that a few dollars an hour of noise do not page anyone
        floor = max(episode.emitted_risk, self.params.min_revenue_per_hour)
        return abs(episode.risk.value - episode.emitted_risk) > REVENUE_MOVE * floor

    def _drop_idle_incidents(self) -> None:
        live = {episode.incident_id for episode in self._episodes.values()}
        for incident_id in set(self._incidents) - live:
            del self._incidents[incident_id]

    def _firing_alert(self, episode: Episode, tick_ms: int) -> Alert:
        """With the incident's revenue at risk (all its campaigns: one notification's)."""
        text = firing_summary(episode.campaign, episode.kind, episode.risk, episode.facts,
                              self.params.currency)
        alert = self._alert(episode, tick_ms, FIRING, episode.risk, self._prefix(episode) + text)
        alert.evidence[severity.INCIDENT_RISK] = self._incident_risk(episode)
        alert.evidence[severity.SEVERITY] = severity.escalated(episode.severity,
                                                               self._severity_now(episode))
        return alert

    def _incident_risk(self, episode: Episode) -> float:
        return sum(e.risk.value for e in self._episodes.values()
                   if e.incident_id == episode.incident_id)

    def _severity_now(self, episode: Episode) -> str:
        """The severity of an update emitted now, before the episode's escalation."""
        evidence = {**episode.facts, severity.INCIDENT_RISK: self._incident_risk(episode)}
        page = severity.PAGE_FACTOR * self.params.min_revenue_per_hour
        return severity.alert_severity(episode.kind, episode.risk.value, evidence, page)

    def _resolve(self, episode: Episode, tick_ms: int) -> Alert:
        del self._episodes[episode.campaign]
        minutes = (tick_ms - episode.started_at) / MINUTE_MS
        text = resolved_summary(episode.campaign, episode.kind, minutes, episode.lost(),
                                self.params.currency)
        alert = self._alert(episode, tick_ms, RESOLVED, Estimate.zero(),
                            self._prefix(episode) + text)
        alert.evidence[severity.SEVERITY] = episode.severity or self._severity_now(episode)
        return alert

    def _prefix(self, episode: Episode) -> str:
        if episode.scope != SCOPE_SITE:
            return ""
        return site_prefix(len(self._incidents[episode.incident_id].campaigns))

    @staticmethod
    def _alert(episode: Episode, tick_ms: int, state: str, risk: Estimate,
               summary: str) -> Alert:
        return Alert(
            alert_id=episode.alert_id,
            incident_id=episode.incident_id,
            scope=episode.scope,
            ts=tick_ms,
            campaign=episode.campaign,
            kind=episode.kind,
            state=state,
            started_at=episode.started_at,
            revenue_at_risk_per_hour=risk.value,
            revenue_at_risk_per_hour_low=risk.low,
            revenue_at_risk_per_hour_high=risk.high,
            revenue_lost=episode.revenue_lost,
            evidence=dict(episode.facts),
            summary=summary,
            revenue_lost_low=episode.lost_low,
            revenue_lost_high=episode.lost_high,
        )

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state (for a Faust table); :meth:`from_state` rebuilds it."""
        return {
            "version": STATE_VERSION,
            "last_tick_ms": self._last_tick_ms,
            "streaks": {name: asdict(s) for name, s in self._streaks.items()},
            "episodes": {name: asdict(e) for name, e in self._episodes.items()},
            "incidents": {key: asdict(i) for key, i in self._incidents.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any],
                   params: IncidentParams = DEFAULT_PARAMS) -> IncidentManager:
        """Rebuild a manager from :meth:`to_state` output.

        Raises:
            ValueError: the state was written by another version.
        """
        if state.get("version") != STATE_VERSION:
            msg = f"incident state version {state.get('version')!r}, expected {STATE_VERSION}"
            raise ValueError(msg)
        manager = cls(params)
        manager._last_tick_ms = state["last_tick_ms"]
        manager._streaks = {name: Streak(**s) for name, s in state["streaks"].items()}
        manager._episodes = {name: episode_from_state(e) for name, e in state["episodes"].items()}
        manager._incidents = {
            key: Incident(**{**i, "campaigns": list(i["campaigns"])})
            for key, i in state["incidents"].items()
        }
        return manager


def _earliest(first: int | None, second: int | None) -> int | None:
    return min((value for value in (first, second) if value is not None), default=None)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

