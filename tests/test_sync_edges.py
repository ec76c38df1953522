"""Edges of the blocking facade (``billingos/_sync.py``) that test_sync.py does not reach in-process.

- argument checks only the facade makes (its ``http_client`` must be async; ``entitlement_cache`` type);
- the calling-thread cache path: ``cache=False`` and bad arguments go to the loop, hits never do;
- races with ``close()``: a caller waiting for the start lock, a caller that found the loop just before
  it stopped, a call parked in a retry backoff when the loop shuts down;
- ``os.fork()``, simulated in-process: the at-fork hook runs for this test's facades only and
  ``billingos._sync.os.getpid`` reports another pid, so the child's paths are measured here too (the
  real-fork tests in test_sync.py and tests/hardening run them in children that coverage cannot see).

Each wait is bounded; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
import respx

import billingos._sync as sync_module
from billingos import (
    AsyncUsage,
    BillingOS,
    BillingOSError,
    Customers,
    EntitlementCache,
    RetryPolicy,
    Subscriptions,
    ValidationError,
)
from billingos._sync import _Blocking, _BlockingList

from ._factories import BASE_URL, SECRET, check_json, customer_json, error_body

WAIT_SECONDS = 10.0
NEVER_AWAITED = "was never awaited"


def loop_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "billingos-loop" and t.is_alive()}


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException | object]]:
    """Run ``work`` in a new thread; its result or exception lands in the returned list."""
    outcome: list[BaseException | object] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, name="edge-caller")
    thread.start()
    return thread, outcome


def customer_handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json=customer_json(id=request.url.path.rsplit("/", 1)[-1]))


@pytest.fixture
def own_runners(monkeypatch: pytest.MonkeyPatch) -> None:
    """Facades made in this test register with a set of their own, so the simulated at-fork hook
    (``_reset_runners_after_fork``) touches them and nothing else alive in the process."""
    monkeypatch.setattr(sync_module, "_RUNNERS", weakref.WeakSet())


class ChildOs:
    """``os`` as a forked child sees it: another pid; everything else is the real module."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    def getpid(self) -> int:
        return self._pid

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.fixture
def http_client() -> Iterator[httpx2.AsyncClient]:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(customer_handler))
    yield client
    asyncio.run(client.aclose())


# -- what only the facade checks ---------------------------------------------------------------------


def test_a_blocking_httpx_client_is_refused_with_a_message_saying_why() -> None:
    with (
        httpx2.Client() as blocking,
        pytest.raises(
            ValidationError, match=r"takes an httpx2\.AsyncClient, not the blocking httpx2\.Client"
        ) as caught,
    ):
        BillingOS(SECRET, api_url=BASE_URL, http_client=blocking)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_argument"
    assert "Client" in caught.value.message


@pytest.mark.parametrize("cache", [{"ttl": 30}, 30, object()])
def test_an_entitlement_cache_of_the_wrong_type_is_refused(cache: object) -> None:
    threads = loop_threads()
    with pytest.raises(ValidationError, match="entitlement_cache must be an EntitlementCache"):
        BillingOS(SECRET, api_url=BASE_URL, entitlement_cache=cache)  # type: ignore[arg-type]
    assert loop_threads() == threads


def test_the_entitlement_cache_property_is_the_configured_cache_and_shared_by_copies() -> None:
    cache = EntitlementCache(ttl=30)
    with BillingOS(SECRET, api_url=BASE_URL, entitlement_cache=cache) as billing:
        assert billing.entitlement_cache is cache
        assert billing.with_options(max_retries=0).entitlement_cache is cache
    with BillingOS(SECRET, api_url=BASE_URL) as plain:
        assert plain.entitlement_cache is None


def test_descriptors_read_from_the_class_keep_the_async_signature_without_self() -> None:
    """What documentation tools see on the class (no instance, no loop)."""
    track = BillingOS.__dict__["track_usage"]
    assert isinstance(BillingOS.track_usage, _Blocking)
    assert BillingOS.track_usage is track
    assert "self" not in track.__signature__.parameters
    assert list(track.__signature__.parameters)[:2] == ["customer_id", "feature_key"]
    assert track.__doc__ == AsyncUsage.track.__doc__
    assert isinstance(Customers.list, _BlockingList)
    assert isinstance(Subscriptions.list, _BlockingList)
    listing = Customers.list.__signature__
    assert "self" not in listing.parameters
    assert "Paginator" in str(listing.return_annotation)
    assert "AsyncPaginator" not in str(listing.return_annotation)


# -- the cache answers in the calling thread only for a plain, well-formed check --------------------------


@pytest.fixture
def cached(router: respx.MockRouter) -> Iterator[tuple[BillingOS, respx.Route]]:
    route = router.get("/v1/usage/check").respond(200, json=check_json())
    with BillingOS(SECRET, api_url=BASE_URL, entitlement_cache=EntitlementCache(ttl=300)) as billing:
        yield billing, route


def test_keyword_arguments_hit_the_cache_like_positional_ones(cached: tuple[BillingOS, respx.Route]) -> None:
    billing, route = cached
    first = billing.check_entitlement("user_1", "api_calls")
    again = billing.entitlements.check(customer_id="user_1", feature_key="api_calls")
    assert again == first
    assert route.call_count == 1


def test_cache_false_asks_billingos_even_when_a_fresh_answer_is_cached(
    cached: tuple[BillingOS, respx.Route],
) -> None:
    billing, route = cached
    billing.check_entitlement("user_1", "api_calls")
    billing.check_entitlement("user_1", "api_calls", cache=False)
    billing.entitlements.check("user_1", "api_calls", cache=False)
    assert route.call_count == 3
    billing.check_entitlement("user_1", "api_calls")  # cache=True again: from memory
    assert route.call_count == 3


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((42, "api_calls"), {}, "customer_id"),
        (("user_1", None), {}, "feature_key"),
        ((), {"customer_id": b"user_1", "feature_key": "api_calls"}, "customer_id"),
        (("user_1", "api_calls"), {"cache": "yes"}, "cache"),
    ],
)
def test_bad_arguments_skip_the_cache_and_are_reported_by_the_async_method(
    cached: tuple[BillingOS, respx.Route], args: tuple[Any, ...], kwargs: dict[str, Any], field: str
) -> None:
    billing, route = cached
    billing.check_entitlement("user_1", "api_calls")  # something cached, for the bad calls to miss
    with pytest.raises(ValidationError, match=field):
        billing.check_entitlement(*args, **kwargs)
    assert route.call_count == 1


# -- races with close() ------------------------------------------------------------------------------


class GateLock:
    """The runner's start lock, reentrant for the test's thread, announcing every thread that waits on it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.waiting = threading.Event()

    def __enter__(self) -> GateLock:
        if not self._lock.acquire(blocking=False):
            self.waiting.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_a_caller_waiting_for_the_start_lock_while_close_runs_gets_client_closed_and_no_loop(
    router: respx.MockRouter,
) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    gate = GateLock()
    billing._runner._lock = gate  # type: ignore[assignment]
    threads = loop_threads()
    with gate:  # the caller passes the "closed?" check, then waits here
        caller, outcome = in_thread(lambda: billing.customers.get("c1"))
        assert gate.waiting.wait(WAIT_SECONDS)
        billing.close()  # runs entirely while the caller waits (the lock is reentrant for us)
    caller.join(WAIT_SECONDS)
    assert not caller.is_alive()
    [error] = outcome
    assert isinstance(error, BillingOSError)
    assert error.code == "client_closed"
    assert loop_threads() == threads  # a closed facade never starts a loop thread
    assert len(router.calls) == 0


def stale_ensure(billing: BillingOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's ``_ensure`` returns the loop state, then another thread closes the facade."""
    runner = billing._runner
    ensure = runner._ensure

    def ensure_then_close() -> Any:
        state = ensure()
        billing.close()
        return state

    monkeypatch.setattr(runner, "_ensure", ensure_then_close)


def test_a_call_that_found_the_loop_just_before_close_stopped_it_gets_client_closed(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    assert billing.customers.get("c1").id == "c1"
    stale_ensure(billing, monkeypatch)
    with pytest.raises(BillingOSError) as caught:
        billing.customers.get("c1")
    assert caught.value.code == "client_closed"
    assert caught.value.__suppress_context__  # the loop's RuntimeError is not shown to the caller
    assert billing.is_closed
    assert len(router.calls) == 1


def test_a_call_racing_close_leaves_no_never_awaited_coroutine(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    billing.customers.get("c1")
    stale_ensure(billing, monkeypatch)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(BillingOSError, match="closed"):
            billing.customers.get("c1")
        gc.collect()
    assert [str(w.message) for w in seen if NEVER_AWAITED in str(w.message)] == []


def test_a_loop_that_died_without_close_raises_instead_of_hanging(router: respx.MockRouter) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    billing.customers.get("c1")
    state = billing._runner._state
    assert state is not None
    state.finalizer.detach()  # the loop is taken down by hand here, as if its thread had died
    state.loop.portal.call(state.core.aclose)
    state.loop.stop()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="closed"):
            billing.customers.get("c1")
        gc.collect()
    assert not billing.is_closed  # not closed by anyone: the error is not dressed up as client_closed
    billing.close()  # nothing left to finalise: returns at once
    assert billing.is_closed


def test_a_call_waiting_in_a_retry_backoff_gets_client_closed_when_the_loop_shuts_down(
    router: respx.MockRouter,
) -> None:
    """``close()`` closes the pool, then stops the loop, cancelling a call parked in its backoff sleep: the
    caller gets ``client_closed``, not a bare ``CancelledError``, and promptly (not after the backoff)."""
    route = router.get("/customers/c1").respond(503, json=error_body(503, "SYS_UNAVAILABLE", "down"))
    sleeping = threading.Event()

    async def long_backoff(seconds: float) -> None:
        sleeping.set()
        await anyio.sleep(60)

    billing = BillingOS(SECRET, api_url=BASE_URL, retry_policy=RetryPolicy(sleep=long_backoff))
    caller, outcome = in_thread(lambda: billing.customers.get("c1"))
    assert sleeping.wait(WAIT_SECONDS)
    billing.close()
    caller.join(WAIT_SECONDS)
    assert not caller.is_alive(), "the caller was left waiting for the backoff"
    [error] = outcome
    assert isinstance(error, BillingOSError), repr(error)
    assert error.code == "client_closed"
    assert route.call_count == 1


def test_a_call_cancelled_on_the_loop_raises_cancelled_error_and_the_facade_goes_on(
    router: respx.MockRouter,
) -> None:
    """Cancelled by something on the loop itself (here the retry policy's own ``sleep``), not by ``close()``:
    the caller sees the cancellation as it is, not ``client_closed``, and the next call works."""
    router.get("/customers/c1").mock(
        side_effect=[
            httpx2.Response(503, json=error_body(503, "SYS_UNAVAILABLE", "down")),
            httpx2.Response(200, json=customer_json(id="c1")),
        ]
    )

    async def cancelling_sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    billing = BillingOS(SECRET, api_url=BASE_URL, retry_policy=RetryPolicy(sleep=cancelling_sleep))
    try:
        with pytest.raises(concurrent.futures.CancelledError):
            billing.customers.get("c1")
        assert not billing.is_closed
        assert billing.customers.get("c1").id == "c1"
    finally:
        billing.close()


# -- os.fork(), simulated ---------------------------------------------------------------------------


@pytest.mark.usefixtures("own_runners")
def test_in_a_forked_child_an_own_http_client_is_refused_and_the_parents_loop_is_left_alone(
    http_client: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing = BillingOS(SECRET, api_url=BASE_URL, http_client=http_client, max_retries=0)
    assert billing.customers.get("before").id == "before"  # the parent's loop runs
    parent = billing._runner._state
    assert parent is not None
    try:
        with monkeypatch.context() as child:
            child.setattr(sync_module, "os", ChildOs(os.getpid() + 1))
            sync_module._reset_runners_after_fork()  # what os.fork() runs in the child
            assert billing._runner._state is None
            assert parent in sync_module._ORPHANED_BY_FORK  # kept referenced, never finalised
            threads = loop_threads()

            with pytest.raises(BillingOSError, match=r"before os\.fork") as caught:
                billing.customers.get("after")
            assert caught.value.code == "client_forked"
            assert loop_threads() == threads  # the loop started for the refused build was stopped
            with pytest.raises(BillingOSError, match=r"before os\.fork"):
                billing.customers.get("again")  # refused every time, not only the first

            # The parent's finalizer does nothing in the child, whoever calls it.
            sync_module._shutdown(parent.pid, parent.loop, parent.core)
            billing.close()
            assert parent.loop.thread.is_alive()
            assert not parent.finalizer.alive
    finally:
        sync_module._ORPHANED_BY_FORK.remove(parent)
        sync_module._shutdown(parent.pid, parent.loop, parent.core)  # back in the "parent": stop it
    assert not parent.loop.thread.is_alive()


@pytest.mark.usefixtures("own_runners")
def test_a_facade_never_used_before_the_fork_starts_its_own_loop_in_the_child(
    router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(id="c1"))
    billing = BillingOS(SECRET, api_url=BASE_URL)
    orphans = list(sync_module._ORPHANED_BY_FORK)
    child_pid = os.getpid() + 1
    with monkeypatch.context() as child:
        child.setattr(sync_module, "os", ChildOs(child_pid))
        sync_module._reset_runners_after_fork()
        assert orphans == sync_module._ORPHANED_BY_FORK  # nothing of the parent's to park
        assert billing.customers.get("c1").id == "c1"
        state = billing._runner._state
        assert state is not None
        assert state.pid == child_pid
        billing.close()  # the child's own loop: closed and stopped in the child
        assert not state.loop.thread.is_alive()
