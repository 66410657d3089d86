"""bench/quality.py --merge: per-seed outputs summed as one run of all their seeds."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.quality import Episode, IncidentResult, judge, main, severity_of

MIN = 60_000


def incident(seed: int, caught: bool, error: float) -> IncidentResult:
    return IncidentResult(seed, "perf", "performance_conversion_loss", "campaign", "a", 1000.0,
                          caught, 5.0 if caught else None,
                          "performance_conversion_loss" if caught else None,
                          1000.0 * (1 + error) if caught else None,
                          (500.0, 1500.0) if caught else None, True if caught else None, True)


def seed_file(tmp: Path, seed: int, results: list[IncidentResult],
              alarms: list[dict[str, Any]]) -> Path:
    path = tmp / f"seed-{seed}.json"
    path.write_text(json.dumps({"summary": {}, "incidents": [asdict(r) for r in results],
                                "false_alarms": alarms}))
    return path


def test_merged_seeds_count_as_one_run(tmp_path: Path) -> None:
    alarm = {"seed": 2, "campaign": "b", "kind": "latency_regression", "first_ts": MIN,
             "near_trap": None, "summary": "b: pages slower"}
    files = [seed_file(tmp_path, 1, [incident(1, True, 0.1), incident(1, False, 0.0)], []),
             seed_file(tmp_path, 2, [incident(2, True, 0.3)], [alarm])]
    out = tmp_path / "merged.json"
    assert main(["--merge", *map(str, files), "--days", "3", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    summary = merged["summary"]
    assert (summary["seeds"], summary["incidents"], summary["costly_caught"]) == (2, 3, 2)
    assert summary["false_alarm_episodes"] == 1
    assert summary["false_alarms_per_two_days"] == 1 / 6 * 2
    assert abs(summary["median_relative_revenue_error"] - 0.2) < 1e-9  # median of 0.1, 0.3
    assert [r["interval"] for r in merged["incidents"]] == [[500.0, 1500.0], None, [500.0, 1500.0]]


def test_device_placement_is_counted_and_older_files_still_merge(tmp_path: Path) -> None:
    """Rows with the devices an incident was on and the devices the alerts named; a row
    written before those fields merges as an incident with no device breakdown."""
    phone = asdict(incident(1, True, 0.1)) | {"devices": ["mobile"], "devices_seen": ["mobile"]}
    missed = asdict(incident(1, True, 0.1)) | {"devices": ["mobile"], "devices_seen": []}
    everywhere = asdict(incident(1, True, 0.1)) | {"devices_seen": []}
    wrong = asdict(incident(1, True, 0.1)) | {"devices_seen": ["desktop"]}
    older = {k: v for k, v in asdict(incident(1, True, 0.1)).items()
             if k not in ("devices", "devices_seen")}
    path = tmp_path / "seed-1.json"
    path.write_text(json.dumps({"summary": {}, "false_alarms": [],
                                "incidents": [phone, missed, everywhere, wrong, older]}))
    out = tmp_path / "merged.json"
    assert main(["--merge", str(path), "--days", "3", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert (summary["on_some_devices"], summary["on_some_devices_placed"]) == (2, 1)
    assert (summary["on_every_device"], summary["on_every_device_placed_nowhere"]) == (2, 1)


def test_pages_are_counted_and_older_files_still_merge(tmp_path: Path) -> None:
    """A false alarm or caught incident written before ``severity`` counts as no page."""
    paged = asdict(incident(1, True, 0.1)) | {"severity": "page"}
    ticket = asdict(incident(1, True, 0.1)) | {"severity": "ticket"}
    older = {k: v for k, v in asdict(incident(1, True, 0.1)).items() if k != "severity"}
    alarm = {"seed": 1, "campaign": "b", "kind": "conversion_drop", "first_ts": MIN,
             "near_trap": None, "summary": "b: checkout?"}
    path = tmp_path / "seed-1.json"
    path.write_text(json.dumps({"summary": {}, "incidents": [paged, ticket, older],
                                "false_alarms": [alarm | {"severity": "page"},
                                                 alarm | {"severity": "ticket"}, alarm]}))
    out = tmp_path / "merged.json"
    assert main(["--merge", str(path), "--days", "3", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert (summary["false_alarm_episodes"], summary["false_alarm_pages"]) == (3, 1)
    assert (summary["costly_caught"], summary["costly_caught_paged"]) == (3, 1)


def test_an_episode_takes_its_highest_severity() -> None:
    """Alertmanager's severity only escalates: a ticket that became a page is a page."""
    def update(revenue: float, state: str = "firing") -> dict[str, Any]:
        return {"kind": "conversion_drop", "state": state, "revenue_at_risk_per_hour": revenue,
                "evidence": {"day_known": True}}
    episode = Episode("a1", "i1", "c", 0, 0, [update(300.0), update(900.0), update(200.0),
                                             update(0.0, "resolved")])
    assert severity_of(episode) == "page"
    episode.updates = [update(300.0), update(0.0, "resolved")]
    assert severity_of(episode) == "ticket"
    first_day = update(900.0)
    first_day["evidence"] = {"day_known": False, "orders_stopped": False}
    episode.updates = [first_day]
    assert severity_of(episode) == "ticket"


def test_first_alerts_are_summarised_and_older_files_still_merge(tmp_path: Path) -> None:
    """What each incident's first alert said: estimate / truth by kind, the error and the
    intervals' coverage; a row written before those fields counts as not priced."""
    early = asdict(incident(1, True, 0.0)) | {"kind": "conversion_drop",
                                              "first_estimate_per_hour": 500.0,
                                              "first_interval": [300.0, 900.0],
                                              "first_covered": False}
    fast = asdict(incident(1, True, 0.0)) | {"first_estimate_per_hour": 1200.0,
                                             "first_interval": [800.0, 1600.0],
                                             "first_covered": True}
    older = asdict(incident(1, True, 0.0))
    for field in ("first_estimate_per_hour", "first_interval", "first_covered"):
        older.pop(field)
    path = tmp_path / "seed-1.json"
    path.write_text(json.dumps({"summary": {}, "false_alarms": [],
                                "incidents": [early, fast, older]}))
    out = tmp_path / "merged.json"
    assert main(["--merge", str(path), "--days", "3", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    summary = merged["summary"]
    assert summary["first_alert_median_ratio"] == {"conversion_drop": 0.5,
                                                   "performance_conversion_loss": 1.2}
    assert abs(summary["first_alert_median_relative_error"] - 0.35) < 1e-9  # 0.5 and 0.2
    assert summary["first_alert_interval_coverage"] == 0.5
    assert [r["first_interval"] for r in merged["incidents"]] == [[300.0, 900.0],
                                                                 [800.0, 1600.0], None]


def test_onset_errors_are_medians_of_their_size_by_kind(tmp_path: Path) -> None:
    """Early and late count alike; a row written before ``onset_minutes`` has none."""
    rows = [asdict(incident(1, True, 0.1)) | {"onset_minutes": m} for m in (-12.0, 2.0, 5.0)]
    older = {k: v for k, v in asdict(incident(1, True, 0.1)).items() if k != "onset_minutes"}
    path = tmp_path / "seed-1.json"
    path.write_text(json.dumps({"summary": {}, "false_alarms": [],
                                "incidents": [*rows, older]}))
    out = tmp_path / "merged.json"
    assert main(["--merge", str(path), "--days", "3", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["median_onset_error_minutes"] == {"performance_conversion_loss": 5.0}


def test_what_episodes_said_was_lost_is_read_against_the_truth(tmp_path: Path) -> None:
    """The resolve line's money: each caught incident's episodes' last ``revenue_lost``
    against the true total, by kind; a missed incident and a row written before the fields
    count for nothing."""
    low = asdict(incident(1, True, 0.0)) | {"lost": 800.0, "true_lost": 1000.0}
    high = asdict(incident(1, True, 0.0)) | {"lost": 1300.0, "true_lost": 1000.0}
    missed = asdict(incident(1, False, 0.0)) | {"lost": None, "true_lost": 1000.0}
    older = asdict(incident(1, True, 0.0))
    del older["lost"], older["true_lost"]
    path = tmp_path / "seed-1.json"
    path.write_text(json.dumps({"summary": {}, "false_alarms": [],
                                "incidents": [low, high, missed, older]}))
    out = tmp_path / "merged.json"
    assert main(["--merge", str(path), "--days", "3", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    kind = "performance_conversion_loss"
    assert abs(summary["lost_median_ratio"][kind] - 1.05) < 1e-9  # median of 0.8, 1.3
    assert abs(summary["lost_median_relative_error"][kind] - 0.25) < 1e-9  # of 0.2, 0.3


def test_the_lost_of_every_matched_episode_is_summed() -> None:
    start = 100 * MIN
    inc = {"id": "site-slow", "kind": "performance_conversion_loss", "scope": "site",
           "campaigns": ["a", "b"], "start_ms": start, "end_ms": start + 30 * MIN,
           "revenue_lost_per_hour_total": 2000.0, "revenue_lost_total": 1000.0}

    def episode(campaign: str, lost: list[float]) -> Episode:
        ep = Episode(f"id-{campaign}", "inc", campaign, start, start + 5 * MIN)
        for i, value in enumerate(lost):
            ep.updates.append({"ts": start + (5 + i) * MIN, "state": "firing", "kind": inc["kind"],
                               "revenue_lost": value, "evidence": {},
                               "revenue_at_risk_per_hour": 1000.0,
                               "revenue_at_risk_per_hour_low": 500.0,
                               "revenue_at_risk_per_hour_high": 1500.0, "severity": "page"})
        return ep

    result = judge(1, inc, [episode("a", [100.0, 400.0]), episode("b", [300.0]),
                            episode("c", [900.0])])
    assert (result.lost, result.true_lost) == (700.0, 1000.0)  # c is not the incident's
