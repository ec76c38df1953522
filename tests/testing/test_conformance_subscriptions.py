"""CONTRACT §5 Subscriptions (snake_case): create, get, list, update, cancel, reactivate, any status."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from billingos.testing import FakeBillingOS, SubscriptionRecord

from ._helpers import (
    DAY,
    FLAG,
    OTHER,
    PRO_PRICE,
    PRO_PRODUCT,
    START,
    TEAM_PRICE,
    TEAM_PRODUCT,
    TRIAL_PRICE,
    USER,
    Clock,
    assert_error,
    field_errors,
    iso,
)

SUBSCRIPTION_KEYS = {
    "id",
    "customer_id",
    "product_id",
    "price_id",
    "status",
    "amount",
    "currency",
    "current_period_start",
    "current_period_end",
    "trial_start",
    "trial_end",
    "cancel_at_period_end",
    "canceled_at",
    "ended_at",
    "metadata",
    "created_at",
    "updated_at",
}
STATUSES = ["incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid"]


def _subscription(response: httpx2.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or (200,)), response.text
    body: dict[str, Any] = response.json()
    assert set(body) == SUBSCRIPTION_KEYS | {"requestId"}
    return body


async def _has_access(http: httpx2.AsyncClient, feature: str = FLAG) -> bool:
    response = await http.get("/v1/usage/check", params={"customer_id": USER, "feature_key": feature})
    return bool(response.json()["has_access"])


async def test_subscription_create_is_201_with_subscription_shape(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    customer = fake.customer(OTHER)
    assert customer is not None
    response = await http.post(
        "/subscriptions",
        json={
            "customer_id": customer.id,
            "price_id": TEAM_PRICE,
            "product_id": TEAM_PRODUCT,
            "metadata": {"a": 1},
        },
    )
    body = _subscription(response, 201)
    assert body["customer_id"] == customer.id
    assert (body["product_id"], body["price_id"]) == (TEAM_PRODUCT, TEAM_PRICE)
    assert body["status"] == "active"
    assert body["amount"] == 9900
    assert type(body["amount"]) is int  # cents
    assert body["currency"] == "usd"
    assert body["current_period_start"] == iso(START)
    assert body["current_period_end"] == iso(START + 30 * DAY)
    assert (body["trial_start"], body["trial_end"]) == (None, None)
    assert body["cancel_at_period_end"] is False
    assert (body["canceled_at"], body["ended_at"]) == (None, None)
    assert body["metadata"] == {"a": 1}
    assert body["created_at"] == body["updated_at"] == iso(START)


async def test_subscription_create_with_trial_is_trialing(http: httpx2.AsyncClient) -> None:
    body = _subscription(
        await http.post("/subscriptions", json={"customer_id": USER, "price_id": TRIAL_PRICE}), 201
    )
    assert body["status"] == "trialing"
    assert body["trial_start"] == iso(START)
    assert body["trial_end"] == iso(START + 14 * DAY)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"customer_id", "price_id"}),
        ({"customer_id": USER}, {"price_id"}),
        ({"customer_id": USER, "price_id": PRO_PRICE, "metadata": "x"}, {"metadata"}),
        ({"customer_id": USER, "price_id": PRO_PRICE, "payment_method_id": 1}, {"payment_method_id"}),
    ],
)
async def test_subscription_create_validates_fields(
    http: httpx2.AsyncClient, body: dict[str, Any], fields: set[str]
) -> None:
    assert fields <= set(field_errors(await http.post("/subscriptions", json=body)))


async def test_subscription_create_unknown_customer_or_price_is_404(http: httpx2.AsyncClient) -> None:
    unknown_customer = await http.post(
        "/subscriptions", json={"customer_id": "nobody", "price_id": PRO_PRICE}
    )
    assert_error(unknown_customer, 404, "RES_NOT_FOUND", "Customer not found")
    unknown_price = await http.post("/subscriptions", json={"customer_id": USER, "price_id": "price_nope"})
    assert_error(unknown_price, 404, "RES_NOT_FOUND")


async def test_subscription_get(http: httpx2.AsyncClient, subscription: SubscriptionRecord) -> None:
    body = _subscription(await http.get(f"/subscriptions/{subscription.id}"))
    assert (body["id"], body["price_id"], body["status"]) == (subscription.id, PRO_PRICE, "active")


async def test_subscription_get_unknown_is_404(http: httpx2.AsyncClient) -> None:
    assert_error(await http.get("/subscriptions/sub_nope"), 404, "RES_NOT_FOUND", "Subscription not found")


async def test_subscription_list_by_customer_id(
    fake: FakeBillingOS, http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    second = fake.subscribe(USER, TEAM_PRICE)
    customer = fake.customer(USER)
    assert customer is not None
    response = await http.get("/subscriptions", params={"customer_id": customer.id})
    assert response.status_code == 200
    rows = response.json()
    assert isinstance(rows, list)
    assert {r["id"] for r in rows} == {subscription.id, second.id}
    assert all(set(r) == SUBSCRIPTION_KEYS for r in rows)
    everything = (await http.get("/subscriptions")).json()
    assert len(everything) == 3  # user_1's two and user_2's one
    assert (await http.get("/subscriptions", params={"customer_id": "nobody"})).json() == []


async def test_subscription_update_changes_plan(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord, clock: Clock
) -> None:
    clock.advance(DAY)
    response = await http.patch(f"/subscriptions/{subscription.id}", json={"price_id": TEAM_PRICE})
    body = _subscription(response)
    assert (body["price_id"], body["product_id"], body["amount"]) == (TEAM_PRICE, TEAM_PRODUCT, 9900)
    assert body["updated_at"] == iso(START + DAY)
    assert await _has_access(http, "exports")  # the Team plan's grant now applies


async def test_subscription_update_schedules_cancel_and_sets_metadata(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    response = await http.patch(
        f"/subscriptions/{subscription.id}", json={"cancel_at_period_end": True, "metadata": {"why": "price"}}
    )
    body = _subscription(response)
    assert body["cancel_at_period_end"] is True
    assert body["metadata"] == {"why": "price"}
    assert body["status"] == "active"
    assert (body["price_id"], body["product_id"]) == (PRO_PRICE, PRO_PRODUCT)


@pytest.mark.parametrize("body", [{"cancel_at_period_end": "yes"}, {"price_id": 3}, {"metadata": []}])
async def test_subscription_update_validates_fields(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord, body: dict[str, Any]
) -> None:
    [name] = body
    assert name in field_errors(await http.patch(f"/subscriptions/{subscription.id}", json=body))


async def test_subscription_update_unknown_is_404(http: httpx2.AsyncClient) -> None:
    assert_error(await http.patch("/subscriptions/sub_nope", json={}), 404, "RES_NOT_FOUND")


@pytest.mark.parametrize(
    "body", [{}, {"cancel_at_period_end": True}, None], ids=["empty", "explicit", "no-body"]
)
async def test_subscription_cancel_defaults_to_period_end(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord, body: dict[str, Any] | None
) -> None:
    response = await http.post(f"/subscriptions/{subscription.id}/cancel", json=body)
    sub = _subscription(response, 200, 201)
    assert sub["status"] == "active"
    assert sub["cancel_at_period_end"] is True
    assert sub["ended_at"] is None
    assert await _has_access(http)  # still entitled until the period ends


async def test_subscription_cancel_now(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord, clock: Clock
) -> None:
    clock.advance(DAY)
    response = await http.post(
        f"/subscriptions/{subscription.id}/cancel", json={"cancel_at_period_end": False}
    )
    sub = _subscription(response, 200, 201)
    assert sub["status"] == "canceled"
    assert sub["canceled_at"] == sub["ended_at"] == iso(START + DAY)
    assert not await _has_access(http)


async def test_subscription_cancel_unknown_is_404(http: httpx2.AsyncClient) -> None:
    assert_error(await http.post("/subscriptions/sub_nope/cancel", json={}), 404, "RES_NOT_FOUND")


async def test_subscription_reactivate_undoes_a_scheduled_cancel(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    await http.post(f"/subscriptions/{subscription.id}/cancel", json={})
    sub = _subscription(await http.post(f"/subscriptions/{subscription.id}/reactivate"), 200, 201)
    assert sub["cancel_at_period_end"] is False
    assert sub["status"] == "active"
    assert await _has_access(http)


async def test_subscription_reactivate_unknown_is_404(http: httpx2.AsyncClient) -> None:
    assert_error(await http.post("/subscriptions/sub_nope/reactivate"), 404, "RES_NOT_FOUND")


@pytest.mark.parametrize("status", [*STATUSES, "paused", "some_future_status"])
async def test_subscription_every_status_is_served_and_unknown_ones_do_not_crash(
    fake: FakeBillingOS, http: httpx2.AsyncClient, subscription: SubscriptionRecord, status: str
) -> None:
    fake.set_status(subscription.id, status)
    assert _subscription(await http.get(f"/subscriptions/{subscription.id}"))["status"] == status
    listed = (await http.get("/subscriptions")).json()
    assert status in {s["status"] for s in listed}
    check = await http.get("/v1/usage/check", params={"customer_id": USER, "feature_key": FLAG})
    assert check.status_code == 200
    assert check.json()["has_access"] is (status == "active")
    metrics = await http.get("/v1/usage/metrics", params={"customer_id": USER})
    assert metrics.status_code == 200
