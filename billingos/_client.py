"""``AsyncBillingOS``: settings + one pooled transport + the resources."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import httpx2

from . import _logs
from ._budget import RateBudget, budget_of
from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Environment,
    HttpBackend,
    Settings,
    TimeoutTypes,
    evolve,
    resolve,
)
from ._errors import ValidationError
from ._http import Requester, Transport
from ._resources import (
    AsyncCustomers,
    AsyncCustomersWithRawResponse,
    AsyncEntitlements,
    AsyncEntitlementsWithRawResponse,
    AsyncSessionTokens,
    AsyncSessionTokensWithRawResponse,
    AsyncSubscriptions,
    AsyncSubscriptionsWithRawResponse,
    AsyncUsage,
    AsyncUsageWithRawResponse,
)
from ._resources._base import RequestOptions, Unpack
from ._retry import RetryPolicy
from ._tracing import traced

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Self

    from ._cache import EntitlementCache
    from ._customer_session import AsyncCustomerSession, CustomerArguments
    from ._models import CustomerEntitlement
    from ._recorder import RecorderOptions, UsageRecorder
    from ._response import RateLimit, RawResponse
    from ._tokens import TokenCache

P = ParamSpec("P")
R = TypeVar("R")


def _is_cache(value: object) -> bool:
    """``isinstance(value, EntitlementCache)``, importing the cache module only when one is passed."""
    from ._cache import EntitlementCache

    return isinstance(value, EntitlementCache)


class _Shortcut(Generic[P, R]):
    """A class attribute that reads as ``client.<resource>.<method>``, with the method's real signature."""

    def __init__(self, resource: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.resource = resource
        self.method = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> _Shortcut[P, R]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, R]: ...
    def __get__(self, obj: object | None, owner: type) -> _Shortcut[P, R] | Callable[P, R]:
        if obj is None:
            return self
        return getattr(getattr(obj, self.resource), self.method)  # type: ignore[no-any-return]


async def _customer_grants(
    requester: Requester,
    session_tokens: AsyncSessionTokens,
    tokens: _TokenSlot,
    customer_id: str,
    options: RequestOptions,
) -> list[CustomerEntitlement]:
    """``as_customer(customer_id).entitlements.list()``, for ``entitlements.prefetch`` (no client cycle)."""
    from ._customer_session import AsyncCustomerSession, customer_arguments

    args = customer_arguments(customer_id, None, None, None, 3600, False)
    session = AsyncCustomerSession(requester, session_tokens, tokens.get(), args)
    return await session.entitlements.list(**options)


class _TokenSlot:
    """The session-token cache of ``as_customer``, made on first use, shared by ``with_options`` copies."""

    __slots__ = ("_cache", "_lock")

    def __init__(self) -> None:
        self._cache: TokenCache | None = None
        self._lock = threading.Lock()

    def get(self) -> TokenCache:
        cache = self._cache
        if cache is None:
            from ._tokens import TokenCache  # on use: only code that acts as a customer needs it

            with self._lock:
                cache = self._cache
                if cache is None:
                    cache = self._cache = TokenCache()
        return cache

    def __repr__(self) -> str:
        return f"<_TokenSlot {self._cache!r}>"


class AsyncBillingOS:
    """The asynchronous BillingOS client. Create one per process and share it.

    Args:
        secret_key: ``sk_test_…`` or ``sk_live_…``; default ``$BILLINGOS_SECRET_KEY``.
        api_url: default ``$BILLINGOS_API_URL``, else the sandbox or live URL the key's prefix implies.
        timeout: seconds each attempt may take in all, from connecting to the last byte of the body
            (the connect phase alone at most 5 s). Default 30. An :class:`httpx2.Timeout` instead sets
            per-phase limits only (each read, write, connect, pool wait), with no bound on the whole.
        max_retries: retries after the first attempt, when a retry is safe. Default 3; 0 disables.
        limits: connection-pool limits of the SDK's own ``httpx2.AsyncClient``.
        http_client: your own ``httpx2.AsyncClient`` (proxies, custom TLS, a test transport). The SDK
            uses it as is and never closes it; ``timeout`` still applies per request.
        retry_policy: backoff settings (see :class:`RetryPolicy`).
        entitlement_cache: an :class:`EntitlementCache` that ``entitlements.check`` (and
            ``check_entitlement``) answer from; ``with_options`` copies share it. Off by default.
        http_backend: what sends the requests: ``"httpx2"`` (default; ``"httpx"`` names it too) or
            ``"aiohttp"``, a native ``aiohttp.ClientSession`` (``pip install 'billingos[aiohttp]'``;
            asyncio only): more calls per second under concurrency (figures in docs/performance.md,
            scenario 3), same pool size, timeouts, TLS and errors. Not with ``http_client``.
        max_response_bytes: the largest decoded response body accepted, default 16 MiB (a page of 100
            customers is ~100 kB). A larger one is refused while it streams, before it is decompressed
            any further, with ``ResponseDecodeError(code="response_too_large")``; its connection is closed.
        rate_budget: the :class:`RateBudget` that spends each route's server rate limit (read from the
            ``X-RateLimit-*`` headers) so that no request is sent the server would refuse; default
            (``None``/``True``) an in-memory one, ``False`` turns it off. Shared by ``with_options``
            copies. Per-route state: :attr:`rate_limits`; docs: "Running at scale".
        rate_limit_wait: seconds a call waits for its route's next window when the budget is spent,
            default 10; then ``RateLimitError(code="rate_budget_exhausted")`` without sending. The usage
            recorder's tracks wait as long as it takes; a cached check with a stale answer does not wait.

    ``None`` for any setting means its default, never "disabled".

    Example::

        async with AsyncBillingOS() as billing:            # key from BILLINGOS_SECRET_KEY
            ent = await billing.check_entitlement("user_42", "api_calls")
            if ent.has_access:
                await billing.track_usage("user_42", "api_calls")
    """

    session_tokens: AsyncSessionTokens
    """Mint and revoke session tokens for your front end."""
    entitlements: AsyncEntitlements
    """Check feature access."""
    usage: AsyncUsage
    """Track metered usage and read usage metrics."""
    customers: AsyncCustomers
    """Create, fetch, update, delete and list customers."""
    subscriptions: AsyncSubscriptions
    """Create, change, cancel and reactivate subscriptions."""

    def __init__(
        self,
        secret_key: str | None = None,
        *,
        api_url: str | None = None,
        timeout: TimeoutTypes | None = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        limits: httpx2.Limits | None = None,
        http_client: httpx2.AsyncClient | None = None,
        retry_policy: RetryPolicy | None = None,
        entitlement_cache: EntitlementCache | None = None,
        http_backend: HttpBackend | None = None,
        max_response_bytes: int | None = None,
        rate_budget: RateBudget | bool | None = None,
        rate_limit_wait: float | None = None,
    ) -> None:
        try:
            settings = resolve(
                secret_key,
                api_url,
                timeout,
                max_retries,
                limits,
                http_backend=http_backend,
                max_response_bytes=max_response_bytes,
                rate_limit_wait=rate_limit_wait,
            )
        finally:
            del secret_key  # only the masked SecretKey from here on, even in a traceback's locals
        self._init_from(settings, http_client, retry_policy, entitlement_cache, budget_of(rate_budget))

    @classmethod
    def _from_settings(
        cls,
        settings: Settings,
        http_client: httpx2.AsyncClient | None,
        retry_policy: RetryPolicy | None,
        entitlement_cache: EntitlementCache | None = None,
        budget: RateBudget | None = None,
    ) -> AsyncBillingOS:
        """Build from already-resolved settings (the sync facade resolves them in the caller's thread)."""
        client = object.__new__(cls)
        client._init_from(settings, http_client, retry_policy, entitlement_cache, budget)
        return client

    def _init_from(
        self,
        settings: Settings,
        http_client: httpx2.AsyncClient | None,
        retry_policy: RetryPolicy | None,
        entitlement_cache: EntitlementCache | None,
        budget: RateBudget | None = None,
    ) -> None:
        if entitlement_cache is not None and not _is_cache(entitlement_cache):
            raise ValidationError(
                f"entitlement_cache must be an EntitlementCache, not {type(entitlement_cache).__name__}.",
                code="invalid_argument",
            )
        _logs.setup_from_env()
        transport = Transport.create(settings, http_client)
        transport.budget = budget
        self._setup(settings, transport, retry_policy or RetryPolicy(), entitlement_cache, _TokenSlot())

    def _setup(
        self,
        settings: Settings,
        transport: Transport,
        policy: RetryPolicy,
        cache: EntitlementCache | None,
        tokens: _TokenSlot,
    ) -> None:
        self._requester = requester = Requester(settings, transport, policy)
        self._entitlement_cache = cache
        self._tokens = tokens
        self.session_tokens = AsyncSessionTokens(requester)
        grants = functools.partial(_customer_grants, requester, self.session_tokens, tokens)
        self.entitlements = AsyncEntitlements(requester, cache, grants)
        self.usage = AsyncUsage(requester, cache)
        self.customers = AsyncCustomers(requester)
        self.subscriptions = AsyncSubscriptions(requester)

    # -- the Node SDK's headline calls --------------------------------------------------------

    create_session_token = _Shortcut("session_tokens", AsyncSessionTokens.create)
    """Shortcut for ``session_tokens.create`` (Node: ``createSessionToken``)."""
    check_entitlement = _Shortcut("entitlements", AsyncEntitlements.check)
    """Shortcut for ``entitlements.check`` (Node: ``checkEntitlement``)."""
    track_usage = _Shortcut("usage", AsyncUsage.track)
    """Shortcut for ``usage.track`` (Node: ``trackUsage``)."""

    @property
    def with_raw_response(self) -> AsyncBillingOSWithRawResponse:
        """Every resource's methods and the shortcuts, each returning a :class:`RawResponse`.

        ``billing.with_raw_response.customers`` is ``billing.customers.with_raw_response``.

        Example::

            raw = await billing.with_raw_response.check_entitlement("user_42", "api_calls")
            print(raw.status_code, raw.rate_limit, raw.parse().has_access)
        """
        return AsyncBillingOSWithRawResponse(self)

    @traced("request")
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = False,
        **options: Unpack[RequestOptions],
    ) -> RawResponse[Any]:
        """Call any BillingOS route, through the SDK's own request path: the escape hatch.

        The request goes to ``api_url + path`` with the secret key, a fresh ``X-Request-Id``, the
        client's timeouts, retries, error mapping, logging and response-size limit, as every other
        call. ``parse()`` of the result is the decoded JSON body (``None`` for an empty one).

        Args:
            method: ``"GET"``, ``"POST"``, ``"PUT"``, ``"PATCH"`` or ``"DELETE"`` (any case).
            path: a path under ``api_url``, starting with ``/`` (``"/v1/usage/metrics"``). A full URL,
                ``?``, ``#``, CR/LF and ``.``/``..`` segments are refused; the query goes in ``params``.
            params: query parameters; ``None`` values are left out, booleans sent as ``true``/``false``.
            json: the JSON body (any JSON value; ``None``: no body), at most 100 000 bytes encoded.
            idempotent: say that repeating this POST, PUT or PATCH is harmless, so it is retried after a
                lost response as GET and DELETE always are. Default: retried only when the server
                cannot have run it (connection refused, 429, 502/503/504 before it was sent).
            **options: ``timeout``, ``max_retries``, ``extra_headers``, as for every call.

        Raises:
            ValidationError: a bad argument (before sending), or the server's 400/422.
            BillingOSError: the same exceptions as any other call, for an error status or no response.

        Example::

            raw = await billing.request("GET", "/v1/usage/metrics", params={"customer_id": "user_42"})
            for metric in raw.parse()["metrics"]:
                print(metric["feature_key"], metric["consumed"])
        """
        from ._raw_request import send  # on use: most programs never leave the wrapped routes

        return await send(
            self._requester, method, path, params=params, json=json, idempotent=idempotent, options=options
        )

    # -- configuration -----------------------------------------------------------------------

    @property
    def environment(self) -> Environment:
        """``"test"`` or ``"live"``, from the key's prefix."""
        return self._requester.settings.environment

    @property
    def api_url(self) -> str:
        """The base URL requests go to (no trailing slash)."""
        return self._requester.settings.api_url

    @property
    def timeout(self) -> httpx2.Timeout:
        """The per-phase timeouts (a ``timeout`` given as a number also bounds each whole attempt)."""
        return self._requester.settings.timeout

    @property
    def max_response_bytes(self) -> int:
        """The largest decoded response body accepted."""
        return self._requester.settings.max_response_bytes

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt."""
        return self._requester.settings.max_retries

    @property
    def rate_limits(self) -> Mapping[str, RateLimit]:
        """The server's rate limit per route, as its latest responses stated it (this process's view).

        Keys are ``"METHOD /route/template"`` (the server counts per route handler); each
        :class:`RateLimit` has ``limit``, ``remaining`` and ``reset_seconds`` (from now). Empty with
        ``rate_budget=False``, and for routes not called yet or answered without rate-limit headers.

        Example::

            await billing.entitlements.check("user_42", "api_calls")
            print(billing.rate_limits["GET /v1/usage/check"])
            # RateLimit(limit=100, remaining=99, reset_seconds=59.8)
        """
        budget = self._requester.transport.budget
        return {} if budget is None else budget.rate_limits

    def with_options(
        self,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        max_response_bytes: int | None = None,
    ) -> AsyncBillingOS:
        """A client with other settings sharing this one's pool (cheap; closing either closes both).

        Example::

            fast = billing.with_options(timeout=2, max_retries=0)
            await fast.entitlements.check("user_42", "api_calls")
        """
        clone = object.__new__(AsyncBillingOS)
        clone._setup(
            evolve(self._requester.settings, timeout, max_retries, max_response_bytes),
            self._requester.transport,
            retry_policy or self._requester.policy,
            self._entitlement_cache,
            self._tokens,
        )
        return clone

    @property
    def entitlement_cache(self) -> EntitlementCache | None:
        """The :class:`EntitlementCache` checks answer from, if one was configured."""
        return self._entitlement_cache

    def usage_recorder(self, **options: Unpack[RecorderOptions]) -> UsageRecorder:
        """A background usage recorder bound to this client: ``async with billing.usage_recorder() as r``.

        See :class:`UsageRecorder` for the options and guarantees.
        """
        from ._recorder import UsageRecorder  # on use: the recorder brings sqlite3 and friends

        return UsageRecorder(self, **options)

    def as_customer(
        self,
        external_user_id: str,
        *,
        external_organization_id: str | None = None,
        allowed_operations: Sequence[str] | None = None,
        session_token: str | None = None,
        expires_in: int = 3600,
        revoke_on_close: bool = False,
    ) -> AsyncCustomerSession:
        """A handle acting as one of your customers: pricing, checkout, portal, state and features.

        Args:
            external_user_id: your own id of the user.
            external_organization_id: your id of the user's organization, if any.
            allowed_operations: stored in the tokens minted for this handle (the public backend does
                not enforce them); part of the token cache's key.
            session_token: a ``bos_session_…`` token to use as is; it is never minted anew, and a 401
                saying it expired or was revoked is raised. Default: the SDK mints and caches tokens.
            expires_in: the lifetime in seconds (60-86400) of tokens minted for this handle.
            revoke_on_close: revoke the token the handle used when it is closed (never a given one).

        Nothing is sent until the first call. Tokens are cached on the client (and its
        ``with_options`` copies) per user, organization and operations: see
        :class:`AsyncCustomerSession`.

        Example::

            async with billing.as_customer("user_42") as customer:
                catalog = await customer.products.list()
                state = await customer.state()
        """
        from ._customer_session import customer_arguments  # on use, as the recorder

        try:
            args = customer_arguments(
                external_user_id,
                external_organization_id,
                allowed_operations,
                session_token,
                expires_in,
                revoke_on_close,
            )
        finally:
            del session_token  # only the masked SessionToken from here on
        return self._customer_session(args)

    def _customer_session(self, args: CustomerArguments) -> AsyncCustomerSession:
        """The handle for arguments already checked (the blocking facade checks them in the caller)."""
        from ._customer_session import AsyncCustomerSession

        return AsyncCustomerSession(self._requester, self.session_tokens, self._tokens.get(), args)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True after :meth:`aclose` (or once your own ``http_client`` was closed by its owner)."""
        return self._requester.transport.is_closed

    async def aclose(self) -> None:
        """Close the connection pool (unless it is your own ``http_client``), and stop the entitlement
        cache's listening for the fleet's tracks (with a Redis store). Idempotent."""
        cache = self._entitlement_cache
        if cache is not None:
            await cache._stop_listening()
        await self._requester.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        requester = getattr(self, "_requester", None)  # absent if __init__ raised: still printable
        if requester is None:
            return "<AsyncBillingOS (not initialised)>"
        settings = requester.settings
        return (
            f"<AsyncBillingOS environment={settings.environment!r} api_url={settings.api_url!r} "
            f"secret_key={settings.secret_key.masked!r}>"
        )


class AsyncBillingOSWithRawResponse:
    """``billing.with_raw_response``: the resources' ``with_raw_response`` proxies and the shortcuts.

    Example::

        raw = await billing.with_raw_response.track_usage("user_42", "api_calls", 3)
        print(raw.status_code, raw.parse().usage)
    """

    __slots__ = ("customers", "entitlements", "session_tokens", "subscriptions", "usage")

    session_tokens: AsyncSessionTokensWithRawResponse
    """``billing.session_tokens.with_raw_response``."""
    entitlements: AsyncEntitlementsWithRawResponse
    """``billing.entitlements.with_raw_response``."""
    usage: AsyncUsageWithRawResponse
    """``billing.usage.with_raw_response``."""
    customers: AsyncCustomersWithRawResponse
    """``billing.customers.with_raw_response``."""
    subscriptions: AsyncSubscriptionsWithRawResponse
    """``billing.subscriptions.with_raw_response``."""

    def __init__(self, client: AsyncBillingOS) -> None:
        self.session_tokens = client.session_tokens.with_raw_response
        self.entitlements = client.entitlements.with_raw_response
        self.usage = client.usage.with_raw_response
        self.customers = client.customers.with_raw_response
        self.subscriptions = client.subscriptions.with_raw_response

    create_session_token = _Shortcut("session_tokens", AsyncSessionTokensWithRawResponse.create)
    """``session_tokens.with_raw_response.create``."""
    check_entitlement = _Shortcut("entitlements", AsyncEntitlementsWithRawResponse.check)
    """``entitlements.with_raw_response.check`` (always asks BillingOS: no entitlement cache)."""
    track_usage = _Shortcut("usage", AsyncUsageWithRawResponse.track)
    """``usage.with_raw_response.track``."""
