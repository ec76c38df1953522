"""``http_backend="aiohttp"``: the failures the main suite does not reach.

A response that is not valid HTTP, a proxy that refuses the tunnel, a body that breaks off or fails to
close, an aiohttp error of no known kind, and an aiohttp without the private resend switch. Each must
surface as the httpx exception httpx itself would raise, so the SDK's error classes and its "may the
request have reached the server?" answer are the same as on the default backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from billingos import AsyncBillingOS, NetworkError, RequestTimeoutError, RetryPolicy
from billingos._aiohttp_backend import AiohttpBackend, _BodyStream, _httpx_error
from billingos._http import _network_error, _ssl_context

from ._factories import SECRET

REQUEST_ID = "req_" + "0" * 24


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


# -- a response that is not HTTP --------------------------------------------------------------------


BROKEN = b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}"


async def test_an_invalid_http_response_is_a_protocol_error_and_a_post_is_not_resent(
    policy: RetryPolicy, sleeps: list[float]
) -> None:
    seen: list[bytes] = []
    server, port = await _serve(BROKEN, seen)
    async with (
        server,
        AsyncBillingOS(
            SECRET, api_url=f"http://127.0.0.1:{port}", http_backend="aiohttp", retry_policy=policy
        ) as billing,
    ):
        with pytest.raises(NetworkError) as caught:
            await billing.session_tokens.create("user_1")
        # The request was sent and answered (badly): it may have run, so the POST is not repeated.
        assert len(seen) == 1
        assert sleeps == []
        assert not isinstance(caught.value, RequestTimeoutError)
        assert caught.value.code == "network_error"
        assert "Content-Length" in caught.value.message
        assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
        assert isinstance(caught.value.__cause__.__cause__, aiohttp.ClientResponseError)

        with pytest.raises(NetworkError):
            await billing.check_entitlement("user_1", "api_calls")  # a GET is retried: 1 + 3 requests
        assert len(seen) == 5
        assert len(sleeps) == 3


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
    for link in _chain(caught.value):
        assert SECRET not in str(link)
        assert SECRET not in repr(link), type(link).__name__
        assert SECRET not in repr(vars(link)), type(link).__name__


# -- a proxy that refuses the tunnel ----------------------------------------------------------------


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


async def test_a_proxy_refusing_the_tunnel_is_a_network_error_through_httpx_proxy_error(
    no_proxy_env: pytest.MonkeyPatch, policy: RetryPolicy, sleeps: list[float]
) -> None:
    seen: list[bytes] = []
    server, port = await _serve(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", seen
    )
    no_proxy_env.setenv("HTTPS_PROXY", f"127.0.0.1:{port}")  # no scheme: http:// is assumed
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
    assert isinstance(caught.value.__cause__, httpx.ProxyError)
    assert isinstance(caught.value.__cause__.__cause__, aiohttp.ClientHttpProxyError)
    assert SECRET.encode() not in b"".join(seen)  # the tunnel request carries no Authorization


# -- the mapping of what no test server produces ----------------------------------------------------


def test_an_aiohttp_error_of_no_known_kind_is_a_transport_error() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/usage/track")
    for raised in (aiohttp.ClientError("odd"), aiohttp.InvalidURL("not a url")):
        mapped = _httpx_error(raised, request)
        assert type(mapped) is httpx.TransportError
        assert mapped.request is request
        error = _network_error(mapped, REQUEST_ID)
        assert type(error) is NetworkError
        assert error.message.startswith("Could not reach BillingOS: ")
        assert error._maybe_sent is True  # type: ignore[attr-defined]  # unknown: assume it ran


def test_an_error_without_text_is_named_by_its_type() -> None:
    mapped = _httpx_error(aiohttp.ServerDisconnectedError(message=""), httpx.Request("GET", "http://x/"))
    assert isinstance(mapped, httpx.RemoteProtocolError)
    assert str(mapped) == "ServerDisconnectedError"  # never an empty message


# -- the response body ------------------------------------------------------------------------------


class _Body(httpx.AsyncByteStream):
    """A body that yields one chunk, then fails with ``fail_read``; ``aclose`` fails with ``fail_close``."""

    def __init__(self, fail_read: Exception | None = None, fail_close: Exception | None = None) -> None:
        self.fail_read = fail_read
        self.fail_close = fail_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"par'
        if self.fail_read is not None:
            raise self.fail_read

    async def aclose(self) -> None:
        if self.fail_close is not None:
            raise self.fail_close


async def _read(stream: httpx.AsyncByteStream) -> list[bytes]:
    return [chunk async for chunk in stream]


async def test_a_body_cut_short_is_a_read_error_chained_to_aiohttp() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/v1/usage/check")
    cut = aiohttp.ClientPayloadError("Response payload is not completed")
    with pytest.raises(httpx.ReadError) as caught:
        await _read(_BodyStream(_Body(fail_read=cut), request))
    assert caught.value.request is request
    assert caught.value.__cause__ is cut


async def test_a_body_failure_that_is_not_aiohttps_passes_through_unchanged() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/v1/usage/check")
    bug = ValueError("not a transport failure")
    with pytest.raises(ValueError, match="not a transport failure") as caught:
        await _read(_BodyStream(_Body(fail_read=bug), request))
    assert caught.value is bug


async def test_closing_the_body_maps_aiohttp_errors_and_passes_others_through() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/v1/usage/check")
    reset = aiohttp.ClientConnectionResetError("reset while releasing")
    with pytest.raises(httpx.ReadError) as caught:
        await _BodyStream(_Body(fail_close=reset), request).aclose()
    assert caught.value.__cause__ is reset

    bug = RuntimeError("bug in a close hook")
    with pytest.raises(RuntimeError) as unchanged:
        await _BodyStream(_Body(fail_close=bug), request).aclose()
    assert unchanged.value is bug

    await _BodyStream(_Body(), request).aclose()  # a clean close raises nothing


async def test_a_failed_body_read_through_the_client_is_a_network_error() -> None:
    """Through the SDK: a body that breaks off after the headers is a NetworkError (the call may have run)."""

    class Cuts(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            cut = aiohttp.ClientPayloadError("Response payload is not completed")
            return httpx.Response(200, stream=_Body(fail_read=cut), request=request)

        async def aclose(self) -> None:
            return None

    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async with AsyncBillingOS(
        SECRET, api_url="http://127.0.0.1:9", http_backend="aiohttp", retry_policy=RetryPolicy(sleep=record)
    ) as billing:
        backend = billing._requester.transport.client._transport
        assert isinstance(backend, AiohttpBackend)
        backend._inner = Cuts()  # type: ignore[assignment]  # what httpx-aiohttp hands back
        with pytest.raises(NetworkError) as caught:
            await billing.session_tokens.create("user_1")
    assert isinstance(caught.value.__cause__, httpx.ReadError)
    assert sleeps == []  # the response had started: the POST may have run, so it is not resent


# -- the aiohttp session ----------------------------------------------------------------------------


async def test_the_resend_switch_is_turned_off_only_where_aiohttp_declares_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = httpx.Limits(max_connections=7, keepalive_expiry=3)
    backend = AiohttpBackend(limits, _ssl_context(), None)
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
    other = AiohttpBackend(limits, _ssl_context(), None)
    session = other._new_session()
    try:
        assert session._retry_connection is True  # aiohttp's own default, untouched
        assert session.connector is not None
        assert session.connector.limit == 7
    finally:
        await session.close()
