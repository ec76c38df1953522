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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _validate as check
from .._errors import BillingOSError
from .._sync import BillingOS
from . import _NO_STORE, _error_detail, _logger, _session_body, _user_id

__all__ = ["session_token_response"]


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
