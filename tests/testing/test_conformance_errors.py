"""CONTRACT §2 Errors: one envelope for every error, with the status/code table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx2
import pytest

from billingos.testing import FakeBillingOS, Fault, RateLimits

from ._helpers import QUOTA, USER, Clock, assert_error, client, make_fake, track_body

Request = Callable[[httpx2.AsyncClient], Awaitable[httpx2.Response]]


async def _validation(http: httpx2.AsyncClient) -> httpx2.Response:
    return await http.post("/v1/session-tokens", json={})


async def _not_found(http: httpx2.AsyncClient) -> httpx2.Response:
    return await http.get("/customers/external/nobody")


async def _conflict(http: httpx2.AsyncClient) -> httpx2.Response:
    return await http.post("/customers", json={"email": "ada@example.com"})


async def _quota(http: httpx2.AsyncClient) -> httpx2.Response:
    return await http.post("/v1/usage/track", json=track_body(quantity=101))


@pytest.mark.parametrize(
    ("request_", "status", "code", "message"),
    [
        (_validation, 400, "VAL_INVALID_INPUT", None),
        (_quota, 400, "VAL_INVALID_INPUT", "quota_exceeded"),
        (_not_found, 404, "RES_NOT_FOUND", "Customer not found"),
        (_conflict, 409, "RES_CONFLICT", None),
    ],
    ids=["400-validation", "400-quota", "404", "409"],
)
async def test_error_envelope_shape_for_rule_errors(
    http: httpx2.AsyncClient, request_: Request, status: int, code: str, message: str | None
) -> None:
    assert_error(await request_(http), status, code, message)


async def test_error_envelope_shape_for_401(fake: FakeBillingOS) -> None:
    async with httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake") as http:
        assert_error(await http.get("/customers"), 401, "AUTH_INVALID_TOKEN")


async def test_error_envelope_shape_for_429() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=1))
    async with client(fake) as http:
        assert (await http.get("/customers")).status_code == 200
        assert_error(await http.get("/customers"), 429, "RATE_LIMIT_EXCEEDED")


async def test_error_envelope_shape_for_unknown_route(http: httpx2.AsyncClient) -> None:
    assert_error(await http.get("/v2/nothing"), 404, "RES_NOT_FOUND")
    assert_error(await http.put("/customers"), 404, "RES_NOT_FOUND")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "VAL_INVALID_INPUT"),
        (401, "AUTH_INVALID_TOKEN"),
        (403, "AUTHZ_INSUFFICIENT_PERMISSIONS"),
        (404, "RES_NOT_FOUND"),
        (409, "RES_CONFLICT"),
        (422, "VAL_INVALID_INPUT"),
        (429, "RATE_LIMIT_EXCEEDED"),
        (500, None),
        (502, None),
        (503, None),
        (504, None),
    ],
)
async def test_error_envelope_status_code_table_for_injected_errors(
    fake: FakeBillingOS, http: httpx2.AsyncClient, status: int, code: str | None
) -> None:
    fake.inject("GET /customers", Fault.error(status))
    error = assert_error(await http.get("/customers"), status, code)
    if code is None:
        assert error["code"].startswith("SYS_")


async def test_error_details_present_only_for_validation(http: httpx2.AsyncClient) -> None:
    not_found = assert_error(await _not_found(http), 404)
    assert "details" not in not_found
    invalid = assert_error(await http.post("/v1/session-tokens", json={"expiresIn": 10}), 400)
    field_errors = invalid["details"]["fieldErrors"]
    assert set(field_errors) == {"externalUserId", "expiresIn"}
    assert field_errors["expiresIn"] == ["expiresIn must not be less than 60"]


async def test_error_request_id_is_the_sent_one(http: httpx2.AsyncClient) -> None:
    sent = "req_" + "b" * 24
    error = assert_error(await http.get("/customers/nope", headers={"X-Request-Id": sent}), 404)
    assert error["requestId"] == sent


async def test_error_status_code_equals_http_status_and_nothing_is_executed(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    response = await _quota(http)
    assert response.json()["statusCode"] == response.status_code == 400
    assert fake.usage_of(USER, QUOTA) == 0
