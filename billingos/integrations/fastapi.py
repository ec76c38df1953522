"""FastAPI and Starlette integration: one client per app, entitlement gates, usage metering, session tokens.

Needs the ``fastapi`` extra: ``pip install 'billingos[fastapi]'`` (FastAPI brings Starlette).

- :func:`billingos_lifespan`: opens an :class:`~billingos.AsyncBillingOS` and its usage recorder on
  startup, closes both on shutdown (the recorder drains first); :func:`get_billingos`,
  :func:`get_usage_recorder` (and the ``Annotated`` aliases :data:`BillingOSDep`,
  :data:`UsageRecorderDep`) hand them to handlers.
- :class:`RequireEntitlement`: a dependency that answers 403 when the customer has no access, 503 when
  BillingOS cannot be asked, and returns the :class:`~billingos.Entitlement` otherwise.
- :class:`TrackUsage` + :class:`BillingOSMiddleware`: usage recorded through the recorder once a 2xx
  response has been sent, never for errors.
- :func:`session_token_route` (FastAPI) and :func:`session_token_starlette_route` (Starlette): the
  equivalent of the Node SDK's ``createSessionRoute``.
- :func:`billing_router` (FastAPI) and :func:`billing_starlette_routes` (Starlette): selling from your
  server: pricing, checkout, free plans, portal, state and feature checks of the signed-in user, for a
  front end that holds no token (see docs/selling.md).

Example::

    from typing import Annotated

    from fastapi import Depends, FastAPI, Request

    from billingos import AsyncBillingOS, Entitlement
    from billingos.integrations.fastapi import (
        BillingOSMiddleware, RequireEntitlement, TrackUsage, billingos_lifespan, session_token_route,
    )

    def current_user(request: Request) -> str | None:      # your own authentication
        return request.headers.get("x-user-id")

    app = FastAPI(lifespan=billingos_lifespan(AsyncBillingOS))   # key from BILLINGOS_SECRET_KEY
    app.add_middleware(BillingOSMiddleware)                      # needed by TrackUsage
    app.include_router(session_token_route(current_user, expires_in=900))

    @app.get("/search", dependencies=[Depends(TrackUsage("api_calls", customer_id=current_user))])
    async def search(
        ent: Annotated[Entitlement, Depends(RequireEntitlement("api_calls", customer_id=current_user))],
    ) -> dict[str, float | None]:
        return {"remaining": ent.remaining}

Error bodies have FastAPI's shape: ``{"detail": {"error": ..., "message": ..., ...}}``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import attrs

try:
    from fastapi import APIRouter, Depends, HTTPException
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "billingos.integrations.fastapi needs FastAPI: pip install 'billingos[fastapi]' "
        f"(could not import it: {exc})"
    ) from exc

from .. import _validate as check
from .._cache import UNAVAILABLE_ERRORS
from .._client import AsyncBillingOS
from .._errors import BillingOSError, RateLimitError
from .._models import Entitlement
from .._recorder import RecorderOptions, SyncUsageRecorder, UsageRecorder
from . import _NO_STORE, _denied_detail, _error_detail, _logger, _selling, _session_body, _user_id

__all__ = [
    "STATE_KEY",
    "BillingOSDep",
    "BillingOSMiddleware",
    "BillingOSState",
    "BillingOSUnavailable",
    "ClientSource",
    "CustomerDetails",
    "EntitlementDenied",
    "PendingUsage",
    "RequireEntitlement",
    "TrackUsage",
    "UsageRecorderDep",
    "billing_router",
    "billing_starlette_routes",
    "billingos_lifespan",
    "get_billingos",
    "get_usage_recorder",
    "session_token_route",
    "session_token_starlette_route",
]

STATE_KEY = "billingos"
"""The key of the :class:`BillingOSState` in the lifespan state and the attribute on ``app.state``.

Example: ``request.state.billingos.client`` or ``app.state.billingos.recorder``.
"""

_PENDING_KEY = "billingos.pending_usage"  # the ASGI scope key BillingOSMiddleware puts its list under

ClientSource = AsyncBillingOS | Callable[[], AsyncBillingOS | Awaitable[AsyncBillingOS]]
"""What :func:`billingos_lifespan` opens: a factory (``AsyncBillingOS`` itself, a function), or a client."""


# -- lifespan ----------------------------------------------------------------------------------


@attrs.frozen
class BillingOSState:
    """What :func:`billingos_lifespan` exposes while the app runs: the open client and its recorder.

    Found in the lifespan state (``request.state.billingos``) and on ``app.state.billingos``; handlers
    normally ask for the parts with :func:`get_billingos` and :func:`get_usage_recorder`.

    Example::

        state: BillingOSState = request.app.state.billingos
        await state.client.customers.get_by_external_id("user_42")
    """

    client: AsyncBillingOS
    recorder: UsageRecorder | None = None


def billingos_lifespan(
    client: ClientSource,
    *,
    recorder: bool | RecorderOptions = True,
    lifespan: Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]] | None = None,
    lifespan_state: bool = True,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """An app lifespan that opens the BillingOS client (and a usage recorder) and closes them on shutdown.

    Args:
        client: a factory called once per startup (``AsyncBillingOS`` itself, ``lambda:
            AsyncBillingOS(timeout=5)``, an async function), or an already built client. Either
            way the lifespan closes the client on shutdown, so a factory is what lets an app start
            twice (tests, reloads).
        recorder: ``True`` (default) opens ``client.usage_recorder()``; a :class:`~billingos.RecorderOptions`
            dict opens ``client.usage_recorder(**options)``; ``False`` opens none.
        lifespan: your own lifespan, run inside this one: it starts after the client is open (so it
            may use it) and stops before the client closes. The state it yields is merged in.
        lifespan_state: ``False`` for an ASGI server that does not support lifespan state (Starlette
            then fails startup with 'The server does not support "state"'): the client is only on
            ``app.state``, which handlers of a mounted sub-app do not see.

    On shutdown the recorder is closed first (it drains what was recorded), then the client.
    While the app runs, the :class:`BillingOSState` is in the lifespan state under
    ``"billingos"`` (``request.state.billingos``, which reaches mounted sub-apps too) and on
    ``app.state.billingos``; :func:`get_billingos` and :func:`get_usage_recorder` look in both.

    The context manager yields the lifespan state: ``{"billingos": BillingOSState, **yours}``, or
    ``None`` when ``lifespan_state=False`` and your lifespan yields nothing.

    Example::

        app = FastAPI(lifespan=billingos_lifespan(AsyncBillingOS, recorder={"outbox": "usage.db"}))

    To compose it the other way round, enter it from your own lifespan::

        billing_lifespan = billingos_lifespan(AsyncBillingOS)

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
            async with billing_lifespan(app) as state, open_database() as db:
                yield {**state, "db": db}
    """
    if not isinstance(recorder, (bool, Mapping)):
        raise TypeError(f"recorder must be True, False or RecorderOptions, not {type(recorder).__name__}")
    if not (isinstance(client, AsyncBillingOS) or callable(client)):
        raise TypeError(f"client must be an AsyncBillingOS or a factory of one, not {type(client).__name__}")

    @asynccontextmanager
    async def billingos_lifespan_context(app: Any) -> AsyncIterator[dict[str, Any] | None]:
        async with AsyncExitStack() as stack:
            opened = client if isinstance(client, AsyncBillingOS) else client()
            if inspect.isawaitable(opened):
                opened = await opened
            if not isinstance(opened, AsyncBillingOS):
                raise TypeError(f"the client factory returned {type(opened).__name__}, not an AsyncBillingOS")
            if opened.is_closed:
                raise RuntimeError(
                    "billingos_lifespan was given a closed client (a lifespan closes its client on "
                    "shutdown): pass a factory, e.g. billingos_lifespan(AsyncBillingOS), to start again."
                )
            stack.push_async_callback(opened.aclose)
            opened_recorder: UsageRecorder | None = None
            if recorder is not False:
                made = opened.usage_recorder() if recorder is True else opened.usage_recorder(**recorder)
                opened_recorder = await stack.enter_async_context(made)
            state = BillingOSState(opened, opened_recorder)
            app_state = getattr(app, "state", None)
            if app_state is not None:
                setattr(app_state, STATE_KEY, state)
                stack.callback(_forget_state, app_state, state)
            merged: dict[str, Any] = {}
            if lifespan is not None:
                theirs: Mapping[str, Any] | None = await stack.enter_async_context(lifespan(app))
                merged.update(theirs or {})
            if lifespan_state:
                merged[STATE_KEY] = state
            yield merged or None

    return billingos_lifespan_context


def _forget_state(app_state: Any, state: BillingOSState) -> None:
    if getattr(app_state, STATE_KEY, None) is state:
        delattr(app_state, STATE_KEY)


def _state_of(conn: HTTPConnection) -> BillingOSState | None:
    lifespan_state = conn.scope.get("state")
    if isinstance(lifespan_state, Mapping):
        found = lifespan_state.get(STATE_KEY)
        if isinstance(found, BillingOSState):
            return found
    app = conn.scope.get("app")
    found = getattr(getattr(app, "state", None), STATE_KEY, None)
    return found if isinstance(found, BillingOSState) else None


def get_billingos(conn: HTTPConnection) -> AsyncBillingOS:
    """The client :func:`billingos_lifespan` opened (a FastAPI dependency; also callable with a Request).

    Raises:
        RuntimeError: the app was not started with :func:`billingos_lifespan`.

    Example::

        @app.get("/plan")
        async def plan(billing: Annotated[AsyncBillingOS, Depends(get_billingos)]) -> dict[str, str]:
            return {"environment": billing.environment}
    """
    state = _state_of(conn)
    if state is None:
        raise RuntimeError(
            "No BillingOS client on this app: create it with FastAPI(lifespan=billingos_lifespan(...)) "
            "(or Starlette(lifespan=...)), and make sure the server runs the lifespan."
        )
    return state.client


def get_usage_recorder(conn: HTTPConnection) -> UsageRecorder:
    """The usage recorder :func:`billingos_lifespan` opened (a FastAPI dependency; also callable directly).

    Raises:
        RuntimeError: no lifespan, or it was created with ``recorder=False``.

    Example::

        @app.post("/export")
        async def export(user: CurrentUser, recorder: UsageRecorderDep) -> dict[str, str]:
            recorder.record(user.id, "exports")          # never waits on the network
            return {"status": "started"}
    """
    state = _state_of(conn)
    if state is None:
        get_billingos(conn)  # raises the "no lifespan" error
    if state is None or state.recorder is None:
        raise RuntimeError(
            "No usage recorder on this app: billingos_lifespan(...) was created with recorder=False."
        )
    return state.recorder


BillingOSDep = Annotated[AsyncBillingOS, Depends(get_billingos)]
"""A handler parameter type that receives the app's client: ``async def h(billing: BillingOSDep)``."""

UsageRecorderDep = Annotated[UsageRecorder, Depends(get_usage_recorder)]
"""A handler parameter type that receives the app's recorder: ``async def h(recorder: UsageRecorderDep)``."""


# -- calling the user's callables ------------------------------------------------------------------


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn, eval_str=True)
    except NameError:  # an annotation only importable under TYPE_CHECKING
        return inspect.signature(fn)


def _is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _takes_the_request(signature: inspect.Signature) -> bool | None:
    """True: called with the Request. False: called with nothing. None: a FastAPI dependency."""
    params = list(signature.parameters.values())
    if not params:
        return False
    if len(params) != 1:
        return None
    param = params[0]
    if param.default is not param.empty or param.kind not in (
        param.POSITIONAL_ONLY,
        param.POSITIONAL_OR_KEYWORD,
    ):
        return None
    annotation = param.annotation
    if annotation is param.empty:
        return True
    if isinstance(annotation, type):
        return issubclass(annotation, HTTPConnection) or None
    named = isinstance(annotation, str) and annotation.rsplit(".", 1)[-1] in ("Request", "HTTPConnection")
    return named or None


async def _call_with_request(fn: Callable[..., Any], conn: HTTPConnection, with_request: bool) -> Any:
    """``fn(request)`` or ``fn()``: awaited when async, in the threadpool when sync (as FastAPI does)."""
    args = (conn,) if with_request else ()
    if _is_async_callable(fn):
        result = fn(*args)
    else:
        result = await run_in_threadpool(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


_REQUEST_WRAPPERS: weakref.WeakKeyDictionary[Any, Callable[..., Any]] = weakref.WeakKeyDictionary()


def _as_dependency(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``fn`` as a FastAPI dependency.

    A callable of one parameter, unannotated or annotated ``Request``, is called with the Request
    (``lambda request: request.state.user.id`` works); any other callable *is* a FastAPI dependency
    and may declare headers, cookies, ``Depends(...)`` and so on. The same ``fn`` always gives the
    same dependency, so FastAPI resolves it once per request however many gates share it.
    """
    if not callable(fn):
        raise TypeError(f"{what} must be a callable, not {type(fn).__name__}")
    with_request = _takes_the_request(_signature(fn))
    if with_request is None:
        return fn
    try:
        return _REQUEST_WRAPPERS[fn]
    except (KeyError, TypeError):
        pass

    async def call_with_request(request: HTTPConnection) -> Any:
        return await _call_with_request(fn, request, with_request)

    call_with_request.__qualname__ = call_with_request.__name__ = getattr(fn, "__name__", what)
    with contextlib.suppress(TypeError):  # not weak-referenceable or not hashable: just not shared
        _REQUEST_WRAPPERS[fn] = call_with_request
    return call_with_request


def _unauthenticated(message: str = "Not authenticated.") -> HTTPException:
    return HTTPException(401, detail=_error_detail("unauthenticated", message), headers=dict(_NO_STORE))


def _guarded(dependency: Callable[..., Any]) -> Callable[..., Any]:
    """``dependency``, with any exception other than an HTTPException turned into a 401."""
    if inspect.isgeneratorfunction(dependency) or inspect.isasyncgenfunction(dependency):
        return dependency  # a dependency with yield: its own exceptions, its own rules

    def refuse(exc: Exception) -> HTTPException:
        _logger.info("authenticate raised %s: %s; answering 401", type(exc).__name__, exc)
        return _unauthenticated()

    signature = _signature(dependency)
    if _is_async_callable(dependency):

        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await dependency(*args, **kwargs)
            except StarletteHTTPException:
                raise
            except Exception as exc:
                raise refuse(exc) from exc

        guarded_async.__signature__ = signature  # type: ignore[attr-defined]
        return guarded_async

    def guarded_sync(*args: Any, **kwargs: Any) -> Any:
        try:
            return dependency(*args, **kwargs)
        except StarletteHTTPException:
            raise
        except Exception as exc:
            raise refuse(exc) from exc

    guarded_sync.__signature__ = signature  # type: ignore[attr-defined]
    return guarded_sync


# -- RequireEntitlement ------------------------------------------------------------------------------


class EntitlementDenied(HTTPException):
    """The 403 :class:`RequireEntitlement` raises; ``entitlement`` says why.

    Its body is ``{"detail": {"error": "entitlement_denied", "feature_key", "reason", "message",
    "limit", "usage", "remaining", "resets_at"}}``. Register a handler to answer differently::

        @app.exception_handler(EntitlementDenied)
        async def upgrade(request: Request, exc: EntitlementDenied) -> JSONResponse:
            return JSONResponse({"upgrade": True, "reason": str(exc.entitlement.reason)}, status_code=402)
    """

    def __init__(self, entitlement: Entitlement) -> None:
        super().__init__(403, detail=_denied_detail(entitlement))
        self.entitlement = entitlement


class BillingOSUnavailable(HTTPException):
    """The 503 :class:`RequireEntitlement` raises when BillingOS could not answer; ``error`` is the cause.

    Its body is ``{"detail": {"error": "billingos_unavailable", "feature_key", "message",
    "request_id"}}`` (``"error": "billingos_error"`` when the cause is not an outage, e.g. a
    rejected secret key), with ``Retry-After`` when BillingOS sent one.

    Example::

        @app.exception_handler(BillingOSUnavailable)
        async def degraded(request: Request, exc: BillingOSUnavailable) -> JSONResponse:
            return JSONResponse({"retry": True}, status_code=503)
    """

    def __init__(self, feature_key: str, error: BillingOSError) -> None:
        outage = isinstance(error, UNAVAILABLE_ERRORS)
        headers: dict[str, str] = {}
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        detail = _error_detail(
            "billingos_unavailable" if outage else "billingos_error",
            f"Could not check access to {feature_key!r}: the billing service is unavailable; try again.",
            feature_key=feature_key,
            request_id=error.request_id,
        )
        super().__init__(503, detail=detail, headers=headers or None)
        self.error = error


def _request_and_customer(resolver: Callable[..., Any], returns: type) -> inspect.Signature:
    """The signature FastAPI reads off a dependency object: the request, and the resolved customer id."""
    return inspect.Signature(
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter(
                "customer_id",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=Depends(resolver),
                annotation=Any,
            ),
        ],
        return_annotation=returns,
    )


class RequireEntitlement:
    """A FastAPI dependency: the request goes on only if the customer has access to ``feature_key``.

    Args:
        feature_key: the feature to check.
        customer_id: returns the customer's id (your own user id) for this request: a function
            of the ``Request`` (one unannotated or ``Request``-annotated parameter; sync functions
            run in the threadpool, async ones are awaited), or any FastAPI dependency (it may use
            ``Depends``, headers, cookies...). ``None`` or ``""`` means nobody is signed in: 401.
        client: check with this client instead of the one :func:`billingos_lifespan` opened.
        cache: ``False`` asks BillingOS on every request even when the client has an
            :class:`~billingos.EntitlementCache` (``entitlements.check(..., cache=False)``).

    Answers:
        - access: the dependency returns the :class:`~billingos.Entitlement` (``remaining``,
          ``resets_at``, ``stale`` when the cache served it during an outage, ...);
        - no access: 403 :class:`EntitlementDenied`, body ``{"detail": {"error": "entitlement_denied",
          "feature_key": ..., "reason": ..., ...}}``;
        - BillingOS down: the client's :class:`~billingos.EntitlementCache` decides first (a stale
          answer, or ``on_unavailable="allow"``/``"deny"``, whose denial is a 403 with reason
          ``billingos_unavailable``); when it raises, or there is no cache, 503
          :class:`BillingOSUnavailable`.

    Example::

        require_api = RequireEntitlement("api_calls", customer_id=lambda request: request.state.user_id)

        @app.get("/search")
        async def search(ent: Annotated[Entitlement, Depends(require_api)]) -> dict[str, Any]:
            return {"remaining": ent.remaining}

        # or, when the handler does not need the entitlement:
        @app.get("/export", dependencies=[Depends(RequireEntitlement("exports", customer_id=user_id))])
        async def export() -> dict[str, str]: ...
    """

    __signature__: inspect.Signature

    def __init__(
        self,
        feature_key: str,
        *,
        customer_id: Callable[..., Any],
        client: AsyncBillingOS | None = None,
        cache: bool = True,
    ) -> None:
        self.feature_key = check.text("feature_key", feature_key)
        self._client = client
        self._cache = check.boolean("cache", cache)
        resolver = _as_dependency(customer_id, "customer_id")
        self.__signature__ = _request_and_customer(resolver, Entitlement)

    async def __call__(self, request: Request, customer_id: Any = None) -> Entitlement:
        """Check the entitlement of ``customer_id`` (resolved by FastAPI) for this request."""
        user = _user_id(customer_id)
        if user is None:
            raise _unauthenticated()
        client = self._client if self._client is not None else get_billingos(request)
        try:
            entitlement = await client.entitlements.check(user, self.feature_key, cache=self._cache)
        except BillingOSError as exc:
            log = _logger.warning if isinstance(exc, UNAVAILABLE_ERRORS) else _logger.error
            log("entitlement check %s/%s failed, answering 503: %s", user, self.feature_key, exc)
            raise BillingOSUnavailable(self.feature_key, exc) from exc
        if not entitlement.has_access:
            raise EntitlementDenied(entitlement)
        return entitlement

    def __repr__(self) -> str:
        return f"RequireEntitlement({self.feature_key!r})"


# -- TrackUsage ----------------------------------------------------------------------------------------


@attrs.define(eq=False)
class PendingUsage:
    """Usage :class:`TrackUsage` will record when this request's 2xx response has been sent.

    The handler may change ``quantity`` (a count known only at the end) or :meth:`cancel` it.

    Example::

        track_tokens = TrackUsage("tokens", customer_id=user_id)

        @app.post("/generate")
        async def generate(usage: Annotated[PendingUsage, Depends(track_tokens)]) -> dict[str, str]:
            text = await model.generate(...)
            usage.quantity = text.token_count
            return {"text": text}
    """

    customer_id: str
    feature_key: str
    quantity: float
    recorder: UsageRecorder | SyncUsageRecorder = attrs.field(repr=False)
    cancelled: bool = False

    def cancel(self) -> None:
        """Record nothing for this request, whatever the response."""
        self.cancelled = True


class TrackUsage:
    """A FastAPI dependency that records usage through the usage recorder after a successful response.

    The event is recorded (``recorder.record(customer_id, feature_key, quantity=...)``, which never
    waits on the network) only once the response has been sent in full with a 2xx status: not for
    an ``HTTPException``, an error response the handler returned itself, an exception (500) or a
    response cut short. Needs :class:`BillingOSMiddleware`, which sees the real status of the
    response; without it the dependency raises ``RuntimeError``.

    Args:
        feature_key: the metered feature.
        customer_id: as for :class:`RequireEntitlement`: a function of the Request, or a FastAPI
            dependency. ``None`` or ``""`` means nobody is signed in: 401.
        quantity: units per request (default 1); the handler may change it on the returned
            :class:`PendingUsage`.
        recorder: record with this recorder instead of the one :func:`billingos_lifespan` opened.

    Example::

        app.add_middleware(BillingOSMiddleware)

        @app.get("/search", dependencies=[
            Depends(RequireEntitlement("api_calls", customer_id=user_id)),
            Depends(TrackUsage("api_calls", customer_id=user_id)),
        ])
        async def search(q: str) -> list[str]: ...
    """

    __signature__: inspect.Signature

    def __init__(
        self,
        feature_key: str,
        *,
        customer_id: Callable[..., Any],
        quantity: float = 1,
        recorder: UsageRecorder | SyncUsageRecorder | None = None,
    ) -> None:
        self.feature_key = check.text("feature_key", feature_key)
        if isinstance(quantity, bool) or not isinstance(quantity, (int, float)) or not quantity > 0:
            raise ValueError(f"quantity must be a positive number, got {quantity!r}")
        if math.isinf(quantity):
            raise ValueError("quantity must be finite")
        self.quantity = quantity
        self._recorder = recorder
        resolver = _as_dependency(customer_id, "customer_id")
        self.__signature__ = _request_and_customer(resolver, PendingUsage)

    async def __call__(self, request: Request, customer_id: Any = None) -> PendingUsage:
        """Register this request's usage; :class:`BillingOSMiddleware` records it after a 2xx."""
        pending = request.scope.get(_PENDING_KEY)
        if not isinstance(pending, list):
            raise RuntimeError(
                "TrackUsage needs BillingOSMiddleware to see the response's status: "
                "app.add_middleware(billingos.integrations.fastapi.BillingOSMiddleware)"
            )
        user = _user_id(customer_id)
        if user is None:
            raise _unauthenticated()
        recorder = self._recorder if self._recorder is not None else get_usage_recorder(request)
        usage = PendingUsage(user, self.feature_key, self.quantity, recorder)
        pending.append(usage)
        return usage

    def __repr__(self) -> str:
        return f"TrackUsage({self.feature_key!r}, quantity={self.quantity!r})"


class BillingOSMiddleware:
    """ASGI middleware that records :class:`TrackUsage` events once a 2xx response was sent in full.

    Pure ASGI (no ``BaseHTTPMiddleware``): it watches the status the app sends and, after the last
    body chunk, calls ``recorder.record`` for each pending event. A failure to record (the
    recorder's queue is full, it is closed) is logged on ``billingos.integrations`` at ERROR; the
    response has already gone out.

    Example::

        app = FastAPI(lifespan=billingos_lifespan(AsyncBillingOS))
        app.add_middleware(BillingOSMiddleware)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pending: list[PendingUsage] = []
        scope[_PENDING_KEY] = pending
        status: int | None = None
        complete = False

        async def watch(message: Message) -> None:
            nonlocal status, complete
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif (kind == "http.response.body" and not message.get("more_body", False)) or (
                kind == "http.response.pathsend"
            ):
                complete = True
            await send(message)

        await self.app(scope, receive, watch)  # an exception propagates: nothing is recorded
        if pending and complete and status is not None and 200 <= status < 300:
            for usage in pending:
                _record(usage)


def _record(usage: PendingUsage) -> None:
    if usage.cancelled or not usage.quantity > 0:
        return
    try:
        recorded = usage.recorder.record(usage.customer_id, usage.feature_key, quantity=usage.quantity)
    except Exception:
        _logger.exception(
            "could not record usage %s/%s quantity=%s after a successful response",
            usage.customer_id, usage.feature_key, usage.quantity,
        )  # fmt: skip
        return
    if not recorded:  # the recorder is full and set to on_full="drop": it counted the drop
        _logger.warning(
            "usage %s/%s quantity=%s dropped: the usage recorder is full",
            usage.customer_id, usage.feature_key, usage.quantity,
        )  # fmt: skip


# -- session tokens ------------------------------------------------------------------------------------


async def _session_response(
    client: AsyncBillingOS,
    user_id: object,
    expires_in: int | None,
    allowed_operations: Sequence[str] | None,
) -> Response:
    user = _user_id(user_id)
    if user is None:
        body = {"detail": _error_detail("unauthenticated", "Not authenticated.")}
        return JSONResponse(body, status_code=401, headers=_NO_STORE)
    try:
        token = await client.session_tokens.create(
            user, expires_in=expires_in, allowed_operations=allowed_operations
        )
    except BillingOSError as exc:
        _logger.error("could not create a session token for %s, answering 502: %s", user, exc)
        detail = _error_detail(
            "billingos_error", "Could not create a session token. Try again later.", request_id=exc.request_id
        )
        return JSONResponse({"detail": detail}, status_code=502, headers=_NO_STORE)
    return JSONResponse(_session_body(token), headers=_NO_STORE)


def _check_session_options(expires_in: int | None, allowed_operations: Sequence[str] | None) -> None:
    if expires_in is not None:
        check.integer("expires_in", expires_in, low=60, high=86400)
    check.string_list("allowed_operations", allowed_operations)


_SESSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A session token for the front-end SDK",
        "content": {
            "application/json": {
                "example": {"sessionToken": "bos_session_…", "expiresAt": "2025-01-31T12:15:00.000Z"}
            }
        },
    },
    401: {"description": "Not authenticated (the authenticate function returned None or raised)"},
    502: {"description": "BillingOS could not create the token"},
}


def session_token_route(
    authenticate: Callable[..., Any],
    *,
    path: str = "/billingos/session",
    methods: Sequence[str] = ("GET", "POST"),
    expires_in: int | None = None,
    allowed_operations: Sequence[str] | None = None,
    client: AsyncBillingOS | None = None,
    include_in_schema: bool = True,
) -> APIRouter:
    """A router with one route minting session tokens for the front-end SDK (Node: ``createSessionRoute``).

    Args:
        authenticate: your own authentication; returns the signed-in user's id (your id, the
            customer's ``external_id``), or ``None``. A function of the ``Request`` (one
            unannotated or ``Request``-annotated parameter), sync or async, or any FastAPI
            dependency. ``None``, ``""`` or an exception → 401; an ``HTTPException`` it raises is
            answered as is.
        path: where the route is mounted (default ``/billingos/session``).
        methods: the HTTP methods it answers (default GET and POST).
        expires_in: token lifetime in seconds, 60 to 86400 (default: the server's, one hour).
        allowed_operations: restrict what the tokens may do.
        client: mint with this client instead of the one :func:`billingos_lifespan` opened.

    Answers (all with ``Cache-Control: no-store``):
        - 200 ``{"sessionToken": "bos_session_…", "expiresAt": "2025-01-31T12:15:00.000Z"}``; the
          expiry is the token's own, in UTC, as JavaScript's ``toISOString()`` writes it;
        - 401 ``{"detail": {"error": "unauthenticated", "message": ...}}``;
        - 502 ``{"detail": {"error": "billingos_error", "message": ..., "request_id": ...}}`` when
          BillingOS fails (logged on ``billingos.integrations``).

    Example::

        async def current_user(request: Request) -> str | None:
            session = await sessions.load(request.cookies.get("sid"))
            return session.user_id if session else None

        app.include_router(session_token_route(current_user, expires_in=900))
    """
    _check_session_options(expires_in, allowed_operations)
    user_dependency = _guarded(_as_dependency(authenticate, "authenticate"))

    async def billingos_session_token(request: Request, user_id: Any = Depends(user_dependency)) -> Response:  # noqa: B008
        billing = client if client is not None else get_billingos(request)
        return await _session_response(billing, user_id, expires_in, allowed_operations)

    router = APIRouter()
    router.add_api_route(
        path,
        billingos_session_token,
        methods=list(methods),
        response_model=None,
        responses=_SESSION_RESPONSES,
        include_in_schema=include_in_schema,
        summary="A BillingOS session token for the signed-in user",
    )
    return router


def session_token_starlette_route(
    authenticate: Callable[..., Any],
    *,
    path: str = "/billingos/session",
    methods: Sequence[str] = ("GET", "POST"),
    expires_in: int | None = None,
    allowed_operations: Sequence[str] | None = None,
    client: AsyncBillingOS | None = None,
) -> Route:
    """The Starlette version of :func:`session_token_route`: a ``Route`` for ``Starlette(routes=[...])``.

    ``authenticate`` is called with the ``Request`` (or with nothing, if it takes no parameter),
    sync (in the threadpool) or async. Same answers as :func:`session_token_route`; an
    ``HTTPException`` it raises goes to Starlette's exception handlers.

    Example::

        app = Starlette(
            routes=[session_token_starlette_route(current_user, expires_in=900)],
            lifespan=billingos_lifespan(AsyncBillingOS, recorder=False),
        )
    """
    _check_session_options(expires_in, allowed_operations)
    if not callable(authenticate):
        raise TypeError(f"authenticate must be a callable, not {type(authenticate).__name__}")
    with_request = _takes_the_request(_signature(authenticate))
    if with_request is None:
        raise TypeError("authenticate must take the Request as its only parameter (or no parameter)")

    async def billingos_session_token(request: Request) -> Response:
        try:
            user_id = await _call_with_request(authenticate, request, with_request)
        except StarletteHTTPException:
            raise
        except Exception as exc:
            _logger.info("authenticate raised %s: %s; answering 401", type(exc).__name__, exc)
            user_id = None
        billing = client if client is not None else get_billingos(request)
        return await _session_response(billing, user_id, expires_in, allowed_operations)

    return Route(path, billingos_session_token, methods=list(methods), name="billingos_session_token")


# -- selling from your server: the customer-scoped routes -------------------------------------------

CustomerDetails = Callable[[str], Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None]
"""What :func:`billing_router` asks for the signed-in user's ``email``, ``name`` and ``metadata``."""


async def _selling_call(
    client: AsyncBillingOS, user: str, what: str, call: Callable[[Any], Awaitable[Any]], status: int = 200
) -> _selling.Answer:
    """Run ``call(customer)`` as ``user`` (a token minted once and cached by the client) and answer."""
    try:
        async with client.as_customer(user) as customer:
            return _selling.ok(await call(customer), status)
    except BillingOSError as exc:
        return _selling.failed(what, user, exc)


async def _details_of(customer_details: CustomerDetails | None, user: str) -> Mapping[str, Any] | None:
    if customer_details is None:
        return None
    if _is_async_callable(customer_details):
        found = customer_details(user)
    else:
        found = await run_in_threadpool(customer_details, user)
    if inspect.isawaitable(found):
        found = await found
    if found is not None and not isinstance(found, Mapping):
        raise TypeError(f"customer_details must return a mapping or None, not {type(found).__name__}")
    return found


class _Selling:
    """The routes' behaviour, whatever the framework resolved the user with."""

    def __init__(self, customer_details: CustomerDetails | None, client: AsyncBillingOS | None) -> None:
        if customer_details is not None and not callable(customer_details):
            raise TypeError(f"customer_details must be a callable, not {type(customer_details).__name__}")
        self.customer_details = customer_details
        self.client = client

    def _client(self, request: Request) -> AsyncBillingOS:
        return self.client if self.client is not None else get_billingos(request)

    async def answer(self, name: str, request: Request, user_id: object) -> Response:
        user = _user_id(user_id)
        if user is None:
            body, status, headers = _selling.unauthenticated()
        else:
            body, status, headers = await getattr(self, name)(request, self._client(request), user)
        return JSONResponse(body, status_code=status, headers=headers)

    async def products(self, request: Request, client: AsyncBillingOS, user: str) -> _selling.Answer:
        ids = _selling.plan_ids(request.query_params.get("plan_ids"))
        return await _selling_call(client, user, "products", lambda c: c.products.list(ids))

    async def checkout(self, request: Request, client: AsyncBillingOS, user: str) -> _selling.Answer:
        try:
            body = await request.json()
        except ValueError:
            return _selling.invalid('Send a JSON object: {"price_id": "..."}.')
        arguments = _selling.checkout_arguments(body, await _details_of(self.customer_details, user))
        if isinstance(arguments, str):
            return _selling.invalid(arguments)
        price_id = arguments.pop("price_id")
        return await _selling_call(
            client, user, "checkout", lambda c: c.checkout.create(price_id, **arguments), status=201
        )

    async def checkout_status(self, request: Request, client: AsyncBillingOS, user: str) -> _selling.Answer:
        session_id = request.path_params["session_id"]
        return await _selling_call(client, user, "checkout status", lambda c: c.checkout.status(session_id))

    async def confirm_free(self, request: Request, client: AsyncBillingOS, user: str) -> _selling.Answer:
        session_id = request.path_params["session_id"]
        return await _selling_call(
            client, user, "confirm-free", lambda c: c.checkout.confirm_free(session_id)
        )

    async def portal(self, request: Request, client: AsyncBillingOS, user: str) -> _selling.Answer:
        return await _selling_call(client, user, "portal", lambda c: c.portal.create(), status=201)

    async def state(self, request: Request, client: AsyncBillingOS, user: str) -> _selling.Answer:
        return await _selling_call(client, user, "state", lambda c: c.state())

    async def feature(self, request: Request, client: AsyncBillingOS, user: str) -> _selling.Answer:
        feature_key = request.path_params["feature_key"]
        return await _selling_call(client, user, "feature check", lambda c: c.entitlements.check(feature_key))


_SELLING_ROUTES: tuple[tuple[str, str, str, str], ...] = (
    # (handler, method, path, summary)
    ("products", "GET", "/products", "The pricing page: products, prices, features, current plan"),
    ("checkout", "POST", "/checkout", "Start a checkout of a price for the signed-in user"),
    ("checkout_status", "GET", "/checkout/{session_id}", "A checkout, with its subscription once complete"),
    ("confirm_free", "POST", "/checkout/{session_id}/confirm-free", "Complete a checkout of a free price"),
    ("portal", "POST", "/portal", "Open a billing-portal session for the signed-in user"),
    ("state", "GET", "/state", "The signed-in user's customer and granted features"),
    ("feature", "GET", "/features/{feature_key}", "Whether the signed-in user may use a feature"),
)


def billing_router(
    authenticate: Callable[..., Any],
    *,
    prefix: str = "/billingos",
    customer_details: CustomerDetails | None = None,
    client: AsyncBillingOS | None = None,
    include_in_schema: bool = True,
    tags: Sequence[str] = ("billing",),
) -> APIRouter:
    """A router selling from your server: pricing, checkout, portal, state and feature checks of the
    signed-in user, for a front end that holds no BillingOS token (React SDK: ``usePricingTable``,
    ``useCheckout``, ``usePortal``, ``useCustomer``, ``useFeature``).

    Each route calls ``client.as_customer(user)`` (:meth:`~billingos.AsyncBillingOS.as_customer`),
    whose session token is minted once per user and reused from the client's cache.

    Routes (under ``prefix``):

    ======  ==================================  ===========================================  ======
    method  path                                SDK call                                     answer
    ======  ==================================  ===========================================  ======
    GET     ``/products?plan_ids=a,b``          ``products.list(plan_ids)``                  200
    POST    ``/checkout``                       ``checkout.create(price_id, ...)``           201
    GET     ``/checkout/{session_id}``          ``checkout.status(session_id)``              200
    POST    ``/checkout/{session_id}/confirm-free``  ``checkout.confirm_free(session_id)``   200
    POST    ``/portal``                         ``portal.create()``                          201
    GET     ``/state``                          ``state()``                                  200
    GET     ``/features/{feature_key}``         ``entitlements.check(feature_key)``          200
    ======  ==================================  ===========================================  ======

    ``POST /checkout`` takes ``{"price_id", "existing_subscription_id"?, "success_url"?,
    "cancel_url"?}``; any other field is a 400. The customer's email, name and metadata come from
    ``customer_details``, never from the browser (on the public backend an email that belongs to
    another customer moves that customer's record to this user).

    Args:
        authenticate: your own authentication, as for :func:`session_token_route`: returns the
            signed-in user's id (the customer's ``external_id``) or ``None`` (401).
        prefix: where the routes are mounted (default ``/billingos``).
        customer_details: ``details(user_id) -> {"email": ..., "name": ..., "metadata": ...}`` (sync
            or async; any key may be left out), used by ``POST /checkout``. Give the email: on the
            public backend a second customer without one fails the checkout.
        client: call with this client instead of the one :func:`billingos_lifespan` opened.
        include_in_schema: list the routes in the OpenAPI schema.
        tags: the OpenAPI tags of the routes.

    Answers: the SDK model as JSON (snake_case; dates ISO-8601), with ``Cache-Control: no-store``.
    Errors: 401 ``unauthenticated``, 400 ``invalid_request`` (a refused body, or BillingOS's 400 such
    as a missing Stripe connection), 404 ``not_found`` (BillingOS's message, e.g. a portal before any
    checkout), 503 ``billingos_unavailable``, 502 ``billingos_error``; the body is
    ``{"detail": {"error", "message", "request_id"}}``. ``GET /features/{key}`` answers 200 with
    ``has_access`` false rather than 403 (it is a question, not a gate: use
    :class:`RequireEntitlement` to gate a route).

    Example::

        async def current_user(request: Request) -> str | None:
            return request.session.get("user_id")

        async def details(user_id: str) -> dict[str, str]:
            user = await users.get(user_id)
            return {"email": user.email, "name": user.name}

        app.include_router(billing_router(current_user, customer_details=details))
    """
    selling = _Selling(customer_details, client)
    user_dependency = _guarded(_as_dependency(authenticate, "authenticate"))
    router = APIRouter(prefix=prefix.rstrip("/"), tags=list(tags))
    for name, method, route_path, summary in _SELLING_ROUTES:
        router.add_api_route(
            route_path,
            _selling_endpoint(selling, name, user_dependency),
            methods=[method],
            response_model=None,
            include_in_schema=include_in_schema,
            summary=summary,
            name=f"billingos_{name}",
        )
    return router


def _selling_endpoint(
    selling: _Selling, name: str, user_dependency: Callable[..., Any]
) -> Callable[..., Any]:
    async def endpoint(request: Request, user_id: Any = Depends(user_dependency)) -> Response:  # noqa: B008
        return await selling.answer(name, request, user_id)

    endpoint.__name__ = endpoint.__qualname__ = f"billingos_{name}"
    return endpoint


def billing_starlette_routes(
    authenticate: Callable[..., Any],
    *,
    prefix: str = "/billingos",
    customer_details: CustomerDetails | None = None,
    client: AsyncBillingOS | None = None,
) -> list[Route]:
    """The Starlette version of :func:`billing_router`: ``Route`` objects for ``Starlette(routes=[...])``.

    ``authenticate`` is called with the ``Request`` (or with nothing), sync or async, as for
    :func:`session_token_starlette_route`; same routes, answers and errors as :func:`billing_router`.

    Example::

        app = Starlette(
            routes=[*billing_starlette_routes(current_user, customer_details=details)],
            lifespan=billingos_lifespan(AsyncBillingOS, recorder=False),
        )
    """
    selling = _Selling(customer_details, client)
    if not callable(authenticate):
        raise TypeError(f"authenticate must be a callable, not {type(authenticate).__name__}")
    with_request = _takes_the_request(_signature(authenticate))
    if with_request is None:
        raise TypeError("authenticate must take the Request as its only parameter (or no parameter)")

    def endpoint_for(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                user_id = await _call_with_request(authenticate, request, with_request)
            except StarletteHTTPException:
                raise
            except Exception as exc:
                _logger.info("authenticate raised %s: %s; answering 401", type(exc).__name__, exc)
                user_id = None
            return await selling.answer(name, request, user_id)

        return endpoint

    base = prefix.rstrip("/")
    return [
        Route(base + route_path, endpoint_for(name), methods=[method], name=f"billingos_{name}")
        for name, method, route_path, _ in _SELLING_ROUTES
    ]
