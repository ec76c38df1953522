"""Cancelling a call never strands a pooled connection, and never waits for the server: httpx2 alone.

The SDK used to run every exchange in a task of its own (``_exchange.py``), because with httpx 0.28.1 +
httpcore 1.0.9 a cancellation landing at an unlucky moment left the pool connection ``ACTIVE`` for good
(encode/httpx#1461, encode/httpcore#1093; /work/shared/notes/httpx-cancellation.md). httpx2 (httpcore2
2.6.0 and later) releases or closes the connection itself, so the SDK now awaits ``client.send`` directly
(``billingos._transport.HttpxBackend``). These tests keep that decision honest: the storm and the pinned
leak points of the old measurement, run against plain ``httpx2.AsyncClient.send`` and the SDK's
backends, must leave no connection held and the pool usable; and a cancelled call returns while the
server still holds its answer (no task, no shield: on trio too). The SDK-level proof, 1 000 random
cancellations through ``AsyncBillingOS`` on both backends, asyncio and trio, is
``tests/hardening/test_cancellation.py``.
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx2
import pytest

from billingos._aiohttp_backend import AiohttpBackend
from billingos._config import resolve
from billingos._transport import HttpxBackend, RequestHeaders
from tests._loopback import make_app, serve_asgi

Send = Callable[[httpx2.Request], Awaitable[httpx2.Response]]
StormHow = Literal["task.cancel", "move_on_after"]
PinnedHow = Literal["task.cancel", "cancel_scope", "task_group"]

STORM_SEED = 20261125
STORM_CALLS = 300
# Four concurrent lanes (= max_connections) of 75 calls, each call started when the lane's previous one
# ended. Stock httpx 0.28.1 leaked 3-4 of the 4 connections this way with task.cancel().
STORM_LANES = 4
STORM_MAX_CANCEL_DELAY = 0.060


# --------------------------------------------------------------------------------------------------------
# helpers and fixtures


def pool_of(client: httpx2.AsyncClient) -> Any:
    """The httpcore connection pool behind `client` (private API, fine for a regression test)."""
    return client._transport._pool  # type: ignore[attr-defined]


def stuck_connections(client: httpx2.AsyncClient) -> list[str]:
    """Connections that are neither idle nor closed, i.e. still held by some request."""
    return [repr(c) for c in pool_of(client).connections if not (c.is_idle() or c.is_closed())]


def new_client(base_url: str, **kwargs: Any) -> httpx2.AsyncClient:
    kwargs.setdefault("limits", httpx2.Limits(max_connections=4))
    kwargs.setdefault("timeout", httpx2.Timeout(5, pool=2))
    return httpx2.AsyncClient(base_url=base_url, **kwargs)


@dataclass
class StormResult:
    completed: int = 0
    cancelled: int = 0
    errors: list[BaseException] = field(default_factory=list)


async def cancel_storm(
    send: Send,
    client: httpx2.AsyncClient,
    how: StormHow,
    *,
    seed: int = STORM_SEED,
    calls: int = STORM_CALLS,
    lanes: int = STORM_LANES,
) -> StormResult:
    """`calls` GET /slow calls through `send`, each cancelled `how` at a seeded random point within 60 ms.

    The calls run in `lanes` concurrent lanes, each starting its next call when the previous one ends.
    """
    rng = random.Random(seed)
    result = StormResult()

    async def call() -> None:
        await send(client.build_request("GET", "/slow"))

    async def one(delay: float) -> None:
        try:
            if how == "task.cancel":
                task = asyncio.create_task(call())
                await asyncio.sleep(delay)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    result.cancelled += 1
                    return
            else:
                with anyio.move_on_after(delay) as scope:
                    await call()
                if scope.cancelled_caught:
                    result.cancelled += 1
                    return
            result.completed += 1
        except Exception as exc:
            result.errors.append(exc)

    delays = [rng.uniform(0, STORM_MAX_CANCEL_DELAY) for _ in range(calls)]

    async def lane(k: int) -> None:
        for delay in delays[k::lanes]:
            await one(delay)

    await asyncio.gather(*(lane(k) for k in range(lanes)))
    return result


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_asgi(make_app()) as url:
        yield url


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Records calls to the loop's exception handler (e.g. "Task exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield errors
        gc.collect()  # "never retrieved" is reported when the task is collected
        assert errors == []
    finally:
        loop.set_exception_handler(previous)


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with new_client(base_url) as c:
        yield c


# --------------------------------------------------------------------------------------------------------
# the regression: a storm of cancellations, then the pool must still work


@pytest.mark.parametrize("how", ["task.cancel", "move_on_after"])
async def test_cancel_storm_leaves_no_connection_active(how: StormHow, client: httpx2.AsyncClient) -> None:
    result = await cancel_storm(HttpxBackend(client, owns_client=False).send_request, client, how)

    assert result.errors == []
    assert result.completed + result.cancelled == STORM_CALLS
    assert result.cancelled > STORM_CALLS // 2  # the storm really cancelled callers mid-call
    assert stuck_connections(client) == []  # at once: nothing is left running in the background
    assert pool_of(client)._requests == []

    responses = await asyncio.gather(*(client.send(client.build_request("GET", "/slow")) for _ in range(40)))

    assert [r.status_code for r in responses] == [200] * 40
    assert all(r.json() == {"ok": True} for r in responses)
    assert stuck_connections(client) == []
    assert len(pool_of(client).connections) <= 4


# Cancelling the caller at these trace events stranded the connection with stock httpx 0.28.1 + httpcore
# 1.0.9, every time. The storm hits these at random; here each is hit on purpose.
LEAK_POINTS = [
    ("connection.connect_tcp.complete", "task.cancel"),
    ("connection.connect_tcp.complete", "cancel_scope"),
    ("connection.connect_tcp.complete", "task_group"),
    ("http11.receive_response_headers.complete", "task.cancel"),
    ("http11.response_closed.started", "task.cancel"),
]


@pytest.mark.parametrize(("event", "how"), LEAK_POINTS)
async def test_caller_cancelled_at_a_known_leak_point(
    event: str, how: PinnedHow, client: httpx2.AsyncClient
) -> None:
    """The SDK's send path (``HttpxBackend.send_request``, what every call goes through) strands nothing.

    Plain ``client.send`` of httpx2 2.16.2 still strands the connection at the first point with an anyio
    cancel scope or task group (``test_plain_httpx2_still_strands_a_connection_cancelled_after_connect``).
    """
    backend = HttpxBackend(client, owns_client=False)
    cancel_caller: Callable[[], object] | None = None

    async def trace(name: str, info: dict[str, Any]) -> None:
        nonlocal cancel_caller
        if name == event and cancel_caller is not None:
            cancel_caller()
            cancel_caller = None

    request = client.build_request("GET", "/fast", extensions={"trace": trace})

    async def call() -> None:
        await backend.send_request(request)

    if how == "task.cancel":
        task = asyncio.create_task(call())
        cancel_caller = task.cancel
        with pytest.raises(asyncio.CancelledError):
            await task
    elif how == "cancel_scope":
        with anyio.CancelScope() as scope:
            cancel_caller = scope.cancel
            await call()
        assert scope.cancelled_caught
    else:
        async with anyio.create_task_group() as tg:
            cancel_caller = tg.cancel_scope.cancel
            tg.start_soon(call)

    assert cancel_caller is None  # the trace event fired and cancelled the caller there
    assert stuck_connections(client) == []
    assert (await client.send(client.build_request("GET", "/fast"))).status_code == 200
    assert len(pool_of(client).connections) == 1
    assert stuck_connections(client) == []


async def test_plain_httpx2_still_strands_a_connection_cancelled_after_connect(
    client: httpx2.AsyncClient,
) -> None:
    """Why ``_reap_orphans`` exists: without it, httpx2 itself leaves the connection ``NEW`` for good.

    If this starts failing, httpcore2 has fixed the leak, and the reaper can go.
    """
    cancel_caller: Callable[[], object] | None = None

    async def trace(name: str, info: dict[str, Any]) -> None:
        nonlocal cancel_caller
        if name == "connection.connect_tcp.complete" and cancel_caller is not None:
            cancel_caller()
            cancel_caller = None

    with anyio.CancelScope() as scope:
        cancel_caller = scope.cancel
        await client.send(client.build_request("GET", "/fast", extensions={"trace": trace}))
    assert scope.cancelled_caught
    [stranded] = stuck_connections(client)
    assert "NEW, Request Count: 0" in stranded


# --------------------------------------------------------------------------------------------------------
# a cancelled call returns while the server still holds its answer: no task, no shield, any event loop


async def _cancel_while_held(
    send: Callable[[str], Awaitable[object]], url: str, hold: threading.Event
) -> None:
    """Start ``send(url/hold)``, cancel it once it reached the server, then check the server still holds it.

    If the call waited for the server's answer, the cancel scope's exit would block until ``hold`` is set,
    which only this function does, after the scope: the bounded ``fail_after`` would then fail the test.
    """
    with anyio.fail_after(10):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await send(url + "/hold")

                tg.start_soon(call)
                assert await anyio.to_thread.run_sync(arrived.wait, 5), "the request never reached the server"
                scope.cancel()
        assert scope.cancelled_caught
        assert not hold.is_set()  # the server is still holding the answer: the call did not wait for it
    hold.set()


arrived = threading.Event()


@pytest.fixture
def held() -> Iterator[tuple[str, threading.Event]]:
    hold = threading.Event()
    arrived.clear()
    app = make_app(on_request=lambda path: arrived.set() if path == "/hold" else None, hold=hold)
    with serve_asgi(app) as url:
        try:
            yield url, hold
        finally:
            hold.set()


def _sdk_backend(name: str, url: str) -> HttpxBackend | AiohttpBackend:
    settings = resolve("sk_test_" + "a" * 32, url, 30, 0, None, http_backend=name)
    if name == "aiohttp":
        return AiohttpBackend(settings, ssl_context=None)  # type: ignore[arg-type]  # plain http here
    return HttpxBackend(httpx2.AsyncClient(timeout=30), owns_client=True)


async def _exercise(name: str, url: str, hold: threading.Event) -> None:
    backend = _sdk_backend(name, url)
    headers = RequestHeaders({"accept": "application/json"})
    timeouts = httpx2.Timeout(30)
    try:
        await _cancel_while_held(lambda u: backend.send("GET", u, headers, None, timeouts), url, hold)
        reply = await backend.send("GET", url + "/fast", headers, None, timeouts)  # the pool still works
        assert reply.status_code == 200
        assert reply.content == b'{"ok":true}'
    finally:
        await backend.aclose()


@pytest.mark.parametrize("name", ["httpx2", "aiohttp"])
async def test_a_cancelled_call_does_not_wait_for_the_server_on_asyncio(
    name: str, held: tuple[str, threading.Event]
) -> None:
    await _exercise(name, *held)


def test_a_cancelled_call_does_not_wait_for_the_server_on_trio(held: tuple[str, threading.Event]) -> None:
    import trio  # noqa: F401  (a dev dependency: this test must run, not skip)

    anyio.run(_exercise, "httpx2", *held, backend="trio")
