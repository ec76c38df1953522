"""``billingos.integrations`` corners: the forms of user callables the main suite does not use (an annotation
importable only under TYPE_CHECKING, a ``functools.partial`` of an async function, a yield dependency, a sync
dependency that raises), an app without ``.state``, overlapping lifespans, the Starlette route's own checks,
and user ids of the wrong type."""

import functools
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from starlette.applications import Starlette

from billingos import BillingOS, Entitlement
from billingos.integrations import fastapi as integration
from billingos.integrations.fastapi import (
    STATE_KEY,
    BillingOSState,
    RequireEntitlement,
    TrackUsage,
    billingos_lifespan,
    session_token_route,
    session_token_starlette_route,
)
from billingos.integrations.wsgi import session_token_response
from billingos.testing import FakeBillingOS

from .conftest import FREE, PRO, ClientFactory, serve

if TYPE_CHECKING:
    from starlette import requests  # not importable at run time in this module, on purpose

MINT = "POST /v1/session-tokens"
CHECK = "GET /v1/usage/check"


def gated_app(make_client: ClientFactory, customer_id: Any) -> FastAPI:
    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False))
    gate = RequireEntitlement("sso", customer_id=customer_id)

    @app.get("/sso")
    async def sso(ent: Annotated[Entitlement, Depends(gate)]) -> dict[str, Any]:
        return {"feature_key": ent.feature_key, "has_access": ent.has_access}

    return app


# -- the forms of customer_id / authenticate --------------------------------------------------------


def user_of(request: "requests.Request") -> str | None:  # the annotation does not resolve at run time
    return request.headers.get("x-user")


async def test_a_request_annotation_only_importable_under_type_checking_still_gets_the_request(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    async with serve(gated_app(make_client, user_of)) as http:
        allowed = await http.get("/sso", headers={"x-user": PRO})
        denied = await http.get("/sso", headers={"x-user": FREE})
        nobody = await http.get("/sso")
    assert (allowed.status_code, allowed.json()) == (200, {"feature_key": "sso", "has_access": True})
    assert denied.status_code == 403
    assert nobody.status_code == 401
    assert len(fake.requests_to(CHECK)) == 2  # nobody: no request


async def test_a_partial_of_an_async_function_is_awaited_not_sent_to_the_threadpool(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lookup(users: dict[str, str], request: Request) -> str | None:
        return users.get(request.headers.get("x-session", ""))

    def no_threadpool(*_: Any, **__: Any) -> Any:
        raise AssertionError("an async callable must not go through the threadpool")

    monkeypatch.setattr(integration, "run_in_threadpool", no_threadpool)
    customer_id = functools.partial(lookup, {"s1": PRO, "s2": FREE})
    async with serve(gated_app(make_client, customer_id)) as http:
        assert (await http.get("/sso", headers={"x-session": "s1"})).status_code == 200
        assert (await http.get("/sso", headers={"x-session": "s2"})).status_code == 403
        assert (await http.get("/sso", headers={"x-session": "nope"})).status_code == 401


async def test_a_sync_resolver_runs_in_the_threadpool(make_client: ClientFactory) -> None:
    threads: list[int] = []

    def resolve(request: Request) -> str | None:
        threads.append(threading.get_ident())
        return request.headers.get("x-user")

    async with serve(gated_app(make_client, resolve)) as http:
        assert (await http.get("/sso", headers={"x-user": PRO})).status_code == 200
    assert threads
    assert threads[0] != threading.get_ident()


def session_app(make_client: ClientFactory, authenticate: Any) -> FastAPI:
    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False))
    app.include_router(session_token_route(authenticate))
    return app


async def test_a_yield_dependency_authenticates_the_session_route(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    closed: list[str | None] = []

    def current_user(x_user: Annotated[str | None, Header()] = None) -> Iterator[str | None]:
        yield x_user
        closed.append(x_user)  # its teardown runs: FastAPI drives it, the SDK does not wrap it

    async with serve(session_app(make_client, current_user)) as http:
        ok = await http.post("/billingos/session", headers={"x-user": PRO})
        nobody = await http.post("/billingos/session")
    assert ok.status_code == 200
    assert fake.verify_session_token(ok.json()["sessionToken"])["external_user_id"] == PRO
    assert nobody.status_code == 401
    assert closed == [PRO, None]
    assert len(fake.requests_to(MINT)) == 1


async def test_a_sync_dependency_that_raises_is_401_and_its_http_exception_is_answered_as_is(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    def current_user(x_user: Annotated[str | None, Header()] = None) -> str | None:
        if x_user == "suspended":
            raise HTTPException(403, "suspended account")
        if x_user == "broken":
            raise LookupError("session store down")
        return x_user

    async with serve(session_app(make_client, current_user)) as http:
        ok = await http.post("/billingos/session", headers={"x-user": PRO})
        suspended = await http.post("/billingos/session", headers={"x-user": "suspended"})
        broken = await http.post("/billingos/session", headers={"x-user": "broken"})
    assert ok.status_code == 200
    assert (suspended.status_code, suspended.json()) == (403, {"detail": "suspended account"})
    assert broken.status_code == 401
    assert broken.json()["detail"]["error"] == "unauthenticated"
    assert broken.headers["cache-control"] == "no-store"
    assert len(fake.requests_to(MINT)) == 1


# -- the Starlette route ----------------------------------------------------------------------------


def test_the_starlette_route_refuses_an_authenticate_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match="authenticate must be a callable, not int"):
        session_token_starlette_route(42)  # type: ignore[arg-type]


async def test_the_starlette_route_answers_an_http_exception_of_authenticate_as_is(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    async def suspended(request: Request) -> str:
        raise HTTPException(403, "suspended account")

    app = Starlette(
        routes=[session_token_starlette_route(suspended)],
        lifespan=billingos_lifespan(make_client, recorder=False),
    )
    async with serve(app) as http:
        response = await http.post("/billingos/session")
    assert response.status_code == 403
    assert "suspended account" in response.text
    assert fake.requests_to(MINT) == []


# -- the lifespan -----------------------------------------------------------------------------------


async def test_the_lifespan_runs_for_an_app_without_state(make_client: ClientFactory) -> None:
    """A bare ASGI callable has no ``.state``: the client is only in the lifespan state."""

    async def bare_app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    async with billingos_lifespan(make_client, recorder=False)(bare_app) as state:
        assert state is not None
        opened = state[STATE_KEY]
        assert isinstance(opened, BillingOSState)
        assert opened.recorder is None
        assert not opened.client.is_closed
        assert not hasattr(bare_app, "state")
    assert opened.client.is_closed


async def test_overlapping_runs_of_one_app_leave_each_others_state_alone(make_client: ClientFactory) -> None:
    app = FastAPI()
    lifespan = billingos_lifespan(make_client, recorder=False)
    first = lifespan(app)
    await first.__aenter__()
    first_state = app.state.billingos
    async with lifespan(app) as second:
        assert app.state.billingos is second[STATE_KEY]  # the newest run is on app.state
        await first.__aexit__(None, None, None)  # the first run stops while the second runs
        assert app.state.billingos is second[STATE_KEY]  # not deleted from under the second
        assert first_state.client.is_closed
        assert not second[STATE_KEY].client.is_closed
    assert not hasattr(app.state, STATE_KEY)


# -- reprs and ids ----------------------------------------------------------------------------------


def test_the_dependencies_repr_names_the_feature() -> None:
    assert repr(RequireEntitlement("api_calls", customer_id=user_of)) == "RequireEntitlement('api_calls')"
    assert (
        repr(TrackUsage("tokens", customer_id=user_of, quantity=2.5)) == "TrackUsage('tokens', quantity=2.5)"
    )


@pytest.mark.parametrize(("user_id", "kind"), [(4.5, "float"), (True, "bool"), (b"user_1", "bytes")])
def test_a_user_id_of_the_wrong_type_is_a_type_error_before_any_request(
    sync_billing: BillingOS, fake: FakeBillingOS, user_id: Any, kind: str
) -> None:
    with pytest.raises(TypeError, match=f"expected the user's id as a str \\(or None\\), got {kind}$"):
        session_token_response(sync_billing, user_id)
    assert fake.requests_to(MINT) == []


async def test_a_resolver_returning_the_wrong_type_is_a_500_not_a_grant(make_client: ClientFactory) -> None:
    async with serve(gated_app(make_client, lambda request: 4.5), raise_app_exceptions=False) as http:
        response = await http.get("/sso")
    assert response.status_code == 500
