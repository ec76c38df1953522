"""What the "selling" routes of the integrations share: their JSON bodies and their error answers.

The FastAPI/Starlette routes (:func:`billingos.integrations.fastapi.billing_router`) and the WSGI
helpers (:mod:`billingos.integrations.wsgi`) call the same customer-scoped SDK calls
(``billing.as_customer(user)``) and answer alike: a success is the SDK model as the converter
unstructures it (snake_case, dates as ISO-8601 strings, enums as strings); a failure is
``{"detail": {"error": <code>, "message": <text>, "request_id": ...}}`` with:

- 401 ``unauthenticated``: nobody is signed in (no call is made);
- 400 ``invalid_request``: an argument the SDK refused before sending, or a 400/409/422 of BillingOS
  (e.g. "Organization does not have a Stripe Connect account", a paid checkout confirmed as free);
- 404 ``not_found``: BillingOS's 404 (unknown price or checkout, a portal for a user who never
  completed a checkout, the state of a user who has no customer yet), with BillingOS's message;
- 503 ``billingos_unavailable`` (with ``Retry-After`` after a 429): BillingOS could not answer;
- 502 ``billingos_error``: any other failure (a rejected secret key, an unexpected answer): logged,
  with a generic message.

Every answer carries ``Cache-Control: no-store``: a checkout's ``client_secret`` and a portal id are
credentials of one user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from .._cache import UNAVAILABLE_ERRORS
from .._convert import converter
from .._errors import BillingOSError, ConflictError, NotFoundError, RateLimitError, ValidationError
from . import _NO_STORE, _error_detail, _iso_utc, _logger

__all__: list[str] = []

Answer = tuple[dict[str, Any], int, dict[str, str]]
"""``(body, status, headers)``: what every selling route answers, whatever the framework."""

CHECKOUT_FIELDS = ("price_id", "existing_subscription_id", "success_url", "cancel_url")
"""The fields a front end may send to start a checkout. Email, name and metadata come from your server
(``customer_details``): on the public backend an email that belongs to another customer moves that
customer's record, and ``metadata`` replaces the stored one, so neither is taken from a browser."""


def jsonable(value: Any) -> Any:
    """``value`` (a model, a list of models) as plain JSON data: the converter, dates in ISO, enums as str."""
    return _plain(converter.unstructure(value))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, Enum):
        return value.value
    return value


def ok(value: Any, status: int = 200) -> Answer:
    """A success: the model as JSON."""
    return jsonable(value), status, dict(_NO_STORE)


def unauthenticated() -> Answer:
    """The 401 of a request with nobody signed in."""
    return {"detail": _error_detail("unauthenticated", "Not authenticated.")}, 401, dict(_NO_STORE)


def invalid(message: str) -> Answer:
    """A 400 for a request body the route cannot use."""
    return {"detail": _error_detail("invalid_request", message)}, 400, dict(_NO_STORE)


def failed(what: str, user: str, exc: BillingOSError) -> Answer:
    """The answer to a failed SDK call (see the module docstring), logged on ``billingos.integrations``."""
    headers = dict(_NO_STORE)
    status = exc.status_code
    if isinstance(exc, NotFoundError):
        return {"detail": _error_detail("not_found", exc.message, request_id=exc.request_id)}, 404, headers
    if isinstance(exc, (ValidationError, ConflictError)) or status in (400, 409, 422):
        _logger.info("%s for %s refused by BillingOS (%s): %s", what, user, status, exc.message)
        detail = _error_detail("invalid_request", exc.message, request_id=exc.request_id)
        return {"detail": detail}, 400, headers
    if isinstance(exc, UNAVAILABLE_ERRORS):
        _logger.warning("%s for %s failed, answering 503: %s", what, user, exc)
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        detail = _error_detail(
            "billingos_unavailable",
            "The billing service is unavailable; try again.",
            request_id=exc.request_id,
        )
        return {"detail": detail}, 503, headers
    _logger.error("%s for %s failed, answering 502: %s", what, user, exc)
    detail = _error_detail(
        "billingos_error", "The billing service failed. Try again later.", request_id=exc.request_id
    )
    return {"detail": detail}, 502, headers


def checkout_arguments(body: object, details: Mapping[str, Any] | None) -> dict[str, Any] | str:
    """The keyword arguments of ``checkout.create`` from a front end's JSON body and your ``details``.

    Returns an error message (a str) when the body is not an object with a string ``price_id``, or has
    a field other than :data:`CHECKOUT_FIELDS`. ``details`` (``email``, ``name``, ``metadata``) is what
    your server knows of the signed-in user.
    """
    if not isinstance(body, Mapping):
        return 'Send a JSON object: {"price_id": "..."}.'
    unknown = sorted(str(k) for k in body if k not in CHECKOUT_FIELDS)
    if unknown:
        return f"Unknown field(s) {', '.join(unknown)}; accepted: {', '.join(CHECKOUT_FIELDS)}."
    for name in CHECKOUT_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name} must be a string."
    if not body.get("price_id"):
        return "price_id is required."
    arguments: dict[str, Any] = {name: body.get(name) for name in CHECKOUT_FIELDS[1:]}
    arguments["price_id"] = body["price_id"]
    details = details or {}
    unknown = sorted(str(k) for k in details if k not in ("email", "name", "metadata"))
    if unknown:
        raise TypeError(
            f"customer_details returned unknown key(s) {', '.join(unknown)}: email, name, metadata"
        )
    arguments["customer_email"] = details.get("email")
    arguments["customer_name"] = details.get("name")
    arguments["metadata"] = details.get("metadata")
    return arguments


def plan_ids(raw: str | None) -> list[str] | None:
    """``?plan_ids=a,b`` as a list (``None`` when absent or blank)."""
    if raw is None:
        return None
    ids = [item.strip() for item in raw.split(",") if item.strip()]
    return ids or None
