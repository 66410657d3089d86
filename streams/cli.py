"""``revwatch``: demo, worker, replay, simulate, broker (CONTRACT.md "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from streams.errors import RevwatchError
from streams.settings import Settings
from streams.simulate_demo import DEMO_INCIDENTS
from streams.simulate_model import DEVICES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="broker, worker, simulated traffic with an incident")
    demo.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    demo.add_argument("--speed", type=float, default=60.0,
                      help="event-time minutes per wall minute for the live part (default 60)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--incident", choices=DEMO_INCIDENTS, default="slow-pages",
                      help="slow-pages (LCP x2.5, 20 min) or checkout (no orders while the "
                      "pages stay fast, 30 min); default slow-pages")
    demo.add_argument("--incident-devices", nargs="+", choices=DEVICES, default=[],
                      metavar="DEVICE",
                      help=f"hit only these devices' sessions ({', '.join(DEVICES)})")
    sub.add_parser("worker", help="a Faust worker (scale out by starting more)")
    replay = sub.add_parser("replay", help="offline detection over JSONL files")
    replay.add_argument("--beacons", type=Path, required=True)
    replay.add_argument("--orders", type=Path, required=True)
    replay.add_argument("--alerts", type=Path, required=True)
    simulate = sub.add_parser("simulate", help="synthetic traffic to JSONL files or Kafka")
    simulate.add_argument("--scenario", choices=["default", "demo"], default="default")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--days", type=float, default=3.0)
    simulate.add_argument("--scale", type=float, default=1.0)
    simulate.add_argument("--incident", choices=DEMO_INCIDENTS, default="slow-pages",
                          help="with --scenario demo: slow-pages or checkout")
    simulate.add_argument("--incident-devices", nargs="+", choices=DEVICES, default=[],
                          metavar="DEVICE", help="with --scenario demo: hit only these devices")
    simulate.add_argument("--conversion-daily-amplitude", type=float, default=0.0,
                          metavar="A", help="conversion x (1 + A cos(2 pi (hour - 20) / 24)), "
                          "UTC hours (default 0: the same at every hour)")
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="write beacons/orders JSONL and truth.json")
    target.add_argument("--to-kafka", action="store_true", help="produce to REVWATCH_BROKER")
    simulate.add_argument("--speed", type=float, default=None,
                          help="with --to-kafka: event-time speed-up (default: unpaced)")
    broker = sub.add_parser("broker", help="the local development Kafka broker")
    broker.add_argument("action", choices=["start", "stop", "status"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return _run(args, settings)
    except RevwatchError as exc:
        print(f"revwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "broker":
        from streams import broker_cli

        return broker_cli.main(args.action, settings)
    if args.command == "worker":
        from streams.worker import run_worker

        return run_worker(settings)
    if args.command == "replay":
        return _replay(args, settings)
    if args.command == "simulate":
        return _simulate(args, settings)
    from streams.demo import run_demo

    return run_demo(settings, duration_s=args.duration, speed=args.speed, seed=args.seed,
                    devices=tuple(args.incident_devices), incident=args.incident)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import replay

    for path in (args.beacons, args.orders):
        if not path.is_file():
            print(f"revwatch replay: {path}: no such file", file=sys.stderr)
            return 2
    with args.alerts.open("wb") as out:
        stats = replay(args.beacons, args.orders, out, settings,
                       progress=lambda line: print(f"revwatch replay: {line}", file=sys.stderr))
    print(f"revwatch replay: {stats.summary()}", file=sys.stderr)
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.simulate import default_scenario, demo_scenario, generate, write_files

    scenario = (demo_scenario(args.seed, devices=tuple(args.incident_devices),
                              incident=args.incident)
                if args.scenario == "demo"
                else default_scenario(args.seed, days=args.days, scale=args.scale))
    if not 0.0 <= args.conversion_daily_amplitude < 1.0:
        print("revwatch simulate: --conversion-daily-amplitude must be in [0, 1)",
              file=sys.stderr)
        return 2
    scenario = replace(scenario, conversion_daily_amplitude=args.conversion_daily_amplitude)
    if args.out:
        summary = write_files(scenario, args.out)
        print(f"revwatch simulate: {summary.line()}", file=sys.stderr)
        return 0
    from streams.feed import feed
    from streams.topics import ensure_topics, revwatch_topics

    ensure_topics(settings.broker_host_port, revwatch_topics(settings))
    stats = asyncio.run(feed(settings.broker_host_port, generate(scenario),
                             beacons_topic=settings.beacons_topic,
                             orders_topic=settings.orders_topic, speed=args.speed))
    print(f"revwatch simulate: sent {stats.beacons:,} beacons and {stats.orders:,} orders",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
