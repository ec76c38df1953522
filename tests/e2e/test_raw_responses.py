"""Raw responses and ``billing.request`` over loopback: both clients, both HTTP backends (issue 14)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from billingos import (
    AsyncBillingOS,
    BillingOS,
    Customer,
    Entitlement,
    EntitlementCache,
    EntitlementReason,
    NetworkError,
    NotFoundError,
    Page,
    RateLimit,
    RateLimitError,
    RawResponse,
    ResponseDecodeError,
    RetryPolicy,
    SessionToken,
    Subscription,
    UsageMetrics,
    UsageRecord,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault, RateLimits

from ._helpers import Seeded, seed, statuses

KINDS = [("async", "httpx2"), ("async", "aiohttp"), ("sync", "httpx2"), ("sync", "aiohttp")]


class Billing:
    """Either client; ``await billing.run(lambda c: c.customers.with_raw_response.get(id))`` for both."""

    def __init__(self, client: AsyncBillingOS | BillingOS) -> None:
        self.client = client
        self.blocking = isinstance(client, BillingOS)

    async def run(self, call: Callable[[Any], Any]) -> Any:
        if self.blocking:
            return await asyncio.to_thread(call, self.client)
        result = call(self.client)
        return await result if inspect.isawaitable(result) else result

    async def close(self) -> None:
        if isinstance(self.client, BillingOS):
            await asyncio.to_thread(self.client.close)
        else:
            await self.client.aclose()


def _open(kind: tuple[str, str], fake: FakeBillingOS, url: str, policy: RetryPolicy, **kw: Any) -> Billing:
    blocking, backend = kind[0] == "sync", kind[1]
    cls = BillingOS if blocking else AsyncBillingOS
    return Billing(cls(fake.secret_key, api_url=url, retry_policy=policy, http_backend=backend, **kw))


@pytest.fixture(params=KINDS, ids=[f"{kind}-{backend}" for kind, backend in KINDS])
def kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def billing(
    kind: tuple[str, str], fake: FakeBillingOS, url: str, policy: RetryPolicy
) -> AsyncIterator[Billing]:
    client = _open(kind, fake, url, policy)
    try:
        yield client
    finally:
        await client.close()


def _metrics(client: Any) -> Any:
    """``client.request("GET", "/v1/usage/metrics", ...)`` for user_42."""
    return client.request("GET", "/v1/usage/metrics", params={"customer_id": "user_42"})


def _is_raw(raw: object, status: int, fake: FakeBillingOS, route: str) -> RawResponse[Any]:
    """``raw`` is the response the server gave to the last request on ``route``."""
    assert isinstance(raw, RawResponse)
    received = fake.requests_to(route)[-1]
    assert raw.status_code == status == received.status
    assert raw.request_id == received.request_id
    return raw


async def test_every_resource_method_has_a_raw_form_returning_the_usual_model(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded
) -> None:
    raw = await billing.run(lambda c: c.session_tokens.with_raw_response.create("user_42"))
    token = _is_raw(raw, 201, fake, "POST /v1/session-tokens").parse()
    assert isinstance(token, SessionToken)
    raw = await billing.run(lambda c: c.session_tokens.with_raw_response.revoke(token.token_id))
    assert _is_raw(raw, 200, fake, "DELETE /v1/session-tokens/{id}").parse() is None

    raw = await billing.run(lambda c: c.entitlements.with_raw_response.check("user_42", "api_calls"))
    assert _is_raw(raw, 200, fake, "GET /v1/usage/check").parse().has_access
    raw = await billing.run(lambda c: c.usage.with_raw_response.track("user_42", "api_calls", 2))
    record = _is_raw(raw, 201, fake, "POST /v1/usage/track").parse()
    assert isinstance(record, UsageRecord)
    assert record.idempotency_key
    raw = await billing.run(lambda c: c.usage.with_raw_response.metrics("user_42"))
    assert isinstance(_is_raw(raw, 200, fake, "GET /v1/usage/metrics").parse(), UsageMetrics)

    customers = lambda c: c.customers.with_raw_response  # noqa: E731
    raw = await billing.run(lambda c: customers(c).create("grace@example.com", external_id="user_7"))
    created = _is_raw(raw, 201, fake, "POST /customers").parse()
    assert isinstance(created, Customer)
    raw = await billing.run(lambda c: customers(c).get(created.id))
    assert _is_raw(raw, 200, fake, "GET /customers/{id}").parse() == created
    raw = await billing.run(lambda c: customers(c).get_by_external_id("user_7"))
    assert _is_raw(raw, 200, fake, "GET /customers/external/{external_id}").parse().id == created.id
    raw = await billing.run(lambda c: customers(c).update(created.id, name="Grace"))
    assert _is_raw(raw, 200, fake, "PATCH /customers/{id}").parse().name == "Grace"
    raw = await billing.run(lambda c: customers(c).list(limit=1))
    page = _is_raw(raw, 200, fake, "GET /customers").parse()
    assert isinstance(page, Page)
    assert page.total == 2
    assert page.total_pages == 2
    assert len(page.data) == 1
    raw = await billing.run(lambda c: customers(c).delete(created.id))
    assert _is_raw(raw, 204, fake, "DELETE /customers/{id}").parse() is None

    subs = lambda c: c.subscriptions.with_raw_response  # noqa: E731
    sub_id = seeded.subscription.id
    raw = await billing.run(lambda c: subs(c).get(sub_id))
    assert isinstance(_is_raw(raw, 200, fake, "GET /subscriptions/{id}").parse(), Subscription)
    raw = await billing.run(lambda c: subs(c).list(customer_id="user_42"))
    assert [s.id for s in _is_raw(raw, 200, fake, "GET /subscriptions").parse().data] == [sub_id]
    raw = await billing.run(lambda c: subs(c).update(sub_id, metadata={"k": "v"}))
    assert _is_raw(raw, 200, fake, "PATCH /subscriptions/{id}").parse().id == sub_id
    raw = await billing.run(lambda c: subs(c).cancel(sub_id))
    assert _is_raw(raw, 201, fake, "POST /subscriptions/{id}/cancel").parse().cancel_at_period_end
    raw = await billing.run(lambda c: subs(c).reactivate(sub_id))
    assert not _is_raw(raw, 201, fake, "POST /subscriptions/{id}/reactivate").parse().cancel_at_period_end
    customer = await billing.run(lambda c: c.customers.get_by_external_id("user_42"))
    raw = await billing.run(lambda c: subs(c).create(customer.id, seeded.basic.price_id))
    assert _is_raw(raw, 201, fake, "POST /subscriptions").parse().status is not None


async def test_the_client_level_proxy_has_the_shortcuts_and_the_resources(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded
) -> None:
    raw = await billing.run(lambda c: c.with_raw_response.check_entitlement("user_42", "sso"))
    assert _is_raw(raw, 200, fake, "GET /v1/usage/check").parse().has_access
    raw = await billing.run(lambda c: c.with_raw_response.track_usage("user_42", "api_calls"))
    assert _is_raw(raw, 201, fake, "POST /v1/usage/track").parse().quantity == 1
    raw = await billing.run(lambda c: c.with_raw_response.create_session_token("user_42"))
    assert isinstance(_is_raw(raw, 201, fake, "POST /v1/session-tokens").parse(), SessionToken)
    raw = await billing.run(lambda c: c.with_raw_response.customers.get_by_external_id("user_42"))
    assert _is_raw(raw, 200, fake, "GET /customers/external/{external_id}").parse().external_id == "user_42"


async def test_an_unknown_customer_check_reports_the_404_and_parses_to_no_access(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded
) -> None:
    raw = await billing.run(lambda c: c.entitlements.with_raw_response.check("nobody", "api_calls"))
    ent = _is_raw(raw, 404, fake, "GET /v1/usage/check").parse()
    assert ent == Entitlement(
        feature_key="api_calls", has_access=False, reason=EntitlementReason.CUSTOMER_NOT_FOUND
    )


async def test_an_error_status_still_raises_the_usual_exception(billing: Billing, seeded: Seeded) -> None:
    with pytest.raises(NotFoundError) as caught:
        await billing.run(lambda c: c.customers.with_raw_response.get("cus_missing"))
    assert caught.value.status_code == 404
    assert caught.value.request_id


async def test_a_retried_call_reports_its_final_attempt(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded, sleeps: list[float]
) -> None:
    fake.inject("GET /v1/usage/metrics", Fault.error(503), times=2)
    raw = await billing.run(lambda c: c.usage.with_raw_response.metrics("user_42"))
    assert raw.status_code == 200
    assert statuses(fake, "GET /v1/usage/metrics") == [503, 503, 200]
    assert len(sleeps) == 2  # the same retries as the plain call
    assert raw.request_id == fake.requests_to("GET /v1/usage/metrics")[-1].request_id


async def test_a_raw_check_asks_the_server_even_with_a_fresh_cached_answer(
    kind: tuple[str, str], fake: FakeBillingOS, url: str, policy: RetryPolicy
) -> None:
    seed(fake)
    billing = _open(kind, fake, url, policy, entitlement_cache=EntitlementCache(ttl=60))
    try:
        await billing.run(lambda c: c.check_entitlement("user_42", "api_calls"))
        await billing.run(lambda c: c.check_entitlement("user_42", "api_calls"))
        assert len(fake.requests_to("GET /v1/usage/check")) == 1  # the second came from the cache
        raw = await billing.run(lambda c: c.entitlements.with_raw_response.check("user_42", "api_calls"))
        raw2 = await billing.run(lambda c: c.with_raw_response.check_entitlement("user_42", "api_calls"))
        assert len(fake.requests_to("GET /v1/usage/check")) == 3
        assert raw.status_code == raw2.status_code == 200
    finally:
        await billing.close()


# -- rate limits ------------------------------------------------------------------------------------


async def test_rate_limit_headers_are_read_into_rate_limit_and_the_429_carries_them(
    kind: tuple[str, str], mount: Callable[[FakeBillingOS], str], policy: RetryPolicy
) -> None:
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=2, window=60))
    url = mount(fake)
    seed(fake)
    billing = _open(kind, fake, url, policy, max_retries=0)
    try:
        first = await billing.run(lambda c: c.usage.with_raw_response.metrics("user_42"))
        assert first.rate_limit == RateLimit(limit=2, remaining=1, reset_seconds=60.0)
        second = await billing.run(_metrics)
        assert second.rate_limit is not None
        assert second.rate_limit.remaining == 0
        with pytest.raises(RateLimitError) as caught:
            await billing.run(lambda c: c.usage.metrics("user_42"))
        assert caught.value.rate_limit is not None
        assert caught.value.rate_limit.limit == 2
        assert caught.value.rate_limit.remaining == 0
        assert caught.value.rate_limit.reset_seconds is not None
        assert caught.value.rate_limit.reset_seconds > 0
        assert caught.value.retry_after is not None
    finally:
        await billing.close()


async def test_without_rate_limit_headers_rate_limit_is_none(billing: Billing, seeded: Seeded) -> None:
    raw = await billing.run(lambda c: c.usage.with_raw_response.metrics("user_42"))  # limits are off
    assert raw.rate_limit is None
    assert "x-ratelimit-limit" not in raw.headers


# -- billing.request ------------------------------------------------------------------------------


async def test_request_calls_any_route_through_the_request_path(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded
) -> None:
    raw = await billing.run(
        lambda c: c.request("get", "/v1/usage/check", params={"customer_id": "user_42", "feature_key": "sso"})
    )
    assert _is_raw(raw, 200, fake, "GET /v1/usage/check").parse()["has_access"] is True
    received = fake.requests_to("GET /v1/usage/check")[-1]
    assert received.request_id.startswith("req_")  # the SDK's request id, as every call sends

    body = {"customer_id": "user_42", "feature_key": "api_calls", "quantity": 2, "idempotency_key": "k-1"}
    raw = await billing.run(lambda c: c.request("POST", "/v1/usage/track", json=body))
    assert _is_raw(raw, 201, fake, "POST /v1/usage/track").parse()["success"] is True
    assert fake.requests_to("POST /v1/usage/track")[-1].json == body
    assert fake.usage_of("user_42", "api_calls") == 2


async def test_request_with_an_empty_body_parses_to_none(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded
) -> None:
    customer = await billing.run(lambda c: c.customers.get_by_external_id("user_42"))
    raw = await billing.run(lambda c: c.request("DELETE", f"/customers/{customer.id}"))
    assert raw.status_code == 204
    assert raw.parse() is None


async def test_request_raises_the_usual_errors(billing: Billing, seeded: Seeded) -> None:
    with pytest.raises(NotFoundError) as caught:
        await billing.run(lambda c: c.request("GET", "/customers/cus_missing"))
    assert caught.value.request_id
    with pytest.raises(ValidationError):
        await billing.run(lambda c: c.request("POST", "/v1/usage/track", json={"quantity": -1}))


async def test_request_retries_a_post_only_when_told_it_is_idempotent(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded, sleeps: list[float]
) -> None:
    body = {"customer_id": "user_42", "feature_key": "api_calls", "quantity": 1, "idempotency_key": "k-2"}
    fake.inject("POST /v1/usage/track", Fault.drop_response(), times=1)
    with pytest.raises(NetworkError):  # the POST may have run: not repeated unless told it is harmless
        await billing.run(lambda c: c.request("POST", "/v1/usage/track", json=body))
    assert len(fake.requests_to("POST /v1/usage/track")) == 1
    fake.inject("POST /v1/usage/track", Fault.drop_response(), times=1)
    raw = await billing.run(lambda c: c.request("POST", "/v1/usage/track", json=body, idempotent=True))
    assert raw.status_code == 201
    assert len(fake.requests_to("POST /v1/usage/track")) == 3
    assert fake.usage_of("user_42", "api_calls") == 1  # the server deduplicated by idempotency_key
    fake.inject("GET /v1/usage/metrics", Fault.error(503), times=1)
    raw = await billing.run(_metrics)
    assert statuses(fake, "GET /v1/usage/metrics") == [503, 200]  # a GET is retried without being told


async def test_request_refuses_a_body_that_is_not_json_and_a_response_that_is_not(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded
) -> None:
    fake.inject("GET /v1/usage/metrics", Fault.malformed_json(), times=1)
    with pytest.raises(ResponseDecodeError):
        await billing.run(_metrics)
    with pytest.raises(ValidationError, match="not JSON-serializable"):
        await billing.run(lambda c: c.request("POST", "/customers", json={"when": object()}))


@pytest.mark.parametrize(
    "path",
    ["https://evil.example/v1/x", "//evil.example/v1", "v1/usage/check", "/v1/\r\nX-Evil: 1", "/v1/../admin"],
)
async def test_request_refuses_a_path_that_is_not_under_api_url(
    billing: Billing, fake: FakeBillingOS, path: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await billing.run(lambda c: c.request("GET", path))
    assert caught.value.status_code is None
    assert fake.requests == ()  # nothing was sent


async def test_request_obeys_max_response_bytes(
    kind: tuple[str, str], fake: FakeBillingOS, url: str, policy: RetryPolicy
) -> None:
    seed(fake)
    billing = _open(kind, fake, url, policy, max_response_bytes=64)
    try:
        with pytest.raises(ResponseDecodeError) as caught:
            await billing.run(_metrics)
        assert caught.value.code == "response_too_large"
    finally:
        await billing.close()


async def test_no_secret_in_a_raw_response_repr(
    billing: Billing, fake: FakeBillingOS, seeded: Seeded
) -> None:
    raw = await billing.run(lambda c: c.session_tokens.with_raw_response.create("user_42"))
    token = raw.parse().session_token
    for text in (repr(raw), str(raw), repr(billing.client.with_raw_response.customers)):
        assert fake.secret_key not in text
        assert token not in text


async def test_raw_calls_from_many_threads_each_report_their_own_response(
    fake: FakeBillingOS, url: str, policy: RetryPolicy, seeded: Seeded
) -> None:
    # Blocking calls from several threads share one loop: run there by the caller or handed over to it.
    with BillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:

        def call(n: int) -> tuple[str, str]:
            if n % 2:
                billing.usage.metrics("user_42")  # plain calls in between must not be captured
            raw = billing.usage.with_raw_response.metrics("user_42")
            return raw.request_id, raw.parse().customer_id

        results = await asyncio.gather(*(asyncio.to_thread(call, n) for n in range(16)))
    ids = [request_id for request_id, _ in results]
    assert len(set(ids)) == 16
    assert set(ids) <= {r.request_id for r in fake.requests_to("GET /v1/usage/metrics")}
    assert len(fake.requests_to("GET /v1/usage/metrics")) == 24
