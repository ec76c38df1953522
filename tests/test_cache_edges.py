"""``EntitlementCache``: the corners the main suite (tests/test_cache.py) does not reach.

A direct ``get_or_fetch`` on a fresh entry; an outage answered by an entry stored while the fetch was
failing; invalidating what is not cached; tracks whose usage snapshot lacks ``remaining_units`` (computed
from the limit, clamped at 0, or unknown for an unlimited feature); and, on trio, what the waiters of a
cancelled leader do: take an answer stored meanwhile, or share one new fetch, each counted once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import respx

from billingos import (
    AsyncBillingOS,
    Entitlement,
    EntitlementCache,
    EntitlementReason,
    FeatureType,
    NetworkError,
    RetryPolicy,
)

from ._factories import BASE_URL, SECRET, Clock, check_json, track_json

USER, FEATURE = "user_42", "api_calls"
FRESH = Entitlement(feature_key=FEATURE, has_access=True, limit=10, usage=1, remaining=9)
OTHER = Entitlement(feature_key=FEATURE, has_access=True, limit=10, usage=2, remaining=8)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> EntitlementCache:
    return EntitlementCache(ttl=30, stale_if_error=300, on_unavailable="deny", clock=clock)


async def _never(*_: object) -> Entitlement:
    raise AssertionError("fetch must not be called")


# -- reading ----------------------------------------------------------------------------------------


async def test_get_or_fetch_answers_a_fresh_entry_from_memory(cache: EntitlementCache) -> None:
    cache.put(USER, FEATURE, FRESH)
    assert await cache.get_or_fetch(USER, FEATURE, _never) is FRESH
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.coalesced) == (1, 0, 0)


async def test_an_outage_is_answered_with_an_entry_stored_while_the_fetch_failed(
    cache: EntitlementCache, clock: Clock
) -> None:
    """A ``cache=False`` check stored a fresh answer meanwhile: that is the answer, not the deny policy."""
    cache.put(USER, FEATURE, OTHER)
    clock.now += 31  # stale: the next check fetches

    async def failing_fetch() -> Entitlement:
        cache.put(USER, FEATURE, FRESH)  # what a concurrent cache=False check does
        raise NetworkError("connection refused", code="network_error")

    answer = await cache.get_or_fetch(USER, FEATURE, failing_fetch)

    assert answer is FRESH
    assert answer.stale is False
    stats = cache.stats
    assert (stats.misses, stats.stale, stats.unavailable) == (1, 0, 0)
    assert cache.get_fresh(USER, FEATURE) is FRESH


# -- invalidation -----------------------------------------------------------------------------------


def test_invalidating_what_is_not_cached_changes_nothing(cache: EntitlementCache) -> None:
    cache.put(USER, FEATURE, FRESH)
    cache.invalidate(USER, "sso")  # cached customer, feature not cached
    cache.invalidate("user_nobody", FEATURE)  # customer not cached
    cache.invalidate("user_nobody")
    assert len(cache) == 1
    assert cache.get_fresh(USER, FEATURE) is FRESH
    cache.invalidate(USER, FEATURE)
    cache.invalidate(USER, FEATURE)  # twice: still fine
    assert len(cache) == 0
    assert cache.stats.size == 0


# -- tracks without remaining_units -----------------------------------------------------------------


@pytest.fixture
async def billing(
    router: respx.MockRouter, policy: RetryPolicy, cache: EntitlementCache
) -> AsyncIterator[AsyncBillingOS]:
    async with AsyncBillingOS(
        SECRET, api_url=BASE_URL, retry_policy=policy, entitlement_cache=cache
    ) as client:
        yield client


def _snapshot(consumed: str, limit: str | None) -> dict[str, object]:
    return {
        "consumed_units": consumed,
        "limit_units": limit,
        "period_start": "2026-02-01T00:00:00Z",
        "period_end": "2026-03-01T00:00:00Z",
    }


async def test_a_track_without_remaining_units_computes_them_from_the_limit(
    billing: AsyncBillingOS, router: respx.MockRouter, cache: EntitlementCache
) -> None:
    checks = router.get("/v1/usage/check").respond(200, json=check_json())  # 10 of 1000 used
    router.post("/v1/usage/track").respond(201, json=track_json(usage=_snapshot("15.000000", "1000.000000")))
    await billing.entitlements.check(USER, FEATURE)

    await billing.usage.track(USER, FEATURE, 5)

    ent = await billing.entitlements.check(USER, FEATURE)
    assert checks.call_count == 1  # from the cache, updated locally
    assert (ent.has_access, ent.usage, ent.limit, ent.remaining) == (True, 15, 1000, 985)
    assert ent.reason is None


async def test_a_track_past_the_limit_without_remaining_units_denies_from_the_cache(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    checks = router.get("/v1/usage/check").respond(200, json=check_json())
    router.post("/v1/usage/track").respond(
        201, json=track_json(usage=_snapshot("1003.000000", "1000.000000"))
    )
    await billing.entitlements.check(USER, FEATURE)
    await billing.usage.track(USER, FEATURE, 993)

    ent = await billing.entitlements.check(USER, FEATURE)
    assert checks.call_count == 1
    assert ent.has_access is False
    assert ent.reason == EntitlementReason.QUOTA_EXCEEDED
    assert ent.remaining == 0  # clamped, never negative


async def test_a_track_of_an_unlimited_quota_keeps_access_with_nothing_remaining_known(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    unlimited = check_json(limit=None, usage=10, metadata={"type": "usage_quota"})
    checks = router.get("/v1/usage/check").respond(200, json=unlimited)
    router.post("/v1/usage/track").respond(201, json=track_json(usage=_snapshot("12.000000", None)))
    first = await billing.entitlements.check(USER, FEATURE)
    assert (first.limit, first.remaining, first.feature_type) == (None, None, FeatureType.USAGE_QUOTA)

    await billing.usage.track(USER, FEATURE, 2)

    ent = await billing.entitlements.check(USER, FEATURE)
    assert checks.call_count == 1
    assert (ent.has_access, ent.usage, ent.limit, ent.remaining) == (True, 12, None, None)


# -- trio: the waiters of a cancelled leader --------------------------------------------------------


def test_trio_waiters_of_a_cancelled_leader_share_one_new_fetch_counted_once(clock: Clock) -> None:
    import trio  # noqa: F401  (a dev dependency: this test must run, not skip)

    cache = EntitlementCache(clock=clock)

    async def main() -> None:
        leading = anyio.Event()
        release = anyio.Event()
        fetches: list[str] = []

        async def leader_fetch() -> Entitlement:
            fetches.append("leader")
            leading.set()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def waiter_fetch() -> Entitlement:
            fetches.append("take-over")
            await release.wait()
            return FRESH

        results: list[Entitlement] = []
        scope = anyio.CancelScope()

        async def leader() -> None:
            with scope:
                await cache.get_or_fetch(USER, FEATURE, leader_fetch)

        async def waiter() -> None:
            results.append(await cache.get_or_fetch(USER, FEATURE, waiter_fetch))

        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await leading.wait()
            tg.start_soon(waiter)
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert fetches == ["leader", "take-over"]  # one new fetch for both waiters
            release.set()

        assert results == [FRESH, FRESH]
        stats = cache.stats
        # the leader and the take-over are misses; each waiter is coalesced once, not again on its retry
        assert (stats.hits, stats.misses, stats.coalesced) == (0, 2, 2)
        assert cache.get_fresh(USER, FEATURE) is FRESH

    anyio.run(main, backend="trio")


def test_trio_a_waiter_of_a_cancelled_leader_takes_an_answer_stored_meanwhile(clock: Clock) -> None:
    import trio  # noqa: F401

    cache = EntitlementCache(clock=clock)

    async def main() -> None:
        leading = anyio.Event()

        async def leader_fetch() -> Entitlement:
            leading.set()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        results: list[Entitlement] = []
        scope = anyio.CancelScope()

        async def leader() -> None:
            with scope:
                await cache.get_or_fetch(USER, FEATURE, leader_fetch)

        async def waiter() -> None:
            results.append(await cache.get_or_fetch(USER, FEATURE, _never))

        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await leading.wait()
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            cache.put(USER, FEATURE, OTHER)  # a cache=False check answered meanwhile
            scope.cancel()

        assert results == [OTHER]
        stats = cache.stats
        assert (stats.hits, stats.misses, stats.coalesced) == (0, 1, 1)  # the waiter counted once

    anyio.run(main, backend="trio")
