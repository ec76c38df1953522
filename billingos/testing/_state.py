"""The fake's state and the BillingOS rules it enforces, with no HTTP in sight.

Every public method here is one endpoint's (or one seeding call's) logic. Each runs under one
re-entrant lock and never awaits, so concurrent requests cannot interleave a read-modify-write
(the real backend's lost-update bug under concurrent tracks is deliberately not reproduced).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import attrs

FeatureType = Literal["boolean_flag", "usage_quota", "numeric_limit"]
FEATURE_TYPES = ("boolean_flag", "usage_quota", "numeric_limit")
SUBSCRIPTION_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
)
PERIOD = timedelta(days=30)
IDEMPOTENCY_TTL = 24 * 3600.0
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ApiError(Exception):
    """An error response: status, the server's code, message and optional details."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class TokenRejected(ValueError):
    """A session token the server's guard refuses; the message is the server's 401 message."""


def not_found(message: str) -> ApiError:
    return ApiError(404, "RES_NOT_FOUND", message)


def invalid(message: str, field_errors: Mapping[str, list[str]] | None = None) -> ApiError:
    details = {"fieldErrors": dict(field_errors)} if field_errors else None
    return ApiError(400, "VAL_INVALID_INPUT", message, details)


def conflict(message: str) -> ApiError:
    return ApiError(409, "RES_CONFLICT", message)


@attrs.define
class Feature:
    """A feature a product can grant (``key`` is ``features.name`` on the wire)."""

    key: str
    type: FeatureType
    title: str
    id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    """The feature's UUID, as ``GET /v1/products`` and ``GET /v1/customer/me`` show it."""
    properties: dict[str, Any] = attrs.field(factory=dict)
    """The feature-level ``features.properties`` (what ``GET /v1/products`` shows, not per-plan limits)."""


@attrs.define
class Plan:
    """A product and its one price, as :meth:`FakeBillingOS.add_product` creates them."""

    product_id: str
    price_id: str
    name: str
    grants: dict[str, float | None]
    """feature key -> limit (``None`` for a boolean flag, or a NULL quota limit: see ``add_product``)."""
    amount: int
    currency: str
    trial_days: int = 0
    description: str | None = None
    """Shown by ``GET /v1/products`` (``""`` when ``None``) and by a free checkout."""
    highlighted: bool = False
    """``products.metadata.recommended``: ``highlighted`` in ``GET /v1/products``."""
    visible: bool = True
    """``visible_in_pricing_table``: a hidden plan is left out of ``GET /v1/products``."""
    created_at: datetime | None = None
    """When the plan was added (set by the store)."""


@attrs.define
class CustomerRecord:
    """A customer as the fake stores it (``id`` is the internal id, ``external_id`` yours)."""

    id: str
    email: str
    external_id: str | None
    name: str | None
    billing_address: dict[str, Any] | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    email_verified: bool = False
    stripe_customer_id: str | None = None
    deleted_at: datetime | None = None


@attrs.define
class SubscriptionRecord:
    """A subscription as the fake stores it."""

    id: str
    customer_id: str
    product_id: str
    price_id: str
    status: str
    amount: int
    currency: str
    current_period_start: datetime
    current_period_end: datetime
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    trial_start: datetime | None = None
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    payment_intent_id: str | None = None
    """The ``pi_`` id of the paid checkout that created it (``None`` otherwise)."""


@attrs.define
class SessionTokenRecord:
    """A session token the fake minted (``token_id`` is its ``jti``)."""

    token_id: str
    expires_at: float
    revoked: bool = False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Store:
    """Everything the fake knows, and the rules of every endpoint."""

    def __init__(self, clock: Callable[[], float], token_secret: bytes, merchant_id: str) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.token_secret = token_secret
        self.merchant_id = merchant_id
        self.api_keys: set[str] = set()
        self.features: dict[str, Feature] = {}
        self.plans: dict[str, Plan] = {}  # by price id
        self.customers: dict[str, CustomerRecord] = {}
        self.subscriptions: dict[str, SubscriptionRecord] = {}
        self.usage: dict[tuple[str, str, datetime], float] = {}  # (customer id, feature, period start)
        self.tokens: dict[str, SessionTokenRecord] = {}
        self.idempotency: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- seeding -----------------------------------------------------------------------------

    def add_feature(
        self, key: str, type: FeatureType, title: str | None, properties: Mapping[str, Any] | None = None
    ) -> Feature:
        if type not in FEATURE_TYPES:
            raise ValueError(f"feature type must be one of {FEATURE_TYPES}, got {type!r}")
        with self.lock:
            feature = self.features[key] = Feature(
                key, type, title or key.replace("_", " ").title(), properties=dict(properties or {})
            )
            return feature

    def add_plan(self, plan: Plan) -> Plan:
        with self.lock:
            for key, limit in plan.grants.items():
                feature = self.features.get(key)
                if feature is None:
                    raise ValueError(f"unknown feature {key!r}: add_feature() it first")
                if feature.type == "numeric_limit" and limit is None:
                    raise ValueError(f"feature {key!r} is a {feature.type}: give it a numeric limit")
            if plan.created_at is None:
                plan.created_at = self.now()
            self.plans[plan.price_id] = plan
            return plan

    def find_customer(self, ref: str) -> CustomerRecord | None:
        """By internal id or external id, ignoring deleted customers."""
        with self.lock:
            record = self.customers.get(ref)
            if record is None:
                record = next((c for c in self.customers.values() if c.external_id == ref), None)
            return None if record is None or record.deleted_at is not None else record

    def find_by_external_id(self, external_id: str) -> CustomerRecord | None:
        """The live customer with this external id (the merchant's user id): what usage is keyed by."""
        with self.lock:
            return next(
                (c for c in self.customers.values() if c.external_id == external_id and c.deleted_at is None),
                None,
            )

    # -- session tokens ----------------------------------------------------------------------

    def create_session_token(
        self,
        external_user_id: str,
        external_organization_id: str | None,
        expires_in: int,
        allowed_operations: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> str:
        with self.lock:
            now = self.clock()
            jti = "tok_" + secrets.token_hex(16)
            payload: dict[str, Any] = {
                "jti": jti,
                "iat": int(now),
                "exp": int(now) + expires_in,
                "merchant_id": self.merchant_id,
                "external_user_id": external_user_id,
            }
            if external_organization_id is not None:
                payload["external_organization_id"] = external_organization_id
            payload["allowed_operations"] = allowed_operations or []
            payload["metadata"] = metadata or {}
            body = _b64url(json.dumps(payload, separators=(",", ":")).encode())
            signature = self._sign(body)
            self.tokens[jti] = SessionTokenRecord(jti, now + expires_in)
            return f"bos_session_{body}.{signature}"

    def _sign(self, body: str) -> str:
        return hmac.new(self.token_secret, f"bos_session_{body}".encode(), hashlib.sha256).hexdigest()

    def session_claims(self, token: str) -> dict[str, Any]:
        """What ``SessionTokenAuthGuard`` does with the token after ``Bearer `` (CONTRACT-CUSTOMER §1.2).

        Returns the claims, or raises :class:`TokenRejected` with the server's 401 message, checked in
        the server's order: format, prefix, payload, expiry (by the fake's clock), revocation, signature.
        """
        parts = token.split(".")
        if len(parts) != 2:
            raise TokenRejected("Invalid token format")
        head, signature = parts
        if not head.startswith("bos_session_"):
            raise TokenRejected("Invalid token prefix")
        body = head[len("bos_session_") :]
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            raise TokenRejected("Invalid token payload") from None
        if not isinstance(claims, dict):
            raise TokenRejected("Invalid token payload")
        exp = claims.get("exp")
        with self.lock:
            # The server expires at ``exp < now``; the fake at ``exp <= now`` (one instant apart), the rule
            # fake.verify_session_token has always had.
            if isinstance(exp, (int, float)) and exp <= self.clock():
                raise TokenRejected("Token expired")
            record = self.tokens.get(str(claims.get("jti")))
            if record is None or record.revoked:
                raise TokenRejected("Token not found or revoked")
        if not hmac.compare_digest(self._sign(body), signature):
            raise TokenRejected("Invalid token signature")
        return claims

    def verify_session_token(self, token: str) -> dict[str, Any]:
        """The token's claims if its signature is ours, it is unexpired and not revoked; else ValueError.

        Unlike the server's guard (:meth:`session_claims`), this checks the signature first, so a token
        of another server is reported as not signed by this one.
        """
        if not token.startswith("bos_session_") or "." not in token:
            raise ValueError("not a BillingOS session token")
        head, _, signature = token.rpartition(".")
        if not hmac.compare_digest(self._sign(head[len("bos_session_") :]), signature):
            raise TokenRejected("Invalid token signature")
        return self.session_claims(token)

    def revoke_session_token(self, jti: str) -> None:
        with self.lock:
            record = self.tokens.get(jti)
            if record is None or record.revoked:
                raise not_found("Session token not found")
            record.revoked = True

    # -- entitlements and usage --------------------------------------------------------------

    def _period(self, sub: SubscriptionRecord) -> tuple[datetime, datetime]:
        """The subscription's current period, rolled forward (renewed) when it has ended."""
        now = self.now()
        while sub.current_period_end <= now and sub.status in ("active", "trialing", "past_due"):
            sub.current_period_start = sub.current_period_end
            sub.current_period_end = sub.current_period_start + PERIOD
        return sub.current_period_start, sub.current_period_end

    def _grants(self, customer: CustomerRecord, feature_key: str) -> list[tuple[SubscriptionRecord, Plan]]:
        return [
            (sub, self.plans[sub.price_id])
            for sub in self.subscriptions.values()
            if sub.customer_id == customer.id
            and sub.price_id in self.plans
            and feature_key in self.plans[sub.price_id].grants
            and sub.status not in ("canceled", "incomplete_expired")
        ]

    def _active_grant(
        self, customer: CustomerRecord, feature_key: str
    ) -> tuple[SubscriptionRecord, Plan] | None:
        return next(((s, p) for s, p in self._grants(customer, feature_key) if s.status == "active"), None)

    def _consumed(self, customer: CustomerRecord, feature_key: str, sub: SubscriptionRecord) -> float:
        start, _ = self._period(sub)
        return self.usage.get((customer.id, feature_key, start), 0.0)

    def check(self, customer_id: str, feature_key: str) -> dict[str, Any]:
        with self.lock:
            customer = self.find_by_external_id(customer_id)
            if customer is None:
                raise not_found("Customer not found")
            denied: dict[str, Any] = {
                "feature_key": feature_key,
                "has_access": False,
                "limit": None,
                "usage": None,
                "metadata": None,
            }
            grant = self._active_grant(customer, feature_key)
            if grant is None:
                reason = (
                    "subscription_not_active"
                    if self._grants(customer, feature_key)
                    else "no_active_subscription"
                )
                return {**denied, "reason": reason}
            sub, plan = grant
            feature = self.features[feature_key]
            limit = plan.grants[feature_key]
            if feature.type == "boolean_flag":
                return {
                    "feature_key": feature_key,
                    "has_access": True,
                    "limit": None,
                    "usage": None,
                    "metadata": {"type": feature.type},
                }
            if feature.type == "numeric_limit":
                return {
                    "feature_key": feature_key,
                    "has_access": True,
                    "limit": limit,
                    "usage": None,
                    "metadata": {"type": feature.type},
                }
            limit = limit or 0.0  # a NULL ("unlimited") quota counts as 0 on the server: always exceeded
            consumed = self._consumed(customer, feature_key, sub)
            _, period_end = self._period(sub)
            result: dict[str, Any] = {
                "feature_key": feature_key,
                "has_access": consumed < limit,
                "limit": limit,
                "usage": consumed,
                "metadata": {
                    "remaining": max(limit - consumed, 0.0),
                    "resets_at": period_end,
                    "type": feature.type,
                },
            }
            if consumed >= limit:
                result["reason"] = "quota_exceeded"
            return result

    def track(
        self,
        customer_id: str,
        feature_key: str,
        quantity: float,
        idempotency_key: str | None,
        *,
        any_status: bool = False,
    ) -> dict[str, Any]:
        """Count ``quantity`` units; ``any_status``: any un-revoked grant will do (features route)."""
        with self.lock:
            customer = self.find_by_external_id(customer_id)
            if customer is None:
                raise not_found("Customer not found")
            now = self.clock()
            if idempotency_key is not None:
                seen = self.idempotency.get((customer.id, idempotency_key))
                if seen is not None and seen[0] > now:
                    return seen[1]  # a replay: the first call's result, nothing counted
            grant = self._active_grant(customer, feature_key)
            if grant is None and any_status:
                grant = next(iter(self._grants(customer, feature_key)), None)
            if grant is None:
                raise not_found("No active subscription with this feature")
            sub, plan = grant
            if self.features[feature_key].type != "usage_quota":
                raise invalid("Feature is not a usage quota type")
            limit = plan.grants[feature_key] or 0.0  # NULL counts as 0
            start, end = self._period(sub)
            consumed = self.usage.get((customer.id, feature_key, start), 0.0)
            if consumed + quantity > limit:
                raise invalid("quota_exceeded")
            if consumed + quantity < 0:  # a negative quantity decrements; the DB refuses below 0
                raise invalid("Failed to track usage")
            consumed += quantity
            self.usage[(customer.id, feature_key, start)] = consumed
            result = {
                "success": True,
                "feature_key": feature_key,
                "quantity": quantity,
                "recorded_at": self.now(),
                "usage": {
                    "consumed_units": _decimal(consumed),
                    "limit_units": _decimal(limit),
                    "remaining_units": _decimal(limit - consumed),
                    "period_start": start,
                    "period_end": end,
                },
            }
            if idempotency_key is not None:
                if len(self.idempotency) >= 100_000:  # keep memory bounded in long runs
                    self.idempotency = {k: v for k, v in self.idempotency.items() if v[0] > now}
                self.idempotency[(customer.id, idempotency_key)] = (now + IDEMPOTENCY_TTL, result)
            return result

    def metrics(
        self, customer_id: str, feature_key: str | None, *, drop_unknown_filter: bool = False
    ) -> dict[str, Any]:
        """Usage metrics; ``drop_unknown_filter``: an unknown ``feature_key`` returns all (features route)."""
        with self.lock:
            customer = self.find_by_external_id(customer_id)
            if customer is None:
                raise not_found("Customer not found")
            if drop_unknown_filter and feature_key not in self.features:
                feature_key = None
            metrics = []
            seen: set[str] = set()
            for sub in self.subscriptions.values():
                plan = self.plans.get(sub.price_id)
                if sub.customer_id != customer.id or plan is None or sub.status != "active":
                    continue
                for key, limit in plan.grants.items():
                    feature = self.features[key]
                    if feature.type != "usage_quota" or key in seen or feature_key not in (None, key):
                        continue
                    limit = limit or 0.0  # NULL -> 0
                    seen.add(key)
                    start, end = self._period(sub)
                    consumed = self.usage.get((customer.id, key, start), 0.0)
                    metrics.append(
                        {
                            "feature_key": key,
                            "feature_title": feature.title,
                            "product_name": plan.name,
                            "consumed": consumed,
                            "limit": limit,
                            "remaining": max(limit - consumed, 0.0),
                            "percentage_used": int(min(consumed / limit, 1.0) * 100) if limit else 100,
                            "period_start": start,
                            "period_end": end,
                            "resets_in_days": max(math.ceil((end - self.now()).total_seconds() / 86400), 0),
                        }
                    )
            return {"metrics": metrics, "customer_id": customer_id}

    # -- customers ---------------------------------------------------------------------------

    def _taken(
        self, *, email: str | None = None, external_id: str | None = None, but: str | None = None
    ) -> bool:
        return any(
            c.deleted_at is None
            and c.id != but
            and (
                (email is not None and c.email.lower() == email.lower())
                or (external_id is not None and c.external_id == external_id)
            )
            for c in self.customers.values()
        )

    def create_customer(self, fields: Mapping[str, Any]) -> CustomerRecord:
        with self.lock:
            if self._taken(email=fields["email"]):
                raise conflict("A customer with this email already exists")
            if fields.get("external_id") is not None and self._taken(external_id=fields["external_id"]):
                raise conflict("A customer with this external_id already exists")
            now = self.now()
            record = CustomerRecord(
                id=str(uuid.uuid4()),
                email=fields["email"],
                external_id=fields.get("external_id"),
                name=fields.get("name"),
                billing_address=fields.get("billing_address"),
                metadata=dict(fields.get("metadata") or {}),
                created_at=now,
                updated_at=now,
            )
            self.customers[record.id] = record
            return record

    def get_customer(self, customer_id: str, *, external: bool = False) -> CustomerRecord:
        with self.lock:
            if external:
                record = next((c for c in self.customers.values() if c.external_id == customer_id), None)
            else:
                record = self.customers.get(customer_id)
            if record is None or record.deleted_at is not None:
                raise not_found("Customer not found")
            return record

    def update_customer(self, customer_id: str, fields: Mapping[str, Any]) -> CustomerRecord:
        with self.lock:
            record = self.get_customer(customer_id)
            email, external_id = fields.get("email"), fields.get("external_id")
            if external_id is not None and record.external_id not in (None, external_id):
                raise invalid(
                    "external_id can only be set once", {"external_id": ["external_id can only be set once"]}
                )
            if email is not None and self._taken(email=email, but=record.id):
                raise conflict("A customer with this email already exists")
            if external_id is not None and self._taken(external_id=external_id, but=record.id):
                raise conflict("A customer with this external_id already exists")
            for name in ("email", "external_id", "name", "billing_address", "metadata"):
                if fields.get(name) is not None:
                    setattr(record, name, fields[name])
            record.updated_at = self.now()
            return record

    def delete_customer(self, customer_id: str) -> None:
        with self.lock:
            record = self.get_customer(customer_id)
            now = self.now()
            record.deleted_at = now
            for sub in self.subscriptions.values():
                if sub.customer_id == record.id and sub.status != "canceled":
                    sub.status, sub.canceled_at, sub.ended_at, sub.updated_at = "canceled", now, now, now

    def list_customers(
        self,
        *,
        page: int,
        limit: int,
        email: str | None,
        external_id: str | None,
        query: str | None,
        sort_by: str,
        sort_order: str,
    ) -> tuple[list[CustomerRecord], int]:
        with self.lock:
            rows = [c for c in self.customers.values() if c.deleted_at is None]
            if email is not None:
                rows = [c for c in rows if c.email.lower() == email.lower()]
            if external_id is not None:
                rows = [c for c in rows if c.external_id == external_id]
            if query:
                needle = query.lower()
                rows = [
                    c
                    for c in rows
                    if any(needle in (v or "").lower() for v in (c.email, c.name, c.external_id))
                ]
            rows.sort(key=lambda c: (getattr(c, sort_by) or "", c.id), reverse=sort_order == "desc")
            return rows[(page - 1) * limit : page * limit], len(rows)

    # -- subscriptions -----------------------------------------------------------------------

    def create_subscription(
        self,
        customer_id: str,
        price_id: str,
        product_id: str | None,
        metadata: dict[str, Any] | None,
        status: str | None = None,
    ) -> SubscriptionRecord:
        with self.lock:
            customer = self.find_customer(customer_id)
            if customer is None:
                raise not_found("Customer not found")
            plan = self.plans.get(price_id)
            if plan is None:
                raise not_found("Price not found")
            if product_id is not None and product_id != plan.product_id:
                raise invalid("price_id does not belong to product_id")
            now = self.now()
            trialing = plan.trial_days > 0
            record = SubscriptionRecord(
                id="sub_" + secrets.token_hex(12),
                customer_id=customer.id,
                product_id=plan.product_id,
                price_id=plan.price_id,
                status=status or ("trialing" if trialing else "active"),
                amount=plan.amount,
                currency=plan.currency,
                current_period_start=now,
                current_period_end=now + PERIOD,
                metadata=dict(metadata or {}),
                created_at=now,
                updated_at=now,
                trial_start=now if trialing else None,
                trial_end=now + timedelta(days=plan.trial_days) if trialing else None,
            )
            self.subscriptions[record.id] = record
            return record

    def get_subscription(self, subscription_id: str) -> SubscriptionRecord:
        with self.lock:
            record = self.subscriptions.get(subscription_id)
            if record is None:
                raise not_found("Subscription not found")
            self._period(record)
            return record

    def list_subscriptions(self, customer_id: str | None) -> list[SubscriptionRecord]:
        with self.lock:
            if customer_id is not None:
                customer = self.find_customer(customer_id)
                ids = {customer.id} if customer is not None else set()
                rows = [s for s in self.subscriptions.values() if s.customer_id in ids]
            else:
                rows = list(self.subscriptions.values())
            return sorted(rows, key=lambda s: s.created_at)

    def update_subscription(self, subscription_id: str, fields: Mapping[str, Any]) -> SubscriptionRecord:
        with self.lock:
            record = self.get_subscription(subscription_id)
            price_id = fields.get("price_id")
            if price_id is not None:
                plan = self.plans.get(price_id)
                if plan is None:
                    raise not_found("Price not found")
                record.price_id, record.product_id = plan.price_id, plan.product_id
                record.amount, record.currency = plan.amount, plan.currency
            if fields.get("cancel_at_period_end") is not None:
                record.cancel_at_period_end = fields["cancel_at_period_end"]
            if fields.get("metadata") is not None:
                record.metadata = dict(fields["metadata"])
            record.updated_at = self.now()
            return record

    def cancel_subscription(self, subscription_id: str, at_period_end: bool) -> SubscriptionRecord:
        with self.lock:
            record = self.get_subscription(subscription_id)
            if record.status == "canceled":
                raise invalid("Subscription is already canceled")
            now = self.now()
            if at_period_end:
                record.cancel_at_period_end = True
            else:
                record.status, record.canceled_at, record.ended_at = "canceled", now, now
                record.cancel_at_period_end = False
            record.updated_at = now
            return record

    def reactivate_subscription(self, subscription_id: str) -> SubscriptionRecord:
        with self.lock:
            record = self.get_subscription(subscription_id)
            if record.status == "canceled":
                raise invalid("A canceled subscription cannot be reactivated")
            record.cancel_at_period_end = False
            record.updated_at = self.now()
            return record

    def set_subscription_status(self, subscription_id: str, status: str) -> SubscriptionRecord:
        with self.lock:
            record = self.get_subscription(subscription_id)
            record.status = status
            record.updated_at = self.now()
            return record

    def usage_of(self, customer_ref: str, feature_key: str) -> float:
        """Units consumed in the current period of the customer's active grant (0 when none)."""
        with self.lock:
            customer = self.find_customer(customer_ref)
            if customer is None:
                raise KeyError(f"no customer {customer_ref!r}")
            grant = self._active_grant(customer, feature_key) or next(
                iter(self._grants(customer, feature_key)), None
            )
            if grant is None:
                return sum(v for (c, f, _), v in self.usage.items() if c == customer.id and f == feature_key)
            return self._consumed(customer, feature_key, grant[0])


def _decimal(value: float) -> str:
    """Numbers as PostgreSQL's numeric columns serialise them: ``"1000.000000"``."""
    return f"{value:.6f}"
