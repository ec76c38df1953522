"""One HTTP exchange, safe to cancel: a cancelled caller never strands a pooled connection.

Why this exists: with httpx 0.28.1 + httpcore 1.0.9, cancelling the task that is inside
``AsyncClient.send`` at an unlucky moment (measured: just after the TCP connect, just after the response
headers, or while httpcore releases the connection after the body) leaves the pool connection ``ACTIVE``
for good. After ``max_connections`` such cancellations every later request fails
with ``PoolTimeout`` (encode/httpx#1461, encode/httpcore#1093). A FastAPI handler whose client
disconnects, a timeout middleware, ``asyncio.wait_for`` or an ``anyio`` cancel scope around an SDK call
all cancel that way.

The fix is to never let the cancellation reach httpx: the exchange runs in a task the SDK owns, and the
caller only *waits* for it. A cancelled caller stops waiting at once; the exchange carries on detached
until it completes or fails (bounded by the request's own httpx timeouts), and httpx then returns the
connection to the pool, or closes it, as it does for any request that was not cancelled.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import asyncio

# Imported lazily: asyncio (~15 ms), sniffio and anyio.lowlevel are not needed by `import billingos`.
# No asyncio loop can be running before something has imported asyncio, so finding it absent from
# sys.modules answers "which event loop?" without importing anything; functions that run only on a
# running asyncio loop import it locally (a sys.modules hit, ~0.1 µs).

__all__ = ["_Exchanger"]

_CLOSED_MESSAGE = "Cannot send a request, as the client has been closed."


def _load_sniffio() -> Callable[[], str] | None:
    """`sniffio.current_async_library` if sniffio is installed, else ``None``.

    trio depends on sniffio, so without sniffio the only possible event loop is asyncio (httpcore makes
    the same inference). Imported dynamically so type checking does not depend on it being installed.
    """
    try:
        module = importlib.import_module("sniffio")
    except ImportError:
        return None
    current_async_library: Callable[[], str] = module.current_async_library
    return current_async_library


_UNLOADED: Any = object()
_current_async_library: Callable[[], str] | None = _UNLOADED  # _load_sniffio() on first use


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when called from an asyncio task (plain or under anyio), else ``None``."""
    if "asyncio" not in sys.modules:  # nothing imported asyncio: no asyncio loop can be running
        return None
    global _current_async_library
    if _current_async_library is _UNLOADED:
        _current_async_library = _load_sniffio()
    if _current_async_library is not None:
        try:
            if _current_async_library() != "asyncio":
                return None
        except RuntimeError:  # sniffio.AsyncLibraryNotFoundError
            return None
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


if sys.version_info >= (3, 12):

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, httpx.Response]
    ) -> asyncio.Task[httpx.Response]:
        """A task that runs at once, in this call, until its first suspension (saves loop iterations)."""
        import asyncio

        return asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def _start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, httpx.Response]
    ) -> asyncio.Task[httpx.Response]:
        """A task scheduled on the loop (eager start needs Python 3.12)."""
        return loop.create_task(coro)


class _Exchanger:
    """Owns in-flight exchanges so a cancelled caller never strands a pooled connection.

    Use one per `httpx.AsyncClient`, call `send` for every request, and `aclose` before closing the
    client. Exceptions from httpx propagate unchanged; nothing is caught or retried here.
    """

    __slots__ = ("_client", "_closed", "_on_done", "_tasks")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        # Each running exchange task -> the future its caller waits on. Strong references: asyncio keeps
        # only weak ones to tasks, and a detached exchange has no other owner.
        self._tasks: dict[asyncio.Task[httpx.Response], asyncio.Future[None]] = {}
        self._closed = False
        self._on_done = self._finished  # bound once, not once per call

    @property
    def in_flight(self) -> int:
        """Exchanges still running on asyncio, awaited or detached (0 on other backends)."""
        return len(self._tasks)

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, read the whole body, release the connection, return the response (body read).

        On asyncio (plain, or anyio on asyncio) the exchange is ``client.send(request)`` (``stream=False``:
        httpx reads the body and closes the response on every path, including a failed body read) running
        in a task this object holds; the caller waits on a separate future that the task's completion
        resolves, so cancelling the caller never reaches the task. If the caller is cancelled
        (``task.cancel()``, ``asyncio.wait_for``, an anyio cancel scope or task group), the cancellation is
        raised in the caller at once and the exchange finishes or fails in the background, bounded by the
        request's own httpx timeouts (with ``timeout=None`` it is unbounded), so the connection always goes
        back to the pool or is closed; its result or error is discarded.

        On other backends (trio through anyio) no detached task can outlive the caller's scope, so the
        exchange runs inside ``anyio.CancelScope(shield=True)`` instead: a cancelled caller is not
        interrupted mid-exchange but waits for the exchange to end (bounded by the same httpx timeouts),
        and only then receives its cancellation; the response, already read and closed, is discarded.

        httpx exceptions (``ConnectError``, ``ReadTimeout``, ``PoolTimeout``, ...) propagate unchanged.
        Raises `RuntimeError` after `aclose`, or when `aclose` had to cancel this still-awaited exchange.
        """
        if self._closed:
            raise RuntimeError(_CLOSED_MESSAGE)
        loop = _running_asyncio_loop()
        if loop is None:
            return await self._send_shielded(request)
        exchange = self._client.send(request, follow_redirects=False)  # 3xx is an error
        task = _start_task(loop, exchange)
        if task.done():
            # Started eagerly (Python 3.12+) and finished without ever suspending, as over an
            # in-process transport: no await happened, so no cancellation could reach it.
            return task.result()
        import asyncio  # imported already: a loop is running

        waiter: asyncio.Future[None] = loop.create_future()
        self._tasks[task] = waiter
        task.add_done_callback(self._on_done)
        try:
            await waiter
        except asyncio.CancelledError:
            # Only the caller's own cancellation gets here: nothing else cancels `waiter`. The exchange
            # is left running (cancelling it is exactly the leak this module exists to prevent); if it
            # finished just before the cancellation arrived, mark its outcome as retrieved.
            if task.done() and not task.cancelled():
                task.exception()
            raise
        if task.cancelled():
            # Cancelled by aclose() under a caller that was not cancelled: a bare CancelledError would
            # make the caller vanish as if it had been, so report the closed client instead.
            raise RuntimeError(_CLOSED_MESSAGE)
        return task.result()

    async def _send_shielded(self, request: httpx.Request) -> httpx.Response:
        """Non-asyncio path: the exchange runs in the caller under a shielded cancel scope."""
        import anyio.lowlevel

        await anyio.lowlevel.checkpoint_if_cancelled()  # already cancelled: send nothing
        with anyio.CancelScope(shield=True):
            response = await self._client.send(request, follow_redirects=False)
        await anyio.lowlevel.checkpoint_if_cancelled()  # cancelled meanwhile: deliver it now
        return response

    def _finished(self, task: asyncio.Task[httpx.Response]) -> None:
        """Done-callback: drop the strong reference and wake the caller, or retrieve a detached failure.

        A detached exchange's failure has no one to report to; retrieving it here prevents asyncio's
        "Task exception was never retrieved" log. An awaited exchange's outcome is read by its caller.
        """
        waiter = self._tasks.pop(task)
        if not waiter.done():
            waiter.set_result(None)
        elif not task.cancelled():
            task.exception()

    async def drain(self) -> None:
        """Wait until no exchange is in flight, including ones started while waiting. Cancels nothing."""
        import asyncio

        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self, grace: float = 1.0) -> None:
        """Stop accepting requests; give in-flight exchanges `grace` seconds, then cancel the rest.

        Call it before closing the `httpx.AsyncClient`: afterwards no exchange task is left running
        against the closed pool. Cancelling an exchange here may strand its connection, which does not
        matter because the pool is about to be closed. A caller still awaiting a cancelled exchange gets
        `RuntimeError`. If `aclose` itself is cancelled, the remaining exchanges are still cancelled.
        """
        self._closed = True
        if not self._tasks:
            return
        import asyncio

        pending = set(self._tasks)
        try:
            _, pending = await asyncio.wait(pending, timeout=grace)
        finally:
            for task in pending:
                task.cancel()
        if pending:
            await asyncio.wait(pending)
