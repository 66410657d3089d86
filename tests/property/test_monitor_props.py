"""Monitor.drain_changes() / restore(): a restart at any point changes no later verdict.

One seeded stream of facts (three campaigns, one of them going idle and evicted, an LCP
shift near the end) is replayed with restarts at random points between facts: at each cut
the monitor's drained changes are written to a table as Faust stores them (orjson, None
deletes) and a fresh monitor is restored from it. Every verdict must equal the
uninterrupted run's, byte for byte.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from detectors.campaign import CampaignParams
from detectors.monitor import Monitor, MonitorParams
from tests.unit.test_campaign import MIN, T0, Traffic

MINUTES = 110
SHIFT_AT = 80
PARAMS = MonitorParams(
    campaign=CampaignParams(horizon_minutes=30, conversion_windows=(10, 20, 30),
                            latency_learn_delay_minutes=5, min_latency_weight=30.0,
                            min_baseline_conversions=10.0),
    idle_ttl_minutes=20, site_refit_minutes=10)
Call = tuple[str, tuple[Any, ...], dict[str, Any]]
ADVANCE: Call = ("advance", (), {})


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []

    def observe_session(self, *args: Any, **kw: Any) -> None:
        self.calls.append(("observe_session", args, kw))

    def observe_order(self, *args: Any, **kw: Any) -> None:
        self.calls.append(("observe_order", args, kw))


@cache
def facts() -> tuple[tuple[Call, ...], ...]:
    """Per minute: the facts of three campaigns, then the advance to the minute's end."""
    sources = [Traffic(21, campaign="big", sessions_per_minute=40),
               Traffic(22, campaign="small", sessions_per_minute=8, lag_median_min=4.0),
               Traffic(23, campaign="gone", sessions_per_minute=6, lag_median_min=2.0)]
    minutes = []
    for i in range(MINUTES):
        recorder = _Recorder()
        for source in sources:
            if source.campaign != "gone" or i < 30:
                factor = 1.8 if i >= SHIFT_AT and source.campaign == "big" else 1.0
                source.minute(recorder, T0 + i * MIN, lcp_factor=factor)
        minutes.append((*recorder.calls, ADVANCE))
    return tuple(minutes)


def _store(table: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


def run(cuts: frozenset[tuple[int, int]]) -> list[bytes]:
    """Verdicts (as JSON) of the whole stream, restarting before each (minute, fact) cut."""
    monitor, table = Monitor(PARAMS), dict[str, Any]()
    out: list[bytes] = []
    for i, calls in enumerate(facts()):
        for j, (name, args, kw) in enumerate(calls):
            if (i, j) in cuts:
                _store(table, monitor.drain_changes())
                monitor = Monitor(PARAMS)
                monitor.restore(list(table.items()))
            if name == "advance":
                out.extend(orjson.dumps(v.to_state()) for v in
                           monitor.advance(T0 + (i + 1) * MIN))
            else:
                getattr(monitor, name)(*args, **kw)
        _store(table, monitor.drain_changes())  # the stage writes after every batch
    return out


@cache
def reference() -> tuple[bytes, ...]:
    return tuple(run(frozenset()))


def test_the_stream_exercises_warm_up_eviction_and_a_regression() -> None:
    verdicts = [orjson.loads(v) for v in reference()]
    assert any(v["warmed_up"] for v in verdicts if v["campaign"] == "big")
    assert any(v["latency_regressed"] for v in verdicts if v["campaign"] == "big")
    assert not any(v["campaign"] == "gone" for v in verdicts[-10:]), "never evicted"
    assert any(v["slow_page_loss_per_hour"]["value"] > 0 for v in verdicts)


@st.composite
def cut_points(draw: st.DrawFn) -> frozenset[tuple[int, int]]:
    stream = facts()
    cuts = set()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        # from minute 2: a restart before the first tick is test_monitor.py's business
        minute = draw(st.integers(min_value=2, max_value=MINUTES - 1))
        cuts.add((minute, draw(st.integers(min_value=0, max_value=len(stream[minute]) - 1))))
    return frozenset(cuts)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))  # no shrinking: slow runs
@given(cut_points())
def test_restarts_at_random_points_change_no_verdict(cuts: frozenset[tuple[int, int]]) -> None:
    got = run(cuts)
    expected = reference()
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        a, b = orjson.loads(mine), orjson.loads(theirs)
        diff = sorted(k for k in a if a[k] != b[k])
        assert diff == [], f"cuts {sorted(cuts)}: {a['campaign']} at {a['tick_ms']}: {diff}"
