"""Flagged minutes held back from learning, and learned once their change has lasted.

A minute the conversion or latency test flags is kept out of the conversion baseline, the
hour-of-day counts and the latency-to-conversion curve, so a checkout bug is not learned
as normal. But a change that lasts is no incident: a sale ends, a campaign's audience
changes, a new page is slower for good. Kept out for ever, it would stay an alert for
ever (measured before this: a lasting drop to x0.6 was under the alarm level in 68-100%
of the ticks of every 6 hours for three days, the baseline never moved).

So the matured minutes of a run of flags are held here, counted as the campaign would
have counted them. A run ends after ``QUIET_MINUTES`` matured minutes without a flag, and
what it held is forgotten: an incident's minutes are never learned. A run that has lasted
``CampaignParams.accept_change_minutes`` is a new normal: what it held is learned at once
(its minutes, forgotten as they would have been), and its further minutes as they
mature, until ``accept_change_minutes`` have passed without a flag. Unless its orders
stopped (:meth:`HeldMinutes.stopped`): a checkout that stays broken, on every device or
on one, is held as long as it lasts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.buckets import MINUTE_MS, MinuteBucket
from detectors.campaign_params import CampaignParams
from detectors.conv_season import ConversionSeason
from detectors.ewcounts import EwVector
from detectors.strata import CURVE_SIZE, by_stratum

__all__ = ["MIN_EXPECTED", "QUIET_MINUTES", "STOPPED_FRACTION", "HeldMinutes"]

QUIET_MINUTES = 60  # matured minutes without a flag that end a run
# a run whose orders fell below this share of the learned rate is never a new normal
STOPPED_FRACTION = 0.2
MIN_EXPECTED = 5.0  # conversions a device must have been expected to make to count


class HeldMinutes:
    """What the flagged minutes of the current run would have taught the campaign."""

    __slots__ = ("accepted", "conv", "curve_conversions", "curve_sessions", "first_ms",
                 "last_flagged_ms", "params", "season")

    def __init__(self, params: CampaignParams) -> None:
        self.params = p = params
        self.conv = EwVector(2, half_life_minutes=p.conversion_half_life_minutes)
        self.season = ConversionSeason(half_life_days=p.conversion_season_half_life_days,
                                       base_half_life_minutes=p.conversion_half_life_minutes)
        self.curve_sessions = EwVector(CURVE_SIZE, half_life_minutes=p.curve_half_life_minutes)
        self.curve_conversions = EwVector(CURVE_SIZE,
                                          half_life_minutes=p.curve_half_life_minutes)
        self.first_ms: int | None = None  # the run's first flagged minute
        self.last_flagged_ms: int | None = None
        self.accepted = False  # the run has lasted: its minutes are learned as they mature

    def hold(self, minute: int, bucket: MinuteBucket, *, season: bool) -> None:
        """A flagged matured minute (``season``: its hour-of-day counts too)."""
        if self.first_ms is None:
            self.first_ms = minute
        self.last_flagged_ms = minute
        self.conv.add_counts(minute, {0: bucket.conversions, 1: bucket.sessions})
        if season:
            self.season.learn(minute, bucket.conversions, bucket.sessions)
            self.season.learn_base(minute, bucket.sessions)
        self.curve_sessions.add_counts(minute, bucket.commerce_sessions)
        self.curve_conversions.add_counts(minute, bucket.commerce_conversions)

    def ended(self, minute: int) -> bool:
        """Whether a run was on and matured minute ``minute``, not flagged, ends it: it is
        ``QUIET_MINUTES`` after the run's last flag, or ``accept_change_minutes`` after it
        once the run was learned (a baseline moving to a new level flags now and then on
        the way; holding those minutes again would hold back the low ones and learn the
        high ones)."""
        last = self.last_flagged_ms
        quiet = self.params.accept_change_minutes if self.accepted else QUIET_MINUTES
        return last is not None and minute - last >= quiet * MINUTE_MS

    def due(self, minute: int) -> bool:
        """Whether the run has lasted long enough, at matured minute ``minute``, to be
        learned (and has not been yet)."""
        first = self.first_ms
        return (not self.accepted and first is not None
                and minute - first >= self.params.accept_change_minutes * MINUTE_MS)

    def stopped(self, conv_base: EwVector, curve_sessions: EwVector,
                curve_conversions: EwVector) -> bool:
        """Whether the run's orders stopped: below ``STOPPED_FRACTION`` of what the
        campaign's learned rates expect of its sessions, on the whole or on a device
        expecting at least ``MIN_EXPECTED``. A checkout that stays broken is no new normal,
        however long it lasts (on one device: its orders stop, the campaign's fall)."""
        held_c, held_s = self.conv.values
        base_c, base_s = conv_base.values
        if base_s > 0 and held_c < STOPPED_FRACTION * held_s * base_c / base_s:
            return True
        sessions = by_stratum(curve_sessions.values).sum(axis=1)
        rates = np.divide(by_stratum(curve_conversions.values).sum(axis=1), sessions,
                          out=np.zeros_like(sessions), where=sessions > 0)
        expected = by_stratum(self.curve_sessions.values).sum(axis=1) * rates
        seen = by_stratum(self.curve_conversions.values).sum(axis=1)
        return bool(np.any((expected >= MIN_EXPECTED) & (seen < STOPPED_FRACTION * expected)))

    def to_state(self) -> dict[str, Any] | None:
        """The held counts; ``None`` outside a run (a campaign row is written every tick)."""
        if self.first_ms is None:
            return None
        return {"c": self.conv.to_state(), "z": self.season.to_state(),
                "cs": self.curve_sessions.to_state(), "cc": self.curve_conversions.to_state(),
                "t": [self.first_ms, self.last_flagged_ms], "a": self.accepted}

    @classmethod
    def from_state(cls, state: dict[str, Any], params: CampaignParams) -> HeldMinutes:
        held = cls(params)
        held.conv = EwVector.from_state(state["c"])
        held.season = ConversionSeason.from_state(state["z"])
        held.curve_sessions = EwVector.from_state(state["cs"])
        held.curve_conversions = EwVector.from_state(state["cc"])
        held.first_ms, held.last_flagged_ms = state["t"]
        held.accepted = bool(state["a"])
        return held
