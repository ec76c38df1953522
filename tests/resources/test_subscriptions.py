"""billing.subscriptions: create, get, list, update, cancel, reactivate (snake_case wire)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import respx

from billingos import (
    AsyncBillingOS,
    BillingOS,
    NotFoundError,
    ServerError,
    Subscription,
    SubscriptionStatus,
    ValidationError,
)

from .._factories import error_body, subscription_json
from . import HOSTILE_IDS, REFUSED_IDS, assert_standard_headers, body

CUSTOMER_ID = "3f1c2a4e-0000-4000-8000-000000000001"


async def test_create_sends_snake_case_body(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/subscriptions").respond(201, json=subscription_json())
    await billing.subscriptions.create(
        CUSTOMER_ID, "price_1", product_id="prod_1", payment_method_id="pm_1", metadata={"src": "web"}
    )
    assert body(route.calls.last.request) == {
        "customer_id": CUSTOMER_ID,
        "price_id": "price_1",
        "product_id": "prod_1",
        "payment_method_id": "pm_1",
        "metadata": {"src": "web"},
    }
    assert_standard_headers(route.calls.last.request, has_body=True)


async def test_create_omits_none_fields_from_body(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/subscriptions").respond(201, json=subscription_json())
    await billing.subscriptions.create(CUSTOMER_ID, "price_1")
    assert body(route.calls.last.request) == {"customer_id": CUSTOMER_ID, "price_id": "price_1"}


async def test_create_is_not_retried_after_server_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/subscriptions").respond(500, json=error_body(500, "SYS_INTERNAL", "boom"))
    with pytest.raises(ServerError):
        await billing.subscriptions.create(CUSTOMER_ID, "price_1")
    assert route.call_count == 1


async def test_create_returns_subscription_with_every_field(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/subscriptions").respond(
        201, json=subscription_json(trial_end="2026-02-08T00:00:00+00:00", metadata={"src": "web"})
    )
    sub = await billing.subscriptions.create(CUSTOMER_ID, "price_1")
    assert sub == Subscription(
        id="sub_1",
        customer_id=CUSTOMER_ID,
        status=SubscriptionStatus.ACTIVE,
        product_id="prod_1",
        price_id="price_1",
        amount=2900,
        currency="usd",
        current_period_start=datetime(2026, 2, 1, tzinfo=UTC),
        current_period_end=datetime(2026, 3, 1, tzinfo=UTC),
        trial_start=None,
        trial_end=datetime(2026, 2, 8, tzinfo=UTC),
        cancel_at_period_end=False,
        canceled_at=None,
        ended_at=None,
        metadata={"src": "web"},
        created_at=datetime(2026, 2, 1, tzinfo=UTC),
        updated_at=None,
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("", "price_1"), {}, "customer_id"),
        ((CUSTOMER_ID, ""), {}, "price_id"),
        ((CUSTOMER_ID, "price_1"), {"product_id": " "}, "product_id"),
        ((CUSTOMER_ID, "price_1"), {"payment_method_id": ""}, "payment_method_id"),
        ((CUSTOMER_ID, "price_1"), {"metadata": [1]}, "metadata"),
    ],
)
async def test_create_refuses_bad_arguments_without_sending(
    billing: AsyncBillingOS,
    router: respx.MockRouter,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    field: str,
) -> None:
    route = router.post("/subscriptions").respond(201, json=subscription_json())
    with pytest.raises(ValidationError, match=field):
        await billing.subscriptions.create(*args, **kwargs)
    assert route.call_count == 0


async def test_get_sends_get_to_subscription_path(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/subscriptions/sub_1").respond(200, json=subscription_json())
    sub = await billing.subscriptions.get("sub_1")
    assert sub.id == "sub_1"
    assert_standard_headers(route.calls.last.request, has_body=False)


async def test_get_unknown_raises_not_found(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/subscriptions/nope").respond(
        404, json=error_body(404, "RES_NOT_FOUND", "Subscription not found")
    )
    with pytest.raises(NotFoundError):
        await billing.subscriptions.get("nope")


async def test_get_keeps_unknown_status(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/subscriptions/sub_1").respond(200, json=subscription_json(status="paused"))
    sub = await billing.subscriptions.get("sub_1")
    assert sub.status == "paused"
    assert isinstance(sub.status, SubscriptionStatus)


async def test_list_without_customer_sends_no_query(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/subscriptions").respond(200, json=[subscription_json()])
    subs = [s async for s in billing.subscriptions.list()]
    assert [s.id for s in subs] == ["sub_1"]
    request = route.calls.last.request
    assert request.url.query == b""
    assert_standard_headers(request, has_body=False)


async def test_list_filters_by_customer(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/subscriptions").respond(200, json=[subscription_json()])
    subs = [s async for s in billing.subscriptions.list(customer_id=CUSTOMER_ID)]
    assert len(subs) == 1
    assert dict(route.calls.last.request.url.params) == {"customer_id": CUSTOMER_ID}


async def test_list_refuses_empty_customer_id(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/subscriptions").respond(200, json=[])
    with pytest.raises(ValidationError, match="customer_id"):
        billing.subscriptions.list(customer_id="")
    assert route.call_count == 0


async def test_update_sends_patch_with_only_given_fields(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.patch("/subscriptions/sub_1").respond(200, json=subscription_json(price_id="price_2"))
    sub = await billing.subscriptions.update("sub_1", price_id="price_2")
    assert body(route.calls.last.request) == {"price_id": "price_2"}
    assert sub.price_id == "price_2"
    assert_standard_headers(route.calls.last.request, has_body=True)


async def test_update_sends_false_cancel_at_period_end(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.patch("/subscriptions/sub_1").respond(200, json=subscription_json())
    await billing.subscriptions.update("sub_1", cancel_at_period_end=False, metadata={"a": 1})
    assert body(route.calls.last.request) == {"cancel_at_period_end": False, "metadata": {"a": 1}}


async def test_update_with_nothing_to_change_is_refused(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.route(method="PATCH").respond(200, json=subscription_json())
    with pytest.raises(ValidationError, match="at least one field"):
        await billing.subscriptions.update("sub_1")
    assert route.call_count == 0


async def test_update_refuses_non_bool_cancel_at_period_end(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.route(method="PATCH").respond(200, json=subscription_json())
    with pytest.raises(ValidationError, match="cancel_at_period_end"):
        await billing.subscriptions.update("sub_1", cancel_at_period_end="false")  # type: ignore[arg-type]
    assert route.call_count == 0


async def test_cancel_defaults_to_period_end(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/subscriptions/sub_1/cancel").respond(
        200, json=subscription_json(cancel_at_period_end=True)
    )
    sub = await billing.subscriptions.cancel("sub_1")
    assert body(route.calls.last.request) == {"cancel_at_period_end": True}
    assert sub.cancel_at_period_end is True
    assert_standard_headers(route.calls.last.request, has_body=True)


async def test_cancel_now_sends_false(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/subscriptions/sub_1/cancel").respond(
        201, json=subscription_json(status="canceled", canceled_at="2026-02-27T10:00:00Z")
    )
    sub = await billing.subscriptions.cancel("sub_1", at_period_end=False)
    assert body(route.calls.last.request) == {"cancel_at_period_end": False}
    assert sub.status is SubscriptionStatus.CANCELED
    assert sub.canceled_at == datetime(2026, 2, 27, 10, 0, tzinfo=UTC)


async def test_cancel_refuses_non_bool_at_period_end(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.route(method="POST").respond(200, json=subscription_json())
    with pytest.raises(ValidationError, match="at_period_end"):
        await billing.subscriptions.cancel("sub_1", at_period_end=0)  # type: ignore[arg-type]
    assert route.call_count == 0


async def test_reactivate_posts_without_body(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/subscriptions/sub_1/reactivate").respond(201, json=subscription_json())
    sub = await billing.subscriptions.reactivate("sub_1")
    assert sub.cancel_at_period_end is False
    assert_standard_headers(route.calls.last.request, has_body=False)


# -- hostile ids -------------------------------------------------------------------------------

Call = Callable[[AsyncBillingOS, str], Awaitable[Any]]

ID_OPERATIONS: list[tuple[str, str, str, Call]] = [
    ("get", "GET", "/subscriptions/{}", lambda b, i: b.subscriptions.get(i)),
    ("update", "PATCH", "/subscriptions/{}", lambda b, i: b.subscriptions.update(i, price_id="price_2")),
    ("cancel", "POST", "/subscriptions/{}/cancel", lambda b, i: b.subscriptions.cancel(i)),
    ("reactivate", "POST", "/subscriptions/{}/reactivate", lambda b, i: b.subscriptions.reactivate(i)),
]


@pytest.mark.parametrize(("raw", "segment"), HOSTILE_IDS)
@pytest.mark.parametrize(
    ("_name", "method", "template", "call"), ID_OPERATIONS, ids=[o[0] for o in ID_OPERATIONS]
)
async def test_hostile_id_reaches_server_as_one_encoded_segment(
    billing: AsyncBillingOS,
    router: respx.MockRouter,
    _name: str,
    method: str,
    template: str,
    call: Call,
    raw: str,
    segment: str,
) -> None:
    route = router.route(method=method).respond(200, json=subscription_json())
    await call(billing, raw)
    assert route.call_count == 1
    assert route.calls.last.request.url.raw_path == template.format(segment).encode()


@pytest.mark.parametrize("raw", REFUSED_IDS)
@pytest.mark.parametrize(
    ("_name", "method", "template", "call"), ID_OPERATIONS, ids=[o[0] for o in ID_OPERATIONS]
)
async def test_empty_or_crlf_id_is_refused_without_sending(
    billing: AsyncBillingOS,
    router: respx.MockRouter,
    _name: str,
    method: str,
    template: str,
    call: Call,
    raw: str,
) -> None:
    route = router.route().respond(200, json=subscription_json())
    with pytest.raises(ValidationError):
        await call(billing, raw)
    assert route.call_count == 0


# -- sync facade -------------------------------------------------------------------------------

SyncCall = Callable[[BillingOS], Any]

SYNC_OPERATIONS: list[tuple[str, str, str, SyncCall, Any]] = [
    (
        "create",
        "POST",
        "/subscriptions",
        lambda b: b.subscriptions.create(CUSTOMER_ID, "price_1"),
        {"customer_id": CUSTOMER_ID, "price_id": "price_1"},
    ),
    ("get", "GET", "/subscriptions/sub_1", lambda b: b.subscriptions.get("sub_1"), None),
    (
        "update",
        "PATCH",
        "/subscriptions/sub_1",
        lambda b: b.subscriptions.update("sub_1", cancel_at_period_end=True),
        {"cancel_at_period_end": True},
    ),
    (
        "cancel",
        "POST",
        "/subscriptions/sub_1/cancel",
        lambda b: b.subscriptions.cancel("sub_1", at_period_end=False),
        {"cancel_at_period_end": False},
    ),
    (
        "reactivate",
        "POST",
        "/subscriptions/sub_1/reactivate",
        lambda b: b.subscriptions.reactivate("sub_1"),
        None,
    ),
]


@pytest.mark.parametrize(
    ("_name", "method", "url_path", "call", "sent"), SYNC_OPERATIONS, ids=[o[0] for o in SYNC_OPERATIONS]
)
def test_sync_method_mirrors_async(
    sync_billing: BillingOS,
    router: respx.MockRouter,
    _name: str,
    method: str,
    url_path: str,
    call: SyncCall,
    sent: Any,
) -> None:
    route = router.route(method=method, path=url_path).respond(200, json=subscription_json())
    result = call(sync_billing)
    assert route.call_count == 1
    request = route.calls.last.request
    assert_standard_headers(request, has_body=sent is not None)
    if sent is not None:
        assert body(request) == sent
    assert isinstance(result, Subscription)
    assert result.id == "sub_1"
