"""Alert delivery to Alertmanager and webhooks that never blocks detection.

:meth:`Dispatcher.submit` is synchronous and O(queue): it puts the alert on one bounded
queue per receiver and returns. One worker task per receiver sends batches, retrying
with exponential backoff and jitter; a failing or hanging receiver delays only its own
queue. When a queue is full the oldest queued *firing* update is dropped (a later update
of the same alert carries newer figures; a resolve is the one update that must arrive),
and every outcome (``delivered``, ``retried``, ``failed``, ``dropped``) is reported to
``on_outcome(receiver, outcome)``, e.g. :meth:`streams.metrics.Metrics.count_delivery`.

The Alertmanager mapping is :func:`streams.alertmanager.alertmanager_alert`, pure, so it is
tested without a network.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import aiohttp
import orjson

from streams.alertmanager import SEVERITIES, alertmanager_alert, expired_copy, wall_clock_ms
from streams.errors import RevwatchError

log = logging.getLogger(__name__)

Alert = dict[str, Any]
Sleep = Callable[[float], Awaitable[None]]
SessionFactory = Callable[[], aiohttp.ClientSession]


class DeliveryError(RevwatchError):
    """A receiver answered with a non-2xx status. ``status`` and ``body`` say what."""

    def __init__(self, receiver: str, status: int, body: str) -> None:
        self.receiver = receiver
        self.status = status
        self.body = body
        super().__init__(f"{receiver}: HTTP {status}: {body[:200]}")


class Receiver(Protocol):
    """Where alerts go. ``send`` raises on failure; the dispatcher retries the batch."""

    name: str
    max_batch: int

    async def send(self, batch: Sequence[Alert]) -> None: ...

    async def close(self) -> None: ...


class _HttpReceiver:
    """POSTs JSON with one lazily created :class:`aiohttp.ClientSession`."""

    def __init__(self, name: str, url: str, *, session_factory: SessionFactory | None,
                 timeout_s: float) -> None:
        self.name = name
        self.url = url
        self._factory = session_factory or aiohttp.ClientSession
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def _post(self, url: str, payload: Any) -> None:
        if self._session is None or self._session.closed:
            self._session = self._factory()
        headers = {"Content-Type": "application/json"}
        async with self._session.post(url, data=orjson.dumps(payload), headers=headers,
                                      timeout=self._timeout) as response:
            if response.status >= 300:
                raise DeliveryError(self.name, response.status, await response.text())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class WebhookReceiver(_HttpReceiver):
    """POSTs each alert, the CONTRACT alert object as is, as one JSON body."""

    max_batch = 1

    def __init__(self, url: str, *, name: str = "webhook",
                 session_factory: SessionFactory | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(name, url, session_factory=session_factory, timeout_s=timeout_s)

    async def send(self, batch: Sequence[Alert]) -> None:
        for alert in batch:
            await self._post(self.url, alert)


class AlertmanagerReceiver(_HttpReceiver):
    """POSTs batches to Alertmanager's ``{url}/api/v2/alerts`` (see :func:`alertmanager_alert`).

    Alertmanager identifies an alert by its label set. When an episode's labels change
    (kind or severity escalates), the old label set is expired in the same POST, so a
    stale copy never lingers until its ``endsAt``.
    """

    max_batch = 64
    _MEMORY = 10_000  # firing alert ids whose last label set is remembered

    def __init__(self, url: str, *, name: str = "alertmanager",
                 session_factory: SessionFactory | None = None, timeout_s: float = 10.0,
                 resolve_timeout_s: float = 900.0, page_revenue_per_hour: float = 500.0,
                 currency: str = "USD", generator_url: str = "",
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        super().__init__(name, url.rstrip("/") + "/api/v2/alerts",
                         session_factory=session_factory, timeout_s=timeout_s)
        self.resolve_timeout_s = resolve_timeout_s
        self.page_revenue_per_hour = page_revenue_per_hour
        self.currency = currency
        self.generator_url = generator_url
        self._now_ms = now_ms
        self._sent: dict[str, dict[str, str]] = {}

    def payload(self, batch: Sequence[Alert]) -> list[dict[str, Any]]:
        """The POST body for ``batch`` (last update per alert wins); pure but for the clock."""
        return self._build(batch)[0]

    async def send(self, batch: Sequence[Alert]) -> None:
        body, labels_by_id = self._build(batch)
        await self._post(self.url, body)
        for alert_id, labels in labels_by_id.items():
            self._sent.pop(alert_id, None)
            if labels is not None:
                self._sent[alert_id] = labels
        while len(self._sent) > self._MEMORY:
            self._sent.pop(next(iter(self._sent)))

    def _build(self, batch: Sequence[Alert]) -> tuple[list[dict[str, Any]],
                                                      dict[str, dict[str, str] | None]]:
        now = self._now_ms()
        latest = {str(alert["alert_id"]): alert for alert in batch}
        body: list[dict[str, Any]] = []
        labels_by_id: dict[str, dict[str, str] | None] = {}
        for alert_id, alert in latest.items():
            item = alertmanager_alert(
                alert, now_ms=now, resolve_timeout_s=self.resolve_timeout_s,
                page_revenue_per_hour=self.page_revenue_per_hour, currency=self.currency,
                generator_url=self.generator_url)
            previous = self._sent.get(alert_id)
            if previous is not None:
                _keep_highest_severity(item["labels"], previous)
                if previous != item["labels"]:
                    body.append(expired_copy(previous, item["startsAt"], now))
            body.append(item)
            resolved = alert.get("state") == "resolved"
            labels_by_id[alert_id] = None if resolved else item["labels"]
        return body, labels_by_id


def _keep_highest_severity(labels: dict[str, str], previous: dict[str, str]) -> None:
    """An episode's severity only escalates: flapping labels would re-notify each time."""
    rank = {name: i for i, name in enumerate(SEVERITIES)}
    if rank.get(previous["severity"], 0) > rank.get(labels["severity"], 0):
        labels["severity"] = previous["severity"]


class _AlertQueue:
    """Bounded FIFO of alerts that evicts the oldest firing update when full."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Alert] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_flight = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, alert: Alert) -> Alert | None:
        """Enqueue ``alert``; return the alert dropped to make room, if any."""
        dropped = self._evict(alert) if len(self._items) >= self.maxsize else None
        if dropped is alert:
            return dropped
        self._items.append(alert)
        self._ready.set()
        self._idle.clear()
        return dropped

    def _evict(self, incoming: Alert) -> Alert:
        for index, queued in enumerate(self._items):
            if queued.get("state") != "resolved":
                del self._items[index]
                return queued
        if incoming.get("state") != "resolved":
            return incoming
        return self._items.popleft()

    async def take(self, limit: int) -> list[Alert]:
        """Wait for alerts; take up to ``limit`` of them (they are now in flight)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
        self.in_flight = len(batch)
        return batch

    def done(self) -> None:
        self.in_flight = 0
        if not self._items:
            self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()


class Dispatcher:
    """Fans alerts out to receivers without ever blocking the caller.

    Args:
        receivers: where to deliver; names must be unique.
        queue_max: alerts queued per receiver before the oldest firing update is dropped.
        on_outcome: called ``(receiver, outcome)`` once per alert delivered, failed
            (gave up after ``max_attempts``) or dropped, and once per failed attempt
            (``retried``).
        on_queue_depth: called ``(receiver, depth)`` when a queue's length changes.
        max_attempts: attempts per batch before giving up.
        base_delay_s, max_delay_s: backoff ``min(max, base * 2**(attempt-1))``, scaled by
            a jitter factor drawn uniformly from [0.5, 1).
        attempt_timeout_s: one attempt longer than this counts as failed.
        sleep, rng: injected for tests.
    """

    def __init__(self, receivers: Iterable[Receiver], *, queue_max: int,
                 on_outcome: Callable[[str, str], None] | None = None,
                 on_queue_depth: Callable[[str, int], None] | None = None,
                 max_attempts: int = 8, base_delay_s: float = 0.5, max_delay_s: float = 30.0,
                 attempt_timeout_s: float = 30.0, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self.receivers = list(receivers)
        if queue_max < 1 or max_attempts < 1:
            msg = f"queue_max and max_attempts must be >= 1, got {queue_max}, {max_attempts}"
            raise ValueError(msg)
        if len({r.name for r in self.receivers}) != len(self.receivers):
            msg = "receiver names must be unique"
            raise ValueError(msg)
        self._queues = {r.name: _AlertQueue(queue_max) for r in self.receivers}
        self._on_outcome = on_outcome or (lambda _receiver, _outcome: None)
        self._on_depth = on_queue_depth or (lambda _receiver, _depth: None)
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.attempt_timeout_s = attempt_timeout_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._tasks: list[asyncio.Task[None]] = []

    def submit(self, alert: Alert) -> None:
        """Queue ``alert`` for every receiver and return at once (call on the loop's thread)."""
        for name, queue in self._queues.items():
            if queue.put(alert) is not None:
                self._on_outcome(name, "dropped")
            self._on_depth(name, len(queue))

    def pending(self) -> int:
        """Alerts queued or in flight, summed over receivers."""
        return sum(len(q) + q.in_flight for q in self._queues.values())

    async def start(self) -> None:
        """Start one worker task per receiver."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(r), name=f"deliver-{r.name}")
                           for r in self.receivers]

    async def stop(self, timeout_s: float = 5.0) -> int:
        """Deliver what is queued for up to ``timeout_s``; return how many were abandoned."""
        drains = [q.drained() for q in self._queues.values()]
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*drains)
        except TimeoutError:
            log.warning("delivery: stopping with %d alerts undelivered", self.pending())
        abandoned = self.pending()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for receiver in self.receivers:
            await receiver.close()
        return abandoned

    async def _run(self, receiver: Receiver) -> None:
        queue = self._queues[receiver.name]
        while True:
            batch = await queue.take(receiver.max_batch)
            self._on_depth(receiver.name, len(queue))
            try:
                await self._deliver(receiver, batch)
            finally:
                queue.done()

    async def _deliver(self, receiver: Receiver, batch: Sequence[Alert]) -> None:
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with asyncio.timeout(self.attempt_timeout_s):
                    await receiver.send(batch)
            except Exception as exc:  # any receiver failure is retried, never fatal
                log.info("delivery to %s failed (attempt %d): %r", receiver.name, attempt, exc)
                if attempt == self.max_attempts:
                    break
                self._on_outcome(receiver.name, "retried")
                await self._sleep(self.backoff_s(attempt))
            else:
                self._count(receiver.name, "delivered", len(batch))
                return
        log.warning("delivery to %s: gave up on %d alerts", receiver.name, len(batch))
        self._count(receiver.name, "failed", len(batch))

    def backoff_s(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based): capped exponential, jittered."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def _count(self, receiver: str, outcome: str, n: int) -> None:
        for _ in range(n):
            self._on_outcome(receiver, outcome)
