"""The rate budget's rules, without a server: what it sends, what it waits for, what it refuses."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from billingos import BudgetStore, BudgetWindow, MemoryBudgetStore, RateBudget, RateLimit, RateLimitError
from billingos._budget import WAIT

from ._factories import Clock

pytestmark = pytest.mark.anyio

KEY = "GET /v1/usage/check"


def stated(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(reset),
    }


def window(budget: RateBudget) -> BudgetWindow:
    store = budget.store
    assert isinstance(store, MemoryBudgetStore)
    return store.update_now(KEY, lambda old: (old, old))  # type: ignore[return-value]


async def test_a_route_never_seen_sends_first_calls_then_waits_for_an_answer() -> None:
    clock = Clock()
    budget = RateBudget(first=2, clock=clock)
    await budget.acquire(KEY, 10)
    await budget.acquire(KEY, 10)
    assert window(budget) == BudgetWindow(0, 0, None, 2)
    token = WAIT.set(0.0)  # a call that must not wait (a cached check with a stale answer at hand)
    try:
        with pytest.raises(RateLimitError):
            await budget.acquire(KEY, 10)
    finally:
        WAIT.reset(token)
    await budget.settle(KEY, stated(100, 99, 60))
    assert window(budget) == BudgetWindow(100, 98, 1060.0, 1)  # the other one in flight is counted


async def test_within_a_window_the_server_can_only_lower_the_budget() -> None:
    clock = Clock()
    budget = RateBudget(clock=clock)
    await budget.acquire(KEY, 10)
    await budget.settle(KEY, stated(100, 99, 60))
    for _ in range(3):
        await budget.acquire(KEY, 10)
    await budget.settle(KEY, stated(100, 98, 60))  # answered before the two others were counted
    assert window(budget) == BudgetWindow(100, 96, 1060.0, 2)
    await budget.settle(KEY, stated(100, 10, 59))  # another client on this IP spent most of it
    assert window(budget) == BudgetWindow(100, 10, 1060.0, 1)


async def test_at_the_reset_what_is_in_flight_counts_against_the_new_window() -> None:
    clock = Clock()
    budget = RateBudget(clock=clock)
    await budget.acquire(KEY, 10)
    await budget.settle(KEY, stated(3, 2, 60))
    await budget.acquire(KEY, 10)
    await budget.acquire(KEY, 10)
    clock.advance(60)
    await budget.acquire(KEY, 10)
    assert window(budget) == BudgetWindow(3, 0, None, 3)


async def test_a_spent_window_is_waited_for_within_the_bound_else_refused_unsent() -> None:
    clock = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    budget = RateBudget(clock=clock, sleep=sleep)
    await budget.acquire(KEY, 10)
    await budget.settle(KEY, stated(1, 0, 30))
    with pytest.raises(RateLimitError) as caught:
        await budget.acquire(KEY, 10)
    assert (caught.value.code, caught.value.retry_after, caught.value.status_code) == (
        "rate_budget_exhausted",
        30.0,
        None,
    )
    assert caught.value.rate_limit == RateLimit(1, 0, 30.0)
    assert slept == []
    await budget.acquire(KEY, 30)
    assert slept == [30.0]


async def test_a_route_without_rate_limit_headers_is_not_budgeted() -> None:
    budget = RateBudget(first=1)
    await budget.acquire(KEY, 0)
    await budget.settle(KEY, {})
    for _ in range(1000):
        await budget.acquire(KEY, 0)
    assert budget.rate_limits == {}


async def test_unreadable_headers_count_as_none_and_a_lost_answer_only_releases() -> None:
    budget = RateBudget(first=1)
    await budget.acquire(KEY, 0)
    await budget.settle(KEY, None)  # a connection error: nothing learnt
    assert window(budget) == BudgetWindow(0, 0, None, 0)
    await budget.acquire(KEY, 0)  # no one will tell: this one asks
    await budget.settle(
        KEY, {"x-ratelimit-limit": "lots", "x-ratelimit-remaining": "-1", "x-ratelimit-reset": "x"}
    )
    assert window(budget).limit is None


async def test_a_wait_for_the_probes_answer_is_bounded_in_real_time_not_by_the_budgets_clock() -> None:
    # Regression: a call waiting for the answer of a probe in flight polls on real time, but its
    # FORGET_AFTER bound was read on the budget's clock, which other waiters of a test move on (each
    # jumps a fake clock to its window's reset). The call was refused although the probe's answer was
    # on its way (tests/e2e/test_redis_cache.py::test_two_processes_sharing_a_redis_budget_get_no_429).
    import anyio

    class Counting:
        def __init__(self) -> None:
            self.inner, self.updates = MemoryBudgetStore(), 0

        async def update(self, key: str, change: Any) -> Any:
            self.updates += 1
            return await self.inner.update(key, change)

    clock = Clock()
    store = Counting()
    budget = RateBudget(store, first=1, clock=clock)
    await budget.acquire(KEY, 10)  # the probe: in flight, nothing known yet
    outcome: list[object] = []

    async def waiter() -> None:
        try:
            await budget.acquire(KEY, 10)
            outcome.append("sent")
        except RateLimitError as exc:
            outcome.append(exc)

    async def until(updates: int) -> None:
        for _ in range(10_000):  # bounded: polls of a count, no duration
            if store.updates >= updates:
                return
            await anyio.sleep(0.001)
        raise AssertionError(f"the waiter never made update {updates}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until(2)  # the waiter was told to wait for the probe's answer
        clock.advance(1000)  # others moved the budget's clock far past FORGET_AFTER meanwhile
        await until(3)  # the waiter looked again after the jump
        await budget.settle(KEY, stated(100, 99, 60))  # the probe's answer
    assert outcome == ["sent"]


async def test_a_failing_store_lets_calls_through_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    class Down:
        async def update(self, key: str, change: Any) -> Any:
            raise ConnectionError("redis is down")

    store = Down()
    assert isinstance(store, BudgetStore)
    budget = RateBudget(store)
    with caplog.at_level(logging.WARNING, logger="billingos"):
        for _ in range(3):
            await budget.acquire(KEY, 0)
            await budget.settle(KEY, stated(1, 0, 60))
    assert caplog.text.count("calls are sent unbudgeted") == 1


def test_a_client_refuses_a_rate_budget_of_the_wrong_type() -> None:
    from billingos import AsyncBillingOS, ValidationError

    with pytest.raises(ValidationError, match="rate_budget"):
        AsyncBillingOS("sk_test_x", rate_budget="yes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="rate_limit_wait"):
        AsyncBillingOS("sk_test_x", rate_limit_wait=-1)


def test_the_in_memory_store_in_place_agrees_with_the_store_contract_functions() -> None:
    """The in-memory fast path (a mutable slot updated in place) makes the same decisions and keeps
    the same window as the pure ``change`` functions a shared store applies, over a long random run."""
    import random

    from billingos._budget import _acquire, _settle

    rng = random.Random(15)
    fast, pure = MemoryBudgetStore(), MemoryBudgetStore()
    now = 1000.0
    for step in range(20_000):
        now += rng.choice((0.0, 0.1, 0.5, 3.0, 61.0)) if rng.random() < 0.3 else 0.0
        action = rng.random()
        if action < 0.5:
            first = rng.randint(1, 4)
            assert fast.acquire_now(KEY, now, first) == pure.update_now(KEY, _acquire(now, first)), step
        else:
            if action < 0.8:
                limit = rng.choice((3, 5, 100))
                state: tuple[int, int, float] | None = (
                    limit,
                    rng.randint(0, limit),
                    float(rng.randint(0, 60)),
                )
            else:
                state = None
            answered = state is not None or action < 0.9
            fast.settle_now(KEY, now, state, answered)
            pure.update_now(KEY, _settle(now, state, answered))
        assert fast.update_now(KEY, lambda old: (old, old)) == pure.update_now(KEY, lambda old: (old, old))


def test_repeated_header_values_are_parsed_once_and_still_validated() -> None:
    from billingos._budget import _stated

    assert _stated(stated(100, 97, 42)) == (100, 97, 42.0)
    assert _stated(stated(100, 97, 42)) == (100, 97, 42.0)  # from the remembered parse
    assert (
        _stated({"x-ratelimit-limit": "100", "x-ratelimit-remaining": "-1", "x-ratelimit-reset": "4"}) is None
    )
    assert _stated({"x-ratelimit-limit": "100", "x-ratelimit-reset": "4"}) is None
    assert _stated({}) is None


def test_httpx2_headers_are_read_in_one_pass_with_the_same_result() -> None:
    import httpx2

    from billingos._budget import _stated

    raw = [
        (b"Content-Type", b"application/json"),
        (b"X-RateLimit-Limit", b"100"),
        (b"X-RateLimit-Remaining", b"97"),
        (b"X-RateLimit-Reset", b"42"),
    ]
    assert _stated(httpx2.Headers(raw)) == (100, 97, 42.0) == _stated(stated(100, 97, 42))
    assert _stated(httpx2.Headers(raw[:3])) is None  # no reset
    assert _stated(httpx2.Headers(raw[2:])) is None  # no limit
    twice = httpx2.Headers([*raw, (b"x-ratelimit-remaining", b"96")])  # as httpx2 reads it: "97, 96"
    assert _stated(twice) is None


async def test_a_route_with_a_scoped_window_of_its_own_gets_a_key_per_scope() -> None:
    budget = RateBudget(clock=Clock())
    track = "POST /v1/usage/track"
    plain = {**stated(100, 99, 60), **{f"{k}-scoped": v for k, v in stated(100, 99, 60).items()}}
    scoped = {**stated(100, 98, 60), **{f"{k}-scoped": v for k, v in stated(1000, 999, 60).items()}}
    budget.learn_scope(KEY, plain, refused=False)  # scoped figures equal to the route's: no scope
    budget.learn_scope(track, scoped, refused=False)
    assert budget.scoped_routes == {track}
    assert budget.scoped_key(KEY, "user_1") is None
    assert budget.scoped_key(track, None) is None
    key = budget.scoped_key(track, "user_1")
    assert key is not None
    assert key.startswith(track + " ")
    assert "user_1" not in key
    assert key != budget.scoped_key(track, "user_2")
    await budget.acquire(key, 0)
    await budget.settle_scoped(key, scoped)
    store = budget.store
    assert isinstance(store, MemoryBudgetStore)
    assert store.update_now(key, lambda old: (old, old)) == BudgetWindow(1000, 999, 1060.0, 0)
    assert KEY not in budget.rate_limits
    assert key not in budget.rate_limits


async def test_the_in_memory_store_forgets_reset_windows_past_its_bound() -> None:
    clock = Clock()
    budget = RateBudget(clock=clock)
    store = budget.store
    assert isinstance(store, MemoryBudgetStore)
    for n in range(5000):  # a scoped window per customer: each answered, its window resetting in 60 s
        await budget.acquire(f"{KEY} {n}", 0)
        await budget.settle_scoped(f"{KEY} {n}", {f"{k}-scoped": v for k, v in stated(5, 4, 60).items()})
    assert len(store) == 5000  # none has reset yet: nothing may be forgotten
    clock.advance(61)
    await budget.acquire(f"{KEY} new", 0)
    assert len(store) == 1  # the reset ones forgotten, the new one kept


def test_the_scope_is_what_the_servers_scoped_throttler_counts_by() -> None:
    import hashlib

    from billingos._http import _scope

    token = "bos_session_" + "x" * 40
    assert _scope({"customer_id": "c_body"}, {"customer_id": "c_query"}, token) == "c_body"
    assert _scope(None, {"customer_id": "c_query"}, token) == "c_query"
    assert _scope({"quantity": 1}, None, token) == "token_" + hashlib.sha256(token.encode()).hexdigest()[:16]
    assert _scope(None, None, None) is None
    assert _scope(None, None, "") is None  # no credential at all
