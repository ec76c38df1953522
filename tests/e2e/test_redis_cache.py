"""The entitlement cache shared on a real Redis (issue 15, items 3 and 4): a fleet of processes sends one
upstream request per miss, a crashed lock holder is taken over within its lease, tracks reach the shared
entry, and a Redis that dies or hangs never fails a check. Counts are read at the fake on loopback and
in Redis itself."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from billingos import (
    AsyncBillingOS,
    BillingOS,
    EntitlementCache,
    RateBudget,
    RedisBudgetStore,
    RedisStore,
    RetryPolicy,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault, RateLimits

from .._factories import Clock
from .._redis_server import RedisServer
from .._redis_server import own_redis as own_redis  # a fixture
from .._redis_server import redis_server as redis_server  # a fixture
from ._helpers import QUOTA, seed, statuses
from .conftest import Mount

pytestmark = pytest.mark.usefixtures("seeded")

CHECK = "GET /v1/usage/check"
CHILD = str(Path(__file__).resolve().parents[1] / "_redis_fleet_child.py")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def rclient(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _cached(fake: FakeBillingOS, url: str, policy: RetryPolicy, cache: EntitlementCache) -> AsyncBillingOS:
    return AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy, entitlement_cache=cache)


async def _wait_for(condition: object, what: str, seconds: float = 10.0) -> None:
    """Poll a state (not a duration): a bounded wait for something the test can observe."""
    assert callable(condition)
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- the fleet --------------------------------------------------------------------------------------


def test_8_processes_x_250_concurrent_identical_misses_send_1_upstream_request(
    fake: FakeBillingOS, url: str, redis_server: RedisServer, prefix: str
) -> None:
    # The first request is slow, so every process misses while the holder's fetch is in flight.
    fake.inject(CHECK, Fault.delay(0.3), times=1)
    procs = [
        subprocess.Popen(
            [sys.executable, CHILD, url, fake.secret_key, redis_server.url, prefix, "250", "10"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "READY"
        for p in procs:  # the start line: the fleet misses at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1].removeprefix("DONE ")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert len(fake.requests_to(CHECK)) == 1
    assert sum(r["access"] for r in reports) == 8 * 250
    stats = [r["stats"] for r in reports]
    assert [s["misses"] for s in stats] == [1] * 8  # one fetch per process (its in-memory flight)...
    assert sum(s["coalesced"] for s in stats) == 8 * 249
    # ...of which one sent the request and seven took its answer from Redis.
    assert sum(s["shared_coalesced"] + s["shared_hits"] for s in stats) == 7
    assert sum(s["store_errors"] for s in stats) == 0


async def test_a_killed_lock_holder_is_taken_over_when_its_lease_ends(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, redis_server: RedisServer, prefix: str
) -> None:
    slow = fake.inject(CHECK, Fault.delay(2.0), times=1)  # the holder's request: in flight when killed
    holder = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop has anything to do
        [sys.executable, CHILD, url, fake.secret_key, redis_server.url, prefix, "1", "1.0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == "READY"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        await _wait_for(lambda: slow.hits == 1, "the holder's request at the server")
        locks = await client.keys(f"{prefix}*:l:*")
        assert len(locks) == 1  # the holder holds the lock of the miss...
        token = await client.get(locks[0])

        store = RedisStore(client, prefix=prefix, poll_interval=0.01)
        cache = EntitlementCache(store=store)
        async with _cached(fake, url, policy, cache) as billing:
            waiter = asyncio.create_task(billing.check_entitlement("user_42", "api_calls"))
            await _wait_for(lambda: cache.stats.misses == 1, "the waiter's miss")
            holder.kill()  # ...and dies with it, mid-fetch: nobody will release it
            holder.wait()
            ent = await asyncio.wait_for(waiter, 10)

        assert ent.has_access
        assert ent.remaining == QUOTA
        assert cache.stats.shared_coalesced == cache.stats.shared_hits == 0  # it fetched itself
        assert await client.get(locks[0]) is None  # the taker released its own lock
        assert token is not None
        # Two requests arrived: the holder's (answered after it died) and the taker's.
        await _wait_for(lambda: len(fake.requests_to(CHECK)) == 2, "the holder's delayed request")
        assert [r.status for r in fake.requests_to(CHECK)] == [200, 200]
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()  # reaps it and closes its pipes
        await client.aclose()


# -- one process, the shared level ------------------------------------------------------------------


async def test_a_second_process_reads_the_answer_from_redis_without_a_request(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    first = EntitlementCache(store=RedisStore(rclient, prefix=prefix))
    second = EntitlementCache(store=RedisStore(rclient, prefix=prefix))
    async with _cached(fake, url, policy, first) as a, _cached(fake, url, policy, second) as b:
        ent_a = await a.check_entitlement("user_42", "api_calls")
        ent_b = await b.check_entitlement("user_42", "api_calls")
        again = await b.check_entitlement("user_42", "api_calls")
    assert ent_a == ent_b == again
    assert len(fake.requests_to(CHECK)) == 1
    assert (second.stats.misses, second.stats.shared_hits, second.stats.hits) == (1, 1, 1)


async def test_a_track_updates_the_shared_entry_for_the_fleet(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    tracker = EntitlementCache(store=RedisStore(rclient, prefix=prefix))
    reader = EntitlementCache(store=RedisStore(rclient, prefix=prefix))
    async with _cached(fake, url, policy, tracker) as a, _cached(fake, url, policy, reader) as b:
        await a.check_entitlement("user_42", "api_calls")
        await a.track_usage("user_42", "api_calls", QUOTA)  # the whole quota
        ent = await b.check_entitlement("user_42", "api_calls")  # another process, from Redis
    assert not ent.has_access
    assert ent.remaining == 0
    assert len(fake.requests_to(CHECK)) == 1
    assert reader.stats.shared_hits == 1


async def test_a_refused_track_and_invalidate_shared_drop_the_shared_entry(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    cache = EntitlementCache(store=RedisStore(rclient, prefix=prefix))
    async with _cached(fake, url, policy, cache) as billing:
        await billing.check_entitlement("user_42", "sso")
        await billing.check_entitlement("user_42", "api_calls")
        with pytest.raises(Exception, match="quota"):
            await billing.track_usage("user_42", "api_calls", QUOTA + 1)
        (hkey,) = await rclient.keys(f"{prefix}*:e:user_42")
        assert await rclient.hkeys(hkey) == [b"sso"]
        await cache.invalidate_shared("user_42")
        assert await rclient.exists(hkey) == 0
        assert len(cache) == 0


async def test_stale_if_error_serves_the_shared_answer_when_billingos_is_down(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, rclient: redis.asyncio.Redis, prefix: str
) -> None:
    wall = [1000.0]
    writer = EntitlementCache(ttl=30, store=RedisStore(rclient, prefix=prefix, clock=lambda: wall[0]))
    reader = EntitlementCache(ttl=30, store=RedisStore(rclient, prefix=prefix, clock=lambda: wall[0]))
    async with _cached(fake, url, policy, writer) as a, _cached(fake, url, policy, reader) as b:
        fresh = await a.check_entitlement("user_42", "api_calls")
        wall[0] += 60  # the shared answer is a minute old: not fresh, still within stale_if_error
        fake.inject(CHECK, Fault.error(503), times=None)
        stale = await b.check_entitlement("user_42", "api_calls")
    assert stale.stale
    assert stale.remaining == fresh.remaining
    assert reader.stats.stale == 1


# -- Redis down or slow ------------------------------------------------------------------------------


async def test_redis_killed_mid_run_every_call_is_still_answered(
    fake: FakeBillingOS,
    url: str,
    policy: RetryPolicy,
    own_redis: RedisServer,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis.asyncio.Redis.from_url(own_redis.url)
    cache = EntitlementCache(ttl=0, store=RedisStore(client, prefix=prefix, timeout=1))
    answers = []
    async with _cached(fake, url, policy, cache) as billing:
        for i in range(60):  # ttl=0: every check goes through Redis (and BillingOS)
            if i == 30:
                own_redis.kill()
            answers.append(await billing.check_entitlement("user_42", "api_calls"))
            if i % 10 == 0:
                await billing.track_usage("user_42", "api_calls", 1)
    await client.aclose()
    assert len(answers) == 60
    assert all(a.has_access and not a.stale for a in answers)
    stats = cache.stats
    assert stats.store_down
    assert stats.store_errors >= 1
    assert len(fake.requests_to(CHECK)) == 60
    assert any("Redis unavailable" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_a_frozen_redis_costs_one_timeout_then_is_skipped(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, own_redis: RedisServer, prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(own_redis.url)
    await client.ping()
    store = RedisStore(client, prefix=prefix, timeout=0.2, retry_interval=60)
    cache = EntitlementCache(store=store)
    own_redis.freeze()
    try:
        async with _cached(fake, url, policy, cache) as billing:
            for feature in ("api_calls", "sso", "seats"):
                assert (await billing.check_entitlement("user_42", feature)).has_access
    finally:
        own_redis.thaw()
        await client.aclose()
    assert (cache.stats.store_errors, cache.stats.store_down) == (1, True)  # then Redis was skipped
    assert len(fake.requests_to(CHECK)) == 3


def test_the_blocking_client_shares_the_cache_on_redis(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, redis_server: RedisServer, prefix: str
) -> None:
    # A redis.asyncio client made here, used on the facade's loop thread (it connects on first use).
    client = redis.asyncio.Redis.from_url(redis_server.url)
    cache = EntitlementCache(store=RedisStore(client, prefix=prefix))
    with BillingOS(fake.secret_key, api_url=url, retry_policy=policy, entitlement_cache=cache) as billing:
        assert billing.check_entitlement("user_42", "api_calls").has_access
        billing.track_usage("user_42", "api_calls", 5)
        assert billing.check_entitlement("user_42", "api_calls").remaining == QUOTA - 5
        assert cache.stats.store_errors == 0
        billing._runner.run(lambda _core: client.aclose())  # its connections live on that loop
    assert len(fake.requests_to(CHECK)) == 1


def test_store_arguments_are_checked() -> None:
    with pytest.raises(ValidationError, match="store must be a RedisStore"):
        EntitlementCache(store=object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"client must be a redis\.asyncio\.Redis"):
        RedisStore(object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="lease must be"):
        RedisStore(redis.asyncio.Redis(), lease=0)


# -- the rate budget on Redis ------------------------------------------------------------------------


async def test_two_processes_sharing_a_redis_budget_get_no_429(
    mount: Mount, redis_server: RedisServer, prefix: str
) -> None:
    clock = Clock(time.time())  # budget windows are epoch times (BudgetStore's contract)
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=20, window=60), clock=clock)
    url = mount(fake)
    seed(fake)

    async def sleep(seconds: float) -> None:  # waiting for the next window: the clock jumps there
        clock.now += seconds
        await asyncio.sleep(0)

    clients = [redis.asyncio.Redis.from_url(redis_server.url) for _ in range(2)]
    billings = [
        AsyncBillingOS(
            fake.secret_key,
            api_url=url,
            rate_budget=RateBudget(store=RedisBudgetStore(c, prefix=prefix), clock=clock, sleep=sleep),
            rate_limit_wait=100_000,  # each concurrent waiter moves the shared clock on its own
        )
        for c in clients
    ]
    try:
        # Two "processes" (own clients, own budgets, one Redis) send 25 checks each: 50 against 20/min.
        answers = await asyncio.gather(
            *(b.check_entitlement("user_42", "sso") for b in billings for _ in range(25))
        )
    finally:
        for b in billings:
            await b.aclose()
        for c in clients:
            await c.aclose()
    assert all(a.has_access for a in answers)
    assert statuses(fake, CHECK).count(429) == 0
    assert len(fake.requests_to(CHECK)) == 50
