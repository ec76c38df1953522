"""Response models: frozen attrs classes with snake_case attributes and nothing else.

How each is read off the wire lives in ``_convert.py``; models know nothing of JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, TypeGuard, TypeVar

import attrs

from ._errors import ValidationError

__all__ = [
    "BillingAddress",
    "Customer",
    "Entitlement",
    "EntitlementReason",
    "FeatureType",
    "Page",
    "SessionToken",
    "Subscription",
    "SubscriptionStatus",
    "UsageMetric",
    "UsageMetrics",
    "UsageRecord",
    "UsageSnapshot",
]

T = TypeVar("T")


class _OpenEnum(str, Enum):  # noqa: UP042 - str() must stay "Class.MEMBER", as it was
    """A string enum that keeps values it does not know instead of failing.

    A new value from the server becomes a pseudo-member whose ``value`` is the raw string, so a
    newer server never crashes an older SDK, and the value still compares equal to its string.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member

    def __str__(self) -> str:
        return str(self.value)


class SubscriptionStatus(_OpenEnum):
    """A subscription's lifecycle state. Unknown future states are kept as-is."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"


class FeatureType(_OpenEnum):
    """How a feature is granted: an on/off flag, a metered quota, or a numeric limit."""

    BOOLEAN_FLAG = "boolean_flag"
    USAGE_QUOTA = "usage_quota"
    NUMERIC_LIMIT = "numeric_limit"


class EntitlementReason(_OpenEnum):
    """Why access was denied (``Entitlement.reason``)."""

    NO_ACTIVE_SUBSCRIPTION = "no_active_subscription"
    SUBSCRIPTION_NOT_ACTIVE = "subscription_not_active"
    QUOTA_EXCEEDED = "quota_exceeded"
    CUSTOMER_NOT_FOUND = "customer_not_found"
    """Set by the SDK: BillingOS answered 404 "Customer not found" (a user who never subscribed)."""
    BILLINGOS_UNAVAILABLE = "billingos_unavailable"
    """Set by the SDK's entitlement cache: BillingOS could not be reached and nothing usable was
    cached, so the answer is the cache's ``on_unavailable="allow"`` or ``"deny"`` policy, not a check.

    Example::

        ent = await billing.check_entitlement("user_42", "api_calls")
        if ent.reason == EntitlementReason.BILLINGOS_UNAVAILABLE:
            metrics.increment("billing.unverified_access")
    """


def _mask_token(token: str) -> str:
    return f"'{token[:12]}…'" if token.startswith("bos_session_") else "'…'"


@attrs.frozen
class SessionToken:
    """A short-lived token the front-end SDK uses on behalf of one of your users.

    ``expires_at`` is read from the token itself (the server's ``expiresAt`` field is broken on the
    wire). ``repr`` never shows the token.

    Example::

        token = await billing.session_tokens.create("user_42", expires_in=900)
        return {"sessionToken": token.session_token, "expiresAt": token.expires_at.isoformat()}
    """

    session_token: str = attrs.field(repr=_mask_token)
    token_id: str
    expires_at: datetime
    issued_at: datetime | None = None
    external_user_id: str = ""
    external_organization_id: str | None = None
    allowed_operations: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    merchant_id: str | None = None

    @property
    def expired(self) -> bool:
        """True once ``expires_at`` has passed."""
        return datetime.now(UTC) >= self.expires_at

    @classmethod
    def decode(cls, token: str) -> SessionToken:
        """Decode (not verify) a ``bos_session_…`` token and return its claims.

        The signature is HMAC-SHA256 with a server-side secret, so the SDK cannot check it:
        never trust a decoded token that came from a user.

        Raises:
            ValidationError: the string is not a well-formed BillingOS session token.

        Example::

            SessionToken.decode(token).token_id   # 'tok_3f…'
        """
        return decode_session_token(token)


TOKEN_PREFIX = "bos_session_"  # noqa: S105 (a prefix, not a secret)


def decode_session_token(token: object) -> SessionToken:
    """The implementation of :meth:`SessionToken.decode`."""

    def bad(why: str) -> ValidationError:
        return ValidationError(f"Malformed session token: {why}.", code="invalid_argument")

    if not isinstance(token, str):
        raise bad(f"expected a str, got {type(token).__name__}")
    if not token.startswith(TOKEN_PREFIX):
        raise bad(f"it must start with {TOKEN_PREFIX!r}")
    body, dot, signature = token[len(TOKEN_PREFIX) :].rpartition(".")
    if not dot or not body or not signature:
        raise bad("expected <payload>.<signature> after the prefix")
    if len(signature) != 64 or any(c not in "0123456789abcdef" for c in signature.lower()):
        raise bad("the signature is not 64 hex characters")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:  # RecursionError: nested too deep to read
        raise bad(f"the payload is not base64url JSON ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise bad("the payload is not a JSON object")
    jti, exp, iat = claims.get("jti"), claims.get("exp"), claims.get("iat")
    if not isinstance(jti, str) or not jti:
        raise bad("the payload has no token id (jti)")
    if not _is_timestamp(exp):
        raise bad("the payload has no numeric expiry (exp)")
    user = claims.get("external_user_id")
    org = claims.get("external_organization_id")
    ops = claims.get("allowed_operations") or ()
    metadata = claims.get("metadata") or {}
    merchant = claims.get("merchant_id")
    if not isinstance(ops, (list, tuple)) or not all(isinstance(o, str) for o in ops):
        raise bad("allowed_operations is not a list of strings")
    return SessionToken(
        session_token=token,
        token_id=jti,
        expires_at=datetime.fromtimestamp(exp, UTC),
        issued_at=datetime.fromtimestamp(iat, UTC) if _is_timestamp(iat) else None,
        external_user_id=user if isinstance(user, str) else "",
        external_organization_id=org if isinstance(org, str) else None,
        allowed_operations=tuple(ops),
        metadata=metadata if isinstance(metadata, dict) else {},
        merchant_id=merchant if isinstance(merchant, str) else None,
    )


def _is_timestamp(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value < 253402300800  # before year 10000
    )


@attrs.frozen
class Entitlement:
    """Whether a customer may use a feature right now.

    Example::

        ent = await billing.entitlements.check("user_42", "api_calls")
        if not ent.has_access:
            raise HTTPException(403, ent.reason)
    """

    feature_key: str
    has_access: bool
    reason: EntitlementReason | None = None
    limit: float | None = None
    usage: float | None = None
    remaining: float | None = None
    resets_at: datetime | None = None
    feature_type: FeatureType | None = None
    stale: bool = False
    """Set by the SDK's entitlement cache: BillingOS was unavailable and this is the last answer it
    gave (at most the cache's ``stale_if_error`` seconds old), not a fresh one. Never on the wire.

    Example::

        ent = await billing.check_entitlement("user_42", "api_calls")
        if ent.stale:
            log.info("BillingOS is down; using an answer from before the outage")
    """


@attrs.frozen
class UsageSnapshot:
    """A customer's consumption of one quota feature in the current billing period."""

    consumed_units: float
    limit_units: float | None = None
    remaining_units: float | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None


@attrs.frozen
class UsageRecord:
    """The result of tracking usage.

    ``idempotency_key`` is the key the SDK sent (yours, or the one it generated): replaying it
    within 24 hours returns this same result without counting again.
    """

    feature_key: str
    quantity: float
    success: bool = True
    recorded_at: datetime | None = None
    usage: UsageSnapshot | None = None
    idempotency_key: str | None = None


@attrs.frozen
class UsageMetric:
    """Consumption of one feature in the current period."""

    feature_key: str
    consumed: float
    limit: float | None = None
    remaining: float | None = None
    percentage_used: int | None = None
    feature_title: str | None = None
    product_name: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    resets_in_days: int | None = None


@attrs.frozen
class UsageMetrics:
    """Usage metrics of a customer, one entry per metered feature."""

    customer_id: str
    metrics: tuple[UsageMetric, ...] = ()


@attrs.frozen
class BillingAddress:
    """A postal address. ``country`` is a two-letter ISO code."""

    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@attrs.frozen
class Customer:
    """A customer of yours. ``external_id`` is your own user id, the one usage and entitlements use."""

    id: str
    email: str | None = None
    external_id: str | None = None
    name: str | None = None
    email_verified: bool | None = None
    billing_address: BillingAddress | None = None
    stripe_customer_id: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None


@attrs.frozen
class Subscription:
    """A customer's subscription to a price. ``amount`` is in cents of ``currency``."""

    id: str
    customer_id: str | None = None
    status: SubscriptionStatus | None = None
    product_id: str | None = None
    price_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    trial_start: datetime | None = None
    trial_end: datetime | None = None
    cancel_at_period_end: bool | None = None
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen
class Page(Generic[T]):
    """One page of a list, with the totals the server reports.

    Example::

        page = await billing.customers.list(limit=100).page(1)
        print(page.total, [c.email for c in page.data])
    """

    data: tuple[T, ...]
    page: int = 1
    limit: int | None = None
    total: int | None = None
    total_pages: int | None = None

    @property
    def next_page(self) -> int | None:
        """The number of the next page, or ``None`` when this is the last one."""
        if not self.data:
            return None
        if self.total_pages is None:
            return None
        return self.page + 1 if self.page < self.total_pages else None
