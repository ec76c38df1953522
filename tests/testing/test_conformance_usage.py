"""CONTRACT §5 Usage and entitlements (snake_case): check, track, metrics, and concurrent tracking."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from billingos.testing import FakeBillingOS, SubscriptionRecord

from ._helpers import (
    DAY,
    FLAG,
    NUMERIC,
    QUOTA,
    QUOTA_LIMIT,
    START,
    TEAM_PRICE,
    UNGRANTED,
    USER,
    Clock,
    as_number,
    assert_error,
    client,
    field_errors,
    iso,
    make_fake,
    track_body,
)

CHECK_KEYS = {"feature_key", "has_access", "reason", "limit", "usage", "metadata", "requestId"}


async def _check(http: httpx2.AsyncClient, customer: str = USER, feature: str = QUOTA) -> httpx2.Response:
    return await http.get("/v1/usage/check", params={"customer_id": customer, "feature_key": feature})


async def _checked(http: httpx2.AsyncClient, customer: str = USER, feature: str = QUOTA) -> dict[str, Any]:
    response = await _check(http, customer, feature)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) <= CHECK_KEYS
    assert body["feature_key"] == feature
    return body


async def _track(http: httpx2.AsyncClient, quantity: float = 1, **kwargs: Any) -> httpx2.Response:
    return await http.post("/v1/usage/track", json=track_body(quantity=quantity, **kwargs))


# -- customer_id -----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["check", "track", "metrics"])
async def test_usage_customer_id_is_the_external_id_never_the_internal_id(
    fake: FakeBillingOS, http: httpx2.AsyncClient, endpoint: str
) -> None:
    """``customer_id`` is the merchant's own user id: the internal UUID finds no customer."""
    record = fake.customer(USER)
    assert record is not None
    if endpoint == "check":
        response = await _check(http, record.id)
    elif endpoint == "track":
        response = await _track(http, customer=record.id)
    else:
        response = await http.get("/v1/usage/metrics", params={"customer_id": record.id})
    assert_error(response, 404, "RES_NOT_FOUND", "Customer not found")
    assert fake.usage_of(USER, QUOTA) == 0


# -- check -----------------------------------------------------------------------------------------


async def test_check_unknown_customer_is_404_customer_not_found(http: httpx2.AsyncClient) -> None:
    assert_error(await _check(http, "nobody"), 404, "RES_NOT_FOUND", "Customer not found")


async def test_check_without_grant_is_no_active_subscription(http: httpx2.AsyncClient) -> None:
    await http.post("/customers", json={"email": "free@example.com", "external_id": "free"})
    for customer, feature in [("free", QUOTA), (USER, UNGRANTED), (USER, "no_such_feature")]:
        body = await _checked(http, customer, feature)
        assert body["has_access"] is False
        assert body["reason"] == "no_active_subscription"
        assert body["limit"] is None or as_number(body["limit"]) >= 0
        assert body["usage"] is None or as_number(body["usage"]) >= 0
        assert body["metadata"] is None or isinstance(body["metadata"], dict)


@pytest.mark.parametrize("status", ["trialing", "past_due", "incomplete", "unpaid", "paused"])
async def test_check_subscription_not_active(
    fake: FakeBillingOS, http: httpx2.AsyncClient, subscription: SubscriptionRecord, status: str
) -> None:
    fake.set_status(subscription.id, status)
    for feature in (QUOTA, FLAG, NUMERIC):
        body = await _checked(http, USER, feature)
        assert body["has_access"] is False
        assert body["reason"] == "subscription_not_active"


async def test_check_canceled_subscription_has_no_access(
    fake: FakeBillingOS, http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    fake.set_status(subscription.id, "canceled")
    body = await _checked(http)
    assert body["has_access"] is False
    assert body["reason"] in ("no_active_subscription", "subscription_not_active")


async def test_check_boolean_flag(http: httpx2.AsyncClient) -> None:
    body = await _checked(http, USER, FLAG)
    assert body["has_access"] is True
    assert "reason" not in body
    assert body["metadata"]["type"] == "boolean_flag"


async def test_check_numeric_limit(http: httpx2.AsyncClient) -> None:
    body = await _checked(http, USER, NUMERIC)
    assert body["has_access"] is True
    assert as_number(body["limit"]) == 5
    assert body["metadata"]["type"] == "numeric_limit"


async def test_check_usage_quota_reports_usage_remaining_and_resets_at(
    http: httpx2.AsyncClient, clock: Clock
) -> None:
    await _track(http, 30)
    clock.advance(DAY)
    body = await _checked(http)
    assert body["has_access"] is True
    assert "reason" not in body
    assert as_number(body["limit"]) == QUOTA_LIMIT
    assert as_number(body["usage"]) == 30
    metadata = body["metadata"]
    assert metadata["type"] == "usage_quota"
    assert as_number(metadata["remaining"]) == 70
    assert metadata["resets_at"] == iso(START + 30 * DAY)


async def test_check_consumed_at_limit_is_quota_exceeded(http: httpx2.AsyncClient) -> None:
    await _track(http, QUOTA_LIMIT)
    body = await _checked(http)
    assert body["has_access"] is False
    assert body["reason"] == "quota_exceeded"
    assert as_number(body["usage"]) == QUOTA_LIMIT
    assert as_number(body["metadata"]["remaining"]) == 0


async def test_check_period_rolls_over_and_usage_resets(
    fake: FakeBillingOS, http: httpx2.AsyncClient, clock: Clock
) -> None:
    await _track(http, QUOTA_LIMIT)
    clock.advance(30 * DAY)
    body = await _checked(http)
    assert body["has_access"] is True
    assert as_number(body["usage"]) == 0
    assert body["metadata"]["resets_at"] == iso(START + 60 * DAY)
    assert fake.usage_of(USER, QUOTA) == 0


@pytest.mark.parametrize(
    ("params", "missing"),
    [({}, {"customer_id", "feature_key"}), ({"customer_id": USER}, {"feature_key"})],
)
async def test_check_requires_customer_id_and_feature_key(
    http: httpx2.AsyncClient, params: dict[str, str], missing: set[str]
) -> None:
    assert set(field_errors(await http.get("/v1/usage/check", params=params))) == missing


# -- track -----------------------------------------------------------------------------------------


async def test_track_is_201_with_usage_shape(http: httpx2.AsyncClient, clock: Clock) -> None:
    clock.advance(3600)
    response = await _track(http, 5, metadata={"source": "test"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"success", "feature_key", "quantity", "recorded_at", "usage", "requestId"}
    assert body["success"] is True
    assert body["feature_key"] == QUOTA
    assert as_number(body["quantity"]) == 5
    assert body["recorded_at"] == iso(START + 3600)
    usage = body["usage"]
    assert set(usage) == {"consumed_units", "limit_units", "remaining_units", "period_start", "period_end"}
    assert as_number(usage["consumed_units"]) == 5
    assert as_number(usage["limit_units"]) == QUOTA_LIMIT
    assert as_number(usage["remaining_units"]) == 95
    assert usage["period_start"] == iso(START)
    assert usage["period_end"] == iso(START + 30 * DAY)


async def test_track_numbers_may_be_non_integer_decimals(http: httpx2.AsyncClient) -> None:
    usage = (await _track(http, 1)).json()["usage"]
    for name in ("consumed_units", "limit_units", "remaining_units"):
        value = usage[name]
        as_number(value)  # a JSON number or a decimal string, never a bool
    assert as_number(usage["limit_units"]) == 100.0  # e.g. "100.000000" on the wire


async def test_track_unknown_customer_is_404_customer_not_found(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    response = await _track(http, customer="nobody")
    assert_error(response, 404, "RES_NOT_FOUND", "Customer not found")


async def test_track_without_grant_is_404_no_active_subscription(
    fake: FakeBillingOS, http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    message = "No active subscription with this feature"
    assert_error(await _track(http, feature=UNGRANTED), 404, "RES_NOT_FOUND", message)
    fake.set_status(subscription.id, "past_due")
    assert_error(await _track(http), 404, "RES_NOT_FOUND", message)
    assert fake.usage_of(USER, QUOTA) == 0


@pytest.mark.parametrize("feature", [FLAG, NUMERIC])
async def test_track_non_quota_feature_is_400(http: httpx2.AsyncClient, feature: str) -> None:
    response = await _track(http, feature=feature)
    assert_error(response, 400, "VAL_INVALID_INPUT", "Feature is not a usage quota type")


async def test_track_over_the_limit_is_400_quota_exceeded_and_not_counted(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    assert (await _track(http, 99)).status_code == 201
    assert_error(await _track(http, 2), 400, "VAL_INVALID_INPUT", "quota_exceeded")
    assert fake.usage_of(USER, QUOTA) == 99
    at_limit = await _track(http, 1)  # consumed + quantity == limit is allowed
    assert at_limit.status_code == 201
    assert as_number(at_limit.json()["usage"]["remaining_units"]) == 0
    assert_error(await _track(http, 0.001), 400, "VAL_INVALID_INPUT", "quota_exceeded")


async def test_track_fractional_quantities(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    await _track(http, 0.5)
    response = await _track(http, 0.25)
    assert response.status_code == 201
    assert as_number(response.json()["quantity"]) == 0.25
    assert as_number(response.json()["usage"]["consumed_units"]) == 0.75
    assert fake.usage_of(USER, QUOTA) == 0.75


@pytest.mark.parametrize("quantity", [0, -1, "1", True, None, [1]])
async def test_track_quantity_must_be_a_positive_number(
    fake: FakeBillingOS, http: httpx2.AsyncClient, quantity: object
) -> None:
    body = {**track_body(), "quantity": quantity}
    assert "quantity" in field_errors(await http.post("/v1/usage/track", json=body))
    assert fake.usage_of(USER, QUOTA) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"feature_key": QUOTA, "quantity": 1}, "customer_id"),
        ({"customer_id": USER, "quantity": 1}, "feature_key"),
        (track_body(idempotency_key=5), "idempotency_key"),
        (track_body(metadata="x"), "metadata"),
    ],
)
async def test_track_body_fields_are_validated(
    http: httpx2.AsyncClient, body: dict[str, Any], field: str
) -> None:
    assert field in field_errors(await http.post("/v1/usage/track", json=body))


async def test_track_uses_the_active_grant_among_several_subscriptions(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    fake.subscribe(USER, TEAM_PRICE)
    response = await _track(http, feature=UNGRANTED)
    assert response.status_code == 201
    assert as_number(response.json()["usage"]["limit_units"]) == 10


# -- metrics ---------------------------------------------------------------------------------------


async def test_metrics_shape(http: httpx2.AsyncClient, clock: Clock) -> None:
    await _track(http, 25)
    clock.advance(DAY / 2)
    response = await http.get("/v1/usage/metrics", params={"customer_id": USER})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"metrics", "customer_id", "requestId"}
    assert body["customer_id"] == USER
    [metric] = body["metrics"]  # only usage_quota features are metered
    assert set(metric) == {
        "feature_key",
        "feature_title",
        "product_name",
        "consumed",
        "limit",
        "remaining",
        "percentage_used",
        "period_start",
        "period_end",
        "resets_in_days",
    }
    assert metric["feature_key"] == QUOTA
    assert metric["feature_title"] == "API calls"
    assert metric["product_name"] == "Pro"
    assert as_number(metric["consumed"]) == 25
    assert as_number(metric["limit"]) == QUOTA_LIMIT
    assert as_number(metric["remaining"]) == 75
    assert metric["percentage_used"] == 25
    assert type(metric["percentage_used"]) is int
    assert metric["resets_in_days"] == 30
    assert type(metric["resets_in_days"]) is int
    assert metric["period_start"] == iso(START)
    assert metric["period_end"] == iso(START + 30 * DAY)


async def test_metrics_filter_by_feature_key(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.subscribe(USER, TEAM_PRICE)
    everything = await http.get("/v1/usage/metrics", params={"customer_id": USER})
    assert {m["feature_key"] for m in everything.json()["metrics"]} == {QUOTA, UNGRANTED}
    one = await http.get("/v1/usage/metrics", params={"customer_id": USER, "feature_key": UNGRANTED})
    assert [m["feature_key"] for m in one.json()["metrics"]] == [UNGRANTED]
    none = await http.get("/v1/usage/metrics", params={"customer_id": USER, "feature_key": "zzz"})
    assert none.json()["metrics"] == []


async def test_metrics_unknown_customer_is_404(http: httpx2.AsyncClient) -> None:
    response = await http.get("/v1/usage/metrics", params={"customer_id": "nobody"})
    assert_error(response, 404, "RES_NOT_FOUND", "Customer not found")


async def test_metrics_requires_customer_id(http: httpx2.AsyncClient) -> None:
    assert "customer_id" in field_errors(await http.get("/v1/usage/metrics"))


# -- concurrency -----------------------------------------------------------------------------------


async def test_concurrent_200_tracks_all_count() -> None:
    fake = make_fake(Clock())
    fake.add_product("Big", features={QUOTA: 10_000}, price_id="price_big")
    fake.add_customer("busy")
    fake.subscribe("busy", "price_big")
    async with client(fake) as http:
        responses = await asyncio.gather(
            *(http.post("/v1/usage/track", json=track_body("busy")) for _ in range(200))
        )
    assert [r.status_code for r in responses] == [201] * 200
    assert fake.usage_of("busy", QUOTA) == 200
    consumed = sorted(as_number(r.json()["usage"]["consumed_units"]) for r in responses)
    assert consumed == [float(n) for n in range(1, 201)]  # every call saw its own increment
