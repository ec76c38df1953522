"""Seeding and read-back from Python (issue 3): keys, features, plans, customers, subscriptions, requests."""

from __future__ import annotations

import httpx2
import pytest

from billingos.testing import CustomerRecord, FakeBillingOS, Plan, SubscriptionRecord

from ._helpers import FLAG, PRO_PRICE, QUOTA, TRIAL_PRICE, USER, Clock, client, make_fake, track_body


def test_seeding_secret_key_is_sk_test_and_each_fake_is_independent() -> None:
    first, second = FakeBillingOS(), FakeBillingOS()
    assert first.secret_key.startswith("sk_test_")
    assert first.secret_key != second.secret_key
    assert first.merchant_id != second.merchant_id
    first.add_customer("only_here")
    assert second.customer("only_here") is None


def test_seeding_add_feature_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="feature type"):
        FakeBillingOS().add_feature("x", "metered")  # type: ignore[arg-type]


def test_seeding_add_product_checks_its_grants() -> None:
    fake = FakeBillingOS()
    fake.add_feature(QUOTA, "usage_quota")
    with pytest.raises(ValueError, match="unknown feature"):
        fake.add_product("P", features={"nope": True})
    with pytest.raises(ValueError, match="numeric limit"):
        fake.add_product("P", features={QUOTA: True})
    plan = fake.add_product("P", features={QUOTA: 10}, amount=500)
    assert isinstance(plan, Plan)
    assert plan.product_id.startswith("prod_")
    assert plan.price_id.startswith("price_")
    assert plan.grants == {QUOTA: 10.0}


def test_seeding_add_customer_and_find_it_by_either_id() -> None:
    fake = FakeBillingOS()
    record = fake.add_customer("ext_1", name="Ext", metadata={"a": 1})
    assert isinstance(record, CustomerRecord)
    assert record.email == "ext_1@example.com"
    assert fake.customer("ext_1") is record
    assert fake.customer(record.id) is record
    assert fake.customer("nobody") is None


async def test_seeding_subscribe_by_external_id_or_record(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    record = fake.add_customer("seeded")
    by_record = fake.subscribe(record, PRO_PRICE)
    assert isinstance(by_record, SubscriptionRecord)
    assert by_record.customer_id == record.id
    response = await http.get("/v1/usage/check", params={"customer_id": "seeded", "feature_key": FLAG})
    assert response.json()["has_access"] is True
    other = fake.add_customer("seeded_2")
    assert fake.subscribe("seeded_2", PRO_PRICE, status="past_due").customer_id == other.id


def test_seeding_trial_days_start_trialing() -> None:
    """``add_product(trial_days=...)``: "new subscriptions start trialing", seeded ones included."""
    fake = make_fake(Clock())
    fake.add_customer("trial")
    sub = fake.subscribe("trial", TRIAL_PRICE)
    assert sub.trial_end is not None
    assert sub.status == "trialing"


def test_seeding_set_status_accepts_unknown_values(
    subscription: SubscriptionRecord, fake: FakeBillingOS
) -> None:
    assert fake.set_status(subscription.id, "paused").status == "paused"
    assert fake.subscription(subscription.id).status == "paused"


async def test_seeding_usage_of_reads_what_the_server_counted(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    assert fake.usage_of(USER, QUOTA) == 0
    await http.post("/v1/usage/track", json=track_body(quantity=2.5))
    assert fake.usage_of(USER, QUOTA) == 2.5
    with pytest.raises(KeyError):
        fake.usage_of("nobody", QUOTA)


async def test_seeding_requests_are_recorded_without_the_secret(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    await http.post("/v1/usage/track", json=track_body(), headers={"X-Request-Id": "req_" + "1" * 24})
    await http.get("/customers", params={"page": 1})
    [track] = fake.requests_to("POST /v1/usage/track")
    assert track.method == "POST"
    assert track.path == "/v1/usage/track"
    assert track.json == track_body()
    assert track.status == 201
    assert track.request_id == "req_" + "1" * 24
    assert "authorization" not in {k.lower() for k in track.headers}
    assert fake.secret_key not in repr(fake.requests)
    assert fake.requests[-1].query == {"page": "1"}
    assert fake.requests[-1].route == "GET /customers"
    with pytest.raises(ValueError, match="matches no route"):
        fake.requests_to("GET /nope")


async def test_seeding_verify_session_token_rejects_foreign_tokens(fake: FakeBillingOS) -> None:
    other = make_fake(Clock())
    async with client(other) as http:
        token = (await http.post("/v1/session-tokens", json={"externalUserId": USER})).json()["sessionToken"]
    other.verify_session_token(token)
    with pytest.raises(ValueError, match="signature"):
        fake.verify_session_token(token)
    with pytest.raises(ValueError, match="not a BillingOS session token"):
        fake.verify_session_token("st_abc")


def test_seeding_subscription_unknown_is_an_error(fake: FakeBillingOS) -> None:
    with pytest.raises(Exception, match="Subscription not found"):
        fake.subscription("sub_nope")
