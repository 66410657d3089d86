"""Run a real ``revwatch worker`` against the test broker, feed it, and read what it writes.

Reusable by every end-to-end test (sessions, alerts, dead letter, crash/failover, Prometheus):

* :func:`worker_settings` gives a :class:`~streams.settings.Settings` whose app id, topics,
  web port and data dir are unique to one test, so tests never share Kafka state.
* :class:`Worker` is one ``python -m streams.cli worker`` subprocess, configured only by
  ``REVWATCH_*`` variables (``Settings.to_env()``), in its own process group, with its
  output in a log file. :meth:`Worker.stop` sends SIGTERM, then SIGKILL to the group.
* :func:`worker_fixture` is the body of a (module-scoped) pytest fixture: it starts a worker,
  waits for ``/readyz``, yields it, stops it, and prints its log when a test failed.
* :func:`produce`, :class:`Message` and :class:`TopicReader` (``kafka_io.py``, re-exported
  here) send records and read topics back, waiting, bounded, until a predicate holds.
* :func:`metric_value` reads a sample from ``/metrics`` text.

Every wait is bounded; a timeout raises ``AssertionError`` whose message includes the
worker's state and the end of its log, so a failure explains itself.

Example::

    @pytest.fixture(scope="module")
    def worker(request, kafka_bootstrap, tmp_path_factory):
        yield from worker_fixture(request, kafka_bootstrap, tmp_path_factory, "sessions")

    async def test_x(worker):
        await produce(worker.bootstrap, [Message.of(worker.settings.beacons_topic, {...},
                                                    key="s1")])
        async with TopicReader(worker.bootstrap, worker.settings.facts_topic) as facts:
            await facts.until(lambda rs: len(rs) >= 1, 30, "one fact", worker)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.simulate import Record
from streams.topics import ensure_topics, revwatch_topics
from tests.integration.kafka_io import Consumed, Message, Predicate, TopicReader, produce

__all__ = ["Consumed", "HttpReply", "Message", "Predicate", "TopicReader", "Worker",
           "free_port", "metric_samples", "metric_value", "produce", "running_worker",
           "worker_fixture", "worker_group", "worker_settings"]

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 60


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_settings(bootstrap: str, name: str, data_dir: Path, *, partitions: int = 4,
                    **overrides: Any) -> Settings:
    """Settings with an app id, topic names, web port and data dir unique to ``name``.

    Args:
        bootstrap: ``host:port`` of the test broker.
        name: a short label; a random suffix is added.
        data_dir: the worker's ``REVWATCH_DATA_DIR`` (created).
        partitions: partitions of every revwatch topic (verdicts keep one).
        **overrides: any other :class:`Settings` field.
    """
    unique = f"{name}-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True, exist_ok=True)
    base = Settings(
        broker=f"kafka://{bootstrap}", web_port=free_port(), data_dir=data_dir,
        app_id=f"it-{unique}", partitions=partitions,
        beacons_topic=f"it-{unique}-beacons", orders_topic=f"it-{unique}-orders",
        alerts_topic=f"it-{unique}-alerts", dead_letter_topic=f"it-{unique}-dead-letter",
        facts_topic=f"it-{unique}-facts", verdicts_topic=f"it-{unique}-verdicts")
    return base.replace(**overrides)


@dataclass(frozen=True)
class HttpReply:
    """What an HTTP request to the worker answered."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Worker:
    """One ``revwatch worker`` subprocess (see the module docstring)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.settings.broker_host_port

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self) -> None:
        """Launch the worker in a new process group; output goes to ``log_path``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("REVWATCH_")}
        env.update(self.settings.to_env())
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"], cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Poll ``/readyz`` until 200; returns the seconds it took."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if not self.alive():
                msg = f"the worker exited before it was ready\n{self.describe()}"
                raise AssertionError(msg)
            with contextlib.suppress(OSError):
                if self.get("/readyz", timeout_s=2.0).status == 200:
                    return time.monotonic() - began
            time.sleep(0.3)
        msg = f"/readyz not 200 within {timeout_s:g} s\n{self.describe()}"
        raise AssertionError(msg)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout_s)
        _signal_group(process.pid, signal.SIGKILL)  # stray children of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for failover tests)."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def describe(self, lines: int = LOG_TAIL_LINES) -> str:
        """The worker's state and the last ``lines`` of its log, for failure messages."""
        if self.process is None:
            state = "not started"
        elif self.process.poll() is None:
            state = f"running (pid {self.process.pid})"
        else:
            state = f"exited with code {self.process.returncode}"
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"worker {self.settings.app_id}: {state}; log {self.log_path}:\n{tail}"

    def crashed_agents(self) -> list[str]:
        """Log lines of Faust agents that crashed (the process lives on without them)."""
        return [line for line in self.log_text().splitlines() if "Crashed reason=" in line]

    def assert_alive(self) -> None:
        """Fail if the process exited or one of its Faust agents crashed."""
        if not self.alive():
            msg = f"the worker died\n{self.describe()}"
            raise AssertionError(msg)
        crashed = self.crashed_agents()
        if crashed:
            msg = f"a Faust agent of the worker crashed: {crashed[0]}\n{self.describe()}"
            raise AssertionError(msg)

    # -- HTTP ----------------------------------------------------------------------------

    def get(self, path: str, *, timeout_s: float = 5.0) -> HttpReply:
        return self.request("GET", path, timeout_s=timeout_s)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, *, timeout_s: float = 5.0) -> HttpReply:
        """One HTTP request to the worker; HTTP error statuses are returned, not raised."""
        req = urllib.request.Request(self.base_url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as reply:
                return HttpReply(reply.status, dict(reply.headers.items()), reply.read())
        except urllib.error.HTTPError as error:
            with error:
                return HttpReply(error.code, dict(error.headers.items()), error.read())

    def metrics_text(self) -> str:
        reply = self.get("/metrics")
        assert reply.status == 200, f"/metrics answered {reply.status}\n{self.describe()}"
        return reply.body.decode()


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def offline_alerts(records: Sequence[Record]) -> list[dict[str, Any]]:
    """What ``revwatch replay`` alerts on the same records (flushing every 1000, like it):
    the reference a worker's streamed alerts are held to."""
    return [a.to_dict() for a in Pipeline.from_settings(Settings()).play(records)]


def worker_fixture(request: pytest.FixtureRequest, bootstrap: str,
                   tmp_path_factory: pytest.TempPathFactory, name: str,
                   **overrides: Any) -> Iterator[Worker]:
    """Start a worker, wait until ready, yield it; stop it and print its log on failure.

    Use as the body of a fixture: ``yield from worker_fixture(request, kafka_bootstrap,
    tmp_path_factory, "alerts", partitions=2)``.
    """
    data_dir = tmp_path_factory.mktemp(f"worker-{name}")
    settings = worker_settings(bootstrap, name, data_dir, **overrides)
    with running_worker(request, settings, data_dir / "worker.log") as worker:
        yield worker


@contextlib.contextmanager
def running_worker(request: pytest.FixtureRequest, settings: Settings, log_path: Path
                   ) -> Iterator[Worker]:
    """A ready worker for the ``with`` block; stopped after, its log printed on failure."""
    worker = Worker(settings, log_path)
    failed_before = request.session.testsfailed
    try:
        worker.start()
        worker.wait_ready()
        yield worker
    finally:
        code = worker.stop()
        if request.session.testsfailed > failed_before:
            _report(request, f"{worker.describe(lines=200)}\n(stopped, exit code {code})")


@contextlib.contextmanager
def worker_group(request: pytest.FixtureRequest, bootstrap: str, tmp_path: Path, name: str,
                 names: Sequence[str], *, started: int, partitions: int = 4
                 ) -> Iterator[list[Worker]]:
    """Workers of one app (same topics, created here), one per name, each with its own web
    port and data dir under ``tmp_path``; the first ``started`` started and ready. All are
    stopped after, and their logs printed if a test failed."""
    settings = worker_settings(bootstrap, name, tmp_path / names[0], partitions=partitions)
    ensure_topics(bootstrap, revwatch_topics(settings))
    group = [Worker(settings.replace(web_port=settings.web_port if n == names[0] else
                                     free_port(), data_dir=tmp_path / n), tmp_path / f"{n}.log")
             for n in names]
    failed_before = request.session.testsfailed
    try:
        for worker in group[:started]:
            worker.start()
        for worker in group[:started]:
            worker.wait_ready()
        yield group
    finally:
        for worker in group:
            worker.stop()
        if request.session.testsfailed > failed_before:
            for worker in group:
                print(worker.describe(lines=80))


def _report(request: pytest.FixtureRequest, text: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print(text, file=sys.stderr)
        return
    reporter.write_sep("-", "revwatch worker log")
    reporter.write_line(text)


# -- Prometheus --------------------------------------------------------------------------

def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples named ``name`` in Prometheus text: sorted label pairs -> value."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0.0 if none)."""
    wanted = set(labels.items())
    return sum(v for k, v in metric_samples(text, name).items() if wanted <= set(k))
