"""The fake's HTTP face: a Starlette app speaking CONTRACT.md exactly, quirks included.

Per request: route on the *raw* path (each percent-encoded segment is one segment, as Express does),
record it, apply an armed fault, authenticate, rate-limit, validate, run the rule in ``_state``,
and answer with the contract's decorations (``requestId`` in bodies, ``x-request-id`` and
``X-RateLimit-*`` headers, the error envelope, and the ``expiresAt: {}`` bug).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import unquote

import anyio
import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._customer_routes import CUSTOMER_ROUTES, CustomerRoutes, guard, unauthorized
from ._customer_state import CustomerSide
from ._faults import DropConnection, Fault, FaultPlan
from ._state import ApiError, CustomerRecord, Store, SubscriptionRecord, invalid
from ._wire import Call as _Call
from ._wire import FieldErrors as _FieldErrors
from ._wire import Handler
from ._wire import is_number as _is_number
from ._wire import object_body as _object

MAX_BODY = 100_000
_ERROR_CODES = {
    400: "VAL_INVALID_INPUT",
    401: "AUTH_INVALID_TOKEN",
    403: "AUTHZ_INSUFFICIENT_PERMISSIONS",
    404: "RES_NOT_FOUND",
    409: "RES_CONFLICT",
    413: "VAL_PAYLOAD_TOO_LARGE",
    422: "VAL_INVALID_INPUT",
    429: "RATE_LIMIT_EXCEEDED",
}


@attrs.frozen
class RateLimits:
    """The server's throttling (CONTRACT §3). Pass ``rate_limits=None`` to the fake to switch it off.

    Example::

        FakeBillingOS(rate_limits=RateLimits(per_route=5, window=60))   # trip it in a test
    """

    per_route: int = 100
    """Requests per client IP per route per window."""
    track_per_customer: int = 1000
    """``POST /v1/usage/track`` calls per customer per window."""
    window: float = 60.0
    """Window length in seconds."""


@attrs.frozen
class ReceivedRequest:
    """One request the fake received (the ``Authorization`` header is not kept)."""

    method: str
    path: str
    route: str
    """``"METHOD /template"``, e.g. ``"GET /customers/{id}"`` (``"METHOD ?"`` when no route matched)."""
    query: Mapping[str, str]
    json: Any
    headers: Mapping[str, str]
    request_id: str
    status: int | None = None


@attrs.define
class _Window:
    started: float
    count: int = 0


class _Limiter:
    def __init__(self, limits: RateLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self._windows: dict[tuple[str, ...], _Window] = {}
        self._lock = threading.Lock()

    def hit(self, key: tuple[str, ...], limit: int) -> tuple[bool, int, int, int]:
        """Count one request; (allowed, limit, remaining, seconds until the window resets)."""
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.started >= self.limits.window:
                window = self._windows[key] = _Window(now)
            reset = max(math.ceil(window.started + self.limits.window - now), 0)
            if window.count >= limit:
                return False, limit, 0, reset
            window.count += 1
            return True, limit, limit - window.count, reset


ROUTES: list[tuple[str, str]] = [
    ("POST", "/v1/session-tokens"),
    ("DELETE", "/v1/session-tokens/{id}"),
    ("POST", "/v1/usage/track"),
    ("GET", "/v1/usage/check"),
    ("GET", "/v1/usage/metrics"),
    ("POST", "/customers"),
    ("GET", "/customers"),
    ("GET", "/customers/external/{external_id}"),
    ("GET", "/customers/{id}"),
    ("PATCH", "/customers/{id}"),
    ("DELETE", "/customers/{id}"),
    ("POST", "/subscriptions"),
    ("GET", "/subscriptions"),
    ("GET", "/subscriptions/{id}"),
    ("PATCH", "/subscriptions/{id}"),
    ("POST", "/subscriptions/{id}/cancel"),
    ("POST", "/subscriptions/{id}/reactivate"),
    *((method, template) for method, template, _ in CUSTOMER_ROUTES),
]
"""Every route, as ``(method, template)``; fault patterns match ``"METHOD template"``."""

AdminRoutes = Literal["secret_key", "dashboard_only"]
_ABSENT_WHEN_DASHBOARD_ONLY = ("PATCH /subscriptions/{id}", "POST /subscriptions/{id}/reactivate")


def _match(method: str, raw_path: str) -> tuple[str, dict[str, str]] | None:
    segments = [unquote(s) for s in raw_path.split("?", 1)[0].strip("/").split("/")]
    for route_method, template in ROUTES:
        if route_method != method:
            continue
        parts = template.strip("/").split("/")
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                if not segment:
                    break
                params[part[1:-1]] = segment
            elif part != segment:
                break
        else:
            return f"{method} {template}", params
    return None


class BillingOSApp:
    """The ASGI application. Use it through :class:`FakeBillingOS`; ``asgi`` is the Starlette app."""

    def __init__(
        self,
        store: Store,
        faults: FaultPlan,
        rate_limits: RateLimits | None,
        mangle_dates: bool,
        clock: Callable[[], float],
        side: CustomerSide | None = None,
        admin_routes: AdminRoutes = "secret_key",
    ) -> None:
        if admin_routes not in ("secret_key", "dashboard_only"):
            raise ValueError(f"admin_routes must be 'secret_key' or 'dashboard_only', got {admin_routes!r}")
        self.store = store
        self.side = side or CustomerSide(store, stripe_connected=True)
        self.admin_routes = admin_routes
        self._customer_routes = CustomerRoutes(self.side)
        self.faults = faults
        self.limiter = None if rate_limits is None else _Limiter(rate_limits, clock)
        self.mangle_dates = mangle_dates
        self.requests: list[ReceivedRequest] = []
        self._requests_lock = threading.Lock()
        self._handlers: dict[str, Handler] = {
            "POST /v1/session-tokens": self._create_token,
            "DELETE /v1/session-tokens/{id}": self._revoke_token,
            "POST /v1/usage/track": self._track,
            "GET /v1/usage/check": self._check,
            "GET /v1/usage/metrics": self._metrics,
            "POST /customers": self._create_customer,
            "GET /customers": self._list_customers,
            "GET /customers/external/{external_id}": self._get_customer_external,
            "GET /customers/{id}": self._get_customer,
            "PATCH /customers/{id}": self._update_customer,
            "DELETE /customers/{id}": self._delete_customer,
            "POST /subscriptions": self._create_subscription,
            "GET /subscriptions": self._list_subscriptions,
            "GET /subscriptions/{id}": self._get_subscription,
            "PATCH /subscriptions/{id}": self._update_subscription,
            "POST /subscriptions/{id}/cancel": self._cancel_subscription,
            "POST /subscriptions/{id}/reactivate": self._reactivate_subscription,
            **self._customer_routes.handlers,
        }
        methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
        self.asgi = Starlette(
            routes=[
                Route("/", self._endpoint, methods=methods),
                Route("/{rest:path}", self._endpoint, methods=methods),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    # -- the request pipeline ----------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or "req_" + _hex(24)
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        matched = _match(request.method, raw_path)
        if (
            matched is not None
            and self.admin_routes == "dashboard_only"
            and matched[0] in _ABSENT_WHEN_DASHBOARD_ONLY
        ):
            matched = None  # these routes do not exist on the public backend
        route = matched[0] if matched else f"{request.method} ?"
        body_bytes = await request.body()
        record = ReceivedRequest(
            method=request.method,
            path=raw_path.split("?", 1)[0],
            route=route,
            query=dict(request.query_params),
            json=_try_json(body_bytes),
            headers={k: v for k, v in request.headers.items() if k != "authorization"},
            request_id=request_id,
        )
        response, drop_after = await self._respond(request, matched, record, body_bytes)
        response.headers["x-request-id"] = request_id
        dropped = drop_after or isinstance(response, _Dropped)  # a reset answers nothing either
        with self._requests_lock:
            self.requests.append(attrs.evolve(record, status=None if dropped else response.status_code))
        if drop_after:
            return _Dropped()
        return response

    async def _respond(
        self,
        request: Request,
        matched: tuple[str, dict[str, str]] | None,
        record: ReceivedRequest,
        body: bytes,
    ) -> tuple[Response, bool]:
        """The response, and whether to drop the connection instead of sending it (after processing)."""
        fault = self.faults.take(record.route) if matched else None
        drop_after = False
        if fault is not None:
            if fault.kind == "delay":
                await anyio.sleep(fault.seconds)
            elif fault.kind == "drop_response":
                drop_after = True
            else:
                return _fault_response(fault, record.request_id), False
        rate_headers: dict[str, str] = {}
        try:
            if matched is None:
                if self.admin_routes != "dashboard_only":
                    self._authenticate(request)
                raise ApiError(404, "RES_NOT_FOUND", f"Cannot {request.method} {record.path}")
            route, params = matched
            rate_headers = self._rate_limit(request, route, record)  # the throttler runs before auth
            user = self._authorize(request, route)
            content_type = request.headers.get("content-type", "")
            call = _Call(params=params, query=record.query, body=_parse_body(body, content_type), user=user)
            status, payload = await self._handlers[route](call)
            response = self._success(status, payload, record.request_id)
        except ApiError as exc:
            response = _error_response(exc, record.request_id)
            if isinstance(exc, _TooManyError):
                rate_headers = exc.rate_headers
        response.headers.update(rate_headers)
        return response, drop_after

    def _authorize(self, request: Request, route: str) -> str | None:
        """The route's credential check; the session token's user on customer-session routes."""
        auth = self._customer_routes.auth.get(route)
        if auth == "session":
            return guard(self.side, request.headers.get("authorization"))
        if auth == "none":
            return None
        if self.admin_routes == "dashboard_only" and route.split(" ", 1)[1].startswith(
            ("/customers", "/subscriptions")
        ):
            # The public backend guards these with a dashboard (Supabase) JWT: passport-jwt's messages.
            if not request.headers.get("authorization"):
                raise unauthorized("No auth token")
            raise unauthorized("jwt malformed")
        self._authenticate(request)
        return None

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise ApiError(401, "AUTH_INVALID_TOKEN", "Missing API key")
        if scheme.lower() != "bearer" or key not in self.store.api_keys:
            raise ApiError(401, "AUTH_INVALID_TOKEN", "Invalid API key")

    def _rate_limit(self, request: Request, route: str, record: ReceivedRequest) -> dict[str, str]:
        if self.limiter is None:
            return {}
        client = request.client.host if request.client else "unknown"
        ok, limit, remaining, reset = self.limiter.hit((client, route), self.limiter.limits.per_route)
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(reset),
        }
        scoped = (ok, limit, remaining, reset)
        customer = record.json.get("customer_id") if isinstance(record.json, dict) else None
        if ok and route == "POST /v1/usage/track" and isinstance(customer, str):
            scoped = self.limiter.hit(("track", customer), self.limiter.limits.track_per_customer)
        headers.update(
            {
                "x-ratelimit-limit-scoped": str(scoped[1]),
                "x-ratelimit-remaining-scoped": str(scoped[2]),
                "x-ratelimit-reset-scoped": str(scoped[3]),
            }
        )
        if not ok or not scoped[0]:
            raise _TooManyError(headers, reset if not ok else scoped[3])
        return headers

    def _success(self, status: int, payload: Any, request_id: str) -> Response:
        if status == 204:
            return Response(status_code=204)
        if isinstance(payload, dict):
            payload = {**payload, "requestId": request_id}
        return _json_response(status, payload, self.mangle_dates)

    # -- handlers: validate, call the store, shape the answer ----------------------------------

    async def _create_token(self, call: _Call) -> tuple[int, Any]:
        body = _object(call.body)
        errors = _FieldErrors()
        for name in body:
            if name not in (
                "externalUserId",
                "externalOrganizationId",
                "expiresIn",
                "allowedOperations",
                "metadata",
            ):
                errors.add(name, f"property {name} should not exist")
        user = body.get("externalUserId")
        errors.string("externalUserId", user, required=True, max_length=255)
        errors.string("externalOrganizationId", body.get("externalOrganizationId"), max_length=255)
        expires_in = body.get("expiresIn", 3600)
        if not isinstance(expires_in, int) or isinstance(expires_in, bool):
            errors.add("expiresIn", "expiresIn must be an integer number")
        elif expires_in < 60:
            errors.add("expiresIn", "expiresIn must not be less than 60")
        elif expires_in > 86400:
            errors.add("expiresIn", "expiresIn must not be greater than 86400")
        operations = body.get("allowedOperations")
        if operations is not None and (
            not isinstance(operations, list) or not all(isinstance(o, str) for o in operations)
        ):
            errors.add("allowedOperations", "each value in allowedOperations must be a string")
        errors.mapping("metadata", body.get("metadata"))
        errors.raise_if_any()
        token = self.store.create_session_token(
            body["externalUserId"],
            body.get("externalOrganizationId"),
            expires_in,
            operations,
            body.get("metadata"),
        )
        result: dict[str, Any] = {"sessionToken": token, "expiresAt": _BROKEN_DATE}
        if operations:
            result["allowedOperations"] = operations
        return 201, result

    async def _revoke_token(self, call: _Call) -> tuple[int, Any]:
        self.store.revoke_session_token(call.params["id"])
        return 200, {"message": "Session token revoked successfully"}

    async def _track(self, call: _Call) -> tuple[int, Any]:
        body = _object(call.body)
        errors = _FieldErrors()
        errors.string("customer_id", body.get("customer_id"), required=True)
        errors.string("feature_key", body.get("feature_key"), required=True)
        quantity = body.get("quantity")
        if not _is_number(quantity):
            errors.add("quantity", "quantity must be a number conforming to the specified constraints")
        elif quantity <= 0:
            errors.add("quantity", "quantity must be a positive number")
        errors.string("idempotency_key", body.get("idempotency_key"))
        errors.mapping("metadata", body.get("metadata"))
        errors.raise_if_any()
        return 201, self.store.track(
            body["customer_id"], body["feature_key"], body["quantity"], body.get("idempotency_key")
        )

    async def _check(self, call: _Call) -> tuple[int, Any]:
        errors = _FieldErrors()
        errors.string("customer_id", call.query.get("customer_id"), required=True)
        errors.string("feature_key", call.query.get("feature_key"), required=True)
        errors.raise_if_any()
        return 200, self.store.check(call.query["customer_id"], call.query["feature_key"])

    async def _metrics(self, call: _Call) -> tuple[int, Any]:
        errors = _FieldErrors()
        errors.string("customer_id", call.query.get("customer_id"), required=True)
        errors.raise_if_any()
        return 200, self.store.metrics(call.query["customer_id"], call.query.get("feature_key"))

    async def _create_customer(self, call: _Call) -> tuple[int, Any]:
        fields = _customer_fields(_object(call.body), creating=True)
        return 201, _customer_json(self.store.create_customer(fields))

    async def _list_customers(self, call: _Call) -> tuple[int, Any]:
        q = call.query
        errors = _FieldErrors()
        limit = errors.integer("limit", q.get("limit", "50"), low=1, high=100)
        page = errors.integer("page", q.get("page", "1"), low=1, high=10**9)
        sort_by = q.get("sort_by", "created_at")
        sort_order = q.get("sort_order", "desc")
        if sort_by not in ("created_at", "email", "name"):
            errors.add("sort_by", "sort_by must be one of the following values: created_at, email, name")
        if sort_order not in ("asc", "desc"):
            errors.add("sort_order", "sort_order must be one of the following values: asc, desc")
        errors.raise_if_any()
        rows, total = self.store.list_customers(
            page=page,
            limit=limit,
            email=q.get("email"),
            external_id=q.get("external_id"),
            query=q.get("query"),
            sort_by=sort_by,
            sort_order=sort_order,
        )
        return 200, {
            "data": [_customer_json(c) for c in rows],
            "total": total,
            "page": page,
            "limit": limit,
            "total_pages": math.ceil(total / limit),
        }

    async def _get_customer(self, call: _Call) -> tuple[int, Any]:
        return 200, _customer_json(self.store.get_customer(call.params["id"]))

    async def _get_customer_external(self, call: _Call) -> tuple[int, Any]:
        return 200, _customer_json(self.store.get_customer(call.params["external_id"], external=True))

    async def _update_customer(self, call: _Call) -> tuple[int, Any]:
        fields = _customer_fields(_object(call.body), creating=False)
        record = self.store.update_customer(call.params["id"], fields)
        self.side.forget_state(record.id)  # the only calls that clear GET /v1/customer/me's cache
        return 200, _customer_json(record)

    async def _delete_customer(self, call: _Call) -> tuple[int, Any]:
        self.store.delete_customer(call.params["id"])
        self.side.forget_state(call.params["id"])
        return 204, None

    async def _create_subscription(self, call: _Call) -> tuple[int, Any]:
        body = _object(call.body)
        errors = _FieldErrors()
        errors.string("customer_id", body.get("customer_id"), required=True)
        errors.string("price_id", body.get("price_id"), required=True)
        errors.string("product_id", body.get("product_id"))
        errors.string("payment_method_id", body.get("payment_method_id"))
        errors.mapping("metadata", body.get("metadata"))
        errors.raise_if_any()
        record = self.store.create_subscription(
            body["customer_id"], body["price_id"], body.get("product_id"), body.get("metadata")
        )
        return 201, _subscription_json(record)

    async def _list_subscriptions(self, call: _Call) -> tuple[int, Any]:
        return 200, [
            _subscription_json(s) for s in self.store.list_subscriptions(call.query.get("customer_id"))
        ]

    async def _get_subscription(self, call: _Call) -> tuple[int, Any]:
        return 200, _subscription_json(self.store.get_subscription(call.params["id"]))

    async def _update_subscription(self, call: _Call) -> tuple[int, Any]:
        body = _object(call.body)
        errors = _FieldErrors()
        errors.string("price_id", body.get("price_id"))
        errors.boolean("cancel_at_period_end", body.get("cancel_at_period_end"))
        errors.mapping("metadata", body.get("metadata"))
        errors.raise_if_any()
        return 200, _subscription_json(self.store.update_subscription(call.params["id"], body))

    async def _cancel_subscription(self, call: _Call) -> tuple[int, Any]:
        body = _object(call.body) if call.body is not None else {}
        errors = _FieldErrors()
        errors.boolean("cancel_at_period_end", body.get("cancel_at_period_end"))
        errors.raise_if_any()
        at_period_end = body.get("cancel_at_period_end", True)
        return 201, _subscription_json(self.store.cancel_subscription(call.params["id"], at_period_end))

    async def _reactivate_subscription(self, call: _Call) -> tuple[int, Any]:
        return 201, _subscription_json(self.store.reactivate_subscription(call.params["id"]))


# -- helpers -------------------------------------------------------------------------------


class _BrokenDate:
    """A date the server serialises as ``{}`` (CONTRACT §1)."""


_BROKEN_DATE = _BrokenDate()


def _hex(n: int) -> str:
    return secrets.token_hex(n // 2)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_response(status: int, payload: Any, mangle_dates: bool) -> Response:
    def default(value: object) -> Any:
        if isinstance(value, _BrokenDate):
            return {}
        if isinstance(value, datetime):
            return {} if mangle_dates else _iso(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    content = json.dumps(payload, default=default, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json")


def _error_response(exc: ApiError, request_id: str) -> Response:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details:
        error["details"] = exc.details
    error.update({"requestId": request_id, "timestamp": _now_iso()})
    return _json_response(exc.status, {"error": error, "statusCode": exc.status}, False)


class _TooManyError(ApiError):
    def __init__(self, rate_headers: dict[str, str], reset: int) -> None:
        super().__init__(429, "RATE_LIMIT_EXCEEDED", "Too many requests")
        self.rate_headers = {**rate_headers, "retry-after": str(max(reset, 1))}


def _fault_response(fault: Fault, request_id: str) -> Response:
    if fault.kind == "error":
        exc = ApiError(
            fault.status, _ERROR_CODES.get(fault.status, "SYS_INTERNAL_ERROR"), _reason(fault.status)
        )
        response = _error_response(exc, request_id)
        if fault.retry_after is not None:
            response.headers["retry-after"] = fault.retry_after
        return response
    if fault.kind == "malformed_json":
        return Response(
            b'{"success": true, "usage": {"consumed_units": 1', status_code=200, media_type="application/json"
        )
    if fault.kind == "html":
        page = (
            f"<html><head><title>{fault.status} {_reason(fault.status)}</title></head><body><center><h1>"
            f"{fault.status} {_reason(fault.status)}</h1></center><hr><center>nginx</center></body></html>"
        )
        return Response(page.encode(), status_code=fault.status, media_type="text/html")
    return _Dropped()  # reset: drop before processing


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _Dropped(Response):
    """Starts a response promising a body, then drops the connection: the client gets no answer."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"4096"), (b"content-type", b"application/json")],
            }
        )
        raise DropConnection("the fake dropped this connection on purpose")


def _try_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _parse_body(body: bytes, content_type: str) -> Any:
    if len(body) > MAX_BODY:
        raise ApiError(413, "VAL_PAYLOAD_TOO_LARGE", "request entity too large")
    if not body or content_type.split(";", 1)[0].strip().lower() != "application/json":
        return None  # express.json() reads only application/json bodies: anything else is no body
    try:
        return json.loads(body)
    except ValueError:
        raise invalid("Unexpected token in JSON body") from None


_ADDRESS_FIELDS = ("street", "city", "state", "postal_code", "country")


def _customer_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    errors = _FieldErrors()
    email = body.get("email")
    if (email is None and creating) or (
        email is not None
        and (not isinstance(email, str) or not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email))
    ):
        errors.add("email", "email must be an email")
    external_id = body.get("external_id")
    if external_id is not None and (
        not isinstance(external_id, str)
        or not re.match(r"^[A-Za-z0-9_-]+$", external_id)
        or len(external_id) > 255
    ):
        errors.add("external_id", "external_id must match /^[A-Za-z0-9_-]+$/ regular expression")
    errors.string("name", body.get("name"), max_length=256)
    address = body.get("billing_address")
    if address is not None:
        if not isinstance(address, dict):
            errors.add("billing_address", "billing_address must be an object")
        else:
            for key, value in address.items():
                if key not in _ADDRESS_FIELDS:
                    errors.add(f"billing_address.{key}", f"property {key} should not exist")
                elif value is not None and not isinstance(value, str):
                    errors.add(f"billing_address.{key}", f"{key} must be a string")
            country = address.get("country")
            if isinstance(country, str) and (len(country) != 2 or not country.isalpha()):
                errors.add("billing_address.country", "country must be longer than or equal to 2 characters")
    errors.mapping("metadata", body.get("metadata"))
    errors.raise_if_any()
    return {k: body.get(k) for k in ("email", "external_id", "name", "billing_address", "metadata")}


def _customer_json(c: CustomerRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "external_id": c.external_id,
        "email": c.email,
        "email_verified": c.email_verified,
        "name": c.name,
        "billing_address": c.billing_address,
        "stripe_customer_id": c.stripe_customer_id,
        "metadata": c.metadata,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "deleted_at": c.deleted_at,
    }


def _subscription_json(s: SubscriptionRecord) -> dict[str, Any]:
    return {
        "id": s.id,
        "customer_id": s.customer_id,
        "product_id": s.product_id,
        "price_id": s.price_id,
        "status": s.status,
        "amount": s.amount,
        "currency": s.currency,
        "current_period_start": s.current_period_start,
        "current_period_end": s.current_period_end,
        "trial_start": s.trial_start,
        "trial_end": s.trial_end,
        "cancel_at_period_end": s.cancel_at_period_end,
        "canceled_at": s.canceled_at,
        "ended_at": s.ended_at,
        "metadata": s.metadata,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


__all__ = ["ROUTES", "AdminRoutes", "BillingOSApp", "RateLimits", "ReceivedRequest"]
