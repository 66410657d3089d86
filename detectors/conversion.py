"""Window-scan test of observed against lag-adjusted expected conversions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import betainc

from detectors.scan_lists import argmin_of, p_values_rows, xlogy

__all__ = ["MINUTE_MS", "ConversionVerdict", "conversion_scan", "conversion_scan_rows",
           "hold_columns", "start_indices", "window_p_values", "window_starts"]

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True, init=False)
class ConversionVerdict:
    """The conversion test at one tick, for the window that is most surprising.

    Attributes:
        p_value: Bonferroni-adjusted one-sided p-value of "rate >= (1 - tolerance) x
            baseline" against a drop (1.0 when there is no drop, data or baseline).
        observed: conversions seen so far in the window.
        expected: lag-adjusted expected conversions at the baseline rate.
        ratio: ``observed / expected`` (nan when ``expected`` is 0 or unknown).
        window_start_ms: first minute of the window (``None`` without data).
        statistic: signed root deviance of the conditional binomial (negative for a
            drop, 0 when there is none).
    """

    p_value: float
    observed: float
    expected: float
    ratio: float
    window_start_ms: int | None
    statistic: float

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(  # noqa: PLR0917 (the dataclass's positional signature)
        self, p_value: float, observed: float, expected: float, ratio: float,
        window_start_ms: int | None, statistic: float,
    ) -> None:
        object.__setattr__(self, "p_value", p_value)
        object.__setattr__(self, "observed", observed)
        object.__setattr__(self, "expected", expected)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "window_start_ms", window_start_ms)
        object.__setattr__(self, "statistic", statistic)


_NO_DATA = ConversionVerdict(1.0, 0.0, 0.0, math.nan, None, 0.0)


def conversion_scan(  # noqa: PLR0917  # six positional arguments: the agreed signature
    minute_ms: npt.ArrayLike,
    sessions: npt.ArrayLike,
    conversions: npt.ArrayLike,
    completeness: npt.ArrayLike,
    baseline_conversions: float,
    baseline_sessions: float,
    *,
    windows_minutes: Sequence[int] = (10, 20, 30, 60, 120),
    tolerance: float = 0.1,
) -> ConversionVerdict:
    """Test the latest windows of session-minutes for a conversion drop.

    Args:
        minute_ms: session minutes, ascending; the last one is the latest closed minute.
        sessions: sessions that started in each minute.
        conversions: converted sessions of each minute seen so far.
        completeness: ``F(age)`` of each minute from the lag model.
        baseline_conversions: conversions of the matured baseline sessions.
        baseline_sessions: matured baseline sessions.
        windows_minutes: window lengths; window ``w`` holds the minutes later than
            ``minute_ms[-1] - w`` minutes.
        tolerance: drops smaller than this fraction of the baseline rate are no alarm.

    Returns:
        The verdict of the window with the smallest p-value (the longest window when no
        window shows a drop).

    Raises:
        ValueError: on arrays of different lengths, empty or non-positive windows,
            a tolerance outside [0, 1), or non-finite sums.

    Notes:
        Exact conditional test for two Poisson rates (Przyborowski & Wilenski 1940): given
        ``k = O_w + O_b``, ``O_w ~ Binomial(k, p0)`` with ``p0 = r0 E_w / (r0 E_w + S_b)``,
        ``r0 = 1 - tolerance``, where ``E_w = sum(sessions * completeness)`` is the
        window's lag-adjusted exposure; ``p = P(X <= O_w)``. It is valid (conservative,
        being discrete) when conversions are Poisson given the exposure, the lag model's
        ``F`` is right and the baseline's sessions are independent of the window's.
        Bonferroni over the distinct windows makes each tick's p-value valid; successive
        ticks share data, so per-tick p-values are not independent. Over-dispersion of
        the true rate (day-to-day swings) is what ``tolerance`` absorbs. Measured power
        (tests/unit/test_conversion.py): a sustained 50% drop at 2 orders/min (lag median
        6 min) reaches p < 1e-5 after a median of about an hour; no test reaches 95% power
        within 60 minutes at that level (the matched-window exact test has 92%).

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(4)
        >>> minutes = np.arange(90) * 60_000
        >>> sessions = rng.poisson(67, size=90).astype(float)
        >>> completeness = np.clip((90 - np.arange(90) - 0.5) / 15.0, 0.0, 1.0)
        >>> rate = np.where(np.arange(90) >= 30, 0.015, 0.03)
        >>> conversions = rng.binomial(sessions.astype(int), rate * completeness)
        >>> verdict = conversion_scan(minutes, sessions, conversions, completeness, 3000, 1e5)
        >>> verdict.p_value < 0.01, verdict.window_start_ms, round(verdict.ratio, 1)
        (True, 1800000, 0.6)
    """
    if not 0.0 <= tolerance < 1.0:
        msg = f"tolerance must be in [0, 1), got {tolerance!r}"
        raise ValueError(msg)
    minute = np.asarray(minute_ms)
    arrays = [np.asarray(a, dtype=np.float64) for a in (sessions, conversions, completeness)]
    if any(a.shape != minute.shape for a in arrays) or minute.ndim != 1:
        msg = "minute_ms, sessions, conversions and completeness must be 1-d of one length"
        raise ValueError(msg)
    if minute.shape[0] == 0:
        return _NO_DATA
    starts = window_starts(minute, windows_minutes)
    # suffix sums: the window starting at index s sums the last n - s minutes
    exposure_tail = (arrays[0] * arrays[2])[::-1].cumsum()
    observed_tail = arrays[1][::-1].cumsum()
    if not (math.isfinite(exposure_tail[-1]) and math.isfinite(observed_tail[-1])):
        msg = "sessions, conversions and completeness must be finite"
        raise ValueError(msg)
    lengths = minute.shape[0] - 1 - starts
    exposure, observed = exposure_tail[lengths], observed_tail[lengths]
    if not (baseline_sessions > 0 and baseline_conversions > 0):
        return ConversionVerdict(
            1.0, float(observed[0]), math.nan, math.nan, int(minute[starts[0]]), 0.0
        )
    return _best_window(
        minute,
        starts,
        exposure,
        observed,
        baseline_conversions=baseline_conversions,
        baseline_sessions=baseline_sessions,
        r0=1.0 - tolerance,
    )


def hold_columns(minute: npt.NDArray[np.int64], starts: list[int],
                 hold_minutes: Sequence[int]) -> list[int]:
    """The indices into ``starts`` (:func:`start_indices` of a scan's windows) of the
    windows that start where one of ``hold_minutes`` does: the last hour's scan, which
    holds an open drop (none without ``hold_minutes``)."""
    kept = set(start_indices(minute, hold_minutes)) if hold_minutes else set()
    return [j for j, start in enumerate(starts) if start in kept]


def window_starts(
    minute: npt.NDArray[np.int64], windows_minutes: Sequence[int]
) -> npt.NDArray[np.intp]:
    """Distinct first indices of the windows, longest window first."""
    return np.array(start_indices(minute, windows_minutes), dtype=np.intp)


def start_indices(minute: npt.NDArray[np.int64], windows_minutes: Sequence[int]) -> list[int]:
    """:func:`window_starts` as a list (one search of the minutes; the rest on a handful of
    ints, which a tick does four times per campaign)."""
    if not windows_minutes or min(windows_minutes) <= 0:
        msg = f"windows_minutes must be non-empty positive ints, got {windows_minutes!r}"
        raise ValueError(msg)
    last = int(minute[-1])
    cutoffs = [last - w * MINUTE_MS for w in sorted(set(windows_minutes), reverse=True)]
    found: list[int] = minute.searchsorted(np.array(cutoffs, dtype=np.int64),
                                           side="right").tolist()
    distinct = found[:1]
    for start in found[1:]:
        if start != distinct[-1]:
            distinct.append(start)
    return distinct


def _best_window(
    minute: npt.NDArray[np.int64],
    starts: npt.NDArray[np.intp],
    exposure: npt.NDArray[np.float64],
    observed: npt.NDArray[np.float64],
    *,
    baseline_conversions: float,
    baseline_sessions: float,
    r0: float,
) -> ConversionVerdict:
    """Conditional binomial p-value of every window; the smallest one, adjusted."""
    expected, p0, p_values = window_p_values(exposure, observed, baseline_conversions,
                                              baseline_sessions, r0)
    first = minute[starts].tolist()
    return _verdict_of(first, range(len(first)), expected.tolist(), observed.tolist(),
                       p0.tolist(), p_values.tolist(), baseline_conversions, r0)


def window_p_values(
    exposure: npt.NDArray[np.float64], observed: npt.NDArray[np.float64],
    baseline_conversions: float | npt.NDArray[np.float64],
    baseline_sessions: float | npt.NDArray[np.float64], r0: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Expected conversions, null proportion ``p0`` and p-value of each window (element
    by element; the baselines broadcast against the windows)."""
    expected = exposure * (baseline_conversions / baseline_sessions)
    null_exposure = r0 * exposure
    p0 = null_exposure / (null_exposure + baseline_sessions)
    # P(Binomial(k, p0) <= O) = I_{1 - p0}(k - O, O + 1), k - O = baseline conversions
    p_values = betainc(baseline_conversions, observed + 1.0, 1.0 - p0)
    p_values[observed >= r0 * expected] = 1.0
    return expected, p0, p_values


def _verdict_of(  # noqa: PLR0917 (one row of the windows' figures)
    first_minutes: list[int], cols: Sequence[int], expected: list[float],
    observed: list[float], p0: list[float], p_values: list[float],
    baseline_conversions: float, r0: float,
) -> ConversionVerdict:
    """The verdict of the window (of ``cols``, indices into the lists, one per window) with
    the smallest p-value, Bonferroni-adjusted over ``cols``. Plain lists: a tick reads a
    few windows of a few rows, where numpy's per-call cost is most of the work."""
    best = argmin_of(p_values, cols)
    obs, exp_, p_best = observed[best], expected[best], p_values[best]
    statistic = _signed_root_deviance(obs, obs + baseline_conversions, p0[best])
    return ConversionVerdict(
        p_value=min(1.0, p_best * len(cols)),
        observed=obs,
        expected=exp_,
        ratio=obs / exp_ if exp_ > 0 else math.nan,
        window_start_ms=first_minutes[best],
        statistic=statistic if obs < r0 * exp_ else 0.0,
    )


def conversion_scan_rows(  # noqa: PLR0917 (conversion_scan's, a row each)
    minute_ms: npt.NDArray[np.int64],
    sessions: npt.NDArray[np.float64],
    conversions: npt.NDArray[np.float64],
    completeness: npt.NDArray[np.float64],
    baseline_conversions: npt.NDArray[np.float64],
    baseline_sessions: npt.NDArray[np.float64],
    *,
    windows_minutes: Sequence[int],
    tolerance: float,
    min_baseline_conversions: float,
    hold_minutes: Sequence[int] = (),
) -> tuple[list[ConversionVerdict], list[ConversionVerdict]]:
    """:func:`conversion_scan` of each row of ``sessions`` and ``conversions`` (2-d, a row
    per series over the same minutes and completeness) against its own baseline, in one
    pass; a row whose baseline holds fewer than ``min_baseline_conversions`` (or no
    session) gets p-value 1. The figures are those of :func:`conversion_scan` on the row,
    over ``windows_minutes`` and then over ``hold_minutes`` (some of those windows: the
    same p-values, fewer of them to choose from; empty when not given).
    """
    if not 0.0 <= tolerance < 1.0:
        msg = f"tolerance must be in [0, 1), got {tolerance!r}"
        raise ValueError(msg)
    one_per_row = (sessions.shape[0],)
    if sessions.ndim != 2 or sessions.shape != conversions.shape or \
            sessions.shape[1] != minute_ms.shape[0] or \
            baseline_conversions.shape != one_per_row or baseline_sessions.shape != one_per_row:
        msg = "sessions and conversions must be (rows, minutes), the baselines one per row"
        raise ValueError(msg)
    rows = sessions.shape[0]
    warm = (baseline_conversions >= min_baseline_conversions) & (baseline_sessions > 0)
    if not set(hold_minutes) <= set(windows_minutes):
        msg = f"hold_minutes {hold_minutes!r} must be some of {windows_minutes!r}"
        raise ValueError(msg)
    if minute_ms.shape[0] == 0 or not warm.any():
        return [_NO_DATA] * rows, [_NO_DATA] * rows if hold_minutes else []
    starts = start_indices(minute_ms, windows_minutes)
    lengths = minute_ms.shape[0] - 1 - np.array(starts, dtype=np.intp)
    exposure = (sessions * completeness)[:, ::-1].cumsum(axis=1)[:, lengths].tolist()
    observed = conversions[:, ::-1].cumsum(axis=1)[:, lengths].tolist()
    warm_rows: list[bool] = warm.tolist()
    base_c = [c if w else 1.0 for c, w in zip(baseline_conversions.tolist(), warm_rows,
                                              strict=True)]
    base_s = [s if w else 1.0 for s, w in zip(baseline_sessions.tolist(), warm_rows,
                                              strict=True)]
    r0 = 1.0 - tolerance
    expected, p0, p_values = p_values_rows(exposure, observed, base_c, base_s, r0)
    table = _Rows(minute_ms[starts].tolist(), expected, observed, p0, p_values,
                  baseline_conversions.tolist(), warm_rows)
    main = table.verdicts(range(len(starts)), r0)
    if not hold_minutes:
        return main, []
    return main, table.verdicts(hold_columns(minute_ms, starts, hold_minutes), r0)


class _Rows:
    """The windows' figures of every row of a scan, as lists (``table.verdicts``)."""

    __slots__ = ("baseline", "expected", "first_minutes", "observed", "p0", "p_values", "warm")

    def __init__(  # noqa: PLR0917 (the rows' figures)
        self, first_minutes: list[int], expected: list[list[float]],
        observed: list[list[float]], p0: list[list[float]], p_values: list[list[float]],
        baseline: list[float], warm: list[bool],
    ) -> None:
        self.first_minutes, self.expected, self.observed = first_minutes, expected, observed
        self.p0, self.p_values, self.baseline, self.warm = p0, p_values, baseline, warm

    def verdicts(self, cols: Sequence[int], r0: float) -> list[ConversionVerdict]:
        """:func:`_verdict_of` of each warm row over the windows ``cols`` (``_NO_DATA`` for
        a cold row)."""
        return [_verdict_of(self.first_minutes, cols, self.expected[i], self.observed[i],
                            self.p0[i], self.p_values[i], self.baseline[i], r0)
                if self.warm[i] else _NO_DATA for i in range(len(self.warm))]


def _signed_root_deviance(observed: float, total: float, p0: float) -> float:
    """``-sqrt(G^2)`` of ``observed ~ Binomial(total, p0)`` when below its mean, else 0."""
    mean = total * p0
    if observed >= mean:
        return 0.0
    deviance = 2.0 * (
        xlogy(observed, observed / mean)
        + xlogy(total - observed, (total - observed) / (total - mean))
    )
    return -math.sqrt(max(0.0, deviance))
