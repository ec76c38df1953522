"""Selling from your server: ``billing_router`` (FastAPI), ``billing_starlette_routes`` (Starlette) and the
WSGI helpers, against the embedded BillingOS served on loopback (``fake.serve()``), over real HTTP.

The front end holds no token: each route acts as the signed-in user through ``as_customer``, whose token
is minted once per user and reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from flask import Flask, request
from starlette.applications import Starlette

from billingos import AsyncBillingOS, BillingOS
from billingos.integrations.fastapi import billing_router, billing_starlette_routes, billingos_lifespan
from billingos.integrations.wsgi import (
    checkout_response,
    checkout_status_response,
    confirm_free_response,
    customer_state_response,
    feature_response,
    portal_response,
    products_response,
)
from billingos.testing import FakeBillingOS, Fault, Plan

from .conftest import GHOST, NO_SLEEP, serve

MINT = "POST /v1/session-tokens"


@pytest.fixture
def team(fake: FakeBillingOS) -> Plan:
    """A paid plan with SSO, on top of the conftest's free "Pro"."""
    return fake.add_product("Team", features={"sso": True, "api_calls": 100}, amount=2900, highlighted=True)


@pytest.fixture
def url(fake: FakeBillingOS) -> Iterator[str]:
    with fake.serve() as served:
        yield served


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


async def details(user_id: str) -> dict[str, str]:
    return {"email": f"{user_id}@example.com", "name": user_id.title()}


def fastapi_app(fake: FakeBillingOS, url: str, **options: Any) -> FastAPI:
    def client() -> AsyncBillingOS:
        return AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=NO_SLEEP)

    app = FastAPI(lifespan=billingos_lifespan(client, recorder=False))
    options.setdefault("customer_details", details)
    app.include_router(billing_router(user_from_header, **options))
    return app


def as_user(user: str) -> dict[str, str]:
    return {"x-user": user}


async def test_paid_plan_sold_through_the_router_mints_once(
    fake: FakeBillingOS, url: str, team: Plan
) -> None:
    async with serve(fastapi_app(fake, url)) as http:
        me = as_user("user_new")
        pricing = await http.get("/billingos/products", headers=me)
        assert pricing.status_code == 200
        assert pricing.headers["cache-control"] == "no-store"
        catalog = pricing.json()
        assert [p["name"] for p in catalog["products"]] == ["Pro", "Team"]
        assert catalog["current_subscription"] is None
        paid = next(p for p in catalog["products"] if p["name"] == "Team")
        assert paid["highlighted"] is True
        assert paid["prices"][0] == {
            "id": team.price_id,
            "amount": 2900,
            "currency": "usd",
            "interval": "month",
            "interval_count": 1,
        }

        started = await http.post("/billingos/checkout", json={"price_id": team.price_id}, headers=me)
        assert started.status_code == 201, started.text
        session = started.json()
        assert session["client_secret"].startswith("pi_")  # the front end confirms it with Stripe.js
        assert session["amount"] == 2900
        assert session["customer"] == {"email": "user_new@example.com", "name": "User_New"}

        pending = await http.get(f"/billingos/checkout/{session['id']}", headers=me)
        assert pending.status_code == 200
        assert pending.json()["subscription"] is None

        fake.complete_checkout(session["id"])  # Stripe.js and the webhook, simulated
        done = (await http.get(f"/billingos/checkout/{session['id']}", headers=me)).json()
        assert done["subscription"]["status"] == "active"
        assert done["subscription"]["product_id"] == team.product_id

        sso = await http.get("/billingos/features/sso", headers=me)
        assert sso.status_code == 200
        assert sso.json()["has_access"] is True

        portal = await http.post("/billingos/portal", headers=me)
        assert portal.status_code == 201
        assert portal.json()["id"]
        assert portal.json()["expires_at"].endswith("Z")

        state = await http.get("/billingos/state", headers=me)
        assert state.status_code == 200
        assert state.json()["customer"]["external_id"] == "user_new"
        assert "sso" in [f["feature_key"] for f in state.json()["granted_features"]]

        current = (await http.get("/billingos/products", headers=me)).json()["current_subscription"]
        assert current["price_id"] == team.price_id  # the SDK repaired the server's priceId
    assert len(fake.requests_to(MINT)) == 1  # eight calls of one user, one token


async def test_free_plan_through_confirm_free(fake: FakeBillingOS, url: str) -> None:
    async with serve(fastapi_app(fake, url)) as http:
        me = as_user("user_newbie")
        catalog = (await http.get("/billingos/products", headers=me)).json()
        price_id = catalog["products"][0]["prices"][0]["id"]  # "Pro" of the conftest: free
        started = await http.post("/billingos/checkout", json={"price_id": price_id}, headers=me)
        assert started.status_code == 201
        assert started.json()["client_secret"] == ""
        confirmed = await http.post(f"/billingos/checkout/{started.json()['id']}/confirm-free", headers=me)
        assert confirmed.status_code == 200
        assert confirmed.json()["status"] == "active"
        again = await http.post(f"/billingos/checkout/{started.json()['id']}/confirm-free", headers=me)
        assert again.json()["id"] == confirmed.json()["id"]
        assert (await http.get("/billingos/features/sso", headers=me)).json()["has_access"] is True


async def test_nobody_signed_in_is_401_without_a_call(fake: FakeBillingOS, url: str) -> None:
    async with serve(fastapi_app(fake, url)) as http:
        for method, path in [
            ("GET", "/billingos/products"),
            ("POST", "/billingos/checkout"),
            ("GET", "/billingos/checkout/x"),
            ("POST", "/billingos/checkout/x/confirm-free"),
            ("POST", "/billingos/portal"),
            ("GET", "/billingos/state"),
            ("GET", "/billingos/features/sso"),
        ]:
            answer = await http.request(method, path)
            assert answer.status_code == 401, path
            assert answer.json()["detail"]["error"] == "unauthenticated"
    assert fake.requests == ()


async def test_errors_map_to_http_answers(fake: FakeBillingOS, url: str) -> None:
    async with serve(fastapi_app(fake, url)) as http:
        ghost = as_user(GHOST)
        portal = await http.post("/billingos/portal", headers=ghost)
        assert portal.status_code == 404
        assert portal.json()["detail"]["error"] == "not_found"
        assert "must complete checkout" in portal.json()["detail"]["message"]
        assert portal.json()["detail"]["request_id"]

        state = await http.get("/billingos/state", headers=ghost)
        assert state.status_code == 404

        unknown = await http.post("/billingos/checkout", json={"price_id": "price_nope"}, headers=ghost)
        assert unknown.status_code == 404
        assert unknown.json()["detail"]["message"] == "Price not found or not available"

        missing = await http.get("/billingos/checkout/00000000-0000-0000-0000-000000000000", headers=ghost)
        assert missing.status_code == 404

        for body in [{"price_id": "p", "customer_email": "x@example.com"}, {}, [], {"price_id": 3}]:
            refused = await http.post("/billingos/checkout", json=body, headers=ghost)
            assert refused.status_code == 400, body
            assert refused.json()["detail"]["error"] == "invalid_request"
        not_json = await http.post("/billingos/checkout", content=b"{", headers=ghost)
        assert not_json.status_code == 400

        ghost_sso = await http.get("/billingos/features/sso", headers=ghost)
        assert ghost_sso.status_code == 200  # a question, not a gate
        assert ghost_sso.json() | {"has_access": False, "reason": "customer_not_found"} == ghost_sso.json()

        fake.inject("GET /v1/products", Fault.error(503), times=None)
        down = await http.get("/billingos/products", headers=ghost)
        assert down.status_code == 503
        assert down.json()["detail"]["error"] == "billingos_unavailable"


async def test_checkout_without_a_stripe_account_is_400() -> None:
    fake = FakeBillingOS(rate_limits=None, stripe_connected=False)
    plan = fake.add_product("Free", features={}, amount=0)
    with fake.serve() as served:
        async with serve(fastapi_app(fake, served)) as http:
            refused = await http.post(
                "/billingos/checkout", json={"price_id": plan.price_id}, headers=as_user("u")
            )
    assert refused.status_code == 400
    assert refused.json()["detail"]["message"] == "Organization does not have a Stripe Connect account"


async def test_a_rejected_secret_key_is_502(fake: FakeBillingOS, url: str) -> None:
    def client() -> AsyncBillingOS:
        return AsyncBillingOS("sk_test_" + "x" * 32, api_url=url, retry_policy=NO_SLEEP)

    app = FastAPI(lifespan=billingos_lifespan(client, recorder=False))
    app.include_router(billing_router(user_from_header, prefix="/billing/"))
    async with serve(app) as http:
        answer = await http.get("/billing/products", headers=as_user("u"))
    assert answer.status_code == 502
    assert answer.json()["detail"]["error"] == "billingos_error"


async def test_starlette_routes_answer_alike(fake: FakeBillingOS, url: str, team: Plan) -> None:
    def client() -> AsyncBillingOS:
        return AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=NO_SLEEP)

    app = Starlette(
        routes=billing_starlette_routes(user_from_header, customer_details=details, prefix="/b"),
        lifespan=billingos_lifespan(client, recorder=False),
    )
    async with serve(app) as http:
        assert (await http.get("/b/products")).status_code == 401
        started = await http.post("/b/checkout", json={"price_id": team.price_id}, headers=as_user("s1"))
        assert started.status_code == 201
        fake.complete_checkout(started.json()["id"])
        assert (await http.get("/b/features/sso", headers=as_user("s1"))).json()["has_access"] is True
        assert (await http.post("/b/portal", headers=as_user("s1"))).status_code == 201


def test_bad_router_arguments_raise() -> None:
    with pytest.raises(TypeError):
        billing_router(user_from_header, customer_details="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        billing_starlette_routes(lambda a, b: None)


# -- WSGI (Flask) --------------------------------------------------------------------------------


def flask_app(billing: BillingOS) -> Flask:
    app = Flask(__name__)

    def user() -> str | None:
        return request.headers.get("X-User")

    @app.get("/billingos/products")
    def pricing() -> Any:
        return products_response(billing, user(), plan_ids=request.args.get("plan_ids"))

    @app.post("/billingos/checkout")
    def checkout() -> Any:
        return checkout_response(
            billing, user(), request.get_json(silent=True), customer_email=f"{user()}@example.com"
        )

    @app.get("/billingos/checkout/<session_id>")
    def checkout_status(session_id: str) -> Any:
        return checkout_status_response(billing, user(), session_id)

    @app.post("/billingos/checkout/<session_id>/confirm-free")
    def confirm_free(session_id: str) -> Any:
        return confirm_free_response(billing, user(), session_id)

    @app.post("/billingos/portal")
    def portal() -> Any:
        return portal_response(billing, user())

    @app.get("/billingos/state")
    def state() -> Any:
        return customer_state_response(billing, user())

    @app.get("/billingos/features/<key>")
    def feature(key: str) -> Any:
        return feature_response(billing, user(), key)

    return app


def test_flask_sells_a_paid_plan(fake: FakeBillingOS, url: str, team: Plan) -> None:
    with BillingOS(fake.secret_key, api_url=url, retry_policy=NO_SLEEP) as billing:
        http = flask_app(billing).test_client()
        me = {"X-User": "flask_user"}
        catalog = http.get(f"/billingos/products?plan_ids={team.product_id}", headers=me)
        assert catalog.status_code == 200
        assert [p["name"] for p in catalog.get_json()["products"]] == ["Team"]
        assert catalog.headers["Cache-Control"] == "no-store"

        started = http.post("/billingos/checkout", json={"price_id": team.price_id}, headers=me)
        assert started.status_code == 201
        session_id = started.get_json()["id"]
        assert started.get_json()["customer"]["email"] == "flask_user@example.com"
        assert http.get(f"/billingos/checkout/{session_id}", headers=me).get_json()["subscription"] is None
        fake.complete_checkout(session_id)
        assert http.get(f"/billingos/checkout/{session_id}", headers=me).get_json()["subscription"]
        assert http.get("/billingos/features/sso", headers=me).get_json()["has_access"] is True
        assert http.post("/billingos/portal", headers=me).status_code == 201
        assert http.get("/billingos/state", headers=me).get_json()["customer"]["external_id"] == "flask_user"
        refused = http.post(f"/billingos/checkout/{session_id}/confirm-free", headers=me)
        assert refused.status_code == 400  # a paid checkout is not confirmed as free
        assert refused.get_json()["detail"]["error"] == "invalid_request"
    assert len(fake.requests_to(MINT)) == 1


def test_flask_free_plan_and_errors(fake: FakeBillingOS, url: str) -> None:
    with BillingOS(fake.secret_key, api_url=url, retry_policy=NO_SLEEP) as billing:
        http = flask_app(billing).test_client()
        assert http.get("/billingos/state").status_code == 401
        assert http.post("/billingos/checkout", json={"price_id": "x"}).status_code == 401
        me = {"X-User": "flask_free"}
        assert http.post("/billingos/portal", headers=me).status_code == 404
        assert http.post("/billingos/checkout", data="nope", headers=me).status_code == 400
        price_id = http.get("/billingos/products", headers=me).get_json()["products"][0]["prices"][0]["id"]
        started = http.post("/billingos/checkout", json={"price_id": price_id}, headers=me).get_json()
        assert started["client_secret"] == ""
        confirmed = http.post(f"/billingos/checkout/{started['id']}/confirm-free", headers=me)
        assert confirmed.status_code == 200
        assert confirmed.get_json()["status"] == "active"


def test_helpers_called_directly_take_an_int_id(fake: FakeBillingOS, url: str) -> None:
    with BillingOS(fake.secret_key, api_url=url, retry_policy=NO_SLEEP) as billing:
        body, status, headers = products_response(billing, 42, plan_ids=" , ")  # blank: every plan
        assert (status, headers) == (200, {"Cache-Control": "no-store"})
        assert [p["name"] for p in body["products"]] == ["Pro"]
        body, status, _ = checkout_response(billing, "", {"price_id": "x"})
        assert status == 401
