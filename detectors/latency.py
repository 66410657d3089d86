"""Sequential test of an upward shift in a campaign's mean log-LCP (one-sided CUSUM)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

__all__ = ["MINUTE_MS", "LatencyCusum", "LatencyVerdict"]

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True, init=False)
class LatencyVerdict:
    """The latency test after one closed minute.

    Attributes:
        statistic: CUSUM value ``S`` (log-likelihood ratio units) after the minute.
        threshold: alarm threshold ``h``.
        is_regression: ``statistic >= threshold``.
        started_ms: estimated change point (first minute of the current excursion of
            ``S`` above 0); ``None`` when ``S == 0``.
        shift: this minute's ``mean_log - baseline_mean_log`` (nan when no sessions).
    """

    statistic: float
    threshold: float
    is_regression: bool
    started_ms: int | None
    shift: float

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(self, statistic: float, threshold: float, is_regression: bool,
                 started_ms: int | None, shift: float) -> None:
        object.__setattr__(self, "statistic", statistic)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "is_regression", is_regression)
        object.__setattr__(self, "started_ms", started_ms)
        object.__setattr__(self, "shift", shift)


class LatencyCusum:
    """One-sided CUSUM for an upward shift of ``shift`` in mean log-LCP.

    Args:
        shift: the shift to detect, in natural-log units (``log(1.25)``: 25% slower).
        threshold: alarm threshold ``h`` on the CUSUM.
        max_step_fraction: cap of one minute's increment as a fraction of ``threshold``.
        ceiling_fraction: cap of the statistic itself (x ``threshold``), so that after a
            long incident it falls below the threshold within minutes, not hours.
        max_excursion_minutes: an excursion of ``S`` above 0 that has not alarmed this long
            after it began starts again from 0 (``None``: never). On a campaign with a
            session or two a minute ``S`` falls by ~0.1 a minute after a slowdown it could
            not prove, so without a limit the old evidence can still alarm an hour later.

    Raises:
        ValueError: unless ``shift > 0``, ``threshold > 0`` and ``0 < max_step_fraction <= 1``.

    Notes:
        Page's CUSUM on the per-minute log-likelihood ratio of ``n`` normal session
        log-LCPs with known spread ``sd``: mean ``baseline + shift`` against ``baseline``,
        ``inc = n * shift / sd^2 * (mean_log - baseline - shift / 2)``. Each increment is
        capped at ``threshold * max_step_fraction``, so at least ``1 / max_step_fraction``
        minutes of evidence are needed and a one-minute blip never alarms alone; a minute
        without sessions leaves ``S`` unchanged. It is valid when session log-LCPs are
        roughly normal with the given ``sd`` and the baseline is close to the true
        in-control mean; then the in-control average run length is of order
        ``exp(threshold)`` minutes or more (overshoot and the cap lengthen it): measured
        about 2.6e5 minutes for ``threshold=10``, cap 1/3, ``n=20``, ``sd=0.5``. A real
        ``log(1.5)`` slowdown is caught after 8.3 minutes on average at ``n=5`` and 3-4
        at ``n >= 20`` (tests/unit/test_latency.py). An estimated ``sd`` or baseline that
        is off shortens the in-control run length: keep both conservative.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(5)
        >>> cusum = LatencyCusum()
        >>> alarms = []
        >>> for minute in range(60):
        ...     slow = np.log(1.5) if minute >= 30 else 0.0
        ...     mean_log = 7.8 + slow + float(rng.normal(0.0, 0.5 / np.sqrt(20)))
        ...     verdict = cusum.score(minute * 60_000, 20, mean_log, 7.8, 0.5)
        ...     cusum.update(minute * 60_000, 20, mean_log, 7.8, 0.5)
        ...     alarms.append(verdict.is_regression)
        >>> alarms.index(True), verdict.started_ms
        (33, 1800000)
    """

    __slots__ = ("_started_ms", "_statistic", "ceiling_fraction", "max_excursion_ms",
                 "max_step_fraction", "shift", "threshold")

    def __init__(
        self,
        *,
        shift: float = math.log(1.25),
        threshold: float = 10.0,
        max_step_fraction: float = 1 / 3,
        ceiling_fraction: float = 1.5,
        max_excursion_minutes: int | None = None,
    ) -> None:
        for name, value in (("shift", shift), ("threshold", threshold)):
            if not (math.isfinite(value) and value > 0):
                msg = f"{name} must be positive and finite, got {value!r}"
                raise ValueError(msg)
        if not 0.0 < max_step_fraction <= 1.0:
            msg = f"max_step_fraction must be in (0, 1], got {max_step_fraction!r}"
            raise ValueError(msg)
        self.shift = float(shift)
        self.threshold = float(threshold)
        if ceiling_fraction < 1.0:
            msg = f"ceiling_fraction must be >= 1, got {ceiling_fraction!r}"
            raise ValueError(msg)
        self.max_step_fraction = float(max_step_fraction)
        self.ceiling_fraction = float(ceiling_fraction)
        if max_excursion_minutes is not None and max_excursion_minutes < 1:
            msg = f"max_excursion_minutes must be >= 1, got {max_excursion_minutes!r}"
            raise ValueError(msg)
        self.max_excursion_ms = None if max_excursion_minutes is None \
            else max_excursion_minutes * MINUTE_MS
        self._statistic = 0.0
        self._started_ms: int | None = None

    @property
    def statistic(self) -> float:
        """Current CUSUM value."""
        return self._statistic

    def position(self) -> tuple[float, int | None]:
        """``S`` and the start of its excursion, for :meth:`rewind`."""
        return self._statistic, self._started_ms

    def rewind(self, position: tuple[float, int | None]) -> None:
        """Back to a :meth:`position` (to fold corrected minutes in again)."""
        self._statistic, self._started_ms = position

    def increment(self, n: int, mean_log: float, baseline_mean_log: float, sd_log: float) -> float:
        """One minute's capped log-likelihood ratio (0 when ``n == 0``)."""
        if n < 0:
            msg = f"n must be >= 0, got {n!r}"
            raise ValueError(msg)
        if n == 0:
            return 0.0
        if not (math.isfinite(sd_log) and sd_log > 0):
            msg = f"sd_log must be positive and finite, got {sd_log!r}"
            raise ValueError(msg)
        if not (math.isfinite(mean_log) and math.isfinite(baseline_mean_log)):
            msg = f"mean_log and baseline must be finite, got {mean_log!r}, {baseline_mean_log!r}"
            raise ValueError(msg)
        excess = mean_log - baseline_mean_log - self.shift / 2.0
        llr = n * self.shift / sd_log**2 * excess
        return min(llr, self.threshold * self.max_step_fraction)

    def score(
        self, minute_ms: int, n: int, mean_log: float, baseline_mean_log: float, sd_log: float
    ) -> LatencyVerdict:
        """The verdict the minute would give, without changing the state."""
        statistic, started_ms = self._next(minute_ms, n, mean_log, baseline_mean_log, sd_log)
        return LatencyVerdict(
            statistic=statistic,
            threshold=self.threshold,
            is_regression=statistic >= self.threshold,
            started_ms=started_ms,
            shift=mean_log - baseline_mean_log if n > 0 else math.nan,
        )

    def update(
        self, minute_ms: int, n: int, mean_log: float, baseline_mean_log: float, sd_log: float
    ) -> None:
        """Fold one closed minute into the CUSUM."""
        self._statistic, self._started_ms = self._next(
            minute_ms, n, mean_log, baseline_mean_log, sd_log
        )

    def step(
        self, minute_ms: int, n: int, mean_log: float, baseline_mean_log: float, sd_log: float
    ) -> LatencyVerdict:
        """:meth:`score` the minute, then fold it in (as :meth:`update` would)."""
        verdict = self.score(minute_ms, n, mean_log, baseline_mean_log, sd_log)
        self._statistic, self._started_ms = verdict.statistic, verdict.started_ms
        return verdict

    def reset(self) -> None:
        """Back to ``S = 0`` (e.g. after an incident is resolved)."""
        self._statistic = 0.0
        self._started_ms = None

    def _next(
        self, minute_ms: int, n: int, mean_log: float, baseline_mean_log: float, sd_log: float
    ) -> tuple[float, int | None]:
        before, started = self._statistic, self._started_ms
        if (self.max_excursion_ms is not None and started is not None and before < self.threshold
                and minute_ms - started >= self.max_excursion_ms):
            before, started = 0.0, None  # evidence this old that never alarmed is dropped
        statistic = min(
            max(0.0, before + self.increment(n, mean_log, baseline_mean_log, sd_log)),
            self.threshold * self.ceiling_fraction,  # so a long incident ends promptly
        )
        if statistic == 0.0:
            return 0.0, None
        if started is None:
            return statistic, minute_ms
        return statistic, started

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        return {
            "shift": self.shift,
            "threshold": self.threshold,
            "max_step_fraction": self.max_step_fraction,
            "ceiling_fraction": self.ceiling_fraction,
            "max_excursion_ms": self.max_excursion_ms,
            "statistic": self._statistic,
            "started_ms": self._started_ms,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_state` output."""
        cusum = cls(
            shift=float(state["shift"]),
            threshold=float(state["threshold"]),
            max_step_fraction=float(state["max_step_fraction"]),
            ceiling_fraction=float(state.get("ceiling_fraction", 1.5)),
        )
        cusum.max_excursion_ms = state.get("max_excursion_ms")
        cusum._statistic = float(state["statistic"])
        cusum._started_ms = None if state["started_ms"] is None else int(state["started_ms"])
        return cusum

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyCusum):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable
