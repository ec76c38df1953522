"""Web framework integrations. Each one is its own module, imported on demand:

- :mod:`billingos.integrations.fastapi` (FastAPI and Starlette; ``pip install 'billingos[fastapi]'``):
  ``billingos_lifespan``, ``RequireEntitlement``, ``TrackUsage`` + ``BillingOSMiddleware``, and the
  session-token route (``session_token_route``, ``session_token_starlette_route``).
- :mod:`billingos.integrations.wsgi` (Flask, Django, any sync code; no extra):
  ``session_token_response``, on the blocking :class:`billingos.BillingOS`.

Importing ``billingos`` or this package never imports a web framework.

Example::

    from billingos.integrations.fastapi import billingos_lifespan, session_token_route

Every error body the integrations produce has FastAPI's shape, ``{"detail": {"error": <code>,
"message": <text>, ...}}``, so a front end handles them like any other FastAPI error.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from .._models import Entitlement, SessionToken

__all__: list[str] = []

_logger = logging.getLogger("billingos.integrations")
"""Where the integrations log (a child of the SDK's ``billingos`` logger, so ``BILLINGOS_LOG`` shows it)."""

_NO_STORE = {"Cache-Control": "no-store"}
"""Headers of every session-token response: a token must never be cached by a proxy or the browser."""


def _iso_utc(moment: datetime) -> str:
    """``moment`` as JavaScript's ``Date.toISOString()`` writes it: ``2025-01-31T12:00:00.000Z``."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _session_body(token: SessionToken) -> dict[str, str]:
    """The body the front-end SDK expects, as the Node SDK's ``createSessionRoute`` sends it."""
    return {"sessionToken": token.session_token, "expiresAt": _iso_utc(token.expires_at)}


def _error_detail(error: str, message: str, **extra: Any) -> dict[str, Any]:
    """The ``detail`` object of an error body: ``{"error": <code>, "message": <text>, **extra}``."""
    return {"error": error, "message": message, **extra}


def _denied_detail(entitlement: Entitlement) -> dict[str, Any]:
    """The ``detail`` of a 403: the feature, why access was denied, and the quota numbers."""
    reason = None if entitlement.reason is None else str(entitlement.reason)
    return _error_detail(
        "entitlement_denied",
        f"No access to {entitlement.feature_key!r}" + (f": {reason}." if reason else "."),
        feature_key=entitlement.feature_key,
        reason=reason,
        limit=entitlement.limit,
        usage=entitlement.usage,
        remaining=entitlement.remaining,
        resets_at=None if entitlement.resets_at is None else _iso_utc(entitlement.resets_at),
    )


def _user_id(value: object) -> str | None:
    """What an ``authenticate`` / ``customer_id`` callable returned, as an id: ``None`` when nobody.

    ``None`` and blank strings mean "not authenticated"; an ``int`` id becomes its ``str``.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    raise TypeError(f"expected the user's id as a str (or None), got {type(value).__name__}")
