"""``python -m billingos demo``: a tour of the SDK against the embedded BillingOS server, over HTTP.

Read it as documentation. :func:`tour` is what an integration does, step by step, with
:class:`~billingos.AsyncBillingOS`; the last step does the same with the blocking
:class:`~billingos.BillingOS`. The server is :class:`billingos.testing.FakeBillingOS` on a loopback
port (rate limits off), seeded with one plan: a ``usage_quota`` feature with a small limit and a
``boolean_flag`` feature.

Every step records what it saw; the text output prints it as it goes, ``--json`` prints one
document at the end (``{"ok": ..., "steps": [{"step", "name", "title", "result"}, ...]}``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from ._client import AsyncBillingOS
from ._errors import BillingOSError, QuotaExceededError
from ._sync import BillingOS

if TYPE_CHECKING:
    from .testing import FakeBillingOS, Plan

USER = "user_42"
"""Your own user id. BillingOS calls it the customer's ``external_id``; usage and entitlements use it."""
QUOTA = "api_calls"
"""A ``usage_quota`` feature: so many units per billing period."""
FLAG = "sso"
"""A ``boolean_flag`` feature: on or off."""
LIMIT = 5
"""The plan's ``api_calls`` per period, small so the demo reaches it."""
BUYER = "user_43"
"""A new user the demo sells Pro to, through checkout."""
FREE_USER = "user_44"
"""A new user the demo puts on the free plan."""
FREE_LIMIT = 2
"""The free plan's ``api_calls`` per period."""
FREE_PRICE = "price_free"
"""The free plan's price id (fixed, so the tour can name it)."""


class Report:
    """The steps and what each one found; prints them as they happen unless ``out`` is ``None``."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.steps: list[dict[str, Any]] = []

    @contextmanager
    def step(self, name: str, title: str) -> Iterator[dict[str, Any]]:
        """Open step ``name``; the block fills in the yielded ``result`` dict."""
        result: dict[str, Any] = {}
        self.steps.append({"step": len(self.steps) + 1, "name": name, "title": title, "result": result})
        self.echo(f"\n{len(self.steps):>2}. {title}")
        yield result

    def say(self, *lines: str) -> None:
        """Print lines under the current step (text mode only)."""
        for line in lines:
            self.echo(f"    {line}")

    def echo(self, text: str) -> None:
        """Print one line (text mode only)."""
        if self.out is not None:
            print(text, file=self.out, flush=True)


# -- the server --------------------------------------------------------------------------------


def seed(fake: FakeBillingOS) -> Plan:
    """Two plans, "Pro" (``LIMIT`` api_calls per period and SSO, 29 USD) and "Free" (``FREE_LIMIT``
    api_calls); and one customer already on Pro."""
    fake.add_feature(QUOTA, "usage_quota", title="API calls")
    fake.add_feature(FLAG, "boolean_flag", title="Single sign-on")
    plan = fake.add_product("Pro", features={QUOTA: LIMIT, FLAG: True}, amount=2900, highlighted=True)
    fake.add_product("Free", features={QUOTA: FREE_LIMIT}, price_id=FREE_PRICE)  # amount 0: free
    fake.add_customer("user_7", email="grace@example.com", name="Grace Hopper")
    fake.subscribe("user_7", plan.price_id)
    return plan


# -- the integration ---------------------------------------------------------------------------


async def tour(fake: FakeBillingOS, url: str, plan: Plan, report: Report) -> None:
    """What an integration does with ``AsyncBillingOS``, against the server at ``url``."""
    from .testing import Fault

    # One client per process, shared by every request handler. In production the key and URL
    # come from BILLINGOS_SECRET_KEY (and BILLINGOS_API_URL): AsyncBillingOS() needs no arguments.
    async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
        with report.step("create_customer", "Create a customer and subscribe them to Pro") as r:
            customer = await billing.customers.create("ada@example.com", external_id=USER, name="Ada")
            sub = await billing.subscriptions.create(customer.id, plan.price_id)
            r.update(customer_id=customer.id, external_id=customer.external_id, email=customer.email)
            r.update(subscription_id=sub.id, status=_s(sub.status), period_end=_iso(sub.current_period_end))
            report.say(
                f"customers.create     -> {customer.id} (external_id {customer.external_id})",
                f"subscriptions.create -> {sub.id}: {sub.status} until {_day(sub.current_period_end)}",
            )

        with report.step("session_token", "Mint a session token for the front end") as r:
            token = await billing.session_tokens.create(USER, expires_in=900)
            r.update(token_id=token.token_id, expires_at=_iso(token.expires_at))
            report.say(
                f"token id  {token.token_id}",
                f"expires   {_iso(token.expires_at)} (in {_minutes(token.expires_at)} min)",
                f"token     {token.session_token[:28]}… (what the browser gets)",
            )

        with report.step("check_entitlements", "Check entitlements") as r:
            for key in (FLAG, QUOTA):
                ent = await billing.entitlements.check(USER, key)
                r[key] = {"has_access": ent.has_access, "limit": ent.limit, "remaining": ent.remaining}
                quota = "" if ent.limit is None else f", {_n(ent.remaining)} of {_n(ent.limit)} left"
                report.say(f"{key:<10} has_access={ent.has_access}{quota}")

        with report.step("track_usage", f"Track {LIMIT} API calls, concurrently") as r:
            # Each track carries an idempotency key (yours, or one generated per call), so a
            # retried track is never counted twice.
            records = await asyncio.gather(*(billing.usage.track(USER, QUOTA) for _ in range(LIMIT)))
            remaining = min(rec.usage.remaining_units or 0 for rec in records if rec.usage)
            counted = fake.usage_of(USER, QUOTA)  # read back from the server's own state
            r.update(calls=len(records), remaining=remaining, server_count=counted)
            report.say(
                f"{len(records)} x usage.track({USER!r}, {QUOTA!r}) -> {_n(remaining)} left",
                f"the server counted {_n(counted)}",
            )

        with report.step("quota", "Hit the quota") as r:
            ent = await billing.entitlements.check(USER, QUOTA)
            r.update(has_access=ent.has_access, reason=_s(ent.reason))
            report.say(f"entitlements.check -> has_access={ent.has_access}, reason={ent.reason}")
            try:
                await billing.usage.track(USER, QUOTA)
            except QuotaExceededError as exc:
                r.update(track_error=type(exc).__name__, status_code=exc.status_code)
                report.say(f"usage.track        -> {type(exc).__name__} ({exc.status_code} {exc.message})")
            else:
                raise RuntimeError("usage.track over the quota did not raise QuotaExceededError")

        with report.step("metrics", "Usage metrics") as r:
            metrics = await billing.usage.metrics(USER)
            r["metrics"] = [
                {
                    "feature_key": m.feature_key,
                    "consumed": m.consumed,
                    "limit": m.limit,
                    "remaining": m.remaining,
                }
                for m in metrics.metrics
            ]
            rows = [["feature", "used", "limit", "left", "used %", "resets in"]]
            rows += [
                [
                    m.feature_key,
                    _n(m.consumed),
                    _n(m.limit),
                    _n(m.remaining),
                    f"{m.percentage_used}%",
                    f"{m.resets_in_days} days",
                ]
                for m in metrics.metrics
            ]
            report.say(*table(rows, right=range(1, 6)))

        with report.step("list_customers", "List customers (every page, fetched lazily)") as r:
            customers = [c async for c in billing.customers.list(limit=50)]
            r["customers"] = [{"id": c.id, "email": c.email, "external_id": c.external_id} for c in customers]
            report.say(
                *table(
                    [["email", "external_id", "id"]]
                    + [[c.email or "", c.external_id or "", c.id] for c in customers]
                )
            )

        with report.step("cancel_reactivate", "Cancel at period end, then reactivate") as r:
            sub = await billing.subscriptions.cancel(sub.id)  # at_period_end=True by default
            r["cancel"] = {"status": _s(sub.status), "cancel_at_period_end": sub.cancel_at_period_end}
            report.say(
                f"subscriptions.cancel     -> {sub.status}, cancel_at_period_end={sub.cancel_at_period_end}"
            )
            sub = await billing.subscriptions.reactivate(sub.id)
            r["reactivate"] = {"status": _s(sub.status), "cancel_at_period_end": sub.cancel_at_period_end}
            report.say(
                f"subscriptions.reactivate -> {sub.status}, cancel_at_period_end={sub.cancel_at_period_end}"
            )

        with report.step("sell_plan", f"Sell Pro to {BUYER} through checkout (as the customer)") as r:
            # The public backend serves pricing, checkout and portal to a customer session token:
            # as_customer mints one on first use and reuses it for every call of that user.
            mints_before = len(fake.requests_to("POST /v1/session-tokens"))
            async with billing.as_customer(BUYER) as buyer:
                catalog = await buyer.products.list()
                price = next(p.prices[0] for p in catalog.products if p.id == plan.product_id)
                session = await buyer.checkout.create(price.id, customer_email="alan@example.com")
                fake.complete_checkout(session.id)  # the browser's Stripe.js payment, simulated
                done = await buyer.checkout.status(session.id)
                ent = await buyer.entitlements.check(FLAG)
                portal = await buyer.portal.create()
            status = _s(done.subscription.status) if done.subscription else None
            mints = len(fake.requests_to("POST /v1/session-tokens")) - mints_before
            r.update(
                products=[p.name for p in catalog.products],
                checkout_id=session.id,
                amount=session.amount,
                subscription_status=status,
                has_access=ent.has_access,
                portal_id=portal.id,
                tokens_minted=mints,
            )
            report.say(
                f"products.list      -> {', '.join(p.name for p in catalog.products)}",
                f"checkout.create    -> {session.id} ({_money(session.amount)}; a client secret)",
                "fake.complete_checkout(session.id)   (the payment, simulated)",
                f"checkout.status    -> subscription {status}",
                f"entitlements.check -> {FLAG} has_access={ent.has_access}",
                f"portal.create      -> {portal.id} (for the front end)",
                f"{mints} session token minted for all of {BUYER}'s calls (cached by the client)",
            )

        with report.step("free_plan", f"Put {FREE_USER} on the free plan (checkout + confirm_free)") as r:
            async with billing.as_customer(FREE_USER) as newcomer:
                session = await newcomer.checkout.create(FREE_PRICE, customer_email="kay@example.com")
                subscription = await newcomer.checkout.confirm_free(session.id)
                ent = await newcomer.entitlements.check(QUOTA)
            r.update(
                free=session.is_free,
                subscription_status=_s(subscription.status),
                has_access=ent.has_access,
                limit=ent.limit,
            )
            report.say(
                f"checkout.create       -> {session.id} (free: client_secret is empty)",
                f"checkout.confirm_free -> {subscription.id}: {subscription.status}",
                f"entitlements.check    -> {QUOTA} has_access={ent.has_access}, limit {_n(ent.limit)}",
            )

        with report.step("revoke_token", "Revoke the session token") as r:
            await billing.session_tokens.revoke(token.session_token)  # or its id: token.token_id
            try:
                fake.verify_session_token(token.session_token)  # what the server now thinks of it
            except ValueError as exc:
                accepted, why = False, str(exc)
            else:
                accepted, why = True, "still valid"
            r.update(token_id=token.token_id, server_accepts=accepted)
            report.say(f"session_tokens.revoke -> done; the server now refuses the token ({why})")

        with report.step("retry", "Survive a 503: the server fails the next entitlement check once") as r:
            route = "GET /v1/usage/check"
            fake.inject(route, Fault.error(503), times=1)
            started = time.perf_counter()
            ent = await billing.entitlements.check(USER, FLAG)  # 503, backoff, retry, 200
            took = time.perf_counter() - started
            request_id = fake.requests_to(route)[-1].request_id
            seen = [req for req in fake.requests_to(route) if req.request_id == request_id]
            statuses = [req.status for req in seen]
            r.update(
                has_access=ent.has_access,
                server_requests=len(seen),
                statuses=statuses,
                request_id=request_id,
                seconds=round(took, 3),
            )
            report.say(
                f"entitlements.check -> has_access={ent.has_access}, after {took:.2f} s",
                f"the server saw {len(seen)} requests ({' then '.join(map(str, statuses))}),",
                f"all with X-Request-Id {request_id}",
                "(BILLINGOS_LOG=info prints every attempt and retry on stderr)",
            )


def blocking_tour(fake: FakeBillingOS, url: str, report: Report) -> None:
    """The same SDK without ``async``: ``BillingOS`` has the same methods, models and errors."""
    with (
        report.step("blocking_client", "The blocking client: the same calls without await") as r,
        BillingOS(fake.secret_key, api_url=url) as billing,
    ):
        ent = billing.check_entitlement(USER, QUOTA)
        r.update(has_access=ent.has_access, reason=_s(ent.reason))
        report.say(f"BillingOS().check_entitlement -> has_access={ent.has_access}, reason={_s(ent.reason)}")


# -- running it --------------------------------------------------------------------------------


def main(*, as_json: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the demo; 0 on success, 1 with a one-line error on stderr otherwise."""
    out = out or sys.stdout
    err = err or sys.stderr
    report = Report(None if as_json else out)
    started = time.perf_counter()
    error: str | None = None
    try:
        run(report)
    except Exception as exc:
        missing = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else None
        if missing in ("starlette", "uvicorn"):
            error = (
                f"the demo needs the testing extra ({missing} is missing): pip install 'billingos[testing]'"
            )
        else:
            where = f"step {len(report.steps)} ({report.steps[-1]['name']})" if report.steps else "setup"
            what = str(exc) if isinstance(exc, BillingOSError) else f"{type(exc).__name__}: {exc}"
            error = " ".join(f"{where}: {what}".split())  # one line
    elapsed = round(time.perf_counter() - started, 3)
    if as_json:
        doc = {"ok": error is None, "error": error, "seconds": elapsed, "steps": report.steps}
        print(json.dumps(doc, indent=2, default=str), file=out, flush=True)
    elif error is None:
        report.echo(f"\nDone: {len(report.steps)} steps in {elapsed:.2f} s.")
    if error is not None:
        print(f"billingos demo: error: {error}", file=err, flush=True)
        return 1
    return 0


def run(report: Report) -> None:
    """Start and seed the server, then run both tours against it; raises on the first failure."""
    from .testing import FakeBillingOS

    fake = FakeBillingOS(rate_limits=None)
    plan = seed(fake)
    report.echo("BillingOS demo: the Python SDK against an embedded BillingOS server, over HTTP")
    with fake.serve() as url:
        with report.step("server", "Start the embedded server on loopback") as r:
            r.update(url=url, plan=plan.name, price_id=plan.price_id, limit=LIMIT)
            report.say(
                f"FakeBillingOS(rate_limits=None).serve() -> {url}",
                f'plan "{plan.name}" ({plan.price_id}): {QUOTA} {LIMIT} per period, {FLAG} on',
            )
        asyncio.run(tour(fake, url, plan, report))
        blocking_tour(fake, url, report)


# -- formatting --------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Rows as aligned text columns; the columns numbered in ``right`` are right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _money(cents: int) -> str:
    return "free" if not cents else f"{cents / 100:.2f} USD"


def _n(value: float | None) -> str:
    """A count without a pointless ``.0``; ``-`` for none."""
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _s(value: object) -> str | None:
    """An enum's string (open enums keep unknown values), or ``None``."""
    return None if value is None else str(value)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat(timespec="seconds")


def _day(when: datetime | None) -> str:
    return "?" if when is None else when.astimezone(UTC).date().isoformat()


def _minutes(when: datetime) -> int:
    return round((when - datetime.now(UTC)).total_seconds() / 60)
