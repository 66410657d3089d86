"""What a conversion drop has cost so far, when it outlasts the tick's window.

A shortfall is priced over a range of the tick's window (``horizon_minutes``, 120): from
the drop's onset as the deciding test sees it to the tick. A drop that stays open longer
(a checkout broken on phones is held while the phones' 120-minute window shows it) has
its first minutes slide out of the window, and "lost" read from the window alone
shrinks: on ``bench/quality.py``'s phones-only payment stop the resolve line read a
median 0.77 of the truth (seeds 1-18, 0.65-1.06; 0.94 with the bank below), the whole
campaign's 50% drop 0.96 (1.01).

So during a run of flagged ticks (the conversion test below ``flag_conversion_p``, the
ticks whose minutes are kept out of the baselines; a run ends ``reset_ms`` after its last
one) each minute's shortfall in the priced range is kept, and when the minute leaves the
window while still in the range its shortfall is banked. "Lost" is the bank plus the
tick's range: what the window shows, and what it showed of the drop's earlier minutes.
Outside a run nothing is kept and the window's own figure stands. Each tick counts the
rows its own evidence priced: the dropped devices' when a device's test found the drop,
else the campaign's (a run can switch; see docs/STATISTICS.md for what that costs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.device_scan import DeviceDrop, drop_series
from detectors.window import TickWindow

__all__ = ["ShortfallLedger", "range_shortfall"]

FloatArray = npt.NDArray[np.float64]


class ShortfallLedger:
    """The banked shortfall of a run of flagged ticks, the latest range's shortfall per
    minute, and the run's latest flagged tick."""

    __slots__ = ("banked", "last_flag_ms", "range")

    def __init__(self, last_flag_ms: int | None = None, banked: float = 0.0,
                 minutes: dict[int, float] | None = None) -> None:
        self.last_flag_ms = last_flag_ms
        self.banked = banked
        self.range: dict[int, float] = minutes or {}

    def running(self, tick_ms: int, reset_ms: int) -> bool:
        """Whether a run goes on at ``tick_ms`` (a flag within ``reset_ms``); outside one
        the ledger is emptied."""
        if self.last_flag_ms is not None and tick_ms - self.last_flag_ms <= reset_ms:
            return True
        self.banked, self.range = 0.0, {}
        return False

    def flagged(self, tick_ms: int, reset_ms: int) -> None:
        """The conversion test flags the campaign at ``tick_ms``: a run starts or goes on."""
        self.running(tick_ms, reset_ms)
        self.last_flag_ms = tick_ms

    def missing(self, window: TickWindow, first: int, missing: FloatArray) -> float:
        """The orders missing of the drop, in a run (:meth:`running`): ``missing``, this
        tick's range (the shortfall of ``window.minutes[first:]``, one per minute), plus
        the bank."""
        oldest = window.minutes[0] if len(window) else window.tick_ms
        for minute in [m for m in self.range if m < oldest]:
            self.banked += self.range.pop(minute)
        self.range = dict(zip(window.minutes[first:], missing.tolist(), strict=True))
        return self.banked + float(np.add.reduce(missing))

    def to_state(self) -> list[Any]:
        return [self.last_flag_ms, self.banked, [[m, x] for m, x in self.range.items()]]

    @classmethod
    def from_state(cls, state: list[Any] | None) -> ShortfallLedger:
        """``None``: a row written before the ledger (no run)."""
        if state is None:
            return cls()
        last, banked, minutes = state
        return cls(last, float(banked), {int(m): float(x) for m, x in minutes})


def range_shortfall(window: TickWindow, first: int, drop: DeviceDrop | None,
                    baseline: tuple[float, float],
                    device_baseline: tuple[FloatArray, FloatArray]) -> tuple[int, FloatArray]:
    """The priced range's first index and each of its minutes' orders expected (sessions x
    weights x the learned rate) less those seen: on ``drop``'s devices from its start, or
    on the campaign from ``first`` (``baseline``: its learned conversions and sessions)."""
    if drop is not None:
        first = window.first_from(drop.start_ms)
        sessions, conversions = drop_series(window, drop, first)
        rows = list(drop.strata)
        base_sessions, base_conversions = (float(b[rows].sum()) for b in device_baseline)
    else:
        sessions, conversions = window.sessions[first:], window.conversions()[first:]
        base_conversions, base_sessions = baseline
    rate = base_conversions / base_sessions if base_sessions > 0 else 0.0
    expected: FloatArray = sessions * window.weights[first:] * rate
    return first, expected - conversions
