"""The customer-session routes of the fake (CONTRACT-CUSTOMER §3): guard, body checks, answers.

These are the routes a holder of a customer session token (``bos_session_…``) calls: the
customer's state, the pricing table, checkout, the billing portal and ``/v1/features/*``. Most are
behind the session-token guard (:func:`guard`); the checkout-session and portal-session routes
take no credential at all, as on the server (the session id is the capability). ``_app``
dispatches to them; the rules live in :mod:`._customer_state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ._customer_state import CustomerSide
from ._state import ApiError, TokenRejected, invalid
from ._wire import Call, FieldErrors, Handler, is_number, object_body

Auth = Literal["session", "none"]

CUSTOMER_ROUTES: list[tuple[str, str, Auth]] = [
    ("GET", "/v1/customer/me", "session"),
    ("GET", "/v1/products", "session"),
    ("POST", "/v1/checkout/create", "session"),
    ("GET", "/v1/checkout/{id}/status", "none"),
    ("POST", "/v1/checkout/{id}/confirm-free", "none"),
    ("POST", "/v1/portal/create", "session"),
    ("GET", "/v1/portal/{id}/status", "none"),
    ("GET", "/v1/features/check", "session"),
    ("POST", "/v1/features/track-usage", "session"),
    ("GET", "/v1/features/entitlements", "session"),
    ("GET", "/v1/features/usage-metrics", "session"),
]
"""The session routes as ``(method, template, auth)``; ``auth`` is ``"session"`` or ``"none"``."""

_VALIDATION_MESSAGE = "Validation failed for one or more fields"
_CHECKOUT_FIELDS = (
    "priceId",
    "customerEmail",
    "customerName",
    "customer",
    "existingSubscriptionId",
    "metadata",
    "mode",
    "successUrl",
    "cancelUrl",
    "couponCode",
)


def unauthorized(message: str) -> ApiError:
    """A 401 ``AUTH_INVALID_TOKEN`` with the server's message."""
    return ApiError(401, "AUTH_INVALID_TOKEN", message)


def guard(side: CustomerSide, authorization: str | None) -> str:
    """``SessionTokenAuthGuard``: the token's ``external_user_id``, or the 401 for the first failed check."""
    if not authorization or not authorization.startswith("Bearer "):
        raise unauthorized("Missing or invalid Authorization header")
    try:
        claims = side.store.session_claims(authorization[len("Bearer ") :])
    except TokenRejected as exc:
        raise unauthorized(str(exc)) from None
    return str(claims.get("external_user_id"))


class CustomerRoutes:
    """The handlers of :data:`CUSTOMER_ROUTES`, keyed ``"METHOD template"``."""

    def __init__(self, side: CustomerSide) -> None:
        self.side = side
        self.auth: dict[str, Auth] = {f"{m} {t}": a for m, t, a in CUSTOMER_ROUTES}
        self.handlers: dict[str, Handler] = {
            "GET /v1/customer/me": self._me,
            "GET /v1/products": self._products,
            "POST /v1/checkout/create": self._create_checkout,
            "GET /v1/checkout/{id}/status": self._checkout_status,
            "POST /v1/checkout/{id}/confirm-free": self._confirm_free,
            "POST /v1/portal/create": self._create_portal,
            "GET /v1/portal/{id}/status": self._portal_status,
            "GET /v1/features/check": self._check,
            "POST /v1/features/track-usage": self._track,
            "GET /v1/features/entitlements": self._entitlements,
            "GET /v1/features/usage-metrics": self._metrics,
        }

    async def _me(self, call: Call) -> tuple[int, Any]:
        return 200, self.side.state(_user(call))

    async def _products(self, call: Call) -> tuple[int, Any]:
        raw = call.query.get("planIds")
        plan_ids = None if raw is None else [p.strip() for p in raw.split(",") if p.strip()]
        return 200, self.side.products(_user(call), plan_ids)

    async def _create_checkout(self, call: Call) -> tuple[int, Any]:
        body = object_body(call.body)
        errors = FieldErrors()
        errors.unknown(body, _CHECKOUT_FIELDS)
        errors.string("priceId", body.get("priceId"), required=True)
        for name in (
            "customerEmail",
            "customerName",
            "existingSubscriptionId",
            "successUrl",
            "cancelUrl",
            "couponCode",
        ):
            errors.string(name, body.get(name))
        for name in ("customer", "metadata"):
            errors.mapping(name, body.get(name))
        mode = body.get("mode")
        if mode is not None:
            if not isinstance(mode, str):
                errors.add("mode", "mode must be a string")
            if mode not in ("embedded", "redirect"):
                errors.add("mode", "mode must be one of the following values: embedded, redirect")
        errors.raise_if_any(_VALIDATION_MESSAGE)
        return 201, self.side.create_checkout(_user(call), body)

    async def _checkout_status(self, call: Call) -> tuple[int, Any]:
        return 200, self.side.checkout_status(call.params["id"])

    async def _confirm_free(self, call: Call) -> tuple[int, Any]:
        return 201, self.side.confirm_free(call.params["id"])

    async def _create_portal(self, call: Call) -> tuple[int, Any]:
        body = object_body(call.body)
        errors = FieldErrors()
        errors.unknown(body, ("customerId", "metadata"))
        errors.string("customerId", body.get("customerId"))
        errors.mapping("metadata", body.get("metadata"))
        errors.raise_if_any(_VALIDATION_MESSAGE)
        return 201, self.side.create_portal(_user(call), body.get("customerId"), body.get("metadata"))

    async def _portal_status(self, call: Call) -> tuple[int, Any]:
        return 200, self.side.portal_status(call.params["id"])

    async def _check(self, call: Call) -> tuple[int, Any]:
        feature_key = call.query.get("feature_key")
        if not feature_key:
            raise invalid("feature_key parameter is required")
        return 200, self.side.store.check(_user(call), feature_key)

    async def _track(self, call: Call) -> tuple[int, Any]:
        # The body is an inline type on the server: not validated, unknown fields ignored.
        body = call.body if isinstance(call.body, Mapping) else {}
        feature_key, quantity = body.get("feature_key"), body.get("quantity")
        if not feature_key or not quantity:
            raise invalid("feature_key and quantity are required")
        if not isinstance(feature_key, str) or not is_number(quantity):
            # The server concatenates a string quantity ("0" + "5"); the fake refuses it as the DB might.
            raise invalid("Failed to track usage")
        key = body.get("idempotency_key")
        self.side.store.track(
            _user(call), feature_key, quantity, key if isinstance(key, str) else None, any_status=True
        )
        return 201, {
            "success": True,
            "feature_key": feature_key,
            "quantity": quantity,
            "recorded_at": self.side.store.now(),
        }

    async def _entitlements(self, call: Call) -> tuple[int, Any]:
        return 200, self.side.entitlements(_user(call))

    async def _metrics(self, call: Call) -> tuple[int, Any]:
        return 200, self.side.usage_metrics(_user(call), call.query.get("feature_key") or None)


def _user(call: Call) -> str:
    assert call.user is not None, "a session route ran without the guard"
    return call.user


__all__ = ["CUSTOMER_ROUTES", "CustomerRoutes", "guard", "unauthorized"]
