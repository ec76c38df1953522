"""The blocking facade ``BillingOS``: one loop thread per client, shared by every caller thread.

What is asserted here is behaviour that could break: the traps of sync-over-async listed in the
techniques notes (§1): many threads, a running loop in the caller, ``os.fork()``, Ctrl-C, calls from
the loop thread itself, ``close()`` and interpreter exit. Most tests talk to a real uvicorn server on
127.0.0.1 (``tests/_loopback.serve_asgi`` with the small app below), so connection reuse is observed
on the server side rather than inferred. Nothing sleeps and hopes: the server signals with events,
and every wait is bounded.

A few helpers reach into the facade's internals (``_runner._state``) to find its loop thread, portal
and ``httpx2.AsyncClient``; they are grouped below so a refactoring of ``_sync.py`` touches one place.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import inspect
import json
import operator
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx2
import pytest
import respx

import billingos
from billingos import (
    AsyncBillingOS,
    AsyncCustomers,
    AsyncEntitlements,
    AsyncSubscriptions,
    AsyncUsage,
    BillingOS,
    BillingOSError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
)

from ._factories import BASE_URL, SECRET, customer_json, error_body
from ._fork import needs_fork, run_in_child
from ._loopback import serve_asgi

REPO = Path(__file__).resolve().parent.parent
HOLD_LIMIT_SECONDS = 10.0  # the server never holds a request longer than this, whatever a test does
WAIT_SECONDS = 10.0  # bound on every wait for something that should happen at once
NOT_FOUND_REQUEST_ID = "req_" + "f" * 24
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


# -- a loopback API ------------------------------------------------------------------------------


class FakeAPI:
    """A raw ASGI app answering ``GET /customers/<id>`` with a customer named after ``<id>``.

    For ``hold`` it sets ``held``, then answers only once ``release`` is set (at most HOLD_LIMIT_SECONDS).

    It records the client address of every request, so a test can count the connections used.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.peers: list[tuple[str, int]] = []
        self.ids: list[str] = []
        self.held = threading.Event()
        self.release = threading.Event()

    def reset(self) -> None:
        with self._lock:
            self.peers.clear()
            self.ids.clear()
        self.held.clear()
        self.release.clear()

    def connections(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self.peers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        customer_id = unquote(scope["path"].rsplit("/", 1)[-1])
        with self._lock:
            self.peers.append((scope["client"][0], scope["client"][1]))
            self.ids.append(customer_id)
        if customer_id == "hold":
            self.held.set()
            await asyncio.to_thread(self.release.wait, HOLD_LIMIT_SECONDS)
        raw = json.dumps(customer_json(id=customer_id)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


class Api:
    def __init__(self, url: str, app: FakeAPI) -> None:
        self.url = url
        self.app = app


@pytest.fixture(scope="module")
def _server() -> Iterator[Api]:
    app = FakeAPI()
    with serve_asgi(app) as url:
        yield Api(url, app)
        app.release.set()


@pytest.fixture
def api(_server: Api) -> Iterator[Api]:
    _server.app.reset()
    yield _server
    _server.app.release.set()  # never leave a held request behind


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    """A deadlock must fail loudly (with every thread's stack), not hang the suite."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- the facade's internals, in one place -------------------------------------------------------


def _portal(billing: BillingOS) -> Any:
    state = billing._runner._state
    assert state is not None, "the facade has not started its loop"
    return state.loop.portal


def _loop_thread(billing: BillingOS) -> threading.Thread:
    """The facade's own thread: it runs the loop when no calling thread can (callers usually run it)."""
    state = billing._runner._state
    assert state is not None, "the facade has not started its loop"
    return state.loop.thread


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before``, without asyncio's executor workers (``asyncio_N``: getaddrinfo)."""
    return [t for t in threading.enumerate() if t not in before and not t.name.startswith("asyncio_")]


def _pool(billing: BillingOS) -> httpx2.AsyncClient:
    state = billing._runner._state
    assert state is not None
    client: httpx2.AsyncClient = state.core._requester.transport.backend.client  # type: ignore[attr-defined]
    return client


def _tasks_on_loop(billing: BillingOS) -> Counter[str]:
    """What runs on the facade's loop (besides this probe): coroutine names, counted."""

    async def probe() -> Counter[str]:
        me = asyncio.current_task()
        return Counter(getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks() if t is not me)

    result: Counter[str] = _portal(billing).call(probe)
    return result


def _wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.002)


def _run_python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLINGOS_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )


# -- 1. many threads, one loop, one pool --------------------------------------------------------


def test_sixteen_threads_share_one_loop_thread_and_one_pool(api: Api) -> None:
    threads_before = set(threading.enumerate())
    billing = BillingOS(SECRET, api_url=api.url, limits=httpx2.Limits(max_connections=4))
    workers, calls = 16, 12
    start = threading.Barrier(workers)  # every thread's first call races the lazy start
    results: list[str] = []
    errors: list[BaseException] = []
    pools: set[int] = set()
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            start.wait(WAIT_SECONDS)
            for i in range(calls):
                got = billing.customers.get(f"t{n}-{i}").id
                with lock:
                    results.append(got)
                    pools.add(id(_pool(billing)))
        except BaseException as exc:
            with lock:
                errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,), name=f"caller-{n}") for n in range(workers)]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join(WAIT_SECONDS * 3)
        assert not any(t.is_alive() for t in pool), "caller threads still blocked"
        assert errors == []
        assert sorted(results) == sorted(f"t{n}-{i}" for n in range(workers) for i in range(calls))
        assert _new_threads(threads_before) == [_loop_thread(billing)], "exactly one loop thread"
        assert len(pools) == 1, "one httpx2.AsyncClient for every call"
        # The server agrees: 192 requests over at most max_connections=4 pooled connections.
        assert len(api.app.ids) == workers * calls
        assert 1 <= len(api.app.connections()) <= 4
    finally:
        billing.close()


# -- 2. called from inside a running event loop ----------------------------------------------------


async def test_works_when_called_inside_a_running_event_loop(api: Api) -> None:
    with BillingOS(SECRET, api_url=api.url) as billing:
        side_task = asyncio.create_task(asyncio.sleep(0, result="still scheduled"))
        assert billing.customers.get("c1").id == "c1"  # blocks this loop for the call, no deadlock
        assert _loop_thread(billing) is not threading.current_thread()
        assert billing.customers.get("c2").id == "c2"
        assert await side_task == "still scheduled"  # the caller's own loop is intact


def test_repeated_asyncio_run_around_sync_calls_keeps_one_pool(api: Api) -> None:
    """Each ``asyncio.run`` closes its loop; the facade's pool lives on its own loop, so it survives."""
    with BillingOS(SECRET, api_url=api.url) as billing:
        assert billing.customers.get("first").id == "first"
        pool, loop_thread = _pool(billing), _loop_thread(billing)

        async def legacy_code(n: int) -> str:
            await asyncio.sleep(0)
            return billing.customers.get(f"inside-{n}").id

        for n in range(3):
            assert asyncio.run(legacy_code(n)) == f"inside-{n}"
            assert billing.customers.get(f"between-{n}").id == f"between-{n}"
        assert _pool(billing) is pool
        assert _loop_thread(billing) is loop_thread
        assert len(api.app.connections()) == 1, "every call reused the one keep-alive connection"


# -- 3. os.fork() ------------------------------------------------------------------------------


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_forked_child_rebuilds_loop_and_pool_and_the_parent_keeps_working(api: Api) -> None:
    with BillingOS(SECRET, api_url=api.url) as billing:
        assert billing.customers.get("parent-before").id == "parent-before"
        parent_pool, parent_thread = _pool(billing), _loop_thread(billing)

        def child() -> dict[str, Any]:
            first = billing.customers.get("child-1").id  # must not hang on the parent's dead loop
            second = billing.customers.get("child-2").id
            thread = _loop_thread(billing)
            result = {
                "ids": [first, second],
                "new_pool": _pool(billing) is not parent_pool,
                "new_thread": thread is not parent_thread and thread.is_alive(),
                "parent_thread_alive_here": parent_thread.is_alive(),
            }
            billing.close()  # shutting the child's own loop down must not hang either
            thread.join(WAIT_SECONDS)
            result["thread_stopped"] = not thread.is_alive()
            return result

        exit_code, result = run_in_child(child)
        assert exit_code == 0
        assert result == {
            "ids": ["child-1", "child-2"],
            "new_pool": True,
            "new_thread": True,
            "parent_thread_alive_here": False,
            "thread_stopped": True,
        }
        assert billing.customers.get("parent-after").id == "parent-after"
        assert _pool(billing) is parent_pool
        assert _loop_thread(billing) is parent_thread
        assert {"child-1", "child-2"} <= set(api.app.ids)


FORK_SCRIPT = """
import gc, os, sys, time, warnings
warnings.filterwarnings("ignore", message=r"This process .* is multi-threaded", category=DeprecationWarning)
from billingos import BillingOS

key, url, mode = sys.argv[1:]
billing = BillingOS(key, api_url=url)
print("parent", billing.customers.get("parent-1").id, flush=True)  # the parent's loop is running
pid = os.fork()
if pid == 0:
    if mode in ("call", "call-then-drop"):
        print("child", billing.customers.get("child-1").id, flush=True)
    if mode in ("drop", "call-then-drop"):
        del billing
        gc.collect()
    print("child done", flush=True)
    sys.exit(0)  # a normal interpreter exit, finalizers and all: it must not hang
deadline = time.monotonic() + 6
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child hung", flush=True)
        sys.exit(3)
    time.sleep(0.005)
print("child exit code", os.waitstatus_to_exitcode(status), flush=True)
print("parent", billing.customers.get("parent-2").id, flush=True)
"""


@needs_fork
@pytest.mark.parametrize("mode", ["call", "no-call", "drop", "call-then-drop"])
def test_forked_child_exits_normally_without_hanging_or_warnings(api: Api, mode: str) -> None:
    """A real interpreter exit in parent and child (``-W error``), neither having called close().

    gunicorn ``--preload`` and plain ``os.fork()`` workers: some use the client, some never do, some
    drop it; the parent had started its loop thread before forking. No child may hang, at once or at exit.
    """
    proc = _run_python(FORK_SCRIPT, SECRET, api.url, mode)
    expected = ["parent parent-1", "child done", "child exit code 0", "parent parent-2"]
    if mode in ("call", "call-then-drop"):
        expected.append("child child-1")
    assert sorted(proc.stdout.splitlines()) == sorted(expected), proc.stdout + proc.stderr
    assert (proc.returncode, proc.stderr) == (0, "")


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_own_http_client_in_a_forked_child_raises_client_forked() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=customer_json(id=request.url.path.rsplit("/", 1)[-1]))

    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    used = BillingOS(SECRET, api_url=BASE_URL, http_client=http_client)
    unused = BillingOS(SECRET, api_url=BASE_URL, http_client=http_client)
    try:
        assert used.customers.get("c1").id == "c1"  # the parent starts its loop before the fork

        def child() -> dict[str, Any]:
            codes = {}
            for name, billing in (("used", used), ("unused", unused)):
                try:
                    billing.customers.get("c1")
                except BillingOSError as exc:
                    codes[name] = exc.code
                else:
                    codes[name] = "no error"
            return codes

        exit_code, codes = run_in_child(child)
        assert exit_code == 0
        assert codes == {"used": "client_forked", "unused": "client_forked"}
        assert used.customers.get("c2").id == "c2"
        assert unused.customers.get("c3").id == "c3"
    finally:
        used.close()
        unused.close()
        asyncio.run(http_client.aclose())


# -- 4. Ctrl-C ---------------------------------------------------------------------------------


@pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="signal.pthread_kill is POSIX-only (absent on Windows)"
)
def test_ctrl_c_cancels_the_call_and_the_client_keeps_working(api: Api) -> None:
    assert threading.current_thread() is threading.main_thread()
    with BillingOS(SECRET, api_url=api.url, max_retries=0) as billing:
        billing.customers.get("warm")
        idle = _tasks_on_loop(billing)
        sent: list[float] = []
        during: list[Counter[str]] = []

        def press_ctrl_c() -> None:
            if api.app.held.wait(WAIT_SECONDS):  # the request reached the server, which holds it
                during.append(_tasks_on_loop(billing))
                sent.append(time.monotonic())
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        helper = threading.Thread(target=press_ctrl_c, name="ctrl-c")
        interrupted_at = None
        try:
            helper.start()
            try:
                billing.customers.get("hold")
            except KeyboardInterrupt:
                interrupted_at = time.monotonic()
        finally:
            helper.join(WAIT_SECONDS)
            signal.signal(signal.SIGINT, previous)
        assert sent, "the server never received the request"
        assert interrupted_at is not None, "the call returned instead of raising KeyboardInterrupt"
        assert interrupted_at - sent[0] < 2.0, "KeyboardInterrupt was not prompt"
        assert not api.app.release.is_set()

        # While the server holds the request, neither the call's task nor its HTTP exchange can end by
        # themselves; after the interrupt the call's task must go (cancelled) while the server still holds.
        in_call = during[0] - idle
        assert sum(in_call.values()) >= 1, f"the call ran nowhere on the facade's loop: {during[0]}"

        def extra_tasks() -> int:
            return sum((_tasks_on_loop(billing) - idle).values())

        # No exchange is left running detached: the call's task and its HTTP exchange are both gone while
        # the server still holds the request.
        _wait_until(
            lambda: extra_tasks() == 0,
            f"the interrupted call left nothing on the loop (tasks during the call: {in_call})",
        )
        assert not api.app.release.is_set()
        api.app.release.set()

        assert billing.customers.get("after").id == "after"
        assert api.app.ids == ["warm", "hold", "after"]
        # httpx2 closed the interrupted exchange's connection (cancelled mid-response) rather than leaving it
        # held in the pool: the next call opened a new one.
        assert len(api.app.connections()) == 2


@pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="signal.pthread_kill is POSIX-only (absent on Windows)"
)
def test_an_application_sigint_handler_is_left_alone_during_a_call(api: Api) -> None:
    """Only Python's default handler is replaced while the main thread runs a call; an app's own runs."""
    seen: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        seen.append(signum)
        api.app.release.set()  # the application decides: here, let the held call finish

    with BillingOS(SECRET, api_url=api.url, max_retries=0) as billing:
        billing.customers.get("warm")

        def press_ctrl_c() -> None:
            if api.app.held.wait(WAIT_SECONDS):
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        previous = signal.signal(signal.SIGINT, on_sigint)
        helper = threading.Thread(target=press_ctrl_c, name="ctrl-c")
        try:
            helper.start()
            customer = billing.customers.get("hold")  # not interrupted: the app's handler only releases it
            during = signal.getsignal(signal.SIGINT)
        finally:
            helper.join(WAIT_SECONDS)
            signal.signal(signal.SIGINT, previous)
        assert customer.id == "hold"
        assert seen == [signal.SIGINT]
        assert during is on_sigint


def test_a_call_restores_the_sigint_handler_and_the_wakeup_fd(api: Api) -> None:
    """After a call from the main thread, Python's handler and the wakeup fd are as they were before it."""
    assert threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    app_end, other_end = socket.socketpair()
    try:
        with BillingOS(SECRET, api_url=api.url, max_retries=0) as billing:
            billing.customers.get("c1")  # no wakeup fd of the app's: the call's own is removed after it
            assert signal.set_wakeup_fd(-1) == -1
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

            app_end.setblocking(False)
            signal.set_wakeup_fd(app_end.fileno())  # the app's own wakeup fd: left in place throughout
            billing.customers.get("c2")
            assert signal.set_wakeup_fd(-1) == app_end.fileno()
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, previous)
        app_end.close()
        other_end.close()


# -- 5. close, with, after close ----------------------------------------------------------------


def test_close_is_idempotent_and_stops_the_loop_thread(router: respx.MockRouter) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    assert billing.customers.get("c1").id == "c1"
    thread, pool = _loop_thread(billing), _pool(billing)
    was_closed = billing.is_closed
    billing.close()
    billing.close()
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()
    assert (was_closed, billing.is_closed, pool.is_closed) == (False, True, True)


def test_with_block_closes(router: respx.MockRouter) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    with BillingOS(SECRET, api_url=BASE_URL) as billing:
        billing.customers.get("c1")
        thread, pool = _loop_thread(billing), _pool(billing)
    assert billing.is_closed
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()
    assert pool.is_closed


@pytest.mark.parametrize("used_before_close", [True, False], ids=["used", "never-used"])
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda b: b.customers.get("c1"), id="customers.get"),
        pytest.param(lambda b: b.check_entitlement("c1", "api_calls"), id="shortcut"),
        pytest.param(lambda b: list(b.customers.list()), id="customers.list"),
        pytest.param(lambda b: b.with_options(max_retries=0).customers.get("c1"), id="with_options"),
    ],
)
def test_call_after_close_raises_client_closed(
    router: respx.MockRouter, used_before_close: bool, call: Callable[[BillingOS], object]
) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    threads_before = set(threading.enumerate())
    if used_before_close:
        billing.customers.get("c1")
    billing.close()
    with pytest.raises(BillingOSError) as caught:
        call(billing)
    assert caught.value.code == "client_closed"
    assert _new_threads(threads_before) == [], "a closed client still has (or started) a loop thread"


def test_close_while_another_thread_is_in_a_call(api: Api) -> None:
    """A WSGI server shutting down while a worker is mid-call: close() returns (the in-flight exchange
    gets its grace period, then is cancelled) and the interrupted call fails as a ``BillingOSError``
    with code ``client_closed``, like any call on a closed client, not as a bare ``RuntimeError``."""
    billing = BillingOS(SECRET, api_url=api.url, max_retries=0)
    billing.customers.get("warm")
    thread = _loop_thread(billing)
    outcome: list[BaseException | object] = []

    def worker() -> None:
        try:
            outcome.append(billing.customers.get("hold"))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=worker, name="mid-call")
    caller.start()
    assert api.app.held.wait(WAIT_SECONDS)
    started = time.monotonic()
    billing.close()
    assert time.monotonic() - started < 5, "close() waited for the held request"
    caller.join(WAIT_SECONDS)
    assert not caller.is_alive(), "the in-flight call never returned"
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, BillingOSError), f"{type(error).__name__}: {error}"
    assert error.code == "client_closed"


def test_a_garbage_collected_facade_stops_its_loop_thread(router: respx.MockRouter) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    billing.customers.get("c1")
    thread, pool = _loop_thread(billing), _pool(billing)
    del billing
    gc.collect()
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()
    assert pool.is_closed


def test_finalised_on_its_own_loop_thread_still_stops_that_thread(router: respx.MockRouter) -> None:
    """The facade is a reference cycle (``_facade = self``), so the cyclic GC frees it, on whichever
    thread happens to collect; when that is its own loop thread, the loop must still be stopped and
    the pool closed (the notes' "guard the finalizer against running on the portal thread")."""
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    billing.customers.get("c1")
    portal, thread, pool = _portal(billing), _loop_thread(billing), _pool(billing)
    del billing

    async def collect_here() -> None:
        gc.collect()

    portal.call(collect_here)
    thread.join(5)
    assert not thread.is_alive(), "the loop thread (and its pool) leaked"
    assert pool.is_closed


# -- 6. interpreter exit ------------------------------------------------------------------------

EXIT_SCRIPT = """
import sys
from billingos import BillingOS

key, url = sys.argv[1], sys.argv[2]
billing = BillingOS(key, api_url=url)
print(billing.customers.get("kept").id)
print(billing.with_options(max_retries=0, timeout=5).customers.get("view").id)
dropped = BillingOS(key, api_url=url)
print(dropped.customers.get("dropped").id)
del dropped
# no close(): the pools hold live keep-alive connections when the interpreter exits
"""


def test_interpreter_exit_without_close_is_clean_and_prompt(api: Api) -> None:
    started = time.monotonic()
    proc = _run_python(EXIT_SCRIPT, SECRET, api.url, timeout=20)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.split() == ["kept", "view", "dropped"]
    assert time.monotonic() - started < 15
    assert len(api.app.connections()) == 2  # two clients, each kept one live connection


# -- 7. with_options ----------------------------------------------------------------------------


def test_with_options_shares_the_loop_thread_and_the_pool(api: Api) -> None:
    threads_before = set(threading.enumerate())
    with BillingOS(SECRET, api_url=api.url) as billing:
        fast = billing.with_options(max_retries=0, timeout=5)
        assert fast.customers.get("view-first").id == "view-first"  # the view may start the loop
        assert billing.customers.get("base").id == "base"
        assert fast.customers.get("view-again").id == "view-again"
        assert _loop_thread(fast) is _loop_thread(billing)
        assert _pool(fast) is _pool(billing)
        assert _new_threads(threads_before) == [_loop_thread(billing)]
        assert len(api.app.connections()) == 1, "base and view reused one pooled connection"
    assert fast.is_closed  # closing either closes both


def test_with_options_max_retries_takes_effect(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers/c1")
    route.side_effect = [
        httpx2.Response(503),
        httpx2.Response(503),
        httpx2.Response(200, json=customer_json()),
    ]
    assert sync_billing.customers.get("c1").id == customer_json()["id"]
    assert route.call_count == 3  # the base client retries

    route.reset()
    route.side_effect = [httpx2.Response(503), httpx2.Response(200, json=customer_json())]
    with pytest.raises(ServerError) as caught:
        sync_billing.with_options(max_retries=0).customers.get("c1")
    assert caught.value.status_code == 503
    assert route.call_count == 1  # the view does not
    assert sync_billing.customers.get("c1").id == customer_json()["id"]  # and the base still does


def test_with_options_timeout_takes_effect(api: Api) -> None:
    with BillingOS(SECRET, api_url=api.url) as billing:
        assert billing.customers.get("warm").id == "warm"
        hasty = billing.with_options(max_retries=0, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            hasty.customers.get("hold")
        assert time.monotonic() - started < 5
        assert api.app.ids.count("hold") == 1  # max_retries=0 held too
        api.app.release.set()
        assert billing.customers.get("after").id == "after"  # the base's 30 s timeout is untouched


# -- 8. exceptions ------------------------------------------------------------------------------


async def _async_error(router: respx.MockRouter) -> NotFoundError:
    async with AsyncBillingOS(SECRET, api_url=BASE_URL) as billing:
        try:
            await billing.customers.get("missing")
        except NotFoundError as exc:
            return exc
    raise AssertionError("no NotFoundError")


def test_core_exceptions_come_out_unchanged(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    router.get("/customers/missing").respond(
        404, json=error_body(404, "RES_NOT_FOUND", "Customer not found", request_id=NOT_FOUND_REQUEST_ID)
    )
    with pytest.raises(NotFoundError) as caught:
        sync_billing.customers.get("missing")
    exc = caught.value
    assert type(exc) is NotFoundError
    assert (exc.status_code, exc.code, exc.message, exc.request_id) == (
        404,
        "RES_NOT_FOUND",
        "Customer not found",
        NOT_FOUND_REQUEST_ID,
    )
    expected = asyncio.run(_async_error(router))
    assert (str(exc), repr(exc), dict(exc.details)) == (str(expected), repr(expected), dict(expected.details))
    # The traceback still reaches into the core, where the error was raised.
    assert any(frame.filename.endswith("_http.py") for frame in traceback.extract_tb(exc.__traceback__))
    # A client-side refusal and a plain TypeError come out as themselves too.
    with pytest.raises(billingos.ValidationError):
        sync_billing.customers.get("")
    with pytest.raises(TypeError):
        sync_billing.customers.get()  # type: ignore[call-arg]


def test_tracebacks_do_not_contain_the_secret_key(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    router.get("/customers/missing").respond(404, json=error_body(404, "RES_NOT_FOUND", "Customer not found"))
    with pytest.raises(NotFoundError) as caught:
        sync_billing.customers.get("missing")
    plain = "".join(traceback.format_exception(caught.value))
    assert SECRET not in plain
    assert SECRET not in repr(sync_billing)


def test_tracebacks_with_locals_do_not_contain_the_secret_key(
    sync_billing: BillingOS, router: respx.MockRouter
) -> None:
    """What error trackers (Sentry), ``pytest -l`` and rich's ``show_locals`` render: every frame's locals."""
    router.get("/customers/missing").respond(404, json=error_body(404, "RES_NOT_FOUND", "Customer not found"))
    with pytest.raises(NotFoundError) as caught:
        sync_billing.customers.get("missing")
    with_locals = "".join(
        traceback.TracebackException.from_exception(caught.value, capture_locals=True).format()
    )
    leaking = [line.strip()[:80] for line in with_locals.splitlines() if SECRET in line]
    assert leaking == []


# -- 9. called from its own loop thread ---------------------------------------------------------


def test_calling_the_facade_from_its_own_loop_raises_instead_of_deadlocking(router: respx.MockRouter) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    with BillingOS(SECRET, api_url=BASE_URL) as billing:
        billing.customers.get("c1")

        async def on_the_loop() -> None:
            billing.customers.get("c1")

        with pytest.raises(RuntimeError, match="called from its own event loop"):
            _portal(billing).call(on_the_loop)
        assert billing.customers.get("c1").id == "c1"


def test_an_event_hook_calling_the_facade_raises_instead_of_deadlocking() -> None:
    """The realistic way to end up on the loop thread: an httpx event hook of one's own ``http_client``."""
    billing: BillingOS | None = None
    inner: list[BaseException] = []

    async def hook(request: httpx2.Request) -> None:
        if request.url.path.endswith("/outer"):
            assert billing is not None
            try:
                billing.customers.get("inner")
            except BaseException as exc:
                inner.append(exc)
                raise

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=customer_json(id=request.url.path.rsplit("/", 1)[-1]))

    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler), event_hooks={"request": [hook]})
    billing = BillingOS(SECRET, api_url=BASE_URL, http_client=http_client, max_retries=0)
    try:
        with pytest.raises(RuntimeError, match="called from its own event loop"):
            billing.customers.get("outer")
        assert len(inner) == 1
        assert billing.customers.get("fine").id == "fine"
    finally:
        billing.close()
        asyncio.run(http_client.aclose())


# -- 10. signatures -----------------------------------------------------------------------------

METHODS = [
    ("customers.create", AsyncCustomers.create),
    ("customers.get", AsyncCustomers.get),
    ("customers.list", AsyncCustomers.list),
    ("subscriptions.cancel", AsyncSubscriptions.cancel),
    ("usage.track", AsyncUsage.track),
    ("check_entitlement", AsyncEntitlements.check),
]


@pytest.mark.parametrize(("name", "async_method"), METHODS, ids=[m[0] for m in METHODS])
def test_runtime_signature_name_and_doc_mirror_the_async_method(
    name: str, async_method: Callable[..., Any]
) -> None:
    """What ``help()``, ``inspect`` and IDEs that introspect at runtime (Jupyter, IPython ``?``) show."""
    billing = BillingOS(SECRET, api_url=BASE_URL)  # no call: no loop thread is started
    try:
        method = operator.attrgetter(name)(billing)
        expected = list(inspect.signature(async_method).parameters)[1:]  # without self
        assert list(inspect.signature(method).parameters) == expected
        assert method.__name__ == async_method.__name__
        assert method.__doc__ == async_method.__doc__
    finally:
        billing.close()


MYPY_SNIPPET = """
from billingos import BillingOS

billing = BillingOS("sk_test_x")
reveal_type(billing.customers.create(email="x@y.z"))
reveal_type(billing.check_entitlement("user_1", "api_calls"))
reveal_type(billing.customers.list(limit=10))
for customer in billing.customers.list():
    reveal_type(customer)
billing.customers.create(email=1)
billing.customers.get("c1", colour="red")
"""


def test_mypy_sees_the_real_signatures(tmp_path: Path) -> None:
    import mypy  # noqa: F401  (a test dependency: this test must run, not skip)

    snippet = tmp_path / "snippet.py"
    snippet.write_text(MYPY_SNIPPET)
    command = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary"]
    proc = subprocess.run(
        [*command, "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,  # the project's [tool.mypy] settings
        check=False,
    )
    output = proc.stdout + proc.stderr
    lines = [line.split("snippet.py:", 1)[1] for line in proc.stdout.splitlines() if "snippet.py:" in line]
    reveals = [line for line in lines if ": note: Revealed type is " in line]
    errors = [line for line in lines if ": error: " in line]
    assert reveals == [
        '5: note: Revealed type is "billingos._models.Customer"',
        '6: note: Revealed type is "billingos._models.Entitlement"',
        '7: note: Revealed type is "billingos._sync.Paginator[billingos._models.Customer]"',
        '9: note: Revealed type is "billingos._models.Customer"',
    ], output
    assert len(errors) == 2, output
    assert errors[0].startswith('10: error: Argument "email"'), output
    assert errors[0].endswith('"int"; expected "str"  [arg-type]'), output
    assert errors[1].startswith('11: error: Unexpected keyword argument "colour"'), output
    assert errors[1].endswith("[call-arg]"), output
