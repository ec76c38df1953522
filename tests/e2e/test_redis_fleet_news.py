"""Tracks reach the fleet's memory (issue 15, item 3): process B caches an answer, process A tracks, and B's
next check reflects the track from B's own memory, with no request to BillingOS for it. Each "process"
has its own redis connection (two OS processes in one test); a real redis-server, the fake on loopback.
Waits are on counts (a bounded poll), never on a duration."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio

from billingos import AsyncBillingOS, BillingOS, EntitlementCache, RedisStore, RetryPolicy
from billingos.testing import FakeBillingOS

from .._redis_server import RedisServer
from .._redis_server import own_redis as own_redis  # a fixture
from .._redis_server import redis_server as redis_server  # a fixture
from ._helpers import QUOTA

pytestmark = pytest.mark.usefixtures("seeded")

CHECK = "GET /v1/usage/check"
CHILD = str(Path(__file__).resolve().parents[1] / "_redis_news_child.py")


@pytest.fixture
def prefix() -> str:
    return f"n{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def two_redis(redis_server: RedisServer) -> AsyncIterator[list[redis.asyncio.Redis]]:
    """Two clients, two connection pools: what two processes would have."""
    made = [redis.asyncio.Redis.from_url(redis_server.url) for _ in range(2)]
    yield made
    for client in made:
        await client.aclose()


def _client(fake: FakeBillingOS, url: str, policy: RetryPolicy, cache: EntitlementCache) -> AsyncBillingOS:
    return AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy, entitlement_cache=cache)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """A bounded poll of a state (a count, a flag), not a duration."""
    end = time.monotonic() + 10
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _channel(cache: EntitlementCache) -> str:
    assert cache.store is not None
    return cache.store._channel(cache._scope)


async def test_a_track_in_process_a_updates_process_bs_memory_without_a_request(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, two_redis: list[redis.asyncio.Redis], prefix: str
) -> None:
    a_cache = EntitlementCache(ttl=300, store=RedisStore(two_redis[0], prefix=prefix))
    b_cache = EntitlementCache(ttl=300, store=RedisStore(two_redis[1], prefix=prefix))
    async with _client(fake, url, policy, a_cache) as a, _client(fake, url, policy, b_cache) as b:
        before = await b.check_entitlement("user_42", "api_calls")  # B's miss: a request; B listens
        assert b_cache.stats.fleet_listening  # the first miss waited for the subscription
        await a.track_usage("user_42", "api_calls", QUOTA)  # A: the whole quota
        await _until(lambda: b_cache.stats.fleet_updates == 1, "B's memory to learn of A's track")
        after = await b.check_entitlement("user_42", "api_calls")  # from B's memory
    assert before.has_access
    assert (after.has_access, after.remaining, after.usage) == (False, 0, QUOTA)
    assert len(fake.requests_to(CHECK)) == 1  # B's first check, and nothing for the track's news
    assert (b_cache.stats.misses, b_cache.stats.hits) == (1, 1)
    assert a_cache.stats.fleet_updates == 0  # its own news is not applied twice


async def test_invalidate_shared_drops_the_answer_from_other_processes_memory(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, two_redis: list[redis.asyncio.Redis], prefix: str
) -> None:
    a_cache = EntitlementCache(ttl=300, store=RedisStore(two_redis[0], prefix=prefix))
    b_cache = EntitlementCache(ttl=300, store=RedisStore(two_redis[1], prefix=prefix))
    async with _client(fake, url, policy, a_cache) as a, _client(fake, url, policy, b_cache) as b:
        await b.check_entitlement("user_42", "sso")
        await b.check_entitlement("user_42", "api_calls")
        await a.entitlement_cache.invalidate_shared("user_42")  # type: ignore[union-attr]
        await _until(lambda: b_cache.stats.fleet_updates == 2, "B to drop both answers")
        assert len(b_cache) == 0
        await b.check_entitlement("user_42", "sso")  # asked again
    assert len(fake.requests_to(CHECK)) == 3


async def test_a_track_reaches_a_blocking_client_between_its_calls_and_close_ends_the_subscription(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, redis_server: RedisServer, prefix: str
) -> None:
    a_redis = redis.asyncio.Redis.from_url(redis_server.url)
    b_redis = redis.asyncio.Redis.from_url(redis_server.url)  # used on B's loop thread
    a_cache = EntitlementCache(ttl=300, store=RedisStore(a_redis, prefix=prefix))
    b_cache = EntitlementCache(ttl=300, store=RedisStore(b_redis, prefix=prefix))
    try:
        async with _client(fake, url, policy, a_cache) as a:
            b = BillingOS(fake.secret_key, api_url=url, retry_policy=policy, entitlement_cache=b_cache)
            try:
                await asyncio.to_thread(b.check_entitlement, "user_42", "api_calls")
                assert b_cache.stats.fleet_listening
                await a.track_usage("user_42", "api_calls", 7)
                # No call of B is running: its loop thread applies the news by itself.
                await _until(lambda: b_cache.stats.fleet_updates == 1, "the blocking client's memory")
                after = await asyncio.to_thread(b.check_entitlement, "user_42", "api_calls")
                assert after.remaining == QUOTA - 7
                assert b_cache.stats.hits == 1
                channel = _channel(b_cache)
                # B listens, and so does A since its track: one subscription each.
                assert (await a_redis.pubsub_numsub(channel)) == [(channel.encode(), 2)]
            finally:
                # B's idle redis connections live on B's loop: closed there. The listener's is in use,
                # left to B's close, which must end it.
                pool = b_redis.connection_pool
                await asyncio.to_thread(b._runner.run, lambda _core: pool.disconnect(inuse_connections=False))
                await asyncio.to_thread(b.close)
            assert not b_cache.stats.fleet_listening
            # B's pub/sub connection is closed: the server counts A alone (it learns of it shortly).
            await _until_async(lambda: a_redis.pubsub_numsub(channel), [(channel.encode(), 1)])
        assert not a_cache.stats.fleet_listening  # closed with A
        await _until_async(lambda: a_redis.pubsub_numsub(channel), [(channel.encode(), 0)])
        assert len(fake.requests_to(CHECK)) == 1
    finally:
        await a_redis.aclose()


async def _until_async(read: Callable[[], object], expected: object) -> None:
    end = time.monotonic() + 10
    while (got := await read()) != expected:  # type: ignore[misc]
        if time.monotonic() > end:
            raise AssertionError(f"still {got!r}, expected {expected!r}")
        await asyncio.sleep(0.005)


async def test_the_listener_survives_a_redis_restart_and_hears_tracks_again(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, own_redis: RedisServer, prefix: str
) -> None:
    a_redis = redis.asyncio.Redis.from_url(own_redis.url)
    b_redis = redis.asyncio.Redis.from_url(own_redis.url)
    a_cache = EntitlementCache(ttl=300, store=RedisStore(a_redis, prefix=prefix, retry_interval=0.05))
    b_cache = EntitlementCache(ttl=300, store=RedisStore(b_redis, prefix=prefix, retry_interval=0.05))
    try:
        async with _client(fake, url, policy, a_cache) as a, _client(fake, url, policy, b_cache) as b:
            await b.check_entitlement("user_42", "api_calls")
            assert b_cache.stats.fleet_listening
            own_redis.kill()
            await _until(lambda: not b_cache.stats.fleet_listening, "B to notice Redis is gone")
            assert b_cache.stats.store_errors >= 1
            # Redis down: B still answers from memory, never failing a call for it.
            assert (await b.check_entitlement("user_42", "api_calls")).has_access
            own_redis.restart()  # empty: the shared entry is gone with the old server
            await _until(lambda: b_cache.stats.fleet_listening, "B to subscribe again")
            await a.track_usage("user_42", "api_calls", 3)  # no shared entry: the news says "drop"
            await _until(lambda: b_cache.stats.fleet_updates == 1, "B to hear A's track")
            assert len(b_cache) == 0
    finally:
        await a_redis.aclose()
        await b_redis.aclose()
    assert len(fake.requests_to(CHECK)) == 1


def test_two_os_processes_a_track_in_one_reaches_the_others_memory(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, redis_server: RedisServer, prefix: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, CHILD, url, fake.secret_key, redis_server.url, prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        ready = child.stdout.readline()
        assert ready.startswith("READY ")
        assert json.loads(ready.removeprefix("READY "))["fleet_listening"]

        async def track() -> None:
            a_redis = redis.asyncio.Redis.from_url(redis_server.url)
            cache = EntitlementCache(store=RedisStore(a_redis, prefix=prefix))
            async with _client(fake, url, policy, cache) as a:
                await a.track_usage("user_42", "api_calls", QUOTA)
            await a_redis.aclose()

        asyncio.run(track())
        child.stdin.write("go\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    report = json.loads(out.strip().splitlines()[-1].removeprefix("DONE "))
    assert (report["has_access"], report["remaining"]) == (False, 0)
    assert report["stats"]["fleet_updates"] == 1
    assert (report["stats"]["misses"], report["stats"]["hits"]) == (1, 1)
    assert len(fake.requests_to(CHECK)) == 1
