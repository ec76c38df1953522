"""examples/fastapi_app.py, driven through its lifespan, with the SDK on real HTTP to the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from types import ModuleType

import httpx2
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from billingos import SessionToken

from .conftest import USER_1, USER_2, USER_3, Sandbox


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx2.AsyncClient]:
    """The app started (its lifespan opens the BillingOS client), and an httpx client talking to it."""
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://app") as http:
            yield http


async def test_search_is_metered_and_the_server_counts_it(
    sandbox: Sandbox, load_example: Callable[[str], ModuleType]
) -> None:
    app = load_example("fastapi_app").app
    async with running(app) as http:
        first = await http.get("/search", params={"q": "invoices", "pages": 3}, headers=USER_1)
        second = await http.get("/search", params={"q": "refunds"}, headers=USER_1)
        assert first.status_code == second.status_code == 200
        assert first.json()["results"] == ["invoices #1", "invoices #2", "invoices #3"]
        await app.state.billingos.recorder.flush(timeout=10)
        report = await http.get("/usage", headers=USER_1)  # BillingOSDep: the app's client, asking BillingOS
    assert report.status_code == 200
    assert report.json()["api_calls"] == {"consumed": 4.0, "limit": 10000.0}
    assert sandbox.fake.usage_of("user_1", "api_calls") == 4


async def test_denied_and_anonymous_requests_get_403_and_401_and_are_not_metered(
    sandbox: Sandbox, load_example: Callable[[str], ModuleType]
) -> None:
    async with running(load_example("fastapi_app").app) as http:
        no_plan = await http.get("/search", params={"q": "x"}, headers=USER_3)
        no_sso = await http.get("/sso", headers=USER_2)
        anonymous = await http.get("/search", params={"q": "x"})
        with_sso = await http.get("/sso", headers=USER_1)
    # Leaving the block shut the app down: its recorder drained whatever it held.
    assert no_plan.status_code == 403
    assert no_plan.json()["detail"]["error"] == "entitlement_denied"
    assert no_plan.json()["detail"]["reason"] == "no_active_subscription"
    assert no_sso.status_code == 403
    assert no_sso.json()["detail"]["feature_key"] == "sso"
    assert anonymous.status_code == 401
    assert with_sso.status_code == 200
    assert sandbox.fake.usage_of("user_3", "api_calls") == 0
    assert sandbox.fake.requests_to("POST /v1/usage/track") == []


async def test_session_route_mints_a_token_for_the_signed_in_user(
    sandbox: Sandbox, load_example: Callable[[str], ModuleType]
) -> None:
    async with running(load_example("fastapi_app").app) as http:
        minted = await http.post("/billingos/session", headers=USER_1)
        anonymous = await http.post("/billingos/session")
    assert minted.status_code == 200
    assert minted.headers["cache-control"] == "no-store"
    body = minted.json()
    claims = sandbox.fake.verify_session_token(body["sessionToken"])  # signed by the server, and live
    assert claims["external_user_id"] == "user_1"
    token = SessionToken.decode(body["sessionToken"])
    assert token.external_user_id == "user_1"
    assert datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00")) == token.expires_at
    assert (token.expires_at - token.issued_at).total_seconds() == 900  # type: ignore[operator]
    assert anonymous.status_code == 401
    assert len(sandbox.fake.session_tokens()) == 1
