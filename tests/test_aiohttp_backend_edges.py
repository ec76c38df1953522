"""``http_backend="aiohttp"``: the failures the main suite does not reach.

A response that is not valid HTTP, a proxy that refuses the tunnel, a body that breaks off or fails to
decompress, an aiohttp error of no known kind, a failure that is not aiohttp's, a session closed under the
client, and an aiohttp without the private resend switch. aiohttp's errors are mapped straight to the
SDK's (``_aiohttp_error``), so the error classes and the "may the request have reached the server?"
answer must be the same as on the default backend; nothing else may be swallowed or rewrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx2
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from billingos import (
    AsyncBillingOS,
    BillingOSError,
    NetworkError,
    RequestTimeoutError,
    ResponseDecodeError,
    RetryPolicy,
    ValidationError,
)
from billingos._aiohttp_backend import AiohttpBackend, _aiohttp_error, _redact
from billingos._config import resolve
from billingos._transport import RequestHeaders, ssl_context
from billingos.testing import FakeBillingOS
from billingos.testing.__main__ import seed_sandbox

from ._factories import SECRET


async def _serve(answer: bytes, seen: list[bytes]) -> tuple[asyncio.Server, int]:
    """A raw TCP server on loopback answering every request with ``answer``; ``seen`` gets each head."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) not in seen:
            seen.add(id(current))
            yield current
            todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _backend(billing: AsyncBillingOS) -> AiohttpBackend:
    backend = billing._requester.transport.backend
    assert isinstance(backend, AiohttpBackend)
    return backend


async def _built_backend(billing: AsyncBillingOS) -> AiohttpBackend:
    """The backend, built first if the client has not built it yet (it may wait for its first request)."""
    transport: Any = billing._requester.transport
    backend = transport.backend or await transport.started()
    assert isinstance(backend, AiohttpBackend)
    return backend


def _acquired(billing: AsyncBillingOS) -> int:
    session = _backend(billing).session
    assert session is not None
    assert session.connector is not None
    return len(session.connector._acquired)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def _posted_once(
    answer: bytes, policy: RetryPolicy, sleeps: list[float]
) -> AsyncIterator[tuple[AsyncBillingOS, NetworkError, list[bytes]]]:
    """POST a session token on the aiohttp backend to a raw server answering ``answer``: the call fails with
    a NetworkError (not a timeout) after exactly one request and no retry; the client stays open."""
    seen: list[bytes] = []
    server, port = await _serve(answer, seen)
    async with (
        server,
        AsyncBillingOS(
            SECRET, api_url=f"http://127.0.0.1:{port}", http_backend="aiohttp", retry_policy=policy
        ) as billing,
    ):
        with pytest.raises(NetworkError) as caught:
            await billing.session_tokens.create("user_1")
        assert len(seen) == 1
        assert sleeps == []
        assert not isinstance(caught.value, RequestTimeoutError)
        yield billing, caught.value, seen


# -- a response that is not HTTP --------------------------------------------------------------------


BROKEN = b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}"


async def test_an_invalid_http_response_is_a_network_error_and_a_post_is_not_resent(
    policy: RetryPolicy, sleeps: list[float]
) -> None:
    # The request was sent and answered (badly): it may have run, so the POST is not repeated.
    async with _posted_once(BROKEN, policy, sleeps) as (billing, error, seen):
        assert error.code == "network_error"
        assert error._maybe_sent is True  # type: ignore[attr-defined]
        assert "Content-Length" in error.message
        assert error.request_id is not None
        assert error.request_id.encode() in seen[0]
        assert type(error.__cause__) is aiohttp.ClientResponseError  # aiohttp's own, chained

        with pytest.raises(NetworkError):
            await billing.check_entitlement("user_1", "api_calls")  # a GET is retried: 1 + 3 requests
        assert len(seen) == 5
        assert len(sleeps) == 3
        assert _acquired(billing) == 0


async def test_the_exception_chain_of_an_invalid_response_never_shows_the_key() -> None:
    seen: list[bytes] = []
    server, port = await _serve(BROKEN, seen)
    async with (
        server,
        AsyncBillingOS(
            SECRET, api_url=f"http://127.0.0.1:{port}", http_backend="aiohttp", max_retries=0
        ) as b,
    ):
        with pytest.raises(NetworkError) as caught:
            await b.check_entitlement("user_1", "api_calls")
    assert SECRET.encode() in seen[0]  # it was sent, as it must be
    cause = caught.value.__cause__
    assert isinstance(cause, aiohttp.ClientResponseError)
    assert cause.request_info.headers["Authorization"] == "[secure]"  # masked by _redact
    assert cause.request_info.headers["x-request-id"] == caught.value.request_id  # the rest is kept
    assert cause.request_info.method == "GET"
    assert cause.request_info.url.path == "/v1/usage/check"
    for link in _chain(caught.value):
        assert SECRET not in str(link)
        assert SECRET not in repr(link), type(link).__name__
        assert SECRET not in repr(vars(link)), type(link).__name__


def test_redact_masks_only_the_authorization_of_a_response_error() -> None:
    url = URL("http://127.0.0.1/v1/usage/check")
    sent = {"Authorization": f"Bearer {SECRET}", "Accept": "application/json"}
    headers = CIMultiDictProxy(CIMultiDict(sent))
    error = aiohttp.ClientResponseError(aiohttp.RequestInfo(url, "GET", headers, url), (), status=400)
    _redact(error)
    assert dict(error.request_info.headers) == {"Authorization": "[secure]", "Accept": "application/json"}
    assert (error.request_info.url, error.request_info.method) == (url, "GET")
    assert SECRET not in repr(error)

    plain = CIMultiDictProxy(CIMultiDict({"Accept": "application/json"}))
    untouched = aiohttp.ClientResponseError(aiohttp.RequestInfo(url, "GET", plain, url), (), status=400)
    info = untouched.request_info
    _redact(untouched)
    assert untouched.request_info is info  # nothing to mask: left as it was
    _redact(aiohttp.ServerDisconnectedError())  # not a response error: nothing to do, nothing raised


# -- a proxy that refuses the tunnel ----------------------------------------------------------------


async def test_a_proxy_refusing_the_tunnel_is_a_network_error_that_may_have_been_sent(
    monkeypatch: pytest.MonkeyPatch, policy: RetryPolicy, sleeps: list[float]
) -> None:
    seen: list[bytes] = []
    server, port = await _serve(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", seen
    )
    monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{port}")  # no scheme: http:// is assumed
    async with (
        server,
        AsyncBillingOS(
            SECRET,
            api_url="https://api.billingos.invalid",
            http_backend="aiohttp",
            retry_policy=policy,
            max_retries=1,
        ) as billing,
    ):
        with pytest.raises(NetworkError) as caught:
            await billing.check_entitlement("user_1", "api_calls")
    assert [r.split(b"\r\n", 1)[0] for r in seen] == [b"CONNECT api.billingos.invalid:443 HTTP/1.1"] * 2
    assert len(sleeps) == 1  # a GET: retried once, as max_retries says
    assert not isinstance(caught.value, RequestTimeoutError)
    assert "407" in caught.value.message
    assert caught.value._maybe_sent is True  # type: ignore[attr-defined]  # as httpx2's ProxyError
    assert isinstance(caught.value.__cause__, aiohttp.ClientHttpProxyError)
    assert SECRET.encode() not in b"".join(seen)  # the tunnel request carries no Authorization


# -- the mapping of what no test server produces ----------------------------------------------------


@pytest.mark.parametrize("raised", [aiohttp.ClientError("odd"), aiohttp.InvalidURL("not a url")])
def test_an_aiohttp_error_of_no_known_kind_is_a_network_error_that_may_have_run(raised: Exception) -> None:
    error = _aiohttp_error(raised)
    assert type(error) is NetworkError
    assert error.code == "network_error"
    assert error.message.startswith("Could not reach BillingOS: ")
    assert error._maybe_sent is True  # type: ignore[attr-defined]  # unknown: assume it ran


def test_an_error_without_text_is_named_by_its_type() -> None:
    raised = aiohttp.ServerDisconnectedError(message="")
    assert str(raised) == ""
    error = _aiohttp_error(raised)
    assert error.message == "Could not reach BillingOS: ServerDisconnectedError"  # never an empty message


# -- the response body ------------------------------------------------------------------------------


CUT_SHORT = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"par'


async def test_a_body_cut_short_is_a_network_error_that_may_have_run(
    policy: RetryPolicy, sleeps: list[float]
) -> None:
    """The headers came, the body broke off: the call may have run, so a POST is not resent."""
    async with _posted_once(CUT_SHORT, policy, sleeps) as (billing, error, seen):
        assert error._maybe_sent is True  # type: ignore[attr-defined]
        assert isinstance(error.__cause__, aiohttp.ClientPayloadError)
        assert "not completed" in error.message

        with pytest.raises(NetworkError):
            await billing.check_entitlement("user_1", "api_calls", max_retries=1)  # a GET: retried
        assert len(seen) == 3
        assert _acquired(billing) == 0  # the broken connection was not kept


GZIP_THAT_IS_NOT = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    b'Content-Length: 11\r\n\r\n{"ok":true}'
)


@pytest.mark.parametrize("backend", ["httpx2", "aiohttp"])
async def test_a_body_that_says_gzip_and_is_not_is_a_decode_error_on_both_backends(
    backend: str, policy: RetryPolicy, sleeps: list[float]
) -> None:
    """The SDK inflates the body itself on both backends (``BodyReader``, capped by max_response_bytes):
    a bad gzip stream is a ResponseDecodeError: the answer arrived, so it is not a network failure, nor
    retried."""
    seen: list[bytes] = []
    server, port = await _serve(GZIP_THAT_IS_NOT, seen)
    async with (
        server,
        AsyncBillingOS(
            SECRET, api_url=f"http://127.0.0.1:{port}", http_backend=backend, retry_policy=policy
        ) as billing,
    ):
        with pytest.raises(ResponseDecodeError) as caught:
            await billing.check_entitlement("user_1", "api_calls")
    assert not isinstance(caught.value, NetworkError)
    assert caught.value.code == "decode_error"
    assert caught.value.message.startswith("Could not decode the response body: ")
    assert caught.value.request_id is not None
    assert caught.value.request_id.encode() in seen[0]
    assert len(seen) == 1
    assert sleeps == []
    assert "invalid compressed data" in caught.value.message


class _StubSession:
    """Stands in for the aiohttp session: every request fails with ``failure`` (as a bug in aiohttp, or a
    hook, would), before any response."""

    closed = False

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure
        self.requests = 0

    @contextlib.asynccontextmanager
    async def request(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self.requests += 1
        raise self.failure
        yield  # pragma: no cover  # makes this a generator

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("failure", [ValueError("not a transport failure"), RuntimeError("a bug")])
async def test_a_failure_that_is_not_aiohttps_passes_through_unchanged(
    failure: Exception, policy: RetryPolicy, sleeps: list[float]
) -> None:
    async with AsyncBillingOS(
        SECRET, api_url="http://127.0.0.1:9", http_backend="aiohttp", retry_policy=policy
    ) as billing:
        stub = _StubSession(failure)
        (await _built_backend(billing)).session = stub  # type: ignore[assignment]
        with pytest.raises(type(failure)) as caught:
            await billing.check_entitlement("user_1", "api_calls")  # a GET: would be retried if mapped
        assert caught.value is failure  # not wrapped in NetworkError, not turned into client_closed
        assert stub.requests == 1
        assert sleeps == []


# -- the aiohttp session ----------------------------------------------------------------------------


async def test_a_session_closed_under_the_client_is_client_closed() -> None:
    fake = FakeBillingOS(rate_limits=None)
    seed_sandbox(fake)
    with fake.serve() as url:
        async with AsyncBillingOS(fake.secret_key, api_url=url, http_backend="aiohttp") as billing:
            assert (await billing.check_entitlement("user_1", "api_calls")).has_access  # builds the session
            session = _backend(billing).session
            assert session is not None
            await session.close()  # by someone else than the SDK
            assert billing._requester.transport.is_closed
            with pytest.raises(BillingOSError) as caught:
                await billing.check_entitlement("user_1", "api_calls")
            assert caught.value.code == "client_closed"
            assert _backend(billing).session is session  # not silently replaced by a new one
    assert len(fake.requests) == 1


async def test_the_backend_refuses_a_closed_session_with_the_error_the_request_path_maps() -> None:
    """``send`` on a closed session raises RuntimeError (as httpx2's closed client does), which the
    request path turns into ``client_closed``."""
    settings = resolve(SECRET, "http://127.0.0.1:9", None, None, None, http_backend="aiohttp")
    backend = AiohttpBackend(settings, ssl_context())
    await backend.aclose()  # no session yet: nothing to close, and still not "closed"
    assert backend.session is None
    assert not backend.is_closed
    backend._new_session()
    await backend.aclose()
    assert backend.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await backend.send("GET", "http://127.0.0.1:9/", RequestHeaders({}), None, httpx2.Timeout(1))


class _ClosedUnderTheCall(_StubSession):
    """A session closed while a request was on its way to it: aiohttp then raises RuntimeError."""

    @contextlib.asynccontextmanager
    async def request(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self.requests += 1
        self.closed = True
        raise RuntimeError("Session is closed")
        yield  # pragma: no cover  # makes this a generator


async def test_a_session_closed_under_a_call_is_client_closed_not_a_runtime_error(
    policy: RetryPolicy, sleeps: list[float]
) -> None:
    async with AsyncBillingOS(
        SECRET, api_url="http://127.0.0.1:9", http_backend="aiohttp", retry_policy=policy
    ) as billing:
        stub = _ClosedUnderTheCall(RuntimeError())
        (await _built_backend(billing)).session = stub  # type: ignore[assignment]
        with pytest.raises(BillingOSError) as caught:
            await billing.check_entitlement("user_1", "api_calls")
        assert caught.value.code == "client_closed"
        assert stub.requests == 1
        assert sleeps == []  # not retried


async def test_closing_while_a_call_waits_to_retry_is_client_closed(sleeps: list[float]) -> None:
    seen: list[bytes] = []
    server, port = await _serve(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", seen)

    async def close_instead_of_sleeping(seconds: float) -> None:
        sleeps.append(seconds)
        await billing.aclose()

    billing = AsyncBillingOS(
        SECRET,
        api_url=f"http://127.0.0.1:{port}",
        http_backend="aiohttp",
        retry_policy=RetryPolicy(sleep=close_instead_of_sleeping),
    )
    async with server:
        with pytest.raises(BillingOSError) as caught:
            await billing.check_entitlement("user_1", "api_calls")
    assert caught.value.code == "client_closed"
    assert len(seen) == 1
    assert len(sleeps) == 1


def test_the_session_needs_a_running_asyncio_loop() -> None:
    settings = resolve(SECRET, "http://127.0.0.1:9", None, None, None, http_backend="aiohttp")
    backend = AiohttpBackend(settings, ssl_context())
    with pytest.raises(ValidationError, match="asyncio only") as caught:
        backend._new_session()  # no running loop at all (trio's case: see test_http_backend.py)
    assert caught.value.code == "invalid_argument"
    assert backend.session is None


async def test_the_resend_switch_is_turned_off_only_where_aiohttp_declares_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = httpx2.Limits(max_connections=7, keepalive_expiry=3)
    settings = resolve(SECRET, "http://127.0.0.1:9", None, None, limits, http_backend="aiohttp")
    backend = AiohttpBackend(settings, ssl_context())
    session = backend._new_session()
    try:
        assert "_retry_connection" in aiohttp.ClientSession.ATTRS  # the aiohttp this suite runs on
        assert session._retry_connection is False
        assert backend.session is session
    finally:
        await session.close()

    # An aiohttp that does not declare the attribute: the SDK leaves its session as aiohttp made it.
    attrs: Any = frozenset(aiohttp.ClientSession.ATTRS - {"_retry_connection"})
    monkeypatch.setattr(aiohttp.ClientSession, "ATTRS", attrs)
    other = AiohttpBackend(settings, ssl_context())
    session = other._new_session()
    try:
        assert session._retry_connection is True  # aiohttp's own default, untouched
        assert session.connector is not None
        assert session.connector.limit == 7
    finally:
        await session.close()


async def test_closing_the_client_tells_a_call_waiting_for_a_connection_it_was_closed() -> None:
    """aiohttp cancels the calls waiting for a pooled connection when its session closes; such a call was
    not cancelled by anyone, so it must end with ``client_closed``, not vanish as cancelled."""
    arrived = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            arrived.set()
            await asyncio.sleep(30)
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        billing = AsyncBillingOS(
            "sk_test_" + "a" * 32,
            api_url=f"http://127.0.0.1:{port}",
            http_backend="aiohttp",
            max_retries=0,
            limits=httpx2.Limits(max_connections=1),
        )
        first = asyncio.create_task(billing.check_entitlement("u", "f"))  # holds the only connection
        await asyncio.wait_for(arrived.wait(), 10)
        waiting = asyncio.create_task(billing.check_entitlement("u", "g"))  # waits for the pool
        backend = billing._requester.transport.backend
        assert isinstance(backend, AiohttpBackend)
        connector = backend.session.connector  # type: ignore[union-attr]
        for _ in range(1000):  # until the second call is queued for a connection
            if connector._waiters:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.001)
        await billing.aclose()
        done, _ = await asyncio.wait([first, waiting], timeout=10)
        assert waiting in done
        assert not waiting.cancelled()
        error = waiting.exception()
        assert isinstance(error, BillingOSError)
        assert error.code == "client_closed"
        assert first in done
