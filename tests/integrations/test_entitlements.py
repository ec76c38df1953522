"""RequireEntitlement on a real FastAPI app, against the embedded BillingOS: allowed, denied, quota reached
mid-stream, and BillingOS down under each ``on_unavailable`` policy."""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, Request

from billingos import EntitlementCache, ValidationError
from billingos.integrations.fastapi import (
    BillingOSMiddleware,
    RequireEntitlement,
    TrackUsage,
    billingos_lifespan,
)
from billingos.testing import FakeBillingOS, Fault

from .conftest import FREE, GHOST, PRO, QUOTA, ClientFactory, serve

CHECK = "GET /v1/usage/check"


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


def build_app(
    make_client: ClientFactory,
    *,
    cache: EntitlementCache | None = None,
    recorder: bool = False,
    customer_id: Any = user_from_header,
) -> FastAPI:
    app = FastAPI(
        lifespan=billingos_lifespan(lambda: make_client(entitlement_cache=cache), recorder=recorder)
    )
    require_api = RequireEntitlement("api_calls", customer_id=customer_id)

    @app.get("/search")
    async def search(ent: Annotated[Any, Depends(require_api)]) -> dict[str, Any]:
        return {
            "feature_key": ent.feature_key,
            "remaining": ent.remaining,
            "reason": None if ent.reason is None else str(ent.reason),
            "stale": getattr(ent, "stale", None),
        }

    @app.get("/sso", dependencies=[Depends(RequireEntitlement("sso", customer_id=customer_id))])
    async def sso() -> dict[str, bool]:
        return {"ok": True}

    return app


async def test_allowed_request_gets_the_entitlement(make_client: ClientFactory) -> None:
    async with serve(build_app(make_client)) as http:
        response = await http.get("/search", headers={"x-user": PRO})
    assert response.status_code == 200
    body = response.json()
    assert (body["feature_key"], body["remaining"], body["reason"]) == ("api_calls", QUOTA, None)
    assert not body["stale"]


@pytest.mark.parametrize(
    ("user", "reason"), [(FREE, "no_active_subscription"), (GHOST, "customer_not_found")]
)
async def test_denied_is_403_with_feature_key_and_reason(
    make_client: ClientFactory, user: str, reason: str
) -> None:
    async with serve(build_app(make_client)) as http:
        response = await http.get("/search", headers={"x-user": user})
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail["error"] == "entitlement_denied"
    assert detail["feature_key"] == "api_calls"
    assert detail["reason"] == reason
    assert reason in detail["message"]


async def test_a_flag_gate_as_a_route_dependency(make_client: ClientFactory) -> None:
    async with serve(build_app(make_client)) as http:
        allowed = await http.get("/sso", headers={"x-user": PRO})
        denied = await http.get("/sso", headers={"x-user": FREE})
    assert (allowed.status_code, allowed.json()) == (200, {"ok": True})
    assert denied.status_code == 403
    assert denied.json()["detail"]["feature_key"] == "sso"


@pytest.mark.parametrize("header", [None, "", "  "])
async def test_no_customer_is_401_and_nothing_is_asked(
    make_client: ClientFactory, fake: FakeBillingOS, header: str | None
) -> None:
    async with serve(build_app(make_client)) as http:
        response = await http.get("/search", headers={} if header is None else {"x-user": header})
    assert response.status_code == 401
    assert response.json()["detail"]["error"] == "unauthenticated"
    assert fake.requests_to(CHECK) == []


async def _async_user(request: Request) -> str | None:
    return request.headers.get("x-user")


def _annotated_user(req: Request) -> str | None:
    return req.headers.get("x-user")


def _header_dependency(x_user: Annotated[str | None, Header()] = None) -> str | None:
    return x_user


@pytest.mark.parametrize(
    "customer_id",
    [
        pytest.param(lambda request: request.headers.get("x-user"), id="sync-lambda"),
        pytest.param(_async_user, id="async-function"),
        pytest.param(_annotated_user, id="Request-annotated"),
        pytest.param(_header_dependency, id="fastapi-dependency"),
    ],
)
async def test_customer_id_callable_forms(make_client: ClientFactory, customer_id: Any) -> None:
    async with serve(build_app(make_client, customer_id=customer_id)) as http:
        allowed = await http.get("/search", headers={"x-user": PRO})
        denied = await http.get("/search", headers={"x-user": FREE})
    assert (allowed.status_code, denied.status_code) == (200, 403)


async def test_an_int_customer_id_is_converted(make_client: ClientFactory, fake: FakeBillingOS) -> None:
    fake.add_customer("42")
    async with serve(build_app(make_client, customer_id=lambda request: 42)) as http:
        response = await http.get("/search")
    assert response.status_code == 403  # a customer, with no plan
    assert [r.query["customer_id"] for r in fake.requests_to(CHECK)] == ["42"]


async def test_gates_sharing_a_resolver_call_it_once_per_request(
    make_client: ClientFactory,
) -> None:
    calls: list[str | None] = []

    def user(request: Request) -> str | None:
        calls.append(request.headers.get("x-user"))
        return request.headers.get("x-user")

    class Spy:
        def record(self, customer_id: str, feature_key: str, quantity: float = 1) -> None:
            pass

    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False))
    app.add_middleware(BillingOSMiddleware)

    @app.get(
        "/both",
        dependencies=[
            Depends(RequireEntitlement("api_calls", customer_id=user)),
            Depends(RequireEntitlement("sso", customer_id=user)),
            Depends(TrackUsage("api_calls", customer_id=user, recorder=Spy())),  # type: ignore[arg-type]
        ],
    )
    async def both() -> dict[str, bool]:
        return {"ok": True}

    async with serve(app) as http:
        assert (await http.get("/both", headers={"x-user": PRO})).status_code == 200
    assert calls == [PRO]


async def test_explicit_client_needs_no_lifespan(make_client: ClientFactory) -> None:
    billing = make_client()
    app = FastAPI()

    @app.get("/search")
    async def search(
        ent: Annotated[
            Any, Depends(RequireEntitlement("api_calls", customer_id=user_from_header, client=billing))
        ],
    ) -> dict[str, Any]:
        return {"remaining": ent.remaining}

    async with billing, serve(app, lifespan=False) as http:
        response = await http.get("/search", headers={"x-user": PRO})
    assert response.json() == {"remaining": QUOTA}


def test_feature_key_is_checked_when_the_gate_is_built() -> None:
    with pytest.raises(ValidationError, match="feature_key"):
        RequireEntitlement("", customer_id=user_from_header)
    with pytest.raises(TypeError, match="customer_id"):
        RequireEntitlement("api_calls", customer_id="user_pro")  # type: ignore[arg-type]


# -- quota reached mid-stream -------------------------------------------------------------------------


def metered_app(make_client: ClientFactory, cache: EntitlementCache | None) -> FastAPI:
    app = FastAPI(lifespan=billingos_lifespan(lambda: make_client(entitlement_cache=cache)))
    app.add_middleware(BillingOSMiddleware)

    @app.get(
        "/search",
        dependencies=[
            Depends(RequireEntitlement("api_calls", customer_id=user_from_header)),
            Depends(TrackUsage("api_calls", customer_id=user_from_header)),
        ],
    )
    async def search() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
async def test_quota_reached_mid_stream(
    make_client: ClientFactory, fake: FakeBillingOS, cached: bool
) -> None:
    """Requests succeed until the quota is used up (usage tracked by TrackUsage through the recorder,
    flushed after each request), then 403 quota_exceeded; the server counted exactly the quota."""
    cache = EntitlementCache(ttl=60) if cached else None
    app = metered_app(make_client, cache)
    statuses: list[int] = []
    async with serve(app) as http:
        recorder = app.state.billingos.recorder
        for _ in range(QUOTA + 2):
            response = await http.get("/search", headers={"x-user": PRO})
            statuses.append(response.status_code)
            await recorder.flush()
    assert statuses == [200] * QUOTA + [403, 403]
    assert response.json()["detail"]["reason"] == "quota_exceeded"
    assert response.json()["detail"]["remaining"] == 0
    assert fake.usage_of(PRO, "api_calls") == QUOTA
    if cached:  # the cache learnt from each track: the denials came from memory, not from a request
        assert len(fake.requests_to(CHECK)) < len(statuses)


# -- BillingOS down -----------------------------------------------------------------------------------

OUTAGES = [
    pytest.param(Fault.error(503), id="503"),
    pytest.param(Fault.reset(), id="connection-reset"),
]


@pytest.mark.parametrize("fault", OUTAGES)
@pytest.mark.parametrize("policy", [None, "raise"], ids=["no-cache", "on_unavailable=raise"])
async def test_outage_without_a_fallback_is_503_with_a_json_body(
    make_client: ClientFactory, fake: FakeBillingOS, fault: Fault, policy: Any
) -> None:
    cache = None if policy is None else EntitlementCache(on_unavailable=policy)
    fake.inject(CHECK, fault, times=None)
    async with serve(build_app(make_client, cache=cache)) as http:
        response = await http.get("/search", headers={"x-user": PRO})
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail["error"] == "billingos_unavailable"
    assert detail["feature_key"] == "api_calls"
    assert "unavailable" in detail["message"]


async def test_outage_with_on_unavailable_allow_lets_the_request_through(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    fake.inject(CHECK, Fault.error(503), times=None)
    app = build_app(make_client, cache=EntitlementCache(on_unavailable="allow"))
    async with serve(app) as http:
        response = await http.get("/search", headers={"x-user": PRO})
    assert response.status_code == 200
    assert response.json()["reason"] == "billingos_unavailable"


async def test_outage_with_on_unavailable_deny_is_403_billingos_unavailable(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    fake.inject(CHECK, Fault.error(503), times=None)
    app = build_app(make_client, cache=EntitlementCache(on_unavailable="deny"))
    async with serve(app) as http:
        response = await http.get("/search", headers={"x-user": PRO})
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert (detail["feature_key"], detail["reason"]) == ("api_calls", "billingos_unavailable")


async def test_rate_limited_is_503_with_retry_after(make_client: ClientFactory, fake: FakeBillingOS) -> None:
    fake.inject(CHECK, Fault.error(429, retry_after=120), times=None)  # above the 60 s the SDK waits
    async with serve(build_app(make_client)) as http:
        response = await http.get("/search", headers={"x-user": PRO})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "120"


async def test_a_rejected_secret_key_is_503_billingos_error_not_a_crash(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    app = FastAPI(lifespan=billingos_lifespan(lambda: make_client("sk_test_" + "0" * 48), recorder=False))

    @app.get("/search", dependencies=[Depends(RequireEntitlement("api_calls", customer_id=user_from_header))])
    async def search() -> dict[str, bool]:
        return {"ok": True}

    async with serve(app) as http:
        response = await http.get("/search", headers={"x-user": PRO})
    assert response.status_code == 503
    assert response.json()["detail"]["error"] == "billingos_error"


async def test_cache_false_asks_billingos_every_time(make_client: ClientFactory, fake: FakeBillingOS) -> None:
    app = FastAPI(
        lifespan=billingos_lifespan(lambda: make_client(entitlement_cache=EntitlementCache()), recorder=False)
    )
    cached = RequireEntitlement("sso", customer_id=user_from_header)
    fresh = RequireEntitlement("api_calls", customer_id=user_from_header, cache=False)

    @app.get("/both", dependencies=[Depends(cached), Depends(fresh)])
    async def both() -> dict[str, bool]:
        return {"ok": True}

    async with serve(app) as http:
        for _ in range(3):
            assert (await http.get("/both", headers={"x-user": PRO})).status_code == 200
    checked = [r.query["feature_key"] for r in fake.requests_to(CHECK)]
    assert (checked.count("sso"), checked.count("api_calls")) == (1, 3)


def test_the_gates_add_no_parameters_to_the_openapi_schema(make_client: ClientFactory) -> None:
    def empty() -> dict[str, str]:
        return {}

    app = build_app(make_client)
    app.add_middleware(BillingOSMiddleware)
    app.add_api_route(
        "/metered",
        empty,
        dependencies=[Depends(TrackUsage("api_calls", customer_id=user_from_header))],
    )
    app.add_api_route(
        "/by-header",
        empty,
        dependencies=[Depends(RequireEntitlement("sso", customer_id=_header_dependency))],
    )
    paths = app.openapi()["paths"]
    for path in ("/search", "/sso", "/metered"):
        assert paths[path]["get"].get("parameters", []) == [], path
    assert [p["name"] for p in paths["/by-header"]["get"]["parameters"]] == ["x-user"]
