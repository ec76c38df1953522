"""Retry rules (CONTRACT §3, §4; issue 2 "Requests, errors and retries").

What is retried and what is not, how long the SDK waits (recorded by the ``policy`` fixture instead
of slept), what stays identical across the attempts of one call, and that cancellation is never
swallowed. Every request goes through respx, nothing waits for real.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
import respx

from billingos import (
    AsyncBillingOS,
    BillingOSError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
)
from billingos._retry import parse_retry_after

from ._factories import BASE_URL, SECRET, customer_json, error_body, make_token, subscription_json, track_json

TOKEN_ID = "tok_" + "c" * 32


@dataclass(frozen=True)
class Op:
    """One SDK call, the route it hits and a success answer for it."""

    name: str
    method: str
    path: str
    ok_status: int
    ok_payload: Any
    call: Callable[..., Awaitable[Any]]

    @property
    def ok(self) -> httpx2.Response:
        """A fresh success response."""
        return _ok(self.ok_status, self.ok_payload)

    def route(self, router: respx.MockRouter) -> respx.Route:
        return router.route(method=self.method, path=self.path)


def _ok(status: int, payload: Any = None) -> httpx2.Response:
    return httpx2.Response(status) if payload is None else httpx2.Response(status, json=payload)


CHECK_JSON = {"feature_key": "api_calls", "has_access": True, "limit": None, "usage": None, "metadata": None}
REVOKED_JSON = {"message": "Session token revoked successfully"}
MINT_JSON = {"sessionToken": make_token(), "expiresAt": {}}

GET = Op(
    "customers.get",
    "GET",
    "/customers/c1",
    200,
    customer_json(id="c1"),
    lambda b, **kw: b.customers.get("c1", **kw),
)
CHECK = Op(
    "entitlements.check",
    "GET",
    "/v1/usage/check",
    200,
    CHECK_JSON,
    lambda b, **kw: b.entitlements.check("user_1", "api_calls", **kw),
)
DELETE = Op(
    "customers.delete", "DELETE", "/customers/c1", 204, None, lambda b, **kw: b.customers.delete("c1", **kw)
)
REVOKE = Op(
    "session_tokens.revoke",
    "DELETE",
    f"/v1/session-tokens/{TOKEN_ID}",
    200,
    REVOKED_JSON,
    lambda b, **kw: b.session_tokens.revoke(TOKEN_ID, **kw),
)
TRACK = Op(
    "usage.track",
    "POST",
    "/v1/usage/track",
    201,
    track_json(),
    lambda b, **kw: b.usage.track("user_1", "api_calls", **kw),
)
MINT = Op(
    "session_tokens.create",
    "POST",
    "/v1/session-tokens",
    201,
    MINT_JSON,
    lambda b, **kw: b.session_tokens.create("user_1", **kw),
)
CREATE_CUSTOMER = Op(
    "customers.create",
    "POST",
    "/customers",
    201,
    customer_json(),
    lambda b, **kw: b.customers.create("ada@example.com", **kw),
)
UPDATE_CUSTOMER = Op(
    "customers.update",
    "PATCH",
    "/customers/c1",
    200,
    customer_json(id="c1"),
    lambda b, **kw: b.customers.update("c1", name="Ada", **kw),
)
CANCEL_SUB = Op(
    "subscriptions.cancel",
    "POST",
    "/subscriptions/sub_1/cancel",
    200,
    subscription_json(),
    lambda b, **kw: b.subscriptions.cancel("sub_1", **kw),
)

SAFE_OPS = [GET, CHECK, DELETE, REVOKE, TRACK]
UNSAFE_OPS = [MINT, CREATE_CUSTOMER, UPDATE_CUSTOMER, CANCEL_SUB]
ALL_OPS = SAFE_OPS + UNSAFE_OPS


def _ids(ops: list[Op]) -> list[str]:
    return [op.name for op in ops]


def _status(status: int, **headers: str) -> httpx2.Response:
    codes = {
        429: "RATE_LIMIT_EXCEEDED",
        500: "SYS_INTERNAL_ERROR",
        502: "SYS_BAD_GATEWAY",
        503: "SYS_UNAVAILABLE",
        504: "SYS_TIMEOUT",
    }
    code = codes.get(status, "VAL_INVALID_INPUT")
    return httpx2.Response(status, json=error_body(status, code, f"status {status}"), headers=headers)


def _recording_policy(sleeps: list[float], **fields: Any) -> RetryPolicy:
    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    return RetryPolicy(sleep=record, **fields)


CONNECT_FAILURES = [httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout]
AMBIGUOUS_FAILURES: list[Callable[[], Any]] = [
    lambda: httpx2.ReadTimeout("read timed out"),
    lambda: httpx2.ReadError("connection reset"),
    lambda: httpx2.RemoteProtocolError("server disconnected"),
    lambda: httpx2.WriteError("broken pipe"),
    lambda: _status(500),
    lambda: _status(502),
    lambda: _status(503),
    lambda: _status(504),
]
AMBIGUOUS_IDS = ["ReadTimeout", "ReadError", "RemoteProtocolError", "WriteError", "500", "502", "503", "504"]


# -- always retried ------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", CONNECT_FAILURES, ids=lambda e: e.__name__)
@pytest.mark.parametrize("op", ALL_OPS, ids=_ids(ALL_OPS))
async def test_connect_phase_failure_is_retried_for_every_operation(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float], op: Op, failure: type[Exception]
) -> None:
    route = op.route(router).mock(side_effect=[failure("never sent"), op.ok])
    await op.call(billing)
    assert route.call_count == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("op", ALL_OPS, ids=_ids(ALL_OPS))
async def test_429_is_retried_for_every_operation_after_exactly_retry_after_seconds(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float], op: Op
) -> None:
    route = op.route(router).mock(side_effect=[_status(429, **{"Retry-After": "3"}), op.ok])
    await op.call(billing)
    assert route.call_count == 2
    assert sleeps == [3.0]


async def test_429_with_fractional_retry_after_waits_that_fraction(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    GET.route(router).mock(side_effect=[_status(429, **{"Retry-After": "1.5"}), GET.ok])
    await GET.call(billing)
    assert sleeps == [1.5]


async def test_429_with_http_date_retry_after_waits_until_that_date(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    GET.route(router).mock(side_effect=[_status(429, **{"Retry-After": when}), GET.ok])
    await GET.call(billing)
    assert len(sleeps) == 1
    assert 25 < sleeps[0] <= 30


async def test_429_without_retry_after_waits_the_first_backoff(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    GET.route(router).mock(side_effect=[_status(429), GET.ok])
    await GET.call(billing)
    assert len(sleeps) == 1
    assert 0.25 <= sleeps[0] <= 0.5


async def test_429_retry_after_is_used_on_later_retries_too(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    GET.route(router).mock(
        side_effect=[
            _status(429, **{"Retry-After": "1"}),
            _status(429, **{"Retry-After": "2"}),
            _status(429, **{"Retry-After": "0"}),
            GET.ok,
        ]
    )
    await GET.call(billing)
    assert sleeps == [1.0, 2.0, 0.0]


async def test_retry_after_of_exactly_60_seconds_is_still_waited(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    GET.route(router).mock(side_effect=[_status(429, **{"Retry-After": "60"}), GET.ok])
    await GET.call(billing)
    assert sleeps == [60.0]


@pytest.mark.parametrize("op", [GET, TRACK, MINT], ids=_ids([GET, TRACK, MINT]))
async def test_retry_after_above_60_seconds_raises_rate_limit_error_at_once(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float], op: Op
) -> None:
    route = op.route(router).mock(side_effect=[_status(429, **{"Retry-After": "61"}), op.ok])
    with pytest.raises(RateLimitError) as info:
        await op.call(billing)
    assert info.value.retry_after == 61.0
    assert route.call_count == 1
    assert sleeps == []


async def test_retry_after_above_cap_on_a_later_attempt_stops_retrying(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    route = GET.route(router).mock(
        side_effect=[_status(503), _status(429, **{"Retry-After": "3600"}), GET.ok]
    )
    with pytest.raises(RateLimitError):
        await GET.call(billing)
    assert route.call_count == 2
    assert len(sleeps) == 1


async def test_max_retry_after_can_be_raised_in_the_policy(router: respx.MockRouter) -> None:
    sleeps: list[float] = []
    GET.route(router).mock(side_effect=[_status(429, **{"Retry-After": "90"}), GET.ok])
    policy = _recording_policy(sleeps, max_retry_after=120.0)
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=policy) as billing:
        await GET.call(billing)
    assert sleeps == [90.0]


async def test_max_retry_after_can_be_lowered_in_the_policy(router: respx.MockRouter) -> None:
    sleeps: list[float] = []
    route = GET.route(router).mock(side_effect=[_status(429, **{"Retry-After": "10"}), GET.ok])
    policy = _recording_policy(sleeps, max_retry_after=5.0)
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=policy) as billing:
        with pytest.raises(RateLimitError):
            await GET.call(billing)
    assert route.call_count == 1
    assert sleeps == []


# -- retried only when repeating is harmless ---------------------------------------------------


@pytest.mark.parametrize("failure", AMBIGUOUS_FAILURES, ids=AMBIGUOUS_IDS)
@pytest.mark.parametrize("op", SAFE_OPS, ids=_ids(SAFE_OPS))
async def test_ambiguous_failure_is_retried_for_a_safe_operation(
    billing: AsyncBillingOS,
    router: respx.MockRouter,
    sleeps: list[float],
    op: Op,
    failure: Callable[[], Any],
) -> None:
    route = op.route(router).mock(side_effect=[failure(), op.ok])
    await op.call(billing)
    assert route.call_count == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("failure", AMBIGUOUS_FAILURES, ids=AMBIGUOUS_IDS)
@pytest.mark.parametrize("op", UNSAFE_OPS, ids=_ids(UNSAFE_OPS))
async def test_ambiguous_failure_is_not_retried_for_a_non_idempotent_write(
    billing: AsyncBillingOS,
    router: respx.MockRouter,
    sleeps: list[float],
    op: Op,
    failure: Callable[[], Any],
) -> None:
    route = op.route(router).mock(side_effect=[failure(), op.ok])
    with pytest.raises((NetworkError, ServerError)):
        await op.call(billing)
    assert route.call_count == 1
    assert sleeps == []


# -- never retried -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
@pytest.mark.parametrize("op", [GET, TRACK], ids=_ids([GET, TRACK]))
async def test_status_is_never_retried(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float], op: Op, status: int
) -> None:
    route = op.route(router).mock(side_effect=[_status(status), op.ok])
    with pytest.raises(BillingOSError) as info:
        await op.call(billing)
    assert info.value.status_code == status
    assert route.call_count == 1
    assert sleeps == []


# -- one call, one identity ---------------------------------------------------------------------


async def test_track_sends_the_same_idempotency_key_and_request_id_on_every_attempt(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = TRACK.route(router).mock(
        side_effect=[_status(503), httpx2.ReadError("lost"), httpx2.ConnectError("refused"), TRACK.ok]
    )
    record = await TRACK.call(billing)
    requests = [call.request for call in route.calls]
    assert len(requests) == 4
    keys = {json.loads(r.content)["idempotency_key"] for r in requests}
    request_ids = {r.headers["X-Request-Id"] for r in requests}
    assert len(keys) == 1
    assert len(request_ids) == 1
    assert record.idempotency_key == keys.pop()
    assert re.fullmatch(r"req_[0-9a-f]{24}", request_ids.pop())


async def test_two_track_calls_use_different_idempotency_keys_and_request_ids(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = TRACK.route(router).mock(return_value=TRACK.ok)
    await TRACK.call(billing)
    await TRACK.call(billing)
    first, second = (call.request for call in route.calls)
    assert json.loads(first.content)["idempotency_key"] != json.loads(second.content)["idempotency_key"]
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


async def test_track_reuses_the_callers_idempotency_key_on_every_attempt(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = TRACK.route(router).mock(side_effect=[_status(502), TRACK.ok])
    record = await billing.usage.track("user_1", "api_calls", idempotency_key="order-42")
    assert [json.loads(c.request.content)["idempotency_key"] for c in route.calls] == ["order-42"] * 2
    assert record.idempotency_key == "order-42"


async def test_get_sends_the_same_request_id_on_every_attempt(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503), _status(500), GET.ok])
    await GET.call(billing)
    assert len({c.request.headers["X-Request-Id"] for c in route.calls}) == 1
    assert route.call_count == 3


# -- how many retries ----------------------------------------------------------------------------


async def test_default_max_retries_sends_at_most_four_requests_then_raises_the_last_error(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503)] * 3 + [_status(502), GET.ok])
    with pytest.raises(ServerError) as info:
        await GET.call(billing)
    assert info.value.status_code == 502
    assert route.call_count == 4
    assert len(sleeps) == 3


async def test_a_success_on_the_last_allowed_retry_is_returned(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503)] * 3 + [GET.ok])
    customer = await GET.call(billing)
    assert customer.id == "c1"
    assert route.call_count == 4


async def test_max_retries_zero_on_the_client_disables_retries(
    router: respx.MockRouter, policy: RetryPolicy, sleeps: list[float]
) -> None:
    route = GET.route(router).mock(side_effect=[httpx2.ConnectError("refused"), GET.ok])
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, max_retries=0, retry_policy=policy) as billing:
        with pytest.raises(NetworkError):
            await GET.call(billing)
    assert route.call_count == 1
    assert sleeps == []


async def test_per_call_max_retries_overrides_the_clients_lower(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503)] * 5)
    with pytest.raises(ServerError):
        await GET.call(billing, max_retries=1)
    assert route.call_count == 2


async def test_per_call_max_retries_zero_disables_even_connect_retries(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = GET.route(router).mock(side_effect=[httpx2.ConnectError("refused"), GET.ok])
    with pytest.raises(NetworkError):
        await GET.call(billing, max_retries=0)
    assert route.call_count == 1


async def test_per_call_max_retries_overrides_the_clients_higher(
    router: respx.MockRouter, policy: RetryPolicy
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503)] * 5 + [GET.ok])
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, max_retries=0, retry_policy=policy) as billing:
        await GET.call(billing, max_retries=5)
    assert route.call_count == 6


async def test_with_options_max_retries_applies_to_the_copy_only(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503)] * 8)
    with pytest.raises(ServerError):
        await GET.call(billing.with_options(max_retries=1))
    assert route.call_count == 2
    with pytest.raises(ServerError):
        await GET.call(billing)
    assert route.call_count == 2 + 4


# -- backoff -------------------------------------------------------------------------------------


def _bounds(n: int) -> tuple[float, float]:
    base = min(0.5 * 2**n, 8.0)
    return base * 0.5, base


@pytest.mark.parametrize("n", range(10))
def test_backoff_stays_within_jittered_exponential_bounds(n: int) -> None:
    low, high = _bounds(n)
    samples = [RetryPolicy().backoff(n) for _ in range(300)]
    assert all(low <= s <= high for s in samples)
    assert len(set(samples)) > 1  # jittered, not fixed


async def test_recorded_backoff_waits_fall_within_bounds_for_consecutive_retries(
    router: respx.MockRouter,
) -> None:
    sleeps: list[float] = []
    policy = _recording_policy(sleeps)
    GET.route(router).mock(return_value=_status(503))
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, max_retries=6, retry_policy=policy) as billing:
        for _ in range(20):
            sleeps.clear()
            with pytest.raises(ServerError):
                await GET.call(billing)
            assert len(sleeps) == 6
            for n, wait in enumerate(sleeps):
                low, high = _bounds(n)
                assert low <= wait <= high, (n, wait)


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [
        ((1.0, 1.0), [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]),
        ((0.5, 0.5), [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]),
    ],
    ids=["upper", "lower"],
)
async def test_backoff_doubles_per_retry_and_is_capped_at_8_seconds(
    router: respx.MockRouter, jitter: tuple[float, float], expected: list[float]
) -> None:
    sleeps: list[float] = []
    policy = _recording_policy(sleeps, jitter=jitter)
    GET.route(router).mock(return_value=_status(503))
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, max_retries=7, retry_policy=policy) as billing:
        with pytest.raises(ServerError):
            await GET.call(billing)
    assert sleeps == expected


# -- DELETE after a lost response ----------------------------------------------------------------


@pytest.mark.parametrize("op", [DELETE, REVOKE], ids=_ids([DELETE, REVOKE]))
async def test_delete_whose_lost_first_attempt_is_answered_404_on_retry_succeeds(
    billing: AsyncBillingOS, router: respx.MockRouter, op: Op
) -> None:
    route = op.route(router).mock(side_effect=[httpx2.ReadError("lost"), _not_found()])
    assert await op.call(billing) is None
    assert route.call_count == 2


@pytest.mark.parametrize("op", [DELETE, REVOKE], ids=_ids([DELETE, REVOKE]))
async def test_delete_answered_404_on_the_first_attempt_raises_not_found(
    billing: AsyncBillingOS, router: respx.MockRouter, op: Op
) -> None:
    route = op.route(router).mock(side_effect=[_not_found(), op.ok])
    with pytest.raises(NotFoundError):
        await op.call(billing)
    assert route.call_count == 1


@pytest.mark.parametrize(
    "first",
    [lambda: _status(429, **{"Retry-After": "0"}), lambda: httpx2.ConnectError("refused")],
    ids=["429", "ConnectError"],
)
@pytest.mark.parametrize("op", [DELETE, REVOKE], ids=_ids([DELETE, REVOKE]))
async def test_delete_404_after_a_first_attempt_that_never_ran_raises_not_found(
    billing: AsyncBillingOS, router: respx.MockRouter, op: Op, first: Callable[[], Any]
) -> None:
    # A 429 or a connect failure means the first attempt did not execute, so a 404 on the retry
    # really means "there is no such resource": it must not be reported as a successful delete.
    route = op.route(router).mock(side_effect=[first(), _not_found()])
    with pytest.raises(NotFoundError):
        await op.call(billing)
    assert route.call_count == 2


def _not_found() -> httpx2.Response:
    return httpx2.Response(404, json=error_body(404, "RES_NOT_FOUND", "Not found"))


# -- cancellation --------------------------------------------------------------------------------


class _BlockingSleep:
    """A retry sleep that records, signals that it was entered, and then waits forever.

    ``block_from`` is the index of the first sleep that blocks; earlier ones return at once.
    """

    def __init__(self, block_from: int = 0) -> None:
        self.block_from = block_from
        self.calls: list[float] = []
        self.entered = anyio.Event()
        self.on_enter: Callable[[], None] = lambda: None

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if len(self.calls) <= self.block_from:
            return
        self.entered.set()
        self.on_enter()
        await anyio.Event().wait()


async def test_task_cancel_during_the_retry_sleep_raises_cancelled_and_sends_nothing_more(
    router: respx.MockRouter,
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503), GET.ok])
    sleep = _BlockingSleep()
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=RetryPolicy(sleep=sleep)) as billing:
        task = asyncio.ensure_future(GET.call(billing))
        await sleep.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert route.call_count == 1


async def test_task_cancel_during_a_later_retry_sleep_is_not_swallowed_by_the_retry_loop(
    router: respx.MockRouter,
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503), _status(503), GET.ok])
    sleep = _BlockingSleep(block_from=1)
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=RetryPolicy(sleep=sleep)) as billing:
        task = asyncio.ensure_future(GET.call(billing))
        await sleep.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert route.call_count == 2
    assert len(sleep.calls) == 2


async def test_anyio_task_group_cancel_during_the_retry_sleep_stops_the_call(
    router: respx.MockRouter,
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503), GET.ok])
    sleep = _BlockingSleep()
    results: list[Any] = []
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=RetryPolicy(sleep=sleep)) as billing:

        async def run() -> None:
            results.append(await GET.call(billing))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await sleep.entered.wait()
            tg.cancel_scope.cancel()
    assert results == []
    assert route.call_count == 1


@pytest.mark.parametrize("block_from", [0, 1], ids=["first-sleep", "later-sleep"])
async def test_anyio_cancel_scope_around_the_call_interrupts_the_retry_sleep(
    router: respx.MockRouter, block_from: int
) -> None:
    route = GET.route(router).mock(side_effect=[_status(503), _status(503), GET.ok])
    sleep = _BlockingSleep(block_from=block_from)
    reached_end = False
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=RetryPolicy(sleep=sleep)) as billing:
        with anyio.CancelScope() as scope:
            sleep.on_enter = scope.cancel
            await GET.call(billing)
            reached_end = True
    assert scope.cancelled_caught
    assert not reached_end
    assert route.call_count == block_from + 1


async def test_task_cancel_while_a_retry_is_in_flight_is_not_retried(
    billing: AsyncBillingOS, router: respx.MockRouter, sleeps: list[float]
) -> None:
    in_flight = anyio.Event()
    release = anyio.Event()
    answers = iter([_status(503), None, GET.ok])
    seen: list[httpx2.Request] = []

    async def respond(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        answer = next(answers)
        if answer is not None:
            return answer
        in_flight.set()
        await release.wait()
        return GET.ok

    GET.route(router).mock(side_effect=respond)
    task = asyncio.ensure_future(GET.call(billing))
    await in_flight.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert len(seen) == 2
    assert len(sleeps) == 1


def test_keyboard_interrupt_from_the_transport_propagates_and_is_not_retried() -> None:
    # Run on a private loop in a thread: a KeyboardInterrupt escaping pytest's own loop would end the run.
    calls: list[httpx2.Request] = []
    outcome: list[BaseException | str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        raise KeyboardInterrupt

    async def main() -> None:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            billing = AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=http)
            await billing.customers.get("c1")

    def thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append("returned")

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert type(outcome[0]) is KeyboardInterrupt
    assert len(calls) == 1


# -- Retry-After parsing -------------------------------------------------------------------------

NOW = 1_800_000_000.0


def _http_date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1.5", 1.5),
        (" 2 ", 2.0),
        ("120", 120.0),
        (_http_date(30), 30.0),
        (_http_date(-30), 0.0),
        ("garbage", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
    ],
    ids=[
        "zero",
        "fraction",
        "padded",
        "large",
        "future-date",
        "past-date",
        "garbage",
        "empty",
        "absent",
        "nan",
        "inf",
        "-inf",
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=lambda: NOW) == expected


def test_parse_retry_after_negative_seconds_never_wait_a_negative_time() -> None:
    assert parse_retry_after("-5", now=lambda: NOW) == 0.0


async def test_read_timeouts_that_exhaust_the_retries_raise_request_timeout_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = GET.route(router).mock(side_effect=httpx2.ReadTimeout("slow"))
    with pytest.raises(RequestTimeoutError):
        await GET.call(billing)
    assert route.call_count == 4


def test_a_retry_loop_resumed_on_another_thread_keeps_its_state() -> None:
    """The blocking client's shared loop is run by whichever calling thread is free, so a call waiting
    between attempts can resume on another thread. tenacity keeps its state in a thread-local; the
    policy's loop keeps it on the call (regression: ``KeyError: 'idle_for'`` under 8 threads)."""

    loop = asyncio.new_event_loop()
    waits: list[asyncio.Future[None]] = []

    async def sleep(_seconds: float) -> None:
        waits.append(loop.create_future())
        await waits[-1]  # the loop stops here; another thread resumes it

    attempts: list[str] = []

    async def attempt(number: int) -> str:
        attempts.append(threading.current_thread().name)
        if number < 3:
            raise NetworkError("connection reset", code="network_error")
        return "ok"

    policy = RetryPolicy(sleep=sleep)
    task = loop.create_task(policy.call(attempt, max_retries=3, retry_safe=True))

    def drive_until_waiting() -> None:
        loop.call_soon(loop.stop)  # one pass: runs the task to its next wait
        loop.run_forever()
        while not task.done() and (not waits or waits[-1].done()):
            loop.call_soon(loop.stop)
            loop.run_forever()

    try:
        for name in ("first", "second", "third", "fourth"):
            if task.done():
                break
            if waits and not waits[-1].done():
                waits[-1].set_result(None)
            worker = threading.Thread(target=drive_until_waiting, name=name)
            worker.start()
            worker.join()
        assert task.result() == "ok"
    finally:
        loop.close()
    assert attempts == ["first", "second", "third", "fourth"]  # each attempt on another thread
