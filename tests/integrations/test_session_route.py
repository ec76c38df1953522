"""The session-token route (Node: ``createSessionRoute``) for FastAPI and Starlette, against the embedded
BillingOS: 200 with the token's own expiry as ISO-8601 UTC, 401 from the auth callback, 502 when BillingOS
fails."""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx2
import pytest
from fastapi import FastAPI, Header, HTTPException, Request
from starlette.applications import Starlette

from billingos import ValidationError
from billingos.integrations.fastapi import (
    billingos_lifespan,
    session_token_route,
    session_token_starlette_route,
)
from billingos.testing import FakeBillingOS, Fault

from .conftest import PRO, ClientFactory, serve

MINT = "POST /v1/session-tokens"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


def fastapi_app(make_client: ClientFactory, authenticate: Any = user_from_header, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False))
    app.include_router(session_token_route(authenticate, **options))
    return app


def starlette_app(
    make_client: ClientFactory, authenticate: Any = user_from_header, **options: Any
) -> Starlette:
    return Starlette(
        routes=[session_token_starlette_route(authenticate, **options)],
        lifespan=billingos_lifespan(make_client, recorder=False),
    )


def assert_session_answer(response: httpx2.Response, fake: FakeBillingOS, user: str, lifetime: int) -> None:
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"sessionToken", "expiresAt"}
    claims = fake.verify_session_token(body["sessionToken"])  # minted and signed by BillingOS
    assert claims["external_user_id"] == user
    assert ISO_UTC.match(body["expiresAt"]), body["expiresAt"]
    expires_at = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    assert expires_at.utcoffset() == timedelta(0)
    assert expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    assert claims["exp"] - claims["iat"] == lifetime


@pytest.mark.parametrize("build", [fastapi_app, starlette_app], ids=["fastapi", "starlette"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_mints_a_token_with_its_expiry_in_iso_utc(
    make_client: ClientFactory, fake: FakeBillingOS, build: Any, method: str
) -> None:
    async with serve(build(make_client, expires_in=900)) as http:
        response = await http.request(method, "/billingos/session", headers={"x-user": PRO})
    assert_session_answer(response, fake, PRO, 900)


async def test_server_default_lifetime_path_and_allowed_operations(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    app = fastapi_app(make_client, path="/auth/billing", methods=["POST"], allowed_operations=["read"])
    async with serve(app) as http:
        response = await http.post("/auth/billing", headers={"x-user": PRO})
        assert (await http.get("/auth/billing", headers={"x-user": PRO})).status_code == 405
    assert_session_answer(response, fake, PRO, 3600)
    assert fake.verify_session_token(response.json()["sessionToken"])["allowed_operations"] == ["read"]


def _raises(request: Request) -> str:
    raise ValueError("bad session cookie")


async def _async_none(request: Request) -> None:
    return None


@pytest.mark.parametrize("build", [fastapi_app, starlette_app], ids=["fastapi", "starlette"])
@pytest.mark.parametrize(
    "authenticate",
    [
        pytest.param(lambda request: None, id="returns-None"),
        pytest.param(lambda request: "", id="returns-empty"),
        pytest.param(_async_none, id="async-returns-None"),
        pytest.param(_raises, id="raises"),
    ],
)
async def test_401_from_the_auth_callback(
    make_client: ClientFactory, fake: FakeBillingOS, build: Any, authenticate: Any
) -> None:
    async with serve(build(make_client, authenticate)) as http:
        response = await http.post("/billingos/session")
    assert response.status_code == 401
    assert response.json()["detail"]["error"] == "unauthenticated"
    assert fake.requests_to(MINT) == []


async def test_an_http_exception_from_the_callback_is_answered_as_is(make_client: ClientFactory) -> None:
    def forbidden(request: Request) -> str:
        raise HTTPException(403, "suspended account")

    async with serve(fastapi_app(make_client, forbidden)) as http:
        response = await http.post("/billingos/session")
    assert (response.status_code, response.json()) == (403, {"detail": "suspended account"})


async def test_the_callback_may_be_a_fastapi_dependency(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    async def from_header(authorization: Annotated[str | None, Header()] = None) -> str | None:
        if authorization != "Bearer good":
            raise PermissionError("bad token")  # becomes a 401
        return PRO

    async with serve(fastapi_app(make_client, from_header)) as http:
        ok = await http.post("/billingos/session", headers={"authorization": "Bearer good"})
        refused = await http.post("/billingos/session", headers={"authorization": "Bearer bad"})
    assert_session_answer(ok, fake, PRO, 3600)
    assert refused.status_code == 401


async def test_a_zero_argument_callback_for_starlette(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    async with serve(starlette_app(make_client, lambda: 42)) as http:
        response = await http.post("/billingos/session")
    assert_session_answer(response, fake, "42", 3600)


@pytest.mark.parametrize("build", [fastapi_app, starlette_app], ids=["fastapi", "starlette"])
@pytest.mark.parametrize(
    "fault", [Fault.error(500), Fault.error(503), Fault.reset()], ids=["500", "503", "reset"]
)
async def test_502_when_billingos_fails(
    make_client: ClientFactory, fake: FakeBillingOS, build: Any, fault: Fault
) -> None:
    fake.inject(MINT, fault, times=None)
    async with serve(build(make_client)) as http:
        response = await http.post("/billingos/session", headers={"x-user": PRO})
    assert response.status_code == 502
    assert response.headers["cache-control"] == "no-store"
    detail = response.json()["detail"]
    assert detail["error"] == "billingos_error"
    assert "request_id" in detail
    assert "sessionToken" not in response.text


def test_options_are_checked_when_the_route_is_built() -> None:
    for build in (session_token_route, session_token_starlette_route):
        with pytest.raises(ValidationError, match="expires_in"):
            build(user_from_header, expires_in=30)
        with pytest.raises(ValidationError, match="allowed_operations"):
            build(user_from_header, allowed_operations="read")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Request"):
        session_token_starlette_route(lambda user, password: user)
