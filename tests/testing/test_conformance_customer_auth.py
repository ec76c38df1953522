"""CONTRACT-CUSTOMER §1.2 and §1.4: the session-token guard, its seven 401s in order, and open routes."""

from __future__ import annotations

import base64
import json

import httpx2
import pytest

from billingos.testing import FakeBillingOS, Fault, RateLimits

from ._customer_helpers import as_customer, mint, success
from ._helpers import DAY, QUOTA, USER, Clock, assert_error, make_fake, token_claims

SESSION_ROUTES = [
    ("GET", "/v1/customer/me"),
    ("GET", "/v1/products"),
    ("POST", "/v1/checkout/create"),
    ("POST", "/v1/portal/create"),
    ("GET", "/v1/features/check"),
    ("POST", "/v1/features/track-usage"),
    ("GET", "/v1/features/entitlements"),
    ("GET", "/v1/features/usage-metrics"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(("method", "path"), SESSION_ROUTES)
async def test_guard_missing_header_is_401_on_every_session_route(
    fake: FakeBillingOS, method: str, path: str
) -> None:
    async with as_customer(fake, None) as http:
        response = await http.request(method, path)
    assert_error(response, 401, "AUTH_INVALID_TOKEN", "Missing or invalid Authorization header")


async def test_guard_bearer_is_case_sensitive(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    token = await mint(http, USER)
    response = await http.get("/v1/customer/me", headers={"Authorization": f"bearer {token}"})
    assert_error(response, 401, "AUTH_INVALID_TOKEN", "Missing or invalid Authorization header")


async def test_guard_secret_key_is_invalid_token_format(fake: FakeBillingOS) -> None:
    async with as_customer(fake, fake.secret_key) as http:
        assert_error(await http.get("/v1/customer/me"), 401, "AUTH_INVALID_TOKEN", "Invalid token format")


async def test_guard_three_parts_is_invalid_token_format(fake: FakeBillingOS) -> None:
    async with as_customer(fake, "bos_session_a.b.c") as http:
        assert_error(await http.get("/v1/customer/me"), 401, "AUTH_INVALID_TOKEN", "Invalid token format")


async def test_guard_other_prefix_is_invalid_token_prefix(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    token = await mint(http, USER)
    async with as_customer(fake, token.replace("bos_session_", "bos_sess_")) as customer:
        response = await customer.get("/v1/customer/me")
    assert_error(response, 401, "AUTH_INVALID_TOKEN", "Invalid token prefix")


async def test_guard_undecodable_payload_is_invalid_token_payload(fake: FakeBillingOS) -> None:
    for token in ("bos_session_not-json.abc", f"bos_session_{_b64(b'[1')}.abc"):
        async with as_customer(fake, token) as customer:
            response = await customer.get("/v1/customer/me")
        assert_error(response, 401, "AUTH_INVALID_TOKEN", "Invalid token payload")


async def test_guard_expired_by_the_fakes_clock_is_token_expired(
    fake: FakeBillingOS, http: httpx2.AsyncClient, clock: Clock
) -> None:
    token = await mint(http, USER, expiresIn=60)
    async with as_customer(fake, token) as customer:
        success(await customer.get("/v1/customer/me"), 200)
        clock.advance(60)
        assert_error(await customer.get("/v1/customer/me"), 401, "AUTH_INVALID_TOKEN", "Token expired")


async def test_guard_expiry_is_checked_before_revocation_and_signature(
    fake: FakeBillingOS, http: httpx2.AsyncClient, clock: Clock
) -> None:
    token = await mint(http, USER, expiresIn=60)
    await http.delete(f"/v1/session-tokens/{token_claims(token)['jti']}")
    clock.advance(DAY)
    async with as_customer(fake, token[:-4] + "0000") as customer:
        assert_error(await customer.get("/v1/customer/me"), 401, "AUTH_INVALID_TOKEN", "Token expired")


async def test_guard_revoked_is_token_not_found_or_revoked(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    token = await mint(http, USER)
    async with as_customer(fake, token) as customer:
        success(await customer.get("/v1/features/entitlements"), 200)
        assert (await http.delete(f"/v1/session-tokens/{token_claims(token)['jti']}")).status_code == 200
        response = await customer.get("/v1/features/entitlements")
    assert_error(response, 401, "AUTH_INVALID_TOKEN", "Token not found or revoked")


async def test_guard_another_servers_token_is_token_not_found_or_revoked(fake: FakeBillingOS) -> None:
    other = make_fake(Clock())
    async with httpx2.AsyncClient(
        transport=other.transport(),
        base_url="http://other",
        headers={"Authorization": f"Bearer {other.secret_key}"},
    ) as http:
        token = await mint(http, USER)
    async with as_customer(fake, token) as customer:
        response = await customer.get("/v1/customer/me")
    assert_error(response, 401, "AUTH_INVALID_TOKEN", "Token not found or revoked")


async def test_guard_forged_payload_is_invalid_token_signature(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    token = await mint(http, USER)
    signature = token.rpartition(".")[2]
    forged = {**token_claims(token), "external_user_id": "user_2"}
    forged_token = f"bos_session_{_b64(json.dumps(forged).encode())}.{signature}"
    async with as_customer(fake, forged_token) as customer:
        response = await customer.get("/v1/customer/me")
    assert_error(response, 401, "AUTH_INVALID_TOKEN", "Invalid token signature")


async def test_guard_rejected_request_is_not_executed(fake: FakeBillingOS) -> None:
    async with as_customer(fake, "nope") as customer:
        response = await customer.post("/v1/features/track-usage", json={"feature_key": QUOTA, "quantity": 1})
    assert_error(response, 401, "AUTH_INVALID_TOKEN")
    assert fake.usage_of(USER, QUOTA) == 0


@pytest.mark.parametrize(
    "path", ["/v1/checkout/00000000-0000-4000-8000-000000000000/status", "/v1/portal/x/status"]
)
async def test_open_routes_need_no_credential(fake: FakeBillingOS, path: str) -> None:
    async with as_customer(fake, None) as http:
        response = await http.get(path)
    assert response.status_code in (200, 404)
    assert response.status_code != 401


async def test_open_route_confirm_free_needs_no_credential(fake: FakeBillingOS) -> None:
    async with as_customer(fake, None) as http:
        response = await http.post("/v1/checkout/unknown/confirm-free")
    assert_error(response, 404, "RES_NOT_FOUND", "Checkout session not found")


async def test_session_routes_take_faults(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    rule = fake.inject("GET /v1/features/check", Fault.error(503))
    token = await mint(http, USER)
    async with as_customer(fake, token) as customer:
        first = await customer.get("/v1/features/check", params={"feature_key": QUOTA})
        second = await customer.get("/v1/features/check", params={"feature_key": QUOTA})
    assert_error(first, 503)
    assert success(second, 200)["has_access"] is True
    assert rule.hits == 1


async def test_session_routes_are_rate_limited_per_route_before_the_guard() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=2))
    async with as_customer(fake, None) as http:
        statuses = [(await http.get("/v1/customer/me")).status_code for _ in range(3)]
        other = await http.get("/v1/products")
    assert statuses == [401, 401, 429]
    assert other.status_code == 401


async def test_session_routes_are_recorded_under_their_template(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    token = await mint(http, USER)
    async with as_customer(fake, token) as customer:
        await customer.get("/v1/checkout/abc/status")
    (request,) = fake.requests_to("GET /v1/checkout/{id}/status")
    assert request.path == "/v1/checkout/abc/status"
    assert "authorization" not in request.headers


async def test_loopback_session_route_answers_over_a_socket(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    token = await mint(http, USER)
    with fake.serve() as url:
        async with httpx2.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as customer:
            body = success(await customer.get("/v1/customer/me"), 200)
            denied = await customer.get("/v1/customer/me", headers={"Authorization": "Bearer x"})
    assert body["customer"]["external_id"] == USER
    assert_error(denied, 401, "AUTH_INVALID_TOKEN", "Invalid token format")
