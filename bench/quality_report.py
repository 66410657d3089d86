"""The report of ``bench/quality.py``: the table per incident, and the totals against the
issue's targets (the ``summary`` of its JSON output)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.quality import IncidentResult

__all__ = ["report", "summarise"]

def report(results: list[IncidentResult], alarms: list[dict[str, Any]], days: float,
           seeds: int) -> dict[str, Any]:
    print(f"{'seed':>4} {'incident':<26}{'kind':<28}{'true $/h':>9} {'caught':>6} {'min':>5} "
          f"{'kind seen':<28}{'est $/h':>9} {'90% interval':>19} {'in':>3} {'devices':<8}")
    for r in results:
        interval = f"{r.interval[0]:,.0f}-{r.interval[1]:,.0f}" if r.interval else "-"
        print(f"{r.seed:>4} {r.id[:25]:<26}{r.kind:<28}{r.true_loss_per_hour:>9,.0f} "
              f"{'yes' if r.caught else 'NO':>6} "
              f"{'' if r.detect_minutes is None else f'{r.detect_minutes:.0f}':>5} "
              f"{r.kind_seen or '-':<28}{_money(r.estimate_per_hour):>9} "
              f"{interval:>19} {'' if r.covered is None else ('y' if r.covered else 'n'):>3} "
              f"{_devices(r)}")
    for alarm in alarms:
        print(f"FALSE ALARM seed {alarm['seed']}: {alarm['campaign']} {alarm['kind']} "
              f"{alarm.get('severity', '?')} (near trap: {alarm['near_trap']}) "
              f"{alarm['summary'][:90]}")
    return summarise(results, alarms, days, seeds)


def _devices(r: IncidentResult) -> str:
    """``mobile/mobile``: the devices it was on / the alerts named (``all``: every one)."""
    if r.devices_seen is None:
        return ""
    return f"{'+'.join(r.devices) or 'all'}/{'+'.join(r.devices_seen) or 'all'}"


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def summarise(results: list[IncidentResult], alarms: list[dict[str, Any]], days: float,
              seeds: int) -> dict[str, Any]:
    costly = [r for r in results if r.true_loss_per_hour >= 300 or r.kind == "latency_regression"]
    caught = [r for r in costly if r.caught]
    right_kind = [r for r in caught if r.kind_seen == r.kind]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.caught and r.detect_minutes is not None:
            by_kind[r.kind].append(max(r.detect_minutes, 0.0))
    priced = [r for r in results if r.caught and r.estimate_per_hour is not None
              and r.true_loss_per_hour > 0]
    errors = [abs(r.estimate_per_hour - r.true_loss_per_hour) / r.true_loss_per_hour
              for r in priced if r.estimate_per_hour is not None]
    covered = [r.covered for r in priced if r.covered is not None]
    summary = {
        "seeds": seeds, "days": days, "incidents": len(results),
        "costly_incidents": len(costly), "costly_caught": len(caught),
        "right_kind": len(right_kind),
        "median_minutes_to_detect": {k: statistics.median(v) for k, v in by_kind.items()},
        "false_alarm_episodes": len(alarms),
        "false_alarms_per_two_days": len(alarms) / (seeds * days) * 2 if days else 0.0,
        "false_alarms_near_traps": sum(1 for a in alarms if a["near_trap"]),
        # of those, the ones that paged (the rest were tickets or info)
        "false_alarm_pages": sum(1 for a in alarms if a.get("severity") == "page"),
        "costly_caught_paged": sum(1 for r in caught if r.severity == "page"),
        "median_relative_revenue_error": statistics.median(errors) if errors else None,
        "interval_coverage": sum(covered) / len(covered) if covered else None,
        **_first_alerts(results),
        **_placed(results),
        **_lost(results),
    }
    print(json.dumps(summary, indent=1))
    return summary


def _first_alerts(results: list[IncidentResult]) -> dict[str, Any]:
    """The money of each caught incident's first alert against the truth: the median
    estimate / truth by kind (under 1: too low), the median relative error and the 90%
    intervals' coverage; and by kind the median error of the first episode's onset
    (``started_at``) in minutes, early or late."""
    first = [r for r in results if r.caught and r.first_estimate_per_hour is not None
             and r.true_loss_per_hour > 0]
    ratios: dict[str, list[float]] = defaultdict(list)
    for r in first:
        ratios[r.kind].append((r.first_estimate_per_hour or 0.0) / r.true_loss_per_hour)
    covered = [r.first_covered for r in first if r.first_covered is not None]
    onsets: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.onset_minutes is not None:
            onsets[r.kind].append(abs(r.onset_minutes))
    return {"median_onset_error_minutes": {k: statistics.median(v) for k, v in onsets.items()},
            "first_alert_median_ratio": {k: statistics.median(v) for k, v in ratios.items()},
            "first_alert_median_relative_error": statistics.median(
                abs(x - 1.0) for v in ratios.values() for x in v) if first else None,
            "first_alert_interval_coverage": sum(covered) / len(covered) if covered else None}


def _lost(results: list[IncidentResult]) -> dict[str, Any]:
    """What the caught incidents' episodes said was lost at their end (the resolve line's
    "~$N lost") against the truth, by kind: the median ratio (under 1: too low) and the
    median relative error."""
    ratios: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.caught and r.lost is not None and r.true_lost:
            ratios[r.kind].append(r.lost / r.true_lost)
    errors = {k: statistics.median(abs(x - 1.0) for x in v) for k, v in ratios.items()}
    covered: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        if r.caught and r.lost_covered is not None:
            covered[r.kind].append(r.lost_covered)
    every = [c for v in covered.values() for c in v]
    return {"lost_median_ratio": {k: statistics.median(v) for k, v in ratios.items()},
            "lost_median_relative_error": errors,
            "lost_interval_coverage": {k: sum(v) / len(v) for k, v in covered.items()},
            "lost_interval_coverage_all": sum(every) / len(every) if every else None}


def _placed(results: list[IncidentResult]) -> dict[str, Any]:
    """Of the caught incidents with a device breakdown: those on some devices only, and
    those the alerts put on the same devices; those on every device, and those the
    alerts put on none."""
    seen = [r for r in results if r.caught and r.devices_seen is not None]
    some = [r for r in seen if r.devices]
    every = [r for r in seen if not r.devices]
    return {"on_some_devices": len(some),
            "on_some_devices_placed": sum(r.devices_seen == r.devices for r in some),
            "on_every_device": len(every),
            "on_every_device_placed_nowhere": sum(r.devices_seen == () for r in every)}
