"""Error mapping (CONTRACT §2): every status to its class, with every attribute the contract promises.

Calls are made with ``max_retries=0`` where a status would otherwise be retried, so each test sees
exactly one response.
"""

from __future__ import annotations

import email.utils
import pickle
import time
from typing import Any

import httpx2
import pytest
import respx

from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    AuthorizationError,
    BillingOSError,
    ConflictError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    ValidationError,
)

from ._factories import error_body, track_json

BODY_ID = "req_" + "b" * 24
HEADER_ID = "req_" + "d" * 24
PATH = "/customers/c1"

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


async def _error_for(billing: AsyncBillingOS, **options: Any) -> BillingOSError:
    with pytest.raises(BillingOSError) as info:
        await billing.customers.get("c1", max_retries=0, **options)
    return info.value


def _sent_request_id(route: respx.Route) -> str:
    return route.calls.last.request.headers["X-Request-Id"]


# -- the class table -----------------------------------------------------------------------------

TABLE = [
    (400, "VAL_INVALID_INPUT", ValidationError),
    (422, "VAL_INVALID_INPUT", ValidationError),
    (401, "AUTH_INVALID_TOKEN", AuthenticationError),
    (403, "AUTHZ_INSUFFICIENT_PERMISSIONS", AuthorizationError),
    (404, "RES_NOT_FOUND", NotFoundError),
    (409, "RES_CONFLICT", ConflictError),
    (429, "RATE_LIMIT_EXCEEDED", RateLimitError),
    (500, "SYS_INTERNAL_ERROR", ServerError),
    (502, "SYS_BAD_GATEWAY", ServerError),
    (503, "SYS_SERVICE_UNAVAILABLE", ServerError),
    (504, "SYS_GATEWAY_TIMEOUT", ServerError),
]


@pytest.mark.parametrize(("status", "code", "cls"), TABLE, ids=[str(row[0]) for row in TABLE])
async def test_error_status_maps_to_its_class_with_server_code_message_and_request_id(
    billing: AsyncBillingOS, router: respx.MockRouter, status: int, code: str, cls: type[BillingOSError]
) -> None:
    router.get(PATH).respond(
        status,
        json=error_body(status, code, "Something went wrong", request_id=BODY_ID),
        headers={"X-Extra": "1"},
    )
    exc = await _error_for(billing)
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.code == code
    # A 401 on /customers* also explains the dashboard-only admin routes (tests/test_customer_session.py).
    assert exc.message.split(" (GET /customers/")[0] == "Something went wrong"
    assert exc.request_id == BODY_ID
    assert exc.details == {}
    assert exc.headers["x-extra"] == "1"


async def test_validation_details_keep_field_errors(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    details = {"fieldErrors": {"expiresIn": ["expiresIn must not be less than 60"]}}
    router.get(PATH).respond(400, json=error_body(400, "VAL_INVALID_INPUT", "Validation failed", details))
    exc = await _error_for(billing)
    assert isinstance(exc, ValidationError)
    assert exc.details == details


async def test_request_id_comes_from_the_body_before_the_header(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(
        404,
        json=error_body(404, "RES_NOT_FOUND", "nope", request_id=BODY_ID),
        headers={"x-request-id": HEADER_ID},
    )
    assert (await _error_for(billing)).request_id == BODY_ID


async def test_request_id_falls_back_to_the_response_header(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    body = error_body(404, "RES_NOT_FOUND", "nope")
    del body["error"]["requestId"]
    router.get(PATH).respond(404, json=body, headers={"x-request-id": HEADER_ID})
    assert (await _error_for(billing)).request_id == HEADER_ID


async def test_request_id_falls_back_to_the_id_the_sdk_sent(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    body = error_body(404, "RES_NOT_FOUND", "nope")
    del body["error"]["requestId"]
    route = router.get(PATH).respond(404, json=body)
    exc = await _error_for(billing)
    assert exc.request_id == _sent_request_id(route)


async def test_quota_exceeded_is_a_quota_exceeded_error_and_a_validation_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/usage/track").respond(400, json=error_body(400, "VAL_INVALID_INPUT", "quota_exceeded"))
    with pytest.raises(QuotaExceededError) as info:
        await billing.usage.track("user_1", "api_calls", 5)
    assert isinstance(info.value, ValidationError)
    assert info.value.status_code == 400
    assert info.value.code == "VAL_INVALID_INPUT"


async def test_other_400_messages_are_plain_validation_errors(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/usage/track").respond(
        400, json=error_body(400, "VAL_INVALID_INPUT", "Feature is not a usage quota type")
    )
    with pytest.raises(ValidationError) as info:
        await billing.usage.track("user_1", "api_calls")
    assert type(info.value) is ValidationError


async def test_a_successful_track_is_not_an_error(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.post("/v1/usage/track").respond(201, json=track_json())
    assert (await billing.usage.track("user_1", "api_calls")).feature_key == "api_calls"


# -- 429 -----------------------------------------------------------------------------------------


async def test_rate_limit_error_reads_retry_after_seconds(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(
        429, json=error_body(429, "RATE_LIMIT_EXCEEDED", "Too many"), headers={"Retry-After": "7"}
    )
    exc = await _error_for(billing)
    assert isinstance(exc, RateLimitError)
    assert exc.retry_after == 7.0


async def test_rate_limit_error_reads_retry_after_http_date(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    when = email.utils.formatdate(time.time() + 40, usegmt=True)
    router.get(PATH).respond(
        429, json=error_body(429, "RATE_LIMIT_EXCEEDED", "Too many"), headers={"Retry-After": when}
    )
    exc = await _error_for(billing)
    assert isinstance(exc, RateLimitError)
    assert exc.retry_after is not None
    assert 35 < exc.retry_after <= 40


async def test_rate_limit_error_without_retry_after_has_none(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(429, json=error_body(429, "RATE_LIMIT_EXCEEDED", "Too many"))
    exc = await _error_for(billing)
    assert isinstance(exc, RateLimitError)
    assert exc.retry_after is None


# -- statuses outside the table ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 599])
async def test_server_error_keeps_the_real_status(
    billing: AsyncBillingOS, router: respx.MockRouter, status: int
) -> None:
    router.get(PATH).respond(status, json=error_body(status, "SYS_INTERNAL_ERROR", "boom"))
    exc = await _error_for(billing)
    assert type(exc) is ServerError
    assert exc.status_code == status


@pytest.mark.parametrize("status", [405, 408, 410, 418])
async def test_other_4xx_is_a_base_error_with_an_http_status_code(
    billing: AsyncBillingOS, router: respx.MockRouter, status: int
) -> None:
    router.get(PATH).respond(status)
    exc = await _error_for(billing)
    assert type(exc) is BillingOSError
    assert exc.status_code == status
    assert exc.code == f"http_{status}"


async def test_other_4xx_with_a_json_body_keeps_the_server_code(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(405, json=error_body(405, "METHOD_NOT_ALLOWED", "no"))
    exc = await _error_for(billing)
    assert type(exc) is BillingOSError
    assert exc.code == "METHOD_NOT_ALLOWED"
    assert exc.message == "no"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_an_error_not_a_success(
    billing: AsyncBillingOS, router: respx.MockRouter, status: int
) -> None:
    # e.g. api_url="http://..." behind a load balancer that redirects to https: follow_redirects is off,
    # so the request did not happen; a DELETE must not report success.
    route = router.delete(PATH).respond(
        status, headers={"Location": "https://elsewhere.example/customers/c1"}
    )
    with pytest.raises(BillingOSError) as info:
        await billing.customers.delete("c1")
    assert type(info.value) is BillingOSError
    assert info.value.status_code == status
    assert info.value.code == f"http_{status}"
    assert route.call_count == 1


# -- bodies that are not the error envelope ------------------------------------------------------


async def test_nginx_html_502_page_is_a_server_error(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get(PATH).respond(502, text=NGINX_502, headers={"Content-Type": "text/html"})
    exc = await _error_for(billing)
    assert type(exc) is ServerError
    assert exc.status_code == 502
    assert exc.code == "http_502"
    assert "502" in exc.message
    assert "<html>" not in exc.message
    assert exc.request_id == _sent_request_id(route)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ValidationError),
        (401, AuthenticationError),
        (403, AuthorizationError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimitError),
        (503, ServerError),
    ],
)
@pytest.mark.parametrize(
    "body", ["", "<html><body>Oops</body></html>", "not json {"], ids=["empty", "html", "text"]
)
async def test_error_without_a_json_body_maps_by_status(
    billing: AsyncBillingOS, router: respx.MockRouter, status: int, cls: type[BillingOSError], body: str
) -> None:
    router.get(PATH).respond(status, text=body)
    exc = await _error_for(billing)
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.code == f"http_{status}"
    assert exc.message


async def test_error_without_a_json_body_takes_the_request_id_from_the_header(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(503, text="", headers={"x-request-id": HEADER_ID})
    assert (await _error_for(billing)).request_id == HEADER_ID


async def test_nest_default_error_shape_keeps_its_message(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(
        404, json={"statusCode": 404, "message": "Cannot GET /customers/c1", "error": "Not Found"}
    )
    exc = await _error_for(billing)
    assert type(exc) is NotFoundError
    assert exc.message == "Cannot GET /customers/c1"


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        "a string",
        42,
        None,
        {"error": None},
        {"error": {"code": 5, "message": ["x"], "details": "no"}},
    ],
    ids=["list", "string", "number", "null", "null-error", "wrong-types"],
)
async def test_malformed_error_json_still_maps_by_status(
    billing: AsyncBillingOS, router: respx.MockRouter, body: Any
) -> None:
    router.get(PATH).respond(409, json=body)
    exc = await _error_for(billing)
    assert type(exc) is ConflictError
    assert exc.code == "http_409"
    assert isinstance(exc.message, str)
    assert exc.message
    assert exc.details == {}


# -- str, repr, pickle ---------------------------------------------------------------------------


async def test_str_shows_status_code_message_and_request_id(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(
        404, json=error_body(404, "RES_NOT_FOUND", "Customer not found", request_id=BODY_ID)
    )
    text = str(await _error_for(billing))
    for part in ("404", "RES_NOT_FOUND", "Customer not found", BODY_ID):
        assert part in text


async def test_str_of_a_network_error_shows_code_and_request_id(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get(PATH).mock(side_effect=httpx2.ConnectError("refused"))
    exc = await _error_for(billing)
    assert "network_error" in str(exc)
    assert _sent_request_id(route) in str(exc)


async def test_repr_names_the_class_and_key_attributes(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(409, json=error_body(409, "RES_CONFLICT", "taken", request_id=BODY_ID))
    text = repr(await _error_for(billing))
    assert text.startswith("ConflictError(")
    for part in ("409", "RES_CONFLICT", "taken", BODY_ID):
        assert part in text


def _attributes(exc: BillingOSError) -> dict[str, Any]:
    return {
        "type": type(exc),
        "message": exc.message,
        "status_code": exc.status_code,
        "code": exc.code,
        "details": dict(exc.details),
        "request_id": exc.request_id,
        "headers": list(exc.headers.multi_items()),
        "str": str(exc),
        "args": exc.args,
    }


async def test_server_error_survives_a_pickle_round_trip(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    details = {"fieldErrors": {"email": ["email must be an email"]}}
    router.get(PATH).respond(
        422,
        json=error_body(422, "VAL_INVALID_INPUT", "bad", details, request_id=BODY_ID),
        headers={"X-A": "b"},
    )
    exc = await _error_for(billing)
    clone = pickle.loads(pickle.dumps(exc))
    assert _attributes(clone) == _attributes(exc)
    assert clone.details == details


async def test_rate_limit_error_keeps_retry_after_through_pickle(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get(PATH).respond(
        429, json=error_body(429, "RATE_LIMIT_EXCEEDED", "slow"), headers={"Retry-After": "9"}
    )
    exc = await _error_for(billing)
    clone = pickle.loads(pickle.dumps(exc))
    assert isinstance(clone, RateLimitError)
    assert clone.retry_after == 9.0
    assert _attributes(clone) == _attributes(exc)


async def test_quota_exceeded_error_survives_a_pickle_round_trip(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.post("/v1/usage/track").respond(400, json=error_body(400, "VAL_INVALID_INPUT", "quota_exceeded"))
    with pytest.raises(QuotaExceededError) as info:
        await billing.usage.track("user_1", "api_calls")
    clone = pickle.loads(pickle.dumps(info.value))
    assert _attributes(clone) == _attributes(info.value)


def test_client_side_error_survives_a_pickle_round_trip() -> None:
    exc = ValidationError("name must not be empty.", code="invalid_argument")
    clone = pickle.loads(pickle.dumps(exc))
    assert _attributes(clone) == _attributes(exc)
    assert clone.status_code is None


# -- no response ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [httpx2.ConnectError, httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError, httpx2.ProxyError],
    ids=lambda e: e.__name__,
)
async def test_transport_failure_is_a_network_error(
    billing: AsyncBillingOS, router: respx.MockRouter, failure: type[httpx2.TransportError]
) -> None:
    route = router.get(PATH).mock(side_effect=failure("boom"))
    exc = await _error_for(billing)
    assert type(exc) is NetworkError
    assert exc.code == "network_error"
    assert exc.status_code is None
    assert exc.request_id == _sent_request_id(route)
    assert len(exc.headers) == 0
    assert isinstance(exc.__cause__, failure)


@pytest.mark.parametrize(
    "failure",
    [httpx2.ConnectTimeout, httpx2.ReadTimeout, httpx2.WriteTimeout, httpx2.PoolTimeout],
    ids=lambda e: e.__name__,
)
async def test_timeout_is_a_request_timeout_error_which_is_a_network_error(
    billing: AsyncBillingOS, router: respx.MockRouter, failure: type[httpx2.TimeoutException]
) -> None:
    route = router.get(PATH).mock(side_effect=failure("slow"))
    exc = await _error_for(billing)
    assert type(exc) is RequestTimeoutError
    assert isinstance(exc, NetworkError)
    assert exc.code == "timeout"
    assert exc.status_code is None
    assert exc.request_id == _sent_request_id(route)


# -- 2xx bodies that are not what the contract promises ------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        httpx2.Response(200, text="<html>maintenance</html>"),
        httpx2.Response(200, content=b"\xff\xfe\x00garbage"),
        httpx2.Response(200, json=[]),
        httpx2.Response(200, json={"id": None}),
        httpx2.Response(200),
    ],
    ids=["html", "not-utf8", "list", "null-required", "empty"],
)
async def test_2xx_with_an_unexpected_body_is_a_response_decode_error(
    billing: AsyncBillingOS, router: respx.MockRouter, response: httpx2.Response
) -> None:
    route = router.get(PATH).mock(return_value=response)
    with pytest.raises(ResponseDecodeError) as info:
        await billing.customers.get("c1")
    assert info.value.status_code == 200
    assert info.value.code == "decode_error"
    assert info.value.request_id == _sent_request_id(route)
    assert route.call_count == 1


# -- checks before sending -----------------------------------------------------------------------


async def test_client_side_validation_error_has_no_status_and_sends_nothing(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get(PATH).respond(200)
    with pytest.raises(ValidationError) as info:
        await billing.customers.get("")
    assert info.value.status_code is None
    assert info.value.code == "invalid_argument"
    assert not route.called
