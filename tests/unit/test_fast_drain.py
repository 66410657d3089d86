"""streams.fast_drain: Faust's own ``_drain_messages`` loop, driven with fake fetches, hands
every message to the callback in order without four tasks a message; a callback that waits
goes on under Faust's ``wait_first`` and is still cut when the flow is suspended."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams import fast_drain
from streams.app import create_app
from streams.settings import Settings

TOPIC = "beacons"


def consumer(monkeypatch: pytest.MonkeyPatch, fast: bool = True) -> Any:
    """An unstarted consumer of a real app, fast or Faust's own (``REVWATCH_FAST_DRAIN``);
    made in the running event loop, whose tasks mode's ``wait_first`` makes."""
    monkeypatch.setenv(fast_drain.ENV_SWITCH, "1" if fast else "0")
    return create_app(Settings()).app.consumer


async def consumer_here(monkeypatch: pytest.MonkeyPatch, fast: bool = True) -> Any:
    c = consumer(monkeypatch, fast)
    assert c.loop is asyncio.get_running_loop()
    return c


async def drain(c: Any, offsets: list[int], callback: Callable[[Any], Awaitable[None]]) -> int:
    """Run Faust's ``_drain_messages`` over one fetch of ``offsets``; return the tasks made."""
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    tp = TP(TOPIC, 0)

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        for offset in offsets:
            yield tp, SimpleNamespace(topic=TOPIC, partition=0, offset=offset, tp=tp)
        fetcher._stopped.set()

    made = 0
    loop = asyncio.get_running_loop()

    def factory(loop_: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop_, **kwargs)

    c.callback, c.getmany = callback, getmany
    loop.set_task_factory(factory)
    try:
        await c._drain_messages(fetcher)
    finally:
        loop.set_task_factory(None)
    return made


def test_the_app_makes_the_fast_consumer_unless_switched_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(consumer(monkeypatch)) is fast_drain.Consumer
    assert type(consumer(monkeypatch, fast=False)) is not fast_drain.Consumer


def test_another_transport_keeps_its_own_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    class OtherConsumer:
        pass

    monkeypatch.setenv(fast_drain.ENV_SWITCH, "1")
    app = SimpleNamespace(transport=SimpleNamespace(Consumer=OtherConsumer))
    fast_drain.install(app)
    assert app.transport.Consumer is OtherConsumer
    assert fast_drain.describe(app) == "Faust's own (transport SimpleNamespace)"


def test_describe_says_which_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fast_drain.ENV_SWITCH, "1")
    assert fast_drain.describe(create_app(Settings()).app) == "eager message callback"
    monkeypatch.setenv(fast_drain.ENV_SWITCH, "0")
    app = create_app(Settings()).app
    assert fast_drain.describe(app) == f"Faust's own ({fast_drain.ENV_SWITCH}=0)"


@pytest.mark.parametrize("fast", [True, False])
def test_every_message_reaches_the_callback_in_order(monkeypatch: pytest.MonkeyPatch,
                                                     fast: bool) -> None:
    seen: list[int] = []

    async def callback(message: Any) -> None:
        seen.append(message.offset)

    async def run() -> tuple[Any, int]:
        c = await consumer_here(monkeypatch, fast)
        return c, await drain(c, list(range(300)), callback)

    c, made = asyncio.run(run())
    assert seen == list(range(300))
    assert c._read_offset[TP(TOPIC, 0)] == 299
    if fast:  # a few for Faust's sleeps between batches, none per message
        assert made < 10
    else:  # Faust's wait_first: the callback, the flow event, stopped and crashed
        assert made >= 4 * 300


def test_a_callback_that_waits_goes_on_under_wait_first(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, str]] = []

    async def run() -> int:
        gate = asyncio.get_running_loop().create_future()

        async def callback(message: Any) -> None:
            seen.append((message.offset, "start"))
            if message.offset == 1:
                # set on the loop's next turn, so the await below always suspends (a timer
                # set before the drain could fire first on a loaded machine: no suspension)
                asyncio.get_running_loop().call_soon(gate.set_result, "gate")
                seen.append((message.offset, await gate))
            seen.append((message.offset, "end"))

        return await drain(await consumer_here(monkeypatch), [0, 1, 2], callback)

    made = asyncio.run(run())
    assert seen == [(0, "start"), (0, "end"), (1, "start"), (1, "gate"), (1, "end"),
                    (2, "start"), (2, "end")]
    assert made >= 4  # the one that waited went through Faust's wait_first


def test_a_suspended_flow_cuts_a_waiting_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def run() -> None:
        c = await consumer_here(monkeypatch)

        async def callback(message: Any) -> None:
            try:
                await asyncio.sleep(30)  # as on a full stream buffer
            except asyncio.CancelledError:
                seen.append(f"cut {message.offset}")
                raise

        asyncio.get_running_loop().call_later(0.05, c.suspend_flow.set)
        await asyncio.wait_for(drain(c, [7], callback), timeout=5)

    asyncio.run(run())
    assert seen == ["cut 7"]


def test_a_callback_error_propagates_and_nothing_is_left_unawaited(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def callback(message: Any) -> None:
        raise ValueError(message.offset)

    async def run() -> None:
        await drain(await consumer_here(monkeypatch), [3], callback)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="3"):
            asyncio.run(run())
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_started_relays_values_and_errors_to_the_coroutine() -> None:
    async def inner(gate: asyncio.Future[int]) -> int:
        try:
            return 2 * await gate
        except KeyError:
            return -1

    async def run(outcome: str) -> int:
        gate = asyncio.get_running_loop().create_future()
        coro = inner(gate)
        started = fast_drain.Started(coro, coro.send(None))
        if outcome == "value":
            gate.set_result(21)
        else:
            gate.set_exception(KeyError("x"))
        return await started

    assert asyncio.run(run("value")) == 42
    assert asyncio.run(run("error")) == -1
