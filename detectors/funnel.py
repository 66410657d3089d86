"""The checkout funnel of one campaign: who reached the checkout each minute, and their orders.

A session that reaches the checkout is seen at once (its checkout page's beacon) and
orders with a high probability ``q``, within minutes. A checkout that breaks at the
payment shows sooner among these *reachers* than in the orders of all sessions: no wait
for the shopping, and binomial orders, with ``1 - q`` of the Poisson noise (docs/FUNNEL.md,
docs/CONVERSION-POWER.md "What the checkout funnel would add").

:class:`Funnel` keeps, per checkout minute, the reachers and their (first) orders, a
:class:`~detectors.lag.LagModel` of checkout-to-order delays, and a forgetting baseline of
matured, unflagged minutes. :func:`funnel_scan` tests the latest windows of reachers for a
drop of their conversion with the window scan of :mod:`detectors.conversion`, on counts
rescaled to Poisson-like noise (quasi-likelihood): a window's orders have variance
``sum n_i q G_i (1 - q G_i)`` for ``n_i`` reachers of completeness ``G_i``, so the window's
counts are divided by ``phi_w = 1 - q sum(n G^2) / sum(n G)`` and the matured baseline's by
``1 - q``. Fed as they are, the Poisson test would overstate the noise by ``1 / phi``
and see nothing a calibrated test sees (the study: 51 against 27 minutes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import betabinom

from detectors.buckets import MINUTE_MS, minute_of
from detectors.campaign_params import CampaignParams
from detectors.conversion import ConversionVerdict, hold_columns, start_indices
from detectors.device_scan import DeviceDrop
from detectors.ewcounts import EwVector
from detectors.lag import LagModel
from detectors.pricing import price_conversion_loss
from detectors.scan_lists import argmin_of, min_or_nan, p_values_rows, xlogy
from detectors.verdicts import Estimate

__all__ = ["COUNTS_BELOW", "Funnel", "checkout_fields", "combine_funnel", "counted_p",
           "exact_p_values", "funnel_scan", "onset_of", "price_funnel_drop", "scan_funnel",
           "with_funnel"]

FloatArray = npt.NDArray[np.float64]
_NO_SCAN = ConversionVerdict(1.0, 0.0, 0.0, math.nan, None, 0.0)
MIN_PHI = 0.05  # a window's dispersion is at least this (q near 1 is no reason to trust it 20x)
REACHERS, ORDERS, FLAGGED = 0, 1, 2
# the funnel's adjusted p-value counts in the campaign's at most this (its screen, and the
# level an open drop is held at): above, the campaign's p-value (scaled) decides alone, so
# the funnel's noise does not price or hold what the orders do not show; still valid
COUNTS_BELOW = 0.05
# the quasi-Poisson p-values screen; below this (Bonferroni-adjusted) the exact ones decide
EXACT_BELOW = 0.05


def exact_p_values(  # noqa: PLR0917 (the windows' arrays and the baseline)
    observed: FloatArray, reachers: FloatArray, exposure: FloatArray, q: float,
    baseline_reachers: float, r0: float,
) -> FloatArray:
    """``P(X <= observed)`` of each window's orders under "the reachers order at ``r0``
    times the learned rate": ``X`` beta-binomial over the window's ``reachers``, each
    ordering with probability ``r0 q G``-bar (the window's mean completeness: a binomial of
    the mean probability has at least the variance of the reachers' own mixture, so the
    test errs towards no alarm), the probability uncertain as the baseline's ``q`` is
    (``Beta``'s relative variance ``(1 - q) / (q (n + 1))`` over ``n`` matured reachers).

    The quasi-Poisson p-values of :func:`funnel_scan` match these in the bulk but not in
    the tail of a small window: none of 12 reachers ordering at ``q`` 0.5 is ``2^-12``
    (2.4e-4), where a Poisson of 12 pseudo-orders says ``exp(-12)`` (6e-6).
    """
    mean = np.divide(exposure, reachers, out=np.zeros_like(exposure), where=reachers > 0)
    m = np.clip(r0 * q * mean, 1e-12, 1.0 - 1e-9)
    relative = (1.0 - q) / (q * (baseline_reachers + 1.0))
    kappa = np.maximum((1.0 - m) / (m * relative) - 1.0, 1e-6)
    p_values: FloatArray = betabinom.cdf(observed, reachers.astype(np.int64), m * kappa,
                                         (1.0 - m) * kappa)
    p_values[(reachers <= 0) | (observed >= r0 * q * exposure)] = 1.0
    return p_values


def funnel_scan(  # noqa: PLR0917 (conversion_scan's arguments)
    minute_ms: npt.NDArray[np.int64], reachers: FloatArray, orders: FloatArray,
    completeness: FloatArray, baseline_orders: float, baseline_reachers: float, *,
    windows_minutes: Sequence[int], hold_minutes: Sequence[int], tolerance: float,
) -> tuple[ConversionVerdict, ConversionVerdict]:
    """The reachers' conversion scan over ``windows_minutes`` and over ``hold_minutes`` (some
    of them: the last hour's scan, which holds an open drop), Bonferroni-adjusted each.

    The p-values are those of the conditional test of :func:`detectors.conversion.conversion_scan`
    on the quasi-Poisson counts (module docstring), and where they say there may be a drop
    (adjusted p below ``EXACT_BELOW``), those of :func:`exact_p_values`. The verdict's
    ``observed``, ``expected`` and ``ratio`` are the reachers' orders as counted, against
    ``q x sum(n G)``.
    """
    if minute_ms.shape[0] == 0 or baseline_reachers <= 0 or baseline_orders <= 0:
        return _NO_SCAN, _NO_SCAN
    q = min(baseline_orders / baseline_reachers, 1.0)
    starts = start_indices(minute_ms, windows_minutes)
    lengths = minute_ms.shape[0] - 1 - np.array(starts, dtype=np.intp)
    weighted = reachers * completeness
    exposure, second, observed = np.stack(
        (weighted, weighted * completeness, orders))[:, ::-1].cumsum(axis=1)[:, lengths].tolist()
    phi = [max(1.0 - q * (s / e if e > 0 else 0.0), MIN_PHI)
           for s, e in zip(second, exposure, strict=True)]
    phi_base = max(1.0 - q, MIN_PHI)
    r0 = 1.0 - tolerance
    p_values = p_values_rows([[e / f for e, f in zip(exposure, phi, strict=True)]],
                             [[o / f for o, f in zip(observed, phi, strict=True)]],
                             [baseline_orders / phi_base], [baseline_reachers / phi_base], r0)[2][0]
    if min_or_nan(p_values) * len(starts) < EXACT_BELOW:
        count = reachers[::-1].cumsum()[lengths]
        p_values = exact_p_values(np.array(observed), count, np.array(exposure), q,
                                  baseline_reachers, r0).tolist()
    windows = _Windows(minute_ms[starts].tolist(), [e * q for e in exposure], observed,
                       p_values)
    return (windows.best(range(len(starts)), r0),
            windows.best(hold_columns(minute_ms, starts, hold_minutes), r0))


class _Windows:
    """The windows' first minutes, expected and observed orders and p-values, as lists."""

    __slots__ = ("expected", "first_minutes", "observed", "p_values")

    def __init__(self, first_minutes: list[int], expected: list[float], observed: list[float],
                 p_values: list[float]) -> None:
        self.first_minutes, self.expected = first_minutes, expected
        self.observed, self.p_values = observed, p_values

    def best(self, cols: Sequence[int], r0: float) -> ConversionVerdict:
        """The verdict of the window with the smallest p-value of ``cols`` (indices of
        windows; ``_NO_SCAN`` when none), Bonferroni-adjusted over them; its statistic is
        the signed root of the Poisson deviance of the orders (0 without a drop)."""
        if not cols:
            return _NO_SCAN
        best = argmin_of(self.p_values, cols)
        obs, exp_ = self.observed[best], self.expected[best]
        drop = obs < r0 * exp_
        return ConversionVerdict(
            min(1.0, self.p_values[best] * len(cols)), obs, exp_,
            obs / exp_ if exp_ > 0 else math.nan, self.first_minutes[best],
            -math.sqrt(2.0 * (xlogy(obs, obs / exp_) - obs + exp_)) if drop else 0.0)


def with_funnel(conversion: ConversionVerdict, recent: ConversionVerdict,
                checkout: tuple[ConversionVerdict, ConversionVerdict], weight: float
                ) -> tuple[ConversionVerdict, ConversionVerdict]:
    """The campaign's verdict and its last hour's, each with the weighted-Bonferroni
    p-value of it and the funnel's: ``min(p / (1 - weight), p_checkout / weight)``, as
    ``detectors.device_scan.combine`` shares the level with the devices. Each test is
    valid, so the minimum is valid for "no drop of the campaign's conversion nor of its
    reachers'" whatever their correlation. The other figures stay the campaign's (what
    the alert reads as its conversion); as they are while the funnel is cold, off or
    the campaign has no window.
    """
    if weight <= 0 or checkout[0].window_start_ms is None or conversion.window_start_ms is None:
        return conversion, recent
    return (_with_p(conversion, checkout[0], weight), _with_p(recent, checkout[1], weight))


def onset_of(conversion: ConversionVerdict, drop_start_ms: int | None,
             checkout: ConversionVerdict, weight: float) -> int | None:
    """Where the drop began by the test that decides the campaign's p-value in
    ``with_funnel`` (``conversion``: the campaign's verdict before it, its devices'
    combined): the first minute of the funnel's window (checkout minutes: a payment broken
    at 17:00 fails the reachers from 17:00) when its adjusted p-value counts and is the
    smaller, else of the device's that won (``drop_start_ms``), else the campaign's own.

    The campaign's scan windows (20, 30, 60 minutes) nearly tie on a drop its own orders
    show weakly, and its best one then moves with a single order: on phones unable to pay
    (docs/FUNNEL.md) it read the onset 35 minutes before the incident in one run and 5
    after it in another, while the phones' own window and the funnel's hold still.
    """
    if conversion.window_start_ms is None:
        return None
    if weight > 0 and checkout.window_start_ms is not None and \
            counted_p(checkout, weight) < min(conversion.p_value / (1.0 - weight), 1.0):
        return checkout.window_start_ms
    return conversion.window_start_ms if drop_start_ms is None else drop_start_ms


def counted_p(checkout: ConversionVerdict, weight: float) -> float:
    """The funnel's (or the reach's, ``detectors.reach``) p-value adjusted for its share of
    the level where it counts (at most ``COUNTS_BELOW``), else 1: what ``with_funnel`` and
    ``onset_of`` compare."""
    p_checkout = checkout.p_value / weight
    return p_checkout if p_checkout <= COUNTS_BELOW else 1.0


def _with_p(verdict: ConversionVerdict, checkout: ConversionVerdict, weight: float
            ) -> ConversionVerdict:
    p_value = min(verdict.p_value / (1.0 - weight), counted_p(checkout, weight), 1.0)
    return ConversionVerdict(p_value, verdict.observed, verdict.expected, verdict.ratio,
                             verdict.window_start_ms, verdict.statistic)


def combine_funnel(funnel: Funnel | None, params: CampaignParams, tick_ms: int,  # noqa: PLR0917
                   conversion: ConversionVerdict, recent: ConversionVerdict,
                   drop: DeviceDrop | None) -> tuple[ConversionVerdict, ConversionVerdict,
                                                     tuple[ConversionVerdict, ConversionVerdict],
                                                     int | None]:
    """A campaign tick's funnel part: its scan (``scan_funnel``), the campaign's verdict
    and its last hour's combined with it (``with_funnel``; ``conversion`` and ``recent``
    already combined with the devices', ``drop`` the device drop that won, if one did),
    and the drop's onset by the test that decided (``onset_of``)."""
    checkout = scan_funnel(funnel, params, tick_ms)
    weight = params.funnel_test_weight
    onset = onset_of(conversion, None if drop is None else drop.start_ms, checkout[0], weight)
    conversion, recent = with_funnel(conversion, recent, checkout, weight)
    return conversion, recent, checkout, onset


def scan_funnel(funnel: Funnel | None, params: CampaignParams, tick_ms: int, *,
                weight: float | None = None) -> tuple[ConversionVerdict, ConversionVerdict]:
    """A campaign's funnel scan and its last hour's at ``tick_ms``, with its parameters;
    none while the test is off (``weight``: its share of the level, by default the
    funnel's), or the campaign has no funnel or a cold one."""
    share = params.funnel_test_weight if weight is None else weight
    if share <= 0 or funnel is None:
        return _NO_SCAN, _NO_SCAN
    return funnel.scan(tick_ms, windows_minutes=params.conversion_windows,
                       hold_minutes=params.hold_windows, tolerance=params.conversion_tolerance,
                       min_baseline_orders=params.min_baseline_conversions)


def price_funnel_drop(funnel: Funnel, checkout: ConversionVerdict, params: CampaignParams, *,
                      tick_ms: int, aov: float, aov_se: float, weight: float | None = None
                      ) -> tuple[Estimate, float]:
    """Revenue per hour missing among the reachers of the funnel's best window, scaled to
    their eventual orders (``pricing.price_conversion_loss``), and the money of the orders
    missing there by now; zero unless the funnel's evidence counts in the campaign's
    p-value (``COUNTS_BELOW``; ``weight``: its share of the level, by default the
    funnel's). For a drop the funnel sees before the session minutes show a shortfall to
    price (a payment that stopped minutes ago)."""
    base_orders, base_reachers = (float(v) for v in funnel.base.values)
    start = checkout.window_start_ms
    share = params.funnel_test_weight if weight is None else weight
    if start is None or share <= 0 or checkout.p_value / share > COUNTS_BELOW:
        return Estimate.zero(), 0.0
    minutes, reachers, _, _ = funnel.series(tick_ms)
    first = int(minutes.searchsorted(start))
    lost = price_conversion_loss(checkout, tick_ms=tick_ms,
                                 window_sessions=float(reachers[first:].sum()),
                                 baseline_conversions=base_orders,
                                 baseline_sessions=base_reachers, aov=aov, aov_se=aov_se)
    return lost, max(checkout.expected - checkout.observed, 0.0) * aov if lost.value > 0 else 0.0


def checkout_fields(checkout: ConversionVerdict) -> dict[str, Any]:
    """The funnel's verdict as the campaign verdict's ``checkout_*`` fields."""
    return {"checkout_p_value": checkout.p_value, "checkout_observed": checkout.observed,
            "checkout_expected": checkout.expected,
            "checkout_window_start_ms": checkout.window_start_ms}


class Funnel:
    """One campaign's checkout reachers per checkout minute, their orders and what is
    normal (module docstring). Event time is passed in; the state is plain JSON-able data."""

    __slots__ = ("base", "counts", "half_life_minutes", "horizon_minutes", "keep_minutes",
                 "lag", "last_matured_minute")

    def __init__(self, *, horizon_minutes: int = 120, keep_minutes: int = 140,
                 half_life_minutes: float = 720.0, prior_median_minutes: float = 2.0) -> None:
        self.horizon_minutes = horizon_minutes
        self.keep_minutes = keep_minutes
        self.half_life_minutes = half_life_minutes
        self.counts: dict[int, list[int]] = {}  # checkout minute -> [reachers, orders, flagged]
        self.lag = LagModel(horizon_minutes=horizon_minutes,
                            prior_median_minutes=prior_median_minutes)
        self.base = EwVector(2, half_life_minutes=half_life_minutes)  # [orders, reachers]
        self.last_matured_minute: int | None = None

    @classmethod
    def of(cls, params: CampaignParams, prior_median_minutes: float = 2.0) -> Funnel:
        """A campaign's funnel: its horizon, the minutes it keeps, its conversion half-life
        (``prior_median_minutes``: the delay to the counted event before any is learned)."""
        return cls(horizon_minutes=params.horizon_minutes, keep_minutes=params.keep_minutes,
                   half_life_minutes=params.conversion_half_life_minutes,
                   prior_median_minutes=prior_median_minutes)

    # -- facts ---------------------------------------------------------------------------
    def observe_checkout(self, checkout_ms: int) -> None:
        """A session reached the checkout at ``checkout_ms``."""
        row = self._row(minute_of(checkout_ms), create=True)
        if row is not None:
            row[REACHERS] += 1

    def retract_checkout(self, checkout_ms: int) -> bool:
        """Undo :meth:`observe_checkout` while its minute is live; False: left as counted."""
        row = self._row(minute_of(checkout_ms), create=False)
        if row is None or row[REACHERS] == 0:
            return False
        row[REACHERS] -= 1
        return True

    def observe_order(self, checkout_ms: int, order_ts_ms: int) -> None:
        """The first order of a session that reached the checkout at ``checkout_ms``."""
        self.lag.update(max(order_ts_ms - checkout_ms, 0) / MINUTE_MS)
        row = self._row(minute_of(checkout_ms), create=False)
        if row is not None:
            row[ORDERS] += 1

    def retract_order(self, checkout_ms: int, order_ts_ms: int) -> bool:
        """Undo :meth:`observe_order` while its minute is live; False: left as counted."""
        row = self._row(minute_of(checkout_ms), create=False)
        if row is None:
            return False
        self.lag.revert(max(order_ts_ms - checkout_ms, 0) / MINUTE_MS)
        row[ORDERS] = max(row[ORDERS] - 1, 0)
        return True

    def _row(self, minute: int, *, create: bool) -> list[int] | None:
        done = self.last_matured_minute
        if done is not None and minute <= done:
            return None
        row = self.counts.get(minute)
        if row is None and create:
            row = self.counts[minute] = [0, 0, 0]
        return row

    # -- tick ------------------------------------------------------------------------------
    def flag(self, start_ms: int, end_ms: int) -> None:
        """Keep the minutes from ``start_ms`` up to ``end_ms`` out of the baseline."""
        for minute, row in self.counts.items():
            if start_ms <= minute < end_ms:
                row[FLAGGED] = 1

    def mature(self, tick_ms: int, *, learn_flagged: bool = False) -> None:
        """Learn the minutes older than the horizon (the flagged ones only with
        ``learn_flagged``: the campaign has accepted a lasting change as its new normal,
        ``detectors.held``); forget the oldest."""
        last = minute_of(tick_ms - self.horizon_minutes * MINUTE_MS) - MINUTE_MS
        done = self.last_matured_minute
        for minute in sorted(self.counts):
            if minute > last:
                break
            row = self.counts[minute]
            if (done is None or minute > done) and (learn_flagged or not row[FLAGGED]):
                self.base.add(minute, np.array([float(row[ORDERS]), float(row[REACHERS])]))
        if done is None or last > done:
            self.last_matured_minute = last
        oldest = tick_ms - self.keep_minutes * MINUTE_MS
        for minute in [m for m in self.counts if m < oldest]:
            del self.counts[minute]

    def series(self, tick_ms: int) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray,
                                             FloatArray]:
        """The closed minutes of the last ``horizon_minutes`` before ``tick_ms``: minutes,
        reachers, their orders and ``G(age)`` of each."""
        first = tick_ms - self.horizon_minutes * MINUTE_MS
        counts = self.counts
        minutes = sorted(m for m in counts if first <= m < tick_ms)
        minute_array = np.array(minutes, dtype=np.int64)
        rows = np.fromiter(chain.from_iterable(counts[m] for m in minutes), np.int64,
                           3 * len(minutes)).astype(np.float64).reshape(-1, 3)
        completeness = self.lag.cdf_array((tick_ms - minute_array) / MINUTE_MS - 0.5)
        return minute_array, rows[:, REACHERS], rows[:, ORDERS], completeness

    def scan(self, tick_ms: int, *, windows_minutes: Sequence[int], hold_minutes: Sequence[int],
             tolerance: float, min_baseline_orders: float
             ) -> tuple[ConversionVerdict, ConversionVerdict]:
        """:func:`funnel_scan` of the minutes before ``tick_ms`` against the baseline; no
        scan (p-value 1) while the baseline holds fewer than ``min_baseline_orders``."""
        base_orders, base_reachers = (float(v) for v in self.base.values)
        if base_orders < min_baseline_orders:
            return _NO_SCAN, _NO_SCAN
        return funnel_scan(*self.series(tick_ms), base_orders, base_reachers,
                           windows_minutes=windows_minutes, hold_minutes=hold_minutes,
                           tolerance=tolerance)

    def warm(self, min_baseline_orders: float) -> bool:
        return float(self.base.values[0]) >= min_baseline_orders

    # -- state -----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"c": [[m, *row] for m, row in sorted(self.counts.items())],
                "lag": self.lag.to_state(), "b": self.base.to_state(),
                "lmm": self.last_matured_minute}

    def restore(self, state: dict[str, Any]) -> None:
        """Take :meth:`to_state`'s data (this funnel's parameters stay)."""
        self.counts = {int(m): [int(r), int(o), int(f)] for m, r, o, f in state["c"]}
        self.lag = LagModel.from_state(state["lag"])
        self.base = EwVector.from_state(state["b"])
        self.last_matured_minute = state["lmm"]
