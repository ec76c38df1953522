"""TrackUsage + BillingOSMiddleware: usage is recorded after a 2xx response has been sent, never otherwise.

Most tests use a spy recorder (``TrackUsage(recorder=...)``) to see exactly what is recorded and when; the
last ones go through the real recorder the lifespan opens, to the embedded BillingOS.
"""

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from billingos.integrations.fastapi import (
    BillingOSMiddleware,
    PendingUsage,
    RequireEntitlement,
    TrackUsage,
    billingos_lifespan,
)
from billingos.testing import FakeBillingOS

from .conftest import PRO, QUOTA, ClientFactory, serve


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


class SpyRecorder:
    """Stands in for UsageRecorder: remembers what was recorded."""

    def __init__(self, *, fail: bool = False, full: bool = False) -> None:
        self.events: list[tuple[str, str, float]] = []
        self.fail = fail
        self.full = full

    def record(self, customer_id: str, feature_key: str, quantity: float = 1) -> bool:
        if self.fail:
            raise RuntimeError("recorder closed")
        if self.full:
            return False
        self.events.append((customer_id, feature_key, quantity))
        return True


def spy_app(spy: SpyRecorder, *, middleware: bool = True) -> FastAPI:
    app = FastAPI()
    if middleware:
        app.add_middleware(BillingOSMiddleware)
    track = TrackUsage("api_calls", customer_id=user_from_header, recorder=spy)  # type: ignore[arg-type]
    Usage = Annotated[PendingUsage, Depends(track)]

    @app.get("/ok")
    async def ok(usage: Usage) -> dict[str, int]:
        return {"recorded_before_response": len(spy.events)}

    @app.post("/created", status_code=201, dependencies=[Depends(track)])
    async def created() -> dict[str, bool]:
        return {"created": True}

    @app.get("/http-error", dependencies=[Depends(track)])
    async def http_error() -> None:
        raise HTTPException(400, "bad input")

    @app.get("/returned-error", dependencies=[Depends(track)])
    async def returned_error() -> JSONResponse:
        return JSONResponse({"error": "conflict"}, status_code=409)

    @app.get("/crash", dependencies=[Depends(track)])
    async def crash() -> None:
        raise RuntimeError("bug")

    @app.get("/cancelled")
    async def cancelled(usage: Usage) -> dict[str, bool]:
        usage.cancel()
        return {"ok": True}

    @app.get("/tokens")
    async def tokens(usage: Usage, n: int) -> dict[str, int]:
        usage.quantity = n
        return {"tokens": n}

    @app.get("/stream", dependencies=[Depends(track)])
    async def stream(fail: bool = False) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"one,"
            if fail:
                raise RuntimeError("stream broke")
            yield b"two"

        return StreamingResponse(chunks())

    return app


H = {"x-user": PRO}


async def test_recorded_after_a_2xx_response_not_before() -> None:
    spy = SpyRecorder()
    async with serve(spy_app(spy), lifespan=False) as http:
        response = await http.get("/ok", headers=H)
    assert response.json() == {"recorded_before_response": 0}
    assert spy.events == [(PRO, "api_calls", 1)]


async def test_any_2xx_counts() -> None:
    spy = SpyRecorder()
    async with serve(spy_app(spy), lifespan=False) as http:
        assert (await http.post("/created", headers=H)).status_code == 201
        assert (await http.get("/stream", headers=H)).text == "one,two"
    assert spy.events == [(PRO, "api_calls", 1)] * 2


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/http-error", 400),  # HTTPException
        ("/returned-error", 409),  # an error response the handler built itself
        ("/crash", 500),  # an unhandled exception
    ],
)
async def test_not_recorded_for_an_error_response(path: str, status: int) -> None:
    spy = SpyRecorder()
    async with serve(spy_app(spy), lifespan=False, raise_app_exceptions=False) as http:
        response = await http.get(path, headers=H)
    assert response.status_code == status
    assert spy.events == []


async def test_not_recorded_when_a_streamed_2xx_breaks_off() -> None:
    spy = SpyRecorder()
    async with serve(spy_app(spy), lifespan=False, raise_app_exceptions=False) as http:
        response = await http.get("/stream", params={"fail": True}, headers=H)
    assert (response.status_code, response.text) == (200, "one,")  # the status had gone out
    assert spy.events == []


async def test_the_handler_may_cancel_or_change_the_quantity() -> None:
    spy = SpyRecorder()
    async with serve(spy_app(spy), lifespan=False) as http:
        await http.get("/cancelled", headers=H)
        await http.get("/tokens", params={"n": 7}, headers=H)
    assert spy.events == [(PRO, "api_calls", 7)]


async def test_no_customer_is_401_and_nothing_is_recorded() -> None:
    spy = SpyRecorder()
    async with serve(spy_app(spy), lifespan=False) as http:
        response = await http.get("/ok")
    assert response.status_code == 401
    assert spy.events == []


async def test_without_the_middleware_it_says_so() -> None:
    async with serve(spy_app(SpyRecorder(), middleware=False), lifespan=False) as http:
        with pytest.raises(RuntimeError, match=r"add_middleware\(.*BillingOSMiddleware\)"):
            await http.get("/ok", headers=H)


@pytest.mark.parametrize("spy", [SpyRecorder(fail=True), SpyRecorder(full=True)], ids=["raises", "full"])
async def test_a_recording_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture, spy: SpyRecorder
) -> None:
    caplog.set_level(logging.WARNING, logger="billingos.integrations")
    async with serve(spy_app(spy), lifespan=False) as http:
        response = await http.get("/ok", headers=H)
    assert response.status_code == 200
    assert [r.name for r in caplog.records] == ["billingos.integrations"]
    assert "api_calls" in caplog.records[0].getMessage()


def test_quantity_is_checked_when_built() -> None:
    for bad in (0, -1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="quantity"):
            TrackUsage("api_calls", customer_id=user_from_header, quantity=bad)  # type: ignore[arg-type]


# -- through the real recorder, to the embedded BillingOS -----------------------------------------------


def recorder_app(make_client: ClientFactory, **lifespan_options: Any) -> FastAPI:
    app = FastAPI(lifespan=billingos_lifespan(make_client, **lifespan_options))
    app.add_middleware(BillingOSMiddleware)

    @app.get(
        "/search",
        dependencies=[
            Depends(RequireEntitlement("api_calls", customer_id=user_from_header)),
            Depends(TrackUsage("api_calls", customer_id=user_from_header)),
        ],
    )
    async def search(fail: bool = False) -> dict[str, bool]:
        if fail:
            raise HTTPException(400, "no")
        return {"ok": True}

    return app


async def test_usage_reaches_billingos_through_the_recorder(
    make_client: ClientFactory, fake: FakeBillingOS
) -> None:
    app = recorder_app(make_client)
    async with serve(app) as http:
        for fail in (False, True, False):
            await http.get("/search", params={"fail": fail}, headers=H)
        await app.state.billingos.recorder.flush()
        assert fake.usage_of(PRO, "api_calls") == 2
    assert len(fake.requests_to("POST /v1/usage/track")) <= 2  # coalesced within a flush window


async def test_pending_usage_is_drained_at_shutdown(make_client: ClientFactory, fake: FakeBillingOS) -> None:
    app = recorder_app(make_client, recorder={"flush_interval": 3600})  # nothing sent before shutdown
    async with serve(app) as http:
        for _ in range(QUOTA):
            assert (await http.get("/search", headers=H)).status_code == 200
        assert fake.usage_of(PRO, "api_calls") == 0
    assert fake.usage_of(PRO, "api_calls") == QUOTA
    assert len(fake.requests_to("POST /v1/usage/track")) == 1  # one coalesced call


async def test_without_a_recorder_track_usage_says_so(make_client: ClientFactory) -> None:
    app = recorder_app(make_client, recorder=False)
    async with serve(app) as http:
        with pytest.raises(RuntimeError, match="recorder=False"):
            await http.get("/search", headers=H)
