"""The entitlement cache against the embedded BillingOS, in-process: what it answers, and how many requests
the server received for it (``fake.requests_to``), never only what the client saw.

Time is an injected clock; backoff sleeps are recorded, not waited (the ``policy`` fixture); a check is held
in flight by a gate in front of the fake's transport, not by sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import attrs
import httpx2
import pytest
import respx

import billingos._cache
from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    AuthorizationError,
    BillingOS,
    BillingOSError,
    CacheStats,
    Entitlement,
    EntitlementCache,
    EntitlementReason,
    FeatureType,
    NetworkError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UsageRecord,
    UsageSnapshot,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault

from ._factories import Clock, check_json

CHECK = "GET /v1/usage/check"
TRACK = "POST /v1/usage/track"
FAKE_URL = "http://billingos.fake"
USER = "user_42"
QUOTA = 10
"""The ``api_calls`` quota of the seeded Pro plan."""


class Gate(httpx2.AsyncBaseTransport):
    """The fake's in-process transport, with ``GET /v1/usage/check`` held until :meth:`open`.

    Build it inside the running event loop (it holds anyio events).
    """

    def __init__(self, fake: FakeBillingOS) -> None:
        self._inner = fake.transport()
        self._open = anyio.Event()
        self._arrived = anyio.Event()
        self.held = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/v1/usage/check":
            self.held += 1
            self._arrived.set()
            await self._open.wait()
        return await self._inner.handle_async_request(request)

    async def arrived(self) -> None:
        """Until a check is held at the gate."""
        await self._arrived.wait()

    def open(self) -> None:
        self._open.set()

    async def aclose(self) -> None:
        await self._inner.aclose()


def seed(fake: FakeBillingOS) -> None:
    fake.add_feature("api_calls", "usage_quota")
    fake.add_feature("sso", "boolean_flag")
    plan = fake.add_product("Pro", features={"api_calls": QUOTA, "sso": True})
    fake.add_customer(USER)
    fake.subscribe(USER, plan.price_id)


def checks(fake: FakeBillingOS) -> int:
    """How many entitlement checks the server received."""
    return len(fake.requests_to(CHECK))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> EntitlementCache:
    return EntitlementCache(ttl=30, stale_if_error=300, clock=clock)


@pytest.fixture
def fake() -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None, seed=7)
    seed(fake)
    return fake


@pytest.fixture
async def client(
    fake: FakeBillingOS, cache: EntitlementCache, policy: RetryPolicy
) -> AsyncIterator[AsyncBillingOS]:
    """An ``AsyncBillingOS`` with ``cache``, on the fake in-process; retries record their sleeps."""
    async with fake.client(entitlement_cache=cache, retry_policy=policy) as billing:
        yield billing


@pytest.fixture
def sync_client(fake: FakeBillingOS, cache: EntitlementCache, policy: RetryPolicy) -> Iterator[BillingOS]:
    with fake.sync_client(entitlement_cache=cache, retry_policy=policy) as billing:
        yield billing


async def gated_client(
    fake: FakeBillingOS, cache: EntitlementCache, policy: RetryPolicy
) -> tuple[AsyncBillingOS, Gate, httpx2.AsyncClient]:
    gate = Gate(fake)
    http = httpx2.AsyncClient(transport=gate, base_url=FAKE_URL)
    billing = AsyncBillingOS(
        fake.secret_key, api_url=FAKE_URL, http_client=http, entitlement_cache=cache, retry_policy=policy
    )
    return billing, gate, http


# -- configuration ------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    cache = EntitlementCache()
    assert (cache.ttl, cache.stale_if_error, cache.max_entries, cache.on_unavailable) == (
        30.0,
        300.0,
        100_000,
        "raise",
    )
    assert cache.stats == CacheStats()
    assert repr(cache) == (
        "EntitlementCache(ttl=30.0, stale_if_error=300.0, max_entries=100000, on_unavailable='raise', size=0)"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": -1}, r"ttl must be a finite number of seconds >= 0, got -1"),
        ({"ttl": float("nan")}, r"ttl must be a finite number"),
        ({"ttl": "30"}, r"ttl must be a number of seconds, not str"),
        ({"ttl": True}, r"ttl must be a number of seconds, not bool"),
        ({"stale_if_error": float("inf")}, r"stale_if_error must be a finite number of seconds >= 0"),
        ({"max_entries": 0}, r"max_entries must be an int >= 1, got 0"),
        ({"max_entries": 1.5}, r"max_entries must be an int >= 1, got 1.5"),
        ({"on_unavailable": "open"}, r"on_unavailable must be 'raise', 'allow' or 'deny', got 'open'"),
        ({"clock": 3.0}, r"clock must be a callable returning seconds, not float"),
    ],
)
def test_constructor_refuses_bad_settings_with_a_clear_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        EntitlementCache(**kwargs)
    assert info.value.code == "invalid_argument"


def test_settings_are_read_only() -> None:
    cache = EntitlementCache(ttl=5)
    with pytest.raises(AttributeError):
        cache.ttl = 10  # type: ignore[misc]


async def test_a_cache_refuses_a_client_of_another_account(
    fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    async with fake.client(entitlement_cache=cache):
        with pytest.raises(ValidationError, match="another secret key or API URL"):
            AsyncBillingOS(fake.add_secret_key(), api_url=FAKE_URL, entitlement_cache=cache)


async def test_check_refuses_a_cache_argument_that_is_not_a_bool(client: AsyncBillingOS) -> None:
    with pytest.raises(ValidationError, match="cache must be True or False, got 0"):
        await client.entitlements.check(USER, "sso", cache=0)  # type: ignore[arg-type]


# -- fresh hits, TTL, LRU -----------------------------------------------------------------------


async def test_fresh_hit_is_answered_from_memory_without_a_request(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    first = await client.entitlements.check(USER, "api_calls")
    second = await client.entitlements.check(USER, "api_calls")
    third = await client.check_entitlement(USER, "api_calls")

    assert first == second == third
    assert first.has_access
    assert first.remaining == QUOTA
    assert not first.stale
    assert checks(fake) == 1
    assert cache.stats == CacheStats(hits=2, misses=1, size=1)


async def test_entry_expires_after_ttl(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache, clock: Clock
) -> None:
    await client.entitlements.check(USER, "sso")
    clock.advance(29.999)
    await client.entitlements.check(USER, "sso")
    assert checks(fake) == 1
    clock.advance(0.001)  # exactly ttl old: expired
    await client.entitlements.check(USER, "sso")
    assert checks(fake) == 2
    assert cache.stats.hits == 1
    assert cache.stats.misses == 2


async def test_ttl_counts_from_the_refetch(client: AsyncBillingOS, fake: FakeBillingOS, clock: Clock) -> None:
    await client.entitlements.check(USER, "sso")
    clock.advance(30)
    await client.entitlements.check(USER, "sso")  # refetched at t=30
    clock.advance(29)
    await client.entitlements.check(USER, "sso")
    assert checks(fake) == 2


async def test_ttl_zero_always_asks_but_concurrent_checks_share_one_request(
    fake: FakeBillingOS, clock: Clock, policy: RetryPolicy
) -> None:
    cache = EntitlementCache(ttl=0, clock=clock)
    async with fake.client(entitlement_cache=cache, retry_policy=policy) as billing:
        await billing.entitlements.check(USER, "sso")
        await billing.entitlements.check(USER, "sso")
        assert checks(fake) == 2
        await asyncio.gather(*(billing.entitlements.check(USER, "sso") for _ in range(20)))
    assert checks(fake) == 3


async def test_least_recently_used_entry_is_evicted_at_max_entries(
    fake: FakeBillingOS, clock: Clock, policy: RetryPolicy
) -> None:
    fake.add_customer("user_7")
    cache = EntitlementCache(max_entries=2, clock=clock)
    async with fake.client(entitlement_cache=cache, retry_policy=policy) as billing:
        await billing.entitlements.check(USER, "sso")  # A
        await billing.entitlements.check(USER, "api_calls")  # B
        await billing.entitlements.check(USER, "sso")  # A used again: B is now the oldest
        await billing.entitlements.check("user_7", "sso")  # C evicts B
        assert cache.stats.evictions == 1
        assert len(cache) == 2
        assert cache.get_fresh(USER, "sso") is not None
        assert cache.get_fresh(USER, "api_calls") is None
        assert cache.get_fresh("user_7", "sso") is not None
        assert checks(fake) == 3


# -- single flight ------------------------------------------------------------------------------


async def test_1000_concurrent_identical_checks_send_exactly_one_request(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    results = await asyncio.gather(*(client.entitlements.check(USER, "api_calls") for _ in range(1000)))

    assert len(fake.requests_to(CHECK)) == 1
    assert all(r == results[0] for r in results)
    assert results[0].has_access
    assert cache.stats == CacheStats(misses=1, coalesced=999, size=1)


async def test_concurrent_checks_of_different_keys_are_not_coalesced(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    await asyncio.gather(
        *(client.entitlements.check(USER, feature) for feature in ("sso", "api_calls") for _ in range(50))
    )
    assert sorted(r.query["feature_key"] for r in fake.requests_to(CHECK)) == ["api_calls", "sso"]


async def test_a_failure_is_delivered_to_every_waiter(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    fake.inject(CHECK, Fault.error(401))

    results = await asyncio.gather(
        *(client.entitlements.check(USER, "sso") for _ in range(100)), return_exceptions=True
    )

    assert checks(fake) == 1
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert len(cache) == 0
    assert await client.entitlements.check(USER, "sso")  # the next check asks again, and succeeds
    assert checks(fake) == 2


async def test_a_cancelled_waiter_does_not_cancel_the_others(
    fake: FakeBillingOS, cache: EntitlementCache, policy: RetryPolicy
) -> None:
    billing, gate, http = await gated_client(fake, cache, policy)
    async with http, billing:
        leader = asyncio.create_task(billing.entitlements.check(USER, "api_calls"))
        cancelled = asyncio.create_task(billing.entitlements.check(USER, "api_calls"))
        survivor = asyncio.create_task(billing.entitlements.check(USER, "api_calls"))
        await gate.arrived()

        leader.cancel()  # the one whose call started the request
        cancelled.cancel()
        await asyncio.gather(leader, cancelled, return_exceptions=True)
        assert leader.cancelled()
        assert cancelled.cancelled()
        assert not survivor.done()

        gate.open()
        ent = await survivor
        assert ent.has_access
        assert gate.held == 1
        assert checks(fake) == 1
        assert cache.get_fresh(USER, "api_calls") == ent  # the detached fetch stored its answer
        assert cache.stats.misses == 1
        assert cache.stats.coalesced == 2


async def test_the_fetch_completes_and_is_cached_when_every_waiter_is_cancelled(
    fake: FakeBillingOS, cache: EntitlementCache, policy: RetryPolicy
) -> None:
    billing, gate, http = await gated_client(fake, cache, policy)
    async with http, billing:
        waiter = asyncio.create_task(billing.entitlements.check(USER, "sso"))
        await gate.arrived()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.open()
        for _ in range(100):  # the detached fetch finishes on its own
            if cache.get_fresh(USER, "sso") is not None:
                break
            await asyncio.sleep(0)
        assert cache.get_fresh(USER, "sso") is not None
        assert checks(fake) == 1


async def test_a_check_issued_after_a_fetch_completed_does_not_join_it(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache, clock: Clock
) -> None:
    await client.entitlements.check(USER, "sso")
    clock.advance(31)
    await client.entitlements.check(USER, "sso")
    assert checks(fake) == 2
    assert cache.stats.coalesced == 0


# -- stale-if-error and on_unavailable ----------------------------------------------------------

UNAVAILABLE = [
    pytest.param(Fault.error(503), ServerError, id="503"),
    pytest.param(Fault.reset(), NetworkError, id="reset"),
    pytest.param(Fault.error(429, retry_after=1000), RateLimitError, id="429"),
]


@pytest.mark.parametrize(("fault", "error"), UNAVAILABLE)
async def test_stale_answer_is_served_while_billingos_is_unavailable(
    client: AsyncBillingOS,
    fake: FakeBillingOS,
    cache: EntitlementCache,
    clock: Clock,
    fault: Fault,
    error: type[BillingOSError],
) -> None:
    fresh = await client.entitlements.check(USER, "api_calls")
    clock.advance(120)
    fake.inject(CHECK, fault, times=None)

    stale = await client.entitlements.check(USER, "api_calls")

    assert stale.stale is True
    assert stale == attrs.evolve(fresh, stale=True)
    assert checks(fake) > 1  # it did ask (and retried what may be retried)
    assert cache.stats.stale == 1
    assert cache.get_fresh(USER, "api_calls") is None  # the stale answer is not made fresh again


@pytest.mark.parametrize(("fault", "error"), UNAVAILABLE)
async def test_stale_answer_is_not_served_after_stale_if_error(
    client: AsyncBillingOS,
    fake: FakeBillingOS,
    clock: Clock,
    fault: Fault,
    error: type[BillingOSError],
) -> None:
    await client.entitlements.check(USER, "api_calls")
    fake.inject(CHECK, fault, times=None)
    clock.advance(300)  # exactly stale_if_error old, counted from when it arrived: still served
    assert (await client.entitlements.check(USER, "api_calls")).stale
    clock.advance(0.001)
    with pytest.raises(error):
        await client.entitlements.check(USER, "api_calls")


async def test_all_waiters_get_the_same_stale_answer_from_one_failed_request(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache, clock: Clock
) -> None:
    await client.entitlements.check(USER, "sso")
    clock.advance(60)
    fake.inject(CHECK, Fault.error(429, retry_after=1000), times=None)  # not retried: one request

    results = await asyncio.gather(*(client.entitlements.check(USER, "sso") for _ in range(50)))

    assert all(r.stale and r.has_access for r in results)
    assert checks(fake) == 2
    assert cache.stats.stale == 50
    assert cache.stats.coalesced == 49


@pytest.mark.parametrize(("fault", "error"), UNAVAILABLE)
@pytest.mark.parametrize("policy_name", ["raise", "allow", "deny"])
async def test_on_unavailable_policy_when_nothing_is_cached(
    fake: FakeBillingOS,
    clock: Clock,
    policy: RetryPolicy,
    policy_name: Any,
    fault: Fault,
    error: type[BillingOSError],
) -> None:
    cache = EntitlementCache(on_unavailable=policy_name, clock=clock)
    fake.inject(CHECK, fault, times=None)
    async with fake.client(entitlement_cache=cache, retry_policy=policy) as billing:
        if policy_name == "raise":
            with pytest.raises(error):
                await billing.entitlements.check(USER, "api_calls")
            assert cache.stats.unavailable == 0
        else:
            ent = await billing.entitlements.check(USER, "api_calls")
            assert ent == Entitlement(
                "api_calls",
                has_access=policy_name == "allow",
                reason=EntitlementReason.BILLINGOS_UNAVAILABLE,
            )
            assert ent.reason == "billingos_unavailable"
            assert cache.stats.unavailable == 1
        assert len(cache) == 0  # a policy answer is never cached
        fake.clear_faults()
        ent = await billing.entitlements.check(USER, "api_calls")
        assert ent.has_access
        assert ent.reason is None


async def test_on_unavailable_applies_once_the_stale_entry_is_too_old(
    fake: FakeBillingOS, clock: Clock, policy: RetryPolicy
) -> None:
    cache = EntitlementCache(stale_if_error=60, on_unavailable="deny", clock=clock)
    async with fake.client(entitlement_cache=cache, retry_policy=policy) as billing:
        await billing.entitlements.check(USER, "sso")
        fake.inject(CHECK, Fault.error(503), times=None)
        clock.advance(61)
        ent = await billing.entitlements.check(USER, "sso")
    assert not ent.has_access
    assert ent.reason == EntitlementReason.BILLINGOS_UNAVAILABLE


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthenticationError), (403, AuthorizationError), (400, ValidationError)],
)
async def test_other_errors_are_raised_even_with_a_stale_entry_and_allow(
    fake: FakeBillingOS, clock: Clock, policy: RetryPolicy, status: int, error: type[BillingOSError]
) -> None:
    cache = EntitlementCache(on_unavailable="allow", clock=clock)
    async with fake.client(entitlement_cache=cache, retry_policy=policy) as billing:
        await billing.entitlements.check(USER, "sso")
        clock.advance(31)
        fake.inject(CHECK, Fault.error(status), times=None)
        with pytest.raises(error):
            await billing.entitlements.check(USER, "sso")
        with pytest.raises(error):
            await billing.entitlements.check(USER, "api_calls")  # nothing cached: not "allow" either
    assert cache.stats.stale == cache.stats.unavailable == 0


# -- local consumption --------------------------------------------------------------------------


async def test_track_updates_the_cached_entry_from_the_usage_snapshot(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    before = await client.entitlements.check(USER, "api_calls")
    await client.usage.track(USER, "api_calls", 4)

    after = await client.entitlements.check(USER, "api_calls")

    assert checks(fake) == 1
    assert (after.has_access, after.usage, after.remaining, after.limit) == (True, 4, QUOTA - 4, QUOTA)
    assert after.resets_at == before.resets_at
    assert after.feature_type == FeatureType.USAGE_QUOTA
    await client.usage.track(USER, "api_calls", QUOTA - 4)
    spent = await client.entitlements.check(USER, "api_calls")
    assert checks(fake) == 1
    assert (spent.has_access, spent.reason, spent.remaining) == (False, "quota_exceeded", 0)


async def test_a_customer_cannot_run_past_the_quota_on_a_cached_has_access(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    served = 0
    while (await client.check_entitlement(USER, "api_calls")).has_access:
        await client.track_usage(USER, "api_calls")
        served += 1
        assert served <= QUOTA
    assert served == QUOTA
    assert fake.usage_of(USER, "api_calls") == QUOTA
    assert checks(fake) == 1  # every decision after the first came from the cache


async def test_quota_exceeded_from_track_drops_the_entry(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    await client.entitlements.check(USER, "api_calls")  # cached: 10 remaining
    async with fake.client() as elsewhere:  # another process spends 8
        await elsewhere.usage.track(USER, "api_calls", 8)

    with pytest.raises(QuotaExceededError):
        await client.usage.track(USER, "api_calls", 5)

    assert cache.get_fresh(USER, "api_calls") is None
    ent = await client.entitlements.check(USER, "api_calls")
    assert (ent.remaining, checks(fake)) == (2, 2)


async def test_not_found_from_track_drops_the_entry(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    await client.entitlements.check(USER, "api_calls")
    fake.inject(TRACK, Fault.error(404))
    with pytest.raises(BillingOSError):
        await client.usage.track(USER, "api_calls")
    assert cache.get_fresh(USER, "api_calls") is None


async def test_a_transient_track_failure_keeps_the_entry(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    await client.entitlements.check(USER, "api_calls")
    fake.inject(TRACK, Fault.error(503), times=None)
    with pytest.raises(ServerError):
        await client.usage.track(USER, "api_calls")
    assert cache.get_fresh(USER, "api_calls") is not None  # kept as the stale-if-error fallback


async def test_a_replayed_track_does_not_move_cached_usage_backwards(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    await client.entitlements.check(USER, "api_calls")
    await client.usage.track(USER, "api_calls", 1, idempotency_key="first")
    await client.usage.track(USER, "api_calls", 2)
    replay = await client.usage.track(USER, "api_calls", 1, idempotency_key="first")
    assert replay.usage is not None
    assert replay.usage.consumed_units == 1

    ent = await client.entitlements.check(USER, "api_calls")
    assert (ent.usage, ent.remaining) == (3, QUOTA - 3)


async def test_track_without_a_cached_entry_creates_none(
    client: AsyncBillingOS, cache: EntitlementCache
) -> None:
    await client.usage.track(USER, "api_calls")
    assert len(cache) == 0


async def test_a_check_in_flight_during_a_track_does_not_store_its_older_answer(
    fake: FakeBillingOS, cache: EntitlementCache, policy: RetryPolicy
) -> None:
    billing, gate, http = await gated_client(fake, cache, policy)
    async with http, billing:
        pending = asyncio.create_task(billing.entitlements.check(USER, "api_calls"))
        await gate.arrived()
        await billing.usage.track(USER, "api_calls", 3)  # tracks are not gated
        gate.open()
        await pending  # answered (before or after the track: it cannot know)
        assert cache.get_fresh(USER, "api_calls") is None  # but not stored
        ent = await billing.entitlements.check(USER, "api_calls")
        assert ent.usage == 3


def test_on_tracked_without_a_snapshot_or_for_another_feature_type_drops_the_entry(
    cache: EntitlementCache,
) -> None:
    record = UsageRecord(feature_key="api_calls", quantity=1)
    cache.put(USER, "api_calls", Entitlement("api_calls", has_access=True, limit=10, usage=0, remaining=10))
    cache.on_tracked(USER, "api_calls", record)
    assert cache.get_fresh(USER, "api_calls") is None

    flag = Entitlement("sso", has_access=True, feature_type=FeatureType.BOOLEAN_FLAG)
    cache.put(USER, "sso", flag)
    cache.on_tracked(USER, "sso", UsageRecord("sso", 1, usage=UsageSnapshot(consumed_units=1)))
    assert cache.get_fresh(USER, "sso") is None


def test_on_tracked_accepts_a_new_period_even_with_lower_usage(cache: EntitlementCache) -> None:
    end = datetime(2026, 3, 1, tzinfo=UTC)
    cache.put(USER, "api_calls", Entitlement("api_calls", False, "quota_exceeded", 10, 10, 0, end))  # type: ignore[arg-type]
    snapshot = UsageSnapshot(1, 10, 9, period_start=end, period_end=end + timedelta(days=31))
    cache.on_tracked(USER, "api_calls", UsageRecord("api_calls", 1, usage=snapshot))
    ent = cache.get_fresh(USER, "api_calls")
    assert ent is not None
    assert (ent.has_access, ent.reason, ent.usage, ent.remaining) == (True, None, 1, 9)
    assert ent.resets_at == end + timedelta(days=31)


# -- customer_not_found, bypass, invalidate, clear, sharing ---------------------------------------


async def test_customer_not_found_is_cached_like_any_answer(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    first = await client.entitlements.check("user_new", "sso")
    second = await client.entitlements.check("user_new", "sso")
    assert first == second
    assert (first.has_access, first.reason) == (False, EntitlementReason.CUSTOMER_NOT_FOUND)
    assert checks(fake) == 1


async def test_cache_false_asks_billingos_and_stores_the_answer(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    await client.entitlements.check(USER, "api_calls")
    async with fake.client() as elsewhere:
        await elsewhere.usage.track(USER, "api_calls", 3)

    direct = await client.entitlements.check(USER, "api_calls", cache=False)
    cached = await client.entitlements.check(USER, "api_calls")

    assert checks(fake) == 2
    assert direct == cached
    assert direct.usage == 3
    assert cache.stats == CacheStats(hits=1, misses=1, size=1)  # the bypass is not counted


async def test_cache_false_raises_instead_of_falling_back(
    client: AsyncBillingOS, fake: FakeBillingOS, clock: Clock
) -> None:
    await client.entitlements.check(USER, "sso")
    clock.advance(60)
    fake.inject(CHECK, Fault.error(503), times=None)
    with pytest.raises(ServerError):
        await client.entitlements.check(USER, "sso", cache=False)
    assert (await client.entitlements.check(USER, "sso")).stale


async def test_invalidate_one_feature_or_all_of_a_customer(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    fake.add_customer("user_7")
    for customer in (USER, "user_7"):
        for feature in ("sso", "api_calls"):
            await client.entitlements.check(customer, feature)
    cache.invalidate(USER, "sso")
    assert cache.get_fresh(USER, "sso") is None
    assert cache.get_fresh(USER, "api_calls") is not None
    cache.invalidate(USER)
    assert cache.get_fresh(USER, "api_calls") is None
    assert len(cache) == 2  # user_7's answers are kept
    await client.entitlements.check(USER, "sso")
    assert checks(fake) == 5


def test_invalidate_validates_its_arguments(cache: EntitlementCache) -> None:
    with pytest.raises(ValidationError, match="customer_id must not be empty"):
        cache.invalidate("")
    with pytest.raises(ValidationError, match="feature_key must be a str"):
        cache.invalidate(USER, 3)  # type: ignore[arg-type]


async def test_invalidate_during_a_fetch_keeps_its_answer_out_of_the_cache(
    fake: FakeBillingOS, cache: EntitlementCache, policy: RetryPolicy
) -> None:
    billing, gate, http = await gated_client(fake, cache, policy)
    async with http, billing:
        pending = asyncio.create_task(billing.entitlements.check(USER, "sso"))
        await gate.arrived()
        cache.invalidate(USER)  # e.g. a webhook said the plan changed
        later = asyncio.create_task(billing.entitlements.check(USER, "sso"))  # does not join
        await asyncio.sleep(0)
        gate.open()
        await asyncio.gather(pending, later)
        assert gate.held == 2
        assert cache.get_fresh(USER, "sso") is not None  # stored by the second fetch only


async def test_clear_forgets_everything_but_the_counters(
    client: AsyncBillingOS, cache: EntitlementCache
) -> None:
    await client.entitlements.check(USER, "sso")
    await client.entitlements.check(USER, "sso")
    cache.clear()
    assert len(cache) == 0
    assert cache.stats.size == 0
    assert cache.stats.hits == 1


async def test_with_options_copies_share_the_cache(
    client: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    await client.entitlements.check(USER, "sso")
    fast = client.with_options(timeout=2, max_retries=0)
    assert fast.entitlement_cache is cache
    await fast.entitlements.check(USER, "sso")
    await fast.usage.track(USER, "api_calls")  # and its tracks update it
    assert checks(fake) == 1
    assert cache.stats.hits == 1


async def test_a_closed_client_does_not_answer_from_the_cache(
    fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    async with fake.client(entitlement_cache=cache) as billing:
        await billing.entitlements.check(USER, "sso")
    with pytest.raises(BillingOSError) as info:
        await billing.entitlements.check(USER, "sso")
    assert info.value.code == "client_closed"


async def test_a_stale_field_on_the_wire_is_ignored(router: respx.MockRouter) -> None:
    from ._factories import BASE_URL, SECRET

    router.get("/v1/usage/check").respond(200, json=check_json(stale=True))
    async with AsyncBillingOS(SECRET, api_url=BASE_URL) as billing:
        assert (await billing.entitlements.check(USER, "api_calls")).stale is False


# -- the blocking facade ------------------------------------------------------------------------


def test_sync_hit_makes_no_request_and_no_thread_hop(
    sync_client: BillingOS, fake: FakeBillingOS, cache: EntitlementCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sync_client.entitlements.check(USER, "api_calls")

    def no_hop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cache hit went to the loop thread")

    monkeypatch.setattr(sync_client._runner, "run", no_hop)
    assert sync_client.entitlements.check(USER, "api_calls") == first
    assert sync_client.check_entitlement(customer_id=USER, feature_key="api_calls") == first
    assert sync_client.with_options(max_retries=0).check_entitlement(USER, "api_calls") == first
    assert checks(fake) == 1
    assert cache.stats.hits == 3
    with pytest.raises(AssertionError, match="went to the loop thread"):
        sync_client.entitlements.check(USER, "api_calls", cache=False)  # a bypass does hop
    with pytest.raises(AssertionError, match="went to the loop thread"):
        sync_client.entitlements.check(USER, "sso")  # so does a miss


def test_sync_facade_coalesces_misses_from_many_threads(
    sync_client: BillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    barrier = threading.Barrier(8)
    results: list[Entitlement] = []

    def worker() -> None:
        barrier.wait()
        results.append(sync_client.check_entitlement(USER, "sso"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r.has_access for r in results)
    assert checks(fake) == 1  # one loop thread: every miss joined the same flight, or hit
    assert cache.stats.misses == 1


def test_sync_track_updates_the_cache(sync_client: BillingOS, fake: FakeBillingOS) -> None:
    sync_client.check_entitlement(USER, "api_calls")
    sync_client.track_usage(USER, "api_calls", QUOTA)
    assert not sync_client.check_entitlement(USER, "api_calls").has_access
    assert checks(fake) == 1


def test_sync_closed_facade_does_not_answer_from_the_cache(
    fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    with fake.sync_client(entitlement_cache=cache) as billing:
        billing.check_entitlement(USER, "sso")
    with pytest.raises(BillingOSError) as info:
        billing.check_entitlement(USER, "sso")
    assert info.value.code == "client_closed"


def test_sync_signature_still_mirrors_the_async_method(sync_client: BillingOS) -> None:
    import inspect

    from billingos import AsyncEntitlements

    expected = list(inspect.signature(AsyncEntitlements.check).parameters)[1:]
    assert list(inspect.signature(sync_client.entitlements.check).parameters) == expected
    assert "cache" in expected
    assert sync_client.entitlements.check.__doc__ == AsyncEntitlements.check.__doc__


# -- thread safety, fork, other event loops -----------------------------------------------------


def test_eight_threads_hammering_the_cache_keep_it_consistent() -> None:
    clock = Clock()
    cache = EntitlementCache(max_entries=50, clock=clock)
    record = UsageRecord("f0", 1, usage=UsageSnapshot(consumed_units=1, limit_units=10, remaining_units=9))
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(4000):
                customer, feature = f"c{(i * 7 + n) % 40}", f"f{i % 3}"
                op = (i + n) % 5
                if op == 0:
                    cache.put(customer, feature, Entitlement(feature, has_access=True, limit=10, usage=0))
                elif op == 1:
                    cache.on_tracked(customer, feature, record)
                elif op == 2 and i % 50 == 0:
                    cache.invalidate(customer)
                else:
                    cache.get_fresh(customer, feature)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(cache) <= 50
    indexed = {(c, f) for c, features in cache._features.items() for f in features}
    assert indexed == set(cache._entries)  # the per-customer index matches the entries exactly
    assert cache.stats.size == len(cache)


def test_hits_counted_from_eight_threads_are_exact() -> None:
    cache = EntitlementCache(clock=Clock())
    cache.put(USER, "sso", Entitlement("sso", has_access=True))

    def worker() -> None:
        for _ in range(5000):
            assert cache.get_fresh(USER, "sso") is not None

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.stats.hits == 40_000


def test_a_forked_child_gets_a_fresh_lock_and_no_flights(cache: EntitlementCache) -> None:
    cache.put(USER, "sso", Entitlement("sso", has_access=True))
    held = cache._lock
    held.acquire()  # as if another thread held it at fork time
    try:
        billingos._cache._reset_caches_after_fork()
        assert cache._lock is not held
        assert cache.get_fresh(USER, "sso") is not None  # entries survive; no deadlock
    finally:
        held.release()


def test_caches_on_two_event_loops_do_not_share_a_flight(fake: FakeBillingOS, clock: Clock) -> None:
    cache = EntitlementCache(clock=clock)

    async def main() -> Entitlement:
        async with fake.client(entitlement_cache=cache) as billing:
            return await billing.entitlements.check(USER, "sso")

    assert asyncio.run(main()).has_access
    clock.advance(31)
    assert asyncio.run(main()).has_access  # a new loop: a new flight, not the old loop's
    assert checks(fake) == 2


def test_trio_backend_coalesces_and_a_cancelled_leader_hands_over(fake: FakeBillingOS, clock: Clock) -> None:
    import trio  # noqa: F401  (a dev dependency: this test must run, not skip)

    cache = EntitlementCache(clock=clock)

    async def main() -> None:
        gate = Gate(fake)
        async with (
            httpx2.AsyncClient(transport=gate, base_url=FAKE_URL) as http,
            AsyncBillingOS(fake.secret_key, api_url=FAKE_URL, http_client=http, entitlement_cache=cache) as b,
        ):
            results: list[Entitlement] = []

            async def check() -> None:
                results.append(await b.entitlements.check(USER, "sso"))

            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(check)
                await anyio.wait_all_tasks_blocked()
                gate.open()
            assert len(results) == 50
            assert checks(fake) == 1
            assert cache.stats.misses == 1
            assert cache.stats.coalesced == 49

        gate = Gate(fake)
        async with (
            httpx2.AsyncClient(transport=gate, base_url=FAKE_URL) as http,
            AsyncBillingOS(fake.secret_key, api_url=FAKE_URL, http_client=http, entitlement_cache=cache) as b,
        ):
            clock.advance(31)
            leader_scope = anyio.CancelScope()

            async def leader() -> None:
                with leader_scope:
                    await b.entitlements.check(USER, "sso")

            async with anyio.create_task_group() as tg:
                tg.start_soon(leader)
                await gate.arrived()  # the leader's request is in flight
                tg.start_soon(check)
                await anyio.wait_all_tasks_blocked()  # the waiter has joined it
                leader_scope.cancel()
                gate.open()
            assert len(results) == 51
            assert results[-1].has_access
            # On trio the fetch runs in the leader: cancelled, it ends, and the waiter leads a new one.
            assert gate.held == 2
            assert cache.stats.coalesced == 50
            assert cache.stats.misses == 3  # the first flight, the cancelled leader, the take-over

    anyio.run(main, backend="trio")
