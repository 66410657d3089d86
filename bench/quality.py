"""Detection quality on simulations with known truth (issue "Detection", item 4).

For each seed: simulate several days of a shop (``streams.simulate.default_scenario``),
replay it through the very pipeline the workers run (``streams.pipeline.Pipeline``), and
match the alert episodes to the true incidents. Prints, per incident, whether it was
caught, how fast, with which kind, and the revenue estimate against the truth; then the
totals against the targets. Writes the figures to ``bench/results/quality.json``.

    .venv/bin/python bench/quality.py --seeds 1 2 3 --days 3
    # or one process per seed, then merged (what bench/results/quality-seeds1-12.json is):
    .venv/bin/python bench/quality.py --seeds 4 --out /tmp/q/seed-4.json   # ... each seed
    .venv/bin/python bench/quality.py --merge /tmp/q/seed-*.json --out merged.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import streams  # noqa: F401  (first, so the compiled build is used)
from detectors.campaign_params import CampaignParams
from detectors.incidents import Alert
from detectors.monitor import MonitorParams
from detectors.severity import PAGE_FACTOR
from streams.alertmanager import SEVERITIES, alert_severity
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.simulate import default_scenario, generate, truth
from streams.simulate_model import IncidentSpec, Scenario

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.quality_report import report, summarise
from bench.split_monitor import SplitMonitor

MINUTE = 60_000
MATCH_BEFORE_MS = 10 * MINUTE  # an episode may start this long before the true start
MATCH_AFTER_MS = 30 * MINUTE  # ... and open up to this long after the end
PAGE_PER_HOUR = Settings().min_revenue_per_hour * PAGE_FACTOR  # as streams.receivers sets it


@dataclass
class Episode:
    alert_id: str
    incident_id: str
    campaign: str
    started_at: int
    first_ts: int
    updates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_ts(self) -> int:
        return int(self.updates[-1]["ts"])


@dataclass
class IncidentResult:
    seed: int
    id: str
    kind: str
    scope: str
    campaigns: str
    true_loss_per_hour: float
    caught: bool
    detect_minutes: float | None
    kind_seen: str | None
    estimate_per_hour: float | None
    interval: tuple[float, float] | None
    covered: bool | None
    one_incident_id: bool | None
    # the devices the incident was on (the truth; empty: every device) and the devices the
    # firing updates named most often (``evidence.slow_devices``, for a conversion drop
    # ``drop_devices``; None: no device breakdown)
    devices: tuple[str, ...] = ()
    devices_seen: tuple[str, ...] | None = None
    # the highest Alertmanager severity its episodes reached (None: not caught)
    severity: str | None = None
    # what the first alert said: the estimate and interval when the incident was first
    # caught (``estimate_per_hour`` is the one nearest the incident's middle)
    first_estimate_per_hour: float | None = None
    first_interval: tuple[float, float] | None = None
    first_covered: bool | None = None
    # the first episode's ``started_at`` against the true start, in minutes (under 0: early)
    onset_minutes: float | None = None
    # what its episodes said was lost when they ended (each episode's last ``revenue_lost``,
    # summed) against the truth's ``revenue_lost_total``
    lost: float | None = None
    true_lost: float | None = None
    # the sum of the episodes' last intervals of it (``revenue_lost_low``, ``_high``), and
    # whether it holds the truth
    lost_interval: tuple[float, float] | None = None
    lost_covered: bool | None = None


def run_seed(seed: int, days: float, scale: float, workers: int = 0, *, share: bool = False,
             daily: float = 0.0, budget: float | None = None, funnel_weight: float | None = None,
             reach_weight: float | None = None, cart: bool = False
             ) -> tuple[list[Episode], dict[str, Any], float]:
    """Replay one seed; ``workers`` > 0 splits the campaigns as that many workers would
    (``bench/split_monitor.py``: each fits the site curve on its own campaigns, or with
    ``share`` on its own campaigns and the others' slope shares). ``budget``: the setting
    ``false_alarms_per_campaign_day`` (its default when ``None``); ``funnel_weight``: the
    checkout funnel's share of the conversion level (``CampaignParams.funnel_test_weight``;
    0 tests the orders alone), ``reach_weight`` the reach test's (``reach_test_weight``);
    ``cart``: with :func:`cart_incident` too."""
    scenario = replace(default_scenario(seed, days=days, scale=scale),
                       conversion_daily_amplitude=daily)
    if cart:
        scenario = replace(scenario, incidents=(*scenario.incidents, cart_incident(scenario)))
    settings = Settings()
    if budget is not None:
        settings = replace(settings, false_alarms_per_campaign_day=budget)
    weights = {"funnel_test_weight": funnel_weight, "reach_test_weight": reach_weight}
    campaign = CampaignParams(**{k: w for k, w in weights.items() if w is not None})
    pipeline = Pipeline.from_settings(settings, MonitorParams(campaign=campaign))
    if workers:
        pipeline.monitor = SplitMonitor(
            workers, settings.partitions, share=share)  # type: ignore[assignment]
    started = time.perf_counter()
    alerts = pipeline.play(generate(scenario))
    elapsed = time.perf_counter() - started
    return episodes_of(alerts), truth(scenario), elapsed


def cart_incident(scenario: Scenario) -> IncidentSpec:
    """A cart that lets half of spring_sale's would-be reachers through, for an hour from
    23:00 of the first day (between the blog's slowdown and the bot burst, clear of the
    others): fewer sessions reach the checkout, those that do order as usual
    (``detectors.reach``). Appended last, so the other incidents draw as they did."""
    start = scenario.start_ms + 23 * 3_600_000
    return IncidentSpec("cart-spring-sale", "conversion_drop", ("spring_sale",), start,
                        start + 60 * MINUTE, conversion_factor=0.5, funnel="cart")


def episodes_of(alerts: list[Alert]) -> list[Episode]:
    episodes: dict[str, Episode] = {}
    for alert in alerts:
        d = alert.to_dict()
        ep = episodes.setdefault(d["alert_id"], Episode(
            d["alert_id"], d["incident_id"], d["campaign"], d["started_at"], d["ts"]))
        ep.updates.append(d)
    return list(episodes.values())


def overlaps(ep: Episode, start: int, end: int) -> bool:
    return start - MATCH_BEFORE_MS <= ep.first_ts <= end + MATCH_AFTER_MS or (
        ep.first_ts <= start <= ep.last_ts)


def judge(seed: int, inc: dict[str, Any], episodes: list[Episode]) -> IncidentResult:
    camps = set(inc["campaigns"])
    start, end = inc["start_ms"], inc["end_ms"]
    matched = [e for e in episodes if e.campaign in camps and overlaps(e, start, end)]
    loss = float(inc["revenue_lost_per_hour_total"])
    base = IncidentResult(seed, inc["id"], inc["kind"], inc["scope"], ",".join(sorted(camps))
                          if len(camps) < 4 else f"{len(camps)} campaigns", loss,
                          bool(matched), None, None, None, None, None, None,
                          tuple(inc.get("devices") or ()))
    if not matched:
        return base
    first = min(matched, key=lambda e: e.first_ts)
    base.detect_minutes = (first.first_ts - start) / MINUTE
    base.onset_minutes = (first.started_at - start) / MINUTE
    during = [u for e in matched for u in e.updates
              if u["state"] == "firing" and u["ts"] <= end + 15 * MINUTE]
    kinds = Counter(u["kind"] for u in during) or Counter([first.updates[0]["kind"]])
    base.kind_seen = kinds.most_common(1)[0][0]
    rows, said = (("conversion_devices", "drop_devices") if inc["kind"] == "conversion_drop"
                  else ("devices", "slow_devices"))
    named = Counter(tuple(u["evidence"][said]) for u in during if u["evidence"].get(rows))
    base.devices_seen = named.most_common(1)[0][0] if named else None
    base.estimate_per_hour, base.interval = _estimate(matched, start, end)
    if base.interval is not None:
        base.covered = base.interval[0] <= loss <= base.interval[1]
    base.first_estimate_per_hour, base.first_interval = _estimate(matched, start, start)
    if base.first_interval is not None:
        base.first_covered = base.first_interval[0] <= loss <= base.first_interval[1]
    base.one_incident_id = len({e.incident_id for e in matched}) == 1
    base.lost = sum(float(e.updates[-1]["revenue_lost"]) for e in matched)
    base.true_lost = float(inc["revenue_lost_total"])
    low, high = (sum(float(e.updates[-1].get(f"revenue_lost_{end}", e.updates[-1]["revenue_lost"]))
                     for e in matched) for end in ("low", "high"))
    base.lost_interval = (low, high)
    base.lost_covered = low <= base.true_lost <= high
    base.severity = max((severity_of(e) for e in matched), key=SEVERITIES.index)
    return base


def severity_of(ep: Episode) -> str:
    """The highest severity the episode's firing updates reach in Alertmanager (an
    episode's severity only escalates there): ``streams.alertmanager.alert_severity``."""
    ranks = [SEVERITIES.index(alert_severity(u, PAGE_PER_HOUR))
             for u in ep.updates if u["state"] == "firing"]
    return SEVERITIES[max(ranks, default=0)]


def _estimate(matched: list[Episode], start: int, end: int
              ) -> tuple[float | None, tuple[float, float] | None]:
    """The incident's revenue at risk: total over its campaigns at the update nearest the
    middle of the incident (each campaign's latest update at that time), or at its first
    alert if that came later. With ``end == start``: at the first alert."""
    mid = start + max((end - start) // 2, 10 * MINUTE) if end > start else start
    value = low = high = 0.0
    found = False
    for ep in matched:
        until = max(mid, ep.first_ts)
        firing = [u for u in ep.updates if u["state"] == "firing" and u["ts"] <= until]
        if not firing:
            continue
        u = firing[-1]
        value += u["revenue_at_risk_per_hour"]
        low += u["revenue_at_risk_per_hour_low"]
        high += u["revenue_at_risk_per_hour_high"]
        found = True
    return (value, (low, high)) if found else (None, None)


def false_alarms(seed: int, episodes: list[Episode], tru: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for ep in episodes:
        hit = any(ep.campaign in inc["campaigns"] and overlaps(ep, inc["start_ms"], inc["end_ms"])
                  for inc in tru["incidents"])
        if not hit:
            trap = next((t["id"] for t in tru["traps"]
                         if t["start_ms"] - MATCH_BEFORE_MS <= ep.first_ts
                         <= t["end_ms"] + MATCH_AFTER_MS), None)
            out.append({"seed": seed, "campaign": ep.campaign, "kind": ep.updates[0]["kind"],
                        "first_ts": ep.first_ts, "near_trap": trap,
                        "severity": severity_of(ep), "summary": ep.updates[0]["summary"]})
    return out



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality.json"))
    parser.add_argument("--workers", type=int, default=0,
                        help="split the campaigns as N workers would (each its own site fit)")
    parser.add_argument("--share", action="store_true",
                        help="with --workers: the workers share the site slope (as they do)")
    parser.add_argument("--conversion-daily", type=float, default=0.0, metavar="A",
                        help="conversion x (1 + A cos(2 pi (hour - 20) / 24)) (default 0)")
    parser.add_argument("--false-alarms-per-campaign-day", type=float, metavar="B",
                        help="the setting of that name (default: its default)")
    parser.add_argument("--funnel-weight", type=float, metavar="W",
                        help="the checkout funnel test's share of the level (0: none)")
    parser.add_argument("--reach-weight", type=float, metavar="W",
                        help="the reach test's share of the level (0: none)")
    parser.add_argument("--cart", action="store_true",
                        help="add a broken cart on spring_sale (x0.5 for an hour at 23:00)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="merge these per-seed outputs (one process per seed) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.days, args.out)
    results: list[IncidentResult] = []
    alarms: list[dict[str, Any]] = []
    lifetimes: list[dict[str, Any]] = []
    for seed in args.seeds:
        episodes, tru, elapsed = run_seed(seed, args.days, args.scale, args.workers,
                                          share=args.share, daily=args.conversion_daily,
                                          budget=args.false_alarms_per_campaign_day,
                                          funnel_weight=args.funnel_weight,
                                          reach_weight=args.reach_weight, cart=args.cart)
        print(f"seed {seed}: replayed {tru['records']} in {elapsed:.0f} s; "
              f"{len(episodes)} episodes", file=sys.stderr)
        results.extend(judge(seed, inc, episodes) for inc in tru["incidents"])
        alarms.extend(false_alarms(seed, episodes, tru))
        lifetimes.extend(episode_lifetimes(seed, episodes, tru))
    summary = report(results, alarms, args.days, len(args.seeds))
    _write(args.out, summary, results, alarms, lifetimes)
    return 0


def episode_lifetimes(seed: int, episodes: list[Episode], tru: dict[str, Any]
                      ) -> list[dict[str, Any]]:
    """Each episode's span, and the true incidents it matches (``bench/resolve_early.py``
    counts the episodes that resolved while their incident was still on)."""
    out = []
    for ep in episodes:
        matched = [{"id": inc["id"], "start_ms": inc["start_ms"], "end_ms": inc["end_ms"]}
                   for inc in tru["incidents"]
                   if ep.campaign in inc["campaigns"]
                   and overlaps(ep, inc["start_ms"], inc["end_ms"])]
        last = ep.updates[-1]
        out.append({"seed": seed, "alert_id": ep.alert_id, "campaign": ep.campaign,
                    "kind": last["kind"], "started_at": ep.started_at, "first_ts": ep.first_ts,
                    "last_ts": ep.last_ts, "resolved": last["state"] == "resolved",
                    "incidents": matched})
    return out


def merge(paths: list[Path], days: float, out: Path) -> int:
    """Outputs of one process per seed (``--seeds N --out ...``) as one run of all seeds."""
    results: list[IncidentResult] = []
    alarms: list[dict[str, Any]] = []
    lifetimes: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(path.read_text())
        for row in data["incidents"]:
            interval, first = row["interval"], row.get("first_interval")
            seen = row.get("devices_seen")
            results.append(IncidentResult(**{
                **row, "interval": None if interval is None else tuple(interval),
                "first_interval": None if first is None else tuple(first),
                "lost_interval": None if row.get("lost_interval") is None
                else tuple(row["lost_interval"]),
                "devices": tuple(row.get("devices", ())),
                "devices_seen": None if seen is None else tuple(seen)}))
        alarms.extend(data["false_alarms"])
        lifetimes.extend(data.get("episodes", []))
    seeds = len({r.seed for r in results} | {a["seed"] for a in alarms})
    _write(out, summarise(results, alarms, days, seeds), results, alarms, lifetimes)
    return 0


def _write(out: Path, summary: dict[str, Any], results: list[IncidentResult],
           alarms: list[dict[str, Any]], lifetimes: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "incidents": [asdict(r) for r in results],
                               "false_alarms": alarms, "episodes": lifetimes}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
