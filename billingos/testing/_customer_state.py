"""The rules of the customer-session routes (CONTRACT-CUSTOMER §3), with no HTTP in sight.

State these routes add to :class:`~._state.Store` lives here: checkout sessions, portal sessions,
the connected Stripe account and the one-hour ``GET /v1/customer/me`` cache. Customers,
subscriptions, grants and usage are the store's own, so a unit tracked through
``/v1/features/track-usage`` shows on ``/v1/usage/check`` and back. Every method runs under the
store's lock and never awaits. Payloads keep ``datetime`` values; the HTTP layer renders them.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import attrs

from ._state import PERIOD, ApiError, CustomerRecord, Plan, Store, SubscriptionRecord, invalid, not_found

STATE_CACHE_TTL = 3600.0
CHECKOUT_TTL = timedelta(hours=1)
PORTAL_TTL = timedelta(hours=24)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def server_error() -> ApiError:
    """The server's answer to a plain ``Error`` (CONTRACT-CUSTOMER §0), as under ``NODE_ENV=production``."""
    return ApiError(500, "SYS_INTERNAL_ERROR", "An error occurred while processing your request.")


@attrs.define
class CheckoutRecord:
    """A checkout session (``checkout_sessions`` row plus what its answer needs)."""

    id: str
    price_id: str
    product_id: str
    customer_id: str
    external_user_id: str
    free: bool
    expires_at: datetime
    metadata: dict[str, Any]
    customer_echo: dict[str, str]
    """``customer`` of the answer: the request's email and name, never the stored row."""
    payment_intent_id: str | None = None
    client_secret: str = ""
    subscription_id: str | None = None
    completed_at: datetime | None = None


@attrs.define
class PortalRecord:
    """A portal session (``portal_sessions`` row)."""

    id: str
    customer_id: str
    expires_at: datetime
    metadata: dict[str, Any]


class CustomerSide:
    """The customer-session routes' rules over a :class:`Store`."""

    def __init__(self, store: Store, *, stripe_connected: bool) -> None:
        self.store = store
        self.stripe_account_id: str | None = "acct_" + secrets.token_hex(8) if stripe_connected else None
        self.checkouts: dict[str, CheckoutRecord] = {}
        self.portals: dict[str, PortalRecord] = {}
        self._state_cache: dict[str, tuple[float, dict[str, Any]]] = {}

    # -- shared lookups ----------------------------------------------------------------------

    def _customer(self, external_user_id: str) -> CustomerRecord:
        """``findOneByExternalId``: deleted customers excluded; 404 ``Customer not found``."""
        customer = self.store.find_by_external_id(external_user_id)
        if customer is None:
            raise not_found("Customer not found")
        return customer

    def _customer_any(self, external_user_id: str) -> CustomerRecord | None:
        """The products, checkout and portal lookups: by external id, deleted rows included."""
        return next((c for c in self.store.customers.values() if c.external_id == external_user_id), None)

    def _grant_rows(self, customer: CustomerRecord) -> list[tuple[SubscriptionRecord, Plan, str]]:
        """Every un-revoked grant: (subscription, plan, feature key), oldest subscription first."""
        rows: list[tuple[SubscriptionRecord, Plan, str]] = []
        for sub in sorted(self.store.subscriptions.values(), key=lambda s: s.created_at):
            plan = self.store.plans.get(sub.price_id)
            if sub.customer_id != customer.id or plan is None:
                continue
            if sub.status in ("canceled", "incomplete_expired"):
                continue
            rows.extend((sub, plan, key) for key in plan.grants)
        return rows

    # -- GET /v1/customer/me -----------------------------------------------------------------

    def state(self, external_user_id: str) -> dict[str, Any]:
        """The customer's state, cached an hour per customer (nothing the SDK does clears it)."""
        with self.store.lock:
            customer = self._customer(external_user_id)
            now = self.store.clock()
            cached = self._state_cache.get(customer.id)
            if cached is not None and cached[0] > now:
                return cached[1]
            granted = [
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"grant:{sub.id}:{key}")),
                    "feature_id": self.store.features[key].id,
                    "feature_key": key,
                    "feature_name": self.store.features[key].title or key,
                    "granted_at": sub.created_at,
                }
                for sub, _, key in self._grant_rows(customer)
            ]
            payload = {
                "customer": customer_row(customer, self.store.merchant_id),
                # The server's query filters on a column subscriptions does not have: always [].
                "active_subscriptions": [],
                "granted_features": granted,
            }
            self._state_cache[customer.id] = (now + STATE_CACHE_TTL, payload)
            return payload

    def forget_state(self, customer_id: str) -> None:
        """Drop the cached state (what the admin ``PATCH``/``DELETE /customers/:id`` do)."""
        with self.store.lock:
            self._state_cache.pop(customer_id, None)

    # -- GET /v1/products ----------------------------------------------------------------------

    def products(self, external_user_id: str, plan_ids: list[str] | None) -> dict[str, Any]:
        """The pricing table: visible plans oldest first, and the customer's current subscription."""
        with self.store.lock:
            if plan_ids is not None:
                known = {p.product_id for p in self.store.plans.values()}
                if any(not _UUID.match(i) and i not in known for i in plan_ids):
                    raise server_error()  # Postgres refuses a non-UUID in uuid IN (...)
            customer = self._customer_any(external_user_id)
            current = None
            if customer is not None:
                live = [
                    s
                    for s in self.store.subscriptions.values()
                    if s.customer_id == customer.id and s.status in ("active", "trialing", "past_due")
                ]
                current = max(live, key=lambda s: s.created_at, default=None)
            plans = sorted(
                (p for p in self.store.plans.values() if p.visible),
                key=lambda p: p.created_at.timestamp() if p.created_at else 0.0,
            )
            products: dict[str, dict[str, Any]] = {}
            for plan in plans:
                if plan_ids is not None and plan.product_id not in plan_ids:
                    continue
                product = products.get(plan.product_id)
                if product is None:
                    product = products[plan.product_id] = {
                        "id": plan.product_id,
                        "name": plan.name,
                        "description": plan.description or "",
                        "prices": [],
                        "features": [
                            {
                                "id": self.store.features[key].id,
                                "name": key,
                                "title": self.store.features[key].title,
                                "type": self.store.features[key].type,
                                "properties": self.store.features[key].properties,
                            }
                            for key in plan.grants
                        ],
                        "isCurrentPlan": current is not None and current.product_id == plan.product_id,
                        "trialDays": plan.trial_days,
                        "highlighted": plan.highlighted,
                    }
                product["prices"].append(
                    {
                        "id": plan.price_id,
                        "amount": plan.amount,
                        "currency": plan.currency,
                        "interval": "month",
                        "intervalCount": 1,
                    }
                )
            current_json = None
            if current is not None:
                self.store._period(current)
                current_json = {
                    "id": current.id,
                    "productId": current.product_id,
                    "priceId": current.product_id,  # the server's bug: the product id
                    "status": current.status,
                    "currentPeriodEnd": current.current_period_end,
                    "cancelAtPeriodEnd": current.cancel_at_period_end,
                }
            return {"products": list(products.values()), "currentSubscription": current_json}

    # -- checkout ----------------------------------------------------------------------------

    def create_checkout(self, external_user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/checkout/create`` after DTO validation: find the price, the account, the customer."""
        with self.store.lock:
            plan = self.store.plans.get(body["priceId"])
            if plan is None:
                raise not_found("Price not found or not available")
            if self.stripe_account_id is None:
                raise invalid("Organization does not have a Stripe Connect account")
            nested = body.get("customer") or {}
            email = body.get("customerEmail") or nested.get("email")
            name = body.get("customerName") or nested.get("name")
            metadata = dict(body.get("metadata") or {})
            customer = self._checkout_customer(external_user_id, email, name, metadata)
            echo = {k: v for k, v in (("email", email), ("name", name)) if isinstance(v, str)}
            free = plan.amount == 0
            record = CheckoutRecord(
                id=str(uuid.uuid4()),
                price_id=plan.price_id,
                product_id=plan.product_id,
                customer_id=customer.id,
                external_user_id=external_user_id,
                free=free,
                expires_at=self.store.now() + CHECKOUT_TTL,
                metadata={
                    **metadata,
                    "isFreeProduct": True,
                    "customerId": customer.id,
                    "productId": plan.product_id,
                    "priceId": plan.price_id,
                }
                if free
                else {**metadata, "existingSubscriptionId": body.get("existingSubscriptionId")},
                customer_echo=echo,
            )
            if not free:
                record.payment_intent_id = "pi_" + secrets.token_hex(12)
                record.client_secret = f"{record.payment_intent_id}_secret_{secrets.token_hex(12)}"
            self.checkouts[record.id] = record
            return self._checkout_json(record, plan, created=True)

    def _checkout_customer(
        self, external_user_id: str, email: str | None, name: str | None, metadata: dict[str, Any]
    ) -> CustomerRecord:
        """Reuse a customer with a Stripe id; else "create one in Stripe" and upsert as the server does."""
        existing = self._customer_any(external_user_id)
        if existing is not None and existing.stripe_customer_id:
            return existing
        email = (email or "").lower()
        stripe_id = "cus_" + secrets.token_hex(7)
        now = self.store.now()
        target = existing
        if target is None and email:
            # A repeated email re-points another customer's row to this user (the server's bug).
            target = next((c for c in self.store.customers.values() if c.email.lower() == email), None)
        if target is not None:
            target.external_id = external_user_id
            target.stripe_customer_id = stripe_id
            target.metadata = metadata
            if email:
                target.email = email
            if name:
                target.name = name
            target.updated_at = now
            return target
        if any(c.email.lower() == email for c in self.store.customers.values()):
            raise invalid(
                "Failed to upsert customer after multiple attempts: duplicate key value violates unique "
                'constraint "customers_organization_id_email_key"'
            )
        record = CustomerRecord(
            id=str(uuid.uuid4()),
            email=email,
            external_id=external_user_id,
            name=name,
            billing_address={},
            metadata=metadata,
            created_at=now,
            updated_at=now,
            stripe_customer_id=stripe_id,
        )
        self.store.customers[record.id] = record
        return record

    def _checkout_json(self, record: CheckoutRecord, plan: Plan, *, created: bool) -> dict[str, Any]:
        product: dict[str, Any] = {
            "name": plan.name,
            "interval": "month",
            "intervalCount": 1,
            "features": [self.store.features[k].title for k in plan.grants],
        }
        if record.free and (created or plan.description is not None):
            product["description"] = plan.description
        result: dict[str, Any] = {
            "id": record.id,
            "clientSecret": record.client_secret,
            "paymentIntentId": record.payment_intent_id or "",
            "amount": plan.amount,
            "totalAmount": plan.amount,
            "currency": plan.currency or "usd",
            "product": product,
            "customer": dict(record.customer_echo),
        }
        if not record.free:
            result["stripeAccountId"] = self.stripe_account_id or ""
        result["trialDays"] = 0 if record.free else plan.trial_days
        return result

    def _checkout(self, session_id: str) -> CheckoutRecord:
        record = self.checkouts.get(session_id)
        if record is None:
            raise not_found("Checkout session not found")
        return record

    def checkout_status(self, session_id: str) -> dict[str, Any]:
        """``GET /v1/checkout/{id}/status``: the session from the DB, with its subscription once there is one.

        As on the server, there is no ``status`` field.
        """
        with self.store.lock:
            record = self._checkout(session_id)
            plan = self.store.plans.get(record.price_id)
            if plan is None:
                raise not_found("Product or price not found")
            result = self._checkout_json(record, plan, created=False)
            sub: SubscriptionRecord | None
            if record.free:
                sub = self.store.subscriptions.get(record.subscription_id or "")
            else:
                sub = next(
                    (
                        s
                        for s in self.store.subscriptions.values()
                        if s.payment_intent_id == record.payment_intent_id
                    ),
                    None,
                )
            if sub is not None:
                self.store._period(sub)
                result["subscription"] = {
                    "id": sub.id,
                    "customerId": sub.customer_id,
                    "productId": sub.product_id,
                    "priceId": sub.price_id or "",
                    "status": sub.status,
                    "currentPeriodStart": sub.current_period_start,
                    "currentPeriodEnd": sub.current_period_end,
                    "cancelAtPeriodEnd": sub.cancel_at_period_end,
                }
            return result

    def confirm_free(self, session_id: str) -> dict[str, Any]:
        """``POST /v1/checkout/{id}/confirm-free``: the raw subscriptions row (snake_case)."""
        with self.store.lock:
            record = self._checkout(session_id)
            if not record.free:
                raise invalid("This endpoint is only for free product confirmations")
            plan = self.store.plans.get(record.price_id)
            if plan is None:
                raise not_found("Product or price not found")
            now = self.store.now()
            if record.completed_at is not None and record.subscription_id in self.store.subscriptions:
                sub = self.store.subscriptions[record.subscription_id]
                return self._row(sub, plan, nested=True)
            same = [
                s
                for s in self.store.subscriptions.values()
                if s.customer_id == record.customer_id and s.product_id == record.product_id
            ]
            newest = max(same, key=lambda s: s.created_at, default=None)
            nested = True
            if newest is not None and newest.status in ("active", "trialing"):
                sub, nested = newest, False
            elif newest is not None and newest.status == "canceled":
                sub = newest
                sub.status = "active"
                sub.current_period_start, sub.current_period_end = now, now + PERIOD
                sub.cancel_at_period_end, sub.canceled_at, sub.ended_at = False, None, None
                sub.metadata = {**sub.metadata, **_user_metadata(record.metadata)}
                sub.updated_at = now
            elif newest is not None:
                raise invalid(f"Cannot subscribe: existing subscription in {newest.status} status")
            else:
                sub = self.store.create_subscription(
                    record.customer_id,
                    plan.price_id,
                    None,
                    _user_metadata(record.metadata),
                    status="active",
                )
                sub.amount = 0
            record.subscription_id, record.completed_at = sub.id, now
            return self._row(sub, plan, nested=nested)

    def complete_checkout(self, session_id: str) -> SubscriptionRecord:
        """Simulate the payment of a paid checkout and the ``payment_intent.succeeded`` webhook."""
        with self.store.lock:
            record = self.checkouts.get(session_id)
            if record is None:
                raise KeyError(f"no checkout session {session_id!r}")
            if record.free:
                raise ValueError(
                    "a free checkout completes through POST /v1/checkout/{id}/confirm-free, not a payment"
                )
            if record.subscription_id is not None:
                return self.store.subscriptions[record.subscription_id]
            sub = self.store.create_subscription(
                record.customer_id, record.price_id, None, _user_metadata(record.metadata)
            )
            sub.payment_intent_id = record.payment_intent_id
            record.subscription_id, record.completed_at = sub.id, self.store.now()
            return sub

    def _row(self, sub: SubscriptionRecord, plan: Plan, *, nested: bool) -> dict[str, Any]:
        self.store._period(sub)
        row: dict[str, Any] = {
            "id": sub.id,
            "organization_id": self.store.merchant_id,
            "customer_id": sub.customer_id,
            "product_id": sub.product_id,
            "price_id": sub.price_id,
            "status": sub.status,
            "amount": sub.amount,
            "currency": sub.currency,
            "current_period_start": sub.current_period_start,
            "current_period_end": sub.current_period_end,
            "trial_start": sub.trial_start,
            "trial_end": sub.trial_end,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "canceled_at": sub.canceled_at,
            "ended_at": sub.ended_at,
            "stripe_subscription_id": None,
            "payment_intent_id": sub.payment_intent_id,
            "metadata": sub.metadata,
            "version": 1,
            "created_at": sub.created_at,
            "updated_at": sub.updated_at,
        }
        if nested:
            row["product"] = {
                "id": plan.product_id,
                "organization_id": self.store.merchant_id,
                "name": plan.name,
                "description": plan.description,
                "trial_days": plan.trial_days,
                "is_archived": False,
                "visible_in_pricing_table": plan.visible,
                "metadata": {"recommended": True} if plan.highlighted else {},
                "version": 1,
                "version_status": None,
                "created_at": plan.created_at,
                "updated_at": plan.created_at,
            }
            row["price"] = {
                "id": plan.price_id,
                "product_id": plan.product_id,
                "amount_type": "free" if plan.amount == 0 else "fixed",
                "price_amount": plan.amount or None,
                "price_currency": plan.currency,
                "recurring_interval": "month",
                "recurring_interval_count": 1,
                "is_archived": False,
                "stripe_price_id": None,
                "created_at": plan.created_at,
                "updated_at": plan.created_at,
            }
        return row

    # -- portal ------------------------------------------------------------------------------

    def create_portal(
        self, external_user_id: str, customer_id: str | None, metadata: dict[str, Any] | None
    ) -> dict[str, Any]:
        """``POST /v1/portal/create``: a 24-hour portal session for the token's (or a given) customer."""
        with self.store.lock:
            if customer_id is not None:
                customer = self.store.customers.get(customer_id)
                if customer is None:
                    raise not_found("Customer not found or does not belong to organization")
            else:
                found = self._customer_any(external_user_id)
                if found is None:
                    raise not_found(
                        "Customer not found. Customer must complete checkout before accessing portal."
                    )
                customer = found
            record = PortalRecord(
                id=str(uuid.uuid4()),
                customer_id=customer.id,
                expires_at=self.store.now() + PORTAL_TTL,
                metadata=dict(metadata or {}),
            )
            self.portals[record.id] = record
            return {
                "id": record.id,
                "customerId": record.customer_id,
                "organizationId": self.store.merchant_id,
                "expiresAt": _postgrest_time(record.expires_at),
            }

    def portal_status(self, session_id: str) -> dict[str, Any]:
        """``GET /v1/portal/{id}/status``: never an error; ``isValid`` false when unknown or expired."""
        with self.store.lock:
            record = self.portals.get(session_id)
            if record is None:
                return {"sessionId": session_id, "isValid": False}
            return {
                "sessionId": session_id,
                "isValid": record.expires_at > self.store.now(),
                "expiresAt": _postgrest_time(record.expires_at),
                "customerId": record.customer_id,
            }

    # -- features ----------------------------------------------------------------------------

    def entitlements(self, external_user_id: str) -> dict[str, Any]:
        """``GET /v1/features/entitlements``: every un-revoked grant, whatever the subscription's status."""
        with self.store.lock:
            customer = self._customer(external_user_id)
            rows = []
            for sub, plan, key in self._grant_rows(customer):
                feature = self.store.features[key]
                row: dict[str, Any] = {
                    "feature_key": key,
                    "feature_title": feature.title,
                    "feature_type": feature.type,
                    "granted_at": sub.created_at,
                    "product_name": plan.name,
                    "subscription_status": sub.status,
                }
                if feature.type == "usage_quota":
                    row["properties"] = feature.properties
                rows.append(row)
            return {
                "entitlements": rows,
                "customer_id": customer.id,
                "external_user_id": external_user_id,
            }

    def usage_metrics(self, external_user_id: str, feature_key: str | None) -> dict[str, Any]:
        """``GET /v1/features/usage-metrics``; an unknown ``feature_key`` filter is dropped."""
        with self.store.lock:
            customer = self._customer(external_user_id)
            result = self.store.metrics(external_user_id, feature_key, drop_unknown_filter=True)
            return {**result, "customer_id": customer.id, "external_user_id": external_user_id}


def customer_row(customer: CustomerRecord, organization_id: str) -> dict[str, Any]:
    """A ``customers`` row as ``GET /v1/customer/me`` shows it (snake_case)."""
    return {
        "id": customer.id,
        "organization_id": organization_id,
        "external_id": customer.external_id,
        "email": customer.email,
        "email_verified": customer.email_verified,
        "name": customer.name,
        "billing_address": customer.billing_address if customer.billing_address is not None else {},
        "stripe_customer_id": customer.stripe_customer_id,
        "metadata": customer.metadata,
        "created_at": customer.created_at,
        "updated_at": customer.updated_at,
        "deleted_at": customer.deleted_at,
    }


def _user_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    internal = {"isFreeProduct", "customerId", "productId", "priceId", "existingSubscriptionId"}
    return {k: v for k, v in metadata.items() if k not in internal}


def _postgrest_time(moment: datetime) -> str:
    """A timestamptz as PostgREST writes it: ``2026-01-02T00:00:00.123456+00:00``."""
    return moment.isoformat(timespec="microseconds")
