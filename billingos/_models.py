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
from typing import Any, ClassVar, Generic, Protocol, Self, TypeGuard, TypeVar

import attrs

from ._errors import ValidationError

__all__ = [
    "BillingAddress",
    "Catalog",
    "CatalogProduct",
    "CheckoutCustomer",
    "CheckoutProduct",
    "CheckoutSession",
    "CheckoutSubscription",
    "CurrentSubscription",
    "Customer",
    "CustomerEntitlement",
    "CustomerState",
    "Entitlement",
    "EntitlementReason",
    "FeatureType",
    "GrantedFeature",
    "Page",
    "PortalSession",
    "Price",
    "PriceInterval",
    "ProductFeature",
    "SessionToken",
    "Subscription",
    "SubscriptionStatus",
    "UsageMetric",
    "UsageMetrics",
    "UsageRecord",
    "UsageSnapshot",
]

T = TypeVar("T")


class _Codec(Protocol):
    """What :class:`_Model` needs of the converter (``billingos._convert`` installs it on import)."""

    def to_dict(self, model: object) -> dict[str, Any]: ...
    def to_json(self, model: object, indent: int | None) -> str: ...
    def from_dict(self, cls: type[T], data: Mapping[str, Any], item_type: type | None) -> T: ...


class _Model:
    """What every model has: ``to_dict``, ``to_json`` and ``from_dict``, all through the SDK's converter.

    The dict form uses the models' own attribute names (snake_case, flat: not the wire's camelCase or
    nesting), dates as ISO-8601 strings and enums as their values, so it is JSON as it is and
    ``from_dict`` reads it back into an equal model. Nothing is masked: a ``SessionToken``'s token
    and a ``CheckoutSession``'s ``client_secret`` are in it, as they are in the model.
    """

    __slots__ = ()
    _codec: ClassVar[_Codec]
    """Installed by ``billingos._convert`` (always imported with ``billingos``)."""

    def to_dict(self) -> dict[str, Any]:
        """This model as plain JSON types: dates as ISO-8601 strings, enums as values, tuples as lists.

        Example::

            ent = await billing.entitlements.check("user_42", "api_calls")
            json.dumps(ent.to_dict())  # {"feature_key": "api_calls", "has_access": true, ...}
        """
        return self._codec.to_dict(self)

    def to_json(self, *, indent: int | None = None) -> str:
        """This model as a JSON document (``to_dict`` encoded; ``indent`` as for ``json.dumps``).

        Example::

            cache.set(f"customer:{customer.id}", customer.to_json())
        """
        return self._codec.to_json(self, indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The model ``to_dict`` (or ``json.loads(to_json())``) made; equal to the one serialized.

        Raises ``ValidationError`` (code ``invalid_argument``) when ``data`` does not describe one.

        Example::

            customer = Customer.from_dict(json.loads(cache.get(f"customer:{customer_id}")))
        """
        return cls._codec.from_dict(cls, data, None)


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
class SessionToken(_Model):
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
class Entitlement(_Model):
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
class UsageSnapshot(_Model):
    """A customer's consumption of one quota feature in the current billing period."""

    consumed_units: float
    limit_units: float | None = None
    remaining_units: float | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None


@attrs.frozen
class UsageRecord(_Model):
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
class UsageMetric(_Model):
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
class UsageMetrics(_Model):
    """Usage metrics of a customer, one entry per metered feature.

    ``external_user_id`` (your own user id) is filled in by the customer-scoped
    ``customer.usage.metrics()``; the secret-key ``usage.metrics`` leaves it ``None``.
    """

    customer_id: str
    metrics: tuple[UsageMetric, ...] = ()
    external_user_id: str | None = None


@attrs.frozen
class BillingAddress(_Model):
    """A postal address. ``country`` is a two-letter ISO code."""

    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@attrs.frozen
class Customer(_Model):
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
class Subscription(_Model):
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
class Page(_Model, Generic[T]):
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], item_type: type | None = None) -> Self:
        """A page read back from ``to_dict``; ``item_type`` is the model of its items (required).

        Example::

            page = Page.from_dict(json.loads(text), item_type=Customer)
        """
        return cls._codec.from_dict(cls, data, item_type)

    @property
    def next_page(self) -> int | None:
        """The number of the next page, or ``None`` when this is the last one."""
        if not self.data:
            return None
        if self.total_pages is None:
            return None
        return self.page + 1 if self.page < self.total_pages else None


# -- the customer-scoped calls (``billing.as_customer(...)``, issue 13) -----------------------------


class PriceInterval(_OpenEnum):
    """How often a price bills (``Price.interval``). Unknown future values are kept as-is."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


@attrs.frozen
class GrantedFeature(_Model):
    """A feature granted to the customer (``CustomerState.granted_features``).

    Every un-revoked grant is listed, whatever the status of the subscription that granted it.
    """

    id: str
    feature_key: str
    feature_id: str | None = None
    feature_name: str | None = None
    granted_at: datetime | None = None


@attrs.frozen
class CustomerState(_Model):
    """What ``await customer.state()`` answers (``GET /v1/customer/me``).

    On the public BillingOS backend, ``active_subscriptions`` is **always empty** (a server bug: its
    query names a column that does not exist) and the whole answer is **cached by the server for up to
    one hour**: a checkout, a free-plan confirmation or a portal change shows here only after that. For
    the current plan, read ``(await customer.products.list()).current_subscription``; to gate a
    feature, ``await customer.entitlements.check(key)``; both are answered fresh.

    Example::

        state = await customer.state()
        print(state.customer.email, [f.feature_key for f in state.granted_features])
    """

    customer: Customer
    active_subscriptions: tuple[Subscription, ...] = ()
    granted_features: tuple[GrantedFeature, ...] = ()


@attrs.frozen
class Price(_Model):
    """One price of a product on the pricing page. ``amount`` is in cents; 0 for a free price."""

    id: str
    amount: int = 0
    currency: str = "usd"
    interval: PriceInterval | None = None
    interval_count: int = 1

    @property
    def is_free(self) -> bool:
        """True for a price of 0 (checkout then completes with ``checkout.confirm_free``)."""
        return self.amount == 0


@attrs.frozen
class ProductFeature(_Model):
    """A feature a product grants, as the pricing page shows it.

    ``properties`` are the feature's own (e.g. a default ``limit``), not the per-plan configuration:
    the public backend does not send per-plan limits on this route.
    """

    id: str
    name: str
    title: str | None = None
    type: FeatureType | None = None
    properties: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class CatalogProduct(_Model):
    """A product of the pricing page with its prices and features.

    ``is_current_plan`` is True for the product of the customer's current subscription;
    ``highlighted`` is the product's ``metadata.recommended``.
    """

    id: str
    name: str
    description: str = ""
    prices: tuple[Price, ...] = ()
    features: tuple[ProductFeature, ...] = ()
    is_current_plan: bool = False
    trial_days: int = 0
    highlighted: bool = False


@attrs.frozen
class CurrentSubscription(_Model):
    """The customer's newest ``active``, ``trialing`` or ``past_due`` subscription (``Catalog``).

    The public backend sends the *product* id where the price id belongs. The SDK repairs it: when
    that product has exactly one price in the catalog, ``price_id`` is that price's id; otherwise
    (several prices, or the product is not in this catalog) it is ``None``, never the product id.
    """

    id: str
    product_id: str | None = None
    price_id: str | None = None
    status: SubscriptionStatus | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False


@attrs.frozen
class Catalog(_Model):
    """What ``await customer.products.list()`` answers: the pricing page of one customer.

    Example::

        catalog = await customer.products.list()
        for product in catalog.products:
            print(product.name, [p.amount for p in product.prices], product.is_current_plan)
    """

    products: tuple[CatalogProduct, ...] = ()
    current_subscription: CurrentSubscription | None = None


@attrs.frozen
class CheckoutProduct(_Model):
    """The product a checkout sells. ``features`` are the feature titles."""

    name: str
    interval: PriceInterval | None = None
    interval_count: int = 1
    features: tuple[str, ...] = ()
    description: str | None = None


@attrs.frozen
class CheckoutCustomer(_Model):
    """The email and name the checkout was *created with* (not the stored customer's)."""

    email: str | None = None
    name: str | None = None


@attrs.frozen
class CheckoutSubscription(_Model):
    """The subscription a completed checkout created."""

    id: str
    customer_id: str | None = None
    product_id: str | None = None
    price_id: str | None = None
    status: SubscriptionStatus | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False


def _mask_secret(value: str) -> str:
    return "''" if not value else "'…'"


@attrs.frozen
class CheckoutSession(_Model):
    """A checkout: what ``checkout.create`` and ``checkout.status`` answer.

    ``client_secret`` is the Stripe PaymentIntent's client secret your front end confirms the payment
    with (Stripe.js); it is a credential, masked in ``repr``. For a **free** price it is ``""`` and
    nothing is paid: complete it with ``await customer.checkout.confirm_free(session.id)``.

    The server sends no status. ``is_complete`` says whether a subscription exists for the checkout
    (after ``confirm_free``, or once the payment succeeded and BillingOS processed Stripe's webhook);
    an expired or failed checkout cannot be told from a pending one.

    Example::

        session = await customer.checkout.create(price.id, customer_email="ada@example.com")
        if session.is_free:
            subscription = await customer.checkout.confirm_free(session.id)
    """

    id: str
    client_secret: str = attrs.field(default="", repr=_mask_secret)
    payment_intent_id: str = ""
    amount: int = 0
    total_amount: int = 0
    currency: str = "usd"
    product: CheckoutProduct | None = None
    customer: CheckoutCustomer | None = None
    stripe_account_id: str | None = None
    trial_days: int = 0
    subscription: CheckoutSubscription | None = None

    @property
    def is_free(self) -> bool:
        """True for a free price: no payment, ``client_secret`` is ``""``."""
        return not self.client_secret

    @property
    def is_complete(self) -> bool:
        """True once the checkout has a subscription (the server's stand-in for a status)."""
        return self.subscription is not None


@attrs.frozen
class PortalSession(_Model):
    """A billing-portal session: give ``id`` to your front end (the BillingOS portal component).

    The id itself is the credential of the portal (no other check), valid until ``expires_at``
    (24 hours). The customer must exist, i.e. have completed a checkout, or ``portal.create`` raises
    ``NotFoundError`` ("Customer must complete checkout before accessing portal").
    """

    id: str
    customer_id: str | None = None
    organization_id: str | None = None
    expires_at: datetime | None = None


@attrs.frozen
class CustomerEntitlement(_Model):
    """A feature granted to the customer (``customer.entitlements.list()``).

    Every un-revoked grant is listed whatever its subscription's status: filter on
    ``subscription_status`` (only ``active`` gives access on the public backend, not ``trialing``).
    ``properties`` is set for usage-quota features only.
    """

    feature_key: str
    feature_title: str | None = None
    feature_type: FeatureType | None = None
    granted_at: datetime | None = None
    product_name: str | None = None
    subscription_status: SubscriptionStatus | None = None
    properties: Mapping[str, Any] = attrs.field(factory=dict)
