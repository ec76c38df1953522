"""The entitlement cache over real sockets: single flight, stale-if-error, policies and the sync fast path,
each checked against what the fake on loopback actually received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from billingos import (
    AsyncBillingOS,
    BillingOS,
    EntitlementCache,
    EntitlementReason,
    NetworkError,
    RetryPolicy,
)
from billingos.testing import FakeBillingOS, Fault

from .._factories import Clock
from ._helpers import QUOTA, closed_port

pytestmark = pytest.mark.usefixtures("seeded")

CHECK = "GET /v1/usage/check"


@pytest.fixture
def clock() -> Clock:
    return Clock(0.0)


@pytest.fixture
def cache(clock: Clock) -> EntitlementCache:
    return EntitlementCache(ttl=30, stale_if_error=300, clock=clock)


@pytest.fixture
async def cached(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, cache: EntitlementCache
) -> AsyncIterator[AsyncBillingOS]:
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, entitlement_cache=cache
    ) as billing:
        yield billing


@pytest.fixture
def sync_cached(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, cache: EntitlementCache
) -> Iterator[BillingOS]:
    with BillingOS(fake.secret_key, api_url=url, retry_policy=policy, entitlement_cache=cache) as billing:
        yield billing


async def test_1000_concurrent_checks_over_loopback_send_one_request(
    cached: AsyncBillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    results = await asyncio.gather(*(cached.check_entitlement("user_42", "api_calls") for _ in range(1000)))
    assert len(fake.requests_to(CHECK)) == 1
    assert all(r.has_access for r in results)
    assert cache.stats.misses == 1
    assert cache.stats.coalesced == 999


async def test_stale_answer_over_loopback_when_connections_are_reset(
    cached: AsyncBillingOS, fake: FakeBillingOS, clock: Clock
) -> None:
    fresh = await cached.check_entitlement("user_42", "api_calls")
    clock.now += 45
    fake.inject(CHECK, Fault.reset(), times=None)

    stale = await cached.check_entitlement("user_42", "api_calls")

    assert stale.stale
    assert stale.remaining == fresh.remaining == QUOTA
    assert len(fake.requests_to(CHECK)) == 1 + 4  # the first, then one attempt and three retries


@pytest.mark.parametrize("policy_name", ["allow", "deny"])
async def test_on_unavailable_policy_when_billingos_refuses_connections(
    policy: RetryPolicy, policy_name: Any
) -> None:
    cache = EntitlementCache(on_unavailable=policy_name)
    url = f"http://127.0.0.1:{closed_port()}"
    async with AsyncBillingOS(
        "sk_test_" + "0" * 48, api_url=url, retry_policy=policy, entitlement_cache=cache
    ) as b:
        ent = await b.check_entitlement("user_42", "api_calls")
        assert ent.has_access is (policy_name == "allow")
        assert ent.reason == EntitlementReason.BILLINGOS_UNAVAILABLE
        with pytest.raises(NetworkError):
            await b.check_entitlement("user_42", "api_calls", cache=False)


def test_sync_hit_over_loopback_makes_no_request(
    sync_cached: BillingOS, fake: FakeBillingOS, cache: EntitlementCache
) -> None:
    for _ in range(100):
        assert sync_cached.check_entitlement("user_42", "sso").has_access
    assert len(fake.requests_to(CHECK)) == 1
    assert cache.stats.hits == 99


def test_sync_track_over_loopback_consumes_the_cached_quota(
    sync_cached: BillingOS, fake: FakeBillingOS
) -> None:
    served = 0
    while sync_cached.check_entitlement("user_42", "api_calls").has_access:
        sync_cached.track_usage("user_42", "api_calls", 10)
        served += 10
    assert served == QUOTA
    assert fake.usage_of("user_42", "api_calls") == QUOTA
    assert len(fake.requests_to(CHECK)) == 1
