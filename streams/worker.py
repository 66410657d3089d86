"""``revwatch worker``: one Faust worker process.

Creates the topics it needs (idempotent; partition counts from the settings), builds the app
and runs it until SIGTERM/SIGINT. Start more workers with the same settings (and another
``REVWATCH_WEB_PORT``) to spread the partitions.
"""

from __future__ import annotations

import logging
import sys

from faust import Worker

from streams import fast_drain, native
from streams.app import create_app
from streams.settings import Settings
from streams.topics import ensure_topics, revwatch_topics


def run_worker(settings: Settings, *, loglevel: str | None = None) -> int:
    """Run until stopped; the exit code is Faust's."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    ensure_topics(settings.broker_host_port, revwatch_topics(settings))
    runtime = create_app(settings)
    level = loglevel or settings.log_level
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    # aiohttp logs "Error handling request from <ip>" for malformed requests: we never log IPs
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    worker = Worker(runtime.app, loglevel=level, quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG so that every log call turns it:
    # every logger.debug of Faust and aiokafka then builds a LogRecord (~2% of the worker)
    worker.spinner = None
    print(f"revwatch worker: compiled modules {native.state}; consumer "
          f"{fast_drain.describe(runtime.app)}", file=sys.stderr, flush=True)
    worker.execute_from_commandline()
    return 0
