"""``admin_routes="dashboard_only"``: /customers* and /subscriptions* as on the public backend."""

from __future__ import annotations

import httpx2
import pytest

from billingos.testing import FakeBillingOS

from ._customer_helpers import as_customer, mint, success
from ._helpers import PRO_PRICE, USER, Clock, assert_error, client, make_fake

ADMIN_CALLS = [
    ("POST", "/customers"),
    ("GET", "/customers"),
    ("GET", "/customers/external/user_1"),
    ("GET", "/customers/x"),
    ("PATCH", "/customers/x"),
    ("DELETE", "/customers/x"),
    ("POST", "/subscriptions"),
    ("GET", "/subscriptions"),
    ("GET", "/subscriptions/x"),
    ("POST", "/subscriptions/x/cancel"),
]


@pytest.fixture
def dashboard_only() -> FakeBillingOS:
    return make_fake(Clock(), admin_routes="dashboard_only")


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_dashboard_only_secret_key_is_401_jwt_malformed(
    dashboard_only: FakeBillingOS, method: str, path: str
) -> None:
    async with client(dashboard_only) as http:
        response = await http.request(method, path, json={"customer_id": USER, "price_id": PRO_PRICE})
    assert_error(response, 401, "AUTH_INVALID_TOKEN", "jwt malformed")


async def test_dashboard_only_without_header_is_401_no_auth_token(dashboard_only: FakeBillingOS) -> None:
    async with as_customer(dashboard_only, None) as http:
        assert_error(await http.get("/customers"), 401, "AUTH_INVALID_TOKEN", "No auth token")


@pytest.mark.parametrize(
    ("method", "path"), [("PATCH", "/subscriptions/x"), ("POST", "/subscriptions/x/reactivate")]
)
async def test_dashboard_only_missing_routes_are_404_cannot(
    dashboard_only: FakeBillingOS, method: str, path: str
) -> None:
    async with client(dashboard_only) as http:
        response = await http.request(method, path, json={})
    assert_error(response, 404, "RES_NOT_FOUND", f"Cannot {method} {path}")


async def test_dashboard_only_secret_key_routes_still_work(dashboard_only: FakeBillingOS) -> None:
    async with client(dashboard_only) as http:
        check = await http.get("/v1/usage/check", params={"customer_id": USER, "feature_key": "api_calls"})
        token = await mint(http, USER)
    assert success(check, 200)["has_access"] is True
    async with as_customer(dashboard_only, token) as customer:
        assert success(await customer.get("/v1/customer/me"), 200)["customer"]["external_id"] == USER


async def test_default_admin_routes_accept_the_secret_key(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    assert (await http.get("/customers")).status_code == 200
    assert (await http.patch("/subscriptions/nope", json={})).status_code == 404


def test_admin_routes_unknown_value_is_value_error() -> None:
    with pytest.raises(ValueError, match="admin_routes"):
        FakeBillingOS(admin_routes="nope")  # type: ignore[arg-type]
