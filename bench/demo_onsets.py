"""When the demo's checkout incidents are first alerted, and where their alerts say they began.

Offline (``Pipeline.play``, the code the agents run) over ``demo_scenario`` seeds, for

* ``phones``: no phone able to pay on spring_sale for an hour (the scenario of
  ``tests/integration/test_worker_device_drop.py`` with ``--warmup 5``, and of
  ``tests/unit/test_detection_sim.py`` with the default 4);
* ``checkout``: ``revwatch demo --incident checkout`` (no orders for 30 minutes).

Each line: the first firing alert's minute after the incident's start, its ``started_at``
in minutes from that start (under 0: early), the devices it is put on, its p-values, and
the price. The figures docs/FUNNEL.md ("Known limits") and the device test's docstring
cite came from these scenarios.

    .venv/bin/python bench/demo_onsets.py phones --seeds 1-12 --scale 0.5 --warmup 5
    .venv/bin/python bench/demo_onsets.py checkout --seeds 1-6
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.simulate import demo_scenario, generate
from streams.simulate_model import Scenario

MINUTE = 60_000


def scenario(which: str, seed: int, scale: float, warmup: float) -> Scenario:
    if which == "checkout":
        return replace(demo_scenario(seed, warmup_hours=warmup, incident="checkout"),
                       scale=scale)
    demo = replace(demo_scenario(seed, warmup_hours=warmup, incident_minutes=60), scale=scale)
    (slowdown,) = demo.incidents
    broken = replace(slowdown, id="phones-checkout", kind="conversion_drop", lcp_factor=1.0,
                     conversion_factor=0.0, devices=("mobile",))
    return replace(demo, incidents=(broken,))


def first_alert(which: str, seed: int, scale: float, warmup: float) -> str:
    s = scenario(which, seed, scale, warmup)
    start = s.incidents[0].start_ms
    firing = [a for a in Pipeline.from_settings(Settings()).play(generate(s))
              if a.state == "firing"]
    if not firing:
        return f"{which} seed {seed}: not alerted"
    a, facts = firing[0], firing[0].evidence
    return (f"{which} seed {seed}: first alert {(a.ts - start) // MINUTE} min in, started "
            f"{(a.started_at - start) / MINUTE:+.0f} min, devices {facts.get('drop_devices')}, "
            f"p {facts.get('conversion_p_value'):.1e} "
            f"(checkout {facts.get('checkout_p_value'):.1e}), ${a.revenue_at_risk_per_hour:,.0f}/h")


def seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("phones", "checkout"))
    parser.add_argument("--seeds", type=seeds, default=seeds("1-6"), help="e.g. 1-12")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the traffic")
    parser.add_argument("--warmup", type=float, default=4.0, help="hours before the incident")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        print(first_alert(args.which, seed, args.scale, args.warmup), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
