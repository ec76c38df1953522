"""billingos.integrations.wsgi from a real Flask app (its test client), through the blocking BillingOS bound
in-process to the embedded server."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, request

from billingos import BillingOS, ValidationError
from billingos.integrations.wsgi import session_token_response
from billingos.testing import FakeBillingOS, Fault

from .conftest import PRO

MINT = "POST /v1/session-tokens"


def flask_app(billing: BillingOS, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.post("/billingos/session")
    def billingos_session() -> Any:
        return session_token_response(billing, request.headers.get("X-User"), **options)

    return app


def test_flask_view_mints_a_token(sync_billing: BillingOS, fake: FakeBillingOS) -> None:
    response = (
        flask_app(sync_billing, expires_in=900)
        .test_client()
        .post("/billingos/session", headers={"X-User": PRO})
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    claims = fake.verify_session_token(body["sessionToken"])
    assert claims["external_user_id"] == PRO
    assert claims["exp"] - claims["iat"] == 900
    assert body["expiresAt"].endswith("Z")
    assert datetime.fromisoformat(body["expiresAt"][:-1] + "+00:00") == datetime.fromtimestamp(
        claims["exp"], UTC
    )


def test_flask_view_without_a_user_is_401(sync_billing: BillingOS, fake: FakeBillingOS) -> None:
    response = flask_app(sync_billing).test_client().post("/billingos/session")
    assert response.status_code == 401
    assert response.get_json()["detail"]["error"] == "unauthenticated"
    assert fake.requests_to(MINT) == []


def test_flask_view_is_502_when_billingos_fails(sync_billing: BillingOS, fake: FakeBillingOS) -> None:
    fake.inject(MINT, Fault.error(500), times=None)
    response = flask_app(sync_billing).test_client().post("/billingos/session", headers={"X-User": PRO})
    assert response.status_code == 502
    assert response.get_json()["detail"]["error"] == "billingos_error"


def test_direct_call_with_an_int_id_and_an_organization(sync_billing: BillingOS, fake: FakeBillingOS) -> None:
    body, status, headers = session_token_response(sync_billing, 42, external_organization_id="org_7")
    assert (status, headers) == (200, {"Cache-Control": "no-store"})
    claims = fake.verify_session_token(body["sessionToken"])
    assert (claims["external_user_id"], claims["external_organization_id"]) == ("42", "org_7")


@pytest.mark.parametrize(
    "call",
    [
        lambda billing: session_token_response(billing, PRO, expires_in=59),
        lambda billing: session_token_response(billing, PRO, allowed_operations=[1]),
    ],
)
def test_bad_options_raise(sync_billing: BillingOS, call: Callable[[BillingOS], Any]) -> None:
    with pytest.raises(ValidationError):
        call(sync_billing)
