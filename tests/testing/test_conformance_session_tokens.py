"""CONTRACT §5 Session tokens (camelCase): create, the token format, validation, revoke."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

import httpx2
import pytest

from billingos.testing import FakeBillingOS

from ._helpers import START, USER, Clock, assert_error, client, field_errors, make_fake, token_claims

TOKEN = re.compile(r"^bos_session_([A-Za-z0-9_-]+)\.([0-9a-f]{64})$")


async def _create(http: httpx2.AsyncClient, **body: object) -> httpx2.Response:
    return await http.post("/v1/session-tokens", json={"externalUserId": USER, **body})


async def test_session_token_create_is_201_camel_case(http: httpx2.AsyncClient) -> None:
    response = await _create(http)
    assert response.status_code == 201
    assert set(response.json()) == {"sessionToken", "expiresAt", "requestId"}


async def test_session_token_create_echoes_allowed_operations(http: httpx2.AsyncClient) -> None:
    response = await _create(http, allowedOperations=["read", "track"])
    assert response.status_code == 201
    assert response.json()["allowedOperations"] == ["read", "track"]


@pytest.mark.parametrize("mangle_dates", [False, True])
async def test_session_token_expires_at_is_always_empty_object(mangle_dates: bool) -> None:
    fake = make_fake(Clock(), mangle_dates=mangle_dates)
    async with client(fake) as http:
        response = await _create(http, expiresIn=600)
    assert response.json()["expiresAt"] == {}


async def test_session_token_format_and_payload(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    response = await _create(
        http,
        externalOrganizationId="org_ext_9",
        expiresIn=900,
        allowedOperations=["read"],
        metadata={"plan": "pro"},
    )
    token = response.json()["sessionToken"]
    match = TOKEN.match(token)
    assert match, token
    payload, signature = match.groups()
    assert "=" not in payload
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(claims) == {
        "jti",
        "iat",
        "exp",
        "merchant_id",
        "external_user_id",
        "external_organization_id",
        "allowed_operations",
        "metadata",
    }
    assert re.fullmatch(r"tok_[0-9a-f]{32}", claims["jti"])
    assert claims["iat"] == int(START)
    assert claims["exp"] == int(START) + 900
    assert claims["merchant_id"] == fake.merchant_id
    assert claims["external_user_id"] == USER
    assert claims["external_organization_id"] == "org_ext_9"
    assert claims["allowed_operations"] == ["read"]
    assert claims["metadata"] == {"plan": "pro"}
    assert len(signature) == 64  # hex of an HMAC-SHA256
    assert fake.verify_session_token(token) == claims


async def test_session_token_payload_without_organization(http: httpx2.AsyncClient) -> None:
    claims = token_claims((await _create(http)).json()["sessionToken"])
    assert "external_organization_id" not in claims
    assert claims["allowed_operations"] == []
    assert claims["metadata"] == {}


async def test_session_token_default_expires_in_is_3600(http: httpx2.AsyncClient) -> None:
    claims = token_claims((await _create(http)).json()["sessionToken"])
    assert claims["exp"] - claims["iat"] == 3600


async def test_session_token_signature_is_checked(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    token = (await _create(http)).json()["sessionToken"]
    body, _, signature = token.removeprefix("bos_session_").rpartition(".")
    forged_claims = {**token_claims(token), "external_user_id": "mallory"}
    forged_body = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    with pytest.raises(ValueError, match="signature"):
        fake.verify_session_token(f"bos_session_{forged_body}.{signature}")
    wrong_key = hmac.new(b"not the fake's secret", body.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(ValueError, match="signature"):
        fake.verify_session_token(f"bos_session_{body}.{wrong_key}")


async def test_session_token_expires_by_the_clock(
    fake: FakeBillingOS, http: httpx2.AsyncClient, clock: Clock
) -> None:
    token = (await _create(http, expiresIn=60)).json()["sessionToken"]
    clock.advance(59)
    fake.verify_session_token(token)
    clock.advance(1)
    with pytest.raises(ValueError, match="expired"):
        fake.verify_session_token(token)


@pytest.mark.parametrize(
    ("expires_in", "message"),
    [
        (59, "expiresIn must not be less than 60"),
        (0, "expiresIn must not be less than 60"),
        (86401, "expiresIn must not be greater than 86400"),
        ("3600", None),
        (3600.5, None),
        (True, None),
    ],
)
async def test_session_token_expires_in_out_of_bounds_is_400(
    http: httpx2.AsyncClient, expires_in: object, message: str | None
) -> None:
    errors = field_errors(await _create(http, expiresIn=expires_in))
    assert "expiresIn" in errors
    if message is not None:
        assert errors["expiresIn"] == [message]


@pytest.mark.parametrize("expires_in", [60, 86400])
async def test_session_token_expires_in_bounds_are_inclusive(
    http: httpx2.AsyncClient, expires_in: int
) -> None:
    response = await _create(http, expiresIn=expires_in)
    assert response.status_code == 201
    claims = token_claims(response.json()["sessionToken"])
    assert claims["exp"] - claims["iat"] == expires_in


@pytest.mark.parametrize(
    "unknown",
    [
        {"customerId": "c"},
        {"external_user_id": USER},  # snake_case is not this endpoint's casing
        {"expires_in": 600},
        {"requestId": "req_x"},
    ],
)
async def test_session_token_unknown_fields_are_400_with_field_errors(
    fake: FakeBillingOS, http: httpx2.AsyncClient, unknown: dict[str, object]
) -> None:
    errors = field_errors(await _create(http, **unknown))
    [name] = unknown
    assert name in errors
    assert fake.requests_to("POST /v1/session-tokens")[-1].status == 400


@pytest.mark.parametrize(
    "body",
    [{}, {"externalUserId": ""}, {"externalUserId": 42}, {"externalUserId": "u" * 256}],
    ids=["missing", "empty", "not-a-string", "256-chars"],
)
async def test_session_token_external_user_id_required_max_255(
    fake: FakeBillingOS, body: dict[str, object]
) -> None:
    async with client(fake) as http:
        errors = field_errors(await http.post("/v1/session-tokens", json=body))
        ok = await http.post("/v1/session-tokens", json={"externalUserId": "u" * 255})
    assert "externalUserId" in errors
    assert ok.status_code == 201


@pytest.mark.parametrize(
    "field",
    [
        {"allowedOperations": "read"},
        {"allowedOperations": [1]},
        {"metadata": ["a"]},
        {"externalOrganizationId": 7},
    ],
)
async def test_session_token_field_types_are_validated(
    http: httpx2.AsyncClient, field: dict[str, object]
) -> None:
    [name] = field
    assert name in field_errors(await _create(http, **field))


async def test_session_token_revoke_is_200_then_404(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    token = (await _create(http)).json()["sessionToken"]
    jti = token_claims(token)["jti"]
    first = await http.delete(f"/v1/session-tokens/{jti}")
    assert first.status_code == 200
    assert first.json() == {
        "message": "Session token revoked successfully",
        "requestId": first.headers["x-request-id"],
    }
    with pytest.raises(ValueError, match="revoked"):
        fake.verify_session_token(token)
    assert_error(await http.delete(f"/v1/session-tokens/{jti}"), 404, "RES_NOT_FOUND")


async def test_session_token_revoke_unknown_is_404(http: httpx2.AsyncClient) -> None:
    assert_error(await http.delete("/v1/session-tokens/tok_" + "0" * 32), 404, "RES_NOT_FOUND")


async def test_session_token_revoke_leaves_other_tokens_alive(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    keep, drop = [(await _create(http)).json()["sessionToken"] for _ in range(2)]
    await http.delete(f"/v1/session-tokens/{token_claims(drop)['jti']}")
    assert fake.verify_session_token(keep)["jti"] == token_claims(keep)["jti"]
