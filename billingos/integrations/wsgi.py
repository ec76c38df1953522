"""Session tokens from sync web frameworks (Flask, Django, Bottle, ...), through the blocking ``BillingOS``.

No framework is imported: :func:`session_token_response` returns ``(body, status, headers)``, which
Flask returns as is and Django wraps in a ``JsonResponse``. It answers like the FastAPI route
(:func:`billingos.integrations.fastapi.session_token_route`) and the Node SDK's ``createSessionRoute``.

Flask::

    from flask import Flask, session
    from billingos import BillingOS
    from billingos.integrations.wsgi import session_token_response

    app = Flask(__name__)
    billing = BillingOS()                      # one per process; key from BILLINGOS_SECRET_KEY

    @app.post("/billingos/session")
    def billingos_session():
        return session_token_response(billing, session.get("user_id"), expires_in=900)

Django::

    from django.http import JsonResponse

    def billingos_session(request):
        user_id = str(request.user.pk) if request.user.is_authenticated else None
        body, status, headers = session_token_response(billing, user_id, expires_in=900)
        return JsonResponse(body, status=status, headers=headers)

Selling from your server (pricing, checkout, free plans, portal, state, feature checks of the signed-in
user, for a front end that holds no token): :func:`products_response`, :func:`checkout_response`,
:func:`checkout_status_response`, :func:`confirm_free_response`, :func:`portal_response`,
:func:`customer_state_response` and :func:`feature_response`, the same answers as the FastAPI
:func:`~billingos.integrations.fastapi.billing_router` (docs/selling.md)::

    @app.get("/billingos/products")
    def pricing():
        return products_response(billing, session.get("user_id"), plan_ids=request.args.get("plan_ids"))

    @app.post("/billingos/checkout")
    def checkout():
        user = current_user()
        return checkout_response(billing, user and user.id, request.get_json(silent=True),
                                 customer_email=user and user.email)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _validate as check
from .._errors import BillingOSError
from .._sync import BillingOS, CustomerSession
from . import _NO_STORE, _error_detail, _logger, _selling, _session_body, _user_id

__all__ = [
    "checkout_response",
    "checkout_status_response",
    "confirm_free_response",
    "customer_state_response",
    "feature_response",
    "portal_response",
    "products_response",
    "session_token_response",
]


def session_token_response(
    billing: BillingOS,
    user_id: str | int | None,
    *,
    expires_in: int | None = None,
    allowed_operations: Sequence[str] | None = None,
    external_organization_id: str | None = None,
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Mint a session token for the signed-in user and answer the front-end SDK: ``(body, status, headers)``.

    Args:
        billing: the blocking client (share one per process).
        user_id: the signed-in user's id from your own authentication (your id, the customer's
            ``external_id``; an ``int`` is converted), or ``None`` / ``""`` when nobody is signed in.
        expires_in: token lifetime in seconds, 60 to 86400 (default: the server's, one hour).
        allowed_operations: restrict what the token may do.
        external_organization_id: your id of the user's organization, if any.

    Returns (headers always ``{"Cache-Control": "no-store"}``):
        - ``({"sessionToken": "bos_session_…", "expiresAt": "2025-01-31T12:15:00.000Z"}, 200, …)``;
          the expiry is the token's own, in UTC, as JavaScript's ``toISOString()`` writes it;
        - ``({"detail": {"error": "unauthenticated", "message": …}}, 401, …)`` without a user;
        - ``({"detail": {"error": "billingos_error", "message": …, "request_id": …}}, 502, …)`` when
          BillingOS fails (logged on ``billingos.integrations``).

    Raises:
        ValidationError: ``expires_in`` or ``allowed_operations`` is invalid (your bug, not the user's).

    Example::

        @app.post("/billingos/session")           # Flask
        def billingos_session():
            return session_token_response(billing, current_user_id(), expires_in=900)
    """
    if expires_in is not None:
        check.integer("expires_in", expires_in, low=60, high=86400)
    check.string_list("allowed_operations", allowed_operations)
    headers = dict(_NO_STORE)
    user = _user_id(user_id)
    if user is None:
        return {"detail": _error_detail("unauthenticated", "Not authenticated.")}, 401, headers
    try:
        token = billing.session_tokens.create(
            user,
            expires_in=expires_in,
            allowed_operations=allowed_operations,
            external_organization_id=external_organization_id,
        )
    except BillingOSError as exc:
        _logger.error("could not create a session token for %s, answering 502: %s", user, exc)
        detail = _error_detail(
            "billingos_error", "Could not create a session token. Try again later.", request_id=exc.request_id
        )
        return {"detail": detail}, 502, headers
    return _session_body(token), 200, headers


# -- selling from your server ---------------------------------------------------------------------


def _as_customer(
    billing: BillingOS,
    user_id: str | int | None,
    what: str,
    call: Callable[[CustomerSession], Any],
    status: int = 200,
) -> _selling.Answer:
    user = _user_id(user_id)
    if user is None:
        return _selling.unauthenticated()
    try:
        with billing.as_customer(user) as customer:
            return _selling.ok(call(customer), status)
    except BillingOSError as exc:
        return _selling.failed(what, user, exc)


def products_response(
    billing: BillingOS, user_id: str | int | None, *, plan_ids: str | Sequence[str] | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The pricing page of the signed-in user (``customer.products.list``) as ``(body, status, headers)``.

    Args:
        billing: the blocking client (share one per process: its token cache mints once per user).
        user_id: the signed-in user's id, or ``None`` / ``""`` (401).
        plan_ids: only these products: a list, or the ``"a,b"`` of a query string.

    Returns ``(catalog as JSON, 200, {"Cache-Control": "no-store"})``, or an error answer: 401
    ``unauthenticated``, 400 ``invalid_request``, 404 ``not_found``, 503 ``billingos_unavailable``,
    502 ``billingos_error`` (``{"detail": {"error", "message", "request_id"}}``).

    Example::

        @app.get("/billingos/products")              # Flask
        def pricing():
            return products_response(billing, session.get("user_id"), plan_ids=request.args.get("plan_ids"))
    """
    ids = _selling.plan_ids(plan_ids) if isinstance(plan_ids, str) else plan_ids
    return _as_customer(billing, user_id, "products", lambda c: c.products.list(ids))


def checkout_response(
    billing: BillingOS,
    user_id: str | int | None,
    body: object,
    *,
    customer_email: str | None = None,
    customer_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Start a checkout for the signed-in user from a front end's JSON ``body``: 201 and the checkout.

    ``body`` is ``{"price_id", "existing_subscription_id"?, "success_url"?, "cancel_url"?}`` (any other
    field, or no ``price_id``: 400 ``invalid_request``). The email, name and metadata are yours to give,
    never the browser's: on the public backend an email of another customer moves that customer's
    record to this user, and a second customer without an email fails the checkout.

    A paid price answers with the ``client_secret`` the front end confirms with Stripe.js; a free price
    with ``client_secret == ""``: POST it to :func:`confirm_free_response`. Errors as
    :func:`products_response` (no connected Stripe account: 400; unknown price: 404).

    Example::

        @app.post("/billingos/checkout")             # Flask
        def checkout():
            return checkout_response(billing, current_user_id(), request.get_json(silent=True),
                                     customer_email=current_user_email())
    """
    if _user_id(user_id) is None:
        return _selling.unauthenticated()
    details = {"email": customer_email, "name": customer_name, "metadata": metadata}
    arguments = _selling.checkout_arguments(body, details)
    if isinstance(arguments, str):
        return _selling.invalid(arguments)
    price_id = arguments.pop("price_id")
    return _as_customer(
        billing, user_id, "checkout", lambda c: c.checkout.create(price_id, **arguments), status=201
    )


def checkout_status_response(
    billing: BillingOS, user_id: str | int | None, session_id: str
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A checkout of the signed-in user, with ``subscription`` once it is complete (there is no status).

    Example::

        @app.get("/billingos/checkout/<session_id>")   # Flask
        def checkout_status(session_id):
            return checkout_status_response(billing, current_user_id(), session_id)
    """
    return _as_customer(billing, user_id, "checkout status", lambda c: c.checkout.status(session_id))


def confirm_free_response(
    billing: BillingOS, user_id: str | int | None, session_id: str
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Complete the checkout of a free price: 200 and the subscription (confirming again is harmless).

    Example::

        @app.post("/billingos/checkout/<session_id>/confirm-free")   # Flask
        def confirm_free(session_id):
            return confirm_free_response(billing, current_user_id(), session_id)
    """
    return _as_customer(billing, user_id, "confirm-free", lambda c: c.checkout.confirm_free(session_id))


def portal_response(
    billing: BillingOS, user_id: str | int | None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Open a billing-portal session for the signed-in user: 201 and ``{"id", "expires_at", ...}``.

    A user who never completed a checkout has no customer yet: 404 ``not_found`` with BillingOS's
    message ("Customer must complete checkout before accessing portal").

    Example::

        @app.post("/billingos/portal")               # Flask
        def portal():
            return portal_response(billing, current_user_id())
    """
    return _as_customer(billing, user_id, "portal", lambda c: c.portal.create(), status=201)


def customer_state_response(
    billing: BillingOS, user_id: str | int | None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The signed-in user's customer and granted features (404 before any checkout).

    On the public backend ``active_subscriptions`` is always ``[]`` and the answer is cached for an hour:
    gate on :func:`feature_response` (fresh) and read the plan from :func:`products_response`.

    Example::

        @app.get("/billingos/state")                 # Flask
        def state():
            return customer_state_response(billing, current_user_id())
    """
    return _as_customer(billing, user_id, "state", lambda c: c.state())


def feature_response(
    billing: BillingOS, user_id: str | int | None, feature_key: str
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Whether the signed-in user may use ``feature_key``: 200 and the entitlement, access or not.

    Example::

        @app.get("/billingos/features/<feature_key>")   # Flask
        def feature(feature_key):
            return feature_response(billing, current_user_id(), feature_key)
    """
    return _as_customer(billing, user_id, "feature check", lambda c: c.entitlements.check(feature_key))
