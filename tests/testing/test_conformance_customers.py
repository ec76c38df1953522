"""CONTRACT §5 Customers (snake_case): create, get, update, soft delete, list."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from billingos.testing import FakeBillingOS, SubscriptionRecord

from ._helpers import (
    DAY,
    OTHER,
    PRO_PRICE,
    START,
    USER,
    Clock,
    assert_error,
    client,
    field_errors,
    iso,
    make_fake,
)

CUSTOMER_KEYS = {
    "id",
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
ADDRESS = {"street": "1 Main St", "city": "Paris", "state": None, "postal_code": "75001", "country": "FR"}


async def _create(http: httpx2.AsyncClient, **body: Any) -> httpx2.Response:
    body.setdefault("email", "new@example.com")
    return await http.post("/customers", json=body)


async def test_customer_create_is_201_with_customer_shape(http: httpx2.AsyncClient, clock: Clock) -> None:
    response = await _create(
        http, external_id="new_1", name="New", billing_address=ADDRESS, metadata={"plan": "pro"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == CUSTOMER_KEYS | {"requestId"}
    assert body["external_id"] == "new_1"
    assert body["email"] == "new@example.com"
    assert body["email_verified"] is False
    assert body["name"] == "New"
    assert body["billing_address"] == ADDRESS
    assert body["stripe_customer_id"] is None
    assert body["metadata"] == {"plan": "pro"}
    assert body["created_at"] == body["updated_at"] == iso(START)
    assert body["deleted_at"] is None
    assert isinstance(body["id"], str)
    assert body["id"] != "new_1"


@pytest.mark.parametrize("email", [None, "", "not-an-email", "a@b", 42])
async def test_customer_create_requires_an_email(http: httpx2.AsyncClient, email: object) -> None:
    body = {} if email is None else {"email": email}
    assert "email" in field_errors(await http.post("/customers", json=body))


@pytest.mark.parametrize("external_id", ["a b", "a/b", "a.b", "é", "a@b", "x" * 256, 7])
async def test_customer_external_id_pattern_is_enforced(
    http: httpx2.AsyncClient, external_id: object
) -> None:
    assert "external_id" in field_errors(await _create(http, external_id=external_id))


@pytest.mark.parametrize("external_id", ["A-z_09", "x" * 255, "-", "_"])
async def test_customer_external_id_pattern_accepts(http: httpx2.AsyncClient, external_id: str) -> None:
    response = await _create(http, external_id=external_id)
    assert response.status_code == 201
    assert response.json()["external_id"] == external_id


async def test_customer_name_max_256(http: httpx2.AsyncClient) -> None:
    assert (await _create(http, name="n" * 256)).status_code == 201
    assert "name" in field_errors(await _create(http, email="other@example.com", name="n" * 257))


@pytest.mark.parametrize("country", ["FRA", "F", "12"])
async def test_customer_billing_address_country_is_two_letters(
    http: httpx2.AsyncClient, country: str
) -> None:
    errors = field_errors(await _create(http, billing_address={**ADDRESS, "country": country}))
    assert any("country" in name for name in errors)


@pytest.mark.parametrize("metadata", [["x"], "x", 1])
async def test_customer_metadata_is_an_object(http: httpx2.AsyncClient, metadata: object) -> None:
    assert "metadata" in field_errors(await _create(http, metadata=metadata))


async def test_customer_taken_email_is_409(http: httpx2.AsyncClient) -> None:
    assert_error(await _create(http, email="ada@example.com"), 409, "RES_CONFLICT")


async def test_customer_taken_external_id_is_409(http: httpx2.AsyncClient) -> None:
    assert_error(await _create(http, external_id=USER), 409, "RES_CONFLICT")


async def test_customer_get_by_id_and_by_external_id(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    record = fake.customer(USER)
    assert record is not None
    by_id = await http.get(f"/customers/{record.id}")
    by_external = await http.get(f"/customers/external/{USER}")
    assert by_id.status_code == by_external.status_code == 200
    for response in (by_id, by_external):
        body = response.json()
        assert set(body) == CUSTOMER_KEYS | {"requestId"}
        assert (body["id"], body["external_id"], body["email"]) == (record.id, USER, "ada@example.com")


async def test_customer_get_unknown_is_404(http: httpx2.AsyncClient) -> None:
    assert_error(await http.get("/customers/nope"), 404, "RES_NOT_FOUND", "Customer not found")
    assert_error(await http.get("/customers/external/nope"), 404, "RES_NOT_FOUND", "Customer not found")


async def test_customer_get_by_id_does_not_take_an_external_id(http: httpx2.AsyncClient) -> None:
    assert_error(await http.get(f"/customers/{USER}"), 404, "RES_NOT_FOUND", "Customer not found")


async def test_customer_patch_updates_fields(http: httpx2.AsyncClient, clock: Clock) -> None:
    created = (await _create(http, external_id="p1", name="Old")).json()
    clock.advance(DAY)
    response = await http.patch(
        f"/customers/{created['id']}",
        json={
            "name": "New",
            "email": "renamed@example.com",
            "metadata": {"k": "v"},
            "billing_address": ADDRESS,
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CUSTOMER_KEYS | {"requestId"}
    assert (body["name"], body["email"], body["metadata"]) == ("New", "renamed@example.com", {"k": "v"})
    assert body["billing_address"] == ADDRESS
    assert body["external_id"] == "p1"
    assert body["created_at"] == iso(START)
    assert body["updated_at"] == iso(START + DAY)


async def test_customer_patch_all_fields_optional(http: httpx2.AsyncClient) -> None:
    created = (await _create(http, name="Same")).json()
    response = await http.patch(f"/customers/{created['id']}", json={})
    assert response.status_code == 200
    assert response.json()["name"] == "Same"


async def test_customer_patch_validates_fields(http: httpx2.AsyncClient) -> None:
    created = (await _create(http)).json()
    errors = field_errors(
        await http.patch(f"/customers/{created['id']}", json={"email": "nope", "external_id": "a b"})
    )
    assert {"email", "external_id"} <= set(errors)


async def test_customer_patch_external_id_can_be_set_once(http: httpx2.AsyncClient) -> None:
    created = (await _create(http)).json()
    assert created["external_id"] is None
    path = f"/customers/{created['id']}"
    first = await http.patch(path, json={"external_id": "late_1"})
    assert first.status_code == 200
    assert first.json()["external_id"] == "late_1"
    assert (await http.patch(path, json={"external_id": "late_1"})).status_code == 200  # unchanged: fine
    changed = await http.patch(path, json={"external_id": "late_2"})
    assert 400 <= changed.status_code < 500
    assert_error(changed, changed.status_code)
    assert (await http.get("/customers/external/late_1")).status_code == 200
    assert (await http.get("/customers/external/late_2")).status_code == 404


async def test_customer_patch_to_taken_email_or_external_id_is_409(http: httpx2.AsyncClient) -> None:
    created = (await _create(http)).json()
    path = f"/customers/{created['id']}"
    assert_error(await http.patch(path, json={"email": "grace@example.com"}), 409, "RES_CONFLICT")
    assert_error(await http.patch(path, json={"external_id": OTHER}), 409, "RES_CONFLICT")


async def test_customer_patch_unknown_is_404(http: httpx2.AsyncClient) -> None:
    assert_error(await http.patch("/customers/nope", json={"name": "x"}), 404, "RES_NOT_FOUND")


async def test_customer_delete_is_204_empty_then_404(http: httpx2.AsyncClient) -> None:
    created = (await _create(http, external_id="del_1")).json()
    response = await http.delete(f"/customers/{created['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await http.get(f"/customers/{created['id']}"), 404, "RES_NOT_FOUND", "Customer not found")
    assert_error(await http.get("/customers/external/del_1"), 404, "RES_NOT_FOUND")
    assert_error(await http.patch(f"/customers/{created['id']}", json={"name": "x"}), 404, "RES_NOT_FOUND")
    assert_error(await http.delete(f"/customers/{created['id']}"), 404, "RES_NOT_FOUND")
    listed = await http.get("/customers", params={"external_id": "del_1"})
    assert listed.json()["total"] == 0


async def test_customer_delete_cancels_its_subscriptions(
    fake: FakeBillingOS, http: httpx2.AsyncClient, subscription: SubscriptionRecord, clock: Clock
) -> None:
    record = fake.customer(USER)
    assert record is not None
    clock.advance(DAY)
    assert (await http.delete(f"/customers/{record.id}")).status_code == 204
    sub = (await http.get(f"/subscriptions/{subscription.id}")).json()
    assert sub["status"] == "canceled"
    assert sub["canceled_at"] == iso(START + DAY)
    assert_error(
        await http.get("/v1/usage/check", params={"customer_id": USER, "feature_key": "sso"}),
        404,
        "RES_NOT_FOUND",
        "Customer not found",
    )
    other = fake.customer(OTHER)
    assert other is not None
    others = (await http.get("/subscriptions", params={"customer_id": other.id})).json()
    assert [s["status"] for s in others] == ["active"]


# -- list ------------------------------------------------------------------------------------------


async def _seeded_for_listing() -> tuple[FakeBillingOS, Clock]:
    """Five customers created a minute apart: user_1, user_2 (seed), then c3, c4, c5."""
    clock = Clock()
    fake = make_fake(clock)
    for n, name in [(3, "Carol"), (4, "Dave"), (5, "Erin")]:
        clock.advance(60)
        fake.add_customer(f"c{n}", email=f"{name.lower()}@corp.example", name=name)
    return fake, clock


async def test_customer_list_pagination() -> None:
    fake, _ = await _seeded_for_listing()
    async with client(fake) as http:
        pages = [(await http.get("/customers", params={"limit": 2, "page": p})).json() for p in (1, 2, 3, 4)]
        default = (await http.get("/customers")).json()
    for number, page in enumerate(pages, start=1):
        assert set(page) == {"data", "total", "page", "limit", "total_pages", "requestId"}
        assert (page["total"], page["page"], page["limit"], page["total_pages"]) == (5, number, 2, 3)
    assert [len(p["data"]) for p in pages] == [2, 2, 1, 0]
    ids = [c["id"] for p in pages for c in p["data"]]
    assert len(set(ids)) == 5
    assert all(set(c) == CUSTOMER_KEYS for p in pages for c in p["data"])
    assert (default["limit"], default["page"], default["total_pages"], len(default["data"])) == (50, 1, 1, 5)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page": 0}, "page"),
        ({"sort_by": "id"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
    ],
)
async def test_customer_list_parameters_are_validated(
    http: httpx2.AsyncClient, params: dict[str, Any], field: str
) -> None:
    assert field in field_errors(await http.get("/customers", params=params))


async def test_customer_list_limit_bounds_are_inclusive(http: httpx2.AsyncClient) -> None:
    for limit in (1, 100):
        response = await http.get("/customers", params={"limit": limit})
        assert response.status_code == 200
        assert response.json()["limit"] == limit


async def test_customer_list_filters() -> None:
    fake, _ = await _seeded_for_listing()
    async with client(fake) as http:

        async def external_ids(**params: Any) -> list[str]:
            response = await http.get(
                "/customers", params={"sort_by": "email", "sort_order": "asc", **params}
            )
            assert response.status_code == 200
            body = response.json()
            assert body["total"] == len(body["data"])
            return [c["external_id"] for c in body["data"]]

        assert await external_ids(email="dave@corp.example") == ["c4"]
        assert await external_ids(external_id="c5") == ["c5"]
        assert await external_ids(query="corp.example") == ["c3", "c4", "c5"]
        assert await external_ids(query="GRACE") == [OTHER]  # name, case-insensitive
        assert await external_ids(query="user_") == [USER, OTHER]
        assert await external_ids(email="nobody@example.com") == []


async def test_customer_list_sort() -> None:
    fake, _ = await _seeded_for_listing()
    async with client(fake) as http:

        async def names(**params: Any) -> list[str]:
            return [c["name"] for c in (await http.get("/customers", params=params)).json()["data"]]

        assert await names(sort_by="name", sort_order="asc") == ["Ada", "Carol", "Dave", "Erin", "Grace"]
        assert await names(sort_by="email", sort_order="desc") == ["Grace", "Erin", "Dave", "Carol", "Ada"]
        assert (await names(sort_by="created_at", sort_order="asc"))[2:] == ["Carol", "Dave", "Erin"]
        assert (await names())[:3] == ["Erin", "Dave", "Carol"]  # default: created_at desc


async def test_customer_create_then_subscribe_by_returned_id(http: httpx2.AsyncClient) -> None:
    created = (await _create(http, external_id="sub_me")).json()
    response = await http.post("/subscriptions", json={"customer_id": created["id"], "price_id": PRO_PRICE})
    assert response.status_code == 201
    assert response.json()["customer_id"] == created["id"]
