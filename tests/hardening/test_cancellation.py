"""Cancellation storm at the SDK level: ``BILLINGOS_SOAK_EVENTS`` calls (1 000 by default), each cancelled
at a random point, against the embedded server on loopback (slow-ish: every request waits 3-20 ms there,
and some connections are reset, so the SDK reconnects and retries). Nothing runs detached (no task and no
shield sits between a caller and its exchange), so the pool must be settled as soon as the last cancelled
call has returned:

- no connection is stranded: every connection in the httpcore2 pool is idle or closed, and the pool's
  request queue is empty (``AsyncConnectionPool._connections`` / ``._requests``, httpcore2: private, read
  only here); on the aiohttp backend, the connector has no connection acquired and no waiter;
- no task is left behind: ``asyncio.all_tasks()`` is back to what it was once the client is closed;
- the client still works, with ``max_connections=4`` (so 4 leaked connections would make every later call
  fail with ``PoolTimeout``): 16 concurrent calls succeed within a deadline;
- the server counted each cancelled track at most once and each completed track exactly once.

And cancellation is never delayed: a call whose answer the server holds, cancelled by
``anyio.move_on_after``, returns while the server still holds it, on asyncio (both backends) and on trio.

tests/test_transport_cancellation.py covers the backends themselves (``HttpxBackend.send_request`` over a
plain ``httpx2.AsyncClient``: 300 calls, two ways to cancel, and the known leak points pinned); this is the
whole client, every public way to cancel, and faults on top.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import attrs
import httpx2
import pytest

from billingos import AsyncBillingOS, BillingOSError, RetryPolicy
from billingos._aiohttp_backend import AiohttpBackend
from billingos._transport import HttpxBackend
from billingos.testing import FakeBillingOS, Fault

from .conftest import CountingApp, serve_counted, soak_events, wait_until_async

pytestmark = pytest.mark.soak

TRACK = "POST /v1/usage/track"
MAX_CONNECTIONS = 4
LANES = 4
"""Concurrent callers, as many as the pool's connections. A retry after a reset opens a new connection, so
calls still queue for one at times (and get cancelled while queued), but most find one at once and are
cancelled mid-exchange: connecting, sending, reading, releasing."""
CANCEL_WINDOW = 3.0
"""Each call is cancelled after uniform(0, CANCEL_WINDOW x the median latency of an uncancelled call),
measured first: on a fast machine or a slow one (coverage), some calls are cancelled before they send,
many mid-exchange, and some complete first."""
SETTLE_DEADLINE = 20.0
"""Bounds the wait for the server to finish the requests of cancelled calls (a delayed request still lands
after its caller gave up on it); the client side is checked at once."""

Call = Callable[[], Awaitable[Any]]

CANCELLERS = ["task.cancel", "wait_for", "move_on_after", "fail_after", "task_group", "asyncio.timeout"]


def slow_server(seed: int) -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None, seed=seed)
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Unlimited", features={"api_calls": 10**12})
    for n in range(8):
        fake.add_customer(f"cus_{n}")
        fake.subscribe(f"cus_{n}", plan.price_id)
    # The first matching rule that fires wins: some resets (a new TCP connection, and a retry with backoff
    # to be cancelled in), some slower answers, and every other request 10 ms late.
    fake.inject("*", Fault.reset(), times=None, probability=0.04)
    fake.inject("*", Fault.delay(0.02), times=None, probability=0.2)
    fake.inject("*", Fault.delay(0.003), times=None)
    return fake


def new_client(fake: FakeBillingOS, url: str, **kwargs: Any) -> AsyncBillingOS:
    return AsyncBillingOS(
        fake.secret_key,
        api_url=url,
        limits=httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
        timeout=httpx2.Timeout(10.0, pool=10.0),
        retry_policy=RetryPolicy(initial_backoff=0.002, max_backoff=0.02),
        **kwargs,
    )


def calls_for(billing: AsyncBillingOS, rng: random.Random, tracked: list[str]) -> tuple[str, Call]:
    """One random SDK call: a track (with a key we remember), a check, metrics or a customer lookup."""
    customer = f"cus_{rng.randrange(8)}"
    kind = rng.choice(["track", "track", "check", "metrics", "customer"])
    if kind == "track":
        key = f"cancel-{len(tracked)}"
        tracked.append(key)
        return kind, lambda: billing.usage.track(customer, "api_calls", 1, idempotency_key=key)
    if kind == "check":
        return kind, lambda: billing.entitlements.check(customer, "api_calls")
    if kind == "metrics":
        return kind, lambda: billing.usage.metrics(customer)
    return kind, lambda: billing.customers.get_by_external_id(customer)


async def cancel_one(call: Call, how: str, delay: float) -> tuple[bool, Any]:
    """Run ``call`` and cancel it ``how`` after ``delay`` s; (cancelled?, result). Errors propagate."""
    if how == "task.cancel":
        task = asyncio.ensure_future(call())
        await asyncio.sleep(delay)
        task.cancel()
        try:
            return False, await task
        except asyncio.CancelledError:
            if task.cancelled():
                return True, None
            raise
    if how == "wait_for":
        try:
            return False, await asyncio.wait_for(call(), delay)
        except TimeoutError:
            return True, None
    if how == "asyncio.timeout":
        try:
            async with asyncio.timeout(delay):  # type: ignore[attr-defined]
                return False, await call()
        except TimeoutError:
            return True, None
    if how == "move_on_after":
        result = None
        with anyio.move_on_after(delay) as scope:
            result = await call()
        return scope.cancelled_caught, result
    if how == "fail_after":
        try:
            with anyio.fail_after(delay):
                return False, await call()
        except TimeoutError:
            return True, None
    assert how == "task_group"
    outcome: list[Any] = []
    async with anyio.create_task_group() as group:

        async def run() -> None:
            outcome.append(await call())
            group.cancel_scope.cancel()  # done first: stop the canceller

        async def cancel_later() -> None:
            await anyio.sleep(delay)
            group.cancel_scope.cancel()

        group.start_soon(run)
        group.start_soon(cancel_later)
    return (not outcome), (outcome[0] if outcome else None)


async def typical_latency(billing: AsyncBillingOS) -> float:
    """Median seconds of an uncancelled call, faults and all (20 entitlement checks, a few in parallel)."""
    took: list[float] = []

    async def one(n: int) -> None:
        began = time.monotonic()
        await billing.entitlements.check(f"cus_{n % 8}", "api_calls")
        took.append(time.monotonic() - began)

    for n in range(0, 20, LANES):
        async with anyio.create_task_group() as group:
            for k in range(LANES):
                group.start_soon(one, n + k)
    return sorted(took)[len(took) // 2]


async def storm(
    billing: AsyncBillingOS, seed: int, calls: int, cancellers: list[str]
) -> tuple[Counter[str], list[str], list[BaseException]]:
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    tracked: list[str] = []
    errors: list[BaseException] = []
    window = CANCEL_WINDOW * await typical_latency(billing)
    tally["window ms"] = round(window * 1000)
    plan = [
        (*calls_for(billing, rng, tracked), rng.choice(cancellers), rng.uniform(0, window))
        for _ in range(calls)
    ]

    async def lane(k: int) -> None:
        for kind, call, how, delay in plan[k::LANES]:
            try:
                cancelled, _ = await cancel_one(call, how, delay)
            except BillingOSError as exc:  # retries exhausted on the resets: rare, allowed
                errors.append(exc)
                tally["failed"] += 1
                continue
            tally[f"{how} {'cancelled' if cancelled else 'completed'}"] += 1
            tally["cancelled" if cancelled else "completed"] += 1
            if not cancelled and kind == "track":
                tally["tracks completed"] += 1

    async with anyio.create_task_group() as group:
        for k in range(LANES):
            group.start_soon(lane, k)
    return tally, tracked, errors


def pool_of(billing: AsyncBillingOS) -> Any:
    """The httpcore2 ``AsyncConnectionPool`` under the SDK's own httpx2 client (private: read only)."""
    backend = billing._requester.transport.backend
    assert isinstance(backend, HttpxBackend)
    return backend.client._transport._pool  # type: ignore[attr-defined]


def stranded(pool: Any) -> list[str]:
    """Connections neither idle nor closed, and requests still queued in the pool."""
    busy = [repr(c) for c in pool._connections if not (c.is_idle() or c.is_closed())]
    queued = [repr(r) for r in pool._requests]
    return busy + queued


def connector_of(billing: AsyncBillingOS) -> Any:
    """The aiohttp ``TCPConnector`` of the aiohttp backend's session (private: read only)."""
    backend = billing._requester.transport.backend
    assert isinstance(backend, AiohttpBackend)
    assert backend.session is not None
    return backend.session.connector


def checked_out(connector: Any) -> tuple[int, int]:
    """(connections acquired, requests waiting for one) in aiohttp's pool."""
    return len(connector._acquired), sum(len(w) for w in connector._waiters.values())


async def no_task_left(baseline: set[asyncio.Task[Any]]) -> None:
    """Until every task started since ``baseline`` is gone (done-callbacks may need an iteration or two)."""
    await wait_until_async(lambda: not asyncio.all_tasks() - baseline, "no task is left", 5)


async def still_works(billing: AsyncBillingOS, fake: FakeBillingOS) -> float:
    """16 concurrent calls (4 per pooled connection) must all succeed: a stranded pool would time out."""
    fake.clear_faults()
    started = time.monotonic()
    with anyio.fail_after(15):
        results = await asyncio.gather(
            *(billing.entitlements.check(f"cus_{n % 8}", "api_calls", max_retries=0) for n in range(16))
        )
    assert all(r.has_access for r in results)
    return time.monotonic() - started


def assert_tracks_counted_once(fake: FakeBillingOS, tracked: list[str], completed: int) -> int:
    """Each key the server answered 201 to is counted once; a cancelled track counts at most once."""
    answered = {r.json["idempotency_key"] for r in fake.requests_to(TRACK) if r.status == 201}
    assert answered <= set(tracked)
    total = sum(fake.usage_of(f"cus_{n}", "api_calls") for n in range(8))
    assert total == len(answered)
    assert completed <= total <= len(tracked)
    return int(total)


async def test_cancelled_calls_strand_no_connection_and_leave_no_task(seed: int, figure) -> None:
    calls = soak_events()
    baseline = asyncio.all_tasks()
    fake = slow_server(seed)
    started = time.monotonic()
    with serve_counted(fake.app) as (url, server):
        billing = new_client(fake, url)
        try:
            tally, tracked, errors = await storm(billing, seed, calls, CANCELLERS)
            storm_seconds = time.monotonic() - started
            pool = pool_of(billing)
            left = stranded(pool)  # at once: nothing is left running in the background
            connections = len(pool._connections)
            await server.wait_idle(SETTLE_DEADLINE)
            after = await still_works(billing, fake)
            left_after = stranded(pool)
            await server.wait_idle()
        finally:
            await billing.aclose()
    await no_task_left(baseline)
    total = assert_tracks_counted_once(fake, tracked, tally["tracks completed"])
    by_how = ", ".join(
        f"{how} {tally[how + ' cancelled']}/{tally[how + ' cancelled'] + tally[how + ' completed']}"
        for how in CANCELLERS
    )
    figure(
        f"{calls} calls, {tally['cancelled']} cancelled at random points within {tally['window ms']} ms "
        f"({by_how}), {tally['completed']} completed, {tally['failed']} failed after retries; afterwards "
        f"{len(left)} stranded connections/queued requests in a pool of {connections} "
        f"(max {MAX_CONNECTIONS}), "
        f"0 tasks left after aclose, 16 concurrent calls then took {after * 1000:.0f} ms; server counted "
        f"{total} tracks ({tally['tracks completed']} completed + cancelled ones it received), none twice; "
        f"storm {storm_seconds:.1f} s, seed={seed}"
    )
    assert left == [], left
    assert left_after == [], left_after
    assert connections <= MAX_CONNECTIONS
    assert tally["cancelled"] > calls // 10  # the storm really cancelled calls, at every stage
    assert tally["completed"] > calls // 20  # and some finished before their deadline
    assert len(errors) <= calls // 50, errors[:3]


async def test_cancelled_calls_on_the_aiohttp_backend_strand_nothing(seed: int, figure) -> None:
    calls = max(100, soak_events() // 4)
    baseline = asyncio.all_tasks()
    fake = slow_server(seed)
    with serve_counted(fake.app) as (url, server):
        billing = new_client(fake, url, http_backend="aiohttp")
        try:
            tally, tracked, _ = await storm(billing, seed, calls, CANCELLERS)
            connector = connector_of(billing)
            acquired, waiters = checked_out(connector)  # at once: nothing is left running in the background
            await server.wait_idle(SETTLE_DEADLINE)
            after = await still_works(billing, fake)
            acquired_after, waiters_after = checked_out(connector)
            await server.wait_idle()
        finally:
            await billing.aclose()
    await no_task_left(baseline)
    total = assert_tracks_counted_once(fake, tracked, tally["tracks completed"])
    figure(
        f"aiohttp backend: {calls} calls, {tally['cancelled']} cancelled; afterwards {acquired} connections "
        f"acquired, {waiters} waiters, 0 tasks left; 16 calls then took {after * 1000:.0f} ms; {total} "
        "tracks "
        f"counted, none twice; seed={seed}"
    )
    assert (acquired, waiters) == (0, 0)
    assert (acquired_after, waiters_after) == (0, 0)
    assert tally["cancelled"] > calls // 20  # the storm really cancelled calls


def test_cancelled_calls_on_trio_strand_no_connection(seed: int, figure) -> None:
    """On trio as on asyncio: nothing shielded, nothing detached, so the pool is settled at once."""
    calls = max(100, soak_events() // 4)
    fake = slow_server(seed)
    with serve_counted(fake.app) as (url, server):

        async def main() -> tuple[Counter[str], list[str], list[str], float]:
            async with new_client(fake, url) as billing:
                tally, tracked, _ = await storm(
                    billing, seed, calls, ["move_on_after", "fail_after", "task_group"]
                )
                left = stranded(pool_of(billing))  # at once: nothing is left running in the background
                await server.wait_idle(SETTLE_DEADLINE)
                fake.clear_faults()
                started = time.monotonic()
                answers: list[Any] = []

                async def check(n: int) -> None:
                    answers.append(await billing.entitlements.check(f"cus_{n % 8}", "api_calls"))

                with anyio.fail_after(15):
                    async with anyio.create_task_group() as group:
                        for n in range(16):
                            group.start_soon(check, n)
                assert len(answers) == 16
                assert all(a.has_access for a in answers)
                left += stranded(pool_of(billing))
                return tally, tracked, left, time.monotonic() - started

        tally, tracked, left, after = anyio.run(main, backend="trio")
        server.wait_idle_blocking()
    total = assert_tracks_counted_once(fake, tracked, tally["tracks completed"])
    figure(
        f"trio: {calls} calls, {tally['cancelled']} cancelled; {len(left)} stranded; 16 calls then took "
        f"{after * 1000:.0f} ms; {total} tracks counted, none twice; seed={seed}"
    )
    assert left == [], left
    assert tally["cancelled"] > calls // 20  # the storm really cancelled calls


# --------------------------------------------------------------------------------------------------------
# cancellation is never delayed: a cancelled call does not wait for the server's answer

CHECK_PATH = "/v1/usage/check"
HOLD_CAP = 15.0
"""The server gives up holding after this many seconds, so a call that did wait fails the test (by its
``fail_after``) instead of hanging it. Never reached when the SDK behaves."""


class HoldingApp:
    """Wraps the fake's ASGI app: a request to ``path`` is held, unanswered, until the test sets ``hold``.

    ``arrived`` is set when such a request reaches the server, ``released`` when the server stops holding
    it (``hold`` set, or ``HOLD_CAP`` passed); ``held`` counts the requests it held. Once ``hold`` is set,
    requests pass straight through.
    """

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.path = path
        self.arrived = threading.Event()
        self.hold = threading.Event()
        self.released = threading.Event()
        self.held = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and not self.hold.is_set():
            self.held += 1
            self.arrived.set()
            give_up = time.monotonic() + HOLD_CAP
            while not self.hold.is_set() and time.monotonic() < give_up:  # noqa: ASYNC110 (a thread's event)
                await asyncio.sleep(0.001)  # the server's loop is uvicorn's asyncio loop
            self.released.set()
        await self.app(scope, receive, send)


def pool_settled(billing: AsyncBillingOS) -> list[str]:
    """What the client's pool still holds for a request: [] when every connection is idle or closed."""
    if isinstance(billing._requester.transport.backend, AiohttpBackend):
        acquired, waiters = checked_out(connector_of(billing))
        return [f"{acquired} acquired, {waiters} waiting"] if (acquired, waiters) != (0, 0) else []
    return stranded(pool_of(billing))


async def cancelled_while_held(billing: AsyncBillingOS, app: HoldingApp) -> None:
    """A check whose answer the server holds, cancelled by ``move_on_after`` once it reached the server.

    The scope's deadline is moved to "now" only once the request has arrived, so the cancellation lands
    while the server holds the answer, on any machine. ``hold`` is set by this function only after the
    cancelled call has returned: had the call waited for the answer, it would still be waiting when
    ``fail_after`` expires (the server holds for ``HOLD_CAP`` > 10 s), and the test would fail.
    """
    outcome: list[bool] = []
    scopes: list[anyio.CancelScope] = []

    async def call() -> None:
        with anyio.move_on_after(3600) as scope:
            scopes.append(scope)
            await billing.entitlements.check("cus_0", "api_calls")
        outcome.append(scope.cancelled_caught)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            while not app.arrived.is_set():  # noqa: ASYNC110 (set by the server's thread)
                await anyio.sleep(0.001)
            scopes[0].deadline = anyio.current_time()  # move_on_after's deadline passes now
    assert outcome == [True]  # cancelled by its deadline: no answer came, no error was raised
    assert not app.released.is_set()  # the server still holds the answer: the call did not wait for it
    assert pool_settled(billing) == []  # and its connection was not left checked out meanwhile
    app.hold.set()


async def cancel_while_held_then_use(billing: AsyncBillingOS, app: HoldingApp, server: CountingApp) -> None:
    await cancelled_while_held(billing, app)
    await server.wait_idle(SETTLE_DEADLINE)  # the held request, answered to a closed connection
    assert app.held == 1  # the cancelled call was not resent
    with anyio.fail_after(10):
        assert (await billing.entitlements.check("cus_0", "api_calls")).has_access  # the client still works
    assert pool_settled(billing) == []


@attrs.frozen
class Held:
    fake: FakeBillingOS
    url: str
    app: HoldingApp
    server: CountingApp

    def client(self, **kwargs: Any) -> AsyncBillingOS:
        return AsyncBillingOS(self.fake.secret_key, api_url=self.url, **kwargs)


@pytest.fixture
def held() -> Iterator[Held]:
    fake = slow_server(0)
    fake.clear_faults()  # no resets or delays here: only the held answer
    app = HoldingApp(fake.app, CHECK_PATH)
    try:
        with serve_counted(app) as (url, server):
            yield Held(fake, url, app, server)
    finally:
        app.hold.set()  # never leave the server holding, whatever happened


@pytest.mark.parametrize("http_backend", ["httpx2", "aiohttp"])
async def test_a_cancelled_call_does_not_wait_for_the_server_on_asyncio(
    http_backend: str, held: Held
) -> None:
    async with held.client(http_backend=http_backend) as billing:
        await cancel_while_held_then_use(billing, held.app, held.server)


def test_a_cancelled_call_does_not_wait_for_the_server_on_trio(held: Held) -> None:
    import trio  # noqa: F401  (a dev dependency: this test must run, not skip)

    async def main() -> None:
        async with held.client() as billing:
            await cancel_while_held_then_use(billing, held.app, held.server)

    anyio.run(main, backend="trio")
