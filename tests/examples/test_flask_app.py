"""examples/flask_app.py, driven by Flask's test client, with the SDK on real HTTP to the sandbox."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
from flask import Flask

from billingos import SessionToken

from .conftest import USER_1, USER_2, USER_3, Sandbox


@pytest.fixture
def app(sandbox: Sandbox, load_example: Callable[[str], ModuleType]) -> Iterator[Flask]:
    app: Flask = load_example("flask_app").app  # built at import, from the environment
    billing = app.extensions["billingos"]
    yield app
    billing.close()
    atexit.unregister(billing.close)


def test_search_is_metered_and_the_server_counts_it(sandbox: Sandbox, app: Flask) -> None:
    http = app.test_client()
    first = http.get("/search", query_string={"q": "invoices", "pages": 2}, headers=USER_1)
    second = http.get("/search", query_string={"q": "refunds"}, headers=USER_1)
    assert first.status_code == second.status_code == 200
    assert first.get_json()["results"] == ["invoices #1", "invoices #2"]
    app.extensions["billingos"].recorder.flush(timeout=10)
    assert sandbox.fake.usage_of("user_1", "api_calls") == 3


def test_denied_and_anonymous_requests_get_403_and_401_and_are_not_metered(
    sandbox: Sandbox, app: Flask
) -> None:
    http = app.test_client()
    no_plan = http.get("/search", query_string={"q": "x"}, headers=USER_3)
    no_sso = http.get("/sso", headers=USER_2)
    anonymous = http.get("/search", query_string={"q": "x"})
    with_sso = http.get("/sso", headers=USER_1)
    assert no_plan.status_code == 403
    assert no_plan.get_json() == {
        "error": "entitlement_denied",
        "feature_key": "api_calls",
        "reason": "no_active_subscription",
    }
    assert no_sso.status_code == 403
    assert anonymous.status_code == 401
    assert with_sso.status_code == 200
    app.extensions["billingos"].recorder.flush(timeout=10)
    assert sandbox.fake.requests_to("POST /v1/usage/track") == []


def test_session_route_mints_a_token_for_the_signed_in_user(sandbox: Sandbox, app: Flask) -> None:
    http = app.test_client()
    minted = http.post("/billingos/session", headers=USER_1)
    anonymous = http.post("/billingos/session")
    assert minted.status_code == 200
    assert minted.headers["Cache-Control"] == "no-store"
    token = minted.get_json()["sessionToken"]
    assert sandbox.fake.verify_session_token(token)["external_user_id"] == "user_1"
    assert SessionToken.decode(token).external_user_id == "user_1"
    assert anonymous.status_code == 401
    assert anonymous.get_json()["detail"]["error"] == "unauthenticated"
