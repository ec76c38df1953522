"""billing.entitlements: GET /v1/usage/check, metadata flattened, "Customer not found" means no access."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import respx

from billingos import (
    AsyncBillingOS,
    AuthorizationError,
    BillingOS,
    Entitlement,
    EntitlementReason,
    FeatureType,
    NotFoundError,
    ValidationError,
)

from .._factories import check_json, error_body
from . import assert_standard_headers


async def test_check_sends_get_with_customer_and_feature_query(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/v1/usage/check").respond(200, json=check_json())
    await billing.entitlements.check("user_42", "api_calls")
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.url.path == "/v1/usage/check"
    assert dict(request.url.params) == {"customer_id": "user_42", "feature_key": "api_calls"}


async def test_check_sends_standard_headers_without_body(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/v1/usage/check").respond(200, json=check_json())
    await billing.entitlements.check("user_42", "api_calls")
    assert_standard_headers(route.calls.last.request, has_body=False)


async def test_check_query_values_are_encoded_not_split(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/v1/usage/check").respond(200, json=check_json())
    await billing.entitlements.check("a&feature_key=x", "b c")
    assert dict(route.calls.last.request.url.params) == {
        "customer_id": "a&feature_key=x",
        "feature_key": "b c",
    }


async def test_check_flattens_metadata_remaining_resets_at_and_type(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(200, json=check_json())
    ent = await billing.entitlements.check("user_42", "api_calls")
    assert ent == Entitlement(
        feature_key="api_calls",
        has_access=True,
        reason=None,
        limit=1000,
        usage=10,
        remaining=990,
        resets_at=datetime(2026, 3, 1, tzinfo=UTC),
        feature_type=FeatureType.USAGE_QUOTA,
    )


async def test_check_with_null_metadata_leaves_flattened_fields_none(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(
        200, json=check_json(has_access=True, limit=None, usage=None, metadata=None)
    )
    ent = await billing.entitlements.check("user_42", "sso")
    assert (ent.limit, ent.usage, ent.remaining, ent.resets_at, ent.feature_type) == (None,) * 5


async def test_check_reads_zero_remaining_as_zero_not_none(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(
        200,
        json=check_json(
            has_access=False, reason="quota_exceeded", metadata={"remaining": 0, "type": "usage_quota"}
        ),
    )
    ent = await billing.entitlements.check("user_42", "api_calls")
    assert ent.remaining == 0
    assert ent.reason is EntitlementReason.QUOTA_EXCEEDED


async def test_check_denied_keeps_reason(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/v1/usage/check").respond(
        200, json=check_json(has_access=False, reason="no_active_subscription", metadata=None)
    )
    ent = await billing.entitlements.check("user_42", "api_calls")
    assert ent.has_access is False
    assert ent.reason is EntitlementReason.NO_ACTIVE_SUBSCRIPTION


async def test_check_keeps_unknown_reason_and_feature_type(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(
        200,
        json=check_json(has_access=False, reason="trial_expired", metadata={"type": "seat_based"}),
    )
    ent = await billing.entitlements.check("user_42", "seats")
    assert ent.reason == "trial_expired"
    assert isinstance(ent.reason, EntitlementReason)
    assert ent.feature_type == "seat_based"
    assert isinstance(ent.feature_type, FeatureType)


async def test_check_customer_not_found_means_no_access(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/v1/usage/check").respond(
        404, json=error_body(404, "RES_NOT_FOUND", "Customer not found")
    )
    ent = await billing.entitlements.check("never_seen", "api_calls")
    assert ent == Entitlement(
        feature_key="api_calls", has_access=False, reason=EntitlementReason.CUSTOMER_NOT_FOUND
    )
    assert ent.reason == "customer_not_found"
    assert route.call_count == 1


async def test_check_other_not_found_message_still_raises(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(
        404, json=error_body(404, "RES_NOT_FOUND", "No active subscription with this feature")
    )
    with pytest.raises(NotFoundError, match="No active subscription with this feature") as info:
        await billing.entitlements.check("user_42", "api_calls")
    assert info.value.status_code == 404


async def test_check_html_404_from_proxy_still_raises(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(404, text="<html><body>Not Found</body></html>")
    with pytest.raises(NotFoundError):
        await billing.entitlements.check("user_42", "api_calls")


async def test_check_forbidden_raises(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/v1/usage/check").respond(
        403, json=error_body(403, "AUTHZ_INSUFFICIENT_PERMISSIONS", "Customer not found")
    )
    with pytest.raises(AuthorizationError):
        await billing.entitlements.check("user_42", "api_calls")


async def test_check_entitlement_shortcut_hits_same_endpoint(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/v1/usage/check").respond(200, json=check_json())
    ent = await billing.check_entitlement("user_42", "api_calls")
    assert ent.has_access is True
    assert dict(route.calls.last.request.url.params) == {"customer_id": "user_42", "feature_key": "api_calls"}


@pytest.mark.parametrize(
    ("customer_id", "feature_key", "field"),
    [
        ("", "api_calls", "customer_id"),
        ("  ", "api_calls", "customer_id"),
        ("user_42", "", "feature_key"),
        (None, "api_calls", "customer_id"),
        ("user_42", 7, "feature_key"),
    ],
)
async def test_check_refuses_empty_ids_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, customer_id: object, feature_key: object, field: str
) -> None:
    route = router.get("/v1/usage/check").respond(200, json=check_json())
    with pytest.raises(ValidationError, match=field):
        await billing.entitlements.check(customer_id, feature_key)  # type: ignore[arg-type]
    assert route.call_count == 0


def test_sync_check_and_shortcut_mirror_async(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    route = router.get("/v1/usage/check").respond(200, json=check_json())
    assert sync_billing.entitlements.check("user_42", "api_calls").remaining == 990
    assert sync_billing.check_entitlement("user_42", "api_calls").feature_type is FeatureType.USAGE_QUOTA
    assert route.call_count == 2
    assert dict(route.calls.last.request.url.params) == {"customer_id": "user_42", "feature_key": "api_calls"}


def test_sync_check_turns_customer_not_found_into_no_access(
    sync_billing: BillingOS, router: respx.MockRouter
) -> None:
    router.get("/v1/usage/check").respond(404, json=error_body(404, "RES_NOT_FOUND", "Customer not found"))
    ent = sync_billing.entitlements.check("never_seen", "api_calls")
    assert (ent.has_access, ent.reason) == (False, "customer_not_found")
