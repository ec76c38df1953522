"""``http_backend="aiohttp"``: the SDK's ``httpx.AsyncClient`` over aiohttp (extra ``billingos[aiohttp]``).

Stock httpx is the bottleneck under concurrency: httpcore's pool re-checks every connection's socket
whenever a request starts or ends, so on loopback a call costs 1-2 ms of CPU at 16-256 concurrent calls,
against ~0.4 ms through the SDK on aiohttp (``python -m bench.loopback``, docs/performance.md, scenario 3).
``httpx-aiohttp`` provides an httpx transport that sends through an ``aiohttp.ClientSession``; the SDK
keeps its ``httpx.AsyncClient``, so requests, responses, retries, error mapping and the cancellation
guarantee of ``_exchange`` are the same code on both backends.

What this module adds around ``httpx_aiohttp.AiohttpTransport``:

- the session is built here, on the first request (aiohttp needs the running loop): the SDK's pool size
  (``limits.max_connections``, total, like httpx), keep-alive expiry and shared TLS context; no cookie jar
  (httpx keeps cookies) and ``trust_env=False`` (with it, aiohttp makes two thread hops per request to
  look up netrc and proxies); the environment's proxy for ``api_url`` is resolved once instead, as httpx
  does when the client is created;
- aiohttp's own resend of a GET/DELETE on a dropped connection is off: retries are the SDK's;
- aiohttp's errors map to the httpx exceptions httpx itself raises in the same situation.
  httpx-aiohttp 0.2 maps every ``ClientConnectionError`` to ``ConnectTimeout``: a refused connection would
  read as a timeout, and a connection reset after the request was sent as "never sent", which would make
  the SDK retry a POST that may have run. Here a refused connection is ``ConnectError``, a disconnect
  ``RemoteProtocolError``, a reset ``ReadError``, and only a connect/pool timeout ``ConnectTimeout``.

Not carried over from httpx: ``limits.max_keepalive_connections`` (aiohttp keeps every idle connection
until ``keepalive_expiry``) and the write timeout (aiohttp has none). aiohttp runs on asyncio only.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from multidict import CIMultiDict, CIMultiDictProxy  # an aiohttp dependency

from ._config import Settings
from ._errors import ValidationError

__all__ = ["new_aiohttp_client"]


def new_aiohttp_client(settings: Settings, ssl_context: ssl.SSLContext) -> httpx.AsyncClient:
    """The SDK's pooled ``httpx.AsyncClient`` for ``settings``, sending through aiohttp."""
    transport = AiohttpBackend(settings.limits, ssl_context, _environment_proxy(settings.api_url))
    # limits/verify are the transport's business; the timeout is httpx's (it travels in each request).
    return httpx.AsyncClient(transport=transport, timeout=settings.timeout)


class AiohttpBackend(httpx.AsyncBaseTransport):
    """``AiohttpTransport`` with the SDK's pool settings and httpx's own exception types."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext, proxy: httpx.Proxy | None) -> None:
        self._limits = limits
        self._ssl_context = ssl_context
        self.session: aiohttp.ClientSession | None = None
        """The aiohttp session, once the first request has created it."""
        self._inner = AiohttpTransport(
            verify=ssl_context, limits=limits, proxy=proxy, client=self._new_session
        )

    def _new_session(self) -> aiohttp.ClientSession:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ValidationError(
                "http_backend='aiohttp' runs on asyncio only; use the default http_backend='httpx' "
                "with trio.",
                code="invalid_argument",
            ) from None
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,  # 0: no limit, as httpx's None
            keepalive_timeout=self._limits.keepalive_expiry,  # None: never expire, as in httpx
            ssl=self._ssl_context,
        )
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )
        if "_retry_connection" in aiohttp.ClientSession.ATTRS:
            # aiohttp silently resends a GET or DELETE once when the connection drops. The SDK's retry
            # policy decides retries (with backoff, logging, and a DELETE's 404-after-a-lost-response
            # counted as success); a hidden resend would turn that 404 into NotFoundError. No public
            # switch exists (aiohttp 3.14), hence the private attribute, set only where it is known.
            session._retry_connection = False
        self.session = session
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            error = _httpx_error(exc, request)
            if error is exc:
                raise
            raise error from _cause(exc)
        response.stream = _BodyStream(response.stream, request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BodyStream(httpx.AsyncByteStream):
    """The response body; a failure while reading it is mapped as in ``handle_async_request``."""

    def __init__(self, inner: httpx.AsyncByteStream | httpx.SyncByteStream, request: httpx.Request) -> None:
        assert isinstance(inner, httpx.AsyncByteStream)
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            error = _httpx_error(exc, self._request)
            if error is exc:
                raise
            raise error from _cause(exc)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except Exception as exc:
            error = _httpx_error(exc, self._request)
            if error is exc:
                raise
            raise error from _cause(exc)


def _cause(exc: Exception) -> BaseException:
    """The aiohttp exception behind ``exc``: httpx-aiohttp raises its own mapping ``from`` the original."""
    if isinstance(exc, httpx.HTTPError) and isinstance(
        exc.__cause__, (aiohttp.ClientError, asyncio.TimeoutError)
    ):
        return exc.__cause__
    return exc


def _redact(error: BaseException) -> None:
    """Mask the key in an aiohttp response error before the SDK chains it to its own exception.

    aiohttp keeps the request's headers (``Authorization: Bearer sk_…``, raw) in a
    ``ClientResponseError``'s ``request_info``, which its ``repr()`` shows; httpx's own headers mask it.
    """
    if isinstance(error, aiohttp.ClientResponseError) and error.request_info is not None:
        info = error.request_info
        if "Authorization" in info.headers:
            headers = CIMultiDict(info.headers)
            headers["Authorization"] = "[secure]"
            error.request_info = aiohttp.RequestInfo(
                info.url, info.method, CIMultiDictProxy(headers), info.real_url
            )


def _httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    """The httpx exception httpx would raise for the aiohttp failure behind ``exc`` (else ``exc`` itself).

    The SDK reads two things from it (``_http._network_error``): timeout or not, and whether the request
    may have reached the server (only ``ConnectError``, ``ConnectTimeout`` and ``PoolTimeout`` say no).
    """
    original = _cause(exc)
    _redact(original)
    message = str(original) or type(original).__name__
    error: httpx.RequestError
    if isinstance(original, aiohttp.ConnectionTimeoutError):
        error = httpx.ConnectTimeout(message, request=request)  # connecting, or waiting for the pool
    elif isinstance(original, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        error = httpx.ReadTimeout(message, request=request)
    elif isinstance(original, aiohttp.ClientConnectorError):
        error = httpx.ConnectError(message, request=request)  # refused, DNS, TLS handshake, proxy connect
    elif isinstance(original, aiohttp.ServerDisconnectedError):
        error = httpx.RemoteProtocolError(message, request=request)
    elif isinstance(original, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        error = httpx.ReadError(message, request=request)  # reset or cut short after sending
    elif isinstance(original, aiohttp.ClientHttpProxyError):
        error = httpx.ProxyError(message, request=request)
    elif isinstance(original, aiohttp.ClientResponseError):
        error = httpx.RemoteProtocolError(message, request=request)  # not valid HTTP
    elif isinstance(exc, httpx.HTTPError) or not isinstance(original, aiohttp.ClientError):
        return exc  # already an httpx error (e.g. UnsupportedProtocol), or not aiohttp's: unchanged
    else:
        error = httpx.TransportError(message, request=request)
    return error


def _environment_proxy(api_url: str) -> httpx.Proxy | None:
    """The proxy for ``api_url`` from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY``.

    Read once, when the client is created, like httpx's ``trust_env``.
    """
    url = httpx.URL(api_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return httpx.Proxy(proxy if "://" in proxy else f"http://{proxy}")
