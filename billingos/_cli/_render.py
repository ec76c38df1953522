"""What the ``billingos`` commands print: one JSON document with ``--json``, short text otherwise.

JSON is the model's ``to_dict()`` (snake_case attributes, dates as ISO-8601 strings, enums as their
values), so a script can read it back with ``Model.from_dict``. Text is for people: a line or an
aligned table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .._convert import to_dict
from .._demo import table
from .._models import (
    Catalog,
    CheckoutSession,
    Customer,
    CustomerState,
    Entitlement,
    PortalSession,
    Price,
    SessionToken,
    Subscription,
    UsageMetrics,
    UsageRecord,
)


def to_json(value: Any) -> str:
    """``value`` (a model, or a dict of models) as indented JSON: each model as its ``to_dict()``."""
    return json.dumps(to_dict(value), indent=2, ensure_ascii=False)


def entitlement(customer: str, ent: Entitlement) -> str:
    """``granted: user_1 has api_calls (usage_quota: 12 of 1000 used, 988 left, resets …)``."""
    verdict = f"granted: {customer} has" if ent.has_access else f"denied: {customer} does not have"
    why = [str(ent.reason)] if ent.reason is not None else []
    if ent.feature_type is not None:
        why.append(str(ent.feature_type))
    amounts = _amounts(ent.usage, ent.limit, ent.remaining, ent.resets_at)
    detail = ": ".join(filter(None, [", ".join(why), amounts]))
    return f"{verdict} {ent.feature_key}" + (f" ({detail})" if detail else "")


def usage_record(customer: str, record: UsageRecord) -> str:
    """``tracked 3 api_calls for user_1: 15 of 1000 used, 985 left (idempotency key …)``."""
    line = f"tracked {n(record.quantity)} {record.feature_key} for {customer}"
    if record.usage is not None:
        u = record.usage
        line += ": " + _amounts(u.consumed_units, u.limit_units, u.remaining_units, u.period_end)
    if record.idempotency_key:
        line += f" (idempotency key {record.idempotency_key})"
    return line


def usage_metrics(metrics: UsageMetrics) -> list[str]:
    """The metered features of a customer as a table; one line when there is none."""
    if not metrics.metrics:
        return [f"no metered features for {metrics.customer_id} (no active subscription with a quota)"]
    rows = [["feature", "used", "limit", "left", "used %", "resets in", "plan"]]
    rows += [
        [
            m.feature_key,
            n(m.consumed),
            n(m.limit),
            n(m.remaining),
            "-" if m.percentage_used is None else f"{m.percentage_used}%",
            "-" if m.resets_in_days is None else f"{m.resets_in_days} days",
            m.product_name or "-",
        ]
        for m in metrics.metrics
    ]
    return table(rows, right=range(1, 6))


def session_token(token: SessionToken, *, decoded: bool) -> list[str]:
    """A session token's fields, one per line; ``decoded`` adds the claims only the token carries."""
    rows: list[tuple[str, str]] = []
    if not decoded:
        rows.append(("session token", token.session_token))
    rows.append(("token id", token.token_id))
    rows.append(("user", token.external_user_id or "-"))
    if token.external_organization_id is not None:
        rows.append(("organization", token.external_organization_id))
    if decoded:
        rows.append(("merchant", token.merchant_id or "-"))
        rows.append(("issued", iso(token.issued_at) or "-"))
    rows.append(("expires", f"{iso(token.expires_at)} ({_expiry(token.expires_at)})"))
    if token.allowed_operations:
        rows.append(("operations", ", ".join(token.allowed_operations)))
    if decoded and token.metadata:
        rows.append(("metadata", json.dumps(token.metadata, sort_keys=True)))
    if decoded:
        rows.append(("signature", "not verified (only BillingOS can)"))
    return fields(rows)


def customers(found: Sequence[Customer], total: int | None) -> list[str]:
    """Customers as a table, then how many of how many were shown."""
    if not found:
        return ["no customers"]
    rows = [["id", "external_id", "email", "name", "created"]]
    rows += [[c.id, c.external_id or "-", c.email or "-", c.name or "-", _day(c.created_at)] for c in found]
    of = "" if total is None else f" of {total}"
    noun = "customer" if (len(found) if total is None else total) == 1 else "customers"
    return [*table(rows), f"{len(found)}{of} {noun}"]


def fields(rows: Iterable[tuple[str, str]]) -> list[str]:
    """``name  value`` lines with the values aligned."""
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    return [f"{name.ljust(width)}  {value}" for name, value in rows]


def _amounts(used: float | None, limit: float | None, left: float | None, resets: datetime | None) -> str:
    parts = []
    if limit is not None:
        parts.append(f"limit {n(limit)}" if used is None else f"{n(used)} of {n(limit)} used")
    if left is not None:
        parts.append(f"{n(left)} left")
    if resets is not None:
        parts.append(f"resets {iso(resets)}")
    return ", ".join(parts)


def n(value: float | None) -> str:
    """A count without a pointless ``.0``; ``-`` for none."""
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def iso(when: datetime | None) -> str | None:
    """An aware datetime as ISO-8601 in UTC, to the second."""
    return None if when is None else when.astimezone(UTC).isoformat(timespec="seconds")


def _day(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone(UTC).date().isoformat()


def _expiry(when: datetime) -> str:
    seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds <= 0:
        return "expired"
    if seconds < 120:
        return f"in {int(seconds)} s"
    return f"in {round(seconds / 60)} min"


def catalog(found: Catalog) -> list[str]:
    """The pricing page as a table (one row per price), then the customer's current plan."""
    if not found.products:
        return ["no products on the pricing page"]
    rows = [["product", "price id", "amount", "every", "features", ""]]
    for product in found.products:
        marks = ", ".join(
            m for m, on in [("current", product.is_current_plan), ("highlighted", product.highlighted)] if on
        )
        if product.trial_days:
            marks = ", ".join(filter(None, [marks, f"{product.trial_days}-day trial"]))
        features = ", ".join(f.name for f in product.features) or "-"
        for price in product.prices or ():
            rows.append(
                [product.name, price.id, money(price.amount, price.currency), _every(price), features, marks]
            )
        if not product.prices:
            rows.append([product.name, "-", "-", "-", features, marks])
    lines = table(rows, right=[2])
    current = found.current_subscription
    names = {product.id: product.name for product in found.products}
    if current is None:
        lines.append("current plan: none")
    else:
        lines.append(
            f"current plan: {names.get(current.product_id or '', current.product_id)} "
            f"(price {current.price_id or 'unknown'}), {current.status}, "
            f"until {iso(current.current_period_end) or '-'}"
            + (", cancels at period end" if current.cancel_at_period_end else "")
        )
    return lines


def checkout_session(session: CheckoutSession, subscription: Subscription | None) -> list[str]:
    """A checkout's fields; for a paid one the client secret the front end confirms with Stripe.js."""
    rows = [("checkout id", session.id)]
    if session.product is not None:
        rows.append(("product", session.product.name))
    rows.append(("amount", money(session.amount, session.currency)))
    if session.trial_days:
        rows.append(("trial", f"{session.trial_days} days"))
    if session.is_free:
        if subscription is None:
            rows.append(
                (
                    "next",
                    f"free: complete it with --confirm-free (POST /v1/checkout/{session.id}/confirm-free)",
                )
            )
        else:
            rows.append(("subscription", f"{subscription.id}: {subscription.status}"))
    else:
        rows.append(("client secret", session.client_secret))
        rows.append(("next", "confirm the payment with Stripe.js in the browser"))
    return fields(rows)


def portal_session(portal: PortalSession) -> list[str]:
    """A portal session: the id a front end opens the portal with, and its expiry."""
    return fields(
        [
            ("portal session", portal.id),
            ("customer", portal.customer_id or "-"),
            ("expires", iso(portal.expires_at) or "-"),
        ]
    )


def customer_state(state: CustomerState) -> list[str]:
    """A customer, its granted features and (always empty on the public backend) subscriptions."""
    c = state.customer
    lines = fields(
        [
            ("customer", c.id),
            ("external id", c.external_id or "-"),
            ("email", c.email or "-"),
            ("name", c.name or "-"),
        ]
    )
    if state.granted_features:
        rows = [["feature", "name", "granted"]]
        rows += [
            [f.feature_key, f.feature_name or "-", iso(f.granted_at) or "-"] for f in state.granted_features
        ]
        lines += ["", *table(rows)]
    else:
        lines.append("no granted features")
    if state.active_subscriptions:
        lines += [f"subscription {s.id}: {s.status} ({s.product_id})" for s in state.active_subscriptions]
    return lines


def money(amount: int, currency: str) -> str:
    """Cents as ``29.00 USD``; ``free`` for 0."""
    if not amount:
        return "free"
    return f"{amount / 100:.2f} {currency.upper()}"


def _every(price: Price) -> str:
    if price.interval is None:
        return "-"
    return str(price.interval) if price.interval_count == 1 else f"{price.interval_count} {price.interval}s"
