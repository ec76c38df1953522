"""What moves the bytes: one small adapter per HTTP library, behind one interface.

The request path (:mod:`billingos._http`) builds every request itself (method, URL, headers, body,
timeout) and decides what every answer means (decode, error mapping, retries). A backend only sends
what it is given and hands back the status, headers and whole body, or raises the SDK's
:class:`NetworkError` / :class:`RequestTimeoutError` / :class:`ResponseDecodeError`, saying whether the
request may have reached the server (the one fact the retry policy needs from the transport):

- :class:`HttpxBackend` (the default): an ``httpx2.AsyncClient``, the SDK's own or the caller's
  ``http_client=``;
- ``_aiohttp_backend.AiohttpBackend`` (``http_backend="aiohttp"``): an ``aiohttp.ClientSession``,
  with nothing of httpx2 in between.

No task and no shield sits between a caller and its exchange, so a cancelled call returns at once on
every event loop. httpx2 (httpcore2 >= 2.6) and aiohttp release or close a pooled connection whose
request is cancelled, with one exception in httpcore2 (2.16.2, the newest): a cancellation delivered
right after the TCP connect, at the HTTP/1.1 connection's first checkpoint (an anyio cancel scope or a
trio deadline lands there), leaves that connection ``NEW`` in the pool for good, holding a slot; after
``max_connections`` of them every call fails with ``PoolTimeout``. :func:`_reap_orphans` closes such a
connection when the cancellation passes back through :meth:`HttpxBackend.send` (only then: nothing is
added to a call that is not cancelled). ``tests/test_transport_cancellation.py`` pins that point, and
``tests/hardening/test_cancellation.py`` cancels 1 000 calls at random points on both backends, on
asyncio and trio.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import httpx2

from ._errors import BillingOSError, NetworkError, RequestTimeoutError, ResponseDecodeError

__all__ = ["Backend", "HttpxBackend", "Reply", "decode_error", "network_error", "parse_url", "ssl_context"]


class Reply(Protocol):
    """A whole response, body read and connection released (``httpx2.Response`` is one)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        ...

    @property
    def content(self) -> bytes: ...
    @property
    def reason_phrase(self) -> str: ...


class Backend(Protocol):
    """What sends one request. Implementations: :class:`HttpxBackend`, ``AiohttpBackend``."""

    default_headers: httpx2.Headers
    """Headers the backend's client adds by default; the request path merges them in once."""

    @property
    def is_closed(self) -> bool: ...

    async def send(
        self, method: str, url: str, headers: httpx2.Headers, content: bytes | None, timeouts: httpx2.Timeout
    ) -> Reply:
        """Send and read the whole answer; redirects are never followed (a 3xx is returned as is)."""
        ...

    async def aclose(self) -> None:
        """Close the pool, unless it belongs to the caller."""
        ...


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every client the SDK creates: building one costs ~40 ms.

    TLS 1.2 at least, whatever the platform's OpenSSL defaults to (some leave the minimum to a system
    policy file that a container may lack).
    """
    context = httpx2.create_ssl_context()
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@functools.lru_cache(maxsize=1024)
def parse_url(raw: str) -> httpx2.URL:
    """Parsed once per distinct URL (hot paths repeat them: the same customer, the same feature)."""
    return httpx2.URL(raw)


class HttpxBackend:
    """Sends through an ``httpx2.AsyncClient``: the SDK's own, or the caller's ``http_client=``."""

    __slots__ = ("client", "default_headers", "owns_client")

    def __init__(self, client: httpx2.AsyncClient, *, owns_client: bool) -> None:
        self.client = client
        self.owns_client = owns_client
        self.default_headers = client.headers

    @property
    def is_closed(self) -> bool:
        return self.client.is_closed

    async def send(
        self, method: str, url: str, headers: httpx2.Headers, content: bytes | None, timeouts: httpx2.Timeout
    ) -> httpx2.Response:
        # Built directly rather than by client.build_request (half the cost: it parses the URL twice and
        # merges headers several times). The client's auth still applies (httpx2 runs it in send);
        # client-level cookies and params do not.
        request = httpx2.Request(
            method,
            parse_url(url),
            content=content,
            headers=headers,
            extensions={"timeout": timeouts.as_dict()},
        )
        return await self.send_request(request)

    async def send_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send a built request: httpx2 errors mapped, a cancellation's orphaned connection closed."""
        try:
            return await self.client.send(request, follow_redirects=False)
        except httpx2.HTTPError as exc:
            raise _httpx_error(exc) from exc
        except BaseException:  # cancelled (asyncio, anyio, trio), or interrupted
            await _reap_orphans(self.client)
            raise

    async def aclose(self) -> None:
        if self.owns_client:
            await self.client.aclose()


async def _reap_orphans(client: httpx2.AsyncClient) -> None:
    """Close the HTTP/1.1 connections a cancellation left ``NEW`` in the pool with no request to use them.

    Such a connection is only ever used by the request that opened it (httpcore2 never hands a ``NEW``
    connection to another); once that request is gone and the pool holds no request for it, it is
    garbage that still counts against ``max_connections``. Reads httpcore2's pool internals, defensively:
    with another transport, or internals that changed, it does nothing.
    """
    pool: Any = getattr(getattr(client, "_transport", None), "_pool", None)
    try:
        from httpcore2._async.http11 import AsyncHTTP11Connection, HTTPConnectionState

        connections: list[Any] = pool._connections
        reserved = {r.connection for r in pool._requests}
        orphans = [
            c
            for c in connections
            if c not in reserved
            and isinstance(inner := getattr(c, "_connection", None), AsyncHTTP11Connection)
            and inner._state is HTTPConnectionState.NEW
            and inner._request_count == 0
        ]
        for connection in orphans:
            connections.remove(connection)
    except (ImportError, AttributeError, TypeError, ValueError):  # not the httpcore2 pool this expects
        return
    if orphans:
        import anyio

        with anyio.CancelScope(shield=True):  # closing a socket that never carried a request: at once
            for connection in orphans:
                await connection.aclose()


def httpx2_default_headers() -> httpx2.Headers:
    """The headers an ``httpx2.AsyncClient`` adds by default, known without building one."""
    from httpx2 import _client

    encodings = getattr(_client, "ACCEPT_ENCODING", "gzip, deflate")
    return httpx2.Headers({"accept-encoding": encodings, "connection": "keep-alive"})


def new_httpx_client(limits: httpx2.Limits, timeout: httpx2.Timeout) -> httpx2.AsyncClient:
    """The SDK's own pooled client, with the shared verifying TLS context."""
    return httpx2.AsyncClient(limits=limits, timeout=timeout, verify=ssl_context())


def network_error(detail: str, *, maybe_sent: bool, timeout_phase: str | None = None) -> NetworkError:
    """The SDK's error for a request that got no (whole) response; ``request_id`` is set by the caller.

    ``maybe_sent`` says whether the request may have reached the server: only a failure to connect, or
    to get a connection from the pool, says no, and only then may a non-idempotent call be retried.
    """
    error: NetworkError
    if timeout_phase is not None:
        error = RequestTimeoutError(f"The request timed out ({timeout_phase} phase).", code="timeout")
    else:
        error = NetworkError(f"Could not reach BillingOS: {detail}", code="network_error")
    error._maybe_sent = maybe_sent  # type: ignore[attr-defined]
    return error


def decode_error(detail: str) -> ResponseDecodeError:
    """The body arrived but could not be decompressed (a bad gzip stream, ...)."""
    return ResponseDecodeError(f"Could not decode the response body: {detail}", code="decode_error")


def _httpx_error(exc: httpx2.HTTPError) -> BillingOSError:
    """Map an httpx2 failure; remember whether the request may have reached the server."""
    if isinstance(exc, httpx2.DecodingError):
        return decode_error(str(exc))
    never_sent = isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout))
    phase = None
    if isinstance(exc, httpx2.TimeoutException):
        phase = type(exc).__name__.replace("Timeout", "").lower() or "request"
    return network_error(str(exc) or type(exc).__name__, maybe_sent=not never_sent, timeout_phase=phase)
