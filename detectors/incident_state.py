"""The state :class:`detectors.incidents.IncidentManager` keeps between ticks: streaks of hot
ticks, open episodes (what each has cost, and what was last emitted for it) and the
incidents that group them; each as plain data that :meth:`IncidentManager.to_state`
writes with ``dataclasses.asdict``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from detectors.verdicts import Estimate

__all__ = ["SCOPE_CAMPAIGN", "SCOPE_SITE", "Episode", "Incident", "Streak", "episode_from_state"]

SCOPE_CAMPAIGN = "campaign"
SCOPE_SITE = "site"


@dataclass(slots=True)
class Streak:
    """Consecutive hot ticks of a campaign without an open episode."""

    count: int
    first_tick_ms: int
    start_ms: int | None


@dataclass(slots=True)
class Episode:
    """One campaign's firing episode and what was last emitted for it."""

    campaign: str
    alert_id: str
    started_at: int
    kind: str
    risk: Estimate
    revenue_lost: float
    facts: dict[str, Any]
    incident_id: str = ""
    scope: str = SCOPE_CAMPAIGN
    quiet_ticks: int = 0
    emitted_ms: int | None = None
    emitted_kind: str = ""
    emitted_scope: str = ""
    emitted_risk: float = 0.0
    severity: str = ""  # the highest emitted (``detectors.severity``)
    lost_low: float = 0.0  # the 90% interval of ``revenue_lost``
    lost_high: float = 0.0

    def lost(self) -> Estimate:
        return Estimate(self.revenue_lost, self.lost_low, self.lost_high)

    def set_lost(self, lost: Estimate) -> None:
        self.revenue_lost, self.lost_low, self.lost_high = lost.value, lost.low, lost.high


@dataclass(slots=True)
class Incident:
    """Episodes of one cause family that started close together."""

    incident_id: str
    family: str
    started_at: int
    campaigns: list[str]
    site: bool = False


def episode_from_state(state: dict[str, Any]) -> Episode:
    """An episode of :meth:`IncidentManager.to_state`; one written before the interval of
    its ``revenue_lost`` was kept has the figure for both bounds, and fields this version
    does not know (a newer worker's) are left out, so a rolling upgrade can go both ways
    from here on (a worker before this one cannot read ``lost_low`` and ``lost_high``)."""
    lost = state["revenue_lost"]
    data = {"lost_low": lost, "lost_high": lost,
            **{key: value for key, value in state.items() if key in _EPISODE_FIELDS},
            "risk": Estimate(**state["risk"]), "facts": dict(state["facts"])}
    return Episode(**data)


_EPISODE_FIELDS = frozenset(f.name for f in fields(Episode))
