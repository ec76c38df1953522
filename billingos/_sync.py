"""``BillingOS``: the synchronous facade. It runs the async core, it does not copy it.

Each ``BillingOS`` owns one event loop (:class:`_SharedLoop`), run by the calling thread itself when
it is free and by a standby thread of its own when nobody else can; the ``AsyncBillingOS`` and its
``httpx2.AsyncClient`` live on that loop for the facade's lifetime, so the pool is shared by every
calling thread. Blocking methods are descriptors generated from the
async methods (:class:`_Blocking`), so the signatures mypy and IDEs see are the async ones, minus
``await``.

The traps handled here (see the team's techniques notes, §1):

- started lazily, under a lock, so construction is cheap and fork-safe;
- after ``os.fork()`` the child rebuilds loop, thread and pool on its first call; the parent's
  objects are parked, never finalised, because finalising them in the child would hang;
- a caller-side ``BaseException`` (Ctrl-C) cancels the call on the loop, which ends it before the
  interrupt is raised;
- a call from code running on the loop itself (an event hook, a recorder callback) raises instead of
  waiting for itself;
- ``close()``/``with``/interpreter exit all go through one idempotent ``weakref.finalize``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import inspect
import os
import signal
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import CancelledError, Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

import attrs
import httpx2
from anyio.from_thread import BlockingPortal

from . import _tracing
from ._budget import RateBudget, budget_of
from ._cache import EntitlementCache
from ._client import AsyncBillingOS
from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Environment,
    HttpBackend,
    Settings,
    TimeoutTypes,
    check_http_client,
    evolve,
    resolve,
)
from ._customer_session import (
    AsyncCustomerCheckout,
    AsyncCustomerEntitlements,
    AsyncCustomerPortal,
    AsyncCustomerProducts,
    AsyncCustomerSession,
    AsyncCustomerUsage,
    CustomerArguments,
    customer_arguments,
)
from ._errors import BillingOSError, ValidationError
from ._loops import in_event_loop, keep_running
from ._models import Entitlement, Page
from ._resources import (
    AsyncCustomers,
    AsyncCustomersWithRawResponse,
    AsyncEntitlements,
    AsyncEntitlementsWithRawResponse,
    AsyncSessionTokens,
    AsyncSessionTokensWithRawResponse,
    AsyncSubscriptions,
    AsyncSubscriptionsWithRawResponse,
    AsyncUsage,
    AsyncUsageWithRawResponse,
)
from ._resources._base import AsyncPaginator, Unpack
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Self

    from ._recorder import RecorderOptions, SyncUsageRecorder
    from ._response import RateLimit

P = ParamSpec("P")
T = TypeVar("T")

# Loop state inherited by a forked child: kept referenced, never finalised there (its thread is gone).
_ORPHANED_BY_FORK: list[object] = []
_RUNNERS: weakref.WeakSet[_Runner] = weakref.WeakSet()
_THREAD_NAME = "billingos-loop"
_EXITING = False
"""True once the interpreter is exiting: set by an atexit hook that runs before the facades' finalizers."""
_EXIT_HOOK_REGISTERED = False


def _interpreter_exiting() -> None:
    global _EXITING
    _EXITING = True


def _watch_for_exit() -> None:
    """Register :func:`_interpreter_exiting`, once, after a ``weakref.finalize`` exists.

    ``weakref.finalize`` registers its own atexit hook (which closes facades still open at exit) when its
    first instance is created; atexit runs hooks last-in first-out, so this one then runs before it.
    """
    global _EXIT_HOOK_REGISTERED
    if not _EXIT_HOOK_REGISTERED:
        _EXIT_HOOK_REGISTERED = True
        atexit.register(_interpreter_exiting)


def _park_daemon_thread_at_exit() -> None:
    """At interpreter exit, never return to a daemon thread whose call the exit closed.

    Python abandons daemon threads when it exits; one blocked in a plain blocking socket read simply
    never returns. A daemon thread mid-call when the exit shutdown closes the facade would otherwise be
    woken with ``client_closed``, only to print a traceback on its way out ("Exception in thread ...").
    Non-daemon threads are joined before exit starts, so they never get here.
    """
    if _EXITING and threading.current_thread().daemon:
        threading.Event().wait()  # never set: the process exits around this thread


def _c_signal() -> Any:
    """The C module under ``signal``: its ``getsignal``/``signal`` skip the enum conversion of
    ``signal``'s wrappers (~5 us and ~8 us against ~0.1 us and ~0.4 us), paid on every blocking call."""
    try:
        return importlib.import_module("_signal")
    except ImportError:  # pragma: no cover - an interpreter without it
        return signal


_signal = _c_signal()
_MAIN_THREAD_ID = threading.main_thread().ident  # the only thread Python runs signal handlers in


class _CtrlC:
    """While the main thread runs the loop for a call, Ctrl-C cancels that call (as ``asyncio.run`` does).

    Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, in the middle of the
    loop or of the HTTP library's own cleanup, which can leave the call's cancellation absorbed there.
    So, only where Python's own handler is in place (an application's handler is left alone), the first
    Ctrl-C cancels the call's task instead, through the path every cancelled async call takes: the call
    ends, closes what it had open, and the caller then gets ``KeyboardInterrupt``. A second Ctrl-C
    raises at once.

    A Python signal handler runs only when the main thread runs Python code: a signal landing just
    before the loop enters its selector would wait for the next event (a held response: seconds). So
    the signal also wakes the selector, through ``signal.set_wakeup_fd`` (as asyncio's own signal
    handlers do), unless the application already uses the wakeup fd for itself.
    """

    __slots__ = ("_installed", "_loop", "_task", "_wakeup", "pressed")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], wakeup: int) -> None:
        self._loop = loop
        self._task = task
        self._wakeup = wakeup
        self._installed = 0  # 1: the handler; 2: the handler and the wakeup fd
        self.pressed = False

    def __enter__(self) -> _CtrlC:
        if (
            threading.get_ident() == _MAIN_THREAD_ID
            and _signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            with contextlib.suppress(ValueError):  # not the main interpreter
                _signal.signal(signal.SIGINT, self._on_sigint)
                self._installed = 1
                previous = signal.set_wakeup_fd(self._wakeup, warn_on_full_buffer=False)
                if previous == -1:
                    self._installed = 2
                else:  # the application's own: left in place
                    signal.set_wakeup_fd(previous)
        return self

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.pressed or self._task.done():
            raise KeyboardInterrupt
        self.pressed = True
        self._task.cancel()
        # A task cancelled before its first step never runs its coroutine, which would have stopped the
        # loop as it ended: stop it here too (the driver runs the loop again while the task lives).
        self._loop.stop()

    def __exit__(self, *exc_info: object) -> None:
        if self._installed == 2:
            signal.set_wakeup_fd(-1)
        if self._installed and _signal.getsignal(signal.SIGINT) == self._on_sigint:
            _signal.signal(signal.SIGINT, signal.default_int_handler)


async def _stopping(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> T:
    """``await coro``, then stop ``loop`` (which the calling thread runs for this one call)."""
    try:
        return await coro
    finally:
        loop.stop()


class _SharedLoop:
    """The facade's event loop, run by whichever thread needs it: usually the calling thread itself.

    A blocking call used to hop to a loop thread and back: two thread wake-ups, each tens of
    microseconds when the other CPU sleeps, which made a blocking call cost 2-3x the async one. Here a
    calling thread that finds the loop free runs it itself (``run_until_complete`` of its own call): no
    hop at all. When another thread is running the loop, the call is handed to that thread's loop
    (``run_coroutine_threadsafe``) and the caller waits; when that thread's own call ends, it hands the
    loop over to a waiting caller. A standby thread of our own (``thread``) runs the loop whenever
    somebody needs it run and cannot run it: a caller inside another running event loop (Jupyter, async
    code), work that must go on between calls (a usage recorder's flushes: :meth:`hold`), or the
    :attr:`portal`. The pool, the core and every task live on this one loop, whoever runs it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # Where a signal wakes the loop's selector while the main thread runs it (see _CtrlC).
        self._signal_in, self._signal_out = socket.socketpair()
        for end in (self._signal_in, self._signal_out):
            end.setblocking(False)
        self.loop.add_reader(self._signal_in.fileno(), self._drain_signals)
        self._driver = threading.Lock()  # held by the thread running the loop
        self._cond = threading.Condition()
        self._needed = 0  # what the standby thread runs the loop for: callers that cannot, plus holds
        self._waiting = 0  # callers that can run the loop themselves, waiting for it to be free
        self._stopping = False
        self._changed: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._standby, name=_THREAD_NAME, daemon=True)
        self.thread.start()
        keep_running(self.loop, self.hold)  # background work on the loop (a cache's listener) holds it
        # Opened by the standby thread: anyio's portal refuses calls from the thread that opened it.
        with self.hold():
            opened = asyncio.run_coroutine_threadsafe(self._open_portal(), self.loop)
            self._anyio_portal: BlockingPortal = opened.result()

    # -- running a coroutine ----------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result, running the loop here when it is free."""
        if not in_event_loop() and self._driver.acquire(blocking=False):
            return self._drive(coro)
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def _drain_signals(self) -> None:
        with contextlib.suppress(OSError):
            while self._signal_in.recv(512):
                pass

    def _drive(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run the loop in this thread until ``coro`` is done (the driver lock is held).

        Not ``run_until_complete``: the call's own coroutine stops the loop as it ends
        (:func:`_stopping`), in the loop iteration that ends it, where ``run_until_complete`` takes one
        more iteration (a selector poll) to run its done-callback. ``run_forever`` is repeated until the
        task is done, so a stop meant for an earlier run (or a Ctrl-C's, see ``_CtrlC``) costs at most an
        extra iteration.
        """
        loop = self.loop
        try:
            call = _stopping(coro, loop)
            try:
                task = loop.create_task(call)
            except BaseException:
                call.close()  # never scheduled (the loop closed meanwhile): else "never awaited" warns
                raise
            with _CtrlC(loop, task, self._signal_out.fileno()) as ctrl_c:
                try:
                    while not task.done():
                        loop.run_forever()
                except BaseException:
                    # Interrupted out of the loop itself (a second Ctrl-C, an interrupt from a handler
                    # of the application's): cancel the call and let it end, then raise the interrupt.
                    self._cancel_and_finish(task)
                    raise
            if ctrl_c.pressed:  # Ctrl-C cancelled the call, which has now ended and closed what it had open
                if not task.cancelled():
                    task.exception()  # retrieved: what it ended with is superseded by the interrupt
                raise KeyboardInterrupt
            if task.cancelled():
                # Cancelled on the loop (not by this caller): as a handed-over call reports it.
                raise CancelledError
            return task.result()
        finally:
            self._driver.release()
            self._hand_over()

    def _cancel_and_finish(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` and run the loop until it has ended (it closes what it had open).

        Cancelled again every 100 ms while it has not ended: an interrupt that landed inside the
        libraries below (KeyboardInterrupt is raised wherever the main thread happens to be) can leave a
        cancellation absorbed by their cleanup; the next one goes through.
        """
        for _ in range(50):  # at most ~5 s: then it is left to end when the loop next runs
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved (the interrupt itself, say): no "never retrieved" log
                return
            task.cancel()
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(asyncio.wait({task}, timeout=0.1))

    def _wait(self, future: Future[T]) -> T:
        """Wait for a handed-over call, running the loop whenever nobody else does."""
        future.add_done_callback(self._wake_waiters)
        can_drive = not in_event_loop()  # a thread running an event loop cannot run another
        # A caller that can run the loop does not ask the standby thread to run it: it waits for the
        # loop to be free and runs it itself. (Counted among the standby's needs, a tight loop of calls
        # kept the standby running, each call handed over to it: two thread wake-ups a call.)
        if can_drive:
            with self._cond:
                self._waiting += 1
        else:
            self._need(+1)
        try:
            while not future.done():
                if can_drive and self._driver.acquire(blocking=False):
                    try:
                        # Its outcome is read below; an interrupt goes up (the call is cancelled there).
                        with contextlib.suppress(Exception, asyncio.CancelledError):
                            self.loop.run_until_complete(asyncio.wrap_future(future, loop=self.loop))
                    finally:
                        self._driver.release()
                        self._hand_over()
                    break
                with self._cond:
                    # Checked under the lock _hand_over notifies under: a loop freed after the failed
                    # acquire above is seen here, or its notification arrives while this waits.
                    if not future.done() and (not can_drive or self._driver.locked()):
                        self._cond.wait(0.05 if can_drive else None)
        except BaseException:
            future.cancel()
            raise
        finally:
            if can_drive:
                with self._cond:
                    self._waiting -= 1
            else:
                self._need(-1)
        return future.result()

    def _wake_waiters(self, _future: object = None) -> None:
        with self._cond:
            self._cond.notify_all()

    def _hand_over(self) -> None:
        """After running the loop: wake whoever may now need to run it (waiting callers, the standby).

        Read without the lock first: a caller that starts waiting after this read finds the loop free
        (the driver lock is already released) and runs it itself, so no wake-up can be lost.
        """
        if self._needed or self._waiting:
            with self._cond:
                self._cond.notify_all()

    # -- the standby thread -----------------------------------------------------------------------

    def _need(self, delta: int) -> None:
        with self._cond:
            self._needed += delta
            self._cond.notify_all()
        changed = self._changed
        if changed is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(changed.set)

    def _standby(self) -> None:
        while True:
            with self._cond:
                while not (self._needed or self._stopping):
                    self._cond.wait()
                if self._stopping and not self._needed:
                    break
            with self._driver:
                self.loop.run_until_complete(self._until_not_needed())
            self._hand_over()
        with self._driver:  # stopping: the last run of the loop, in this thread (it runs no other loop)
            self.loop.run_until_complete(self._cancel_the_rest())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.remove_reader(self._signal_in.fileno())
            self.loop.close()
        self._signal_in.close()
        self._signal_out.close()

    async def _until_not_needed(self) -> None:
        changed = self._changed = asyncio.Event()
        try:
            while True:
                with self._cond:
                    if not self._needed or self._stopping:
                        return
                await changed.wait()
                changed.clear()
        finally:
            self._changed = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the loop running (on the standby thread if nobody else runs it) inside the block."""
        self._need(+1)
        try:
            yield
        finally:
            self._need(-1)

    # -- anyio's portal, for code that wants one --------------------------------------------------

    async def _open_portal(self) -> BlockingPortal:
        ready: asyncio.Future[BlockingPortal] = self.loop.create_future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        self._portal_task = self.loop.create_task(serve())
        return await ready

    def call(self, func: Callable[[], Awaitable[T] | T]) -> T:
        """``func()`` on the loop (awaited if it returns an awaitable), from a thread."""

        async def on_loop() -> T:
            result = func()
            if inspect.isawaitable(result):
                return await cast("Awaitable[T]", result)
            return result

        return self.run(on_loop())

    def start_task(self, func: Callable[..., Awaitable[Any]], *args: Any) -> tuple[Future[Any], Any]:
        """anyio's ``BlockingPortal.start_task``, with the loop kept running until the task ends."""
        self._need(+1)
        try:
            future, value = self._anyio_portal.start_task(func, *args)
        except BaseException:
            self._need(-1)
            raise
        future.add_done_callback(lambda _f: self._need(-1))
        return future, value

    @property
    def portal(self) -> _SharedLoop:
        """What used to be an anyio portal: :meth:`call` and :meth:`start_task` (this object)."""
        return self

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the portal, then let the standby thread cancel what is left and close the loop."""
        self.run(self._anyio_portal.stop())
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.thread.join()  # on its way out, the standby thread closes the loop

    async def _cancel_the_rest(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


@attrs.frozen(eq=False)
class _LoopState:
    pid: int
    loop: _SharedLoop
    core: AsyncBillingOS
    finalizer: weakref.finalize[Any, Any]


def _shutdown(pid: int, loop: _SharedLoop, core: AsyncBillingOS) -> None:
    """Close the core on its loop, then stop the loop thread. Never references the facade."""
    if os.getpid() != pid:
        return  # a forked child must not touch its parent's loop thread (it does not exist here)
    if threading.current_thread() is loop.thread or asyncio._get_running_loop() is loop.loop:
        # Finalised on the loop thread itself (cyclic GC there, close() from an event hook): the loop
        # cannot wait for itself, so a short-lived thread shuts it down once this callback returns.
        threading.Thread(target=_shutdown, args=(pid, loop, core), name="billingos-shutdown").start()
        return
    try:
        loop.run(core.aclose())
    finally:
        loop.stop()


def _closed_error() -> BillingOSError:
    return BillingOSError("This BillingOS client is closed; create a new one.", code="client_closed")


def _coroutine(awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """``awaitable`` as a coroutine a task can run (an API method's call already is one)."""
    if isinstance(awaitable, Coroutine):
        return awaitable

    async def wrapped() -> T:
        return await awaitable

    return wrapped()


class _Runner:
    """Owns the loop thread and the core; rebuilds both in a forked child."""

    def __init__(self, factory: Callable[[], AsyncBillingOS]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._state: _LoopState | None = None
        self._closed = False
        _RUNNERS.add(self)

    def _ensure(self) -> _LoopState:
        state = self._state
        if state is not None and state.pid == os.getpid() and not self._closed:
            return state
        if self._closed:
            _park_daemon_thread_at_exit()  # here, not under the lock: a parked thread keeps what it holds
            raise _closed_error()
        with self._lock:
            if self._closed:
                raise _closed_error()
            state = self._state
            if state is not None and state.pid == os.getpid():
                return state
            loop = _SharedLoop()
            try:
                core = loop.run(self._build())
                # The pool's setup (TLS context, imports) here, in the calling thread, which blocks
                # anyway: not in a worker thread of the loop, which is what an async first call does.
                core._requester.transport.build()
            except BaseException:
                loop.stop()
                raise
            pid = os.getpid()
            finalizer = weakref.finalize(self, _shutdown, pid, loop, core)
            _watch_for_exit()
            self._state = state = _LoopState(pid, loop, core, finalizer)
            return state

    async def _build(self) -> AsyncBillingOS:
        return self._factory()  # on the loop thread: the pool belongs to this loop

    def run(self, call: Callable[[AsyncBillingOS], Awaitable[T]]) -> T:
        """Run ``call(core)`` on the loop thread and wait for it; a caller-side interrupt cancels it."""
        state = self._ensure()
        shared = state.loop
        if threading.current_thread() is shared.thread or asyncio._get_running_loop() is shared.loop:
            raise RuntimeError(
                "BillingOS (the blocking client) was called from its own event loop (a callback or hook "
                "running on it), where it would wait for itself forever; use the AsyncBillingOS it wraps "
                "there instead."
            )
        coro = _coroutine(call(state.core))
        try:
            return shared.run(coro)
        except RuntimeError:
            coro.close()  # never scheduled (the loop closed meanwhile): else "never awaited" warns
            if self._closed:  # closed by another thread since _ensure()
                _park_daemon_thread_at_exit()
                raise _closed_error() from None
            raise
        except CancelledError:
            if self._closed:  # the loop shut down under this call
                _park_daemon_thread_at_exit()
                raise _closed_error() from None
            raise
        except BillingOSError as exc:
            if exc.code == "client_closed":  # closed while this call was in flight
                _park_daemon_thread_at_exit()
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            state = self._state
        if state is not None and state.pid == os.getpid():
            state.finalizer()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the parent may have held it while forking
        state, self._state = self._state, None
        if state is not None:  # the parent's loop thread does not exist here: forget it, quietly
            state.finalizer.detach()
            _ORPHANED_BY_FORK.append(state)


def _reset_runners_after_fork() -> None:
    for runner in list(_RUNNERS):
        runner._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_runners_after_fork)


def _without_self(method: Callable[..., Any], returns: str | None = None) -> inspect.Signature:
    """The async method's signature as the blocking twin has it: no ``self``; ``list`` returns a Paginator."""
    signature = inspect.signature(method)
    return_annotation = signature.return_annotation
    if returns is not None and isinstance(return_annotation, str):
        return_annotation = return_annotation.replace("AsyncPaginator", returns)
    return signature.replace(
        parameters=list(signature.parameters.values())[1:], return_annotation=return_annotation
    )


class _Blocking(Generic[P, T]):
    """A blocking twin of an async resource method, with the same signature (minus ``await``)."""

    def __init__(
        self, method: Callable[Concatenate[Any, P], Awaitable[T]], resource: str | None = None
    ) -> None:
        self._method = method.__name__
        self._resource = resource
        self.__doc__ = method.__doc__
        self.__signature__ = _without_self(method)

    @overload
    def __get__(self, obj: None, owner: type) -> _Blocking[P, T]: ...
    @overload
    def __get__(self, obj: _SyncBase, owner: type) -> Callable[P, T]: ...
    def __get__(self, obj: _SyncBase | None, owner: type) -> _Blocking[P, T] | Callable[P, T]:
        if obj is None:
            return self
        facade, resource, method = obj._facade, self._resource or obj._resource, self._method
        target = obj._target
        local = self._answer_locally

        def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
            answer = local(facade, args, kwargs)
            if answer is not None:
                return answer

            def call(core: AsyncBillingOS) -> Awaitable[T]:
                bound: Callable[P, Awaitable[T]] = getattr(target(core, resource), method)
                return bound(*args, **kwargs)

            return facade._runner.run(call)

        blocking.__doc__ = self.__doc__
        blocking.__name__ = method
        blocking.__signature__ = self.__signature__  # type: ignore[attr-defined]
        return blocking

    def _answer_locally(self, facade: BillingOS, args: tuple[Any, ...], kwargs: dict[str, Any]) -> T | None:
        """An answer found in the calling thread, without the loop thread; ``None`` to go there."""
        return None


class Paginator(Generic[T]):
    """The blocking counterpart of ``AsyncPaginator``: a plain iterator over every item, page by page.

    Example::

        for customer in billing.customers.list(limit=100):
            print(customer.email)
        print(billing.customers.list().page(1).total)
    """

    __slots__ = ("_facade", "_pager")

    def __init__(self, facade: BillingOS, pager: AsyncPaginator[T]) -> None:
        self._facade = facade
        self._pager = pager

    def page(self, number: int = 1) -> Page[T]:
        """Fetch one page (1-based) with its totals."""
        return self._facade._runner.run(lambda _core: self._pager.page(number))

    def pages(self) -> Iterator[Page[T]]:
        """Every page in order, starting at page 1."""
        number: int | None = 1
        while number is not None:
            page = self.page(number)
            yield page
            number = page.next_page

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.data


class _BlockingList(Generic[P, T]):
    """The blocking twin of a ``list`` method: same arguments, returns a :class:`Paginator`."""

    def __init__(self, method: Callable[Concatenate[Any, P], AsyncPaginator[T]]) -> None:
        self._method = method.__name__
        self.__doc__ = method.__doc__
        self.__signature__ = _without_self(method, returns="Paginator")

    @overload
    def __get__(self, obj: None, owner: type) -> _BlockingList[P, T]: ...
    @overload
    def __get__(self, obj: _SyncBase, owner: type) -> Callable[P, Paginator[T]]: ...
    def __get__(self, obj: _SyncBase | None, owner: type) -> _BlockingList[P, T] | Callable[P, Paginator[T]]:
        if obj is None:
            return self
        facade, resource, method = obj._facade, obj._resource, self._method

        def blocking(*args: P.args, **kwargs: P.kwargs) -> Paginator[T]:
            core = facade._view(facade._runner._ensure().core)
            return Paginator(facade, getattr(getattr(core, resource), method)(*args, **kwargs))

        blocking.__doc__ = self.__doc__
        blocking.__name__ = method
        blocking.__signature__ = self.__signature__  # type: ignore[attr-defined]
        return blocking


class _RecorderHost:
    """What a blocking usage recorder needs of its facade (``_recorder.RecorderHost``), and nothing more."""

    __slots__ = ("_facade",)

    def __init__(self, facade: BillingOS) -> None:
        self._facade = facade

    def start(self) -> tuple[_SharedLoop, AsyncBillingOS]:
        state = self._facade._runner._ensure()
        return state.loop, self._facade._view(state.core)

    def run(self, call: Callable[[], Awaitable[T]]) -> T:
        return self._facade._runner.run(lambda _core: call())


class _SyncBase:
    __slots__ = ("_facade",)
    _resource: str = ""

    def __init__(self, facade: BillingOS) -> None:
        self._facade = facade

    def _target(self, core: AsyncBillingOS, resource: str) -> Any:
        """The async object whose method a blocking call runs (on the loop): ``core.<resource>``."""
        return getattr(self._facade._view(core), resource)


class SessionTokens(_SyncBase):
    """``billing.session_tokens`` (blocking)."""

    __slots__ = ()
    _resource = "session_tokens"

    @property
    def with_raw_response(self) -> SessionTokensWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` around its result.

        Example::

            raw = billing.session_tokens.with_raw_response.create("user_42")
            print(raw.status_code, raw.rate_limit, raw.parse())
        """
        return SessionTokensWithRawResponse(self._facade)

    create = _Blocking(AsyncSessionTokens.create)
    revoke = _Blocking(AsyncSessionTokens.revoke)


class _BlockingCheck(_Blocking[P, T]):
    """The blocking ``entitlements.check``: a fresh cache hit is answered in the calling thread.

    With an :class:`EntitlementCache` on the facade, ``cache.get_fresh`` (a lock and a dict lookup) runs
    before anything else; only a miss, or ``cache=False``, goes to the loop thread.
    """

    def _answer_locally(self, facade: BillingOS, args: tuple[Any, ...], kwargs: dict[str, Any]) -> T | None:
        store = facade._entitlement_cache
        if store is None or facade._runner._closed:
            return None
        hit = _fresh_hit(store, args, kwargs)
        if hit is not None:  # answered in this thread: the async method (and its span) never runs
            _tracing.local_cache_answer("entitlements.check")
        return cast("T | None", hit)


def _fresh_hit(store: EntitlementCache, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entitlement | None:
    """``store.get_fresh`` for ``check(customer_id, feature_key, *, cache=True, ...)``'s arguments."""
    if kwargs.get("cache", True) is not True:
        return None  # cache=False (or a bad value, which the async method reports)
    customer_id = args[0] if args else kwargs.get("customer_id")
    feature_key = args[1] if len(args) > 1 else kwargs.get("feature_key")
    if not isinstance(customer_id, str) or not isinstance(feature_key, str):
        return None  # let the async method report it
    return store.get_fresh(customer_id, feature_key)


class Entitlements(_SyncBase):
    """``billing.entitlements`` (blocking). With an entitlement cache, a fresh hit costs no thread hop.

    Example::

        with BillingOS(entitlement_cache=EntitlementCache(ttl=30)) as billing:
            ent = billing.entitlements.check("user_42", "api_calls")   # from memory when fresh
    """

    __slots__ = ()
    _resource = "entitlements"

    @property
    def with_raw_response(self) -> EntitlementsWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` around its result.

        Example::

            raw = billing.entitlements.with_raw_response.check("user_42", "api_calls")
            print(raw.status_code, raw.rate_limit, raw.parse())
        """
        return EntitlementsWithRawResponse(self._facade)

    check = _BlockingCheck(AsyncEntitlements.check)
    prefetch = _Blocking(AsyncEntitlements.prefetch)


class Usage(_SyncBase):
    """``billing.usage`` (blocking)."""

    __slots__ = ()
    _resource = "usage"

    @property
    def with_raw_response(self) -> UsageWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` around its result.

        Example::

            raw = billing.usage.with_raw_response.track("user_42", "api_calls")
            print(raw.status_code, raw.rate_limit, raw.parse())
        """
        return UsageWithRawResponse(self._facade)

    track = _Blocking(AsyncUsage.track)
    metrics = _Blocking(AsyncUsage.metrics)


class Customers(_SyncBase):
    """``billing.customers`` (blocking); ``list`` returns a plain iterator."""

    __slots__ = ()
    _resource = "customers"

    @property
    def with_raw_response(self) -> CustomersWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` around its result.

        Example::

            raw = billing.customers.with_raw_response.get("cus_1")
            print(raw.status_code, raw.rate_limit, raw.parse())
        """
        return CustomersWithRawResponse(self._facade)

    create = _Blocking(AsyncCustomers.create)
    get = _Blocking(AsyncCustomers.get)
    get_by_external_id = _Blocking(AsyncCustomers.get_by_external_id)
    update = _Blocking(AsyncCustomers.update)
    delete = _Blocking(AsyncCustomers.delete)
    list = _BlockingList(AsyncCustomers.list)


class Subscriptions(_SyncBase):
    """``billing.subscriptions`` (blocking); ``list`` returns a plain iterator."""

    __slots__ = ()
    _resource = "subscriptions"

    @property
    def with_raw_response(self) -> SubscriptionsWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` around its result.

        Example::

            raw = billing.subscriptions.with_raw_response.get("sub_1")
            print(raw.status_code, raw.rate_limit, raw.parse())
        """
        return SubscriptionsWithRawResponse(self._facade)

    create = _Blocking(AsyncSubscriptions.create)
    get = _Blocking(AsyncSubscriptions.get)
    list = _BlockingList(AsyncSubscriptions.list)
    update = _Blocking(AsyncSubscriptions.update)
    cancel = _Blocking(AsyncSubscriptions.cancel)
    reactivate = _Blocking(AsyncSubscriptions.reactivate)


# -- raw responses (``with_raw_response``) --------------------------------------------------------


class _RawPart(_SyncBase):
    """A blocking ``with_raw_response`` proxy: its calls run the async proxy's, on the loop."""

    __slots__ = ()

    def _target(self, core: AsyncBillingOS, resource: str) -> Any:
        return getattr(self._facade._view(core), resource).with_raw_response


class SessionTokensWithRawResponse(_RawPart):
    """``billing.session_tokens.with_raw_response`` (blocking): each method returns a :class:`RawResponse`."""

    __slots__ = ()
    _resource = "session_tokens"
    create = _Blocking(AsyncSessionTokensWithRawResponse.create)
    revoke = _Blocking(AsyncSessionTokensWithRawResponse.revoke)


class EntitlementsWithRawResponse(_RawPart):
    """``billing.entitlements.with_raw_response`` (blocking); ``check`` always asks BillingOS."""

    __slots__ = ()
    _resource = "entitlements"
    check = _Blocking(AsyncEntitlementsWithRawResponse.check)


class UsageWithRawResponse(_RawPart):
    """``billing.usage.with_raw_response`` (blocking): each method returns a :class:`RawResponse`."""

    __slots__ = ()
    _resource = "usage"
    track = _Blocking(AsyncUsageWithRawResponse.track)
    metrics = _Blocking(AsyncUsageWithRawResponse.metrics)


class CustomersWithRawResponse(_RawPart):
    """``billing.customers.with_raw_response`` (blocking); ``list`` returns its first page's response."""

    __slots__ = ()
    _resource = "customers"
    create = _Blocking(AsyncCustomersWithRawResponse.create)
    get = _Blocking(AsyncCustomersWithRawResponse.get)
    get_by_external_id = _Blocking(AsyncCustomersWithRawResponse.get_by_external_id)
    update = _Blocking(AsyncCustomersWithRawResponse.update)
    delete = _Blocking(AsyncCustomersWithRawResponse.delete)
    list = _Blocking(AsyncCustomersWithRawResponse.list)


class SubscriptionsWithRawResponse(_RawPart):
    """``billing.subscriptions.with_raw_response`` (blocking); ``list`` returns its first page's response."""

    __slots__ = ()
    _resource = "subscriptions"
    create = _Blocking(AsyncSubscriptionsWithRawResponse.create)
    get = _Blocking(AsyncSubscriptionsWithRawResponse.get)
    list = _Blocking(AsyncSubscriptionsWithRawResponse.list)
    update = _Blocking(AsyncSubscriptionsWithRawResponse.update)
    cancel = _Blocking(AsyncSubscriptionsWithRawResponse.cancel)
    reactivate = _Blocking(AsyncSubscriptionsWithRawResponse.reactivate)


class BillingOSWithRawResponse(_RawPart):
    """``billing.with_raw_response`` (blocking): the resources' proxies and the shortcuts.

    Example::

        raw = billing.with_raw_response.check_entitlement("user_42", "api_calls")
        print(raw.status_code, raw.rate_limit, raw.parse().has_access)
    """

    __slots__ = ("customers", "entitlements", "session_tokens", "subscriptions", "usage")

    create_session_token = _Blocking(AsyncSessionTokensWithRawResponse.create, "session_tokens")
    """``session_tokens.with_raw_response.create``."""
    check_entitlement = _Blocking(AsyncEntitlementsWithRawResponse.check, "entitlements")
    """``entitlements.with_raw_response.check`` (always asks BillingOS: no entitlement cache)."""
    track_usage = _Blocking(AsyncUsageWithRawResponse.track, "usage")
    """``usage.with_raw_response.track``."""

    def __init__(self, facade: BillingOS) -> None:
        super().__init__(facade)
        self.session_tokens = SessionTokensWithRawResponse(facade)
        self.entitlements = EntitlementsWithRawResponse(facade)
        self.usage = UsageWithRawResponse(facade)
        self.customers = CustomersWithRawResponse(facade)
        self.subscriptions = SubscriptionsWithRawResponse(facade)


# -- acting as a customer (``billing.as_customer``) -----------------------------------------------


class _CustomerPart(_SyncBase):
    """A part of a blocking :class:`CustomerSession`: its calls run on the session's async handle."""

    __slots__ = ("_session",)

    def __init__(self, session: CustomerSession) -> None:
        super().__init__(session._facade)
        self._session = session

    def _target(self, core: AsyncBillingOS, resource: str) -> Any:
        return getattr(self._session._handle(core), resource)


class CustomerProducts(_CustomerPart):
    """``customer.products`` (blocking)."""

    __slots__ = ()
    _resource = "products"
    list = _Blocking(AsyncCustomerProducts.list)


class CustomerCheckout(_CustomerPart):
    """``customer.checkout`` (blocking)."""

    __slots__ = ()
    _resource = "checkout"
    create = _Blocking(AsyncCustomerCheckout.create)
    status = _Blocking(AsyncCustomerCheckout.status)
    confirm_free = _Blocking(AsyncCustomerCheckout.confirm_free)


class CustomerPortal(_CustomerPart):
    """``customer.portal`` (blocking)."""

    __slots__ = ()
    _resource = "portal"
    create = _Blocking(AsyncCustomerPortal.create)


class CustomerEntitlements(_CustomerPart):
    """``customer.entitlements`` (blocking)."""

    __slots__ = ()
    _resource = "entitlements"
    check = _Blocking(AsyncCustomerEntitlements.check)
    list = _Blocking(AsyncCustomerEntitlements.list)


class CustomerUsage(_CustomerPart):
    """``customer.usage`` (blocking)."""

    __slots__ = ()
    _resource = "usage"
    track = _Blocking(AsyncCustomerUsage.track)
    metrics = _Blocking(AsyncCustomerUsage.metrics)


class CustomerSession(_SyncBase):
    """The blocking ``billing.as_customer(...)``: the calls of :class:`AsyncCustomerSession`, without
    ``await``, with the same token cache, re-mints and errors (it runs that handle on the facade's loop).

    Example::

        with billing.as_customer("user_42") as customer:
            catalog = customer.products.list()
            portal = customer.portal.create()
    """

    __slots__ = (
        "_args",
        "_closed",
        "_handles",
        "_lock",
        "checkout",
        "entitlements",
        "portal",
        "products",
        "usage",
    )

    state = _Blocking(AsyncCustomerSession.state)

    def __init__(self, facade: BillingOS, args: CustomerArguments) -> None:
        super().__init__(facade)
        self._args = args
        self._closed = False
        self._lock = threading.Lock()  # calls build their coroutine in the calling thread
        # One async handle per core (a forked child builds a new core, and a new handle with it).
        self._handles: weakref.WeakKeyDictionary[AsyncBillingOS, AsyncCustomerSession] = (
            weakref.WeakKeyDictionary()
        )
        self.products = CustomerProducts(self)
        self.checkout = CustomerCheckout(self)
        self.portal = CustomerPortal(self)
        self.entitlements = CustomerEntitlements(self)
        self.usage = CustomerUsage(self)

    def _target(self, core: AsyncBillingOS, resource: str) -> Any:
        return self._handle(core)

    def _handle(self, core: AsyncBillingOS) -> AsyncCustomerSession:
        """The async handle this session runs on ``core`` (made on first use; any calling thread)."""
        if self._closed:
            raise BillingOSError(
                "This customer session is closed; call billing.as_customer(...) again.", code="session_closed"
            )
        with self._lock:
            handle = self._handles.get(core)
            if handle is None:
                handle = self._handles[core] = self._facade._view(core)._customer_session(self._args)
        return handle

    @property
    def external_user_id(self) -> str:
        """Your own id of this customer."""
        return self._args.external_user_id

    @property
    def external_organization_id(self) -> str | None:
        """Your id of the customer's organization, if one was given."""
        return self._args.external_organization_id

    @property
    def is_closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Close the session; with ``revoke_on_close=True``, revoke the token it minted. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles.values())
        if not handles or self._facade._runner._closed:
            return

        async def close_all(_core: AsyncBillingOS) -> None:
            for handle in handles:
                await handle.aclose()

        self._facade._runner.run(close_all)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        args = self._args
        source = "given" if args.session_token is not None else "cached"
        closed = " closed" if self._closed else ""
        return (
            f"<CustomerSession external_user_id={args.external_user_id!r} "
            f"external_organization_id={args.external_organization_id!r} token={source}{closed}>"
        )


class BillingOS(_SyncBase):
    """The blocking BillingOS client, for code that is not async. Same arguments, resources,
    models and errors as :class:`AsyncBillingOS`.

    It runs the async client on one background event-loop thread, so one instance can be shared by
    any number of threads (a WSGI server's workers, say) and keeps one connection pool. It also works
    when called from inside a running event loop (Jupyter) and in a child after ``os.fork()``.
    ``http_backend="aiohttp"`` sends through aiohttp on that loop, as for :class:`AsyncBillingOS`.

    Example::

        with BillingOS() as billing:                       # key from BILLINGOS_SECRET_KEY
            if billing.check_entitlement("user_42", "exports").has_access:
                billing.track_usage("user_42", "exports")
    """

    __slots__ = (
        "__weakref__",
        "_budget",
        "_entitlement_cache",
        "_options",
        "_runner",
        "_settings",
        "_views",
        "customers",
        "entitlements",
        "session_tokens",
        "subscriptions",
        "usage",
    )

    create_session_token = _Blocking(AsyncSessionTokens.create, "session_tokens")
    """Shortcut for ``session_tokens.create`` (Node: ``createSessionToken``)."""
    check_entitlement = _BlockingCheck(AsyncEntitlements.check, "entitlements")
    """Shortcut for ``entitlements.check`` (Node: ``checkEntitlement``)."""
    track_usage = _Blocking(AsyncUsage.track, "usage")
    """Shortcut for ``usage.track`` (Node: ``trackUsage``)."""
    request = _Blocking(AsyncBillingOS.request)

    def __init__(
        self,
        secret_key: str | None = None,
        *,
        api_url: str | None = None,
        timeout: TimeoutTypes | None = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        limits: httpx2.Limits | None = None,
        http_client: httpx2.AsyncClient | None = None,
        retry_policy: RetryPolicy | None = None,
        entitlement_cache: EntitlementCache | None = None,
        http_backend: HttpBackend | None = None,
        max_response_bytes: int | None = None,
        rate_budget: RateBudget | bool | None = None,
        rate_limit_wait: float | None = None,
    ) -> None:
        # Refuse bad configuration here, not on the first call.
        try:
            settings = resolve(
                secret_key,
                api_url,
                timeout,
                max_retries,
                limits,
                http_backend=http_backend,
                max_response_bytes=max_response_bytes,
                rate_limit_wait=rate_limit_wait,
            )
        finally:
            del secret_key  # only the masked SecretKey from here on, even in a traceback's locals
        check_http_client(settings, http_client)

        if entitlement_cache is not None:
            if not isinstance(entitlement_cache, EntitlementCache):
                raise ValidationError(
                    f"entitlement_cache must be an EntitlementCache, not {type(entitlement_cache).__name__}.",
                    code="invalid_argument",
                )
            # Now, not when the core is built on the first miss: a hit may come before that.
            entitlement_cache._bind(settings.api_url, settings.secret_key)
        creator_pid = os.getpid()
        budget = self._budget = budget_of(rate_budget)

        def build() -> AsyncBillingOS:
            if http_client is not None and os.getpid() != creator_pid:
                raise BillingOSError(
                    "This BillingOS was given its own http_client before os.fork(); that client's "
                    "connections belong to the parent. Create the BillingOS in the child "
                    "(e.g. in gunicorn's post_fork).",
                    code="client_forked",
                )
            return AsyncBillingOS._from_settings(
                settings, http_client, retry_policy, entitlement_cache, budget
            )

        self._setup(_Runner(build), settings, {}, entitlement_cache)

    def _setup(
        self, runner: _Runner, settings: Settings, options: dict[str, Any], cache: EntitlementCache | None
    ) -> None:
        self._facade = self
        self._entitlement_cache = cache
        self._runner = runner
        self._settings = settings
        self._options = options
        self._views: weakref.WeakKeyDictionary[AsyncBillingOS, AsyncBillingOS] = weakref.WeakKeyDictionary()
        self.session_tokens = SessionTokens(self)
        self.entitlements = Entitlements(self)
        self.usage = Usage(self)
        self.customers = Customers(self)
        self.subscriptions = Subscriptions(self)

    def _target(self, core: AsyncBillingOS, resource: str) -> Any:
        view = self._view(core)
        return getattr(view, resource) if resource else view  # "": the client's own ``request``

    @property
    def with_raw_response(self) -> BillingOSWithRawResponse:
        """Every resource's methods and the shortcuts, each returning a :class:`RawResponse`.

        Example::

            raw = billing.with_raw_response.track_usage("user_42", "api_calls")
            print(raw.status_code, raw.rate_limit, raw.parse().usage)
        """
        return BillingOSWithRawResponse(self)

    def _view(self, core: AsyncBillingOS) -> AsyncBillingOS:
        """The core as this facade sees it: itself, or a ``with_options`` copy sharing its pool."""
        if not self._options:
            return core
        view = self._views.get(core)
        if view is None:
            view = self._views[core] = core.with_options(**self._options)
        return view

    @property
    def environment(self) -> Environment:
        """``"test"`` or ``"live"``, from the key's prefix."""
        return self._settings.environment

    @property
    def api_url(self) -> str:
        """The base URL requests go to."""
        return self._settings.api_url

    def with_options(
        self,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        max_response_bytes: int | None = None,
    ) -> BillingOS:
        """A facade with other settings sharing this one's loop thread and pool.

        Example::

            billing.with_options(max_retries=0).usage.metrics("user_42")
        """
        # validated here, in the caller's thread
        settings = evolve(self._settings, timeout, max_retries, max_response_bytes)
        new = {
            "timeout": timeout,
            "max_retries": max_retries,
            "retry_policy": retry_policy,
            "max_response_bytes": max_response_bytes,
        }
        options = {**self._options, **{k: v for k, v in new.items() if v is not None}}
        clone = object.__new__(BillingOS)
        clone._budget = self._budget
        clone._setup(self._runner, settings, options, self._entitlement_cache)
        return clone

    @property
    def rate_limits(self) -> Mapping[str, RateLimit]:
        """The server's rate limit per route, as its latest responses stated it (this process's view).

        See :attr:`AsyncBillingOS.rate_limits`; read without a call to BillingOS.

        Example::

            billing.check_entitlement("user_42", "api_calls")
            print(billing.rate_limits["GET /v1/usage/check"].remaining)   # 99
        """
        return {} if self._budget is None else self._budget.rate_limits

    @property
    def entitlement_cache(self) -> EntitlementCache | None:
        """The :class:`EntitlementCache` checks answer from, if one was configured."""
        return self._entitlement_cache

    def usage_recorder(self, **options: Unpack[RecorderOptions]) -> SyncUsageRecorder:
        """A background usage recorder bound to this client: ``with billing.usage_recorder() as r``.

        See :class:`UsageRecorder` for the options and guarantees.
        """
        from ._recorder import SyncUsageRecorder  # on use: the recorder brings sqlite3 and friends

        return SyncUsageRecorder(_RecorderHost(self), **options)

    def as_customer(
        self,
        external_user_id: str,
        *,
        external_organization_id: str | None = None,
        allowed_operations: Sequence[str] | None = None,
        session_token: str | None = None,
        expires_in: int = 3600,
        revoke_on_close: bool = False,
    ) -> CustomerSession:
        """A blocking handle acting as one of your customers; see :meth:`AsyncBillingOS.as_customer`.

        Example::

            with billing.as_customer("user_42") as customer:
                session = customer.checkout.create(price_id, customer_email="ada@example.com")
        """
        try:
            args = customer_arguments(
                external_user_id,
                external_organization_id,
                allowed_operations,
                session_token,
                expires_in,
                revoke_on_close,
            )
        finally:
            del session_token  # only the masked SessionToken from here on
        return CustomerSession(self, args)

    @property
    def is_closed(self) -> bool:
        """True after :meth:`close`."""
        return self._runner._closed

    def close(self) -> None:
        """Close the pool and stop the loop thread. Idempotent; also runs at interpreter exit."""
        self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<BillingOS environment={self._settings.environment!r} api_url={self._settings.api_url!r} "
            f"secret_key={self._settings.secret_key.masked!r}>"
        )
