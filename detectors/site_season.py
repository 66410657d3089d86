"""The site's hour-of-day pattern of conversion, which each campaign's factors start from.

A campaign's own factors (``detectors.conv_season``) need a whole day of it and a pattern
clear in its own orders: a small campaign, or one launched today, has none, and the trough
of the day reads as a drop on it. Campaigns of one shop mostly share the shape of their
day (the same buyers' evenings), so the site's pattern is the prior each campaign's
harmonics are shrunk towards, as its latency-to-conversion curve is shrunk towards the
site slope.

**The fit.** One stratum per campaign with a whole day learned, each with its own level,
and common harmonic coefficients ``beta`` (the harmonics of ``conv_season``, without the
intercept). Given its total, a campaign's conversions fall into its hour slots as a
multinomial with shares ``s[h] exp(x[h] beta)`` (its level cancels), so ``beta`` is fitted
by Newton's method on that conditional likelihood, summed over the strata: a campaign's
mix of hours, or a campaign converting better than another, is no pattern. The
covariance is scaled by the Pearson over-dispersion of the cells expecting at least
``DISPERSION_MIN_MEAN`` conversions. A harmonic is then kept when clear and shrunk, by
the same rule as a campaign's (``KEEP_HARMONIC``).

**Across workers.** As for the slope (``detectors/site.py``), each facts partition's
strata are sent as a Gaussian in ``beta`` (:class:`SeasonShare`: one Newton step from the
site's coefficients, and its information), which another worker adds to its own
likelihood as a prior.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.conv_season import HARMONIC_DESIGN, MIN_CONVERSIONS, MIN_SLOTS, kept_harmonics

__all__ = ["SeasonShare", "fit_site_pattern", "hour_factors", "season_share_of"]

FloatArray = npt.NDArray[np.float64]
X = HARMONIC_DESIGN[:, 1:]  # slots x coefficients: the harmonics' cos and sin
WIDTH = X.shape[1]
DISPERSION_MIN_MEAN = 5.0  # cells expecting fewer conversions give Pearson terms of no use
ITERATIONS = 25


@dataclass(frozen=True, slots=True)
class SeasonShare:
    """One facts partition's evidence on the site's harmonic coefficients.

    Attributes:
        mean: the coefficients its strata alone point to (a Newton step from the site's).
        information: their information matrix (its inverse is their covariance).
        conversions: the conversions behind it.
    """

    mean: tuple[float, ...]
    information: tuple[tuple[float, ...], ...]
    conversions: float

    def to_state(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "information": [list(r) for r in self.information],
                "conversions": self.conversions}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SeasonShare:
        """Read :meth:`to_state`'s dict back.

        Raises:
            ValueError: for a missing field, a wrong shape or a non-finite number.
        """
        try:
            mean = np.asarray(state["mean"], dtype=np.float64)
            information = np.asarray(state["information"], dtype=np.float64)
            conversions = float(state["conversions"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"not a season share: {exc!r}"
            raise ValueError(msg) from exc
        if mean.shape != (WIDTH,) or information.shape != (WIDTH, WIDTH) or not (
                np.all(np.isfinite(mean)) and np.all(np.isfinite(information))):
            msg = f"not a season share: shapes {mean.shape} and {information.shape}"
            raise ValueError(msg)
        return _share(mean, information, conversions)


def _share(mean: FloatArray, information: FloatArray, conversions: float) -> SeasonShare:
    return SeasonShare(tuple(float(v) for v in mean),
                       tuple(tuple(float(v) for v in row) for row in information), conversions)


def _score(conversions: FloatArray, sessions: FloatArray, beta: FloatArray
           ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Gradient and information of the strata's conditional log-likelihood at ``beta``,
    and the expected conversions of each cell."""
    weights = sessions * np.exp(X @ beta)[None, :]
    totals = weights.sum(axis=1)
    shares = np.divide(weights, totals[:, None], out=np.zeros_like(weights),
                       where=totals[:, None] > 0)
    converted = conversions.sum(axis=1)
    expected = shares * converted[:, None]
    gradient: FloatArray = (conversions - expected).sum(axis=0) @ X
    mixed = shares @ X  # strata x coefficients: each stratum's mean design row
    information: FloatArray = (X.T * expected.sum(axis=0)) @ X - (mixed.T * converted) @ mixed
    return gradient, information, expected


def _dispersion(conversions: FloatArray, expected: FloatArray) -> float:
    used = expected >= DISPERSION_MIN_MEAN
    strata = int(np.any(used, axis=1).sum())
    freedom = int(used.sum()) - strata - WIDTH
    if freedom <= 0:
        return 1.0
    pearson = float((((conversions - expected) ** 2)[used] / expected[used]).sum()) / freedom
    return float(max(1.0, pearson))


def _fit(conversions: FloatArray, sessions: FloatArray, prior_mean: FloatArray,
         prior_information: FloatArray) -> tuple[FloatArray, FloatArray] | None:
    """The posterior mean and covariance of ``beta``: the strata's likelihood (its
    information divided by the over-dispersion) times the Gaussian prior."""
    beta = prior_mean.copy()
    for _ in range(ITERATIONS):
        gradient, information, expected = _score(conversions, sessions, beta)
        scale = 1.0 / _dispersion(conversions, expected)
        total = information * scale + prior_information
        try:
            step = np.linalg.solve(total, gradient * scale
                                   - prior_information @ (beta - prior_mean))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            return None
        if float(np.abs(step).max()) < 1e-8:
            covariance = np.asarray(np.linalg.inv(total), dtype=np.float64)
            return beta, covariance
    return None


def _usable(sessions: FloatArray) -> bool:
    """Whether the strata visited ``MIN_SLOTS`` hour slots between them."""
    visited = int(np.any(sessions > 0, axis=0).sum()) if sessions.size else 0
    return visited >= MIN_SLOTS


def fit_site_pattern(conversions: FloatArray, sessions: FloatArray,
                     shares: Iterable[SeasonShare] = ()) -> FloatArray | None:
    """The site's harmonic coefficients (strata x 24 slot counts in, ``WIDTH`` out), each
    harmonic kept only when clear and then shrunk (``conv_season.season_factors``' rule);
    ``None`` when none is kept or there is too little: fewer than ``MIN_CONVERSIONS``
    conversions here and in the shares, or no stratum here and no share."""
    shares = list(shares)
    converted = float(conversions.sum()) + sum(s.conversions for s in shares)
    if converted < MIN_CONVERSIONS or not (shares or _usable(sessions)):
        return None
    information = np.zeros((WIDTH, WIDTH))
    weighted = np.zeros(WIDTH)
    for share in shares:
        held = np.asarray(share.information)
        information += held
        weighted += held @ np.asarray(share.mean)
    prior_mean: FloatArray = np.zeros(WIDTH)
    if shares:
        try:
            prior_mean = np.asarray(np.linalg.solve(information, weighted), dtype=np.float64)
        except np.linalg.LinAlgError:
            return None
    if not _usable(sessions):
        conversions, sessions = np.zeros((0, X.shape[0])), np.zeros((0, X.shape[0]))
    fitted = _fit(conversions, sessions, prior_mean, information)
    return None if fitted is None else kept_harmonics(*fitted)


def season_share_of(conversions: FloatArray, sessions: FloatArray, beta: FloatArray | None
                    ) -> SeasonShare | None:
    """The share of the strata (strata x 24) at the site's coefficients ``beta`` (zero for
    none); ``None`` when they carry no information."""
    if not conversions.size or not _usable(sessions):
        return None
    at = np.zeros(WIDTH) if beta is None else beta
    gradient, information, expected = _score(conversions, sessions, at)
    scale = 1.0 / _dispersion(conversions, expected)
    information = information * scale
    try:
        mean = at + np.linalg.solve(information, gradient * scale)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(mean)):
        return None
    return _share(mean, information, float(conversions.sum()))


def hour_factors(beta: FloatArray | None) -> FloatArray:
    """Each UTC hour's conversion against the day's mean under the coefficients ``beta``
    (the mean of the 24 is 1; all 1 without a pattern): what the site's day looks like."""
    if beta is None:
        return np.ones(X.shape[0])
    factors: FloatArray = np.exp(X @ beta)
    return factors / float(factors.mean())
