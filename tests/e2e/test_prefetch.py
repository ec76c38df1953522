"""One call for many answers (issue 15 item 2): ``entitlements.prefetch`` and ``batch_window``.

Every assertion is a count of the requests the embedded server received, per route, or an answer
compared with the one ``entitlements.check`` gives for the same feature.
"""

from __future__ import annotations

import asyncio

import pytest

from billingos import AsyncBillingOS, BillingOS, EntitlementCache, RateLimitError, RetryPolicy, ServerError
from billingos.testing import FakeBillingOS, Fault

pytestmark = pytest.mark.anyio

CHECK = "GET /v1/usage/check"
GRANTS = "GET /v1/features/entitlements"
METRICS = "GET /v1/usage/metrics"
MINT = "POST /v1/session-tokens"
FEATURES = ("api_calls", "sso", "seats", "exports")
BACKENDS = ["httpx2", "aiohttp"]


def counts(fake: FakeBillingOS) -> dict[str, int]:
    return {route: len(fake.requests_to(route)) for route in (CHECK, GRANTS, METRICS, MINT)}


@pytest.fixture
def catalogue(fake: FakeBillingOS) -> FakeBillingOS:
    """``user_1`` on Pro (a quota, a flag, a numeric limit) and on a trialing Extra (``exports``);
    ``user_2`` known but never subscribed; ``ghost`` unknown."""
    fake.add_feature("api_calls", "usage_quota")
    fake.add_feature("sso", "boolean_flag")
    fake.add_feature("seats", "numeric_limit")
    fake.add_feature("exports", "boolean_flag")
    pro = fake.add_product("Pro", features={"api_calls": 100, "sso": True, "seats": 5})
    extra = fake.add_product("Extra", features={"exports": True}, trial_days=14)
    fake.add_customer("user_1")
    fake.add_customer("user_2")
    fake.subscribe("user_1", pro.price_id)
    fake.subscribe("user_1", extra.price_id)
    return fake


@pytest.fixture(params=BACKENDS)
def billing(
    request: pytest.FixtureRequest, catalogue: FakeBillingOS, url: str, policy: RetryPolicy
) -> AsyncBillingOS:
    """A client with a cache; used as ``async with billing:`` inside the test (its event loop)."""
    cache = EntitlementCache(ttl=60)
    return AsyncBillingOS(
        catalogue.secret_key,
        api_url=url,
        retry_policy=policy,
        entitlement_cache=cache,
        http_backend=request.param,
    )


async def test_prefetch_builds_exactly_the_answers_a_check_gives_from_two_requests(
    billing: AsyncBillingOS, catalogue: FakeBillingOS
) -> None:
    async with billing:
        await billing.usage.track("user_1", "api_calls", 30)
        answers = await billing.entitlements.prefetch("user_1")
        assert counts(catalogue) == {CHECK: 0, GRANTS: 1, METRICS: 1, MINT: 1}
        # seats: a numeric limit's limit is not in the grant list, so it is left to a check.
        assert sorted(answers) == ["api_calls", "exports", "sso"]
        for feature, answer in answers.items():
            assert answer == await billing.entitlements.check("user_1", feature, cache=False)
        assert answers["api_calls"].usage == 30
        assert answers["api_calls"].remaining == 70
        assert answers["exports"].has_access is False  # trialing gives no access
        assert counts(catalogue)[CHECK] == 3


async def test_after_prefetch_the_checks_it_answered_are_hits_and_the_others_ask(
    billing: AsyncBillingOS, catalogue: FakeBillingOS
) -> None:
    async with billing:
        await billing.entitlements.prefetch("user_1")
        for feature in FEATURES:
            await billing.check_entitlement("user_1", feature)
        assert counts(catalogue) == {CHECK: 1, GRANTS: 1, METRICS: 1, MINT: 1}  # only seats was asked
        assert billing.entitlement_cache is not None
        assert billing.entitlement_cache.stats.hits == 3
        await billing.entitlements.prefetch("user_1", features=["sso"])  # no quota wanted: no metrics call
        assert counts(catalogue) == {CHECK: 1, GRANTS: 2, METRICS: 1, MINT: 1}  # the token is reused


async def test_a_quota_spent_is_answered_as_the_check_answers_it(
    billing: AsyncBillingOS, catalogue: FakeBillingOS
) -> None:
    async with billing:
        await billing.usage.track("user_1", "api_calls", 100)
        answers = await billing.entitlements.prefetch("user_1", features=["api_calls"])
        assert answers["api_calls"].has_access is False
        assert answers["api_calls"] == await billing.entitlements.check("user_1", "api_calls", cache=False)


async def test_a_customer_with_no_features_gets_no_answers_and_checks_still_answer(
    billing: AsyncBillingOS, catalogue: FakeBillingOS
) -> None:
    async with billing:
        assert await billing.entitlements.prefetch("user_2") == {}
        assert counts(catalogue) == {CHECK: 0, GRANTS: 1, METRICS: 0, MINT: 1}
        ent = await billing.check_entitlement("user_2", "sso")
        assert ent.has_access is False
        assert ent.reason == "no_active_subscription"
        assert await billing.entitlements.prefetch("ghost") == {}  # unknown to BillingOS: 404, no answer
        assert (await billing.check_entitlement("ghost", "sso")).reason == "customer_not_found"


@pytest.mark.parametrize("status", [503, 429])
async def test_a_bulk_call_that_fails_raises_and_leaves_checks_working(
    billing: AsyncBillingOS, catalogue: FakeBillingOS, status: int
) -> None:
    async with billing:
        catalogue.inject(GRANTS, Fault.error(status, retry_after=0), times=None)
        with pytest.raises(ServerError if status == 503 else RateLimitError):
            await billing.entitlements.prefetch("user_1", max_retries=0)
        assert billing.entitlement_cache is not None
        assert billing.entitlement_cache.stats.size == 0
        assert (await billing.check_entitlement("user_1", "sso")).has_access is True
        assert counts(catalogue)[CHECK] == 1


def test_the_blocking_client_prefetches_too(catalogue: FakeBillingOS, url: str, policy: RetryPolicy) -> None:
    cache = EntitlementCache(ttl=60)
    with BillingOS(
        catalogue.secret_key, api_url=url, retry_policy=policy, entitlement_cache=cache
    ) as billing:
        answers = billing.entitlements.prefetch("user_1")
        assert sorted(answers) == ["api_calls", "exports", "sso"]
        assert billing.check_entitlement("user_1", "sso").has_access is True
        assert billing.check_entitlement("user_1", "api_calls").remaining == 100
    assert counts(catalogue) == {CHECK: 0, GRANTS: 1, METRICS: 1, MINT: 1}
    assert cache.stats.hits == 2


# -- batching concurrent misses of one customer --------------------------------------------------


def batching_client(fake: FakeBillingOS, url: str, policy: RetryPolicy, backend: str) -> AsyncBillingOS:
    cache = EntitlementCache(ttl=60, batch_window=0.05)
    return AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, entitlement_cache=cache, http_backend=backend
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_misses_of_one_customer_share_one_bulk_fetch(
    catalogue: FakeBillingOS, url: str, policy: RetryPolicy, backend: str
) -> None:
    async with batching_client(catalogue, url, policy, backend) as billing:
        answers = await asyncio.gather(*(billing.check_entitlement("user_1", f) for f in FEATURES))
        assert [a.has_access for a in answers] == [True, True, True, False]
        assert counts(catalogue) == {CHECK: 1, GRANTS: 1, METRICS: 1, MINT: 1}  # seats asked alone
        assert billing.entitlement_cache is not None
        assert billing.entitlement_cache.stats.bulk_fetches == 1
        for feature, answer in zip(FEATURES, answers, strict=True):
            assert answer == await billing.entitlements.check("user_1", feature, cache=False)


async def test_a_lone_miss_is_checked_alone(catalogue: FakeBillingOS, url: str, policy: RetryPolicy) -> None:
    async with batching_client(catalogue, url, policy, "httpx2") as billing:
        await billing.check_entitlement("user_1", "sso")
        await billing.check_entitlement("user_2", "sso")
        assert counts(catalogue) == {CHECK: 2, GRANTS: 0, METRICS: 0, MINT: 0}


@pytest.mark.parametrize("status", [503, 429])
async def test_a_failed_or_rate_limited_bulk_fetch_leaves_each_miss_to_its_own_check(
    catalogue: FakeBillingOS, url: str, policy: RetryPolicy, status: int
) -> None:
    catalogue.inject(GRANTS, Fault.error(status, retry_after=0), times=None)
    async with batching_client(catalogue, url, policy, "httpx2") as billing:
        answers = await asyncio.gather(*(billing.check_entitlement("user_1", f) for f in FEATURES))
        assert [a.has_access for a in answers] == [True, True, True, False]
        assert counts(catalogue)[CHECK] == 4


async def test_a_customer_unknown_to_the_bulk_route_is_checked_feature_by_feature(
    catalogue: FakeBillingOS, url: str, policy: RetryPolicy
) -> None:
    async with batching_client(catalogue, url, policy, "httpx2") as billing:
        answers = await asyncio.gather(*(billing.check_entitlement("ghost", f) for f in FEATURES))
        assert {a.reason for a in answers} == {"customer_not_found"}
        assert counts(catalogue) == {CHECK: 4, GRANTS: 1, METRICS: 0, MINT: 1}
