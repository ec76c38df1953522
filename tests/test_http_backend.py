"""``http_backend="aiohttp"``: the SDK's ``httpx.AsyncClient`` over aiohttp (``httpx-aiohttp``).

What must hold on this backend as on the default one: the same pool size, keep-alive expiry, timeouts
and TLS context; timeouts raise ``RequestTimeoutError`` and connection failures ``NetworkError``, with the
same "may the request have reached the server?" answer the retry policy relies on (a lost response to a
POST is not resent, a DELETE whose response was lost is resent once and its 404 counts as success); a
cancelled call strands no pooled connection; and the public calls work end to end against the embedded
server on a real socket (``fake.serve()``).

The pool checks read aiohttp's connector internals (``_acquired``: connections checked out of the pool),
which is fine for a regression test.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import random
import socket
import sys
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    BillingOS,
    NetworkError,
    NotFoundError,
    RequestTimeoutError,
    RetryPolicy,
    ValidationError,
)
from billingos._aiohttp_backend import AiohttpBackend, _environment_proxy, _httpx_error
from billingos._http import _network_error, _ssl_context
from billingos.testing import FakeBillingOS, Fault
from billingos.testing.__main__ import seed_sandbox

CHECK = "GET /v1/usage/check"
TRACK = "POST /v1/usage/track"
TOKENS = "POST /v1/session-tokens"
DELETE_CUSTOMER = "DELETE /customers/{id}"
STORM_SEED = 20261125


# --------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def fake() -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None, seed=STORM_SEED)
    seed_sandbox(fake)  # user_1 on Pro (api_calls 10 000, sso), user_2 on Starter
    return fake


@pytest.fixture
def url(fake: FakeBillingOS) -> Iterator[str]:
    with fake.serve() as url:
        yield url


@pytest.fixture
async def client(fake: FakeBillingOS, url: str, policy: RetryPolicy) -> AsyncIterator[AsyncBillingOS]:
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, http_backend="aiohttp"
    ) as billing:
        yield billing


def backend_of(billing: AsyncBillingOS) -> AiohttpBackend:
    transport = billing._requester.transport.client._transport
    assert isinstance(transport, AiohttpBackend)
    return transport


def acquired(billing: AsyncBillingOS) -> int:
    """Connections checked out of aiohttp's pool (held by a request) right now."""
    session = backend_of(billing).session
    if session is None:  # no request yet
        return 0
    assert session.connector is not None
    return len(session.connector._acquired)  # type: ignore[attr-defined]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def statuses(fake: FakeBillingOS, route: str) -> list[int | None]:
    return [r.status for r in fake.requests_to(route)]


# --------------------------------------------------------------------------------------------------------
# choosing the backend


def test_the_default_backend_is_stock_httpx() -> None:
    billing = AsyncBillingOS("sk_test_" + "a" * 32)
    assert billing._requester.settings.http_backend == "httpx"
    assert isinstance(billing._requester.transport.client._transport, httpx.AsyncHTTPTransport)


@pytest.mark.parametrize("cls", [AsyncBillingOS, BillingOS])
def test_an_unknown_backend_is_refused(cls: Any) -> None:
    with pytest.raises(ValidationError, match="http_backend must be 'httpx' or 'aiohttp'") as caught:
        cls("sk_test_" + "a" * 32, http_backend="requests")
    assert caught.value.code == "invalid_argument"


@pytest.mark.parametrize("cls", [AsyncBillingOS, BillingOS])
def test_a_missing_package_names_the_extra(cls: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "httpx_aiohttp" else real(name, *a)
    )
    with pytest.raises(ValidationError, match=r"pip install 'billingos\[aiohttp\]'"):
        cls("sk_test_" + "a" * 32, http_backend="aiohttp")  # the sync facade too: at construction


def test_a_broken_install_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "billingos._aiohttp_backend", None)  # import raises ImportError
    with pytest.raises(ValidationError, match=r"pip install 'billingos\[aiohttp\]'"):
        AsyncBillingOS("sk_test_" + "a" * 32, http_backend="aiohttp")


@pytest.mark.parametrize("cls", [AsyncBillingOS, BillingOS])
async def test_aiohttp_and_an_own_http_client_are_refused(cls: Any) -> None:
    async with httpx.AsyncClient() as own:
        with pytest.raises(ValidationError, match="cannot be combined with http_client"):
            cls("sk_test_" + "a" * 32, http_client=own, http_backend="aiohttp")
        assert not own.is_closed
        cls("sk_test_" + "a" * 32, http_client=own, http_backend="httpx")  # the default backend is fine


async def test_pool_size_keepalive_timeouts_and_tls_carry_over(fake: FakeBillingOS, url: str) -> None:
    limits = httpx.Limits(max_connections=7, keepalive_expiry=12.0)
    timeout = httpx.Timeout(9.0, connect=2.0, pool=3.0)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, limits=limits, timeout=timeout, http_backend="aiohttp"
    ) as billing:
        assert backend_of(billing).session is None  # built on the first request, on the running loop
        assert (await billing.check_entitlement("user_1", "api_calls")).has_access
        session = backend_of(billing).session
        assert session is not None
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert connector.limit == 7
        assert connector._keepalive_timeout == 12.0  # type: ignore[attr-defined]
        assert connector._ssl is _ssl_context()  # type: ignore[attr-defined]  # the SDK's verifying context
        assert billing._requester.transport.client.timeout == timeout
        assert not session.trust_env
        assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
    assert session.closed  # closing the SDK client closes the aiohttp session


def test_the_environment_proxy_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")
    proxy = _environment_proxy("https://api.billingos.dev")
    assert proxy is not None
    assert proxy.url == httpx.URL("http://proxy.internal:3128")
    assert _environment_proxy("http://127.0.0.1:8787") is None  # no HTTP_PROXY
    monkeypatch.setenv("NO_PROXY", "billingos.dev")
    assert _environment_proxy("https://api.billingos.dev") is None
    billing = AsyncBillingOS("sk_test_" + "a" * 32, http_backend="aiohttp")
    assert backend_of(billing)._inner.proxy is None


# --------------------------------------------------------------------------------------------------------
# end to end on a real socket


async def test_the_api_works_end_to_end(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    entitlement = await client.check_entitlement("user_1", "api_calls")
    assert entitlement.has_access
    assert entitlement.limit == 10_000
    record = await client.track_usage("user_1", "api_calls", 3)
    assert record.usage is not None
    assert record.usage.consumed_units == 3
    assert fake.usage_of("user_1", "api_calls") == 3
    customer = await client.customers.create("new@example.com", external_id="user_new", name="Né Ü")
    assert (await client.customers.get(customer.id)).name == "Né Ü"
    page = await client.customers.list(limit=2).page(1)
    assert page.total == 3
    assert len(page.data) == 2
    await client.customers.delete(customer.id)
    with pytest.raises(NotFoundError):
        await client.customers.get(customer.id)
    token = await client.create_session_token("user_1")
    assert fake.verify_session_token(token.session_token)["jti"] == token.token_id
    # one connection for all of it: keep-alive holds
    assert {r.headers.get("x-request-id") is not None for r in fake.requests} == {True}
    assert acquired(client) == 0


async def test_an_unknown_key_is_an_authentication_error(fake: FakeBillingOS, url: str) -> None:
    async with AsyncBillingOS("sk_test_" + "z" * 32, api_url=url, http_backend="aiohttp") as billing:
        with pytest.raises(AuthenticationError):
            await billing.check_entitlement("user_1", "api_calls")


def test_the_sync_facade_runs_on_aiohttp(fake: FakeBillingOS, url: str) -> None:
    with BillingOS(fake.secret_key, api_url=url, http_backend="aiohttp") as billing:
        assert billing.check_entitlement("user_1", "sso").has_access
        billing.track_usage("user_2", "api_calls", 2)
        core = billing._runner._state.core  # type: ignore[union-attr]
        assert isinstance(core._requester.transport.client._transport, AiohttpBackend)
    assert fake.usage_of("user_2", "api_calls") == 2


# --------------------------------------------------------------------------------------------------------
# timeouts and connection failures


async def test_a_read_timeout_is_a_request_timeout_error(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    fake.inject(CHECK, Fault.delay(1.0))
    with pytest.raises(RequestTimeoutError, match="read phase") as caught:
        await client.check_entitlement("user_1", "api_calls", timeout=0.2, max_retries=0)
    assert caught.value.code == "timeout"


async def test_waiting_too_long_for_the_pool_is_a_request_timeout_error(
    fake: FakeBillingOS, url: str
) -> None:
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, http_backend="aiohttp", limits=httpx.Limits(max_connections=1)
    ) as billing:
        fake.inject(CHECK, Fault.delay(1.0))
        slow = asyncio.create_task(billing.check_entitlement("user_1", "api_calls"))
        for _ in range(500):  # until the slow call holds the only connection
            if acquired(billing):
                break
            await asyncio.sleep(0.01)
        with pytest.raises(RequestTimeoutError, match="connect phase"):
            await billing.customers.get_by_external_id(
                "user_1", timeout=httpx.Timeout(5.0, pool=0.1), max_retries=0
            )
        assert fake.requests_to("GET /customers/external/{external_id}") == []  # never sent
        assert (await slow).has_access


async def test_a_refused_connection_is_a_network_error_not_a_timeout() -> None:
    policy = RetryPolicy(sleep=lambda s: asyncio.sleep(0))
    async with AsyncBillingOS(
        "sk_test_" + "a" * 32,
        api_url=f"http://127.0.0.1:{closed_port()}",
        http_backend="aiohttp",
        retry_policy=policy,
    ) as billing:
        with pytest.raises(NetworkError) as caught:
            await billing.session_tokens.create("user_1")  # a POST: retried only because it was never sent
    assert not isinstance(caught.value, RequestTimeoutError)
    assert caught.value.code == "network_error"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_lost_response_to_a_post_is_not_resent(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    """httpx-aiohttp alone reports this as ConnectTimeout ("never sent"), which would mint a second token."""
    fake.inject(TOKENS, Fault.drop_response())
    with pytest.raises(NetworkError) as caught:
        await client.session_tokens.create("user_1")
    assert not isinstance(caught.value, RequestTimeoutError)
    assert sleeps == []
    assert statuses(fake, TOKENS) == [None]
    assert len(fake.session_tokens()) == 1


async def test_a_lost_track_response_is_retried_and_counted_once(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TRACK, Fault.drop_response())
    record = await client.usage.track("user_1", "api_calls", 7)
    assert len(sleeps) == 1
    assert statuses(fake, TRACK) == [None, 201]
    assert fake.usage_of("user_1", "api_calls") == 7
    assert record.usage is not None
    assert record.usage.consumed_units == 7


async def test_a_lost_delete_response_is_retried_once_by_the_sdk_and_succeeds(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    customer = fake.add_customer("user_gone")
    fake.inject(DELETE_CUSTOMER, Fault.drop_response())
    assert await client.customers.delete(customer.id) is None
    assert len(sleeps) == 1
    assert statuses(fake, DELETE_CUSTOMER) == [None, 404]


async def test_aiohttp_does_not_resend_behind_the_policy() -> None:
    """A server that closes the connection without answering: aiohttp on its own resends a GET or DELETE
    once, silently (a DELETE's resend would then get 404 and raise NotFoundError for a delete that
    worked). With the resend off, the policy alone decides: max_retries=0 means one request."""
    seen: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        AsyncBillingOS(
            "sk_test_" + "a" * 32, api_url=f"http://127.0.0.1:{port}", http_backend="aiohttp", max_retries=0
        ) as billing,
    ):
        with pytest.raises(NetworkError) as caught:
            await billing.customers.delete("cus_1")
        assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
        assert len(seen) == 1
        with pytest.raises(NetworkError):
            await billing.check_entitlement("user_1", "api_calls")
        assert len(seen) == 2


async def test_a_reset_get_and_a_503_are_retried_by_the_policy(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.reset())
    assert (await client.check_entitlement("user_1", "api_calls")).has_access
    fake.inject(CHECK, Fault.error(503))
    assert (await client.check_entitlement("user_1", "api_calls")).has_access
    assert len(sleeps) == 2
    assert statuses(fake, CHECK) == [None, 200, 503, 200]


# --------------------------------------------------------------------------------------------------------
# cancellation: no connection is left checked out


async def test_a_cancel_storm_leaves_no_connection_acquired(fake: FakeBillingOS, url: str) -> None:
    """The measurement of the team's httpx-cancellation note, on this backend: 300 calls to a route that
    answers in 50 ms, each cancelled at a seeded random point within 60 ms, 4 lanes on a 4-connection pool;
    then 40 ordinary calls must all succeed."""
    rng = random.Random(STORM_SEED)
    async with AsyncBillingOS(
        fake.secret_key,
        api_url=url,
        http_backend="aiohttp",
        limits=httpx.Limits(max_connections=4),
        timeout=httpx.Timeout(5.0, pool=2.0),
        max_retries=0,
    ) as billing:
        fake.inject(CHECK, Fault.delay(0.05), times=None)
        cancelled = 0

        async def lane(calls: int) -> None:
            nonlocal cancelled
            for _ in range(calls):
                task = asyncio.create_task(billing.check_entitlement("user_1", "api_calls"))
                await asyncio.sleep(rng.uniform(0, 0.06))
                cancelled += task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        await asyncio.gather(*(lane(75) for _ in range(4)))
        assert cancelled > 200
        await asyncio.wait_for(billing._requester.transport.exchanger.drain(), 10)
        assert acquired(billing) == 0
        fake.clear_faults()
        answers = await asyncio.wait_for(
            asyncio.gather(*(billing.check_entitlement("user_1", "api_calls") for _ in range(40))), 10
        )
        assert all(a.has_access for a in answers)
        assert acquired(billing) == 0


def test_trio_is_refused_with_a_clear_error(fake: FakeBillingOS, url: str) -> None:
    trio = pytest.importorskip("trio")

    async def main() -> None:
        async with AsyncBillingOS(fake.secret_key, api_url=url, http_backend="aiohttp") as billing:
            with pytest.raises(ValidationError, match="asyncio only"):
                await billing.check_entitlement("user_1", "api_calls")

    trio.run(main)


# --------------------------------------------------------------------------------------------------------
# the error mapping, case by case


def _connector_error() -> aiohttp.ClientConnectorError:
    key = types.SimpleNamespace(host="127.0.0.1", port=1, ssl=None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raised", "expected", "timeout", "maybe_sent"),
    [
        (aiohttp.ConnectionTimeoutError("pool or connect"), httpx.ConnectTimeout, True, False),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout, True, True),
        (_connector_error(), httpx.ConnectError, False, False),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError, False, True),
        (aiohttp.ClientConnectionResetError("reset"), httpx.ReadError, False, True),
        (aiohttp.ClientOSError(104, "reset by peer"), httpx.ReadError, False, True),
        (aiohttp.ClientPayloadError("cut short"), httpx.ReadError, False, True),
        (httpx.ConnectTimeout("mis-mapped"), httpx.ConnectTimeout, True, False),  # no aiohttp cause: kept
    ],
)
def test_aiohttp_errors_map_as_httpx_would(
    raised: Exception, expected: type[httpx.HTTPError], timeout: bool, maybe_sent: bool
) -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/usage/track")
    direct = _httpx_error(raised, request)
    wrapped = httpx.ConnectTimeout("as httpx-aiohttp 0.2 maps it")  # what reaches us, `from` the original
    wrapped.__cause__ = raised
    assert type(direct) is expected
    if isinstance(raised, aiohttp.ClientError):
        assert type(_httpx_error(wrapped, request)) is expected
    assert isinstance(direct, httpx.HTTPError)
    error = _network_error(direct, "req_" + "0" * 24)
    assert isinstance(error, RequestTimeoutError) is timeout
    assert isinstance(error, NetworkError)
    assert error._maybe_sent is maybe_sent  # type: ignore[attr-defined]


def test_other_errors_pass_through_unchanged() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    error = ValueError("not aiohttp's")
    assert _httpx_error(error, request) is error
    protocol = httpx.UnsupportedProtocol("ftp")
    assert _httpx_error(protocol, request) is protocol
