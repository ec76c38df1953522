"""billing.as_customer over loopback against the embedded server: both clients, both HTTP backends.

Token reuse (N calls, one mint), the re-mint on expiry (the fake's clock moves) and on revocation, free
and paid checkout, the portal, and the errors of CONTRACT-CUSTOMER as users see them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    BillingOS,
    Catalog,
    CheckoutSession,
    CustomerState,
    EntitlementReason,
    NotFoundError,
    PortalSession,
    QuotaExceededError,
    RetryPolicy,
    Subscription,
    SubscriptionStatus,
    UsageMetrics,
    ValidationError,
)
from billingos.testing import FakeBillingOS

from .._factories import Clock
from ._helpers import QUOTA, Seeded, minted_tokens, seed

USER = "user_42"
NEWCOMER = "user_new"


class Billing:
    """One client of either kind; ``await billing.run(lambda: customer.state())`` for both."""

    def __init__(self, client: AsyncBillingOS | BillingOS) -> None:
        self.client = client
        self.blocking = isinstance(client, BillingOS)

    def as_customer(self, user: str, **kwargs: Any) -> Any:
        return self.client.as_customer(user, **kwargs)

    async def run(self, call: Callable[[], Any]) -> Any:
        if self.blocking:
            return await asyncio.to_thread(call)
        result = call()
        return await result if inspect.isawaitable(result) else result

    async def close(self, customer: Any) -> None:
        await self.run(customer.close if self.blocking else customer.aclose)


KINDS = [("async", "httpx2"), ("async", "aiohttp"), ("sync", "httpx2"), ("sync", "aiohttp")]


@pytest.fixture(params=KINDS, ids=[f"{kind}-{backend}" for kind, backend in KINDS])
def kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


async def _open(kind: tuple[str, str], fake: FakeBillingOS, url: str, policy: RetryPolicy) -> Billing:
    blocking, backend = kind[0] == "sync", kind[1]
    if blocking:
        return Billing(BillingOS(fake.secret_key, api_url=url, retry_policy=policy, http_backend=backend))
    return Billing(AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy, http_backend=backend))


async def _shut(billing: Billing) -> None:
    if billing.blocking:
        await asyncio.to_thread(billing.client.close)  # type: ignore[union-attr]
    else:
        await billing.client.aclose()  # type: ignore[union-attr]


@pytest.fixture
async def billing(
    kind: tuple[str, str], fake: FakeBillingOS, url: str, policy: RetryPolicy
) -> AsyncIterator[Billing]:
    client = await _open(kind, fake, url, policy)
    try:
        yield client
    finally:
        await _shut(client)


# -- tokens ---------------------------------------------------------------------------------------


async def test_n_calls_of_one_user_mint_one_token(
    billing: Billing, seeded: Seeded, fake: FakeBillingOS
) -> None:
    customer = billing.as_customer(USER)
    state = await billing.run(lambda: customer.state())
    assert isinstance(state, CustomerState)
    assert state.customer.external_id == USER
    assert state.active_subscriptions == ()  # always empty on the public backend
    assert {f.feature_key for f in state.granted_features} >= {"api_calls", "sso"}
    catalog = await billing.run(lambda: customer.products.list())
    assert isinstance(catalog, Catalog)
    assert catalog.current_subscription is not None
    assert catalog.current_subscription.product_id == seeded.pro.product_id
    assert catalog.current_subscription.price_id == seeded.pro.price_id  # repaired by the SDK
    ent = await billing.run(lambda: customer.entitlements.check("api_calls"))
    assert ent.has_access
    granted = await billing.run(lambda: customer.entitlements.list())
    assert "api_calls" in {e.feature_key for e in granted}
    record = await billing.run(lambda: customer.usage.track("api_calls", 3))
    assert record.quantity == 3
    metrics = await billing.run(lambda: customer.usage.metrics("api_calls"))
    assert isinstance(metrics, UsageMetrics)
    assert [m.consumed for m in metrics.metrics] == [3]
    other = billing.as_customer(USER)
    await billing.run(lambda: other.entitlements.check("sso"))
    assert minted_tokens(fake) == 1
    assert fake.usage_of(USER, "api_calls") == 3


async def test_a_bad_option_is_refused_before_a_token_is_minted(
    billing: Billing, seeded: Seeded, fake: FakeBillingOS
) -> None:
    customer = billing.as_customer(USER)
    with pytest.raises(ValidationError):
        await billing.run(lambda: customer.state(timeout=-1))
    with pytest.raises(ValidationError):
        await billing.run(lambda: customer.entitlements.check("sso", extra_headers={"Authorization": "x"}))
    assert minted_tokens(fake) == 0
    assert not fake.requests


async def test_twenty_concurrent_first_calls_mint_once(
    fake: FakeBillingOS, url: str, policy: RetryPolicy
) -> None:
    seed(fake)
    for backend in ("httpx2", "aiohttp"):
        async with AsyncBillingOS(
            fake.secret_key, api_url=url, retry_policy=policy, http_backend=backend
        ) as client:
            before = minted_tokens(fake)
            results = await asyncio.gather(
                *(client.as_customer(USER).entitlements.check("sso") for _ in range(20))
            )
            assert all(r.has_access for r in results)
            assert minted_tokens(fake) == before + 1


async def test_an_expired_token_is_minted_anew_once(
    kind: tuple[str, str], mount: Any, policy: RetryPolicy
) -> None:
    clock = Clock(time.time())
    fake = FakeBillingOS(rate_limits=None, clock=clock)
    seed(fake)
    billing = await _open(kind, fake, mount(fake), policy)
    try:
        customer = billing.as_customer(USER)
        await billing.run(lambda: customer.entitlements.check("sso"))
        clock.advance(3601)  # the server now says "Token expired"; the SDK's clock does not know yet
        ent = await billing.run(lambda: customer.entitlements.check("sso"))
        assert ent.has_access
        assert minted_tokens(fake) == 2
        refused = [r for r in fake.requests_to("GET /v1/features/check") if r.status == 401]
        assert len(refused) == 1
    finally:
        await _shut(billing)


async def test_a_revoked_token_is_minted_anew_once(
    billing: Billing, seeded: Seeded, fake: FakeBillingOS
) -> None:
    customer = billing.as_customer(USER)
    await billing.run(lambda: customer.products.list())
    first = fake.session_tokens()[0]
    await billing.run(lambda: billing.client.session_tokens.revoke(first.token_id))
    catalog = await billing.run(lambda: customer.products.list())
    assert catalog.products
    assert minted_tokens(fake) == 2


async def test_a_given_token_is_used_and_never_minted_anew(
    billing: Billing, seeded: Seeded, fake: FakeBillingOS
) -> None:
    token = await billing.run(lambda: billing.client.session_tokens.create(USER))
    customer = billing.as_customer(USER, session_token=token.session_token, revoke_on_close=True)
    assert (await billing.run(lambda: customer.entitlements.check("sso"))).has_access
    await billing.run(lambda: billing.client.session_tokens.revoke(token.token_id))
    with pytest.raises(AuthenticationError, match="does not re-mint tokens it was given") as caught:
        await billing.run(lambda: customer.entitlements.check("sso"))
    assert caught.value.code == "AUTH_INVALID_TOKEN"
    await billing.close(customer)
    assert minted_tokens(fake) == 1


async def test_revoke_on_close_revokes_the_minted_token(
    billing: Billing, seeded: Seeded, fake: FakeBillingOS
) -> None:
    customer = billing.as_customer(USER, revoke_on_close=True)
    await billing.run(lambda: customer.entitlements.check("sso"))
    await billing.close(customer)
    await billing.close(customer)
    assert [t.revoked for t in fake.session_tokens()] == [True]
    assert len(fake.requests_to("DELETE /v1/session-tokens/{id}")) == 1
    await billing.run(lambda: billing.as_customer(USER).entitlements.check("sso"))
    assert minted_tokens(fake) == 2


# -- checkout and portal --------------------------------------------------------------------------


async def test_free_checkout_then_confirm_free_subscribes_a_new_user(
    billing: Billing, fake: FakeBillingOS
) -> None:
    fake.add_feature("api_calls", "usage_quota")
    free = fake.add_product("Free", features={"api_calls": 10}, amount=0)
    customer = billing.as_customer(NEWCOMER)
    session = await billing.run(
        lambda: customer.checkout.create(free.price_id, customer_email="new@example.com")
    )
    assert isinstance(session, CheckoutSession)
    assert session.is_free
    assert session.client_secret == ""
    assert not session.is_complete
    subscription = await billing.run(lambda: customer.checkout.confirm_free(session.id))
    assert isinstance(subscription, Subscription)
    assert subscription.status is SubscriptionStatus.ACTIVE
    assert subscription.price_id == free.price_id
    again = await billing.run(lambda: customer.checkout.confirm_free(session.id))
    assert again.id == subscription.id
    status = await billing.run(lambda: customer.checkout.status(session.id))
    assert status.is_complete
    assert status.subscription is not None
    assert status.subscription.id == subscription.id
    assert (await billing.run(lambda: customer.entitlements.check("api_calls"))).has_access


async def test_paid_checkout_completes_after_the_payment(billing: Billing, fake: FakeBillingOS) -> None:
    seeded = seed(fake)
    customer = billing.as_customer(NEWCOMER)
    session = await billing.run(
        lambda: customer.checkout.create(
            seeded.pro.price_id, customer_email="n@example.com", customer_name="N"
        )
    )
    assert not session.is_free
    assert session.client_secret.startswith("pi_")
    assert session.stripe_account_id == fake.stripe_account_id
    assert session.customer is not None
    assert session.customer.email == "n@example.com"
    pending = await billing.run(lambda: customer.checkout.status(session.id))
    assert not pending.is_complete
    fake.complete_checkout(session.id)
    done = await billing.run(lambda: customer.checkout.status(session.id))
    assert done.is_complete
    catalog = await billing.run(lambda: customer.products.list())
    assert catalog.current_subscription is not None
    assert catalog.current_subscription.price_id == seeded.pro.price_id
    portal = await billing.run(lambda: customer.portal.create(metadata={"from": "test"}))
    assert isinstance(portal, PortalSession)
    assert portal.expires_at is not None
    assert portal.customer_id == fake.customer(NEWCOMER).id  # type: ignore[union-attr]


# -- errors ---------------------------------------------------------------------------------------


async def test_a_user_without_customer(billing: Billing, seeded: Seeded) -> None:
    customer = billing.as_customer(NEWCOMER)
    with pytest.raises(NotFoundError, match="Customer must complete checkout"):
        await billing.run(lambda: customer.portal.create())
    with pytest.raises(NotFoundError, match="Customer not found"):
        await billing.run(lambda: customer.state())
    ent = await billing.run(lambda: customer.entitlements.check("sso"))
    assert ent.reason is EntitlementReason.CUSTOMER_NOT_FOUND
    catalog = await billing.run(lambda: customer.products.list())
    assert catalog.current_subscription is None


async def test_checkout_without_a_connected_stripe_account(billing: Billing, fake: FakeBillingOS) -> None:
    free = fake.add_product("Free", features={}, amount=0)
    fake.disconnect_stripe()
    with pytest.raises(ValidationError, match="Stripe Connect account"):
        await billing.run(lambda: billing.as_customer(NEWCOMER).checkout.create(free.price_id))


async def test_unknown_price_and_checkout(billing: Billing, seeded: Seeded) -> None:
    customer = billing.as_customer(USER)
    with pytest.raises(NotFoundError, match="Price not found"):
        await billing.run(lambda: customer.checkout.create("price_nope"))
    with pytest.raises(NotFoundError, match="Checkout session not found"):
        await billing.run(lambda: customer.checkout.status("5b0f9f0e-0000-4000-8000-0000000000c1"))


async def test_tracking_past_the_quota(billing: Billing, seeded: Seeded, fake: FakeBillingOS) -> None:
    customer = billing.as_customer(USER)
    await billing.run(lambda: customer.usage.track("api_calls", QUOTA))
    with pytest.raises(QuotaExceededError):
        await billing.run(lambda: customer.usage.track("api_calls"))
    assert fake.usage_of(USER, "api_calls") == QUOTA


async def test_admin_routes_of_a_dashboard_only_server_point_to_as_customer(
    kind: tuple[str, str], mount: Any, policy: RetryPolicy
) -> None:
    fake = FakeBillingOS(rate_limits=None, admin_routes="dashboard_only")
    seed(fake)
    billing = await _open(kind, fake, mount(fake), policy)
    try:
        with pytest.raises(AuthenticationError) as caught:
            await billing.run(lambda: billing.client.customers.get_by_external_id(USER))
        exc = caught.value
        assert exc.message.startswith("jwt malformed (GET /customers/external/user_42).")
        assert "billing.as_customer(" in exc.message
        assert "docs/selling.md" in exc.message
        assert (exc.status_code, exc.code) == (401, "AUTH_INVALID_TOKEN")
        assert exc.request_id
        state = await billing.run(lambda: billing.as_customer(USER).state())
        assert state.customer.external_id == USER
    finally:
        await _shut(billing)
