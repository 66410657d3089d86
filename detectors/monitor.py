"""Many campaigns: route facts to their models, tick them together, evict the idle.

The monitor is what the campaign agent and the replay driver both run. It ticks every
campaign once per whole event-time minute that the watermark crosses and returns one
:class:`~detectors.verdicts.CampaignVerdict` per campaign per tick. It also fits the
site-wide latency-to-conversion curve that every campaign's curve is shrunk towards.

State is kept so that a Faust table can hold it with few writes: one key per campaign
(what it learned, written once per tick) and one per campaign-minute bucket (written when
the bucket changed). ``drain_changes()`` returns exactly those keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.buckets import MINUTE_MS, MinuteBucket, minute_of
from detectors.campaign import CampaignModel, CampaignParams
from detectors.campaign_state import model_from_state, model_to_state
from detectors.conv_season import HOUR_MS, SLOTS
from detectors.elasticity import CurveFit
from detectors.site import SlopeShare, share_of, with_shares
from detectors.site_season import fit_site_pattern, season_share_of
from detectors.strata import fit_common_slope
from detectors.verdicts import CampaignVerdict

FloatArray = npt.NDArray[np.float64]

MODEL_KEY = "model"
SITE_PRIOR_SD = 1.0  # the site slope's own prior, N(0, 1) per second of LCP
SEPARATOR = "|"
OVERFLOW = "(other)"  # where sessions of campaigns beyond ``max_campaigns`` are counted


@dataclass(frozen=True, slots=True)
class MonitorParams:
    """Tunables shared by every campaign of one monitor."""

    campaign: CampaignParams = field(default_factory=CampaignParams)
    idle_ttl_minutes: int = 24 * 60
    site_refit_minutes: int = 10
    max_catchup_minutes: int = 180
    max_campaigns: int = 1000
    # another partition's share counts this long: as long as its campaigns are kept (a
    # share describes curves of a 3-day half-life; workers reading a backlog may be
    # hours apart in event time)
    site_share_max_age_minutes: int = 24 * 60

    def __post_init__(self) -> None:
        if self.max_campaigns < 1 or self.idle_ttl_minutes < 1:
            msg = "max_campaigns and idle_ttl_minutes must be >= 1"
            raise ValueError(msg)


class Monitor:
    """Campaign models keyed by campaign name, ticked by event time."""

    def __init__(self, params: MonitorParams | None = None,
                 group_of: Callable[[str], int] | None = None) -> None:
        """``group_of``: a campaign's facts partition, when this monitor holds some of the
        site's partitions and shares the site slope with the others (``detectors/site.py``);
        ``None``: it holds every campaign (the replay, one worker)."""
        self.params = params or MonitorParams()
        self.group_of = group_of
        self.shares: dict[int, SlopeShare] = {}  # other workers' partitions; soft state
        self._new_shares: dict[int, SlopeShare] = {}  # this monitor's, to send
        self.site_sources: tuple[int, int] = (0, 0)  # partitions behind the site fit: own, others
        self.site_conversions = 0.0  # conversions behind it: own curves and others' shares
        self.models: dict[str, CampaignModel] = {}
        self.last_tick_ms: int | None = None
        self.site_fit: CurveFit | None = None
        self._site_fit_tick: int | None = None
        # the site's hour-of-day pattern (``detectors.site_season``), fitted once an hour
        self.site_season: FloatArray | None = None
        self._season_hour: int | None = None
        self._dirty_models: set[str] = set()
        self._evicted: dict[str, list[int]] = {}

    def name_of(self, campaign: str) -> str:
        """The model a campaign's facts go to: its own, or ``(other)`` once ``max_campaigns``
        campaigns are tracked (so a client inventing campaigns cannot grow state or labels
        without bound; the campaigns already tracked keep their own models)."""
        if campaign in self.models or len(self.models) < self.params.max_campaigns:
            return campaign
        return OVERFLOW

    def model(self, campaign: str) -> CampaignModel:
        found = self.models.get(campaign)  # a tracked campaign: its own model
        if found is not None:
            return found
        name = self.name_of(campaign)
        found = self.models.get(name)
        if found is None:
            found = self.models[name] = CampaignModel(self.params.campaign)
            found.season.set_prior(self.site_season)
        return found

    def observe_session(self, campaign: str, start_ms: int, lcp_ms: float | None,
                        commerce: bool, *, device: str | None = None) -> None:
        self.model(campaign).observe_session(start_ms, lcp_ms, commerce, device=device)

    def observe_checkout(self, campaign: str, start_ms: int, checkout_ms: int, *,
                         device: str | None = None) -> None:
        """A session of ``campaign`` (started at ``start_ms``) reached the checkout at
        ``checkout_ms`` (``detectors.funnel``, counted per checkout minute; and
        ``detectors.reach``, per session minute)."""
        del device  # neither is kept per device
        self.model(campaign).observe_checkout(checkout_ms, start_ms)
        self._dirty_models.add(self.name_of(campaign))

    def retract_checkout(self, campaign: str, start_ms: int, checkout_ms: int, *,
                         device: str | None = None) -> bool:
        """Undo :meth:`observe_checkout` while its minute is live; False: left as counted."""
        del device
        name = self.name_of(campaign)
        model = self.models.get(name)
        if model is None or not model.retract_checkout(checkout_ms, start_ms):
            return False
        self._dirty_models.add(name)
        return True

    def observe_order(self, campaign: str, start_ms: int, order_ts_ms: int, revenue: float, *,
                      first_order: bool, known_session: bool, lcp_ms: float | None = None,
                      commerce: bool = True, device: str | None = None,
                      checkout_ms: int | None = None) -> None:
        self.model(campaign).observe_order(
            start_ms, order_ts_ms, revenue, first_order=first_order,
            known_session=known_session, lcp_ms=lcp_ms, commerce=commerce, device=device,
            checkout_ms=checkout_ms)
        self._dirty_models.add(self.name_of(campaign))

    def retract_session(self, campaign: str, start_ms: int, lcp_ms: float | None,
                        commerce: bool, *, device: str | None = None) -> bool:
        """Undo :meth:`observe_session` (see :meth:`CampaignModel.retract_session`)."""
        name = self.name_of(campaign)
        model = self.models.get(name)
        if model is None or not model.retract_session(start_ms, lcp_ms, commerce, device=device):
            return False
        if model.latency.rescore_from is not None:  # stored, so a restarted worker re-scores too
            self._dirty_models.add(name)
        return True

    def retract_order(self, campaign: str, start_ms: int, order_ts_ms: int, revenue: float, *,
                      first_order: bool, known_session: bool, lcp_ms: float | None = None,
                      commerce: bool = True, device: str | None = None,
                      checkout_ms: int | None = None) -> bool:
        """Undo :meth:`observe_order` (see :meth:`CampaignModel.retract_order`)."""
        name = self.name_of(campaign)
        model = self.models.get(name)
        if model is None or not model.retract_order(
                start_ms, order_ts_ms, revenue, first_order=first_order,
                known_session=known_session, lcp_ms=lcp_ms, commerce=commerce, device=device,
                checkout_ms=checkout_ms):
            return False
        self._dirty_models.add(name)
        return True

    def advance(self, watermark_ms: int) -> list[CampaignVerdict]:
        """Tick every whole minute up to ``watermark_ms``; verdicts of all those ticks."""
        target = minute_of(watermark_ms)
        if self.last_tick_ms is None:
            self.last_tick_ms = target - MINUTE_MS
        first = max(self.last_tick_ms + MINUTE_MS,
                    target - self.params.max_catchup_minutes * MINUTE_MS)
        verdicts: list[CampaignVerdict] = []
        for tick in range(first, target + 1, MINUTE_MS):
            verdicts.extend(self.tick(tick))
        self.last_tick_ms = max(self.last_tick_ms, target)
        return verdicts

    def tick(self, tick_ms: int) -> list[CampaignVerdict]:
        """One tick of every campaign (the monitor's own clock is advanced by ``advance``)."""
        self._evict_idle(tick_ms)
        self._refit_site(tick_ms)
        verdicts = [model.tick(name, tick_ms, self.site_fit)
                    for name, model in sorted(self.models.items())]
        self._dirty_models.update(self.models)
        return verdicts

    def _evict_idle(self, tick_ms: int) -> None:
        horizon = tick_ms - self.params.idle_ttl_minutes * MINUTE_MS
        for name in [n for n, m in self.models.items() if m.last_seen_ms < horizon]:
            model = self.models.pop(name)
            minutes = [minute for minute, _ in model.ring.span(0, tick_ms + 1)]
            self._evicted[name] = [*model.dropped, *model.touched, *minutes]

    def _refit_site(self, tick_ms: int) -> None:
        last = self._site_fit_tick
        if last is not None and tick_ms - last < self.params.site_refit_minutes * MINUTE_MS:
            return
        self._site_fit_tick = tick_ms
        named = sorted(self.models.items())  # a fixed order
        self.site_conversions = 0.0  # until _fit_site counts them (none without campaigns)
        groups = _grouped(named, self.group_of)
        remote = self._remote_shares(tick_ms, groups.keys()) if named else []
        self.site_sources = (len(groups), len(remote))
        self.site_fit = self._fit_site([m for _, m in named], remote) if named else None
        if self.params.campaign.conversion_seasonality:
            self._refit_season(tick_ms, [m for _, m in named], remote)
        if self.group_of is not None:
            slope = 0.0 if self.site_fit is None else self.site_fit.slope
            self._take_shares(tick_ms, groups, slope)

    def _fit_site(self, models: list[CampaignModel], remote: list[SlopeShare]) -> CurveFit | None:
        """The site curve: one stratum per campaign and device, a common slope (each its own
        level), with the other partitions' shares in the prior."""
        mean, sd = with_shares(0.0, SITE_PRIOR_SD, remote)
        sessions, conversions = _curve_data(models)
        self.site_conversions = float(conversions.sum()) + sum(s.conversions for s in remote)
        fit = fit_common_slope(sessions, conversions, prior_slope=mean, prior_slope_sd=sd)
        if fit is not None:
            return fit.curve()
        if remote:  # too few conversions here: the other partitions' slope alone
            return CurveFit(0.0, mean, ((0.0, 0.0), (0.0, sd * sd)), 0.0, 0.0)
        return None

    def _refit_season(self, tick_ms: int, models: list[CampaignModel],
                      remote: list[SlopeShare]) -> None:
        """The site's hour-of-day pattern, once an hour, given to every campaign."""
        shares = [share.season for share in remote if share.season is not None]
        if tick_ms // HOUR_MS != self._season_hour:
            self._season_hour = tick_ms // HOUR_MS
            self.site_season = fit_site_pattern(*_season_data(models), shares)
        site_day = bool(shares) or any(model.season.whole_day() for model in models)
        for model in models:
            model.season.set_prior(self.site_season, site_day=site_day)

    def _remote_shares(self, tick_ms: int, local: Iterable[int]) -> list[SlopeShare]:
        """The other partitions' shares young enough to count (a partition held here counts
        by its own data, whatever another worker last said of it)."""
        oldest = tick_ms - self.params.site_share_max_age_minutes * MINUTE_MS
        held = set(local)
        return [share for group, share in sorted(self.shares.items())
                if group not in held and share.tick_ms >= oldest]

    def _take_shares(self, tick_ms: int, groups: dict[int, list[CampaignModel]],
                     slope: float) -> None:
        seasonal = self.params.campaign.conversion_seasonality
        for group, models in groups.items():
            share = share_of(*_curve_data(models), slope, tick_ms)
            if share is None:
                continue
            season = season_share_of(*_season_data(models), self.site_season) \
                if seasonal else None
            self._new_shares[group] = share if season is None else replace(share, season=season)

    def receive_share(self, group: int, share: SlopeShare) -> None:
        """Another worker's share of facts partition ``group`` (an older one is ignored)."""
        held = self.shares.get(group)
        if held is None or share.tick_ms >= held.tick_ms:
            self.shares[group] = share

    @property
    def site_day_known(self) -> bool:
        """Whether the site knows its day: some campaign here, or a share from another
        worker, has a whole day learned (``detectors.first_day``). Always true without
        hour-of-day factors."""
        return (not self.params.campaign.conversion_seasonality
                or any(m.season.day_known() for m in self.models.values()))

    def drain_shares(self) -> dict[int, SlopeShare]:
        """This monitor's shares taken since the last drain, by facts partition."""
        shares, self._new_shares = self._new_shares, {}
        return shares

    # -- storage ----------------------------------------------------------------------------
    def drain_changes(self) -> dict[str, Any]:
        """Table keys changed since the last drain: value = state, or None to delete."""
        changes: dict[str, Any] = {}
        for name, minutes in self._evicted.items():
            changes[_key(name, MODEL_KEY)] = None
            for minute in minutes:
                changes[_key(name, str(minute))] = None
        for name, model in self.models.items():
            for minute in model.dropped:
                changes[_key(name, str(minute))] = None
            for minute in model.touched:
                bucket = model.ring.get(minute)
                changes[_key(name, str(minute))] = bucket.to_state() if bucket else None
            model.dropped.clear()
            model.touched.clear()
        site = self._site_state()
        for name in self._dirty_models & self.models.keys():
            changes[_key(name, MODEL_KEY)] = {**model_to_state(self.models[name]), "site": site}
        self._dirty_models.clear()
        self._evicted.clear()
        return changes

    def _site_state(self) -> dict[str, Any] | None:
        if self._site_fit_tick is None:
            return None
        fit = None if self.site_fit is None else self.site_fit.to_state()
        season = None if self.site_season is None else self.site_season.tolist()
        return {"fit": fit, "tick": self._site_fit_tick, "season": season,
                "season_hour": self._season_hour}

    def _restore_site(self, state: dict[str, Any] | None) -> None:
        if state is None or (self._site_fit_tick is not None
                             and state["tick"] <= self._site_fit_tick):
            return
        self._site_fit_tick = int(state["tick"])
        self.site_fit = None if state["fit"] is None else CurveFit.from_state(state["fit"])
        season = state.get("season")  # older rows: none, fitted again at the next tick
        self.site_season = None if season is None else np.asarray(season, dtype=np.float64)
        self._season_hour = state.get("season_hour")

    def restore(self, items: Iterable[tuple[str, Any]]) -> None:
        """Load table items written by :meth:`drain_changes` (any order)."""
        buckets: list[tuple[str, int, Any]] = []
        for key, state in items:
            name, _, part = key.rpartition(SEPARATOR)
            if part == MODEL_KEY:
                self.models[name] = model_from_state(state, self.params.campaign)
                self._restore_site(state.get("site"))
            else:
                buckets.append((name, int(part), state))
        for name, minute, state in buckets:
            self.model(name).ring.restore(minute, MinuteBucket.from_state(state))
        ticks = [t for m in self.models.values() if (t := m.last_tick_ms()) is not None]
        if ticks and self.last_tick_ms is None:
            self.last_tick_ms = max(ticks)


def _grouped(named: list[tuple[str, CampaignModel]], group_of: Callable[[str], int] | None
             ) -> dict[int, list[CampaignModel]]:
    groups: dict[int, list[CampaignModel]] = {}
    for name, model in named:
        groups.setdefault(0 if group_of is None else group_of(name), []).append(model)
    return groups


def _curve_data(models: list[CampaignModel]) -> tuple[FloatArray, FloatArray]:
    """The models' curve vectors, one after the other: sessions, conversions."""
    return (np.concatenate([m.curve_sessions.values for m in models]),
            np.concatenate([m.curve_conversions.values for m in models]))


def _season_data(models: list[CampaignModel]) -> tuple[FloatArray, FloatArray]:
    """Conversions and sessions by hour slot (campaigns x 24) of the campaigns with a whole
    day learned: the site pattern's strata."""
    seasons = [m.season for m in models if m.season.whole_day()]
    if not seasons:
        return np.zeros((0, SLOTS)), np.zeros((0, SLOTS))
    return (np.stack([s.conversions.values for s in seasons]),
            np.stack([s.sessions.values for s in seasons]))


def _key(campaign: str, part: str) -> str:
    return f"{campaign}{SEPARATOR}{part}"
