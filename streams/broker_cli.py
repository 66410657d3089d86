"""``revwatch broker start|stop|status``: the local development broker from the command line."""

from __future__ import annotations

import sys
import time

from streams.broker import LocalBroker
from streams.errors import BrokerError
from streams.settings import Settings


def main(action: str, settings: Settings) -> int:
    """``revwatch broker start|stop|status``: one line on stdout; errors on stderr, exit 1."""
    broker = LocalBroker(settings.broker_host_port, settings.data_dir)
    actions = {"start": _cli_start, "stop": _cli_stop, "status": _cli_status}
    if action not in actions:
        print(f"revwatch broker: unknown action {action!r}; use start, stop or status",
              file=sys.stderr)
        return 2
    try:
        return actions[action](broker)
    except BrokerError as exc:
        print(f"revwatch broker {action}: {exc}", file=sys.stderr)
        return 1


def _cli_start(broker: LocalBroker) -> int:
    began = time.monotonic()
    before = broker.status()
    broker.start()
    pid = broker.status().pid
    if before.answering and before.running:
        print(f"kafka {broker.kafka_version} already answering on {broker.host_port} (pid {pid})")
    else:
        print(f"kafka {broker.kafka_version} answering on {broker.host_port} "
              f"(pid {pid}, started in {time.monotonic() - began:.1f}s)")
    return 0


def _cli_stop(broker: LocalBroker) -> int:
    began = time.monotonic()
    pid = broker.status().pid
    broker.stop()
    if pid is None:
        print(f"kafka was not running (data dir {broker.home})")
    else:
        print(f"kafka stopped (pid {pid}, in {time.monotonic() - began:.1f}s)")
    return 0


def _cli_status(broker: LocalBroker) -> int:
    state = broker.status()
    if state.answering:
        owner = f"pid {state.pid}" if state.running else "not started from this data dir"
        print(f"kafka {broker.kafka_version} answering on {state.host_port} ({owner})")
        return 0
    if state.running:
        print(f"kafka running (pid {state.pid}) but not answering on {state.host_port}; "
              f"see {state.log_path}")
    else:
        print(f"kafka not running on {state.host_port} (log: {state.log_path})")
    return 1
