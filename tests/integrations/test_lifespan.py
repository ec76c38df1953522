"""billingos_lifespan: the client (and recorder) open on startup, close on shutdown, and reach handlers.

httpx's ASGITransport does not run the ASGI lifespan; ``serve`` drives it with asgi-lifespan's
LifespanManager, as uvicorn would.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from billingos import AsyncBillingOS, BillingOSError, UsageRecorder
from billingos.integrations.fastapi import (
    STATE_KEY,
    BillingOSDep,
    BillingOSState,
    UsageRecorderDep,
    billingos_lifespan,
    get_billingos,
    get_usage_recorder,
)

from .conftest import PRO, ClientFactory, serve


async def test_opens_the_client_and_recorder_and_closes_them(make_client: ClientFactory) -> None:
    app = FastAPI(lifespan=billingos_lifespan(make_client))

    @app.get("/deps")
    async def deps(billing: BillingOSDep, recorder: UsageRecorderDep) -> dict[str, Any]:
        ent = await billing.entitlements.check(PRO, "sso")
        return {"closed": billing.is_closed, "recorder": type(recorder).__name__, "sso": ent.has_access}

    async with serve(app) as http:
        state = app.state.billingos
        assert isinstance(state, BillingOSState)
        assert isinstance(state.client, AsyncBillingOS)
        assert isinstance(state.recorder, UsageRecorder)
        response = await http.get("/deps")
        assert response.json() == {"closed": False, "recorder": "UsageRecorder", "sso": True}
        state.recorder.record(PRO, "api_calls")  # open: accepts events
    assert state.client.is_closed
    assert not hasattr(app.state, STATE_KEY)
    with pytest.raises(BillingOSError, match="closed"):
        state.recorder.record(PRO, "api_calls")


async def test_recorder_false_opens_none(make_client: ClientFactory) -> None:
    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False))
    async with serve(app):
        assert app.state.billingos.recorder is None


async def test_recorder_options_are_passed(make_client: ClientFactory) -> None:
    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder={"max_pending": 1, "on_full": "drop"}))
    async with serve(app):
        recorder = app.state.billingos.recorder
        assert recorder.record(PRO, "api_calls") is True
        assert recorder.record(PRO, "api_calls") is False  # full, dropped


async def test_a_client_instance_or_an_async_factory(make_client: ClientFactory) -> None:
    client = make_client()
    app = FastAPI(lifespan=billingos_lifespan(client, recorder=False))
    async with serve(app):
        assert app.state.billingos.client is client
    assert client.is_closed

    async def factory() -> AsyncBillingOS:
        return make_client()

    app = FastAPI(lifespan=billingos_lifespan(factory, recorder=False))
    async with serve(app):
        assert not app.state.billingos.client.is_closed


async def test_a_closed_client_fails_the_next_startup(make_client: ClientFactory) -> None:
    app = FastAPI(lifespan=billingos_lifespan(make_client(), recorder=False))
    async with serve(app):
        pass
    with pytest.raises(RuntimeError, match="pass a factory"):
        async with LifespanManager(app):
            pass


async def test_lifespan_state_false_keeps_it_on_app_state_only(make_client: ClientFactory) -> None:
    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False, lifespan_state=False))

    @app.get("/state")
    async def state(request: Request, billing: BillingOSDep) -> dict[str, Any]:
        return {"in_lifespan_state": STATE_KEY in request.scope.get("state", {}), "closed": billing.is_closed}

    async with serve(app) as http:
        assert (await http.get("/state")).json() == {"in_lifespan_state": False, "closed": False}


async def test_a_factory_returning_something_else_fails_startup() -> None:
    app = FastAPI(lifespan=billingos_lifespan(lambda: "not a client", recorder=False))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not an AsyncBillingOS"):
        async with LifespanManager(app):
            pass


async def test_wraps_your_own_lifespan(make_client: ClientFactory) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def mine(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        billing = app.state.billingos.client  # already open
        events.append(f"start closed={billing.is_closed}")
        yield {"db": "connection"}
        events.append(f"stop closed={billing.is_closed}")  # not yet closed

    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False, lifespan=mine))

    @app.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        return {"db": request.state.db, "billingos": isinstance(request.state.billingos, BillingOSState)}

    async with serve(app) as http:
        assert (await http.get("/state")).json() == {"db": "connection", "billingos": True}
        client = app.state.billingos.client
    assert events == ["start closed=False", "stop closed=False"]
    assert client.is_closed


async def test_entered_from_your_own_lifespan(make_client: ClientFactory) -> None:
    billing_lifespan = billingos_lifespan(make_client, recorder=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with billing_lifespan(app) as state:
            yield {**state, "db": "connection"}

    app = FastAPI(lifespan=lifespan)

    @app.get("/closed")
    async def closed(billing: BillingOSDep, request: Request) -> dict[str, Any]:
        return {"closed": billing.is_closed, "db": request.state.db}

    async with serve(app) as http:
        assert (await http.get("/closed")).json() == {"closed": False, "db": "connection"}


async def test_a_mounted_starlette_app_finds_it_in_the_lifespan_state(make_client: ClientFactory) -> None:
    async def environment(request: Request) -> JSONResponse:
        return JSONResponse({"environment": get_billingos(request).environment})

    app = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False))
    app.mount("/sub", Starlette(routes=[Route("/env", environment)]))  # request.app is the sub-app
    async with serve(app) as http:
        assert (await http.get("/sub/env")).json() == {"environment": "test"}


async def test_a_plain_starlette_app(make_client: ClientFactory) -> None:
    async def environment(request: Request) -> JSONResponse:
        recorder = get_usage_recorder(request)
        return JSONResponse(
            {"environment": get_billingos(request).environment, "recorder": type(recorder).__name__}
        )

    routes = [Mount("/api", routes=[Route("/env", environment)])]
    app = Starlette(routes=routes, lifespan=billingos_lifespan(make_client))
    async with serve(app) as http:
        assert (await http.get("/api/env")).json() == {"environment": "test", "recorder": "UsageRecorder"}


async def test_without_the_lifespan_the_dependencies_say_so(make_client: ClientFactory) -> None:
    app = FastAPI()

    @app.get("/client")
    async def client(billing: BillingOSDep) -> None: ...

    @app.get("/recorder")
    async def recorder(recorder: UsageRecorderDep) -> None: ...

    async with serve(app, lifespan=False) as http:
        for path in ("/client", "/recorder"):
            with pytest.raises(RuntimeError, match=r"lifespan=billingos_lifespan"):
                await http.get(path)

    with_no_recorder = FastAPI(lifespan=billingos_lifespan(make_client, recorder=False))
    with_no_recorder.add_api_route("/recorder", recorder)
    async with serve(with_no_recorder) as http:
        with pytest.raises(RuntimeError, match="recorder=False"):
            await http.get("/recorder")


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="recorder"):
        billingos_lifespan(AsyncBillingOS, recorder="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client"):
        billingos_lifespan("sk_test_x")  # type: ignore[arg-type]
