"""billing.customers: create, get, get_by_external_id, update, delete, list (snake_case wire)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import respx

from billingos import (
    AsyncBillingOS,
    BillingAddress,
    BillingOS,
    ConflictError,
    Customer,
    NotFoundError,
    ValidationError,
)

from .._factories import customer_json, error_body, page_json
from . import HOSTILE_IDS, REFUSED_IDS, assert_standard_headers, body

CUSTOMER_ID = "3f1c2a4e-0000-4000-8000-000000000001"

# -- create ------------------------------------------------------------------------------------


async def test_create_sends_snake_case_body(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/customers").respond(201, json=customer_json())
    await billing.customers.create(
        "ada@example.com",
        external_id="user_1",
        name="Ada",
        billing_address=BillingAddress(street="1 Main St", city="Paris", postal_code="75001", country="FR"),
        metadata={"plan": "pro"},
    )
    assert body(route.calls.last.request) == {
        "email": "ada@example.com",
        "external_id": "user_1",
        "name": "Ada",
        "billing_address": {"street": "1 Main St", "city": "Paris", "postal_code": "75001", "country": "FR"},
        "metadata": {"plan": "pro"},
    }


async def test_create_omits_none_fields_from_body(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/customers").respond(201, json=customer_json())
    await billing.customers.create("ada@example.com")
    assert body(route.calls.last.request) == {"email": "ada@example.com"}


async def test_create_accepts_billing_address_as_dict(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/customers").respond(201, json=customer_json())
    await billing.customers.create(
        "ada@example.com", billing_address={"city": "Paris", "country": "FR", "state": None}
    )
    assert body(route.calls.last.request)["billing_address"] == {"city": "Paris", "country": "FR"}


async def test_create_sends_standard_headers_with_json_content_type(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/customers").respond(201, json=customer_json())
    await billing.customers.create("ada@example.com")
    assert_standard_headers(route.calls.last.request, has_body=True)


async def test_create_returns_customer_with_every_field(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/customers").respond(201, json=customer_json(stripe_customer_id="cus_S1"))
    customer = await billing.customers.create("ada@example.com")
    assert customer == Customer(
        id=CUSTOMER_ID,
        email="ada@example.com",
        external_id="user_1",
        name="Ada",
        email_verified=False,
        billing_address=BillingAddress(street="1 Main St", city="Paris", postal_code="75001", country="FR"),
        stripe_customer_id="cus_S1",
        metadata={"plan": "pro"},
        created_at=datetime(2026, 2, 27, 10, 0, tzinfo=UTC),
        updated_at=None,
        deleted_at=None,
    )


async def test_create_conflict_raises_and_is_not_retried(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/customers").respond(
        409, json=error_body(409, "RES_CONFLICT", "Customer with this email already exists")
    )
    with pytest.raises(ConflictError):
        await billing.customers.create("ada@example.com")
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": ""}, "email"),
        ({"email": "ada"}, "email"),
        ({"email": "ada@example"}, "email"),
        ({"email": "ada @example.com"}, "email"),
        ({"email": "a@b@example.com"}, "email"),
        ({"email": None}, "email"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "user 1"}, "external_id"),
        ({"external_id": "user/1"}, "external_id"),
        ({"external_id": "usér"}, "external_id"),
        ({"external_id": "a" * 256}, "external_id"),
        ({"external_id": 42}, "external_id"),
        ({"name": ""}, "name"),
        ({"name": "n" * 257}, "name"),
        ({"billing_address": {"country": "FRA"}}, "country"),
        ({"billing_address": {"country": "F1"}}, "country"),
        ({"billing_address": BillingAddress(country="F")}, "country"),
        ({"billing_address": {"zip": "75001"}}, "billing_address"),
        ({"billing_address": "1 Main St, Paris"}, "billing_address"),
        ({"metadata": "plan=pro"}, "metadata"),
    ],
)
async def test_create_refuses_bad_arguments_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, kwargs: dict[str, Any], field: str
) -> None:
    route = router.post("/customers").respond(201, json=customer_json())
    arguments: dict[str, Any] = {"email": "ada@example.com", **kwargs}
    email = arguments.pop("email")
    with pytest.raises(ValidationError, match=field) as info:
        await billing.customers.create(email, **arguments)
    assert info.value.status_code is None
    assert route.call_count == 0


@pytest.mark.parametrize("external_id", ["a", "A-z_0-9", "x" * 255])
async def test_create_accepts_valid_external_ids(
    billing: AsyncBillingOS, router: respx.MockRouter, external_id: str
) -> None:
    route = router.post("/customers").respond(201, json=customer_json())
    await billing.customers.create("ada@example.com", external_id=external_id)
    assert body(route.calls.last.request)["external_id"] == external_id


# -- get ---------------------------------------------------------------------------------------


async def test_get_sends_get_to_customer_path(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get(f"/customers/{CUSTOMER_ID}").respond(200, json=customer_json())
    customer = await billing.customers.get(CUSTOMER_ID)
    assert customer.id == CUSTOMER_ID
    request = route.calls.last.request
    assert request.url.query == b""
    assert_standard_headers(request, has_body=False)


async def test_get_unknown_raises_not_found(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/customers/nope").respond(404, json=error_body(404, "RES_NOT_FOUND", "Customer not found"))
    with pytest.raises(NotFoundError, match="Customer not found"):
        await billing.customers.get("nope")


async def test_get_by_external_id_uses_external_route(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/customers/external/user_1").respond(200, json=customer_json())
    customer = await billing.customers.get_by_external_id("user_1")
    assert customer.external_id == "user_1"
    assert_standard_headers(route.calls.last.request, has_body=False)


# -- update ------------------------------------------------------------------------------------


async def test_update_sends_patch_with_only_given_fields(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.patch(f"/customers/{CUSTOMER_ID}").respond(200, json=customer_json(name="Ada L."))
    customer = await billing.customers.update(CUSTOMER_ID, name="Ada L.")
    assert body(route.calls.last.request) == {"name": "Ada L."}
    assert customer.name == "Ada L."
    assert_standard_headers(route.calls.last.request, has_body=True)


async def test_update_sends_every_field_snake_case(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.patch(f"/customers/{CUSTOMER_ID}").respond(200, json=customer_json())
    await billing.customers.update(
        CUSTOMER_ID,
        email="ada@example.org",
        external_id="user_9",
        name="Ada",
        billing_address={"postal_code": "10115", "country": "DE"},
        metadata={"tier": "gold"},
    )
    assert body(route.calls.last.request) == {
        "email": "ada@example.org",
        "external_id": "user_9",
        "name": "Ada",
        "billing_address": {"postal_code": "10115", "country": "DE"},
        "metadata": {"tier": "gold"},
    }


async def test_update_with_nothing_to_change_is_refused(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.route(method="PATCH").respond(200, json=customer_json())
    with pytest.raises(ValidationError, match="at least one field"):
        await billing.customers.update(CUSTOMER_ID)
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"external_id": "has space"}, "external_id"),
        ({"billing_address": {"country": "France"}}, "country"),
    ],
)
async def test_update_refuses_bad_fields_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, kwargs: dict[str, Any], field: str
) -> None:
    route = router.route(method="PATCH").respond(200, json=customer_json())
    with pytest.raises(ValidationError, match=field):
        await billing.customers.update(CUSTOMER_ID, **kwargs)
    assert route.call_count == 0


# -- delete ------------------------------------------------------------------------------------


async def test_delete_on_empty_204_returns_none_and_sends_once(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.delete(f"/customers/{CUSTOMER_ID}").respond(204)
    assert await billing.customers.delete(CUSTOMER_ID) is None
    assert route.call_count == 1
    assert_standard_headers(route.calls.last.request, has_body=False)


async def test_delete_unknown_raises_not_found(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.delete("/customers/nope").respond(
        404, json=error_body(404, "RES_NOT_FOUND", "Customer not found")
    )
    with pytest.raises(NotFoundError):
        await billing.customers.delete("nope")
    assert route.call_count == 1


# -- list --------------------------------------------------------------------------------------


async def test_list_first_page_sends_default_limit_and_page(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/customers").respond(200, json=page_json([customer_json()]))
    customers = [c async for c in billing.customers.list()]
    assert [c.id for c in customers] == [CUSTOMER_ID]
    request = route.calls.last.request
    assert dict(request.url.params) == {"limit": "50", "page": "1"}
    assert_standard_headers(request, has_body=False)


async def test_list_sends_every_filter(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").respond(200, json=page_json([]))
    pager = billing.customers.list(
        limit=100,
        email="ada@example.com",
        external_id="user_1",
        query="ada lovelace",
        sort_by="email",
        sort_order="desc",
    )
    await pager.page(1)
    assert dict(route.calls.last.request.url.params) == {
        "limit": "100",
        "email": "ada@example.com",
        "external_id": "user_1",
        "query": "ada lovelace",
        "sort_by": "email",
        "sort_order": "desc",
        "page": "1",
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": 10.0}, "limit"),
        ({"limit": True}, "limit"),
        ({"sort_by": "id"}, "sort_by"),
        ({"sort_by": "EMAIL"}, "sort_by"),
        ({"sort_order": "descending"}, "sort_order"),
        ({"email": ""}, "email"),
        ({"query": " "}, "query"),
    ],
)
def test_list_refuses_bad_params_at_call_time(
    billing: AsyncBillingOS, router: respx.MockRouter, kwargs: dict[str, Any], field: str
) -> None:
    route = router.get("/customers").respond(200, json=page_json([]))
    with pytest.raises(ValidationError, match=field):
        billing.customers.list(**kwargs)
    assert route.call_count == 0


@pytest.mark.parametrize("limit", [1, 100])
async def test_list_accepts_limit_bounds(
    billing: AsyncBillingOS, router: respx.MockRouter, limit: int
) -> None:
    route = router.get("/customers").respond(200, json=page_json([], limit=limit))
    await billing.customers.list(limit=limit).page()
    assert route.calls.last.request.url.params["limit"] == str(limit)


@pytest.mark.parametrize("number", [0, -1])
async def test_list_page_refuses_non_positive_page_number(
    billing: AsyncBillingOS, router: respx.MockRouter, number: int
) -> None:
    route = router.get("/customers").respond(200, json=page_json([]))
    with pytest.raises(ValidationError, match="page"):
        await billing.customers.list().page(number)
    assert route.call_count == 0


# -- hostile ids -------------------------------------------------------------------------------

Call = Callable[[AsyncBillingOS, str], Awaitable[Any]]

ID_OPERATIONS: list[tuple[str, str, str, Call]] = [
    ("get", "GET", "/customers/{}", lambda b, i: b.customers.get(i)),
    ("get_by_external_id", "GET", "/customers/external/{}", lambda b, i: b.customers.get_by_external_id(i)),
    ("update", "PATCH", "/customers/{}", lambda b, i: b.customers.update(i, name="Ada")),
    ("delete", "DELETE", "/customers/{}", lambda b, i: b.customers.delete(i)),
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
    route = router.route(method=method).respond(200, json=customer_json())
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
    route = router.route().respond(200, json=customer_json())
    with pytest.raises(ValidationError) as info:
        await call(billing, raw)
    assert info.value.status_code is None
    assert route.call_count == 0


# -- sync facade -------------------------------------------------------------------------------

SyncCall = Callable[[BillingOS], Any]

SYNC_OPERATIONS: list[tuple[str, str, str, int, Any, SyncCall, Any]] = [
    (
        "create",
        "POST",
        "/customers",
        201,
        customer_json(),
        lambda b: b.customers.create("ada@example.com", external_id="user_1"),
        {"email": "ada@example.com", "external_id": "user_1"},
    ),
    (
        "get",
        "GET",
        f"/customers/{CUSTOMER_ID}",
        200,
        customer_json(),
        lambda b: b.customers.get(CUSTOMER_ID),
        None,
    ),
    (
        "get_by_external_id",
        "GET",
        "/customers/external/user_1",
        200,
        customer_json(),
        lambda b: b.customers.get_by_external_id("user_1"),
        None,
    ),
    (
        "update",
        "PATCH",
        f"/customers/{CUSTOMER_ID}",
        200,
        customer_json(),
        lambda b: b.customers.update(CUSTOMER_ID, name="Ada"),
        {"name": "Ada"},
    ),
    (
        "delete",
        "DELETE",
        f"/customers/{CUSTOMER_ID}",
        204,
        None,
        lambda b: b.customers.delete(CUSTOMER_ID),
        None,
    ),
]


@pytest.mark.parametrize(
    ("_name", "method", "url_path", "status", "payload", "call", "sent"),
    SYNC_OPERATIONS,
    ids=[o[0] for o in SYNC_OPERATIONS],
)
def test_sync_method_mirrors_async(
    sync_billing: BillingOS,
    router: respx.MockRouter,
    _name: str,
    method: str,
    url_path: str,
    status: int,
    payload: Any,
    call: SyncCall,
    sent: Any,
) -> None:
    route = router.route(method=method, path=url_path).respond(status, json=payload)
    result = call(sync_billing)
    assert route.call_count == 1
    request = route.calls.last.request
    assert_standard_headers(request, has_body=sent is not None)
    if sent is not None:
        assert body(request) == sent
    if payload is None:
        assert result is None
    else:
        assert isinstance(result, Customer)
        assert result.id == CUSTOMER_ID
