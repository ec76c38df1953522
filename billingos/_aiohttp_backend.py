"""``http_backend="aiohttp"``: the SDK's requests sent by an ``aiohttp.ClientSession``.

The request path hands this backend a plain method, URL, headers, body and timeout, and gets back the
status, headers and body; nothing of httpx2 sits in between (no Request or Response objects, no stream
wrappers, no cookie jar, no task). Decoding, error mapping and retries are the shared code of
:mod:`billingos._http`, so both backends behave the same.

What this module decides:

- the session is built on the first request (aiohttp needs the running loop), with the SDK's pool size
  (``limits.max_connections``, total, like httpx2), keep-alive expiry and shared TLS context; no cookie
  jar and ``trust_env=False`` (with it, aiohttp makes two thread hops per request to look up netrc and
  proxies); the environment's proxy for ``api_url`` is resolved once instead, when the client is built,
  as httpx2 does;
- aiohttp's own resend of a GET/DELETE on a dropped connection is off: retries are the SDK's;
- aiohttp's decompression is off (``auto_decompress=False``): the raw body goes through the shared
  :class:`~billingos._transport.BodyReader`, which inflates it capped at ``max_response_bytes`` and, past
  the cap, has the connection closed (``response.close()``) rather than released to the pool;
- aiohttp's errors map to the SDK's, with the same "may the request have reached the server?" answer
  httpx2 gives: a refused connection or a connect/pool timeout was never sent; a disconnect, a reset or
  a read timeout may have been.

Not carried over from httpx2: ``limits.max_keepalive_connections`` (aiohttp keeps every idle connection
until ``keepalive_expiry``) and the write timeout (aiohttp has none). aiohttp runs on asyncio only.
"""

from __future__ import annotations

import asyncio
import functools
import math
import ssl
import time
import urllib.request

import aiohttp
import httpx2
from multidict import CIMultiDict, CIMultiDictProxy  # an aiohttp dependency
from yarl import URL  # an aiohttp dependency

from ._config import DEFAULT_MAX_RESPONSE_BYTES, Settings
from ._errors import BillingOSError, ValidationError
from ._transport import Answer, BodyReader, RequestHeaders, deadline_error, network_error

__all__ = ["AiohttpBackend"]


@functools.lru_cache(maxsize=1024)
def _url(raw: str) -> URL:
    """Parsed once per distinct URL; the request path has percent-encoded it already."""
    return URL(raw, encoded=True)


@functools.lru_cache(maxsize=64)
def _client_timeout(
    connect: float | None, read: float | None, pool: float | None, deadline: float | None
) -> aiohttp.ClientTimeout:
    # total: the whole attempt (the SDK's deadline), from waiting for a connection to the last byte;
    # connect: waiting for a pooled connection plus connecting (httpx2's pool + connect phases);
    # sock_connect: the TCP/TLS connect itself; sock_read: the longest silence while reading.
    # ceil_threshold: aiohttp rounds the expiry of a timeout above it up to a whole second; never.
    total_connect = None if connect is None and pool is None else (connect or 0) + (pool or 0)
    if deadline is not None:
        # A phase bound no shorter than the deadline can never fire first: left out, it costs nothing
        # (sock_read is a timer re-armed on every chunk received).
        if read is not None and read >= deadline:
            read = None
        if total_connect is not None and total_connect >= deadline:
            total_connect = None
    return aiohttp.ClientTimeout(
        total=deadline, connect=total_connect, sock_connect=connect, sock_read=read, ceil_threshold=math.inf
    )


class AiohttpBackend:
    """Sends through one ``aiohttp.ClientSession``, created on the first request."""

    __slots__ = ("_limits", "_proxy", "_ssl_context", "default_headers", "session")

    def __init__(self, settings: Settings, ssl_context: ssl.SSLContext) -> None:
        self._limits = settings.limits
        self._ssl_context = ssl_context
        self._proxy = _environment_proxy(settings.api_url)
        self.default_headers = httpx2.Headers()
        self.session: aiohttp.ClientSession | None = None
        """The aiohttp session, once the first request has created it."""

    @property
    def is_closed(self) -> bool:
        return self.session is not None and self.session.closed

    def _new_session(self) -> aiohttp.ClientSession:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ValidationError(
                "http_backend='aiohttp' runs on asyncio only; use the default http_backend='httpx2' "
                "with trio.",
                code="invalid_argument",
            ) from None
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,  # 0: no limit, as httpx2's None
            keepalive_timeout=self._limits.keepalive_expiry,  # None: never expire, as in httpx2
            ssl=self._ssl_context,
        )
        # auto_decompress=False: the body is inflated by the SDK's capped BodyReader, not by aiohttp
        # (which inflates whatever a read brings, without a bound).
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=False
        )
        if "_retry_connection" in aiohttp.ClientSession.ATTRS:
            # aiohttp silently resends a GET or DELETE once when the connection drops. The SDK's retry
            # policy decides retries (with backoff, logging, and a DELETE's 404-after-a-lost-response
            # counted as success); a hidden resend would turn that 404 into NotFoundError. No public
            # switch exists (aiohttp 3.14), hence the private attribute, set only where it is known.
            session._retry_connection = False
        self.session = session
        return session

    async def send(
        self,
        method: str,
        url: str,
        headers: RequestHeaders,
        content: bytes | None,
        timeouts: httpx2.Timeout,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float | None = None,
    ) -> Answer:
        session = self.session
        if session is None:
            session = self._new_session()
        elif session.closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        started = time.monotonic() if deadline is not None else 0.0  # the loop's clock
        try:
            async with session.request(
                method,
                _url(url),
                headers=CIMultiDict(headers.fields),  # aiohttp's own type, used as is
                data=content,
                timeout=_client_timeout(timeouts.connect, timeouts.read, timeouts.pool, deadline),
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                try:
                    response_headers = response.headers
                    coding = response_headers.get("Content-Encoding")
                    length = response_headers.get("Content-Length")
                    if (
                        coding is None
                        and length is not None
                        and length.isdecimal()
                        and int(length) <= max_bytes
                    ):
                        # Plain body of an announced length within the cap: aiohttp's parser stops at
                        # that length, so read it whole (no reader, no async iterator per call).
                        body = await response.read()
                    else:
                        reader = BodyReader(coding, max_bytes)
                        reader.check_length(length)
                        async for raw in response.content.iter_any():
                            reader.feed(raw)
                        body = reader.finish()
                except BillingOSError:
                    response.close()  # the body was refused: drop the connection, never pool it
                    raise
                return Answer(response.status, response.headers, body, response.reason or "")
        except (TimeoutError, aiohttp.ClientError) as exc:
            _redact(exc)
            if deadline is not None and _is_total_timeout(exc, started, deadline):
                raise deadline_error(deadline) from None
            raise _aiohttp_error(exc) from exc
        except asyncio.CancelledError:
            # Closing the session cancels the calls waiting for a pooled connection. A call that nobody
            # cancelled must not vanish as if it had been: it is told the client was closed.
            task = asyncio.current_task()
            if session.closed and task is not None and not task.cancelling():
                raise RuntimeError("Cannot send a request, as the client has been closed.") from None
            raise

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


def _is_total_timeout(error: Exception, started: float, deadline: float) -> bool:
    """Whether ``error`` is aiohttp's ``total`` timeout (the SDK's deadline) having expired.

    Past the connect phase it is a bare ``TimeoutError``; while waiting for or opening a connection,
    aiohttp reports it as ``ConnectionTimeoutError``, like its own connect timeouts: told apart by the
    time the attempt has taken.
    """
    if not isinstance(error, aiohttp.ClientError):
        return True  # aiohttp's timeouts of a phase are all ClientErrors (ServerTimeoutError)
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return time.monotonic() - started >= deadline
    return False


def _redact(error: BaseException) -> None:
    """Mask the key in an aiohttp response error before the SDK chains it to its own exception.

    aiohttp keeps the request's headers (``Authorization: Bearer sk_…``, raw) in a
    ``ClientResponseError``'s ``request_info``, which its ``repr()`` shows; httpx2's own headers mask it.
    """
    if isinstance(error, aiohttp.ClientResponseError) and error.request_info is not None:
        info = error.request_info
        if "Authorization" in info.headers:
            headers = CIMultiDict(info.headers)
            headers["Authorization"] = "[secure]"
            error.request_info = aiohttp.RequestInfo(
                info.url, info.method, CIMultiDictProxy(headers), info.real_url
            )


def _aiohttp_error(exc: Exception) -> BillingOSError:
    """The SDK's error for an aiohttp failure, with httpx2's answer to "may it have been sent?"."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for the pool
        return network_error(detail, maybe_sent=False, timeout_phase="connect")
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return network_error(detail, maybe_sent=True, timeout_phase="read")
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake, proxy connect
        return network_error(detail, maybe_sent=False)
    # A disconnect, a reset or a body cut short after sending, a proxy's refusal, invalid HTTP: the
    # request may have run.
    return network_error(detail, maybe_sent=True)


def _environment_proxy(api_url: str) -> str | None:
    """The proxy for ``api_url`` from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY``.

    Read once, when the client is created, like httpx2's ``trust_env``.
    """
    url = httpx2.URL(api_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"
