"""The one request path: headers, JSON bodies, per-call options, the client lifecycle and the pool."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import httpx2
import pytest
import respx

from billingos import AsyncBillingOS, BillingOSError, RetryPolicy, ValidationError, __version__

from ._factories import BASE_URL, SECRET, customer_json, error_body

PATH = "/customers/c1"


def _customer_route(router: respx.MockRouter) -> respx.Route:
    return router.get(PATH).respond(200, json=customer_json(id="c1"))


def _create_route(router: respx.MockRouter) -> respx.Route:
    return router.post("/customers").respond(201, json=customer_json())


# -- headers -------------------------------------------------------------------------------------


async def test_every_request_carries_auth_user_agent_accept_and_a_request_id(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _customer_route(router)
    await billing.customers.get("c1")
    headers = route.calls.last.request.headers
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["User-Agent"].startswith(
        f"billingos-python/{__version__} httpx2/{httpx2.__version__} python/"
    )
    assert headers["Accept"] == "application/json"
    assert re.fullmatch(r"req_[0-9a-f]{24}", headers["X-Request-Id"])


async def test_a_request_without_a_body_has_no_content_type(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _customer_route(router)
    await billing.customers.get("c1")
    request = route.calls.last.request
    assert "Content-Type" not in request.headers
    assert request.content == b""


async def test_each_call_gets_its_own_request_id(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = _customer_route(router)
    await billing.customers.get("c1")
    await billing.customers.get("c1")
    assert len({call.request.headers["X-Request-Id"] for call in route.calls}) == 2


# -- JSON bodies ---------------------------------------------------------------------------------


async def test_json_body_omits_none_fields(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = _create_route(router)
    await billing.customers.create("ada@example.com", name=None, metadata=None)
    request = route.calls.last.request
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"email": "ada@example.com"}


async def test_json_body_keeps_none_inside_metadata(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _create_route(router)
    await billing.customers.create("ada@example.com", metadata={"plan": None})
    assert json.loads(route.calls.last.request.content)["metadata"] == {"plan": None}


async def test_json_body_is_utf8_with_non_ascii_kept_verbatim(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _create_route(router)
    await billing.customers.create("ada@example.com", name="Zoë 東京 🚀")
    content = route.calls.last.request.content
    assert "Zoë 東京 🚀".encode() in content
    assert b"\\u" not in content
    assert json.loads(content.decode("utf-8"))["name"] == "Zoë 東京 🚀"


async def test_body_just_under_100_kb_is_sent(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = _create_route(router)
    await billing.customers.create("ada@example.com", metadata={"blob": "x" * 99_000})
    assert route.call_count == 1
    assert len(route.calls.last.request.content) <= 100_000


async def test_body_over_100_kb_is_refused_before_sending(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _create_route(router)
    with pytest.raises(ValidationError) as info:
        await billing.customers.create("ada@example.com", metadata={"blob": "x" * 100_001})
    assert info.value.status_code is None
    assert not route.called


async def test_body_limit_counts_utf8_bytes_not_characters(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _create_route(router)
    with pytest.raises(ValidationError):
        await billing.customers.create("ada@example.com", metadata={"blob": "é" * 50_001})  # 100_002 bytes
    assert not route.called


@pytest.mark.parametrize(
    "metadata",
    [
        {"tags": {"a", "b"}},
        {"score": float("nan")},
        {"score": float("inf")},
        {"when": object()},
        {"raw": b"bytes"},
    ],
    ids=["set", "nan", "inf", "object", "bytes"],
)
async def test_non_json_metadata_is_refused_before_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, metadata: dict[str, Any]
) -> None:
    route = _create_route(router)
    with pytest.raises(ValidationError) as info:
        await billing.customers.create("ada@example.com", metadata=metadata)
    assert info.value.code == "invalid_argument"
    assert not route.called


# -- extra_headers -------------------------------------------------------------------------------


async def test_extra_headers_are_sent(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = _customer_route(router)
    await billing.customers.get("c1", extra_headers={"X-Trace": "abc", "X-Tenant": "t1"})
    headers = route.calls.last.request.headers
    assert headers["X-Trace"] == "abc"
    assert headers["X-Tenant"] == "t1"
    assert headers["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("name", ["X-Request-Id", "x-request-id", "X-REQUEST-ID"])
async def test_extra_request_id_header_replaces_the_generated_one(
    billing: AsyncBillingOS, router: respx.MockRouter, name: str
) -> None:
    route = router.get(PATH).respond(404, text="")
    with pytest.raises(BillingOSError) as info:
        await billing.customers.get("c1", extra_headers={name: "req_mine"})
    assert route.calls.last.request.headers.get_list("X-Request-Id") == ["req_mine"]
    assert info.value.request_id == "req_mine"


@pytest.mark.parametrize("name", ["User-Agent", "user-agent"])
async def test_extra_header_overrides_an_sdk_header_instead_of_duplicating_it(
    billing: AsyncBillingOS, router: respx.MockRouter, name: str
) -> None:
    route = _customer_route(router)
    await billing.customers.get("c1", extra_headers={name: "my-app/1.0"})
    assert route.calls.last.request.headers.get_list("User-Agent") == ["my-app/1.0"]


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
async def test_extra_headers_cannot_set_authorization(
    billing: AsyncBillingOS, router: respx.MockRouter, name: str
) -> None:
    route = _customer_route(router)
    with pytest.raises(ValidationError) as info:
        await billing.customers.get("c1", extra_headers={name: "Bearer sk_test_other"})
    assert "sk_test_other" not in str(info.value)
    assert not route.called


@pytest.mark.parametrize(
    "headers",
    [{"X-Trace": "a\r\nX-Injected: 1"}, {"X-Trace": "a\nb"}, {"X-Trace": "a\rb"}, {"X-Bad\r\nName": "v"}],
    ids=["crlf-value", "lf-value", "cr-value", "crlf-name"],
)
async def test_extra_headers_with_cr_or_lf_are_refused(
    billing: AsyncBillingOS, router: respx.MockRouter, headers: dict[str, str]
) -> None:
    route = _customer_route(router)
    with pytest.raises(ValidationError):
        await billing.customers.get("c1", extra_headers=headers)
    assert not route.called


async def test_extra_headers_must_be_strings(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = _customer_route(router)
    with pytest.raises(ValidationError):
        await billing.customers.get("c1", extra_headers={"X-Count": 3})  # type: ignore[dict-item]
    assert not route.called


# -- per-call timeout ----------------------------------------------------------------------------


async def test_default_timeout_reaches_httpx_with_a_5_second_connect_phase(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _customer_route(router)
    await billing.customers.get("c1")
    assert route.calls.last.request.extensions["timeout"] == {
        "connect": 5.0,
        "read": 30.0,
        "write": 30.0,
        "pool": 30.0,
    }


@pytest.mark.parametrize(
    ("per_call", "expected"),
    [
        (2.5, {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}),
        (12, {"connect": 5.0, "read": 12.0, "write": 12.0, "pool": 12.0}),
        (
            httpx2.Timeout(7.0, connect=1.0, pool=2.0),
            {"connect": 1.0, "read": 7.0, "write": 7.0, "pool": 2.0},
        ),
    ],
    ids=["float-below-5", "int-above-5", "httpx-timeout"],
)
async def test_per_call_timeout_reaches_httpx(
    billing: AsyncBillingOS, router: respx.MockRouter, per_call: Any, expected: dict[str, float]
) -> None:
    route = _customer_route(router)
    await billing.customers.get("c1", timeout=per_call)
    assert route.calls.last.request.extensions["timeout"] == expected


async def test_per_call_timeout_none_means_the_clients(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = _customer_route(router)
    await billing.with_options(timeout=9).customers.get("c1", timeout=None)
    assert route.calls.last.request.extensions["timeout"]["read"] == 9.0


@pytest.mark.parametrize("per_call", [0, -1, float("nan"), float("inf"), True, "5"])
async def test_invalid_per_call_timeout_is_refused_before_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, per_call: Any
) -> None:
    route = _customer_route(router)
    with pytest.raises(ValidationError):
        await billing.customers.get("c1", timeout=per_call)
    assert not route.called


@pytest.mark.parametrize("max_retries", [-1, True, 1.5, "2"])
async def test_invalid_per_call_max_retries_is_refused_before_sending(
    billing: AsyncBillingOS, router: respx.MockRouter, max_retries: Any
) -> None:
    route = _customer_route(router)
    with pytest.raises(ValidationError):
        await billing.customers.get("c1", max_retries=max_retries)
    assert not route.called


# -- lifecycle -----------------------------------------------------------------------------------


async def test_a_closed_client_refuses_calls_and_sends_nothing(router: respx.MockRouter) -> None:
    route = _customer_route(router)
    billing = AsyncBillingOS(SECRET, api_url=BASE_URL)
    await billing.aclose()
    assert billing.is_closed
    with pytest.raises(BillingOSError) as info:
        await billing.customers.get("c1")
    assert info.value.code == "client_closed"
    assert info.value.status_code is None
    assert not route.called


async def test_leaving_async_with_closes_the_client(router: respx.MockRouter) -> None:
    async with AsyncBillingOS(SECRET, api_url=BASE_URL) as billing:
        pass
    assert billing.is_closed


async def test_aclose_is_idempotent() -> None:
    billing = AsyncBillingOS(SECRET, api_url=BASE_URL)
    await billing.aclose()
    await billing.aclose()
    assert billing.is_closed


async def test_closing_the_client_during_a_retry_wait_ends_the_call_with_client_closed(
    router: respx.MockRouter,
) -> None:
    route = router.get(PATH).mock(side_effect=[httpx2.Response(503, json=error_body(503, "SYS_X", "x"))] * 3)
    in_sleep = anyio.Event()
    release = anyio.Event()

    async def sleep(_: float) -> None:
        in_sleep.set()
        await release.wait()

    billing = AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=RetryPolicy(sleep=sleep))
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await billing.customers.get("c1")
        except Exception as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await in_sleep.wait()
        await billing.aclose()
        release.set()
    assert len(outcome) == 1
    assert isinstance(outcome[0], BillingOSError), repr(outcome[0])
    assert outcome[0].code == "client_closed"
    assert route.call_count == 1


async def test_with_options_shares_the_same_httpx_client(billing: AsyncBillingOS) -> None:
    clone = billing.with_options(timeout=3, max_retries=0)
    assert clone._requester.transport is billing._requester.transport  # one pool, built once for both
    assert clone.timeout.read == 3.0
    assert clone.max_retries == 0
    assert billing.timeout.read == 30.0
    assert billing.max_retries == 3


async def test_closing_the_original_closes_its_with_options_copy(router: respx.MockRouter) -> None:
    route = _customer_route(router)
    billing = AsyncBillingOS(SECRET, api_url=BASE_URL)
    clone = billing.with_options(max_retries=0)
    backend = await billing._requester.transport.started()
    await billing.aclose()
    assert clone.is_closed
    assert backend.client.is_closed  # type: ignore[attr-defined]
    with pytest.raises(BillingOSError) as info:
        await clone.customers.get("c1")
    assert info.value.code == "client_closed"
    assert not route.called


async def test_closing_a_with_options_copy_closes_the_original(router: respx.MockRouter) -> None:
    billing = AsyncBillingOS(SECRET, api_url=BASE_URL)
    await billing.with_options(timeout=1).aclose()
    assert billing.is_closed


async def test_a_callers_http_client_is_used_and_not_closed() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=customer_json(id="c1"))

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        async with AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=http) as billing:
            await billing.customers.get("c1")
        assert billing.is_closed
        assert not http.is_closed
        assert len(seen) == 1
        assert seen[0].url == httpx2.URL(f"{BASE_URL}{PATH}")
        assert seen[0].headers["Authorization"] == f"Bearer {SECRET}"
        # still usable by its owner
        assert (await http.get(f"{BASE_URL}{PATH}")).status_code == 200


async def test_the_sdk_timeout_applies_to_a_callers_http_client() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=customer_json(id="c1"))

    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(handler), timeout=1.0) as http,
        AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=http, timeout=20) as billing,
    ):
        await billing.customers.get("c1")
    assert seen[0].extensions["timeout"] == {"connect": 5.0, "read": 20.0, "write": 20.0, "pool": 20.0}


@pytest.mark.parametrize("bad", [object(), "http://localhost", None.__class__], ids=["object", "str", "type"])
def test_a_non_async_http_client_is_refused(bad: Any) -> None:
    with pytest.raises(ValidationError):
        AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=bad)


def test_a_sync_httpx_client_is_refused() -> None:
    with httpx2.Client() as sync_client, pytest.raises(ValidationError) as info:
        AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=sync_client)  # type: ignore[arg-type]
    assert "AsyncClient" in str(info.value)
