"""RedisBudgetStore (issue 15, item 3): the rate budget's BudgetStore on a real Redis, atomic across
clients (each its own connection pool, as separate processes would be), forgetting windows per the
contract, and raising when Redis cannot answer (the budget then lets the call through)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from billingos import BudgetStore, BudgetWindow, RedisBudgetStore, ValidationError
from billingos._budget import FORGET_AFTER

from ._redis_server import RedisServer
from ._redis_server import redis_server as redis_server  # the fixture

ROUTE = "GET /v1/usage/check"


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[list[redis.asyncio.Redis]]:
    made = [redis.asyncio.Redis.from_url(redis_server.url) for _ in range(4)]
    yield made
    for client in made:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"b{uuid.uuid4().hex[:8]}:"


def _spend(old: BudgetWindow | None) -> tuple[BudgetWindow | None, int]:
    """Take one unit: the contract's kind of change (pure, synchronous)."""
    window = old or BudgetWindow(limit=1000, remaining=1000, reset_at=time.time() + 60)
    new = BudgetWindow(window.limit, window.remaining - 1, window.reset_at, window.in_flight + 1)
    return new, new.remaining


async def test_concurrent_updates_from_four_clients_never_interleave(
    clients: list[redis.asyncio.Redis], prefix: str
) -> None:
    stores = [RedisBudgetStore(c, prefix=prefix, timeout=10) for c in clients]
    assert all(isinstance(s, BudgetStore) for s in stores)
    results = await asyncio.gather(*(stores[i % 4].update(ROUTE, _spend) for i in range(200)))
    # Every update saw the one before it: 200 distinct results, and the stored window took all 200.
    assert sorted(results) == list(range(800, 1000))
    final = await stores[0].update(ROUTE, lambda old: (old, old))
    assert final is not None
    assert (final.remaining, final.in_flight, final.limit) == (800, 200, 1000)


async def test_windows_round_trip_exactly_and_none_deletes(
    clients: list[redis.asyncio.Redis], prefix: str
) -> None:
    store = RedisBudgetStore(clients[0], prefix=prefix)
    window = BudgetWindow(limit=None, remaining=7, reset_at=None, in_flight=2)
    assert await store.update(ROUTE, lambda old: (window, old)) is None
    assert await store.update(ROUTE, lambda old: (old, old)) == window
    assert await store.update(ROUTE, lambda old: (None, old)) == window
    assert await clients[0].exists(prefix + ROUTE) == 0


async def test_a_window_is_kept_until_forget_after_past_its_reset(
    clients: list[redis.asyncio.Redis], prefix: str
) -> None:
    store = RedisBudgetStore(clients[0], prefix=prefix)
    reset_at = time.time() + 30
    await store.update(ROUTE, lambda old: (BudgetWindow(100, 50, reset_at), None))
    ttl_ms = await clients[0].pttl(prefix + ROUTE)
    assert (30 + FORGET_AFTER - 5) * 1000 < ttl_ms <= (30 + FORGET_AFTER) * 1000
    await store.update(ROUTE, lambda old: (BudgetWindow(100, 50, None), None))
    assert await clients[0].pttl(prefix + ROUTE) <= FORGET_AFTER * 1000


async def test_update_raises_when_redis_cannot_answer(tmp_path: object) -> None:
    server = RedisServer(tmp_path).start()  # type: ignore[arg-type]
    client = redis.asyncio.Redis.from_url(server.url)
    store = RedisBudgetStore(client, timeout=0.2, retry_interval=60)
    frozen_store = RedisBudgetStore(client, timeout=0.2, retry_interval=60)
    try:
        await store.update(ROUTE, _spend)
        await frozen_store.update(ROUTE, _spend)
        server.freeze()
        with pytest.raises(TimeoutError):
            await frozen_store.update(ROUTE, _spend)
        with pytest.raises(RuntimeError, match="Redis failed moments ago"):  # at once, Redis not asked
            await frozen_store.update(ROUTE, _spend)
        server.thaw()
        server.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.update(ROUTE, _spend)
    finally:
        server.stop()
        await client.aclose()


def test_arguments_are_checked() -> None:
    with pytest.raises(ValidationError, match="client must be"):
        RedisBudgetStore(object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="timeout must be"):
        RedisBudgetStore(redis.asyncio.Redis(), timeout=0)
    with pytest.raises(ValidationError, match="max_attempts must be"):
        RedisBudgetStore(redis.asyncio.Redis(), max_attempts=0)
