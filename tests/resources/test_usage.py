"""billing.usage: POST /v1/usage/track (always with an idempotency key) and GET /v1/usage/metrics."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import respx

from billingos import (
    AsyncBillingOS,
    BillingOS,
    NotFoundError,
    QuotaExceededError,
    UsageMetric,
    UsageMetrics,
    UsageSnapshot,
    ValidationError,
)

from .._factories import error_body, metrics_json, track_json
from . import assert_standard_headers, body


def _is_uuid4(value: str) -> bool:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value


async def test_track_sends_snake_case_body_with_generated_idempotency_key(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json(quantity=3))
    await billing.usage.track("user_42", "api_calls", 3)
    sent = body(route.calls.last.request)
    key = sent.pop("idempotency_key")
    assert sent == {"customer_id": "user_42", "feature_key": "api_calls", "quantity": 3}
    assert _is_uuid4(key)


async def test_track_returns_generated_key_in_record(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    record = await billing.usage.track("user_42", "api_calls")
    assert record.idempotency_key == body(route.calls.last.request)["idempotency_key"]
    assert record.idempotency_key is not None
    assert _is_uuid4(record.idempotency_key)


async def test_track_generates_a_fresh_key_per_call(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    await billing.usage.track("user_42", "api_calls")
    await billing.usage.track("user_42", "api_calls")
    keys = {body(call.request)["idempotency_key"] for call in route.calls}
    assert len(keys) == 2


async def test_track_sends_caller_key_as_is(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    record = await billing.usage.track("user_42", "api_calls", idempotency_key="order-123:line-4")
    assert body(route.calls.last.request)["idempotency_key"] == "order-123:line-4"
    assert record.idempotency_key == "order-123:line-4"


async def test_track_defaults_quantity_to_one(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    await billing.usage.track("user_42", "api_calls")
    assert body(route.calls.last.request)["quantity"] == 1


async def test_track_allows_fractional_quantity(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json(quantity=0.25))
    record = await billing.usage.track("user_42", "storage_gb", 0.25)
    assert body(route.calls.last.request)["quantity"] == 0.25
    assert record.quantity == 0.25


async def test_track_sends_metadata(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    await billing.usage.track("user_42", "api_calls", metadata={"endpoint": "/v1/search"})
    assert body(route.calls.last.request)["metadata"] == {"endpoint": "/v1/search"}


async def test_track_sends_standard_headers_with_json_content_type(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    await billing.usage.track("user_42", "api_calls")
    assert_standard_headers(route.calls.last.request, has_body=True)


async def test_track_returns_record_with_usage_snapshot(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/usage/track").respond(201, json=track_json())
    record = await billing.usage.track("user_42", "api_calls")
    assert record.success is True
    assert record.feature_key == "api_calls"
    assert record.quantity == 1
    assert record.recorded_at == datetime(2026, 2, 27, 10, 0, tzinfo=UTC)
    assert record.usage == UsageSnapshot(
        consumed_units=11,
        limit_units=1000,
        remaining_units=989,
        period_start=datetime(2026, 2, 1, tzinfo=UTC),
        period_end=datetime(2026, 3, 1, tzinfo=UTC),
    )


async def test_track_usage_shortcut_hits_same_endpoint(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json(quantity=2))
    record = await billing.track_usage("user_42", "api_calls", 2, idempotency_key="k1")
    assert body(route.calls.last.request) == {
        "customer_id": "user_42",
        "feature_key": "api_calls",
        "quantity": 2,
        "idempotency_key": "k1",
    }
    assert record.idempotency_key == "k1"


@pytest.mark.parametrize(
    "quantity",
    [0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "1", None, [1]],
    ids=repr,
)
async def test_track_refuses_bad_quantity_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, quantity: Any
) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    with pytest.raises(ValidationError, match="quantity") as info:
        await billing.usage.track("user_42", "api_calls", quantity)
    assert info.value.status_code is None
    assert route.call_count == 0


async def test_track_refuses_integer_quantity_too_large_for_a_float(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    # JSON consumers (the NestJS server included) read 10**400 as Infinity.
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    with pytest.raises(ValidationError, match="quantity"):
        await billing.usage.track("user_42", "api_calls", 10**400)
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("", "api_calls"), {}, "customer_id"),
        (("user_42", " "), {}, "feature_key"),
        (("user_42", "api_calls"), {"idempotency_key": ""}, "idempotency_key"),
        (("user_42", "api_calls"), {"idempotency_key": "k" * 256}, "idempotency_key"),
        (("user_42", "api_calls"), {"metadata": {1: "x"}}, "metadata"),
        (("user_42", "api_calls"), {"metadata": {"when": object()}}, "JSON"),
    ],
)
async def test_track_refuses_bad_arguments_without_sending(
    billing: AsyncBillingOS,
    router: respx.MockRouter,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    field: str,
) -> None:
    route = router.post("/v1/usage/track").respond(201, json=track_json())
    with pytest.raises(ValidationError, match=field):
        await billing.usage.track(*args, **kwargs)
    assert route.call_count == 0


async def test_track_quota_exceeded_raises_quota_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/usage/track").respond(400, json=error_body(400, "VAL_INVALID_INPUT", "quota_exceeded"))
    with pytest.raises(QuotaExceededError):
        await billing.usage.track("user_42", "api_calls", 5)


async def test_track_unknown_customer_raises_not_found(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    # Unlike entitlements.check, tracking for an unknown customer is an error.
    router.post("/v1/usage/track").respond(404, json=error_body(404, "RES_NOT_FOUND", "Customer not found"))
    with pytest.raises(NotFoundError):
        await billing.usage.track("never_seen", "api_calls")


async def test_metrics_without_feature_key_sends_only_customer_id(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/v1/usage/metrics").respond(200, json=metrics_json())
    await billing.usage.metrics("user_42")
    request = route.calls.last.request
    assert request.method == "GET"
    assert dict(request.url.params) == {"customer_id": "user_42"}
    assert_standard_headers(request, has_body=False)


async def test_metrics_with_feature_key_sends_it(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/v1/usage/metrics").respond(200, json=metrics_json())
    await billing.usage.metrics("user_42", "api_calls")
    assert dict(route.calls.last.request.url.params) == {"customer_id": "user_42", "feature_key": "api_calls"}


async def test_metrics_returns_every_field(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/v1/usage/metrics").respond(200, json=metrics_json())
    metrics = await billing.usage.metrics("user_42")
    assert metrics == UsageMetrics(
        customer_id="user_1",
        metrics=(
            UsageMetric(
                feature_key="api_calls",
                consumed=250,
                limit=1000,
                remaining=750.5,
                percentage_used=25,
                feature_title="API calls",
                product_name=None,
                period_start=datetime(2026, 2, 1, tzinfo=UTC),
                period_end=datetime(2026, 3, 1, tzinfo=UTC),
                resets_in_days=2,
            ),
        ),
    )


async def test_metrics_with_no_metered_features_is_empty(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/metrics").respond(200, json=metrics_json(metrics=[]))
    assert (await billing.usage.metrics("user_42")).metrics == ()


@pytest.mark.parametrize(("customer_id", "feature_key"), [("", None), ("user_42", ""), ("user_42", "  ")])
async def test_metrics_refuses_empty_ids_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, customer_id: str, feature_key: str | None
) -> None:
    route = router.get("/v1/usage/metrics").respond(200, json=metrics_json())
    with pytest.raises(ValidationError):
        await billing.usage.metrics(customer_id, feature_key)
    assert route.call_count == 0


def test_sync_track_metrics_and_shortcut_mirror_async(
    sync_billing: BillingOS, router: respx.MockRouter
) -> None:
    track = router.post("/v1/usage/track").respond(201, json=track_json())
    metrics = router.get("/v1/usage/metrics").respond(200, json=metrics_json())
    record = sync_billing.usage.track("user_42", "api_calls", 2)
    assert record.idempotency_key == body(track.calls.last.request)["idempotency_key"]
    assert sync_billing.track_usage("user_42", "api_calls", idempotency_key="k1").idempotency_key == "k1"
    assert sync_billing.usage.metrics("user_42", "api_calls").metrics[0].consumed == 250
    assert track.call_count == 2
    assert dict(metrics.calls.last.request.url.params) == {
        "customer_id": "user_42",
        "feature_key": "api_calls",
    }
