"""When the demo's incidents are first alerted, where their alerts say they began, and
what they priced against the truth.

Offline (``Pipeline.play``, the code the agents run) over ``demo_scenario`` seeds, for

* ``phones``: no phone able to pay on spring_sale for an hour (the scenario of
  ``tests/integration/test_worker_device_drop.py`` with ``--warmup 5``, and of
  ``tests/unit/test_detection_sim.py`` with the default 4);
* ``checkout``: ``revwatch demo --incident checkout`` (no orders for 30 minutes);
* ``cart``: ``revwatch demo --incident cart`` (4 in 5 never reach the checkout, 45 minutes);
* ``slow-pages``: ``revwatch demo`` (spring_sale's pages x2.5 for 20 minutes).

Each line: the first firing alert's minute after the incident's start, its ``started_at``
in minutes from that start (under 0: early), the devices it is put on, its p-values, its
price against the truth's revenue lost per hour, and what the incident's episodes said was
lost at their end against the truth's total; the last line, the medians over the seeds.
The figures docs/FUNNEL.md ("Known limits"), the device test's docstring and the README's
demo section cite came from these scenarios.

    .venv/bin/python bench/demo_onsets.py phones --seeds 1-12 --scale 0.5 --warmup 5
    .venv/bin/python bench/demo_onsets.py checkout --seeds 1-12
    .venv/bin/python bench/demo_onsets.py cart --seeds 1-8 [--reach-weight 0]
    .venv/bin/python bench/demo_onsets.py slow-pages --seeds 1-9
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, replace

from detectors.campaign_params import CampaignParams
from detectors.monitor import MonitorParams
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.simulate import demo_scenario, generate, truth
from streams.simulate_model import Scenario

MINUTE = 60_000


def scenario(which: str, seed: int, scale: float, warmup: float) -> Scenario:
    if which == "slow-pages":
        return replace(demo_scenario(seed, warmup_hours=warmup), scale=scale)
    if which in ("checkout", "cart"):
        return replace(demo_scenario(seed, warmup_hours=warmup, incident=which), scale=scale)
    demo = replace(demo_scenario(seed, warmup_hours=warmup, incident_minutes=60), scale=scale)
    (slowdown,) = demo.incidents
    broken = replace(slowdown, id="phones-checkout", kind="conversion_drop", lcp_factor=1.0,
                     conversion_factor=0.0, devices=("mobile",))
    return replace(demo, incidents=(broken,))


@dataclass(frozen=True)
class Seen:
    """One seed's line, its first price against the truth, and its "lost" against it."""

    line: str
    first_ratio: float | None = None
    lost_ratio: float | None = None


def first_alert(which: str, seed: int, scale: float, warmup: float,
                campaign: CampaignParams | None = None) -> Seen:
    s = scenario(which, seed, scale, warmup)
    (incident,) = s.incidents
    start = incident.start_ms
    params = MonitorParams(campaign=campaign or CampaignParams())
    alerts = [a for a in Pipeline.from_settings(Settings(), params).play(generate(s))
              if a.campaign in incident.campaigns]
    firing = [a for a in alerts if a.state == "firing"]
    if not firing:
        return Seen(f"{which} seed {seed}: not alerted")
    (true,) = truth(s)["incidents"]
    a, facts = firing[0], firing[0].evidence
    first = a.revenue_at_risk_per_hour / true["revenue_lost_per_hour_total"]
    ends: dict[str, float] = {}
    for alert in alerts:  # each episode's last word
        ends[alert.alert_id] = alert.revenue_lost
    lost = sum(ends.values()) / true["revenue_lost_total"]
    return Seen(f"{which} seed {seed}: first alert {(a.ts - start) // MINUTE} min in, {a.kind}, "
                f"started "
                f"{(a.started_at - start) / MINUTE:+.0f} min, devices "
                f"{facts.get('drop_devices') or facts.get('slow_devices')}, "
                f"p {facts.get('conversion_p_value'):.1e} "
                f"(checkout {facts.get('checkout_p_value'):.1e}, "
                f"reach {facts.get('reach_p_value', 1.0):.1e}), "
                f"${a.revenue_at_risk_per_hour:,.0f}/h ({first:.2f} of the truth's "
                f"${true['revenue_lost_per_hour_total']:,.0f}/h, {facts.get('severity')}); "
                f"lost ${sum(ends.values()):,.0f} "
                f"({lost:.2f} of ${true['revenue_lost_total']:,.0f})",
                first, lost)


def summary(seen: list[Seen]) -> str:
    """The medians over the alerted seeds: first price / truth (and its range), lost /
    truth, and the lost figure's median relative error."""
    firsts = [x.first_ratio for x in seen if x.first_ratio is not None]
    losts = [x.lost_ratio for x in seen if x.lost_ratio is not None]
    if not firsts or not losts:
        return "no seed alerted"
    return (f"{len(firsts)} of {len(seen)} alerted: first price / truth "
            f"{min(firsts):.2f}-{max(firsts):.2f}, median {statistics.median(firsts):.2f}; "
            f"lost / truth {min(losts):.2f}-{max(losts):.2f}, median "
            f"{statistics.median(losts):.2f}, median error "
            f"{statistics.median(abs(x - 1) for x in losts):.1%}")


def seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("phones", "checkout", "cart", "slow-pages"))
    parser.add_argument("--seeds", type=seeds, default=seeds("1-6"), help="e.g. 1-12")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the traffic")
    parser.add_argument("--warmup", type=float, default=4.0, help="hours before the incident")
    parser.add_argument("--reach-weight", type=float, metavar="W",
                        help="the reach test's share of the conversion level "
                             "(CampaignParams.reach_test_weight; 0: no reach test)")
    args = parser.parse_args(argv)
    campaign = None if args.reach_weight is None else CampaignParams(
        reach_test_weight=args.reach_weight)
    seen = []
    for seed in args.seeds:
        seen.append(first_alert(args.which, seed, args.scale, args.warmup, campaign))
        print(seen[-1].line, flush=True)
    print(summary(seen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
