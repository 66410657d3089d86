"""Real Prometheus and Alertmanager (Debian binaries) for end-to-end observability tests.

* :func:`compress_rules` renders ``deploy/prometheus/rules.yml`` for time-compressed traffic:
  every ``for:`` and every range selector (``[30m]``) is divided by the compression factor;
  thresholds (budgets) are left as they are.
* :func:`prometheus_config` / :func:`alertmanager_config` derive test configs from the
  files in ``deploy/``: same jobs, rules, routes and inhibitions; loopback targets, 1 s
  scrape/evaluation, 1 s grouping, and every Alertmanager receiver pointed at a local
  webhook (``{webhook}/am/<receiver name>``).
* :class:`Daemon` runs one binary on a free loopback port with a temp dir and its log;
  :meth:`Daemon.stop` terminates it (SIGTERM, then SIGKILL).
* :class:`WebhookServer` is an aiohttp receiver on its own thread that keeps every POST;
  :class:`Poller` calls a probe on a thread; :class:`AmAlert` is what one saw of an alert.
* :func:`get_json` / :func:`prom_query` / :func:`prom_query_range` read HTTP APIs.

Every wait is bounded; a timeout raises ``AssertionError`` with the end of the daemon's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from tests.integration.worker_harness import REPO, free_port

PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
PROMTOOL = Path("/usr/bin/promtool")
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "revwatch.json"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_RANGE = re.compile(r"\[(\d+)([smhd])\]")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _compressed(amount: str, unit: str, factor: float, least_s: int) -> str:
    return f"{max(least_s, round(int(amount) * _SECONDS[unit] / factor))}s"


def compress_rules(text: str, factor: float, *, min_range_s: int = 4) -> str:
    """``rules.yml`` with every ``for`` and range window divided by ``factor``.

    ``for`` is at least 1 s; a range window at least ``min_range_s`` (two scrapes).
    """
    doc = yaml.safe_load(text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                match = _DURATION.match(str(rule["for"]))
                assert match, f"unexpected duration {rule['for']!r} in {rule.get('alert')}"
                rule["for"] = _compressed(match[1], match[2], factor, 1)
            rule["expr"] = _RANGE.sub(
                lambda m: f"[{_compressed(m[1], m[2], factor, min_range_s)}]", rule["expr"])
    return yaml.safe_dump(doc, sort_keys=False)


def rule_alert_names(text: str) -> set[str]:
    """The ``alert:`` names of a rules file."""
    doc = yaml.safe_load(text)
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def prometheus_config(rules_file: Path, worker: str, alertmanager: str, prometheus: str, *,
                      scrape_s: int = 2, evaluate_s: int = 1) -> str:
    """``deploy/prometheus/prometheus.yml`` pointed at loopback targets, short intervals.

    The scrape timeout equals the scrape interval, so a worker busy for longer than that
    shows as a failed scrape (``up == 0``).
    """
    doc = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    doc["global"] = {"scrape_interval": f"{scrape_s}s", "evaluation_interval": f"{evaluate_s}s"}
    doc["rule_files"] = [str(rules_file)]
    doc["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    targets = {"revwatch": [worker], "alertmanager": [alertmanager], "prometheus": [prometheus]}
    jobs = [job["job_name"] for job in doc["scrape_configs"]]
    assert set(jobs) == set(targets), f"deploy prometheus.yml jobs changed: {jobs}"
    for job in doc["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return yaml.safe_dump(doc, sort_keys=False)


def alertmanager_config(webhook_base: str) -> str:
    """``deploy/alertmanager/alertmanager.yml`` with 1 s grouping and local webhooks."""
    doc = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    doc["route"].update(group_wait="1s", group_interval="1s")
    for receiver in doc["receivers"]:
        hooks = receiver.get("webhook_configs")
        assert hooks, f"receiver {receiver['name']} has no webhook_configs to redirect"
        for hook in hooks:
            hook["url"] = f"{webhook_base}/am/{receiver['name']}"
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Daemon:
    """One Prometheus or Alertmanager process on ``127.0.0.1:port``."""

    name: str
    binary: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, args: list[str], timeout_s: float = 60.0) -> None:
        """Run ``binary args`` and wait for ``/-/ready``."""
        assert self.binary.exists(), f"{self.binary} is missing (apt-get install {self.name})"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), *args, f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}"
                raise AssertionError(msg)
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                if reply.status == 200:
                    return
            time.sleep(0.2)
        msg = f"{self.name} not ready within {timeout_s:g} s\n{self.log_tail()}"
        raise AssertionError(msg)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_prometheus(workdir: Path, *, worker: str, alertmanager: str, rules_text: str,
                     scrape_s: int = 2, evaluate_s: int = 1) -> Daemon:
    """Prometheus with ``rules_text`` and the deploy scrape jobs (checked by promtool first)."""
    daemon = Daemon("prometheus", PROMETHEUS, workdir)
    rules = workdir / "rules.yml"
    config = workdir / "prometheus.yml"
    workdir.mkdir(parents=True, exist_ok=True)
    rules.write_text(rules_text)
    config.write_text(prometheus_config(rules, worker, alertmanager,
                                        f"127.0.0.1:{daemon.port}", scrape_s=scrape_s,
                                        evaluate_s=evaluate_s))
    check = subprocess.run([str(PROMTOOL), "check", "config", str(config)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, f"promtool check config:\n{check.stdout}{check.stderr}"
    daemon.start([f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                  "--storage.tsdb.retention.time=1h", "--web.enable-lifecycle"])
    return daemon


def start_alertmanager(workdir: Path, webhook_base: str) -> Daemon:
    """Alertmanager with the deploy routes, receivers redirected to ``webhook_base``."""
    daemon = Daemon("alertmanager", ALERTMANAGER, workdir)
    config = workdir / "alertmanager.yml"
    workdir.mkdir(parents=True, exist_ok=True)
    config.write_text(alertmanager_config(webhook_base))
    daemon.start([f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                  "--cluster.listen-address="])
    return daemon


@dataclass
class AmAlert:
    """What the poller saw of one Alertmanager alert (by fingerprint)."""

    labels: dict[str, str]
    first_seen: float
    updates: list[dict[str, str]] = field(default_factory=list)  # distinct annotations
    states: set[str] = field(default_factory=set)
    inhibited_by: set[str] = field(default_factory=set)

    def peak(self, figure: str) -> float:
        return max((float(n.get(figure, "nan")) for n in self.updates), default=math.nan)


class Poller(threading.Thread):
    """Calls ``probe`` every ``every_s`` until stopped; errors are kept, not raised."""

    def __init__(self, probe: Callable[[], None], every_s: float) -> None:
        super().__init__(daemon=True)
        self.probe, self.every_s = probe, every_s
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.probe()
            except Exception as exc:  # the tests report what was seen
                self.errors.append(repr(exc))
            self.stopping.wait(self.every_s)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)


def promtool_check_metrics(scrape: str) -> str:
    check = subprocess.run([str(PROMTOOL), "check", "metrics"], input=scrape,
                           capture_output=True, text=True, timeout=60, check=False)
    return "" if check.returncode == 0 else f"exit {check.returncode}: {check.stdout}{check.stderr}"


@dataclass(frozen=True)
class Received:
    """One POST the webhook server kept."""

    path: str
    body: Any
    at: float  # time.time()


class WebhookServer:
    """An aiohttp server on a background thread; keeps every JSON POST under any path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _receive(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        with self._lock:
            self.received.append(Received(request.path, body, time.time()))
        return web.Response(status=200)

    def bodies(self, path_prefix: str) -> list[Any]:
        with self._lock:
            return [r.body for r in self.received if r.path.startswith(path_prefix)]

    def stop(self) -> None:
        if self._runner is not None:
            runner = self._runner
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def get_json(url: str, params: dict[str, str] | None = None, timeout_s: float = 10.0) -> Any:
    """GET ``url`` (with query ``params``) and decode the JSON answer."""
    full = f"{url}?{urllib.parse.urlencode(params)}" if params else url
    with urllib.request.urlopen(full, timeout=timeout_s) as reply:
        return orjson.loads(reply.read())


def prom_query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    body = get_json(f"{prometheus}/api/v1/query", {"query": expr})
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def prom_query_range(prometheus: str, expr: str, start: float, end: float,
                     step_s: float = 1.0) -> list[dict[str, Any]]:
    """A range query's result matrix (what a Grafana time series panel draws)."""
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}"}
    try:
        body = get_json(f"{prometheus}/api/v1/query_range", params)
    except urllib.error.HTTPError as error:
        with error:
            msg = f"{expr}: HTTP {error.code}: {error.read()[:500]!r}"
        raise AssertionError(msg) from None
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
