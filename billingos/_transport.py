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

Both read the body through one :class:`BodyReader`: the raw bytes, inflated here (gzip, deflate: the
``Accept-Encoding`` the SDK sends) with every inflate step bounded by what is left of
``max_response_bytes``, so neither a huge body, an endless one nor a compression bomb holds more than the
cap; past it the exchange ends with ``ResponseDecodeError(code="response_too_large")`` and its connection
is closed, never returned to the pool. Each backend also bounds the whole attempt (``timeout`` as a
number): httpx2's by cancelling the exchange as a caller's own cancellation would
(:func:`within_deadline`), aiohttp's with its own ``total`` timeout.

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

import contextlib
import functools
import ssl
import sys
import zlib
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import httpx2

from ._config import DEFAULT_MAX_RESPONSE_BYTES
from ._errors import BillingOSError, NetworkError, RequestTimeoutError, ResponseDecodeError
from ._loops import running_asyncio_loop

__all__ = [
    "ACCEPT_ENCODING",
    "Answer",
    "Backend",
    "BodyReader",
    "HttpxBackend",
    "Reply",
    "RequestHeaders",
    "deadline_error",
    "decode_error",
    "network_error",
    "parse_url",
    "ssl_context",
    "within_deadline",
]

T = TypeVar("T")

ACCEPT_ENCODING = "gzip, deflate"
"""What the SDK asks for: the codings :class:`BodyReader` can inflate with a bound on its output."""


class RequestHeaders:
    """One request's headers as the request path hands them to a backend: lower-case names, ``str`` values.

    A ``dict`` underneath (copying and setting a header cost next to nothing; ``httpx2.Headers``
    rescans its list on every set), wrapped so that no ``repr`` shows the ``Authorization`` value: the
    secret key or a session token then never appears in a traceback's locals (pytest ``-l``, rich,
    Sentry, which renders an object that is not a mapping by its ``repr``). Deliberately not a ``Mapping``.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = _Fields(fields)
        """The headers, name (lower-case) to value. Backends read them from here."""

    def copy(self) -> RequestHeaders:
        return RequestHeaders(self.fields)

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    def __setitem__(self, name: str, value: str) -> None:
        self.fields[name] = value

    def __delitem__(self, name: str) -> None:
        del self.fields[name]

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def update(self, other: Mapping[str, str]) -> None:
        self.fields.update(other)

    def __repr__(self) -> str:
        return f"RequestHeaders({self.fields!r})"


class _Fields(dict[str, str]):
    """The ``dict`` of :class:`RequestHeaders`, whose ``repr`` masks ``Authorization`` too."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr({k: ("[secure]" if k == "authorization" else v) for k, v in self.items()})


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
        self,
        method: str,
        url: str,
        headers: RequestHeaders,
        content: bytes | None,
        timeouts: httpx2.Timeout,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float | None = None,
    ) -> Reply:
        """Send and read the whole answer; redirects are never followed (a 3xx is returned as is).

        The body is decoded while it streams, through a :class:`BodyReader` capped at ``max_bytes``:
        past it, the connection is closed (never pooled) and ``ResponseDecodeError(code=
        "response_too_large")`` raised. With a ``deadline`` (``timeout`` given as a number), the whole
        exchange, from waiting for a connection to the last byte, is cut after that many seconds with
        :func:`deadline_error`; ``timeouts`` still bound each phase.
        """
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


class Answer:
    """Status, headers and the whole (decoded) body of one response, as both backends return it."""

    __slots__ = ("content", "headers", "reason_phrase", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes, reason: str) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.reason_phrase = reason


class BodyReader:
    """A response body, decoded as it arrives and refused as soon as it would pass ``limit`` bytes.

    Both backends hand it the raw (still compressed) bytes as they read them; each ``gzip`` or
    ``deflate`` stage inflates with ``max_length`` set to what is left of the budget, so a compression
    bomb never produces more than ``limit + 1`` bytes, whatever its ratio. Memory held: the decoded body
    so far (at most ``limit``) plus one network read.
    """

    __slots__ = ("_chunks", "_left", "_stages", "limit")

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        self.limit = limit
        self._left = limit
        self._chunks: list[bytes] = []
        self._stages: list[_Inflate] = []
        if content_encoding:
            for coding in reversed(content_encoding.split(",")):  # applied in order: undo the last first
                name = coding.strip().lower()
                if name in ("gzip", "x-gzip"):
                    self._stages.append(_Inflate(zlib.MAX_WBITS | 16))
                elif name == "deflate":
                    self._stages.append(_Inflate(zlib.MAX_WBITS, raw_fallback=True))
                elif name not in ("identity", ""):
                    raise decode_error(f"unsupported Content-Encoding {coding.strip()!r}")

    @property
    def decodes(self) -> bool:
        """Whether the body is inflated on its way through (a ``gzip`` or ``deflate`` coding)."""
        return bool(self._stages)

    def check_length(self, content_length: str | None) -> None:
        """Refuse at once a body whose announced (unencoded) length is already over the limit."""
        if content_length is not None and not self._stages:
            try:
                length = int(content_length)
            except ValueError:
                return  # the HTTP library refuses an invalid Content-Length itself
            if length > self.limit:
                raise response_too_large(self.limit, f"it announces {length} bytes")

    def feed(self, raw: bytes) -> None:
        """Take the next raw bytes off the wire."""
        self._push(0, raw)

    def finish(self) -> bytes:
        """The whole decoded body, once the last raw bytes were fed."""
        for level, stage in enumerate(self._stages):
            tail = stage.flush()
            if tail:
                self._push(level + 1, tail)
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _push(self, level: int, data: bytes) -> None:
        """``data`` through the stages from ``level`` on, one bounded piece at a time, into the body."""
        if level < len(self._stages):
            for piece in self._stages[level].pieces(data, self._left + 1):
                self._push(level + 1, piece)
            return
        if len(data) > self._left:
            raise response_too_large(self.limit)
        if data:
            self._left -= len(data)
            self._chunks.append(data)


_PIECE = 256 * 1024
"""The most one inflate step produces: zlib builds its output in blocks and joins them, so one step of n
bytes briefly holds 2n; small steps keep that next to nothing beside the body."""


class _Inflate:
    """One ``gzip`` or ``deflate`` stage, inflating in bounded pieces."""

    __slots__ = ("_decompressor", "_head")

    def __init__(self, wbits: int, *, raw_fallback: bool = False) -> None:
        self._decompressor = zlib.decompressobj(wbits)
        # "deflate" is zlib-wrapped by the RFC, raw by some servers: until zlib has checked the 2-byte
        # header, the bytes seen so far, to start over as raw deflate if it refuses them.
        self._head: bytes | None = b"" if raw_fallback else None

    def pieces(self, data: bytes, budget: int) -> Iterator[bytes]:
        """``data`` inflated, in pieces of at most 256 kB; stops once more than ``budget`` came out."""
        produced = 0
        while data and produced <= budget:
            out = self._inflate(data, min(budget + 1 - produced, _PIECE))
            data = self._decompressor.unconsumed_tail
            produced += len(out)
            if out:
                yield out

    def _inflate(self, data: bytes, max_length: int) -> bytes:
        try:
            out = self._decompressor.decompress(data, max_length)
        except zlib.error as exc:
            if self._head is None:
                raise decode_error(f"invalid compressed data ({exc})") from None
            data, self._head = self._head + data, None
            self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._inflate(data, max_length)
        if self._head is not None:
            self._head += data
            if len(self._head) >= 2:  # the zlib header passed its check
                self._head = None
        return out

    def flush(self) -> bytes:
        try:
            return self._decompressor.flush()
        except zlib.error as exc:
            raise decode_error(f"invalid compressed data ({exc})") from None


def response_too_large(limit: int, detail: str = "") -> ResponseDecodeError:
    """The error for a body over ``max_response_bytes``; ``request_id`` is set by the caller."""
    more = f" ({detail})" if detail else ""
    return ResponseDecodeError(
        f"The response body is larger than max_response_bytes={limit} bytes once decoded{more}; the "
        "connection was closed. Raise max_response_bytes on the client if such answers are expected.",
        code="response_too_large",
    )


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
        self,
        method: str,
        url: str,
        headers: RequestHeaders,
        content: bytes | None,
        timeouts: httpx2.Timeout,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float | None = None,
    ) -> Answer:
        # Built directly rather than by client.build_request (half the cost: it parses the URL twice and
        # merges headers several times). The client's auth still applies (httpx2 runs it in send);
        # client-level cookies and params do not.
        request = httpx2.Request(
            method,
            parse_url(url),
            content=content,
            headers=headers.fields,
            extensions={"timeout": timeouts.as_dict()},
        )
        if deadline is None:
            return await self.send_request(request, max_bytes)
        return await within_deadline(self.send_request(request, max_bytes), deadline)

    async def send_request(
        self, request: httpx2.Request, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    ) -> Answer:
        """Send a built request and read its body, capped: httpx2 errors mapped, a cancellation's
        orphaned connection closed, a body over ``max_bytes`` refused and its connection closed."""
        try:
            response = await self.client.send(request, stream=True, follow_redirects=False)
            try:
                # The raw bytes, inflated by the capped reader rather than httpx2's decoders (which
                # inflate a whole network read at once: 64 kB of a gzip bomb is 64 MB).
                headers = response.headers
                if response.is_stream_consumed:  # a transport that read (and decoded) it: MockTransport
                    body = response.content
                    if len(body) > max_bytes:
                        raise response_too_large(max_bytes)
                else:
                    reader = BodyReader(headers.get("content-encoding"), max_bytes)
                    reader.check_length(headers.get("content-length"))
                    # aclosing: a body refused mid-stream closes the generators now (trio warns of any
                    # left to the garbage collector)
                    async with contextlib.aclosing(response.aiter_raw()) as raws:
                        async for raw in raws:
                            reader.feed(raw)
                    body = reader.finish()
            finally:
                # Closes the connection unless the body was read to its end (httpcore2 pools only a
                # connection whose exchange is complete): a refused body never goes back to the pool.
                await response.aclose()
            return Answer(response.status_code, headers, body, response.reason_phrase)
        except httpx2.HTTPError as exc:
            raise _httpx_error(exc) from exc
        except BillingOSError:  # the body was refused (too large, undecodable): its connection is closed
            raise
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


async def within_deadline(exchange: Coroutine[Any, Any, T], deadline: float) -> T:
    """``await exchange``, cancelled when ``deadline`` seconds have passed, as :func:`deadline_error`.

    The cancellation is the ordinary one of the running loop (``asyncio.timeout`` or a trio cancel
    scope, a few microseconds a call): no task is added, and the backend releases or closes a
    connection whose exchange is cancelled. The request may have reached the server.
    """
    loop = running_asyncio_loop()
    if loop is not None:
        asyncio: Any = sys.modules["asyncio"]
        try:
            async with asyncio.timeout(deadline) as scope:
                return await exchange
        except TimeoutError:
            if not scope.expired():
                raise
            raise deadline_error(deadline) from None
    trio: Any = sys.modules["trio"]  # the only other loop the SDK runs on
    with trio.CancelScope(deadline=trio.current_time() + deadline):
        return await exchange
    # Reached only when the scope caught its own cancellation: the deadline passed.
    raise deadline_error(deadline)


def deadline_error(seconds: float) -> NetworkError:
    """The error for an attempt cut at its whole-attempt deadline (``timeout`` as a number).

    The request may have reached the server (the deadline may pass while the answer streams in), so a
    non-idempotent call is not retried after it; ``request_id`` is set by the caller.
    """
    error = RequestTimeoutError(
        f"The request timed out: no complete answer within timeout={seconds:g} s (the whole attempt, "
        "from connecting to the last byte of the body).",
        code="timeout",
    )
    error._maybe_sent = True  # type: ignore[attr-defined]
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
