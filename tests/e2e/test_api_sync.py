"""The whole public API through the blocking facade ``BillingOS``, over real HTTP to the fake on 127.0.0.1."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billingos import (
    BillingAddress,
    BillingOS,
    BillingOSError,
    ConflictError,
    EntitlementReason,
    NetworkError,
    NotFoundError,
    Paginator,
    QuotaExceededError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
    SubscriptionStatus,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault

from ._helpers import QUOTA, Seeded, minted_tokens, statuses

pytestmark = pytest.mark.usefixtures("seeded")

TOKENS = "POST /v1/session-tokens"
TRACK = "POST /v1/usage/track"
CHECK = "GET /v1/usage/check"


def test_session_tokens(sync_client: BillingOS, fake: FakeBillingOS) -> None:
    token = sync_client.session_tokens.create(
        "user_42",
        external_organization_id="org_1",
        expires_in=600,
        allowed_operations=["read"],
        metadata={"a": 1},
    )
    assert token.issued_at is not None
    assert token.expires_at - token.issued_at == timedelta(seconds=600)
    assert (token.external_organization_id, token.allowed_operations, dict(token.metadata)) == (
        "org_1",
        ("read",),
        {"a": 1},
    )
    assert fake.verify_session_token(token.session_token)["jti"] == token.token_id
    other = sync_client.create_session_token("user_43")
    assert minted_tokens(fake) == 2

    sync_client.session_tokens.revoke(token.session_token)
    sync_client.session_tokens.revoke(other.token_id)
    for revoked in (token, other):
        with pytest.raises(ValueError, match="revoked"):
            fake.verify_session_token(revoked.session_token)
        with pytest.raises(NotFoundError):
            sync_client.session_tokens.revoke(revoked.token_id)
    assert statuses(fake, "DELETE /v1/session-tokens/{id}") == [200, 200, 404, 404]


def test_entitlements(sync_client: BillingOS, fake: FakeBillingOS, seeded: Seeded) -> None:
    fake.add_customer("user_free")
    fake.add_customer("user_late")
    fake.subscribe("user_late", seeded.pro.price_id, status="past_due")

    assert sync_client.entitlements.check("user_42", "sso").has_access
    assert sync_client.check_entitlement("user_42", "api_calls").remaining == QUOTA
    reasons = {
        user: sync_client.entitlements.check(user, "sso").reason
        for user in ("user_free", "user_late", "nobody")
    }
    assert reasons == {
        "user_free": EntitlementReason.NO_ACTIVE_SUBSCRIPTION,
        "user_late": EntitlementReason.SUBSCRIPTION_NOT_ACTIVE,
        "nobody": EntitlementReason.CUSTOMER_NOT_FOUND,
    }
    sync_client.usage.track("user_42", "api_calls", QUOTA)
    exhausted = sync_client.entitlements.check("user_42", "api_calls")
    assert (exhausted.has_access, exhausted.reason) == (False, EntitlementReason.QUOTA_EXCEEDED)
    assert statuses(fake, CHECK) == [200, 200, 200, 200, 404, 200]


def test_usage(sync_client: BillingOS, fake: FakeBillingOS) -> None:
    record = sync_client.usage.track("user_42", "api_calls", 10, metadata={"k": "v"})
    assert record.usage is not None
    assert (record.usage.consumed_units, record.usage.remaining_units) == (10, QUOTA - 10)
    assert record.idempotency_key == fake.requests_to(TRACK)[0].json["idempotency_key"]

    replay = sync_client.track_usage("user_42", "api_calls", 10, idempotency_key=record.idempotency_key)
    assert replay.usage == record.usage
    assert fake.usage_of("user_42", "api_calls") == 10

    with pytest.raises(QuotaExceededError):
        sync_client.usage.track("user_42", "api_calls", QUOTA)
    assert fake.usage_of("user_42", "api_calls") == 10

    (metric,) = sync_client.usage.metrics("user_42").metrics
    assert (metric.feature_key, metric.consumed, metric.percentage_used) == ("api_calls", 10, 10)
    assert sync_client.usage.metrics("user_42", "api_calls").customer_id == "user_42"


def test_customers(sync_client: BillingOS, fake: FakeBillingOS) -> None:
    created = sync_client.customers.create(
        "lin@example.com",
        external_id="user_lin",
        name="Lin",
        billing_address={"city": "Oslo", "country": "NO"},
        metadata={"x": 1},
    )
    assert created.billing_address == BillingAddress(city="Oslo", country="NO")
    assert fake.customer("user_lin") is not None
    assert sync_client.customers.get(created.id) == created
    assert sync_client.customers.get_by_external_id("user_lin") == created
    assert sync_client.customers.update(created.id, email="lin@corp.example").email == "lin@corp.example"
    assert fake.customer(created.id).email == "lin@corp.example"  # type: ignore[union-attr]
    with pytest.raises(ConflictError):
        sync_client.customers.create("ada@example.com")

    for n in range(5):
        fake.add_customer(f"user_{n}")
    lister = sync_client.customers.list(limit=2)
    assert isinstance(lister, Paginator)
    everyone = list(lister)
    assert len(everyone) == 7
    assert len({c.id for c in everyone}) == 7
    page = lister.page(2)
    assert (page.page, page.total, page.total_pages, len(page.data)) == (2, 7, 4, 2)
    assert [len(p.data) for p in lister.pages()] == [2, 2, 2, 1]
    assert [c.external_id for c in sync_client.customers.list(query="corp")] == ["user_lin"]
    emails = [c.email for c in sync_client.customers.list(sort_by="email", sort_order="asc", limit=3)]
    assert emails == sorted(emails)

    sync_client.customers.delete(created.id)
    assert fake.customer(created.id) is None
    with pytest.raises(NotFoundError):
        sync_client.customers.get(created.id)


def test_subscriptions(sync_client: BillingOS, fake: FakeBillingOS, seeded: Seeded) -> None:
    customer = sync_client.customers.create("s@example.com", external_id="user_s")
    sub = sync_client.subscriptions.create(customer.id, seeded.basic.price_id, metadata={"m": 1})
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sync_client.subscriptions.get(sub.id) == sub
    assert list(sync_client.subscriptions.list(customer_id="user_s")) == [sub]
    assert sync_client.subscriptions.list().page(1).total == 2

    upgraded = sync_client.subscriptions.update(sub.id, price_id=seeded.pro.price_id)
    assert upgraded.amount == 4900
    assert sync_client.check_entitlement("user_s", "api_calls").has_access

    assert sync_client.subscriptions.cancel(sub.id).cancel_at_period_end is True
    assert fake.subscription(sub.id).cancel_at_period_end is True
    assert sync_client.subscriptions.reactivate(sub.id).cancel_at_period_end is False
    canceled = sync_client.subscriptions.cancel(sub.id, at_period_end=False)
    assert canceled.status is SubscriptionStatus.CANCELED
    assert fake.subscription(sub.id).status == "canceled"
    with pytest.raises(ValidationError):
        sync_client.subscriptions.reactivate(sub.id)


def test_with_options_and_per_call_options(
    sync_client: BillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    once = sync_client.with_options(max_retries=0)
    assert once.api_url == sync_client.api_url
    fake.inject(CHECK, Fault.error(503))
    with pytest.raises(ServerError):
        once.entitlements.check("user_42", "sso")
    assert sleeps == []

    fake.inject(CHECK, Fault.error(503))
    assert sync_client.entitlements.check("user_42", "sso").has_access  # the original still retries
    assert len(sleeps) == 1

    recorded: list[float] = []

    async def record(seconds: float) -> None:
        recorded.append(seconds)

    patient = sync_client.with_options(retry_policy=RetryPolicy(initial_backoff=0, sleep=record))
    fake.inject(CHECK, Fault.error(504))
    assert patient.check_entitlement("user_42", "sso").has_access
    assert recorded == [0.0]

    sync_client.entitlements.check("user_42", "sso", extra_headers={"X-Trace": "t-1"})
    assert fake.requests[-1].headers["x-trace"] == "t-1"
    fake.inject(CHECK, Fault.delay(0.5))
    with pytest.raises(RequestTimeoutError):
        sync_client.entitlements.check("user_42", "sso", timeout=0.1, max_retries=0)
    assert statuses(fake, CHECK)[:5] == [503, 503, 200, 504, 200]


def test_lost_track_response_is_counted_once(
    sync_client: BillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TRACK, Fault.drop_response())
    record = sync_client.usage.track("user_42", "api_calls", 6)
    assert len(sleeps) == 1
    assert statuses(fake, TRACK) == [None, 201]
    assert {r.json["idempotency_key"] for r in fake.requests_to(TRACK)} == {record.idempotency_key}
    assert fake.usage_of("user_42", "api_calls") == 6


def test_lost_session_token_response_is_not_retried(
    sync_client: BillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TOKENS, Fault.drop_response())
    with pytest.raises(NetworkError):
        sync_client.session_tokens.create("user_42")
    assert sleeps == []
    assert statuses(fake, TOKENS) == [None]
    assert minted_tokens(fake) == 1


def test_close(fake: FakeBillingOS, url: str) -> None:
    billing = BillingOS(fake.secret_key, api_url=url)
    assert billing.check_entitlement("user_42", "sso").has_access
    billing.close()
    assert billing.is_closed
    with pytest.raises(BillingOSError) as caught:
        billing.check_entitlement("user_42", "sso")
    assert caught.value.code == "client_closed"
    assert len(fake.requests) == 1


def test_with_options_timeout(sync_client: BillingOS, fake: FakeBillingOS, sleeps: list[float]) -> None:
    fake.inject(CHECK, Fault.delay(0.5))
    hasty = sync_client.with_options(timeout=0.1, max_retries=0)
    with pytest.raises(RequestTimeoutError):
        hasty.check_entitlement("user_42", "sso")
    assert sleeps == []
    assert sync_client.check_entitlement("user_42", "sso").has_access  # the original keeps its 30 s


def test_empty_list(sync_client: BillingOS, fake: FakeBillingOS) -> None:
    assert list(sync_client.customers.list(email="none@example.com")) == []
    page = sync_client.customers.list(email="none@example.com").page(1)
    assert (page.total, page.total_pages, page.data, page.next_page) == (0, 0, (), None)
    assert list(sync_client.subscriptions.list(customer_id="nobody")) == []
