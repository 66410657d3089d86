"""How conversion falls with page speed: a Poisson regression of conversions on session LCP.

Sessions are binned by LCP (``LCP_BIN_WIDTH_S`` wide, the last bin open). Per bin we keep
sessions and conversions; those counts are sufficient for the model

    log p(lcp) = intercept + slope * lcp_s

fitted by Newton's method (IRLS) with the log of the sessions as offset. A normal prior on
the slope turns the fit into a MAP estimate, which is how one campaign's curve is shrunk
towards the site-wide curve (:func:`shrunk_fit`).

Notes:
    ``tests/unit/test_elasticity.py`` checks the unpenalised fit against
    ``scipy.optimize.minimize`` on the Poisson negative log-likelihood, the covariance
    against the numerical Hessian inverse, and the slope recovered from seeded simulated
    sessions. The curve is observational: it holds for the traffic it was learned from
    (users on slow devices also convert less for other reasons), see PEERS.md section 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

LCP_BIN_WIDTH_S: float = 0.25
_OPEN_BIN_START_S = 12.0
N_BINS: int = round(_OPEN_BIN_START_S / LCP_BIN_WIDTH_S) + 1
BIN_CENTERS_S: FloatArray = np.append(
    (np.arange(N_BINS - 1, dtype=np.float64) + 0.5) * LCP_BIN_WIDTH_S, 13.0
)
BIN_CENTERS_S.setflags(write=False)

_BIN_WIDTH_MS = LCP_BIN_WIDTH_S * 1000.0
_OPEN_BIN_START_MS = _OPEN_BIN_START_S * 1000.0
_MAX_ABS_SLOPE = 5.0  # per second; beyond this the data are separated, not informative
_MAX_ITERATIONS = 50
_TOLERANCE = 1e-10
_SUM = np.add.reduce  # ndarray.sum without its Python wrapper (the same pairwise sum)
DEFAULT_TAU = 0.03  # between-campaign sd of the slope, per second


def lcp_bin(lcp_ms: float) -> int:
    """Index of the LCP bin for one session (negative or NaN LCP goes to bin 0).

    >>> lcp_bin(0.0), lcp_bin(249.9), lcp_bin(250.0), lcp_bin(60_000.0)
    (0, 0, 1, 48)
    """
    if not lcp_ms > 0.0:
        return 0
    if lcp_ms >= _OPEN_BIN_START_MS:
        return N_BINS - 1
    return int(lcp_ms / _BIN_WIDTH_MS)


def lcp_bins(lcp_ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Vectorised :func:`lcp_bin` for many sessions at once."""
    values = np.nan_to_num(np.asarray(lcp_ms, dtype=np.float64), nan=0.0, posinf=np.inf)
    index = np.floor(np.clip(values, 0.0, _OPEN_BIN_START_MS) / _BIN_WIDTH_MS)
    return np.minimum(index, N_BINS - 1).astype(np.int64)


@dataclass(frozen=True, slots=True)
class CurveFit:
    """A fitted curve ``p(lcp) = exp(intercept + slope * lcp_s)``, capped at 1.

    Attributes:
        intercept: log conversion rate at LCP 0.
        slope: change of log conversion rate per second of LCP (usually < 0).
        cov: covariance matrix of ``(intercept, slope)``.
        sessions: sessions the fit saw.
        conversions: conversions the fit saw.
    """

    intercept: float
    slope: float
    cov: tuple[tuple[float, float], tuple[float, float]]
    sessions: float
    conversions: float

    @overload
    def rate(self, lcp_s: float) -> float: ...

    @overload
    def rate(self, lcp_s: FloatArray) -> FloatArray: ...

    def rate(self, lcp_s: FloatArray | float) -> FloatArray | float:
        """Conversion rate at the given LCP (seconds), capped at 1."""
        eta = np.minimum(self.intercept + self.slope * np.asarray(lcp_s, dtype=np.float64), 0.0)
        rates: FloatArray = np.exp(eta)
        return float(rates) if np.ndim(lcp_s) == 0 else rates

    def mix_rate(self, mix: npt.ArrayLike) -> float:
        """Expected conversion rate of sessions spread over the bins as ``mix`` (any scale).

        Returns ``nan`` for an empty mix.
        """
        weights = np.asarray(mix, dtype=np.float64)
        total = float(weights.sum())
        if not total > 0.0:
            return math.nan
        return float(weights @ self.rate(BIN_CENTERS_S)) / total

    @property
    def slope_se(self) -> float:
        """Standard error of the slope."""
        return math.sqrt(self.cov[1][1])

    def to_state(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "slope": self.slope,
                "cov": [list(row) for row in self.cov],
                "sessions": self.sessions, "conversions": self.conversions}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CurveFit:
        (c00, c01), (c10, c11) = state["cov"]
        return cls(float(state["intercept"]), float(state["slope"]),
                   ((float(c00), float(c01)), (float(c10), float(c11))),
                   float(state["sessions"]), float(state["conversions"]))


def fit_curve(
    sessions_by_bin: npt.ArrayLike,
    conversions_by_bin: npt.ArrayLike,
    *,
    prior_slope: float = 0.0,
    prior_slope_sd: float = 0.2,
    min_conversions: float = 5.0,
) -> CurveFit | None:
    """MAP Poisson regression of conversions on bin-centre LCP, normal prior on the slope.

    Args:
        sessions_by_bin: sessions per LCP bin (``N_BINS`` non-negative numbers; may be
            fractional, e.g. exponentially weighted counts).
        conversions_by_bin: conversions per LCP bin (ignored in bins without sessions).
        prior_slope: prior mean of the slope (per second).
        prior_slope_sd: prior sd of the slope; ``math.inf`` gives the plain MLE.
        min_conversions: below this many conversions, no fit.

    Returns:
        The fit, with ``cov`` the inverse of Fisher information plus prior precision, or
        ``None`` if there are too few conversions or the slope is not identified.

    Raises:
        ValueError: wrong shapes, negative or non-finite counts, or a non-positive prior sd.

    >>> fit = fit_curve(np.r_[100.0, 100.0, np.zeros(N_BINS - 2)],
    ...                 np.r_[20.0, 10.0, np.zeros(N_BINS - 2)], prior_slope_sd=math.inf)
    >>> round(fit.slope, 4), round(fit.slope_se, 4)   # log(1/2) / 0.25 s
    (-2.7726, 1.5492)
    """
    n, y = _validated(sessions_by_bin, conversions_by_bin, prior_slope_sd)
    used = n > 0.0
    precision = 0.0 if math.isinf(prior_slope_sd) else prior_slope_sd**-2.0
    bins = _Bins.of(n[used], y[used], BIN_CENTERS_S[used], prior_slope, precision)
    total = bins.y_total
    if total < min_conversions or total <= 0.0:
        return None
    a, b = _newton(bins)
    s0, s1, s2 = bins.information(bins.mean(a, b))
    s2 += precision
    det = s0 * s2 - s1 * s1
    if not det > 1e-12 * s0 * s2:
        return None
    return CurveFit(a, b, ((s2 / det, -s1 / det), (-s1 / det, s0 / det)),
                    float(_SUM(bins.n)), total)


def shrunk_fit(
    campaign_sessions: npt.ArrayLike,
    campaign_conversions: npt.ArrayLike,
    site_fit: CurveFit | None,
    *,
    tau: float = DEFAULT_TAU,
    min_conversions: float = 5.0,
) -> CurveFit | None:
    """A campaign's curve with its slope shrunk towards the site-wide slope.

    The prior is ``N(site.slope, site_var + tau**2)``: the site's own uncertainty plus the
    spread of slopes between campaigns. Without a site fit, the default weak prior is used.
    Returns ``None`` when the campaign has fewer than ``min_conversions`` conversions.
    """
    if site_fit is None:
        return fit_curve(campaign_sessions, campaign_conversions,
                         min_conversions=min_conversions)
    prior_sd = math.sqrt(site_fit.cov[1][1] + tau * tau)
    return fit_curve(campaign_sessions, campaign_conversions, prior_slope=site_fit.slope,
                     prior_slope_sd=prior_sd, min_conversions=min_conversions)


def _validated(
    sessions: npt.ArrayLike, conversions: npt.ArrayLike, prior_sd: float
) -> tuple[FloatArray, FloatArray]:
    n = np.asarray(sessions, dtype=np.float64)
    y = np.asarray(conversions, dtype=np.float64)
    if n.shape != (N_BINS,) or y.shape != (N_BINS,):
        msg = f"expected {N_BINS} bins, got sessions {n.shape} and conversions {y.shape}"
        raise ValueError(msg)
    check_counts(n, y, prior_sd)
    return n, y


def check_counts(n: FloatArray, y: FloatArray, prior_sd: float) -> None:
    """ValueError unless the counts are finite and non-negative and the prior sd positive."""
    if not (_finite_non_negative(n) and _finite_non_negative(y)):
        msg = "sessions and conversions must be finite and non-negative"
        raise ValueError(msg)
    if not prior_sd > 0.0:
        msg = f"prior_slope_sd must be > 0, got {prior_sd}"
        raise ValueError(msg)


def _finite_non_negative(values: FloatArray) -> bool:
    """Every value finite and >= 0 (a NaN makes ``min`` NaN; two reductions, no masks)."""
    return values.size == 0 or (float(values.min()) >= 0.0 and float(values.max()) < math.inf)


@dataclass(frozen=True, slots=True)
class _Bins:
    """Sufficient statistics of the non-empty bins, and the penalised likelihood on them.

    A point ``(a, b)`` is evaluated once (``mean``); the objective, the gradient and the
    information at it come from that one vector of expected conversions (a tick fits up to
    one curve per campaign, so numpy's per-call overhead is what counts here).
    """

    n: FloatArray
    y: FloatArray
    x: FloatArray
    x2: FloatArray
    y_total: float
    yx: float
    prior_mean: float
    precision: float

    @classmethod
    def of(cls, n: FloatArray, y: FloatArray, x: FloatArray, prior_mean: float,
           precision: float) -> _Bins:
        return cls(n, y, x, x * x, float(_SUM(y)), float(y @ x), prior_mean, precision)

    def mean(self, a: float, b: float) -> FloatArray:
        eta = self.x * b
        eta += a
        np.maximum(eta, -700.0, out=eta)
        np.minimum(eta, 700.0, out=eta)
        np.exp(eta, out=eta)
        eta *= self.n
        return eta

    def objective(self, a: float, b: float, mu: FloatArray) -> float:
        """Penalised Poisson log-likelihood at ``(a, b)`` (constants dropped)."""
        loglik = a * self.y_total + b * self.yx - float(_SUM(mu))
        return loglik - 0.5 * self.precision * (b - self.prior_mean) ** 2

    def information(self, mu: FloatArray) -> tuple[float, float, float]:
        """Fisher information of (a, b) at the point of ``mu``, without the prior:
        ``(i_aa, i_ab, i_bb)``."""
        return float(_SUM(mu)), float(mu @ self.x), float(mu @ self.x2)

    def newton_step(self, b: float, mu: FloatArray) -> tuple[float, float]:
        """Solve (information + prior precision) step = gradient at the point of ``mu``."""
        s0, s1, s2 = self.information(mu)
        g0 = self.y_total - s0
        g1 = self.yx - s1 - self.precision * (b - self.prior_mean)
        h11 = s2 + self.precision
        det = s0 * h11 - s1 * s1
        if not det > 1e-12 * s0 * h11:  # (nearly) singular: the least-squares step
            hess = np.array([[s0, s1], [s1, h11]])
            step = np.linalg.lstsq(hess, np.array([g0, g1]), rcond=None)[0]
            return float(step[0]), float(step[1])
        return (h11 * g0 - s1 * g1) / det, (s0 * g1 - s1 * g0) / det

    def profile_intercept(self, b: float) -> float:
        """The intercept that matches total expected to total observed conversions."""
        return math.log(self.y_total / float(_SUM(self.mean(0.0, b))))


def _newton(bins: _Bins) -> tuple[float, float]:
    """Newton's method with step halving, started from the pooled rate."""
    b = min(max(bins.prior_mean, -_MAX_ABS_SLOPE), _MAX_ABS_SLOPE)
    a = bins.profile_intercept(b)
    mu = bins.mean(a, b)
    current = bins.objective(a, b, mu)
    for _ in range(_MAX_ITERATIONS):
        step = bins.newton_step(b, mu)
        a_new, b_new, mu, current = _line_search(bins, (a, b), step, mu, current)
        done = abs(a_new - a) + abs(b_new - b) < _TOLERANCE
        a, b = a_new, b_new
        if done:
            break
    return bins.profile_intercept(b), b


def _line_search(bins: _Bins, at: tuple[float, float], step: tuple[float, float],
                 mu: FloatArray, current: float) -> tuple[float, float, FloatArray, float]:
    """Halve the Newton step until the objective does not fall; keep the slope bounded.

    Returns the new point, its expected conversions and its objective."""
    a, b = at
    scale = 1.0
    for _ in range(40):
        b_try = min(max(b + scale * step[1], -_MAX_ABS_SLOPE), _MAX_ABS_SLOPE)
        a_try = a + scale * step[0]
        mu_try = bins.mean(a_try, b_try)
        value = bins.objective(a_try, b_try, mu_try)
        if value >= current - 1e-12 * abs(current):
            return a_try, b_try, mu_try, value
        scale *= 0.5
    return a, b, mu, current
