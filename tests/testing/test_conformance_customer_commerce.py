"""CONTRACT-CUSTOMER §3.1-3.8: customer state, the pricing table, checkout and the billing portal."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from billingos.testing import FakeBillingOS, Plan

from ._customer_helpers import as_customer, mint, success
from ._helpers import (
    FLAG,
    PRO_PRICE,
    PRO_PRODUCT,
    QUOTA,
    TEAM_PRODUCT,
    USER,
    Clock,
    assert_error,
    field_errors,
)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def free_plan(fake: FakeBillingOS) -> Plan:
    return fake.add_product("Free", features={QUOTA: 5}, description="Start here", highlighted=True)


@pytest.fixture
async def customer(fake: FakeBillingOS, http: httpx2.AsyncClient) -> AsyncIterator[httpx2.AsyncClient]:
    """Raw httpx as USER (the seeded customer on Pro)."""
    async with as_customer(fake, await mint(http, USER)) as client:
        yield client


@pytest.fixture
async def newbie(fake: FakeBillingOS, http: httpx2.AsyncClient) -> AsyncIterator[httpx2.AsyncClient]:
    """Raw httpx as a user with no customer row yet."""
    async with as_customer(fake, await mint(http, "newbie")) as client:
        yield client


async def _checkout(client: httpx2.AsyncClient, **body: Any) -> dict[str, Any]:
    return success(await client.post("/v1/checkout/create", json=body), 201)


# -- GET /v1/customer/me -------------------------------------------------------------------------


async def test_me_shape_with_active_subscriptions_always_empty(
    fake: FakeBillingOS, customer: httpx2.AsyncClient
) -> None:
    body = success(await customer.get("/v1/customer/me"), 200)
    assert set(body) == {"customer", "active_subscriptions", "granted_features", "requestId"}
    assert body["active_subscriptions"] == []  # the server's bug: never filled
    row = body["customer"]
    assert set(row) == {
        "id",
        "organization_id",
        "external_id",
        "email",
        "email_verified",
        "name",
        "billing_address",
        "stripe_customer_id",
        "metadata",
        "created_at",
        "updated_at",
        "deleted_at",
    }
    assert (row["external_id"], row["email"], row["billing_address"]) == (USER, "ada@example.com", {})
    keys = {g["feature_key"] for g in body["granted_features"]}
    assert QUOTA in keys
    assert FLAG in keys
    for grant in body["granted_features"]:
        assert set(grant) == {"id", "feature_id", "feature_key", "feature_name", "granted_at"}


async def test_me_is_cached_an_hour_by_the_fakes_clock(
    fake: FakeBillingOS, http: httpx2.AsyncClient, customer: httpx2.AsyncClient, clock: Clock
) -> None:
    before = success(await customer.get("/v1/customer/me"), 200)
    team = await http.post("/subscriptions", json={"customer_id": USER, "price_id": "price_team"})
    assert team.status_code == 201
    stale = success(await customer.get("/v1/customer/me"), 200)
    assert stale["granted_features"] == before["granted_features"]
    clock.advance(3600)
    async with as_customer(fake, await mint(http, USER)) as later:
        fresh = success(await later.get("/v1/customer/me"), 200)
    assert len(fresh["granted_features"]) > len(before["granted_features"])


async def test_me_cache_is_cleared_by_admin_patch(
    fake: FakeBillingOS, http: httpx2.AsyncClient, customer: httpx2.AsyncClient
) -> None:
    success(await customer.get("/v1/customer/me"), 200)
    record = fake.customer(USER)
    assert record is not None
    assert (await http.patch(f"/customers/{record.id}", json={"name": "Ada L."})).status_code == 200
    assert success(await customer.get("/v1/customer/me"), 200)["customer"]["name"] == "Ada L."


# -- GET /v1/products ----------------------------------------------------------------------------


async def test_products_shape_current_plan_and_price_id_bug(
    customer: httpx2.AsyncClient, free_plan: Plan
) -> None:
    body = success(await customer.get("/v1/products"), 200)
    products = {p["id"]: p for p in body["products"]}
    pro = products[PRO_PRODUCT]
    assert set(pro) == {
        "id",
        "name",
        "description",
        "prices",
        "features",
        "isCurrentPlan",
        "trialDays",
        "highlighted",
    }
    assert pro["description"] == ""
    assert pro["isCurrentPlan"] is True
    assert pro["prices"] == [
        {"id": PRO_PRICE, "amount": 2900, "currency": "usd", "interval": "month", "intervalCount": 1}
    ]
    assert [f["name"] for f in pro["features"]] == [QUOTA, FLAG, "seats"]
    assert set(pro["features"][0]) == {"id", "name", "title", "type", "properties"}
    free = products[free_plan.product_id]
    assert (free["description"], free["highlighted"], free["isCurrentPlan"]) == ("Start here", True, False)
    current = body["currentSubscription"]
    assert current["productId"] == PRO_PRODUCT
    assert current["priceId"] == PRO_PRODUCT  # the server's bug: the product id
    assert set(current) == {"id", "productId", "priceId", "status", "currentPeriodEnd", "cancelAtPeriodEnd"}


async def test_products_for_a_user_without_customer_has_no_current_subscription(
    newbie: httpx2.AsyncClient,
) -> None:
    body = success(await newbie.get("/v1/products"), 200)
    assert body["currentSubscription"] is None
    assert not any(p["isCurrentPlan"] for p in body["products"])


async def test_products_hidden_plans_are_left_out_and_order_is_creation(
    fake: FakeBillingOS, customer: httpx2.AsyncClient
) -> None:
    hidden = fake.add_product("Hidden", features={FLAG: True}, visible=False)
    ids = [p["id"] for p in success(await customer.get("/v1/products"), 200)["products"]]
    assert hidden.product_id not in ids
    assert ids[:2] == [PRO_PRODUCT, TEAM_PRODUCT]


async def test_products_plan_ids_filter(customer: httpx2.AsyncClient) -> None:
    response = await customer.get("/v1/products", params={"planIds": f" {TEAM_PRODUCT} , {PRO_PRODUCT}"})
    assert {p["id"] for p in success(response, 200)["products"]} == {PRO_PRODUCT, TEAM_PRODUCT}
    unknown_uuid = await customer.get(
        "/v1/products", params={"planIds": "00000000-0000-4000-8000-000000000000"}
    )
    assert success(unknown_uuid, 200)["products"] == []


async def test_products_plan_ids_not_a_uuid_is_500(customer: httpx2.AsyncClient) -> None:
    response = await customer.get("/v1/products", params={"planIds": "not-a-plan"})
    assert_error(response, 500, "SYS_INTERNAL_ERROR", "An error occurred while processing your request.")


# -- checkout ------------------------------------------------------------------------------------


async def test_checkout_free_creates_customer_and_session(
    fake: FakeBillingOS, newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    body = await _checkout(
        newbie, priceId=free_plan.price_id, customerEmail="New@Example.com", customerName="New"
    )
    assert UUID.match(body["id"])
    assert (body["clientSecret"], body["paymentIntentId"], body["amount"], body["totalAmount"]) == (
        "",
        "",
        0,
        0,
    )
    assert "stripeAccountId" not in body
    assert body["product"] == {
        "name": "Free",
        "interval": "month",
        "intervalCount": 1,
        "features": ["API calls"],
        "description": "Start here",
    }
    assert body["customer"] == {"email": "New@Example.com", "name": "New"}
    assert body["trialDays"] == 0
    record = fake.customer("newbie")
    assert record is not None
    assert record.email == "new@example.com"
    assert record.stripe_customer_id is not None
    assert record.stripe_customer_id.startswith("cus_")


async def test_checkout_customer_echo_is_the_request_only(
    customer: httpx2.AsyncClient, free_plan: Plan
) -> None:
    assert (await _checkout(customer, priceId=free_plan.price_id))["customer"] == {}


async def test_checkout_confirm_free_returns_the_raw_row_with_product_and_price(
    fake: FakeBillingOS, newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    session = await _checkout(newbie, priceId=free_plan.price_id)
    async with as_customer(fake, None) as anyone:
        row = success(await anyone.post(f"/v1/checkout/{session['id']}/confirm-free"), 201)
        again = success(await anyone.post(f"/v1/checkout/{session['id']}/confirm-free"), 201)
    assert row["status"] == "active"
    assert (row["price_id"], row["product_id"], row["amount"]) == (
        free_plan.price_id,
        free_plan.product_id,
        0,
    )
    assert row["stripe_subscription_id"] is None
    assert row["product"]["id"] == free_plan.product_id
    assert row["price"]["id"] == free_plan.price_id
    assert {"organization_id", "customer_id", "payment_intent_id", "version", "metadata"} <= set(row)
    assert again["id"] == row["id"]
    assert "product" in again
    assert "price" in again
    assert fake.subscription(row["id"]).status == "active"


async def test_checkout_confirm_free_second_session_returns_existing_without_nesting(
    newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    first = await _checkout(newbie, priceId=free_plan.price_id)
    row = success(await newbie.post(f"/v1/checkout/{first['id']}/confirm-free"), 201)
    second = await _checkout(newbie, priceId=free_plan.price_id)
    same = success(await newbie.post(f"/v1/checkout/{second['id']}/confirm-free"), 201)
    assert same["id"] == row["id"]
    assert "product" not in same
    assert "price" not in same


async def test_checkout_confirm_free_grants_features(
    fake: FakeBillingOS, newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    session = await _checkout(newbie, priceId=free_plan.price_id)
    await newbie.post(f"/v1/checkout/{session['id']}/confirm-free")
    check = success(await newbie.get("/v1/features/check", params={"feature_key": QUOTA}), 200)
    assert (check["has_access"], check["limit"]) == (True, 5)


async def test_checkout_status_free_before_and_after_confirm_has_no_status_field(
    newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    session = await _checkout(newbie, priceId=free_plan.price_id)
    before = success(await newbie.get(f"/v1/checkout/{session['id']}/status"), 200)
    assert "status" not in before
    assert "subscription" not in before
    assert before["product"]["description"] == "Start here"
    row = success(await newbie.post(f"/v1/checkout/{session['id']}/confirm-free"), 201)
    after = success(await newbie.get(f"/v1/checkout/{session['id']}/status"), 200)
    assert "status" not in after
    assert after["subscription"]["id"] == row["id"]
    assert set(after["subscription"]) == {
        "id",
        "customerId",
        "productId",
        "priceId",
        "status",
        "currentPeriodStart",
        "currentPeriodEnd",
        "cancelAtPeriodEnd",
    }


async def test_checkout_status_free_omits_null_description(
    fake: FakeBillingOS, newbie: httpx2.AsyncClient
) -> None:
    plain = fake.add_product("Plain", features={FLAG: True})
    created = await _checkout(newbie, priceId=plain.price_id)
    assert created["product"]["description"] is None
    status = success(await newbie.get(f"/v1/checkout/{created['id']}/status"), 200)
    assert "description" not in status["product"]


async def test_checkout_paid_needs_complete_checkout(fake: FakeBillingOS, newbie: httpx2.AsyncClient) -> None:
    body = await _checkout(newbie, priceId=PRO_PRICE)
    assert re.fullmatch(r"pi_[0-9a-f]+_secret_[0-9a-f]+", body["clientSecret"])
    assert body["clientSecret"].startswith(body["paymentIntentId"] + "_secret_")
    assert body["stripeAccountId"] == fake.stripe_account_id
    assert body["stripeAccountId"].startswith("acct_")
    assert (body["amount"], body["totalAmount"]) == (2900, 2900)
    assert "description" not in body["product"]
    pending = success(await newbie.get(f"/v1/checkout/{body['id']}/status"), 200)
    assert "subscription" not in pending
    assert pending["clientSecret"] == body["clientSecret"]
    sub = fake.complete_checkout(body["id"])
    assert fake.complete_checkout(body["id"]).id == sub.id
    paid = success(await newbie.get(f"/v1/checkout/{body['id']}/status"), 200)
    assert paid["subscription"]["id"] == sub.id
    assert paid["subscription"]["status"] == "active"
    assert sub.payment_intent_id == body["paymentIntentId"]


async def test_checkout_paid_session_refuses_confirm_free(newbie: httpx2.AsyncClient) -> None:
    body = await _checkout(newbie, priceId=PRO_PRICE)
    response = await newbie.post(f"/v1/checkout/{body['id']}/confirm-free")
    assert_error(response, 400, "VAL_INVALID_INPUT", "This endpoint is only for free product confirmations")


def test_complete_checkout_of_a_free_or_unknown_session_is_an_error(fake: FakeBillingOS) -> None:
    with pytest.raises(KeyError):
        fake.complete_checkout("nope")


async def test_complete_checkout_of_a_free_session_is_value_error(
    fake: FakeBillingOS, newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    session = await _checkout(newbie, priceId=free_plan.price_id)
    with pytest.raises(ValueError, match="confirm-free"):
        fake.complete_checkout(session["id"])


async def test_checkout_price_not_found_is_404(customer: httpx2.AsyncClient) -> None:
    response = await customer.post("/v1/checkout/create", json={"priceId": "price_nope"})
    assert_error(response, 404, "RES_NOT_FOUND", "Price not found or not available")


async def test_checkout_without_stripe_is_400_even_for_free(
    fake: FakeBillingOS, newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    fake.disconnect_stripe()
    assert fake.stripe_account_id is None
    response = await newbie.post("/v1/checkout/create", json={"priceId": free_plan.price_id})
    assert_error(response, 400, "VAL_INVALID_INPUT", "Organization does not have a Stripe Connect account")
    assert fake.customer("newbie") is None


async def test_checkout_stripe_connected_false_at_construction() -> None:
    fake = FakeBillingOS(stripe_connected=False, rate_limits=None)
    assert fake.stripe_account_id is None


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"priceId": PRO_PRICE, "bogus": 1}, {"bogus": ["property bogus should not exist"]}),
        ({}, {"priceId": ["priceId should not be empty", "priceId must be a string"]}),
        ({"priceId": PRO_PRICE, "metadata": "x"}, {"metadata": ["metadata must be an object"]}),
        (
            {"priceId": PRO_PRICE, "mode": "popup"},
            {"mode": ["mode must be one of the following values: embedded, redirect"]},
        ),
        ({"priceId": PRO_PRICE, "customerEmail": 3}, {"customerEmail": ["customerEmail must be a string"]}),
    ],
)
async def test_checkout_dto_validation_is_400_field_errors(
    customer: httpx2.AsyncClient, body: dict[str, Any], fields: dict[str, list[str]]
) -> None:
    response = await customer.post("/v1/checkout/create", json=body)
    assert field_errors(response) == fields
    assert response.json()["error"]["message"] == "Validation failed for one or more fields"


async def test_checkout_repeated_email_repoints_another_customer(
    fake: FakeBillingOS, newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    await _checkout(newbie, priceId=free_plan.price_id, customerEmail="grace@example.com")
    assert fake.customer("user_2") is None  # the server's bug: grace's row now belongs to newbie
    record = fake.customer("newbie")
    assert record is not None
    assert record.email == "grace@example.com"


async def test_checkout_second_email_less_customer_is_400(
    fake: FakeBillingOS, http: httpx2.AsyncClient, newbie: httpx2.AsyncClient, free_plan: Plan
) -> None:
    await _checkout(newbie, priceId=free_plan.price_id)
    async with as_customer(fake, await mint(http, "another")) as another:
        response = await another.post("/v1/checkout/create", json={"priceId": free_plan.price_id})
    error = assert_error(response, 400, "VAL_INVALID_INPUT")
    assert error["message"].startswith("Failed to upsert customer after multiple attempts: ")


async def test_checkout_status_unknown_is_404(customer: httpx2.AsyncClient) -> None:
    assert_error(
        await customer.get("/v1/checkout/nope/status"), 404, "RES_NOT_FOUND", "Checkout session not found"
    )


# -- portal --------------------------------------------------------------------------------------


async def test_portal_create_and_status(
    fake: FakeBillingOS, customer: httpx2.AsyncClient, clock: Clock
) -> None:
    body = success(await customer.post("/v1/portal/create", json={"metadata": {"from": "settings"}}), 201)
    record = fake.customer(USER)
    assert record is not None
    assert set(body) == {"id", "customerId", "organizationId", "expiresAt", "requestId"}
    assert UUID.match(body["id"])
    assert body["customerId"] == record.id
    assert body["expiresAt"].startswith("2026-01-02T00:00:00")
    async with as_customer(fake, None) as anyone:
        status = success(await anyone.get(f"/v1/portal/{body['id']}/status"), 200)
        clock.advance(24 * 3600)
        expired = success(await anyone.get(f"/v1/portal/{body['id']}/status"), 200)
        unknown = success(await anyone.get("/v1/portal/nope/status"), 200)
    assert (status["sessionId"], status["isValid"], status["customerId"]) == (body["id"], True, record.id)
    assert expired["isValid"] is False
    assert unknown == {"sessionId": "nope", "isValid": False, "requestId": unknown["requestId"]}


async def test_portal_without_customer_is_404_complete_checkout_first(newbie: httpx2.AsyncClient) -> None:
    response = await newbie.post("/v1/portal/create")
    assert_error(
        response,
        404,
        "RES_NOT_FOUND",
        "Customer not found. Customer must complete checkout before accessing portal.",
    )


async def test_portal_given_unknown_customer_id_is_404(customer: httpx2.AsyncClient) -> None:
    response = await customer.post("/v1/portal/create", json={"customerId": "nope"})
    assert_error(response, 404, "RES_NOT_FOUND", "Customer not found or does not belong to organization")


async def test_portal_unknown_field_is_400(customer: httpx2.AsyncClient) -> None:
    response = await customer.post("/v1/portal/create", json={"returnUrl": "x"})
    assert field_errors(response) == {"returnUrl": ["property returnUrl should not exist"]}
