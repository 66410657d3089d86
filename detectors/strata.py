"""The latency-to-conversion curve by device: one common LCP slope, one intercept per stratum.

Mobile sessions are both slower and less likely to convert than desktop ones, for reasons
that have little to do with page speed (smaller screens, browsing on the go). A curve
fitted on all devices together reads that difference as an effect of LCP: in the default
simulation (true slope -0.09 per second, mobile x1.4 slower and x0.7 as likely to convert)
the pooled slope comes out at -0.11 to -0.13 and the slow-page loss 14-41% too high.

The remedy here: curve data kept per device stratum (``DEVICE_STRATA``; ``""`` is an unknown
device), as one vector of ``CURVE_SIZE`` counts with key ``bin + N_BINS * stratum``, and the
model

    log p(lcp, stratum) = intercept[stratum] + slope * lcp_s

a Poisson regression (the link and the slope prior of :func:`~detectors.elasticity.fit_curve`)
with the intercepts profiled out: for a given slope each stratum's intercept matches its
expected to its observed conversions, so Newton's method runs on the slope alone. The same
fit with campaign x device strata can give the site-wide slope each campaign is shrunk to.

Used by the detectors (since 2026-12-05): every campaign keeps its curve data by device
stratum, the site-wide slope is fitted with one stratum per campaign and device, and the
slow-page loss is priced within strata (``detectors.revenue.stratified_slow_page_loss``).
What it changed on ``bench/quality.py --days 3`` is in docs/STATISTICS.md ("Device
confounding"): the slow-page estimates lost their upward bias (median revenue error over
seeds 1-12 23.6% -> 13.2%). Early on the slope is noisy: two incidents 12 hours into
seeds 1 and 2 are priced at a quarter of the truth with intervals from 0 (they keep
their kind, which follows the estimate: ``detectors.episodes.classify``).

Notes:
    ``tests/unit/test_common_slope.py`` checks the fit against a direct maximum-likelihood
    fit of all parameters (``scipy.optimize``), its covariance against the inverse Fisher
    information, and the recovery of a common slope that the pooled fit gets wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.elasticity import BIN_CENTERS_S, DEFAULT_TAU, N_BINS, CurveFit, check_counts

FloatArray = npt.NDArray[np.float64]

DEVICE_STRATA: tuple[str, ...] = ("", "desktop", "mobile", "tablet")
N_STRATA: int = len(DEVICE_STRATA)
CURVE_SIZE: int = N_STRATA * N_BINS
_STRATUM = {name: index for index, name in enumerate(DEVICE_STRATA)}
_MAX_ABS_SLOPE = 5.0  # per second, as in elasticity.py
_MAX_ITERATIONS = 50
_TOLERANCE = 1e-10


def device_stratum(device: str | None) -> int:
    """The stratum of a session's device; unknown or missing devices go to stratum 0.

    >>> device_stratum("mobile"), device_stratum(None), device_stratum("fridge")
    (2, 0, 0)
    """
    return _STRATUM.get(device or "", 0)


def curve_key(lcp_bin_index: int, stratum: int) -> int:
    """Index of (LCP bin, stratum) in a curve vector of ``CURVE_SIZE``."""
    return lcp_bin_index + N_BINS * stratum


def by_stratum(vector: npt.ArrayLike) -> FloatArray:
    """A curve vector (any multiple of ``N_BINS`` long) as rows of ``N_BINS``, one a stratum."""
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or values.size % N_BINS:
        msg = f"a curve vector is a non-empty multiple of {N_BINS} long, got {values.shape}"
        raise ValueError(msg)
    return values.reshape(-1, N_BINS)


def fold_strata(vector: npt.ArrayLike) -> FloatArray:
    """Per-bin totals over the strata of a curve vector."""
    folded: FloatArray = by_stratum(vector).sum(axis=0)
    return folded


def padded_curve(values: npt.ArrayLike) -> FloatArray:
    """A stored curve vector at ``CURVE_SIZE``: an old ``N_BINS``-long one goes to stratum 0."""
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape == (CURVE_SIZE,):
        return vector
    if vector.shape != (N_BINS,):
        msg = f"a stored curve is {N_BINS} or {CURVE_SIZE} long, got {vector.shape}"
        raise ValueError(msg)
    return np.concatenate([vector, np.zeros(CURVE_SIZE - N_BINS)])


@dataclass(frozen=True, slots=True, init=False)
class StrataFit:
    """A common slope with one intercept per stratum.

    Attributes:
        slope: change of log conversion rate per second of LCP, common to all strata.
        slope_var: its variance (inverse profile information plus prior precision).
        intercepts: log rate at LCP 0 per stratum; ``-inf`` for a stratum without
            conversions (its rate is estimated at 0: it can lose nothing).
        conversions_by_stratum: conversions behind each intercept.
        mean_lcp_s: per stratum, the mean LCP weighted by expected conversions at the fit
            (0 where there are none); with ``conversions_by_stratum`` and
            ``slope_var`` it gives the full covariance of (intercepts, slope):
            ``Var(a_s) = 1/y_s + m_s^2 V``, ``Cov(a_s, a_t) = m_s m_t V``,
            ``Cov(a_s, b) = -m_s V``.
        sessions: sessions the fit saw.
        conversions: conversions the fit saw.
    """

    slope: float
    slope_var: float
    intercepts: tuple[float, ...]
    conversions_by_stratum: tuple[float, ...]
    mean_lcp_s: tuple[float, ...]
    sessions: float
    conversions: float

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(  # noqa: PLR0917 (the dataclass's positional signature)
        self, slope: float, slope_var: float, intercepts: tuple[float, ...],
        conversions_by_stratum: tuple[float, ...], mean_lcp_s: tuple[float, ...], sessions: float,
        conversions: float,
    ) -> None:
        object.__setattr__(self, "slope", slope)
        object.__setattr__(self, "slope_var", slope_var)
        object.__setattr__(self, "intercepts", intercepts)
        object.__setattr__(self, "conversions_by_stratum", conversions_by_stratum)
        object.__setattr__(self, "mean_lcp_s", mean_lcp_s)
        object.__setattr__(self, "sessions", sessions)
        object.__setattr__(self, "conversions", conversions)

    @property
    def slope_se(self) -> float:
        return math.sqrt(self.slope_var)

    def eta(self) -> FloatArray:
        """Linear predictor per (stratum, bin), ``-inf`` in strata without conversions."""
        eta: FloatArray = np.asarray(self.intercepts)[:, None] + self.slope * BIN_CENTERS_S
        return eta

    def rates(self) -> FloatArray:
        """Conversion rate per (stratum, bin), capped at 1."""
        rates: FloatArray = np.exp(np.minimum(self.eta(), 0.0))
        return rates

    def curve(self) -> CurveFit:
        """One summary curve: the common slope, the intercept of all strata together.

        Its slope variance is the stratified one (what a campaign's prior is built from).
        """
        y = np.asarray(self.conversions_by_stratum)
        used = y > 0
        m = float(np.asarray(self.mean_lcp_s)[used] @ y[used] / self.conversions)
        weights = np.exp(np.asarray(self.intercepts)[used])  # sum_i n_si e^{b x_i} = y_s / e^a
        intercept = math.log(self.conversions / float((y[used] / weights).sum()))
        v = self.slope_var
        return CurveFit(intercept, self.slope, ((1.0 / self.conversions + m * m * v, -m * v),
                                                (-m * v, v)), self.sessions, self.conversions)


def fit_common_slope(
    sessions: npt.ArrayLike,
    conversions: npt.ArrayLike,
    *,
    prior_slope: float = 0.0,
    prior_slope_sd: float = 0.2,
    min_conversions: float = 5.0,
) -> StrataFit | None:
    """MAP Poisson regression with a common LCP slope and an intercept per stratum.

    Args:
        sessions: sessions per (stratum, LCP bin): a curve vector (``k * N_BINS`` long, key
            ``bin + N_BINS * stratum``) or a ``(k, N_BINS)`` array; may be fractional.
        conversions: conversions, same shape (ignored where there are no sessions).
        prior_slope: prior mean of the slope (per second).
        prior_slope_sd: prior sd of the slope; ``math.inf`` gives the plain MLE.
        min_conversions: below this many conversions in all, no fit.

    Returns:
        The fit, or ``None`` with too few conversions or a slope the data do not identify
        (every converting stratum in one bin, and no prior).

    Raises:
        ValueError: wrong or different shapes, negative or non-finite counts, or a
            non-positive prior sd.
    """
    n, y = _validated(sessions, conversions, prior_slope_sd)
    y = np.where(n > 0.0, y, 0.0)
    y_s = y.sum(axis=1)
    total = float(y_s.sum())
    if total < min_conversions or total <= 0.0:
        return None
    used = y_s > 0.0
    precision = 0.0 if math.isinf(prior_slope_sd) else prior_slope_sd**-2.0
    profile = _Profile.of(n[used], y[used], y_s[used], prior_slope, precision)
    fit = profile.newton()
    b, mean, var = fit.b, fit.mean, fit.var
    info = float(profile.y_s @ var) + precision
    scale = float(profile.y_s @ (var + mean * mean)) + precision
    if not info > 1e-12 * scale:
        return None
    intercepts = np.full(len(y_s), -math.inf)
    intercepts[used] = np.log(profile.y_s) - fit.log_sum
    means = np.zeros(len(y_s))
    means[used] = mean
    return StrataFit(b, 1.0 / info, tuple(intercepts.tolist()), tuple(y_s.tolist()),
                     tuple(means.tolist()), float(n.sum()), total)


def shrunk_strata_fit(
    campaign_sessions: npt.ArrayLike,
    campaign_conversions: npt.ArrayLike,
    site_fit: CurveFit | None,
    *,
    tau: float = DEFAULT_TAU,
    min_conversions: float = 5.0,
) -> StrataFit | None:
    """A campaign's device-stratified curve, its slope shrunk towards the site-wide slope.

    The prior is ``N(site.slope, site_var + tau**2)``, as in
    :func:`~detectors.elasticity.shrunk_fit`; without a site fit, the default weak prior.
    """
    if site_fit is None:
        return fit_common_slope(campaign_sessions, campaign_conversions,
                                min_conversions=min_conversions)
    prior_sd = math.sqrt(site_fit.cov[1][1] + tau * tau)
    return fit_common_slope(campaign_sessions, campaign_conversions,
                            prior_slope=site_fit.slope, prior_slope_sd=prior_sd,
                            min_conversions=min_conversions)


def profile_score(sessions: npt.ArrayLike, conversions: npt.ArrayLike, slope: float
                  ) -> tuple[float, float, float]:
    """The profile log-likelihood's gradient and information in the common slope at
    ``slope``, with no prior, and the conversions behind them.

    What a group of strata tells about the slope, as a quadratic around ``slope``: another
    fit that adds ``gradient * (b - slope) - information / 2 * (b - slope)**2`` to its own
    log-likelihood has, to second order, fitted these strata too (``detectors/site.py``).
    """
    n, y = _validated(sessions, conversions, math.inf)
    y = np.where(n > 0.0, y, 0.0)
    y_s = y.sum(axis=1)
    used = y_s > 0.0
    if not used.any():
        return 0.0, 0.0, 0.0
    profile = _Profile.of(n[used], y[used], y_s[used], 0.0, 0.0)
    point = profile.at(_clipped(slope))
    gradient = profile.sum_yx - float(profile.y_s @ point.mean)
    return gradient, float(profile.y_s @ point.var), float(y_s.sum())


def _validated(sessions: npt.ArrayLike, conversions: npt.ArrayLike, prior_sd: float
               ) -> tuple[FloatArray, FloatArray]:
    n = by_stratum(np.ravel(np.asarray(sessions, dtype=np.float64)))
    y = by_stratum(np.ravel(np.asarray(conversions, dtype=np.float64)))
    if n.shape != y.shape:
        msg = f"sessions {n.shape} and conversions {y.shape} differ in shape"
        raise ValueError(msg)
    check_counts(n, y, prior_sd)
    return n, y


_POWERS = np.stack([np.ones_like(BIN_CENTERS_S), BIN_CENTERS_S, BIN_CENTERS_S**2], axis=1)


@dataclass(frozen=True, slots=True, init=False)
class _At:
    """The profile at one slope: per stratum, the log of ``sum_i n_si e^(b x_i)`` and the
    mean and variance of LCP under those weights; and the penalised log-likelihood."""

    b: float
    log_sum: FloatArray
    mean: FloatArray
    var: FloatArray
    objective: float

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(self, b: float, log_sum: FloatArray, mean: FloatArray, var: FloatArray,
                 objective: float) -> None:
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "log_sum", log_sum)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var)
        object.__setattr__(self, "objective", objective)


@dataclass(frozen=True, slots=True, init=False)
class _Profile:
    """The penalised log-likelihood of the slope with every intercept profiled out:

    ``l(b) = b * sum(y x) - sum_s y_s log(sum_i n_si e^(b x_i)) - precision/2 (b - m)^2``,

    concave in ``b``; its derivatives are moments of LCP under the weights ``n e^(b x)``.
    One evaluation (:meth:`at`) is one ``exp`` over the bins and one matrix product.
    """

    n: FloatArray  # (strata, bins), strata with conversions only
    y: FloatArray
    y_s: FloatArray
    prior_mean: float
    precision: float
    sum_yx: float

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(  # noqa: PLR0917 (the dataclass's positional signature)
        self, n: FloatArray, y: FloatArray, y_s: FloatArray, prior_mean: float, precision: float,
        sum_yx: float,
    ) -> None:
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "y_s", y_s)
        object.__setattr__(self, "prior_mean", prior_mean)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "sum_yx", sum_yx)

    @classmethod
    def of(cls, n: FloatArray, y: FloatArray, y_s: FloatArray, prior_mean: float,
           precision: float) -> _Profile:
        return cls(n, y, y_s, prior_mean, precision, float((y @ BIN_CENTERS_S).sum()))

    def at(self, b: float) -> _At:
        # weights scaled by e^-shift against overflow
        shift = max(b * float(BIN_CENTERS_S[0]), b * float(BIN_CENTERS_S[-1]))
        sums = self.n @ (np.exp(b * BIN_CENTERS_S - shift)[:, None] * _POWERS)
        total = sums[:, 0]
        mean = sums[:, 1] / total
        var = np.maximum(sums[:, 2] / total - mean * mean, 0.0)
        log_sum = np.log(total) + shift
        objective = (b * self.sum_yx - float(self.y_s @ log_sum)
                     - 0.5 * self.precision * (b - self.prior_mean) ** 2)
        return _At(b, log_sum, mean, var, objective)

    def newton(self) -> _At:
        """Newton's method on the slope with step halving, kept within +-5 per second."""
        point = self.at(_clipped(self.prior_mean))
        for _ in range(_MAX_ITERATIONS):
            grad = (self.sum_yx - float(self.y_s @ point.mean)
                    - self.precision * (point.b - self.prior_mean))
            hess = float(self.y_s @ point.var) + self.precision
            if not hess > 0.0 or abs(grad / hess) < _TOLERANCE:
                break
            after = self._line_search(point, grad / hess)
            done = abs(after.b - point.b) < _TOLERANCE
            point = after
            if done:
                break
        return point

    def _line_search(self, point: _At, step: float) -> _At:
        current = point.objective
        scale = 1.0
        for _ in range(40):
            trial = self.at(_clipped(point.b + scale * step))
            if trial.objective >= current - 1e-12 * abs(current):
                return trial
            scale *= 0.5
        return point


def _clipped(slope: float) -> float:
    return min(max(float(slope), -_MAX_ABS_SLOPE), _MAX_ABS_SLOPE)
