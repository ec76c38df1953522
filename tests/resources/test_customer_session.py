"""billing.as_customer: every call on both clients, the token cache, re-mints, revocation, validation.

HTTP is mocked with respx (the routes of CONTRACT-CUSTOMER §3); the mint route hands out a new token
(new ``jti``) per call and counts them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import respx

from billingos import (
    AsyncBillingOS,
    AsyncCustomerSession,
    AuthenticationError,
    BillingOS,
    BillingOSError,
    Catalog,
    CheckoutSession,
    CustomerEntitlement,
    CustomerSession,
    CustomerState,
    EntitlementReason,
    FeatureType,
    NotFoundError,
    PortalSession,
    PriceInterval,
    QuotaExceededError,
    ResponseDecodeError,
    Subscription,
    SubscriptionStatus,
    UsageMetrics,
    UsageRecord,
    ValidationError,
)

from .._factories import customer_json, error_body, make_token, subscription_json
from . import body

USER = "user_42"
PRO, PRO_PRICE, PRO_YEARLY, FREE, FREE_PRICE = (
    "prod_pro",
    "price_pro_m",
    "price_pro_y",
    "prod_free",
    "price_free",
)
CHECKOUT_ID = "5b0f9f0e-0000-4000-8000-0000000000c1"


class Mint:
    """The ``POST /v1/session-tokens`` route: a fresh token per call, ``lifetime`` seconds long."""

    def __init__(self, router: respx.MockRouter, lifetime: int = 3600, age: int = 0) -> None:
        self.tokens: list[str] = []
        self.lifetime = lifetime
        self.age = age
        self._ids = itertools.count(1)
        self.route = router.post("/v1/session-tokens").mock(side_effect=self._answer)

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        sent = body(request)
        now = int(time.time())
        token = make_token(
            f"tok_{next(self._ids):032x}",
            iat=now - self.age,
            exp=now - self.age + self.lifetime,
            user=sent["externalUserId"],
        )
        self.tokens.append(token)
        return httpx2.Response(201, json={"sessionToken": token, "expiresAt": {}, "requestId": "req_1"})

    @property
    def count(self) -> int:
        return self.route.call_count


@pytest.fixture
def mint(router: respx.MockRouter) -> Mint:
    return Mint(router)


def bearer(request: httpx2.Request) -> str | None:
    value = request.headers.get("authorization")
    return None if value is None else value.removeprefix("Bearer ")


def state_json() -> dict[str, Any]:
    customer = customer_json(organization_id="org_1", billing_address={})
    customer.pop("requestId")
    return {
        "customer": customer,
        "active_subscriptions": [],
        "granted_features": [
            {
                "id": "g1",
                "feature_id": "f1",
                "feature_key": "api_calls",
                "feature_name": "API calls",
                "granted_at": "2026-02-01T00:00:00Z",
            }
        ],
        "requestId": "req_1",
    }


def price(id: str, amount: int, interval: str = "month") -> dict[str, Any]:
    return {"id": id, "amount": amount, "currency": "usd", "interval": interval, "intervalCount": 1}


def products_json(current: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "products": [
            {
                "id": FREE,
                "name": "Free",
                "description": "",
                "prices": [price(FREE_PRICE, 0)],
                "features": [
                    {
                        "id": "f1",
                        "name": "api_calls",
                        "title": "API calls",
                        "type": "usage_quota",
                        "properties": {"limit": 100},
                    },
                ],
                "isCurrentPlan": False,
                "trialDays": 0,
                "highlighted": False,
            },
            {
                "id": PRO,
                "name": "Pro",
                "description": "For teams",
                "prices": [price(PRO_PRICE, 2900), price(PRO_YEARLY, 29000, "year")],
                "features": [],
                "isCurrentPlan": current is not None,
                "trialDays": 14,
                "highlighted": True,
            },
        ],
        "currentSubscription": current,
        "requestId": "req_1",
    }


def current_json(product_id: str) -> dict[str, Any]:
    return {
        "id": "sub_1",
        "productId": product_id,
        "priceId": product_id,  # the server's bug: the product id
        "status": "active",
        "currentPeriodEnd": "2026-03-01T00:00:00.000Z",
        "cancelAtPeriodEnd": False,
    }


def checkout_json(*, free: bool = False, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": CHECKOUT_ID,
        "clientSecret": "" if free else "pi_123_secret_abcdef",
        "paymentIntentId": "" if free else "pi_123",
        "amount": 0 if free else 2900,
        "totalAmount": 0 if free else 2900,
        "currency": "usd",
        "product": {"name": "Pro", "interval": "month", "intervalCount": 1, "features": ["API calls"]},
        "customer": {"email": "ada@example.com"},
        "trialDays": 0,
        "requestId": "req_1",
    }
    if not free:
        data["stripeAccountId"] = "acct_1"
    data.update(extra)
    return data


def checkout_subscription(price_id: str = PRO_PRICE) -> dict[str, Any]:
    return {
        "id": "sub_9",
        "customerId": "cus_1",
        "productId": PRO,
        "priceId": price_id,
        "status": "active",
        "currentPeriodStart": "2026-02-01T00:00:00Z",
        "currentPeriodEnd": "2026-03-01T00:00:00Z",
        "cancelAtPeriodEnd": False,
    }


def unauthorized(message: str) -> httpx2.Response:
    return httpx2.Response(401, json=error_body(401, "AUTH_INVALID_TOKEN", message, request_id="req_401"))


# -- every call, async ----------------------------------------------------------------------------


async def test_state_mints_a_token_and_sends_it_as_the_bearer(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    route = router.get("/v1/customer/me").respond(200, json=state_json())
    customer = billing.as_customer(USER)
    assert mint.count == 0  # nothing is sent before the first call
    state = await customer.state()
    assert isinstance(state, CustomerState)
    assert state.customer.external_id == "user_1"
    assert state.active_subscriptions == ()
    assert state.granted_features[0].feature_key == "api_calls"
    assert body(mint.route.calls.last.request) == {"externalUserId": USER, "expiresIn": 3600}
    assert bearer(mint.route.calls.last.request) != mint.tokens[0]  # the mint itself: the secret key
    assert bearer(route.calls.last.request) == mint.tokens[0]


async def test_products_list_sends_plan_ids_and_repairs_the_price_id_of_a_single_price_product(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    route = router.get("/v1/products").respond(200, json=products_json(current_json(FREE)))
    catalog = await billing.as_customer(USER).products.list(plan_ids=[FREE, PRO])
    assert route.calls.last.request.url.params["planIds"] == f"{FREE},{PRO}"
    assert isinstance(catalog, Catalog)
    free, pro = catalog.products
    assert free.prices[0].is_free
    assert free.features[0].type is FeatureType.USAGE_QUOTA
    assert pro.prices[1].interval is PriceInterval.YEAR
    assert pro.highlighted
    assert pro.trial_days == 14
    assert catalog.current_subscription is not None
    assert catalog.current_subscription.product_id == FREE
    assert catalog.current_subscription.price_id == FREE_PRICE  # not the product id the server sent


@pytest.mark.parametrize("product", [PRO, "prod_not_listed"])
async def test_products_list_price_id_is_none_when_it_cannot_be_told(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint, product: str
) -> None:
    router.get("/v1/products").respond(200, json=products_json(current_json(product)))
    catalog = await billing.as_customer(USER).products.list()
    assert catalog.current_subscription is not None
    assert catalog.current_subscription.price_id is None  # two prices, or the product is not listed


async def test_products_list_without_customer_has_no_current_subscription(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    route = router.get("/v1/products").respond(200, json=products_json(None))
    catalog = await billing.as_customer(USER).products.list()
    assert "planIds" not in route.calls.last.request.url.params
    assert catalog.current_subscription is None


async def test_checkout_create_sends_camel_case_with_the_token(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    route = router.post("/v1/checkout/create").respond(201, json=checkout_json())
    session = await billing.as_customer(USER).checkout.create(
        PRO_PRICE,
        customer_email="ada@example.com",
        customer_name="Ada",
        existing_subscription_id="sub_0",
        success_url="https://app.example/ok",
        cancel_url="https://app.example/no",
        metadata={"source": "pricing"},
    )
    assert body(route.calls.last.request) == {
        "priceId": PRO_PRICE,
        "customerEmail": "ada@example.com",
        "customerName": "Ada",
        "existingSubscriptionId": "sub_0",
        "successUrl": "https://app.example/ok",
        "cancelUrl": "https://app.example/no",
        "metadata": {"source": "pricing"},
    }
    assert bearer(route.calls.last.request) == mint.tokens[0]
    assert isinstance(session, CheckoutSession)
    assert session.client_secret == "pi_123_secret_abcdef"
    assert not session.is_free
    assert not session.is_complete
    assert session.stripe_account_id == "acct_1"
    assert session.product is not None
    assert session.product.features == ("API calls",)
    assert "secret_abcdef" not in repr(session)  # the client secret is masked


async def test_checkout_create_of_a_free_price_has_an_empty_client_secret(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.post("/v1/checkout/create").respond(201, json=checkout_json(free=True))
    session = await billing.as_customer(USER).checkout.create(FREE_PRICE)
    assert session.is_free
    assert session.client_secret == ""
    assert session.amount == 0


async def test_checkout_create_without_stripe_account_is_a_validation_error(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    message = "Organization does not have a Stripe Connect account"
    router.post("/v1/checkout/create").respond(400, json=error_body(400, "VAL_INVALID_INPUT", message))
    with pytest.raises(ValidationError, match=message):
        await billing.as_customer(USER).checkout.create(FREE_PRICE)
    assert mint.count == 1


async def test_checkout_status_is_sent_without_credentials_and_completes_with_a_subscription(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    route = router.get(f"/v1/checkout/{CHECKOUT_ID}/status").mock(
        side_effect=[
            httpx2.Response(200, json=checkout_json()),
            httpx2.Response(200, json=checkout_json(free=True, subscription=checkout_subscription(""))),
        ]
    )
    customer = billing.as_customer(USER)
    pending = await customer.checkout.status(CHECKOUT_ID)
    assert not pending.is_complete
    assert "authorization" not in route.calls.last.request.headers
    done = await customer.checkout.status(CHECKOUT_ID)
    assert done.is_complete
    assert done.subscription is not None
    assert done.subscription.status is SubscriptionStatus.ACTIVE
    assert done.subscription.price_id is None  # "" on the wire for a null price
    assert mint.count == 0  # no token was needed


async def test_confirm_free_returns_the_subscription_and_is_retried(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    route = router.post(f"/v1/checkout/{CHECKOUT_ID}/confirm-free").mock(
        side_effect=[
            httpx2.Response(503, json=error_body(503, "SYS_SERVICE_UNAVAILABLE", "down")),
            httpx2.Response(201, json={**subscription_json(price_id=FREE_PRICE, amount=0), "requestId": "r"}),
        ]
    )
    subscription = await billing.as_customer(USER).checkout.confirm_free(CHECKOUT_ID)
    assert isinstance(subscription, Subscription)
    assert subscription.price_id == FREE_PRICE
    assert subscription.status is SubscriptionStatus.ACTIVE
    assert route.call_count == 2
    assert "authorization" not in route.calls.last.request.headers
    assert route.calls.last.request.content == b""
    assert mint.count == 0


async def test_portal_create_sends_metadata_and_returns_the_session(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    answer = {
        "id": "9c1d0000-0000-4000-8000-000000000001",
        "customerId": "cus_1",
        "organizationId": "org_1",
        "expiresAt": "2026-02-28T10:00:00.123+00:00",
        "requestId": "r",
    }
    route = router.post("/v1/portal/create").respond(201, json=answer)
    portal = await billing.as_customer(USER).portal.create(metadata={"from": "settings"})
    assert body(route.calls.last.request) == {"metadata": {"from": "settings"}}
    assert isinstance(portal, PortalSession)
    assert portal.customer_id == "cus_1"
    assert portal.expires_at is not None
    assert bearer(route.calls.last.request) == mint.tokens[0]


async def test_portal_create_without_customer_is_not_found_with_the_servers_message(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    message = "Customer not found. Customer must complete checkout before accessing portal."
    router.post("/v1/portal/create").respond(404, json=error_body(404, "RES_NOT_FOUND", message))
    with pytest.raises(NotFoundError, match="must complete checkout"):
        await billing.as_customer(USER).portal.create()


async def test_entitlements_check_and_list(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    check = router.get("/v1/features/check").respond(
        200,
        json={"feature_key": "api_calls", "has_access": True, "limit": 100, "usage": 5,
              "metadata": {"remaining": 95, "resets_at": "2026-03-01T00:00:00Z", "type": "usage_quota"}},
    )  # fmt: skip
    listed = router.get("/v1/features/entitlements").respond(
        200,
        json={
            "entitlements": [
                {
                    "feature_key": "api_calls",
                    "feature_title": "API calls",
                    "feature_type": "usage_quota",
                    "granted_at": "2026-02-01T00:00:00Z",
                    "product_name": "Pro",
                    "subscription_status": "trialing",
                    "properties": {"limit": 100},
                },
                {
                    "feature_key": "sso",
                    "feature_title": "SSO",
                    "feature_type": "boolean_flag",
                    "granted_at": "2026-02-01T00:00:00Z",
                    "product_name": "Pro",
                    "subscription_status": "active",
                },
            ],
            "customer_id": "cus_1",
            "external_user_id": USER,
            "requestId": "r",
        },
    )
    customer = billing.as_customer(USER)
    ent = await customer.entitlements.check("api_calls")
    assert check.calls.last.request.url.params["feature_key"] == "api_calls"
    assert ent.has_access
    assert ent.remaining == 95
    assert ent.feature_type is FeatureType.USAGE_QUOTA
    items = await customer.entitlements.list()
    assert [type(i) for i in items] == [CustomerEntitlement, CustomerEntitlement]
    assert items[0].subscription_status is SubscriptionStatus.TRIALING
    assert items[0].properties == {"limit": 100}
    assert items[1].properties == {}
    assert bearer(listed.calls.last.request) == mint.tokens[0]
    assert mint.count == 1


async def test_entitlements_check_of_an_unknown_customer_is_no_access(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/features/check").respond(404, json=error_body(404, "RES_NOT_FOUND", "Customer not found"))
    ent = await billing.as_customer(USER).entitlements.check("api_calls")
    assert not ent.has_access
    assert ent.reason is EntitlementReason.CUSTOMER_NOT_FOUND


async def test_entitlements_list_of_an_unknown_customer_raises(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/features/entitlements").respond(
        404, json=error_body(404, "RES_NOT_FOUND", "Customer not found")
    )
    with pytest.raises(NotFoundError):
        await billing.as_customer(USER).entitlements.list()


async def test_usage_track_sends_a_key_and_is_retried_with_it(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    answer = {"success": True, "feature_key": "api_calls", "quantity": 3,
              "recorded_at": "2026-02-27T10:00:00.000Z", "requestId": "r"}  # fmt: skip
    route = router.post("/v1/features/track-usage").mock(
        side_effect=[httpx2.Response(502, text="bad gateway")] + [httpx2.Response(201, json=answer)] * 2
    )
    record = await billing.as_customer(USER).usage.track("api_calls", 3)
    assert isinstance(record, UsageRecord)
    first, second = (body(call.request) for call in route.calls)
    assert first == second
    assert first["quantity"] == 3
    assert first["feature_key"] == "api_calls"
    assert record.idempotency_key == first["idempotency_key"]
    assert record.usage is None
    await billing.as_customer(USER).usage.track("api_calls", idempotency_key="k-1")
    assert body(route.calls.last.request) == {
        "feature_key": "api_calls",
        "quantity": 1,
        "idempotency_key": "k-1",
    }


async def test_usage_track_over_quota_is_quota_exceeded(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.post("/v1/features/track-usage").respond(
        400, json=error_body(400, "VAL_INVALID_INPUT", "quota_exceeded")
    )
    with pytest.raises(QuotaExceededError):
        await billing.as_customer(USER).usage.track("api_calls")


async def test_usage_metrics_keeps_only_the_asked_feature(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    def metric(key: str) -> dict[str, Any]:
        return {"feature_key": key, "feature_title": key, "product_name": "Pro", "consumed": 5, "limit": 100,
                "remaining": 95, "percentage_used": 5, "period_start": "2026-02-01T00:00:00Z",
                "period_end": "2026-03-01T00:00:00Z", "resets_in_days": 3}  # fmt: skip

    # The public backend drops an unknown filter and answers every metric.
    answer = {"metrics": [metric("api_calls"), metric("other_org_feature")], "customer_id": "cus_1",
              "external_user_id": USER, "requestId": "r"}  # fmt: skip
    route = router.get("/v1/features/usage-metrics").respond(200, json=answer)
    customer = billing.as_customer(USER)
    metrics = await customer.usage.metrics("api_calls")
    assert route.calls.last.request.url.params["feature_key"] == "api_calls"
    assert isinstance(metrics, UsageMetrics)
    assert [m.feature_key for m in metrics.metrics] == ["api_calls"]
    assert metrics.external_user_id == USER
    every = await customer.usage.metrics()
    assert "feature_key" not in route.calls.last.request.url.params
    assert len(every.metrics) == 2


# -- the token cache ------------------------------------------------------------------------------


def _all_routes(router: respx.MockRouter) -> None:
    router.get("/v1/customer/me").respond(200, json=state_json())
    router.get("/v1/products").respond(200, json=products_json())
    router.get("/v1/features/check").respond(200, json={"feature_key": "k", "has_access": True})
    router.get("/v1/features/usage-metrics").respond(200, json={"metrics": [], "customer_id": "c"})
    router.post("/v1/portal/create").respond(201, json={"id": "p1"})


async def test_n_calls_of_one_user_mint_once_across_handles_and_with_options_copies(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    _all_routes(router)
    customer = billing.as_customer(USER)
    await customer.state()
    await customer.products.list()
    await customer.entitlements.check("k")
    await customer.usage.metrics()
    await customer.portal.create()
    await billing.as_customer(USER).state()
    await billing.with_options(timeout=5).as_customer(USER).state()
    assert mint.count == 1
    await billing.as_customer("user_43").state()
    await billing.as_customer(USER, external_organization_id="org_7").state()
    await billing.as_customer(USER, allowed_operations=["read"]).state()
    await billing.as_customer(USER, allowed_operations=("read",)).state()
    assert mint.count == 4


async def test_twenty_concurrent_first_calls_mint_once(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    route = router.get("/v1/customer/me").respond(200, json=state_json())
    states = await asyncio.gather(*(billing.as_customer(USER).state() for _ in range(20)))
    assert len(states) == 20
    assert mint.count == 1
    assert {bearer(call.request) for call in route.calls} == {mint.tokens[0]}


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (no I/O involved: a bounded number of passes)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _settle(passes: int = 50) -> None:
    """Let every ready task run until it waits on something (no I/O involved)."""
    for _ in range(passes):
        await asyncio.sleep(0)


async def test_concurrent_first_calls_share_a_failed_mint_instead_of_repeating_it(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    release = asyncio.Event()
    mints = 0

    async def refuse_when_released(request: httpx2.Request) -> httpx2.Response:
        nonlocal mints
        mints += 1
        await release.wait()  # a real mint takes a round trip: the other callers arrive meanwhile
        return httpx2.Response(400, json=error_body(400, "VAL_INVALID_INPUT", "Validation failed"))

    router.post("/v1/session-tokens").mock(side_effect=refuse_when_released)
    calls = asyncio.gather(*(billing.as_customer(USER).state() for _ in range(5)), return_exceptions=True)
    await _until(lambda: mints == 1)
    await _settle()  # the four others reach the shared mint and wait on it
    release.set()
    results = await calls
    assert all(isinstance(r, ValidationError) for r in results)
    assert mints == 1


async def test_a_cancelled_first_caller_lets_a_waiter_mint(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    release = asyncio.Event()
    calls = 0

    async def slow_then_fast(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()  # the first mint hangs until its caller is cancelled
        token = make_token(f"tok_{calls:032x}", user=USER)
        return httpx2.Response(201, json={"sessionToken": token, "expiresAt": {}})

    router.post("/v1/session-tokens").mock(side_effect=slow_then_fast)
    router.get("/v1/customer/me").respond(200, json=state_json())
    first = asyncio.ensure_future(billing.as_customer(USER).state())
    await _until(lambda: calls == 1)  # the first mint is in flight, held
    second = asyncio.ensure_future(billing.as_customer(USER).state())
    await _settle()  # the second caller waits on the first one's mint
    assert calls == 1
    first.cancel()
    state = await second
    assert isinstance(state, CustomerState)
    assert calls == 2
    assert first.cancelled()


async def test_a_token_near_its_expiry_is_minted_anew_before_use(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    mint = Mint(router, lifetime=110, age=100)  # 10 s left of 110: less than max(60, 11), capped at 55
    route = router.get("/v1/customer/me").respond(200, json=state_json())
    customer = billing.as_customer(USER)
    await customer.state()
    await customer.state()
    assert mint.count == 2
    assert [bearer(c.request) for c in route.calls] == mint.tokens


async def test_a_short_lived_token_is_still_used_for_half_its_life(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    mint = Mint(router, lifetime=60)  # the shortest the server mints: max(60 s, 10 %) would be all of it
    router.get("/v1/customer/me").respond(200, json=state_json())
    customer = billing.as_customer(USER, expires_in=60)
    await customer.state()
    await customer.state()
    assert mint.count == 1
    assert body(mint.route.calls.last.request)["expiresIn"] == 60


@pytest.mark.parametrize("message", ["Token expired", "Token not found or revoked"])
async def test_a_401_saying_expired_or_revoked_mints_once_more_and_repeats_the_call(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint, message: str
) -> None:
    route = router.post("/v1/checkout/create").mock(
        side_effect=[unauthorized(message), httpx2.Response(201, json=checkout_json())]
    )
    session = await billing.as_customer(USER).checkout.create(PRO_PRICE)
    assert session.id == CHECKOUT_ID
    assert mint.count == 2
    assert [bearer(c.request) for c in route.calls] == mint.tokens
    assert body(route.calls[0].request) == body(route.calls[1].request)


async def test_a_second_401_is_raised(billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint) -> None:
    router.get("/v1/customer/me").mock(
        side_effect=[unauthorized("Token expired"), unauthorized("Token expired")]
    )
    with pytest.raises(AuthenticationError, match="Token expired") as caught:
        await billing.as_customer(USER).state()
    assert caught.value.status_code == 401
    assert caught.value.code == "AUTH_INVALID_TOKEN"
    assert caught.value.request_id == "req_401"
    assert mint.count == 2


async def test_other_401s_are_raised_without_a_new_mint(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/customer/me").respond(
        401, json=error_body(401, "AUTH_INVALID_TOKEN", "Invalid token signature")
    )
    with pytest.raises(AuthenticationError, match="Invalid token signature"):
        await billing.as_customer(USER).state()
    assert mint.count == 1


async def test_concurrent_calls_refused_alike_share_one_new_mint(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    customer = billing.as_customer(USER)
    router.get("/v1/customer/me").respond(200, json=state_json())
    await customer.state()

    def answer(request: httpx2.Request) -> httpx2.Response:
        if bearer(request) == mint.tokens[0]:
            return unauthorized("Token not found or revoked")
        return httpx2.Response(200, json=products_json())

    router.get("/v1/products").mock(side_effect=answer)
    await asyncio.gather(*(customer.products.list() for _ in range(10)))
    assert mint.count == 2


async def test_a_given_token_is_used_as_is_and_never_minted(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    given = make_token("tok_" + "9" * 32, user=USER)
    route = router.get("/v1/customer/me").respond(200, json=state_json())
    async with billing.as_customer(USER, session_token=given, revoke_on_close=True) as customer:
        await customer.state()
    assert bearer(route.calls.last.request) == given
    assert mint.count == 0  # and not revoked on close: nothing else was sent
    assert len(router.calls) == 1


@pytest.mark.parametrize(
    ("message", "what"), [("Token expired", "expired"), ("Token not found or revoked", "revoked")]
)
async def test_a_given_token_refused_is_raised_and_not_minted_anew(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint, message: str, what: str
) -> None:
    given = make_token("tok_" + "9" * 32, user=USER)
    router.get("/v1/customer/me").mock(return_value=unauthorized(message))
    with pytest.raises(AuthenticationError) as caught:
        await billing.as_customer(USER, session_token=given).state()
    exc = caught.value
    assert what in exc.message
    assert "does not re-mint tokens it was given" in exc.message
    assert message in exc.message
    assert exc.message in str(exc)
    assert (exc.status_code, exc.code, exc.request_id) == (401, "AUTH_INVALID_TOKEN", "req_401")
    assert mint.count == 0


async def test_revoke_on_close_revokes_the_minted_token_once_and_forgets_it(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/customer/me").respond(200, json=state_json())
    revoke = router.delete(url__regex=r"/v1/session-tokens/tok_.*").respond(200, json={"message": "ok"})
    customer = billing.as_customer(USER, revoke_on_close=True)
    await customer.state()
    await customer.aclose()
    await customer.aclose()
    assert revoke.call_count == 1
    assert revoke.calls.last.request.url.path == "/v1/session-tokens/tok_" + "0" * 31 + "1"
    assert customer.is_closed
    with pytest.raises(BillingOSError, match="customer session is closed") as caught:
        await customer.state()
    assert caught.value.code == "session_closed"
    await billing.as_customer(USER).state()
    assert mint.count == 2  # the revoked token is no longer cached


async def test_close_without_revoke_on_close_or_without_a_call_revokes_nothing(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/customer/me").respond(200, json=state_json())
    async with billing.as_customer(USER) as customer:
        await customer.state()
    async with billing.as_customer("user_43", revoke_on_close=True):
        pass
    await billing.as_customer(USER).state()
    assert mint.count == 1  # still cached
    assert [c.request.method for c in router.calls] == ["POST", "GET", "GET"]


async def test_a_failed_revoke_on_close_is_logged_without_the_token(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    router.get("/v1/customer/me").respond(200, json=state_json())
    router.delete(url__regex=r"/v1/session-tokens/.*").respond(403, json=error_body(403, "X", "no"))
    with caplog.at_level(logging.DEBUG, logger="billingos"):
        async with billing.as_customer(USER, revoke_on_close=True) as customer:
            await customer.state()
    assert any("revoking token tok_" in r.getMessage() for r in caplog.records)
    assert not any(mint.tokens[0][12:40] in r.getMessage() for r in caplog.records)


async def test_revoke_on_close_after_the_client_closed_is_skipped(
    router: respx.MockRouter, mint: Mint, policy: Any
) -> None:
    from .._factories import BASE_URL, SECRET

    router.get("/v1/customer/me").respond(200, json=state_json())
    client = AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=policy)
    customer = client.as_customer(USER, revoke_on_close=True)
    await customer.state()
    await client.aclose()
    await customer.aclose()
    assert len(router.calls) == 2  # mint and state: no revoke


# -- item 4: the admin routes on a dashboard-only backend -------------------------------------


@pytest.mark.parametrize(
    ("call", "route"),
    [
        (lambda b: b.customers.get("c1"), "/customers/c1"),
        (lambda b: b.subscriptions.get("s1"), "/subscriptions/s1"),
    ],
)
async def test_a_401_on_admin_routes_points_to_as_customer(
    billing: AsyncBillingOS, router: respx.MockRouter, call: Callable[[AsyncBillingOS], Any], route: str
) -> None:
    router.get(route).respond(
        401, json=error_body(401, "AUTH_INVALID_TOKEN", "jwt malformed", request_id="req_x")
    )
    with pytest.raises(AuthenticationError) as caught:
        await call(billing)
    exc = caught.value
    assert exc.message.startswith(f"jwt malformed (GET {route}).")
    assert "accepts only dashboard sessions" in exc.message
    assert "billing.as_customer(" in exc.message
    assert "docs/selling.md" in exc.message
    assert (exc.status_code, exc.code, exc.request_id) == (401, "AUTH_INVALID_TOKEN", "req_x")
    assert "docs/selling.md" in str(exc)


async def test_an_unknown_key_on_admin_routes_keeps_the_servers_message(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/customers/c1").respond(401, json=error_body(401, "AUTH_INVALID_TOKEN", "Invalid API key"))
    with pytest.raises(AuthenticationError) as caught:
        await billing.customers.get("c1")
    assert caught.value.message == "Invalid API key"


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"external_user_id": ""}, "external_user_id"),
        ({"external_user_id": 42}, "external_user_id"),
        ({"external_user_id": "x" * 256}, "external_user_id"),
        ({"external_organization_id": " "}, "external_organization_id"),
        ({"allowed_operations": "read"}, "allowed_operations"),
        ({"allowed_operations": ["read", ""]}, r"allowed_operations\[1\]"),
        ({"expires_in": 59}, "expires_in"),
        ({"expires_in": 86401}, "expires_in"),
        ({"expires_in": True}, "expires_in"),
        ({"revoke_on_close": "yes"}, "revoke_on_close"),
        ({"session_token": "bos_session_nope"}, "session_token: Malformed session token"),
        ({"session_token": 5}, "session_token: Malformed session token"),
        ({"session_token": make_token(user="user_other")}, "session_token was minted for another user"),
    ],
)
def test_as_customer_refuses_bad_arguments_naming_them(kwargs: dict[str, Any], named: str) -> None:
    from .._factories import BASE_URL, SECRET

    args: dict[str, Any] = {"external_user_id": USER, **kwargs}
    user = args.pop("external_user_id")
    for client in (AsyncBillingOS(SECRET, api_url=BASE_URL), BillingOS(SECRET, api_url=BASE_URL)):
        with pytest.raises(ValidationError, match=named) as caught:
            client.as_customer(user, **args)
        assert caught.value.code == "invalid_argument"
        client_close = getattr(client, "close", None)
        if client_close is not None:
            client_close()


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda c: c.products.list(plan_ids="prod_1"), "plan_ids"),
        (lambda c: c.products.list(plan_ids=["a,b"]), r"plan_ids\[0\] must not contain a comma"),
        (lambda c: c.checkout.create(""), "price_id"),
        (lambda c: c.checkout.create("p", customer_email="nope"), "customer_email"),
        (lambda c: c.checkout.create("p", metadata=[1]), "metadata"),
        (lambda c: c.checkout.status(""), "session_id"),
        (lambda c: c.checkout.confirm_free("a\nb"), "must not contain CR or LF"),
        (lambda c: c.portal.create(metadata="x"), "metadata"),
        (lambda c: c.entitlements.check(""), "feature_key"),
        (lambda c: c.usage.track("k", 0), "quantity"),
        (lambda c: c.usage.track("k", idempotency_key=""), "idempotency_key"),
        (lambda c: c.usage.metrics(""), "feature_key"),
    ],
)
async def test_calls_refuse_bad_arguments_before_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint, call: Callable[[Any], Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        await call(billing.as_customer(USER))
    assert [c.request.url.path for c in router.calls] in ([], ["/v1/session-tokens"])


# -- secrets --------------------------------------------------------------------------------------


async def test_no_token_in_reprs_errors_or_logs(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    given = make_token("tok_" + "7" * 32, user=USER)
    router.get("/v1/customer/me").respond(200, json=state_json())
    router.get("/v1/products").mock(return_value=unauthorized("Token expired"))
    with caplog.at_level(logging.DEBUG):
        minted_handle = billing.as_customer(USER, revoke_on_close=True)
        await minted_handle.state()
        given_handle = billing.as_customer(USER, session_token=given)
        with pytest.raises(AuthenticationError) as caught:
            await given_handle.products.list()
        with pytest.raises(AuthenticationError) as caught_minted:
            await minted_handle.products.list()
    texts = [
        repr(minted_handle), repr(given_handle), str(caught.value), repr(caught.value),
        str(caught_minted.value), repr(billing._tokens), repr(billing._tokens.get()),
        *(r.getMessage() for r in caplog.records), *(repr(r.args) for r in caplog.records),
    ]  # fmt: skip
    for token in [given, *mint.tokens]:
        secret = token[len("bos_session_") :]
        for text in texts:
            assert secret[:20] not in text
            assert secret[-20:] not in text


# -- the blocking twin ----------------------------------------------------------------------------


def test_sync_customer_session_makes_every_call(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    mint = Mint(router)
    _all_routes(router)
    router.post("/v1/checkout/create").respond(201, json=checkout_json(free=True))
    router.get(f"/v1/checkout/{CHECKOUT_ID}/status").respond(200, json=checkout_json())
    router.post(f"/v1/checkout/{CHECKOUT_ID}/confirm-free").respond(201, json=subscription_json())
    router.get("/v1/features/entitlements").respond(200, json={"entitlements": []})
    router.post("/v1/features/track-usage").respond(
        201, json={"success": True, "feature_key": "k", "quantity": 1, "recorded_at": "2026-02-27T10:00:00Z"}
    )
    revoke = router.delete(url__regex=r"/v1/session-tokens/.*").respond(200, json={})
    with sync_billing.as_customer(USER, revoke_on_close=True) as customer:
        assert isinstance(customer, CustomerSession)
        assert isinstance(customer.state(), CustomerState)
        assert isinstance(customer.products.list(plan_ids=[PRO]), Catalog)
        session = customer.checkout.create(FREE_PRICE)
        assert session.is_free
        assert not customer.checkout.status(session.id).is_complete
        assert isinstance(customer.checkout.confirm_free(session.id), Subscription)
        assert isinstance(customer.portal.create(), PortalSession)
        assert customer.entitlements.check("k").has_access
        assert customer.entitlements.list() == []
        assert customer.usage.track("k").idempotency_key
        assert isinstance(customer.usage.metrics(), UsageMetrics)
        assert customer.external_user_id == USER
        assert "cached" in repr(customer)
    assert customer.is_closed
    customer.close()
    assert mint.count == 1
    assert revoke.call_count == 1
    with pytest.raises(BillingOSError, match="closed"):
        customer.state()


def test_sync_handles_share_the_token_cache_with_with_options_copies(
    sync_billing: BillingOS, router: respx.MockRouter
) -> None:
    mint = Mint(router)
    router.get("/v1/customer/me").respond(200, json=state_json())
    sync_billing.as_customer(USER).state()
    sync_billing.with_options(timeout=3).as_customer(USER).state()
    assert mint.count == 1


def test_sync_re_mints_once_on_a_401(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    mint = Mint(router)
    router.get("/v1/customer/me").mock(
        side_effect=[unauthorized("Token not found or revoked"), httpx2.Response(200, json=state_json())]
    )
    assert isinstance(sync_billing.as_customer(USER).state(), CustomerState)
    assert mint.count == 2


def test_sync_methods_have_the_async_signatures() -> None:
    import inspect

    assert str(CustomerSession.state.__signature__) == str(
        inspect.signature(AsyncCustomerSession.state)
    ).replace("(self, ", "(")
    assert inspect.signature(BillingOS.as_customer).parameters.keys() == (
        inspect.signature(AsyncBillingOS.as_customer).parameters.keys()
    )


def test_sync_threads_sharing_one_handle_mint_once(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    from concurrent.futures import ThreadPoolExecutor

    mint = Mint(router)
    router.get("/v1/customer/me").respond(200, json=state_json())
    customer = sync_billing.as_customer(USER)
    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(lambda _: customer.state(), range(32)))
    assert all(isinstance(s, CustomerState) for s in states)
    assert mint.count == 1
    assert len(customer._handles) == 1


async def test_handle_properties_and_a_revoke_that_finds_the_token_gone(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/customer/me").respond(200, json=state_json())
    router.delete(url__regex=r"/v1/session-tokens/.*").respond(
        404, json=error_body(404, "RES_NOT_FOUND", "Session token not found")
    )
    customer = billing.as_customer(USER, external_organization_id="org_7", revoke_on_close=True)
    assert (customer.external_user_id, customer.external_organization_id) == (USER, "org_7")
    await customer.state()
    await customer.aclose()  # already revoked elsewhere: not an error
    assert customer.is_closed
    assert "closed" in repr(customer)


async def test_a_right_price_id_from_the_server_is_kept(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/products").respond(200, json=products_json({**current_json(PRO), "priceId": PRO_YEARLY}))
    catalog = await billing.as_customer(USER).products.list()
    assert catalog.current_subscription is not None
    assert catalog.current_subscription.price_id == PRO_YEARLY


async def test_other_404s_of_a_check_and_a_malformed_list_are_raised(
    billing: AsyncBillingOS, router: respx.MockRouter, mint: Mint
) -> None:
    router.get("/v1/features/check").respond(404, json=error_body(404, "RES_NOT_FOUND", "Cannot GET"))
    router.get("/v1/features/entitlements").respond(200, json={"entitlements": "nope"})
    customer = billing.as_customer(USER)
    with pytest.raises(NotFoundError, match="Cannot GET"):
        await customer.entitlements.check("k")
    with pytest.raises(ResponseDecodeError, match="expected an entitlements list"):
        await customer.entitlements.list()


def test_sync_session_properties_and_close_after_the_client(router: respx.MockRouter, policy: Any) -> None:
    from .._factories import BASE_URL, SECRET

    Mint(router)
    router.get("/v1/customer/me").respond(200, json=state_json())
    client = BillingOS(SECRET, api_url=BASE_URL, retry_policy=policy)
    customer = client.as_customer(USER, external_organization_id="org_7", revoke_on_close=True)
    assert (customer.external_user_id, customer.external_organization_id) == (USER, "org_7")
    customer.state()
    client.close()
    customer.close()  # the client is closed: nothing to revoke with, nothing raised
    assert customer.is_closed
    assert "closed" in repr(customer)
    assert len(router.calls) == 2
