"""The whole public API of ``AsyncBillingOS``, over real HTTP to the fake on 127.0.0.1.

Each test checks what the client returned *and* what the server recorded or now holds.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import billingos
from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    BillingAddress,
    BillingOSError,
    ConflictError,
    EntitlementReason,
    FeatureType,
    NotFoundError,
    QuotaExceededError,
    ServerError,
    SessionToken,
    SubscriptionStatus,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault

from .._factories import Clock
from ._helpers import QUOTA, Seeded, minted_tokens, request_ids, seed, statuses

pytestmark = pytest.mark.usefixtures("seeded")

TOKENS = "POST /v1/session-tokens"
TRACK = "POST /v1/usage/track"
CHECK = "GET /v1/usage/check"


def close_in_time(a: datetime | None, b: datetime) -> bool:
    """Dates travel with millisecond precision."""
    return a is not None and abs(a - b) < timedelta(milliseconds=1)


# -- session tokens ------------------------------------------------------------------------------


async def test_create_session_token_with_every_option(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    token = await client.session_tokens.create(
        "user_42",
        external_organization_id="org_7",
        expires_in=900,
        allowed_operations=["read_usage", "open_portal"],
        metadata={"source": "e2e", "n": 1},
    )

    assert token.session_token.startswith("bos_session_")
    assert token.token_id.startswith("tok_")
    assert len(token.token_id) == 4 + 32
    assert token.external_user_id == "user_42"
    assert token.external_organization_id == "org_7"
    assert token.allowed_operations == ("read_usage", "open_portal")
    assert dict(token.metadata) == {"source": "e2e", "n": 1}
    assert token.merchant_id == fake.merchant_id
    assert token.issued_at is not None
    assert token.expires_at - token.issued_at == timedelta(seconds=900)
    assert not token.expired
    assert token.session_token not in repr(token)
    # Server side: one token, signed by this server, and the body it received is the contract's camelCase.
    assert minted_tokens(fake) == 1
    claims = fake.verify_session_token(token.session_token)
    assert claims["jti"] == token.token_id
    assert claims["external_organization_id"] == "org_7"
    (received,) = fake.requests_to(TOKENS)
    assert received.json == {
        "externalUserId": "user_42",
        "externalOrganizationId": "org_7",
        "expiresIn": 900,
        "allowedOperations": ["read_usage", "open_portal"],
        "metadata": {"source": "e2e", "n": 1},
    }
    assert received.status == 201


async def test_session_token_expiry_is_read_from_the_token(mount, policy) -> None:
    now = 1_900_000_000.0
    fake = FakeBillingOS(rate_limits=None, clock=lambda: now)
    url = mount(fake)
    async with AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:
        token = await billing.session_tokens.create("user_1")  # the wire's expiresAt is {}

    assert token.issued_at == datetime.fromtimestamp(now, UTC)
    assert token.expires_at == datetime.fromtimestamp(now + 3600, UTC)  # the server's default
    assert fake.requests_to(TOKENS)[0].json == {"externalUserId": "user_1"}  # no None sent
    assert SessionToken.decode(token.session_token) == token


async def test_revoke_by_token_then_again_is_not_found(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    token = await client.session_tokens.create("user_42")
    fake.verify_session_token(token.session_token)

    assert await client.session_tokens.revoke(token.session_token) is None
    with pytest.raises(ValueError, match="revoked"):
        fake.verify_session_token(token.session_token)
    with pytest.raises(NotFoundError) as caught:
        await client.session_tokens.revoke(token.session_token)
    assert caught.value.status_code == 404
    assert caught.value.code == "RES_NOT_FOUND"
    assert statuses(fake, "DELETE /v1/session-tokens/{id}") == [200, 404]
    assert [r.path for r in fake.requests_to("DELETE /v1/session-tokens/{id}")] == [
        f"/v1/session-tokens/{token.token_id}"
    ] * 2


async def test_revoke_by_id_then_again_is_not_found(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    token = await client.create_session_token("user_42")

    await client.session_tokens.revoke(token.token_id)
    with pytest.raises(ValueError, match="revoked"):
        fake.verify_session_token(token.session_token)
    with pytest.raises(NotFoundError):
        await client.session_tokens.revoke(token.token_id)
    with pytest.raises(NotFoundError):
        await client.session_tokens.revoke("tok_" + "0" * 32)  # never existed
    assert statuses(fake, "DELETE /v1/session-tokens/{id}") == [200, 404, 404]


async def test_invalid_session_token_arguments_are_refused_before_sending(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    with pytest.raises(ValidationError) as caught:
        await client.session_tokens.create("user_42", expires_in=30)
    assert caught.value.status_code is None
    with pytest.raises(ValidationError):
        await client.session_tokens.create("")
    assert fake.requests == ()


# -- entitlements --------------------------------------------------------------------------------


async def test_entitlement_allowed_for_each_feature_type(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded
) -> None:
    flag = await client.entitlements.check("user_42", "sso")
    assert flag.has_access
    assert flag.reason is None
    assert flag.feature_type is FeatureType.BOOLEAN_FLAG

    quota = await client.entitlements.check("user_42", "api_calls")
    assert quota.has_access
    assert (quota.limit, quota.usage, quota.remaining) == (QUOTA, 0, QUOTA)
    assert quota.feature_type is FeatureType.USAGE_QUOTA
    sub = seeded.subscription
    assert close_in_time(quota.resets_at, sub.current_period_end)

    seats = await client.entitlements.check("user_42", "seats")
    assert seats.has_access
    assert seats.limit == 5
    assert seats.feature_type is FeatureType.NUMERIC_LIMIT

    assert [r.query for r in fake.requests_to(CHECK)] == [
        {"customer_id": "user_42", "feature_key": key} for key in ("sso", "api_calls", "seats")
    ]


async def test_entitlement_no_active_subscription(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    fake.add_customer("user_7")
    ent = await client.entitlements.check("user_7", "sso")
    assert not ent.has_access
    assert ent.reason is EntitlementReason.NO_ACTIVE_SUBSCRIPTION


async def test_entitlement_no_active_subscription_when_the_plan_lacks_the_feature(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded
) -> None:
    fake.add_customer("user_basic")
    fake.subscribe("user_basic", seeded.basic.price_id)
    assert (await client.entitlements.check("user_basic", "sso")).has_access
    ent = await client.entitlements.check("user_basic", "api_calls")
    assert ent.reason is EntitlementReason.NO_ACTIVE_SUBSCRIPTION


@pytest.mark.parametrize("status", ["trialing", "past_due", "unpaid", "incomplete"])
async def test_entitlement_subscription_not_active(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded, status: str
) -> None:
    fake.add_customer("user_late")
    fake.subscribe("user_late", seeded.pro.price_id, status=status)
    ent = await client.entitlements.check("user_late", "sso")
    assert not ent.has_access
    assert ent.reason is EntitlementReason.SUBSCRIPTION_NOT_ACTIVE


async def test_entitlement_quota_exceeded(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    await client.usage.track("user_42", "api_calls", QUOTA)
    ent = await client.entitlements.check("user_42", "api_calls")
    assert not ent.has_access
    assert ent.reason is EntitlementReason.QUOTA_EXCEEDED
    assert (ent.usage, ent.limit, ent.remaining) == (QUOTA, QUOTA, 0)
    assert fake.usage_of("user_42", "api_calls") == QUOTA


async def test_entitlement_unknown_customer_has_no_access(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    ent = await client.entitlements.check("nobody", "sso")
    assert not ent.has_access
    assert ent.reason is EntitlementReason.CUSTOMER_NOT_FOUND
    assert ent.feature_key == "sso"
    assert statuses(fake, CHECK) == [404]  # the server said 404; the SDK made it an answer


async def test_entitlement_other_404_still_raises(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    fake.inject(CHECK, Fault.error(404))
    with pytest.raises(NotFoundError):
        await client.entitlements.check("user_42", "sso")


# -- usage ---------------------------------------------------------------------------------------


async def test_track_returns_the_snapshot_and_the_key_it_sent(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded
) -> None:
    record = await client.usage.track("user_42", "api_calls", 3, metadata={"endpoint": "/v1/x"})

    assert record.success
    assert record.feature_key == "api_calls"
    assert record.quantity == 3
    assert record.recorded_at is not None
    assert record.usage is not None
    assert (record.usage.consumed_units, record.usage.limit_units, record.usage.remaining_units) == (
        3,
        QUOTA,
        QUOTA - 3,
    )
    sub = seeded.subscription
    assert close_in_time(record.usage.period_start, sub.current_period_start)
    assert close_in_time(record.usage.period_end, sub.current_period_end)
    assert record.idempotency_key is not None
    assert uuid.UUID(record.idempotency_key).version == 4
    (received,) = fake.requests_to(TRACK)
    assert received.json == {
        "customer_id": "user_42",
        "feature_key": "api_calls",
        "quantity": 3,
        "idempotency_key": record.idempotency_key,
        "metadata": {"endpoint": "/v1/x"},
    }
    assert fake.usage_of("user_42", "api_calls") == 3


async def test_track_fractional_quantity(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    record = await client.track_usage("user_42", "api_calls", 0.25)
    assert record.usage is not None
    assert record.usage.consumed_units == 0.25
    assert fake.usage_of("user_42", "api_calls") == 0.25


async def test_track_replayed_with_own_key_counts_once(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    first = await client.usage.track("user_42", "api_calls", 5, idempotency_key="order-1")
    again = await client.usage.track("user_42", "api_calls", 5, idempotency_key="order-1")

    assert first.idempotency_key == again.idempotency_key == "order-1"
    assert again.usage == first.usage
    assert len(fake.requests_to(TRACK)) == 2
    assert fake.usage_of("user_42", "api_calls") == 5


async def test_track_distinct_calls_get_distinct_keys(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    keys = {(await client.usage.track("user_42", "api_calls")).idempotency_key for _ in range(3)}
    assert len(keys) == 3
    assert {r.json["idempotency_key"] for r in fake.requests_to(TRACK)} == keys
    assert fake.usage_of("user_42", "api_calls") == 3


async def test_track_over_the_quota_raises_and_counts_nothing(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    await client.usage.track("user_42", "api_calls", QUOTA - 1)
    with pytest.raises(QuotaExceededError) as caught:
        await client.usage.track("user_42", "api_calls", 2)
    assert isinstance(caught.value, ValidationError)
    assert caught.value.status_code == 400
    assert caught.value.code == "VAL_INVALID_INPUT"
    assert fake.usage_of("user_42", "api_calls") == QUOTA - 1
    assert statuses(fake, TRACK) == [201, 400]  # not retried


async def test_track_errors_from_the_server(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    fake.add_customer("user_free")
    with pytest.raises(NotFoundError, match="No active subscription with this feature"):
        await client.usage.track("user_free", "api_calls")
    with pytest.raises(NotFoundError, match="Customer not found"):
        await client.usage.track("nobody", "api_calls")
    with pytest.raises(ValidationError, match="Feature is not a usage quota type") as caught:
        await client.usage.track("user_42", "sso")
    assert type(caught.value) is ValidationError
    assert statuses(fake, TRACK) == [404, 404, 400]


async def test_usage_metrics(client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded) -> None:
    await client.usage.track("user_42", "api_calls", 25)

    metrics = await client.usage.metrics("user_42")
    assert metrics.customer_id == "user_42"
    (metric,) = metrics.metrics  # flags and numeric limits are not metered
    assert metric.feature_key == "api_calls"
    assert metric.feature_title == "API calls"
    assert metric.product_name == "Pro"
    assert (metric.consumed, metric.limit, metric.remaining, metric.percentage_used) == (25, QUOTA, 75, 25)
    assert metric.resets_in_days == 30
    sub = seeded.subscription
    assert close_in_time(metric.period_end, sub.current_period_end)

    only = await client.usage.metrics("user_42", "api_calls")
    assert [m.feature_key for m in only.metrics] == ["api_calls"]
    assert (await client.usage.metrics("user_42", "sso")).metrics == ()
    assert [r.query for r in fake.requests_to("GET /v1/usage/metrics")] == [
        {"customer_id": "user_42"},
        {"customer_id": "user_42", "feature_key": "api_calls"},
        {"customer_id": "user_42", "feature_key": "sso"},
    ]
    with pytest.raises(NotFoundError):
        await client.usage.metrics("nobody")


# -- customers -----------------------------------------------------------------------------------


async def test_customer_create_get_update_delete(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    address = BillingAddress(street="1 Main St", city="Paris", postal_code="75001", country="FR")
    created = await client.customers.create(
        "grace@example.com",
        external_id="user_grace",
        name="Grace",
        billing_address=address,
        metadata={"tier": "gold"},
    )
    assert created.id
    assert (created.email, created.external_id, created.name) == ("grace@example.com", "user_grace", "Grace")
    assert created.billing_address == address
    assert dict(created.metadata) == {"tier": "gold"}
    assert created.created_at is not None
    assert created.deleted_at is None
    stored = fake.customer("user_grace")
    assert stored is not None
    assert stored.id == created.id
    assert stored.billing_address == {
        "street": "1 Main St",
        "city": "Paris",
        "postal_code": "75001",
        "country": "FR",
    }

    assert await client.customers.get(created.id) == created
    assert await client.customers.get_by_external_id("user_grace") == created

    updated = await client.customers.update(
        created.id, name="Grace H.", billing_address={"city": "Lyon", "country": "FR"}, metadata={"tier": "p"}
    )
    assert updated.name == "Grace H."
    assert updated.billing_address == BillingAddress(city="Lyon", country="FR")
    assert dict(updated.metadata) == {"tier": "p"}
    assert updated.email == "grace@example.com"  # untouched
    assert fake.customer(created.id).name == "Grace H."  # type: ignore[union-attr]
    (patch,) = fake.requests_to("PATCH /customers/{id}")
    assert set(patch.json) == {"name", "billing_address", "metadata"}  # None fields are not sent

    assert await client.customers.delete(created.id) is None
    assert fake.customer(created.id) is None
    with pytest.raises(NotFoundError, match="Customer not found"):
        await client.customers.get(created.id)
    with pytest.raises(NotFoundError):
        await client.customers.get_by_external_id("user_grace")
    assert statuses(fake, "DELETE /customers/{id}") == [204]


async def test_customer_external_id_can_be_set_once(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    customer = await client.customers.create("anon@example.com")
    assert customer.external_id is None
    updated = await client.customers.update(customer.id, external_id="user_anon")
    assert updated.external_id == "user_anon"
    assert fake.customer("user_anon") is not None
    with pytest.raises(ValidationError) as caught:
        await client.customers.update(customer.id, external_id="user_other")
    assert caught.value.status_code == 400
    assert "external_id" in caught.value.details["fieldErrors"]


async def test_customer_delete_cancels_its_subscriptions(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded
) -> None:
    customer = await client.customers.get_by_external_id("user_42")
    (sub,) = [s async for s in client.subscriptions.list(customer_id=customer.id)]
    await client.customers.delete(customer.id)
    assert fake.subscription(sub.id).status == "canceled"
    assert (await client.entitlements.check("user_42", "sso")).reason is EntitlementReason.CUSTOMER_NOT_FOUND


async def test_customer_conflicts(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    with pytest.raises(ConflictError) as caught:
        await client.customers.create("ada@example.com")  # user_42's email
    assert caught.value.status_code == 409
    assert caught.value.code == "RES_CONFLICT"
    with pytest.raises(ConflictError):
        await client.customers.create("new@example.com", external_id="user_42")
    assert statuses(fake, "POST /customers") == [409, 409]  # never retried


async def test_customer_ids_cannot_reach_another_route(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    with pytest.raises(NotFoundError, match="Customer not found"):
        await client.customers.get("../customers")
    with pytest.raises(NotFoundError, match="Customer not found"):
        await client.customers.get_by_external_id("a/b?c")
    assert [(r.route, r.path) for r in fake.requests] == [
        ("GET /customers/{id}", "/customers/..%2Fcustomers"),
        ("GET /customers/external/{external_id}", "/customers/external/a%2Fb%3Fc"),
    ]


async def test_ids_and_text_travel_intact(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded
) -> None:
    """Query values, path segments and non-ASCII JSON reach the server exactly as given."""
    fake.add_customer("a&feature_key=seats", email="amp@example.com")
    fake.subscribe("a&feature_key=seats", seeded.basic.price_id)
    fake.add_customer("usér%2F", email="pct@example.com")

    assert (await client.entitlements.check("a&feature_key=seats", "sso")).has_access
    assert (await client.customers.get_by_external_id("usér%2F")).email == "pct@example.com"
    created = await client.customers.create("zoe@example.com", name="Zoë 李", metadata={"note": "🎉\u2028"})
    assert created.name == "Zoë 李"
    assert dict(created.metadata) == {"note": "🎉\u2028"}

    check, get, create = fake.requests
    assert check.query == {"customer_id": "a&feature_key=seats", "feature_key": "sso"}
    assert get.path == "/customers/external/us%C3%A9r%252F"
    assert create.json["name"] == "Zoë 李"
    assert fake.customer(created.id).metadata == {"note": "🎉\u2028"}  # type: ignore[union-attr]


async def test_customer_list_iterates_across_pages(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    for n in range(6):  # with user_42: 7 customers
        fake.add_customer(f"user_{n}", email=f"u{n}@example.com", name=f"User {n}")

    customers = [c async for c in client.customers.list(limit=3)]
    assert len(customers) == 7
    assert len({c.id for c in customers}) == 7
    assert {c.external_id for c in customers} == {"user_42"} | {f"user_{n}" for n in range(6)}
    assert [r.query for r in fake.requests_to("GET /customers")] == [
        {"limit": "3", "page": str(n)} for n in (1, 2, 3)
    ]

    pages = [page async for page in client.customers.list(limit=3).pages()]
    assert [len(p.data) for p in pages] == [3, 3, 1]
    assert [p.page for p in pages] == [1, 2, 3]


async def test_customer_list_page_totals(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    for n in range(6):
        fake.add_customer(f"user_{n}")
    lister = client.customers.list(limit=3)

    second = await lister.page(2)
    assert (second.page, second.limit, second.total, second.total_pages) == (2, 3, 7, 3)
    assert len(second.data) == 3
    assert second.next_page == 3
    last = await lister.page(3)
    assert len(last.data) == 1
    assert last.next_page is None
    beyond = await lister.page(4)
    assert beyond.data == ()
    assert beyond.total == 7


async def test_customer_list_filters_and_sorting(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    fake.add_customer("user_b", email="bob@example.com", name="Bob")
    fake.add_customer("user_c", email="carol@corp.example", name="Carol")

    by_email = [c.external_id async for c in client.customers.list(email="BOB@example.com")]
    assert by_email == ["user_b"]
    by_external = [c.email async for c in client.customers.list(external_id="user_c")]
    assert by_external == ["carol@corp.example"]
    by_query = [c.external_id async for c in client.customers.list(query="corp", limit=100)]
    assert by_query == ["user_c"]
    ascending = [c.email async for c in client.customers.list(sort_by="email", sort_order="asc")]
    assert ascending == ["ada@example.com", "bob@example.com", "carol@corp.example"]
    descending = [c.name async for c in client.customers.list(sort_by="name", sort_order="desc")]
    assert descending == ["Carol", "Bob", "Ada"]
    assert fake.requests_to("GET /customers")[-1].query == {
        "limit": "50",
        "sort_by": "name",
        "sort_order": "desc",
        "page": "1",
    }


# -- subscriptions -------------------------------------------------------------------------------


async def test_subscription_create_get_list(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded
) -> None:
    customer = await client.customers.create("sub@example.com", external_id="user_sub")
    created = await client.subscriptions.create(
        customer.id, seeded.basic.price_id, product_id=seeded.basic.product_id, metadata={"via": "e2e"}
    )
    assert created.status is SubscriptionStatus.ACTIVE
    assert (created.customer_id, created.price_id, created.product_id) == (
        customer.id,
        seeded.basic.price_id,
        seeded.basic.product_id,
    )
    assert (created.amount, created.currency) == (900, "usd")
    assert created.cancel_at_period_end is False
    assert dict(created.metadata) == {"via": "e2e"}
    assert created.current_period_start is not None
    assert created.current_period_end is not None
    assert created.current_period_end - created.current_period_start == timedelta(days=30)
    assert fake.subscription(created.id).status == "active"
    assert (await client.entitlements.check("user_sub", "sso")).has_access

    assert await client.subscriptions.get(created.id) == created
    mine = [s async for s in client.subscriptions.list(customer_id=customer.id)]
    assert mine == [created]
    everyone = [s async for s in client.subscriptions.list()]
    assert {s.id for s in everyone} == {created.id, seeded.subscription.id}
    assert len(everyone) == 2
    page = await client.subscriptions.list().page(1)
    assert page.total == 2
    with pytest.raises(NotFoundError):
        await client.subscriptions.get("sub_missing")


async def test_subscription_create_errors(client: AsyncBillingOS, seeded: Seeded) -> None:
    with pytest.raises(NotFoundError, match="Customer not found"):
        await client.subscriptions.create("nobody", seeded.pro.price_id)
    with pytest.raises(NotFoundError, match="Price not found"):
        await client.subscriptions.create("user_42", "price_missing")
    with pytest.raises(ValidationError):
        await client.subscriptions.create("user_42", seeded.pro.price_id, product_id=seeded.basic.product_id)


async def test_subscription_trial(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    trial = fake.add_product("Trial", features={"sso": True}, trial_days=14)
    customer = await client.customers.create("t@example.com", external_id="user_t")
    sub = await client.subscriptions.create(customer.id, trial.price_id)
    assert sub.status is SubscriptionStatus.TRIALING
    assert sub.trial_start is not None
    assert sub.trial_end is not None
    assert sub.trial_end - sub.trial_start == timedelta(days=14)
    ent = await client.entitlements.check("user_t", "sso")
    assert ent.reason is EntitlementReason.SUBSCRIPTION_NOT_ACTIVE


async def test_subscription_update(client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded) -> None:
    (sub,) = [s async for s in client.subscriptions.list(customer_id="user_42")]

    changed = await client.subscriptions.update(sub.id, price_id=seeded.basic.price_id, metadata={"k": "v"})
    assert (changed.price_id, changed.product_id, changed.amount) == (
        seeded.basic.price_id,
        seeded.basic.product_id,
        900,
    )
    assert dict(changed.metadata) == {"k": "v"}
    assert fake.subscription(sub.id).price_id == seeded.basic.price_id
    assert (await client.entitlements.check("user_42", "api_calls")).reason is (
        EntitlementReason.NO_ACTIVE_SUBSCRIPTION
    )

    scheduled = await client.subscriptions.update(sub.id, cancel_at_period_end=True)
    assert scheduled.cancel_at_period_end is True
    assert fake.subscription(sub.id).cancel_at_period_end is True
    assert [r.json for r in fake.requests_to("PATCH /subscriptions/{id}")] == [
        {"price_id": seeded.basic.price_id, "metadata": {"k": "v"}},
        {"cancel_at_period_end": True},
    ]
    with pytest.raises(ValidationError):
        await client.subscriptions.update(sub.id)  # nothing to change: refused before sending
    assert len(fake.requests_to("PATCH /subscriptions/{id}")) == 2


async def test_subscription_cancel_at_period_end_then_reactivate(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    (sub,) = [s async for s in client.subscriptions.list(customer_id="user_42")]

    canceling = await client.subscriptions.cancel(sub.id)
    assert canceling.status is SubscriptionStatus.ACTIVE
    assert canceling.cancel_at_period_end is True
    assert canceling.canceled_at is None
    assert fake.subscription(sub.id).cancel_at_period_end is True
    assert (await client.entitlements.check("user_42", "sso")).has_access  # until the period ends

    reactivated = await client.subscriptions.reactivate(sub.id)
    assert reactivated.cancel_at_period_end is False
    assert reactivated.status is SubscriptionStatus.ACTIVE
    assert fake.subscription(sub.id).cancel_at_period_end is False
    assert fake.requests_to("POST /subscriptions/{id}/cancel")[0].json == {"cancel_at_period_end": True}
    assert statuses(fake, "POST /subscriptions/{id}/reactivate") == [201]


async def test_subscription_cancel_now(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    (sub,) = [s async for s in client.subscriptions.list(customer_id="user_42")]

    canceled = await client.subscriptions.cancel(sub.id, at_period_end=False)
    assert canceled.status is SubscriptionStatus.CANCELED
    assert canceled.canceled_at is not None
    assert canceled.ended_at is not None
    assert fake.subscription(sub.id).status == "canceled"
    assert fake.requests_to("POST /subscriptions/{id}/cancel")[0].json == {"cancel_at_period_end": False}
    ent = await client.entitlements.check("user_42", "sso")
    assert ent.reason is EntitlementReason.NO_ACTIVE_SUBSCRIPTION
    with pytest.raises(ValidationError, match="cannot be reactivated"):
        await client.subscriptions.reactivate(sub.id)
    with pytest.raises(ValidationError, match="already canceled"):
        await client.subscriptions.cancel(sub.id)


async def test_subscription_unknown_status_does_not_crash(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    (sub,) = [s async for s in client.subscriptions.list(customer_id="user_42")]
    fake.set_status(sub.id, "paused")
    got = await client.subscriptions.get(sub.id)
    assert got.status == "paused"
    assert isinstance(got.status, SubscriptionStatus)


# -- shortcuts, options, errors, lifecycle ---------------------------------------------------------


async def test_shortcuts(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    token = await client.create_session_token("user_42", expires_in=60)
    assert fake.verify_session_token(token.session_token)["exp"] - token.issued_at.timestamp() == 60  # type: ignore[union-attr]
    assert (await client.check_entitlement("user_42", "sso")).has_access
    record = await client.track_usage("user_42", "api_calls", 2)
    assert record.usage is not None
    assert record.usage.consumed_units == 2
    assert [r.route for r in fake.requests] == [TOKENS, CHECK, TRACK]
    assert fake.usage_of("user_42", "api_calls") == 2


async def test_with_options_changes_settings_and_shares_the_pool(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    once = client.with_options(max_retries=0, timeout=5)
    assert once.max_retries == 0
    assert once.timeout.read == 5
    assert client.max_retries == 3
    assert once.api_url == client.api_url

    fake.inject(CHECK, Fault.error(503), times=2)
    with pytest.raises(ServerError) as caught:
        await once.entitlements.check("user_42", "sso")
    assert caught.value.status_code == 503
    assert sleeps == []
    assert (await client.entitlements.check("user_42", "sso")).has_access  # the original retries
    assert len(sleeps) == 1
    assert statuses(fake, CHECK) == [503, 503, 200]

    recorded: list[float] = []

    async def other_sleep(seconds: float) -> None:
        recorded.append(seconds)

    patient = client.with_options(retry_policy=billingos.RetryPolicy(initial_backoff=0, sleep=other_sleep))
    fake.inject(CHECK, Fault.error(502))
    assert (await patient.entitlements.check("user_42", "sso")).has_access
    assert recorded == [0.0]
    assert len(sleeps) == 1

    await once.aclose()  # one pool: closing a copy closes them all
    assert client.is_closed
    with pytest.raises(BillingOSError) as closed:
        await client.entitlements.check("user_42", "sso")
    assert closed.value.code == "client_closed"
    assert len(fake.requests_to(CHECK)) == 5


async def test_per_call_options(client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]) -> None:
    await client.entitlements.check("user_42", "sso", extra_headers={"X-Trace": "abc-123"})
    assert fake.requests[-1].headers["x-trace"] == "abc-123"

    custom_id = "req_" + "ab" * 12
    fake.inject(CHECK, Fault.error(503))
    ent = await client.entitlements.check("user_42", "sso", extra_headers={"X-Request-Id": custom_id})
    assert ent.has_access
    assert [r.request_id for r in fake.requests_to(CHECK)[-2:]] == [custom_id, custom_id]

    fake.inject(CHECK, Fault.error(503))
    with pytest.raises(ServerError):
        await client.entitlements.check("user_42", "sso", max_retries=0)
    assert len(sleeps) == 1  # only the earlier call's retry

    with pytest.raises(ValidationError):
        await client.entitlements.check("user_42", "sso", extra_headers={"Authorization": "Bearer x"})
    assert len(fake.requests_to(CHECK)) == 4


async def test_every_request_is_authenticated_and_identified(
    client: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    await client.entitlements.check("user_42", "sso")
    await client.customers.list().page(1)
    for received in fake.requests:
        assert received.headers["user-agent"].startswith("billingos-python/")
        assert received.request_id.startswith("req_")
        assert len(received.request_id) == 4 + 24
        assert "content-type" not in received.headers  # no body, no content type
    assert len(request_ids(fake, CHECK) | request_ids(fake, "GET /customers")) == 2


async def test_error_carries_the_server_request_id(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.customers.get("cus_missing")
    error = caught.value
    (received,) = fake.requests
    assert error.request_id == received.request_id
    assert error.headers["x-request-id"] == received.request_id
    assert error.message == "Customer not found"
    assert received.request_id in str(error)
    assert "404" in str(error)
    assert fake.secret_key not in str(error) + repr(error)


async def test_unknown_secret_key_is_refused_by_the_server(url: str, fake: FakeBillingOS) -> None:
    key = "sk_test_" + "0" * 48
    async with AsyncBillingOS(key, api_url=url) as billing:
        with pytest.raises(AuthenticationError) as caught:
            await billing.entitlements.check("user_42", "sso")
    assert caught.value.status_code == 401
    assert caught.value.code == "AUTH_INVALID_TOKEN"
    assert key not in str(caught.value)
    assert statuses(fake, CHECK) == [401]


async def test_live_key_over_loopback_http(url: str, fake: FakeBillingOS) -> None:
    live = fake.add_secret_key(live=True)
    async with AsyncBillingOS(live, api_url=url + "/") as billing:
        assert billing.environment == "live"
        assert billing.api_url == url
        assert live not in repr(billing)
        assert (await billing.check_entitlement("user_42", "sso")).has_access


async def test_broken_dates_on_the_wire(mount, policy) -> None:
    fake = FakeBillingOS(rate_limits=None, mangle_dates=True)
    seed(fake)
    url = mount(fake)
    async with AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:
        customer = await billing.customers.get_by_external_id("user_42")
        (sub,) = [s async for s in billing.subscriptions.list(customer_id=customer.id)]
        token = await billing.session_tokens.create("user_42", expires_in=120)
        record = await billing.usage.track("user_42", "api_calls")
    assert customer.created_at is None
    assert sub.current_period_end is None
    assert token.issued_at is not None
    assert token.expires_at - token.issued_at == timedelta(seconds=120)
    assert record.usage is not None
    assert record.usage.period_end is None
    assert fake.usage_of("user_42", "api_calls") == 1


# -- time: billing periods and the idempotency window (an injected clock) ---------------------------


async def test_usage_resets_when_the_period_renews(mount, policy) -> None:
    clock = Clock(1_900_000_000.0)
    fake = FakeBillingOS(rate_limits=None, clock=clock)
    seed(fake)
    url = mount(fake)
    async with AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:
        first = await billing.usage.track("user_42", "api_calls", QUOTA)
        exhausted = await billing.check_entitlement("user_42", "api_calls")
        assert exhausted.reason is EntitlementReason.QUOTA_EXCEEDED

        clock.now += 31 * 86400
        ent = await billing.check_entitlement("user_42", "api_calls")
        assert ent.has_access
        assert ent.usage == 0
        second = await billing.usage.track("user_42", "api_calls", 1)
    assert first.usage is not None
    assert second.usage is not None
    assert second.usage.period_start == first.usage.period_end
    assert second.usage.consumed_units == 1
    assert fake.usage_of("user_42", "api_calls") == 1


async def test_idempotency_key_is_remembered_for_24_hours(mount, policy) -> None:
    clock = Clock(1_900_000_000.0)
    fake = FakeBillingOS(rate_limits=None, clock=clock)
    seed(fake)
    url = mount(fake)
    async with AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:
        await billing.usage.track("user_42", "api_calls", 2, idempotency_key="job-9")
        clock.now += 23 * 3600
        await billing.usage.track("user_42", "api_calls", 2, idempotency_key="job-9")
        assert fake.usage_of("user_42", "api_calls") == 2
        clock.now += 2 * 3600
        await billing.usage.track("user_42", "api_calls", 2, idempotency_key="job-9")
    assert fake.usage_of("user_42", "api_calls") == 4
