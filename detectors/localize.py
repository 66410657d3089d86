"""Where it happened: which devices carry a slowdown or a conversion drop, and how sure we are.

An on-call engineer paged for slow pages first asks where: a heavy script that only hurts
phones is a different fix from a slow database. The campaign model already keeps what this
needs: landing LCPs of commerce sessions counted by LCP bin and device stratum, for the
recent minutes (the pricing window) and, learned from matured minutes that no test flagged,
as an exponentially forgetting baseline (``CampaignModel.curve_sessions``). From them, per
device:

* the shift of the mean log-LCP, recent against baseline (bin centres; 0.25 s bins), with
  its standard error ``sqrt(var_r / n_r + var_b / n_b)``;
* the seconds of waiting it adds: recent sessions x (recent mean LCP - baseline mean LCP),
  and its share of the total added (negative additions count as 0).

A slowdown is **on** some devices only when two things hold: Cochran's Q test rejects
equal log-shifts across the devices at ``alpha`` (0.001: the question is asked at every
alert update), and fewer devices than are present carry ``share`` (80%) of the added
seconds, each of them significantly slower (z above ``min_z``). Otherwise it is on every
device, or unclear, and nothing is named. A slowdown by the same factor everywhere has
equal log-shifts, so Q does not reject it, whatever the device mix; a common drift of the
baseline (time of day) cancels in Q too.

A conversion drop (a payment button broken in one browser) is placed the same way, on
conversions (:func:`device_conversions`): per device, the orders of the recent sessions
against those expected from the device's learned conversion rate and the order lag; a
device is clearly short when the one-sided Poisson probability of so few is below
``Phi(-3)`` and clearly not when above ``Phi(-2)``, and the devices differ when Pearson's
chi-squared test of the orders' split across devices, given their total, against the split
of the expected, rejects at ``alpha``. The named devices need only two thirds of the
missing orders (the others' few orders make their share noisy), and the devices not named
must expect at least a fifth of the orders.

Notes:
    ``tests/unit/test_localize.py`` checks Q against ``scipy.stats.chi2``, and in seeded
    simulations how often a slowdown (or a drop) of every device is wrongly placed (below
    1% at the default level) and how often a phone-only one is found.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2, norm, poisson

from detectors.elasticity import BIN_CENTERS_S
from detectors.strata import DEVICE_STRATA, by_stratum
from detectors.verdicts import ConversionRow, DeviceRow

FloatArray = npt.NDArray[np.float64]
_LOG_CENTERS = np.log(BIN_CENTERS_S)
_LOG_CENTERS.setflags(write=False)


def device_name(stratum: int) -> str:
    """The name a person reads for a device stratum (``unknown`` for the empty one)."""
    return DEVICE_STRATA[stratum] or "unknown"


def device_shifts(baseline: npt.ArrayLike, recent: npt.ArrayLike, *,
                  min_sessions: float = 30.0) -> dict[str, DeviceRow]:
    """Per device with at least ``min_sessions`` recent and baseline sessions, its row.

    Args:
        baseline: curve vector (``N_BINS`` counts per stratum, strata in order), may be
            fractional (exponentially weighted counts).
        recent: the same for the recent minutes.
        min_sessions: fewer on either side and the device is left out.
    """
    rows: dict[str, DeviceRow] = {}
    base_rows, recent_rows = by_stratum(baseline), by_stratum(recent)
    if base_rows.shape != recent_rows.shape:
        msg = f"baseline and recent differ in shape: {base_rows.shape} {recent_rows.shape}"
        raise ValueError(msg)
    for stratum, (base, now) in enumerate(zip(base_rows, recent_rows, strict=True)):
        n_b, n_r = float(base.sum()), float(now.sum())
        if n_b < min_sessions or n_r < min_sessions:
            continue
        mean_b, var_b = _log_moments(base, n_b)
        mean_r, var_r = _log_moments(now, n_r)
        se = math.sqrt(var_r / n_r + var_b / n_b)
        added = n_r * float((now @ BIN_CENTERS_S) / n_r - (base @ BIN_CENTERS_S) / n_b)
        rows[device_name(stratum)] = (n_r, mean_r - mean_b, se, added)
    return rows


def _log_moments(counts: FloatArray, n: float) -> tuple[float, float]:
    mean = float(counts @ _LOG_CENTERS) / n
    var = float(counts @ (_LOG_CENTERS - mean) ** 2) / n
    return mean, var


def heterogeneity_p(rows: Mapping[str, DeviceRow]) -> float:
    """Cochran's Q test that every device's log-shift is the same (1.0 below two devices).

    ``Q = sum w_d (shift_d - pooled)^2`` with ``w_d = 1 / se_d^2`` and the weighted mean as
    ``pooled``; chi-squared with one degree of freedom fewer than devices.
    """
    usable = [(shift, se) for _, shift, se, _ in rows.values() if se > 0]
    if len(usable) < 2:
        return 1.0
    shifts = np.array([s for s, _ in usable])
    weights = 1.0 / np.array([se for _, se in usable]) ** 2
    pooled = float(weights @ shifts) / float(weights.sum())
    q = float(weights @ (shifts - pooled) ** 2)
    return float(chi2.sf(q, len(usable) - 1))


def delay_shares(rows: Mapping[str, DeviceRow]) -> dict[str, float]:
    """Each device's share of the seconds of waiting added (all 0 when none was added)."""
    added = {name: max(row[3], 0.0) for name, row in rows.items()}
    total = sum(added.values())
    return {name: (value / total if total > 0 else 0.0) for name, value in added.items()}


def slow_devices(rows: Mapping[str, DeviceRow], *, alpha: float = 0.001, share: float = 0.8,
                 min_z: float = 3.0, max_other_z: float = 2.0) -> tuple[str, ...]:
    """The devices a slowdown is on, most of the added waiting first; empty when it is on
    every device or the data cannot tell (see the module docstring).

    Named are the devices clearly slower (z above ``min_z``), when every other device is
    clearly not (z below ``max_other_z``), they carry ``share`` of the added waiting, and
    Cochran's Q rejects equal shifts at ``alpha``.
    """
    z = {name: (shift / se if se > 0 else 0.0) for name, (_, shift, se, _) in rows.items()}
    named = [name for name in rows if z[name] > min_z]
    if not named or len(named) == len(rows):
        return ()
    if any(max_other_z <= z[name] for name in rows if name not in named):
        return ()
    shares = delay_shares(rows)
    if sum(shares[name] for name in named) < share or heterogeneity_p(rows) >= alpha:
        return ()
    return tuple(sorted(named, key=lambda name: -shares[name]))


_CLEARLY = float(norm.sf(3.0))  # one-sided, as z above 3
_CLEARLY_NOT = float(norm.sf(2.0))


def device_conversions(base_sessions: npt.ArrayLike, base_conversions: npt.ArrayLike,
                       exposure: npt.ArrayLike, observed: npt.ArrayLike, *,
                       min_expected: float = 5.0) -> dict[str, ConversionRow]:
    """Per device (stratum order), the expected and observed conversions of recent sessions.

    Args:
        base_sessions, base_conversions: the learned sessions and conversions per stratum
            (may be fractional); the device's rate is their ratio.
        exposure: per stratum, recent sessions weighted by their completeness ``F(age)``.
        observed: per stratum, the conversions of those sessions seen so far.
        min_expected: devices expecting fewer are left out.
    """
    rows: dict[str, ConversionRow] = {}
    arrays = [np.asarray(a, dtype=np.float64) for a in
              (base_sessions, base_conversions, exposure, observed)]
    if len({a.shape for a in arrays}) != 1:
        msg = f"per-stratum arrays differ in shape: {[a.shape for a in arrays]}"
        raise ValueError(msg)
    for stratum, (n_b, c_b, e_r, o_r) in enumerate(zip(*arrays, strict=True)):
        expected = float(e_r * c_b / n_b) if n_b > 0 else 0.0
        if expected >= min_expected:
            rows[device_name(stratum)] = (expected, float(o_r))
    return rows


def conversions_differ_p(rows: Mapping[str, ConversionRow]) -> float:
    """Pearson's chi-squared test that the observed conversions split across the devices as
    the expected do (one ratio for all); 1.0 below two devices or with no conversion."""
    if len(rows) < 2:
        return 1.0
    expected = np.array([e for e, _ in rows.values()])
    observed = np.array([o for _, o in rows.values()])
    total = float(observed.sum())
    if total <= 0:
        return 1.0
    fitted = total * expected / float(expected.sum())
    return float(chi2.sf(float(((observed - fitted) ** 2 / fitted).sum()), len(rows) - 1))


def missing_shares(rows: Mapping[str, ConversionRow]) -> dict[str, float]:
    """Each device's share of the conversions missing (expected less observed, at least 0)."""
    missing = {name: max(e - o, 0.0) for name, (e, o) in rows.items()}
    total = sum(missing.values())
    return {name: (value / total if total > 0 else 0.0) for name, value in missing.items()}


def drop_devices(rows: Mapping[str, ConversionRow], *, alpha: float = 0.001,
                 share: float = 2 / 3, min_others: float = 0.2) -> tuple[str, ...]:
    """The devices a conversion drop is on, most of the missing first; empty when it is on
    every device or the data cannot tell (the rule of :func:`slow_devices`, on the one-sided
    Poisson probability of so few conversions; the share is lower, as the few orders of
    the other devices make their share of the missing noisy). The devices not named must
    expect at least ``min_others`` of the conversions: a drop on nearly all of them is no
    place."""
    p_short = {name: float(poisson.cdf(o, e)) for name, (e, o) in rows.items()}
    named = [name for name in rows if p_short[name] < _CLEARLY]
    if not named or len(named) == len(rows):
        return ()
    if any(p_short[name] <= _CLEARLY_NOT for name in rows if name not in named):
        return ()
    shares = missing_shares(rows)
    expected = sum(e for e, _ in rows.values())
    if (sum(rows[name][0] for name in named) > (1 - min_others) * expected
            or sum(shares[name] for name in named) < share
            or conversions_differ_p(rows) >= alpha):
        return ()
    return tuple(sorted(named, key=lambda name: -shares[name]))
