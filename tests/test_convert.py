"""The converter: every wire quirk of CONTRACT §1 and §5, and bad 2xx bodies as ResponseDecodeError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import respx

from billingos import (
    AsyncBillingOS,
    Customer,
    Entitlement,
    FeatureType,
    Page,
    ResponseDecodeError,
    Subscription,
    SubscriptionStatus,
    UsageMetrics,
    UsageRecord,
)
from billingos._convert import structurer

from ._factories import check_json, customer_json, metrics_json, subscription_json, track_json

UTC_10AM = datetime(2026, 2, 27, 10, 0, tzinfo=UTC)
HEADER_ID = "req_" + "c" * 24

# -- unknown keys ------------------------------------------------------------------------------


def test_unknown_keys_and_request_id_are_ignored() -> None:
    data = customer_json(requestId="req_" + "9" * 24, loyalty_tier="gold", nested={"x": [1, 2]})
    customer = structurer(Customer)(data)
    assert customer.id == data["id"]
    assert not hasattr(customer, "loyalty_tier")


def test_unknown_keys_in_nested_objects_are_ignored() -> None:
    data = customer_json(billing_address={"city": "Paris", "country": "FR", "geo": {"lat": 48.8}})
    customer = structurer(Customer)(data)
    assert customer.billing_address is not None
    assert customer.billing_address.city == "Paris"


def test_missing_optional_fields_take_defaults() -> None:
    customer = structurer(Customer)({"id": "c1"})
    assert customer == Customer(id="c1")
    assert customer.metadata == {}


# -- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-27T10:00:00Z",
        "2026-02-27T10:00:00.000Z",
        "2026-02-27T10:00:00.000000Z",
        "2026-02-27T10:00:00z",
        "2026-02-27T10:00:00+00:00",
        "2026-02-27T11:00:00+01:00",
        "2026-02-27T04:30:00-05:30",
        "2026-02-27T10:00:00",
        "2026-02-27T10:00:00.000",
    ],
)
def test_iso_dates_parse_to_aware_datetimes(text: str) -> None:
    customer = structurer(Customer)(customer_json(created_at=text))
    assert customer.created_at == UTC_10AM
    assert customer.created_at is not None
    assert customer.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "microsecond"),
    [
        ("2026-02-27T10:00:00.1+00:00", 100000),
        ("2026-02-27T10:00:00.12+00:00", 120000),
        ("2026-02-27T10:00:00.123Z", 123000),
        ("2026-02-27T10:00:00.1234+00:00", 123400),
        ("2026-02-27T10:00:00.12345Z", 123450),
        ("2026-02-27T10:00:00.123456+00:00", 123456),
    ],
)
def test_iso_dates_with_any_number_of_fraction_digits_parse(text: str, microsecond: int) -> None:
    # PostgreSQL trims trailing zeros ("…:00.12+00:00"); Python 3.10's fromisoformat takes only 3 or 6 digits.
    customer = structurer(Customer)(customer_json(created_at=text))
    assert customer.created_at == UTC_10AM.replace(microsecond=microsecond)


def test_date_with_offset_keeps_its_offset() -> None:
    customer = structurer(Customer)(customer_json(created_at="2026-02-27T11:00:00+01:00"))
    assert customer.created_at is not None
    assert customer.created_at.utcoffset() == timedelta(hours=1)


def test_date_without_offset_is_read_as_utc() -> None:
    customer = structurer(Customer)(customer_json(created_at="2026-02-27T10:00:00"))
    assert customer.created_at is not None
    assert customer.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [{}, None], ids=["empty_object", "null"])
def test_broken_or_null_dates_read_as_none(value: Any) -> None:
    sub = structurer(Subscription)(
        subscription_json(
            current_period_start=value, current_period_end=value, created_at=value, updated_at=value
        )
    )
    assert (sub.current_period_start, sub.current_period_end, sub.created_at, sub.updated_at) == (None,) * 4


@pytest.mark.parametrize(
    "value", ["yesterday", "", "2026-13-01T00:00:00Z", 1772186400, {"$date": "x"}, [2026]]
)
async def test_unparseable_date_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter, value: Any
) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(created_at=value))
    with pytest.raises(ResponseDecodeError, match="created_at"):
        await billing.customers.get("c1")


# -- numbers -----------------------------------------------------------------------------------


def test_numbers_with_trailing_zeros_and_numeric_strings_read_as_numbers() -> None:
    record = structurer(UsageRecord)(
        track_json(
            quantity="2.500000",
            usage={"consumed_units": 11.000000, "limit_units": "1000.000000", "remaining_units": " 989 "},
        )
    )
    assert record.quantity == 2.5
    assert record.usage is not None
    assert (record.usage.consumed_units, record.usage.limit_units, record.usage.remaining_units) == (
        11,
        1000,
        989,
    )


async def test_usage_numbers_from_raw_json_text(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    raw = (
        b'{"success":true,"feature_key":"api_calls","quantity":1,"recorded_at":"2026-02-27T10:00:00.000Z",'
        b'"usage":{"consumed_units":1000.000000,"limit_units":1000.000000,"remaining_units":0.000000,'
        b'"period_start":{},"period_end":null}}'
    )
    router.post("/v1/usage/track").respond(201, content=raw, headers={"Content-Type": "application/json"})
    record = await billing.usage.track("user_42", "api_calls")
    assert record.usage is not None
    assert (record.usage.consumed_units, record.usage.limit_units, record.usage.remaining_units) == (
        1000,
        1000,
        0,
    )
    assert (record.usage.period_start, record.usage.period_end) == (None, None)


@pytest.mark.parametrize(
    ("wire", "expected"), [(2900, 2900), ("2900", 2900), (2900.0, 2900), ("2900.000000", 2900)]
)
def test_int_field_accepts_integral_numbers_and_strings(wire: Any, expected: int) -> None:
    sub = structurer(Subscription)(subscription_json(amount=wire))
    assert sub.amount == expected
    assert isinstance(sub.amount, int)


@pytest.mark.parametrize("wire", [1.5, "1.5", "abc", True, [2900], "NaN", "Infinity"])
async def test_int_field_refuses_non_integral_values(
    billing: AsyncBillingOS, router: respx.MockRouter, wire: Any
) -> None:
    router.get("/subscriptions/sub_1").respond(200, json=subscription_json(amount=wire))
    with pytest.raises(ResponseDecodeError, match="amount"):
        await billing.subscriptions.get("sub_1")


@pytest.mark.parametrize("wire", ["abc", "", True, None, "NaN", "-Infinity", {}])
async def test_float_field_refuses_non_numbers(
    billing: AsyncBillingOS, router: respx.MockRouter, wire: Any
) -> None:
    router.post("/v1/usage/track").respond(201, json=track_json(quantity=wire))
    with pytest.raises(ResponseDecodeError, match="quantity"):
        await billing.usage.track("user_42", "api_calls")


def test_page_totals_accept_numeric_strings() -> None:
    page = structurer(Page[Customer])(
        {"data": [], "total": "3", "page": "1", "limit": "50", "total_pages": "1"}
    )
    assert (page.total, page.page, page.limit, page.total_pages) == (3, 1, 50, 1)


# -- strings and booleans: no silent coercion --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": None}, "id"),
        ({"id": 5}, "id"),
        ({"id": ["c1"]}, "id"),
        ({"email": 5}, "email"),
        ({"external_id": 42}, "external_id"),
        ({"billing_address": {"city": 75}}, "city"),
    ],
)
async def test_wrong_type_for_string_field_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter, overrides: dict[str, Any], field: str
) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(**overrides))
    with pytest.raises(ResponseDecodeError, match=field) as info:
        await billing.customers.get("c1")
    assert not isinstance(info.value, (KeyError, ValueError, TypeError))


async def test_missing_required_field_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    data = customer_json()
    del data["id"]
    router.get("/customers/c1").respond(200, json=data)
    with pytest.raises(ResponseDecodeError, match="id"):
        await billing.customers.get("c1")


async def test_null_required_string_in_usage_record_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/usage/track").respond(201, json=track_json(feature_key=None))
    with pytest.raises(ResponseDecodeError, match="feature_key"):
        await billing.usage.track("user_42", "api_calls")


async def test_bad_item_in_page_is_decode_error(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/customers").respond(
        200, json={"data": [customer_json(), customer_json(id=None)], "total": 2, "page": 1, "total_pages": 1}
    )
    with pytest.raises(ResponseDecodeError, match="id"):
        await billing.customers.list().page()


@pytest.mark.parametrize("wire", ["yes", "true", 1, 0, None])
async def test_bool_field_refuses_non_booleans(
    billing: AsyncBillingOS, router: respx.MockRouter, wire: Any
) -> None:
    router.get("/v1/usage/check").respond(200, json=check_json(has_access=wire))
    with pytest.raises(ResponseDecodeError, match="has_access"):
        await billing.entitlements.check("user_42", "api_calls")


@pytest.mark.parametrize("wire", ["yes", "false", 1])
async def test_optional_bool_field_refuses_non_booleans(
    billing: AsyncBillingOS, router: respx.MockRouter, wire: Any
) -> None:
    router.get("/subscriptions/sub_1").respond(200, json=subscription_json(cancel_at_period_end=wire))
    with pytest.raises(ResponseDecodeError, match="cancel_at_period_end"):
        await billing.subscriptions.get("sub_1")


def test_null_metadata_reads_as_empty_mapping() -> None:
    assert structurer(Customer)(customer_json(metadata=None)).metadata == {}


async def test_non_object_metadata_is_decode_error(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/customers/c1").respond(200, json=customer_json(metadata=["plan", "pro"]))
    with pytest.raises(ResponseDecodeError, match="metadata"):
        await billing.customers.get("c1")


# -- open enums --------------------------------------------------------------------------------


def test_unknown_subscription_status_is_kept() -> None:
    sub = structurer(Subscription)(subscription_json(status="paused"))
    assert sub.status == "paused"
    assert isinstance(sub.status, SubscriptionStatus)
    assert str(sub.status) == "paused"


@pytest.mark.parametrize("status", [s.value for s in SubscriptionStatus])
def test_known_subscription_status_is_the_member(status: str) -> None:
    sub = structurer(Subscription)(subscription_json(status=status))
    assert sub.status is SubscriptionStatus(status)


async def test_non_string_status_is_decode_error(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/subscriptions/sub_1").respond(200, json=subscription_json(status=3))
    with pytest.raises(ResponseDecodeError, match="status"):
        await billing.subscriptions.get("sub_1")


def test_unknown_feature_type_is_kept() -> None:
    ent = structurer(Entitlement)(check_json(metadata={"type": "seat_based"}))
    assert ent.feature_type == "seat_based"
    assert isinstance(ent.feature_type, FeatureType)


async def test_entitlement_metadata_that_is_not_an_object_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(200, json=check_json(metadata="usage_quota"))
    with pytest.raises(ResponseDecodeError, match="metadata"):
        await billing.entitlements.check("user_42", "api_calls")


def test_metrics_decode_nested_list() -> None:
    metrics = structurer(UsageMetrics)(metrics_json())
    assert metrics.metrics[0].consumed == 250
    assert metrics.metrics[0].period_end == datetime(2026, 3, 1, tzinfo=UTC)


# -- bad 2xx bodies through the client ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"not json at all", "text/plain"),
        (b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
        (b'{"id": "c1", ', "application/json"),
        (b"[" + b'{"id": "c1"}' + b"]", "application/json"),
        (b'"c1"', "application/json"),
        (b"null", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
    ],
    ids=["text", "html", "truncated_json", "array", "string", "null", "empty", "not_utf8"],
)
async def test_bad_2xx_body_is_decode_error_with_status_and_request_id(
    billing: AsyncBillingOS, router: respx.MockRouter, content: bytes, content_type: str
) -> None:
    router.get("/customers/c1").respond(
        200, content=content, headers={"Content-Type": content_type, "x-request-id": HEADER_ID}
    )
    with pytest.raises(ResponseDecodeError) as info:
        await billing.customers.get("c1")
    assert info.value.status_code == 200
    assert info.value.request_id == HEADER_ID
    assert info.value.code == "decode_error"


async def test_decode_error_without_header_reports_the_id_that_was_sent(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/customers/c1").respond(200, text="<html>oops</html>")
    with pytest.raises(ResponseDecodeError) as info:
        await billing.customers.get("c1")
    assert info.value.request_id == route.calls.last.request.headers["X-Request-Id"]


async def test_decode_error_is_not_retried(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers/c1").respond(200, text="<html>oops</html>")
    with pytest.raises(ResponseDecodeError):
        await billing.customers.get("c1")
    assert route.call_count == 1


async def test_json_array_where_page_envelope_expected_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/customers").respond(200, json=[customer_json()])
    with pytest.raises(ResponseDecodeError):
        await billing.customers.list().page()
