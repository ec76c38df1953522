"""The one request path: build, send, retry, decode, map errors.

Every call of every resource goes through :meth:`Requester.request`. Resources only say *what*
to send (method, path segments, query, body, whether a repeat is harmless) and *what* they
expect back (a decode function); headers, request ids, retries, logging, timeouts, error mapping
and JSON live here and nowhere else.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import random
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypedDict, TypeVar
from urllib.parse import quote

import attrs
import httpx2

from . import _convert, _tracing
from ._budget import RateBudget
from ._config import (
    Settings,
    TimeoutTypes,
    check_http_client,
    check_max_retries,
    check_timeout,
    deadline_of,
)
from ._errors import (
    AuthenticationError,
    AuthorizationError,
    BillingOSError,
    ConflictError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    ValidationError,
)
from ._loops import in_event_loop, running_asyncio_loop
from ._response import CAPTURE, RateLimit
from ._retry import RetryPolicy, parse_retry_after
from ._transport import (
    ACCEPT_ENCODING,
    Backend,
    HttpxBackend,
    Reply,
    RequestHeaders,
    httpx2_default_headers,
    new_httpx_client,
    parse_url,
    ssl_context,
)
from ._version import __version__

T = TypeVar("T")

logger = logging.getLogger("billingos")

Method = Literal["GET", "POST", "PATCH", "DELETE"]
MAX_BODY_BYTES = 100_000  # the server refuses larger bodies (CONTRACT §1)

USER_AGENT = f"billingos-python/{__version__} httpx2/{httpx2.__version__} python/{platform.python_version()}"


class RequestOptions(TypedDict, total=False):
    """Per-call options every API method accepts as keyword arguments.

    Example::

        await billing.customers.get("cus_1", timeout=5, max_retries=0, extra_headers={"X-Trace": "abc"})
    """

    timeout: TimeoutTypes | None
    """Seconds each attempt of this call may take in all (or an :class:`httpx2.Timeout`, per phase);
    ``None``: the client's."""
    max_retries: int | None
    """Retries after the first attempt for this call; ``None``: the client's."""
    extra_headers: Mapping[str, str] | None
    """Headers added to this call (they may override the SDK's, ``Authorization`` excepted)."""


def path(*segments: str) -> str:
    """Join path segments, each percent-encoded as exactly one segment.

    ``path("customers", "../admin")`` is ``/customers/..%2Fadmin``: no id can reach another route.
    """
    return "/" + "/".join(_segment(s) for s in segments)


class _Route(str):
    """A filled path that remembers its template (``/customers/{customer_id}``) for tracing."""

    __slots__ = ("template",)
    template: str

    def __new__(cls, filled: str, template: str) -> _Route:
        route = super().__new__(cls, filled)
        route.template = template
        return route


def route(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` filled by ``values[name]``, each one segment (as :func:`path`).

    The result is the path as a ``str``; its ``template`` attribute is what spans show instead of the
    filled path, so that a customer id never reaches trace data.

    Example::

        route("/customers/{customer_id}", customer_id="cus_1")  # "/customers/cus_1"
    """
    return _Route(template.format_map({k: _segment(v) for k, v in values.items()}), template)


def opaque_route(url_path: str) -> str:
    """A caller's own path (``billing.request``) whose template is ``{path}``: which of its segments
    are ids is unknown, so spans show none of them."""
    return _Route(url_path, "{path}")


def _segment(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValidationError("An id must not contain CR or LF characters.", code="invalid_argument")
    try:
        encoded = quote(value, safe="")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") has no UTF-8 form
        raise _not_unicode("An id") from None
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")  # dot segments would be resolved away by URL parsers
    return encoded


def _not_unicode(what: str) -> ValidationError:
    return ValidationError(
        f"{what} must be valid Unicode text: it contains a lone surrogate (e.g. '\\ud800').",
        code="invalid_argument",
    )


def new_request_id() -> str:
    """``req_`` + 24 hex characters, as the server expects (CONTRACT §1).

    From ``random``, not ``secrets``: an id only has to be unique, and ``os.urandom`` is a system call
    per request. ``random`` reseeds itself in a forked child, so sibling workers never share a sequence.
    """
    return f"req_{random.getrandbits(96):024x}"


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch  # what percent-encoding leaves as it is
_PLAIN_KEYS: set[str] = set()  # query names seen to need no encoding


def encode_query(params: Mapping[str, str | int]) -> str:
    """``urlencode(params, quote_via=quote)``, without its per-value overhead for plain ids and numbers.

    Raises ``UnicodeEncodeError`` for text with a lone surrogate, as ``urlencode`` does.
    """
    parts = []
    for key, value in params.items():
        text = value if type(value) is str else str(value)
        if key not in _PLAIN_KEYS:
            if not _UNRESERVED(key):
                key = quote(key, safe="")
            elif len(_PLAIN_KEYS) < 256:  # the SDK's own parameter names: a handful, checked once
                _PLAIN_KEYS.add(key)
        if not _UNRESERVED(text):
            text = quote(text, safe="")
        parts.append(f"{key}={text}")
    return "&".join(parts)


@attrs.define(eq=False)
class Transport:
    """What every copy made by ``with_options`` shares: the backend (its pool) and its lifecycle.

    Building the SDK's own backend costs tens of milliseconds the first time (the verifying TLS context,
    importing httpcore2 or aiohttp). A client created inside a running event loop therefore builds it on
    its first request, in a worker thread, so that no SDK call stalls the loop; elsewhere (a script, the
    module level of an app) it is built at once.
    """

    backend: Backend | None
    """``None`` until :meth:`started` has built it (a client created inside a running loop)."""
    default_headers: httpx2.Headers
    """Headers the backend's client adds by default; each requester merges them into its own once."""
    factory: Callable[[], Backend] | None = None
    closed: bool = False
    budget: RateBudget | None = None
    """The rate budget every copy of the client spends (issue 15); ``None``: off."""
    _building: threading.Lock = attrs.field(factory=threading.Lock)

    @classmethod
    def create(cls, settings: Settings, client: httpx2.AsyncClient | None) -> Transport:
        check_http_client(settings, client)
        if client is not None:
            backend = HttpxBackend(client, owns_client=False)
            return cls(backend, backend.default_headers)
        factory: Callable[[], Backend]
        if settings.http_backend == "aiohttp":
            factory, headers = functools.partial(_aiohttp_backend, settings), httpx2.Headers()
        else:
            factory, headers = functools.partial(_own_httpx_backend, settings), httpx2_default_headers()
        if in_event_loop():
            return cls(None, headers, factory)
        return cls(factory(), headers)

    async def started(self) -> Backend:
        """The backend, built now in a worker thread if it was not yet."""
        backend = self.backend
        if backend is None:
            # The event loop's own worker threads: anyio.to_thread would itself import ~25 ms of anyio
            # modules on the loop, the stall this avoids.
            loop = running_asyncio_loop()
            if loop is not None:
                backend = await loop.run_in_executor(None, self.build)
            else:  # trio (the only other loop the SDK runs on), already imported since it is running
                trio: Any = sys.modules["trio"]
                backend = await trio.to_thread.run_sync(self.build)
        return backend

    def build(self) -> Backend:
        """The backend, built now in this thread if it was not yet (blocking: not on an event loop)."""
        with self._building:  # concurrent first calls: one builds, the others find it built
            backend = self.backend
            if backend is None:
                assert self.factory is not None
                backend = self.factory()
                _import_anyio_now()
                self.backend = backend
            return backend

    @property
    def is_closed(self) -> bool:
        """Closed by the SDK, or (a caller's own ``http_client``) by its owner."""
        return self.closed or (self.backend is not None and self.backend.is_closed)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.backend is not None:
            await self.backend.aclose()


def _import_anyio_now() -> None:
    """Resolve anyio's lazily imported names (connect_tcp, streams, ...) here rather than on the loop.

    anyio imports most of its modules on first use of a name; httpcore2's network backend and the
    SDK's retries use several on the first request, ~25 ms of imports that would otherwise stall the loop.
    """
    import anyio

    for name in dir(anyio):  # its lazily imported public names (anyio >= 4.12)
        if not name.startswith("_"):
            getattr(anyio, name, None)


def _own_httpx_backend(settings: Settings) -> Backend:
    client = new_httpx_client(settings.limits, settings.timeout)
    # httpcore2 imports its network backend on the first connect, on the event loop: import it here
    # (off the loop when a loop is running, see Transport) so that the first request does not stall it.
    import httpcore2._backends.anyio

    if "trio" in sys.modules:
        import httpcore2._backends.trio  # noqa: F401
    return HttpxBackend(client, owns_client=True)


def _aiohttp_backend(settings: Settings) -> Backend:
    from ._config import AIOHTTP_MISSING

    try:  # imported on first use: aiohttp takes ~150 ms to import and most users never ask for it
        from ._aiohttp_backend import AiohttpBackend
    except ImportError as exc:
        raise ValidationError(f"{AIOHTTP_MISSING} ({exc})", code="invalid_argument") from None
    return AiohttpBackend(settings, ssl_context())


class Requester:
    """Sends requests for one client configuration over a (possibly shared) :class:`Transport`."""

    __slots__ = ("_base_headers", "_base_url", "_max_bytes", "_timeout", "policy", "settings", "transport")

    def __init__(self, settings: Settings, transport: Transport, policy: RetryPolicy) -> None:
        self.settings = settings
        self.transport = transport
        self.policy = policy
        self._base_url = settings.api_url
        ours = {
            "authorization": f"Bearer {settings.secret_key.reveal()}",
            "user-agent": USER_AGENT,
            "accept": "application/json",
            # Only what BodyReader inflates with a bound (a caller's client may ask for br or zstd).
            "accept-encoding": ACCEPT_ENCODING,
        }
        # RequestHeaders, not a dict: its repr masks the key, which then never shows in a traceback's
        # locals (Sentry's frame variables, pytest -l, rich's show_locals). The backend's default
        # headers (Accept-Encoding, Connection, or a caller's own client's) are merged in once, now.
        # Names are lower-case so an extra header replaces ours whatever its case.
        self._base_headers = RequestHeaders({k.lower(): v for k, v in transport.default_headers.items()})
        self._base_headers.update(ours)
        self._timeout = settings.timeout
        self._max_bytes = settings.max_response_bytes

    async def request(
        self,
        method: Method,
        url_path: str,
        *,
        decode: Callable[[Any], T],
        options: RequestOptions,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
        retry_safe: bool | None = None,
        ok_on_retry: frozenset[int] = frozenset(),
        authorization: str | None = None,
        content: bytes | None = None,
    ) -> T:
        """Send one logical call (with its retries) and return ``decode(json_body)``.

        ``authorization`` is a customer session token (``bos_session_…``) sent as the bearer of this
        call instead of the secret key; ``""`` sends no ``Authorization`` header at all (the checkout
        routes that need none). Like the secret key, the token is then held only in the
        request's ``RequestHeaders`` (whose repr masks it), never in a local of this frame.

        ``retry_safe`` defaults to True for GET and DELETE; a POST/PATCH is retried after it may
        have reached the server only when the caller says repeating it is harmless.
        ``ok_on_retry`` lists statuses that mean success when they answer a *retry*: a DELETE whose
        first response was lost gets 404 the second time because the first one worked.
        ``content`` is a JSON body already encoded (``billing.request``), sent instead of ``body``.
        """
        # ``closed``, a plain attribute: a caller's own client closed by its owner is found by the send
        # itself (httpx2 and aiohttp refuse it with RuntimeError, which _attempt reports the same way).
        if self.transport.closed:
            raise _closed_error()
        if retry_safe is None:
            retry_safe = method in ("GET", "DELETE")
        timeout = self._timeout
        deadline = self.settings.deadline
        max_retries = self.settings.max_retries
        headers = self._base_headers.copy()
        as_customer = authorization is not None
        budget = self.transport.budget
        budget_key = scope = None
        if budget is not None:
            template = getattr(url_path, "template", url_path)
            budget_key = f"{method} {url_path if template == '{path}' else template}"
            if budget.wants_scope(budget_key):
                # What the server's scoped limit counts by (CONTRACT-CUSTOMER §0.1: the body's, then the
                # query's customer_id, then a digest of the bearer token): the budget's scoped windows.
                scope = _scope(body, params, authorization)
        if authorization is not None:
            if authorization:
                headers["authorization"] = "Bearer " + authorization
            else:
                del headers["authorization"]
            del authorization  # kept out of this frame's locals (tracebacks rendered with locals)
        request_id = new_request_id()
        headers["x-request-id"] = request_id
        if options:
            if options.get("timeout") is not None:
                timeout = check_timeout(options["timeout"])
                deadline = deadline_of(options["timeout"])
            if options.get("max_retries") is not None:
                max_retries = check_max_retries(options["max_retries"])
            extra = options.get("extra_headers")
            if extra is not None:
                headers.update(_check_extra_headers(extra))
                request_id = headers["x-request-id"]
        if body is not None:
            content = _encode_body(body)
        if content is not None:
            headers["content-type"] = "application/json"
        try:
            query = "?" + encode_query(params) if params else ""
        except UnicodeEncodeError:
            raise _not_unicode("A query parameter") from None
        url = self._base_url + url_path + query
        try:
            parse_url(url)  # cached; refuses what no backend can send
        except httpx2.InvalidURL as exc:  # "URL too long": an id or filter of tens of kilobytes
            raise ValidationError(f"Cannot build the request URL: {exc}.", code="invalid_argument") from None
        call = _Call(method, url_path, url, headers, content, timeout, deadline, request_id, as_customer)
        call.budget_key = budget_key
        call.scope = scope

        traced = _tracing.CALL.get()  # tracing (issue 14): the call's span while OpenTelemetry records
        capture = CAPTURE.get()  # inside a ``with_raw_response`` call: leave the final response behind
        # The first attempt is awaited here, without the retry machinery (or a frame of it): a failure
        # hands over to the policy's retry loop.
        failure: BillingOSError | None = None
        try:
            if traced is None:
                reply = await self._attempt(call, 0, _NO_STATUSES)
            else:  # one span per attempt, a child of the call's (see _tracing)
                sent = self._attempt(call, 0, _NO_STATUSES)
                reply = await traced.attempt(sent, method, url_path, url, 0, call.request_id)
        except BillingOSError as exc:
            failure = exc
        if failure is not None:
            try:
                reply = await self._retry(call, failure, traced, retry_safe, max_retries, ok_on_retry)
            except BillingOSError as error:
                if capture is not None:
                    capture.record(error.status_code, error.headers, error.request_id)
                raise
        if capture is not None:
            answered = _headers(reply)
            capture.record(reply.status_code, answered, answered.get("x-request-id") or call.request_id)
        return _decode(reply, call, decode)

    def _retry(
        self,
        call: _Call,
        failure: BillingOSError,
        traced: _tracing.CallTrace | None,
        retry_safe: bool,
        max_retries: int,
        ok_on_retry: frozenset[int],
    ) -> Awaitable[Reply]:
        """The retries after a first attempt that failed with ``failure``, by the retry policy."""
        # did an earlier attempt possibly reach the server? (a DELETE's 404 then means it worked)
        may_have_run = isinstance(failure, (NetworkError, ServerError)) and getattr(
            failure, "_maybe_sent", True
        )

        async def attempt(retry_number: int) -> Reply:
            nonlocal may_have_run
            try:
                sent = self._attempt(call, retry_number, ok_on_retry if may_have_run else _NO_STATUSES)
                if traced is not None:
                    return await traced.attempt(
                        sent, call.method, call.path, call.url, retry_number, call.request_id
                    )
                return await sent
            except (NetworkError, ServerError) as exc:
                may_have_run = may_have_run or getattr(exc, "_maybe_sent", True)
                raise

        return self.policy.retry(
            failure,
            attempt,
            max_retries=max_retries,
            retry_safe=retry_safe,
            on_retry=lambda exc, n, wait: _log_retry(call, exc, n, wait),
        )

    async def _attempt(self, call: _Call, retry_number: int, ok_on_retry: frozenset[int]) -> Reply:
        if self.transport.closed:
            raise _closed_error()  # e.g. closed while this call waited to retry
        budget = self.transport.budget
        key = call.budget_key
        scoped = None
        if budget is not None and key is not None:
            if not budget.acquired_now(key):
                await budget.acquire(key, self.settings.rate_limit_wait)
            scoped = None if call.scope is None else budget.scoped_key(key, call.scope)
            if scoped is not None:  # the route's scoped window (per customer or token) too
                try:
                    await budget.acquire(scoped, self.settings.rate_limit_wait)
                except BaseException:
                    budget.release_now(key)
                    raise
        started = time.perf_counter()
        try:
            backend = self.transport.backend or await self.transport.started()
            reply = await backend.send(
                call.method,
                call.url,
                call.headers,
                call.content,
                call.timeout,
                self._max_bytes,
                call.deadline,
            )
        except BillingOSError as error:  # NetworkError, RequestTimeoutError, ResponseDecodeError
            if budget is not None and key is not None:  # no answer: release the reservation only
                await budget.settle(key, None)
                if scoped is not None:
                    await budget.settle_scoped(scoped, None)
            if self.transport.is_closed:  # the pool was closed under this call: that is the cause
                raise _closed_error() from error
            error.request_id = call.request_id
            _log_attempt(call, retry_number, started, None, error)
            raise
        except BaseException as error:  # closed in flight (RuntimeError), cancelled, ...
            if budget is not None and key is not None:
                budget.release_now(key)
                if scoped is not None:
                    budget.release_now(scoped)
            if not isinstance(error, RuntimeError) or not self.transport.is_closed:
                raise
            raise _closed_error() from None  # closed while this call was in flight
        if budget is not None and key is not None:
            if not budget.settled_now(key, reply.headers):
                await budget.settle(key, reply.headers)
            if scoped is not None:
                await budget.settle_scoped(scoped, reply.headers)
            elif call.scope is not None or reply.status_code == 429:
                budget.learn_scope(key, reply.headers, reply.status_code == 429)
        _log_attempt(call, retry_number, started, reply.status_code, None)
        # Redirects are not followed (a secret key must not be replayed to another URL): a 3xx is an error.
        if reply.status_code >= 300 and reply.status_code not in ok_on_retry:
            refused = error_from_response(reply, call.request_id)
            if reply.status_code == 401 and not call.as_customer and call.path.startswith(_ADMIN_ROUTES):
                _explain_dashboard_only(refused, call)
            raise refused
        return reply


class _Call:
    """One logical call as built once and sent by every attempt."""

    __slots__ = (
        "as_customer",
        "budget_key",
        "content",
        "deadline",
        "headers",
        "method",
        "path",
        "request_id",
        "scope",
        "timeout",
        "url",
    )

    def __init__(
        self,
        method: str,
        path: str,
        url: str,
        headers: RequestHeaders,
        content: bytes | None,
        timeout: httpx2.Timeout,
        deadline: float | None,
        request_id: str,
        as_customer: bool = False,
    ) -> None:
        self.as_customer = as_customer
        self.scope: str | None = None
        """What the server's scoped limit counts this call by (a customer id, or ``token_`` and a
        digest of the session token); ``None``: nothing, or no budget."""
        self.budget_key: str | None = None
        """``"GET /v1/usage/check"``: the route whose rate budget the call spends (``None``: no budget)."""
        self.deadline = deadline
        self.method = method
        self.path = path
        self.url = url
        self.headers = headers
        self.content = content
        self.timeout = timeout
        self.request_id = request_id


_NO_STATUSES: frozenset[int] = frozenset()


def _scope(
    body: Mapping[str, Any] | None, params: Mapping[str, str | int] | None, authorization: str | None
) -> str | None:
    """The tracker of the server's scoped throttler for this request: ``customer_id`` in the body, then
    in the query, then ``token_`` + the first 16 hex digits of the bearer token's SHA-256."""
    for source in (body, params):
        if source is not None:
            customer = source.get("customer_id")
            if isinstance(customer, str) and customer:
                return customer
    if authorization:
        return "token_" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    return None


_ADMIN_ROUTES = ("/customers", "/subscriptions")
"""Routes the public BillingOS backend guards with a dashboard login, not the secret key (issue 13)."""

DASHBOARD_ONLY_HINT = (
    "This BillingOS server accepts only dashboard sessions (a user signed in to the BillingOS "
    "dashboard) on /customers and /subscriptions, not a secret key. To list plans, start a checkout, "
    "open a billing portal or read a customer's state from your server, use the customer-scoped calls: "
    'billing.as_customer(user_id) (docs: docs/selling.md, "Selling from your server").'
)


def _explain_dashboard_only(error: BillingOSError, call: _Call) -> None:
    """A 401 to the secret key on an admin route: say why, keep the server's code, status and request id.

    A key the server does not know at all ("Invalid API key", as the embedded server answers a wrong
    key) is the key's fault, not the route's: that message is left as it is.
    """
    if error.message == "Invalid API key":
        return
    error.message = f"{error.message} ({call.method} {call.path}). {DASHBOARD_ONLY_HINT}"
    error.args = (error.message,)


def _closed_error() -> BillingOSError:
    return BillingOSError(
        "This BillingOS client is closed; create a new one (or use it inside `async with`).",
        code="client_closed",
    )


_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 9110 token
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")  # printable ASCII and tab: what httpx can encode


def check_options(options: RequestOptions) -> None:
    """Refuse bad per-call options at once: a method that sends several requests (``prefetch``) checks
    them before the first, as :meth:`Requester.request` does before its one."""
    if options.get("timeout") is not None:
        check_timeout(options["timeout"])
    if options.get("max_retries") is not None:
        check_max_retries(options["max_retries"])
    extra = options.get("extra_headers")
    if extra is not None:
        _check_extra_headers(extra)


def _check_extra_headers(extra: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(extra, Mapping):
        raise ValidationError("extra_headers must be a mapping of str to str.", code="invalid_argument")
    result = {}
    for name, value in extra.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValidationError("extra_headers must map str to str.", code="invalid_argument")
        if name.lower() == "authorization":
            raise ValidationError(
                "extra_headers may not set Authorization; the client's secret key is always used.",
                code="invalid_argument",
            )
        if any(c in name + value for c in "\r\n\0"):
            raise ValidationError(f"Header {name!r} contains CR, LF or NUL.", code="invalid_argument")
        if not _HEADER_NAME.match(name):
            raise ValidationError(
                f"Header name {name!r} is not a valid HTTP token (letters, digits, !#$%&'*+-.^_`|~).",
                code="invalid_argument",
            )
        if not _HEADER_VALUE.match(value):
            raise ValidationError(
                f"Header {name!r} must be printable ASCII (encode other text first).", code="invalid_argument"
            )
        result[name.lower()] = value
    return result


def _encode_body(body: Mapping[str, Any]) -> bytes:
    return encode_json({k: v for k, v in body.items() if v is not None})


def encode_json(value: Any) -> bytes:
    """``value`` as a compact JSON body, refused (``ValidationError``) when not JSON or too large."""
    try:
        content = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        raise _not_unicode("A request field") from None
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep to encode
        raise ValidationError(
            f"The request body is not JSON-serializable: {exc}. Metadata values must be JSON types.",
            code="invalid_argument",
        ) from None
    if len(content) > MAX_BODY_BYTES:
        raise ValidationError(
            f"The request body is {len(content)} bytes; BillingOS accepts at most {MAX_BODY_BYTES}.",
            code="invalid_argument",
        )
    return content


_STATUS_ERRORS: Mapping[int, type[BillingOSError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthorizationError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitError,
}


def error_from_response(response: Reply, request_id: str) -> BillingOSError:
    """The exception for an error response (CONTRACT §2), whatever its body: JSON, HTML or empty."""
    status = response.status_code
    code: str | None = None
    message: str | None = None
    details: Mapping[str, Any] = {}
    body_request_id: str | None = None
    try:
        payload = json.loads(response.content)
    except (ValueError, RecursionError):  # not JSON, or nested too deep for the JSON reader
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            message = error.get("message") if isinstance(error.get("message"), str) else None
            details = error["details"] if isinstance(error.get("details"), dict) else {}
            body_request_id = error.get("requestId") if isinstance(error.get("requestId"), str) else None
        elif isinstance(payload.get("message"), str):
            message = payload["message"]
    if not message:
        reason = response.reason_phrase or "error"
        message = f"HTTP {status} {reason}" + ("" if payload is not None else " (no JSON error body)")
    cls: type[BillingOSError] = _STATUS_ERRORS.get(status, ServerError if status >= 500 else BillingOSError)
    if cls is ValidationError and message == "quota_exceeded":
        cls = QuotaExceededError
    kwargs: dict[str, Any] = {
        "status_code": status,
        "code": code or f"http_{status}",
        "details": details,
        "request_id": body_request_id or response.headers.get("x-request-id") or request_id,
        "headers": _headers(response),
    }
    if cls is RateLimitError:
        kwargs["retry_after"] = parse_retry_after(response.headers.get("retry-after"))
        kwargs["rate_limit"] = RateLimit.from_headers(response.headers)
    return cls(message, **kwargs)


def _headers(response: Reply) -> httpx2.Headers:
    """The response headers as the ``httpx2.Headers`` errors carry (aiohttp's multidict converted)."""
    headers = response.headers
    if isinstance(headers, httpx2.Headers):
        return headers
    return httpx2.Headers(list(headers.items()))


def _read_json(content: bytes) -> Any:
    """``json.loads(content)``, ``None`` for an empty body.

    Read as UTF-8 text first (what every JSON answer is): ``json.loads`` of bytes spends longer
    detecting the encoding than decoding it. Anything that fails that way (a BOM, UTF-16, not JSON)
    gets ``json.loads``'s own reading, and its error.
    """
    try:
        return json.loads(content.decode())
    except ValueError:  # UnicodeDecodeError, JSONDecodeError
        if not content.strip():
            return None
        return json.loads(content)


def _decode(response: Reply, call: _Call, decode: Callable[[Any], T]) -> T:
    """JSON body (``None`` when empty, e.g. 204) through ``decode``; any failure is a ResponseDecodeError."""
    content = response.content
    try:
        data = _read_json(content)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, nesting too deep to read
        detail = "the body is not JSON"
    else:
        try:
            return decode(data)
        except Exception as exc:  # whatever a malformed body makes cattrs raise
            detail = _convert.describe(exc)
        del data
    # The body may hold a session token or personal data: keep it out of this frame's locals, which
    # tracebacks rendered with locals (Sentry, rich, pytest -l) would show.
    del content
    raise ResponseDecodeError(
        f"Unexpected response body from {call.method} {call.path} (HTTP {response.status_code}): {detail}",
        status_code=response.status_code,
        code="decode_error",
        request_id=response.headers.get("x-request-id") or call.request_id,
        headers=_headers(response),
    )


def _log_attempt(
    call: _Call, retry_number: int, started: float, status: int | None, error: BillingOSError | None
) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    outcome = str(status) if status is not None else f"failed ({type(error).__name__})"
    logger.info(
        "%s %s -> %s in %.1f ms (request_id=%s, retry=%d)",
        call.method,
        call.path,
        outcome,
        elapsed_ms,
        call.request_id,
        retry_number,
    )


def _log_retry(call: _Call, exc: BaseException, number: int, wait: float) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "Retrying %s %s in %.2f s (retry %d, request_id=%s) after %s",
            call.method,
            call.path,
            wait,
            number,
            call.request_id,
            type(exc).__name__,
        )
