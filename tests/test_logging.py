"""Logging: one line per attempt with what support needs, and never the key, ``Bearer`` or a body."""

from __future__ import annotations

import io
import logging
import re
import traceback
from collections.abc import Iterator

import httpx2
import pytest
import respx

import billingos._logs
from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    BillingOSError,
    NetworkError,
    ResponseDecodeError,
    ServerError,
)

from ._factories import BASE_URL, SECRET, customer_json, error_body

PATH = "/customers/c1"
BODY_MARKER = "zz-body-marker-zz"
FORBIDDEN = (SECRET, SECRET[len("sk_test_") : -4], "Bearer", BODY_MARKER)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # root: catch httpx/httpcore/asyncio records too
    caplog.set_level(logging.DEBUG, logger="billingos")
    return caplog


def _billingos_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "billingos" or r.name.startswith("billingos.")
    ]


def _assert_clean(text: str) -> None:
    for secret in FORBIDDEN:
        assert secret not in text, f"{secret!r} leaked into: {text!r}"


def _assert_exception_clean(exc: BaseException) -> None:
    _assert_clean(str(exc))
    _assert_clean(repr(exc))
    _assert_clean("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _assert_attempt_line(message: str, *, status: str, request_id: str, retry: int) -> None:
    assert "GET" in message
    assert PATH in message
    assert status in message
    assert request_id in message
    assert re.search(rf"retry[= ]{retry}\b", message), message


def _request_id(route: respx.Route) -> str:
    return route.calls.last.request.headers["X-Request-Id"]


async def test_a_success_logs_one_attempt_line(
    billing: AsyncBillingOS, router: respx.MockRouter, debug_logs: pytest.LogCaptureFixture
) -> None:
    route = router.get(PATH).respond(200, json=customer_json(id="c1", name=BODY_MARKER))
    await billing.customers.get("c1")
    (message,) = _billingos_messages(debug_logs)
    _assert_attempt_line(message, status="200", request_id=_request_id(route), retry=0)
    assert re.search(r"\d+(\.\d+)? ?ms", message)  # the duration
    _assert_clean(debug_logs.text)


async def test_a_retried_503_logs_each_attempt_and_the_retry(
    billing: AsyncBillingOS, router: respx.MockRouter, debug_logs: pytest.LogCaptureFixture
) -> None:
    route = router.get(PATH).mock(
        side_effect=[
            httpx2.Response(503, json=error_body(503, "SYS_UNAVAILABLE", BODY_MARKER)),
            httpx2.Response(200, json=customer_json(id="c1")),
        ]
    )
    await billing.customers.get("c1")
    request_id = _request_id(route)
    first, retry, second = _billingos_messages(debug_logs)
    _assert_attempt_line(first, status="503", request_id=request_id, retry=0)
    _assert_attempt_line(retry, status="ServerError", request_id=request_id, retry=1)
    _assert_attempt_line(second, status="200", request_id=request_id, retry=1)
    _assert_clean(debug_logs.text)


async def test_a_401_logs_the_status_and_leaks_nothing(
    billing: AsyncBillingOS, router: respx.MockRouter, debug_logs: pytest.LogCaptureFixture
) -> None:
    route = router.get(PATH).respond(401, json=error_body(401, "AUTH_INVALID_TOKEN", "Invalid API key"))
    with pytest.raises(AuthenticationError) as info:
        await billing.customers.get("c1")
    (message,) = _billingos_messages(debug_logs)
    _assert_attempt_line(message, status="401", request_id=_request_id(route), retry=0)
    _assert_clean(debug_logs.text)
    _assert_exception_clean(info.value)


async def test_a_network_error_logs_the_failure_and_leaks_nothing(
    billing: AsyncBillingOS, router: respx.MockRouter, debug_logs: pytest.LogCaptureFixture
) -> None:
    route = router.get(PATH).mock(side_effect=httpx2.ConnectError("connection refused"))
    with pytest.raises(NetworkError) as info:
        await billing.customers.get("c1", max_retries=0)
    (message,) = _billingos_messages(debug_logs)
    _assert_attempt_line(message, status="failed", request_id=_request_id(route), retry=0)
    assert "NetworkError" in message
    _assert_clean(debug_logs.text)
    _assert_exception_clean(info.value)


async def test_a_decode_error_leaks_nothing(
    billing: AsyncBillingOS, router: respx.MockRouter, debug_logs: pytest.LogCaptureFixture
) -> None:
    route = router.get(PATH).respond(200, text=f"<html>{BODY_MARKER}</html>")
    with pytest.raises(ResponseDecodeError) as info:
        await billing.customers.get("c1")
    (message,) = _billingos_messages(debug_logs)
    _assert_attempt_line(message, status="200", request_id=_request_id(route), retry=0)
    _assert_clean(debug_logs.text)
    _assert_exception_clean(info.value)


async def test_request_bodies_are_never_logged(
    billing: AsyncBillingOS, router: respx.MockRouter, debug_logs: pytest.LogCaptureFixture
) -> None:
    router.post("/customers").respond(201, json=customer_json())
    await billing.customers.create("ada@example.com", metadata={"note": BODY_MARKER})
    assert _billingos_messages(debug_logs)
    _assert_clean(debug_logs.text)


async def test_exhausted_retries_leak_nothing_in_the_exception_chain(
    billing: AsyncBillingOS, router: respx.MockRouter, debug_logs: pytest.LogCaptureFixture
) -> None:
    router.get(PATH).mock(
        side_effect=[
            httpx2.ReadError("reset"),
            httpx2.Response(503),
            httpx2.ReadTimeout("slow"),
            httpx2.Response(502),
        ]
    )
    with pytest.raises(BillingOSError) as info:
        await billing.customers.get("c1")
    assert isinstance(info.value, ServerError)
    assert len(_billingos_messages(debug_logs)) == 4 + 3  # four attempts, three retries
    _assert_clean(debug_logs.text)
    _assert_exception_clean(info.value)


async def test_nothing_is_logged_below_info(
    billing: AsyncBillingOS, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="billingos")
    router.get(PATH).respond(200, json=customer_json(id="c1"))
    await billing.customers.get("c1")
    assert _billingos_messages(caplog) == []


# -- BILLINGOS_LOG -------------------------------------------------------------------------------


@pytest.fixture
def fresh_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """``setup_from_env`` as if never run in this process; the logger restored afterwards."""
    logger = logging.getLogger("billingos")
    handlers, level = list(logger.handlers), logger.level
    monkeypatch.setattr(billingos._logs, "_configured", False)
    yield logger
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


def _new_handlers(logger: logging.Logger, before: list[logging.Handler]) -> list[logging.Handler]:
    return [h for h in logger.handlers if h not in before]


@pytest.mark.parametrize(
    ("value", "level"), [("debug", logging.DEBUG), ("info", logging.INFO), ("DEBUG", logging.DEBUG)]
)
def test_billingos_log_attaches_a_handler_at_that_level(
    fresh_logs: logging.Logger, monkeypatch: pytest.MonkeyPatch, value: str, level: int
) -> None:
    before = list(fresh_logs.handlers)
    monkeypatch.setenv("BILLINGOS_LOG", value)
    billingos._logs.setup_from_env()
    added = _new_handlers(fresh_logs, before)
    assert len(added) == 1
    assert fresh_logs.level == level


@pytest.mark.parametrize("value", [None, "", "verbose"])
def test_without_a_known_billingos_log_value_no_handler_is_attached(
    fresh_logs: logging.Logger, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    before, level = list(fresh_logs.handlers), fresh_logs.level
    if value is not None:
        monkeypatch.setenv("BILLINGOS_LOG", value)
    billingos._logs.setup_from_env()
    assert _new_handlers(fresh_logs, before) == []
    assert fresh_logs.level == level


def test_billingos_log_attaches_only_one_handler_however_often_it_runs(
    fresh_logs: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = list(fresh_logs.handlers)
    monkeypatch.setenv("BILLINGOS_LOG", "debug")
    for _ in range(3):
        billingos._logs.setup_from_env()
    assert len(_new_handlers(fresh_logs, before)) == 1


async def test_creating_a_client_with_billingos_log_set_writes_attempt_lines_to_the_handler(
    fresh_logs: logging.Logger, monkeypatch: pytest.MonkeyPatch, router: respx.MockRouter
) -> None:
    before = list(fresh_logs.handlers)
    monkeypatch.setenv("BILLINGOS_LOG", "debug")
    router.get(PATH).respond(200, json=customer_json(id="c1"))
    async with AsyncBillingOS(SECRET, api_url=BASE_URL) as billing:
        (handler,) = _new_handlers(fresh_logs, before)
        assert isinstance(handler, logging.StreamHandler)
        stream = io.StringIO()
        handler.setStream(stream)
        await billing.customers.get("c1")
    output = stream.getvalue()
    assert f"GET {PATH} -> 200" in output
    _assert_clean(output)
