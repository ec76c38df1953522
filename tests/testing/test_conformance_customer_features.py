"""CONTRACT-CUSTOMER §3.9: /v1/features/* for a session token, sharing usage with /v1/usage/*."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from billingos.testing import FakeBillingOS

from ._customer_helpers import as_customer, mint, success
from ._helpers import DAY, FLAG, QUOTA, QUOTA_LIMIT, TRIAL_PRICE, UNGRANTED, USER, Clock, assert_error


@pytest.fixture
async def customer(fake: FakeBillingOS, http: httpx2.AsyncClient) -> AsyncIterator[httpx2.AsyncClient]:
    """Raw httpx as USER (the seeded customer on Pro), with a fresh session token."""
    async with as_customer(fake, await mint(http, USER)) as client:
        yield client


async def _nobody(fake: FakeBillingOS, http: httpx2.AsyncClient) -> httpx2.AsyncClient:
    return as_customer(fake, await mint(http, "nobody"))


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/v1/features/check", {"feature_key": QUOTA}),
        ("GET", "/v1/features/entitlements", {}),
        ("GET", "/v1/features/usage-metrics", {}),
        ("GET", "/v1/customer/me", {}),
    ],
)
async def test_features_without_customer_are_404_customer_not_found(
    fake: FakeBillingOS, http: httpx2.AsyncClient, method: str, path: str, params: dict[str, str]
) -> None:
    async with await _nobody(fake, http) as nobody:
        response = await nobody.request(method, path, params=params)
    assert_error(response, 404, "RES_NOT_FOUND", "Customer not found")


async def test_track_usage_without_customer_is_404(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    async with await _nobody(fake, http) as nobody:
        response = await nobody.post("/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": 1})
    assert_error(response, 404, "RES_NOT_FOUND", "Customer not found")


async def test_check_grants_a_quota_with_usage_and_metadata(customer: httpx2.AsyncClient) -> None:
    body = success(await customer.get("/v1/features/check", params={"feature_key": QUOTA}), 200)
    assert body["has_access"] is True
    assert "reason" not in body
    assert (body["limit"], body["usage"]) == (QUOTA_LIMIT, 0)
    assert body["metadata"]["remaining"] == QUOTA_LIMIT
    assert body["metadata"]["type"] == "usage_quota"


async def test_check_missing_feature_key_is_400(customer: httpx2.AsyncClient) -> None:
    response = await customer.get("/v1/features/check")
    error = assert_error(response, 400, "VAL_INVALID_INPUT", "feature_key parameter is required")
    assert "details" not in error


async def test_check_ungranted_is_no_active_subscription(customer: httpx2.AsyncClient) -> None:
    body = success(await customer.get("/v1/features/check", params={"feature_key": UNGRANTED}), 200)
    assert (body["has_access"], body["reason"], body["limit"], body["metadata"]) == (
        False,
        "no_active_subscription",
        None,
        None,
    )


async def test_check_trialing_has_no_access(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.add_customer("trial_user")
    fake.subscribe("trial_user", TRIAL_PRICE)
    async with as_customer(fake, await mint(http, "trial_user")) as customer:
        body = success(await customer.get("/v1/features/check", params={"feature_key": QUOTA}), 200)
    assert (body["has_access"], body["reason"]) == (False, "subscription_not_active")


async def test_check_null_quota_limit_counts_as_exceeded(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    plan = fake.add_product("Unlimited", features={QUOTA: None})
    fake.add_customer("unlimited")
    fake.subscribe("unlimited", plan.price_id)
    async with as_customer(fake, await mint(http, "unlimited")) as customer:
        body = success(await customer.get("/v1/features/check", params={"feature_key": QUOTA}), 200)
        track = await customer.post("/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": 1})
    assert (body["has_access"], body["reason"], body["limit"]) == (False, "quota_exceeded", 0)
    assert_error(track, 400, "VAL_INVALID_INPUT", "quota_exceeded")


async def test_track_usage_answers_201_and_counts_on_both_routes(
    fake: FakeBillingOS, http: httpx2.AsyncClient, customer: httpx2.AsyncClient
) -> None:
    response = await customer.post(
        "/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": 3, "metadata": {"x": 1}}
    )
    body = success(response, 201)
    assert set(body) == {"success", "feature_key", "quantity", "recorded_at", "requestId"}
    assert (body["success"], body["feature_key"], body["quantity"]) == (True, QUOTA, 3)
    await http.post("/v1/usage/track", json={"customer_id": USER, "feature_key": QUOTA, "quantity": 2})
    assert fake.usage_of(USER, QUOTA) == 5
    secret_side = (
        await http.get("/v1/usage/check", params={"customer_id": USER, "feature_key": QUOTA})
    ).json()
    session_side = success(await customer.get("/v1/features/check", params={"feature_key": QUOTA}), 200)
    assert secret_side["usage"] == session_side["usage"] == 5


@pytest.mark.parametrize(
    "body", [{"feature_key": QUOTA}, {"feature_key": QUOTA, "quantity": 0}, {"quantity": 1}]
)
async def test_track_usage_missing_or_zero_is_400_required(
    customer: httpx2.AsyncClient, body: dict[str, object]
) -> None:
    response = await customer.post("/v1/features/track-usage", json=body)
    assert_error(response, 400, "VAL_INVALID_INPUT", "feature_key and quantity are required")


async def test_track_usage_idempotency_key_replay_is_a_no_op(
    fake: FakeBillingOS, http: httpx2.AsyncClient, customer: httpx2.AsyncClient, clock: Clock
) -> None:
    body = {"feature_key": QUOTA, "quantity": 4, "idempotency_key": "k1"}
    first = success(await customer.post("/v1/features/track-usage", json=body), 201)
    clock.advance(60)
    again = success(await customer.post("/v1/features/track-usage", json=body), 201)
    assert fake.usage_of(USER, QUOTA) == 4
    assert again["recorded_at"] != first["recorded_at"]
    clock.advance(DAY)  # the key is forgotten after 24 h (and the token has expired)
    async with as_customer(fake, await mint(http, USER)) as later:
        success(await later.post("/v1/features/track-usage", json=body), 201)
    assert fake.usage_of(USER, QUOTA) == 8


async def test_track_usage_over_quota_is_400_quota_exceeded(
    fake: FakeBillingOS, customer: httpx2.AsyncClient
) -> None:
    response = await customer.post(
        "/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": QUOTA_LIMIT + 1}
    )
    error = assert_error(response, 400, "VAL_INVALID_INPUT", "quota_exceeded")
    assert "details" not in error
    assert fake.usage_of(USER, QUOTA) == 0


async def test_track_usage_flag_is_not_a_usage_quota(customer: httpx2.AsyncClient) -> None:
    response = await customer.post("/v1/features/track-usage", json={"feature_key": FLAG, "quantity": 1})
    assert_error(response, 400, "VAL_INVALID_INPUT", "Feature is not a usage quota type")


async def test_track_usage_ungranted_is_404(customer: httpx2.AsyncClient) -> None:
    response = await customer.post("/v1/features/track-usage", json={"feature_key": UNGRANTED, "quantity": 1})
    assert_error(response, 404, "RES_NOT_FOUND", "No active subscription with this feature")


async def test_track_usage_ignores_subscription_status(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.add_customer("trial_user")
    fake.subscribe("trial_user", TRIAL_PRICE)
    async with as_customer(fake, await mint(http, "trial_user")) as customer:
        response = await customer.post("/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": 2})
    success(response, 201)
    assert fake.usage_of("trial_user", QUOTA) == 2


async def test_track_usage_negative_decrements_and_below_zero_is_400(
    fake: FakeBillingOS, customer: httpx2.AsyncClient
) -> None:
    await customer.post("/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": 5})
    success(await customer.post("/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": -2}), 201)
    assert fake.usage_of(USER, QUOTA) == 3
    response = await customer.post("/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": -4})
    assert_error(response, 400, "VAL_INVALID_INPUT", "Failed to track usage")


async def test_entitlements_list_every_grant_with_status(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    fake.add_customer("trial_user")
    fake.subscribe("trial_user", TRIAL_PRICE)
    async with as_customer(fake, await mint(http, "trial_user")) as customer:
        body = success(await customer.get("/v1/features/entitlements"), 200)
    record = fake.customer("trial_user")
    assert record is not None
    assert (body["customer_id"], body["external_user_id"]) == (record.id, "trial_user")
    (row,) = body["entitlements"]
    assert row["feature_key"] == QUOTA
    assert row["subscription_status"] == "trialing"
    assert row["feature_type"] == "usage_quota"
    assert row["properties"] == {}
    assert {"feature_title", "granted_at", "product_name"} <= set(row)


async def test_entitlements_properties_only_for_usage_quota(customer: httpx2.AsyncClient) -> None:
    body = success(await customer.get("/v1/features/entitlements"), 200)
    for row in body["entitlements"]:
        assert ("properties" in row) == (row["feature_type"] == "usage_quota")


async def test_usage_metrics_shape_and_shared_numbers(
    fake: FakeBillingOS, http: httpx2.AsyncClient, customer: httpx2.AsyncClient
) -> None:
    await http.post("/v1/usage/track", json={"customer_id": USER, "feature_key": QUOTA, "quantity": 10})
    body = success(await customer.get("/v1/features/usage-metrics"), 200)
    (metric,) = body["metrics"]
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
    assert (metric["consumed"], metric["limit"], metric["remaining"], metric["percentage_used"]) == (
        10,
        100,
        90,
        10,
    )
    assert body["external_user_id"] == USER


async def test_usage_metrics_unknown_feature_filter_returns_all(customer: httpx2.AsyncClient) -> None:
    known = success(await customer.get("/v1/features/usage-metrics", params={"feature_key": QUOTA}), 200)
    unknown = success(await customer.get("/v1/features/usage-metrics", params={"feature_key": "nope"}), 200)
    assert [m["feature_key"] for m in known["metrics"]] == [QUOTA]
    assert unknown["metrics"] == known["metrics"]
