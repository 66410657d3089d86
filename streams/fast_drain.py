"""Faust's consumer without four asyncio tasks per Kafka message.

faust-streaming 0.15.3 hands every fetched message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())`` (``Consumer.
_drain_messages``), so that a rebalance can cut a callback that waits on a full stream
buffer. mode's ``wait_first`` wraps each argument, and the service's stopped and crashed
events, in a task and ``asyncio.wait``\\s them: four tasks, an ``asyncio.wait`` and three
cancellations per message, about a third of a worker's busy time (docs/PERFORMANCE.md,
"Worker through Kafka"), although the callback almost never waits.

:class:`Consumer` runs the callback eagerly, up to its first suspension, as Python 3.12's
eager tasks do. A callback that finishes there (the usual case: nothing full, nothing
suspended) is done without a task. One that suspends goes on, from where it stopped, under
Faust's own ``wait_first``, so a rebalance still cuts it as before. Any other
``wait_first`` of the consumer is Faust's, unchanged.

The proper home of this is Faust's drain loop itself (the same call is the subject of
faust-streaming issue #229, "Conductor appears to be deadlocked"); until it changes there,
this subclass is installed only on Faust's aiokafka transport, the one revwatch uses, and
``tests/unit/test_fast_drain.py`` drives Faust's own loop, so a Faust release that calls
the callback differently fails that test instead of silently losing the gain.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode.services import WaitResults

ENV_SWITCH = "REVWATCH_FAST_DRAIN"  # "0": Faust's own consumer (for comparison)


class Started:
    """The rest of a coroutine that already ran to its first suspension, as an awaitable:
    it yields what the coroutine yielded and relays what comes back (values, exceptions,
    cancellation) until the coroutine returns."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._pending
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: it goes to the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Consumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, with the message callback run eagerly (module docstring)."""

    async def wait_first(  # mode's signature, timeout included
            self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109
        if timeout is not None or len(coros) != 2 or not isinstance(coros[0], Coroutine):
            return await super().wait_first(*coros, timeout=timeout)
        first, other = coros
        try:
            pending = first.send(None)
        except BaseException as exc:
            if isinstance(other, Coroutine):
                other.close()  # never started: nothing to cancel
            if not isinstance(exc, StopIteration):
                raise  # as Faust's wait_first propagates the callback's error
            if self._stopped.is_set() or self._crashed.is_set():
                return WaitResults([], [], True)
            return WaitResults([first], [exc.value], False)
        return await super().wait_first(Started(first, pending), other)


def install(app: Any) -> None:
    """Make ``app`` create :class:`Consumer` (before its consumer exists), unless
    ``REVWATCH_FAST_DRAIN=0`` or its transport is not Faust's aiokafka one."""
    transport = app.transport
    if os.environ.get(ENV_SWITCH, "1") != "0" and issubclass(Consumer, transport.Consumer):
        transport.Consumer = Consumer


def describe(app: Any) -> str:
    """Which consumer ``app`` makes, for the worker's first line."""
    if app.transport.Consumer is Consumer:
        return "eager message callback"
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"Faust's own ({ENV_SWITCH}=0)"
    return f"Faust's own (transport {type(app.transport).__name__})"
