"""billing.session_tokens: camelCase wire, expiry and id read from the token itself, revoke by token or id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import respx

from billingos import (
    AsyncBillingOS,
    BillingOS,
    NotFoundError,
    ResponseDecodeError,
    SessionToken,
    ValidationError,
)

from .._factories import make_token
from . import EXP, HOSTILE_IDS, JTI, MALFORMED_TOKENS, REFUSED_IDS, assert_standard_headers, body

TOKEN = make_token(JTI, exp=EXP, iat=EXP - 900, user="user_42", allowed_operations=["read"])


def created(token: str = TOKEN, **extra: Any) -> dict[str, Any]:
    """The server's 201 answer, with its broken ``expiresAt``."""
    return {"sessionToken": token, "expiresAt": {}, "requestId": "req_" + "0" * 24, **extra}


async def test_create_sends_camel_case_body(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/v1/session-tokens").respond(201, json=created())
    await billing.session_tokens.create(
        "user_42",
        external_organization_id="org_7",
        expires_in=900,
        allowed_operations=["read", "write"],
        metadata={"plan": "pro"},
    )
    assert body(route.calls.last.request) == {
        "externalUserId": "user_42",
        "externalOrganizationId": "org_7",
        "expiresIn": 900,
        "allowedOperations": ["read", "write"],
        "metadata": {"plan": "pro"},
    }


async def test_create_omits_none_fields_from_body(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/v1/session-tokens").respond(201, json=created())
    await billing.session_tokens.create("user_42")
    assert body(route.calls.last.request) == {"externalUserId": "user_42"}


async def test_create_sends_standard_headers_with_json_content_type(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/v1/session-tokens").respond(201, json=created())
    await billing.session_tokens.create("user_42")
    assert_standard_headers(route.calls.last.request, has_body=True)


async def test_create_reads_expires_at_from_token_exp_not_broken_expires_at(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/session-tokens").respond(201, json=created())
    token = await billing.session_tokens.create("user_42")
    assert token.expires_at == datetime(2026, 2, 27, 10, 0, tzinfo=UTC)
    assert token.expires_at.tzinfo is not None


async def test_create_returns_token_string_jti_as_token_id_and_claims(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/session-tokens").respond(201, json=created())
    token = await billing.session_tokens.create("user_42")
    assert token.session_token == TOKEN
    assert token.token_id == JTI
    assert token.external_user_id == "user_42"
    assert token.allowed_operations == ("read",)
    assert token.issued_at == datetime(2026, 2, 27, 9, 45, tzinfo=UTC)


async def test_create_takes_allowed_operations_from_response_when_token_has_none(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    bare = make_token(JTI, exp=EXP)
    router.post("/v1/session-tokens").respond(201, json=created(bare, allowedOperations=["read", "write"]))
    token = await billing.session_tokens.create("user_42")
    assert token.allowed_operations == ("read", "write")


async def test_create_session_token_shortcut_hits_same_endpoint(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.post("/v1/session-tokens").respond(201, json=created())
    token = await billing.create_session_token("user_42", expires_in=60)
    assert route.call_count == 1
    assert body(route.calls.last.request) == {"externalUserId": "user_42", "expiresIn": 60}
    assert token.token_id == JTI


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"external_user_id": ""}, "external_user_id"),
        ({"external_user_id": "   "}, "external_user_id"),
        ({"external_user_id": "u" * 256}, "external_user_id"),
        ({"external_user_id": 42}, "external_user_id"),
        ({"expires_in": 59}, "expires_in"),
        ({"expires_in": 86401}, "expires_in"),
        ({"expires_in": 900.0}, "expires_in"),
        ({"expires_in": True}, "expires_in"),
        ({"allowed_operations": "read"}, "allowed_operations"),
        ({"allowed_operations": ["read", ""]}, "allowed_operations"),
        ({"metadata": ["not", "a", "mapping"]}, "metadata"),
        ({"external_organization_id": ""}, "external_organization_id"),
    ],
)
async def test_create_refuses_bad_arguments_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, kwargs: dict[str, Any], field: str
) -> None:
    route = router.post("/v1/session-tokens").respond(201, json=created())
    arguments: dict[str, Any] = {"external_user_id": "user_42", **kwargs}
    user = arguments.pop("external_user_id")
    with pytest.raises(ValidationError, match=field) as info:
        await billing.session_tokens.create(user, **arguments)
    assert info.value.status_code is None
    assert route.call_count == 0


async def test_create_accepts_expires_in_bounds(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.post("/v1/session-tokens").respond(201, json=created())
    await billing.session_tokens.create("user_42", expires_in=60)
    await billing.session_tokens.create("user_42", expires_in=86400)
    assert [body(c.request)["expiresIn"] for c in route.calls] == [60, 86400]


async def test_create_response_without_session_token_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/session-tokens").respond(
        201, json={"expiresAt": {}}, headers={"x-request-id": "req_" + "1" * 24}
    )
    with pytest.raises(ResponseDecodeError) as info:
        await billing.session_tokens.create("user_42")
    assert info.value.status_code == 201
    assert info.value.request_id == "req_" + "1" * 24


async def test_create_response_with_malformed_token_is_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/session-tokens").respond(201, json=created("bos_session_garbage"))
    with pytest.raises(ResponseDecodeError):
        await billing.session_tokens.create("user_42")


@pytest.mark.parametrize("token_or_id", [JTI, TOKEN], ids=["token_id", "whole_token"])
async def test_revoke_deletes_by_jti(
    billing: AsyncBillingOS, router: respx.MockRouter, token_or_id: str
) -> None:
    route = router.delete(f"/v1/session-tokens/{JTI}").respond(
        200, json={"message": "Session token revoked successfully"}
    )
    assert await billing.session_tokens.revoke(token_or_id) is None
    assert route.call_count == 1


async def test_revoke_sends_standard_headers_without_body(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.delete(f"/v1/session-tokens/{JTI}").respond(200, json={"message": "ok"})
    await billing.session_tokens.revoke(JTI)
    assert_standard_headers(route.calls.last.request, has_body=False)


async def test_revoke_unknown_token_raises_not_found(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.delete(f"/v1/session-tokens/{JTI}").respond(
        404,
        json={
            "error": {"code": "RES_NOT_FOUND", "message": "Session token not found"},
            "statusCode": 404,
        },
    )
    with pytest.raises(NotFoundError, match="Session token not found"):
        await billing.session_tokens.revoke(JTI)


# A string without the token prefix is a token id to revoke, not a malformed token.
@pytest.mark.parametrize(
    ("token", "fragment"), [(t, f) for t, f in MALFORMED_TOKENS if t.startswith("bos_session_")]
)
async def test_revoke_refuses_malformed_token_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, token: str, fragment: str
) -> None:
    route = router.route(method="DELETE").respond(200, json={})
    with pytest.raises(ValidationError, match=fragment):
        await billing.session_tokens.revoke(token)
    assert route.call_count == 0


@pytest.mark.parametrize(("raw", "segment"), HOSTILE_IDS)
async def test_revoke_sends_hostile_id_as_one_encoded_segment(
    billing: AsyncBillingOS, router: respx.MockRouter, raw: str, segment: str
) -> None:
    route = router.route(method="DELETE").respond(200, json={"message": "ok"})
    await billing.session_tokens.revoke(raw)
    assert route.calls.last.request.url.raw_path == f"/v1/session-tokens/{segment}".encode()


async def test_revoke_encodes_hostile_jti_from_whole_token(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.route(method="DELETE").respond(200, json={"message": "ok"})
    await billing.session_tokens.revoke(make_token("../admin", exp=EXP))
    assert route.calls.last.request.url.raw_path == b"/v1/session-tokens/..%2Fadmin"


@pytest.mark.parametrize("raw", REFUSED_IDS)
async def test_revoke_refuses_empty_or_crlf_id_without_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, raw: str
) -> None:
    route = router.route(method="DELETE").respond(200, json={})
    with pytest.raises(ValidationError):
        await billing.session_tokens.revoke(raw)
    assert route.call_count == 0


def test_sync_create_and_revoke_mirror_async(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    create = router.post("/v1/session-tokens").respond(201, json=created())
    revoke = router.delete(f"/v1/session-tokens/{JTI}").respond(200, json={"message": "ok"})
    token = sync_billing.session_tokens.create("user_42", expires_in=900)
    assert isinstance(token, SessionToken)
    assert token.token_id == JTI
    assert body(create.calls.last.request) == {"externalUserId": "user_42", "expiresIn": 900}
    assert sync_billing.create_session_token("user_42").token_id == JTI
    assert sync_billing.session_tokens.revoke(token.session_token) is None
    assert create.call_count == 2
    assert revoke.call_count == 1
