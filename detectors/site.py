"""The site-wide slope when the campaigns are spread over several workers.

Each worker holds the campaigns of its facts partitions, and the site-wide slope that
every campaign's curve is shrunk towards needs all of them. Sending every campaign's curve
data to every worker would grow with the campaigns; instead each worker sends, per facts
partition it holds, that partition's **share**: what its campaigns' strata say about the
common slope, as a Gaussian in the slope (the profile log-likelihood's quadratic around the
site slope: ``mean = slope + gradient / information``, and ``information``). A worker fits
the site slope on its own strata exactly, with the other partitions' shares added to the
prior, so the slope it finds is the slope of the whole site to second order around the
slope the shares were taken at, and that slope is the last site fit. Held by the partition,
not the worker, a share has one owner at a time: after a rebalance the new owner's share
replaces the old one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from detectors.site_season import SeasonShare
from detectors.strata import profile_score


@dataclass(frozen=True, slots=True)
class SlopeShare:
    """One facts partition's evidence on the site slope, taken at tick ``tick_ms``.

    Attributes:
        tick_ms: the event-time tick of the site fit it was taken at.
        mean: the slope its strata alone point to (one Newton step from the site slope).
        information: the profile information of its strata in the slope (1 / variance).
        conversions: the conversions behind it.
        season: its evidence on the site's hour-of-day pattern, if any
            (``detectors.site_season``; older workers send none).
    """

    tick_ms: int
    mean: float
    information: float
    conversions: float
    season: SeasonShare | None = None

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"tick_ms": self.tick_ms, "mean": self.mean,
                                 "information": self.information,
                                 "conversions": self.conversions}
        if self.season is not None:
            state["season"] = self.season.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SlopeShare:
        """Read :meth:`to_state`'s dict back.

        Raises:
            ValueError: for a missing field, a non-finite mean or a non-positive information.
        """
        try:
            season = state.get("season")
            share = cls(int(state["tick_ms"]), float(state["mean"]),
                        float(state["information"]), float(state["conversions"]),
                        None if season is None else SeasonShare.from_state(season))
        except (KeyError, TypeError) as exc:
            msg = f"not a slope share: {exc!r}"
            raise ValueError(msg) from exc
        if not (math.isfinite(share.mean) and share.information > 0.0
                and math.isfinite(share.information)):
            msg = f"not a slope share: mean {share.mean}, information {share.information}"
            raise ValueError(msg)
        return share


def share_of(sessions: npt.ArrayLike, conversions: npt.ArrayLike, slope: float,
             tick_ms: int) -> SlopeShare | None:
    """The share of the strata in ``sessions``/``conversions`` (curve vectors, concatenated
    or stacked) at the site slope ``slope``; ``None`` when they carry no information."""
    gradient, information, converted = profile_score(sessions, conversions, slope)
    if not (information > 0.0 and math.isfinite(information) and math.isfinite(gradient)):
        return None
    return SlopeShare(tick_ms, slope + gradient / information, information, converted)


def with_shares(prior_mean: float, prior_sd: float, shares: Iterable[SlopeShare]
                ) -> tuple[float, float]:
    """The prior ``N(prior_mean, prior_sd^2)`` times the shares' Gaussians: (mean, sd)."""
    precision = prior_sd ** -2.0
    weighted = precision * prior_mean
    for share in shares:
        precision += share.information
        weighted += share.information * share.mean
    return weighted / precision, precision ** -0.5
