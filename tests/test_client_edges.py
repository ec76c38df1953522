"""Corners of the client surface: the Node-style shortcuts read on the class, a response body of the wrong
JSON type, and session tokens whose claims are the wrong shape."""

from __future__ import annotations

import pytest
import respx

from billingos import AsyncBillingOS, Entitlement, ResponseDecodeError, SessionToken, ValidationError
from billingos._convert import converter
from billingos._resources import AsyncEntitlements, AsyncSessionTokens, AsyncUsage

from ._factories import check_json, make_token


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("check_entitlement", AsyncEntitlements.check),
        ("track_usage", AsyncUsage.track),
        ("create_session_token", AsyncSessionTokens.create),
    ],
)
def test_a_shortcut_read_on_the_class_documents_the_method_it_stands_for(name: str, method: object) -> None:
    shortcut = getattr(AsyncBillingOS, name)  # on the class: the descriptor itself, for help() and docs
    assert shortcut.__doc__ == method.__doc__
    assert shortcut.__doc__
    assert shortcut.resource in ("entitlements", "usage", "session_tokens")
    assert shortcut.method == method.__name__  # type: ignore[attr-defined]
    assert shortcut.__get__(None, AsyncBillingOS) is shortcut


async def test_a_shortcut_read_on_a_client_is_the_resource_method(billing: AsyncBillingOS) -> None:
    assert billing.check_entitlement == billing.entitlements.check
    assert billing.track_usage == billing.usage.track
    assert billing.create_session_token == billing.session_tokens.create


@pytest.mark.parametrize("body", [[check_json()], "granted", 1])
async def test_an_entitlement_body_that_is_not_an_object_is_a_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter, body: object
) -> None:
    router.get("/v1/usage/check").respond(200, json=body)
    with pytest.raises(ResponseDecodeError) as caught:
        await billing.entitlements.check("user_42", "api_calls")
    assert caught.value.status_code == 200
    assert "GET /v1/usage/check" in caught.value.message
    assert "expected a JSON object, got " in caught.value.message


def test_the_converters_entitlement_hook_refuses_a_non_object_on_its_own() -> None:
    """Registered on the shared converter, it also guards any model that would nest an Entitlement."""
    with pytest.raises(ValueError, match=r"^expected an object, got \['x'\]$"):
        converter.structure(["x"], Entitlement)
    with pytest.raises(ValueError, match="expected an object for metadata, got 'x'"):
        converter.structure(check_json(metadata="x"), Entitlement)
    assert converter.structure(check_json(), Entitlement).remaining == 990


@pytest.mark.parametrize("operations", ["read", ["read", 1], {"read": True}])
def test_a_token_whose_allowed_operations_are_not_strings_is_malformed(operations: object) -> None:
    token = make_token(allowed_operations=operations)
    with pytest.raises(ValidationError, match="allowed_operations is not a list of strings") as caught:
        SessionToken.decode(token)
    assert caught.value.status_code is None
    assert caught.value.code == "invalid_argument"


def test_a_token_with_null_operations_and_metadata_decodes_to_empty_ones() -> None:
    claims = SessionToken.decode(make_token(allowed_operations=None, metadata=None))
    assert list(claims.allowed_operations) == []
    assert dict(claims.metadata) == {}
