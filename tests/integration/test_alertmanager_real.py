"""The real Alertmanager (Debian ``prometheus-alertmanager``) receives, groups and resolves.

A firing alert sent through :class:`~streams.delivery.Dispatcher` and
:class:`~streams.delivery.AlertmanagerReceiver` shows in ``GET /api/v2/alerts`` with
revwatch's labels and reaches a webhook grouped by ``incident_id``; the resolve removes
it and sends a ``resolved`` notification. Every wait is bounded; a missing binary fails.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from streams.delivery import AlertmanagerReceiver, Dispatcher

pytestmark = pytest.mark.integration

BINARY = "/usr/bin/prometheus-alertmanager"
CONFIG = """\
route:
  receiver: hook
  group_by: [incident_id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[BaseTestServer, list[dict[str, Any]]]]:
    notifications: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        notifications.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server, notifications


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: tuple[BaseTestServer, list[dict[str, Any]]],
                 ) -> Iterator[str]:
    if not Path(BINARY).exists():
        pytest.fail(f"{BINARY} is missing: apt-get install -y prometheus-alertmanager",
                    pytrace=False)
    server, _ = webhook
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=server.make_url("/hook")))
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [BINARY, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


async def eventually(probe: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """Await ``probe()`` until it returns something truthy, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}", pytrace=False)


async def test_firing_then_resolved_through_real_alertmanager(
        alertmanager: str, webhook: tuple[BaseTestServer, list[dict[str, Any]]]) -> None:
    _, notifications = webhook
    async with aiohttp.ClientSession() as http:
        async def ready() -> bool:
            try:
                async with http.get(f"{alertmanager}/-/ready") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        async def active() -> list[dict[str, Any]]:
            async with http.get(f"{alertmanager}/api/v2/alerts") as response:
                assert response.status == 200
                alerts: list[dict[str, Any]] = await response.json()
                return alerts

        await eventually(ready, "Alertmanager to become ready")
        outcomes: list[tuple[str, str]] = []
        dispatcher = Dispatcher([AlertmanagerReceiver(alertmanager)], queue_max=10,
                                on_outcome=lambda r, o: outcomes.append((r, o)))
        await dispatcher.start()
        now = int(time.time() * 1000)
        alert = {
            "alert_id": "spring-sale:1", "incident_id": "inc-42", "scope": "campaign",
            "ts": now, "campaign": "spring-sale", "kind": "performance_conversion_loss",
            "state": "firing", "started_at": now - 300_000, "revenue_at_risk_per_hour": 1200.0,
            "revenue_at_risk_per_hour_low": 700.0, "revenue_at_risk_per_hour_high": 1900.0,
            "revenue_lost": 100.0, "evidence": {"sessions_in_window": 900},
            "summary": "spring-sale: slow pages cost 1,200 USD/h",
        }
        dispatcher.submit(alert)
        shown = await eventually(active, "the alert in GET /api/v2/alerts")
        assert len(shown) == 1
        assert shown[0]["labels"] == {
            "alertname": "RevwatchPerformanceConversionLoss", "service": "revwatch",
            "campaign": "spring-sale", "kind": "performance_conversion_loss",
            "severity": "page", "incident_id": "inc-42", "scope": "campaign",
            "alert_id": "spring-sale:1"}
        assert shown[0]["status"]["state"] == "active"
        assert shown[0]["annotations"]["revenue_at_risk_per_hour_low"] == "700.00"

        async def notified(status: str) -> list[dict[str, Any]]:
            return [n for n in notifications if n["status"] == status]

        firing = await eventually(lambda: notified("firing"), "the firing webhook")
        assert firing[0]["groupLabels"] == {"incident_id": "inc-42"}

        dispatcher.submit({**alert, "state": "resolved", "ts": now + 1000})

        async def gone() -> bool:
            return not await active()

        await eventually(gone, "the alert to leave GET /api/v2/alerts")
        resolved = await eventually(lambda: notified("resolved"), "the resolved webhook")
        assert resolved[0]["alerts"][0]["labels"]["alert_id"] == "spring-sale:1"
        assert await dispatcher.stop(timeout_s=5.0) == 0
        assert outcomes == [("alertmanager", "delivered")] * 2
