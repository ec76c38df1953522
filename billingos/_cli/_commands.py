"""The ``billingos`` commands (click), and how their outcomes become exit statuses.

Every command that calls the API takes the connection options (``--secret-key``, ``--api-url``,
``--timeout``, ``--max-retries``) and ``--json`` after its arguments; what an option leaves unset,
the SDK resolves exactly as ``BillingOS()`` does (``BILLINGOS_SECRET_KEY``, ``BILLINGOS_API_URL``,
then its defaults). Errors are one ``error: <class>: <message>`` line on stderr, never a traceback,
and never the secret key (the SDK's messages do not contain it, and no option shows its value).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from .._config import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from .._errors import BillingOSError, QuotaExceededError, ValidationError
from .._models import Customer, SessionToken
from .._sync import BillingOS
from .._version import __version__
from . import _render as render

EXIT_OK = 0
"""Success; for ``check``: the customer has access."""
EXIT_DENIED = 1
"""No access: ``check`` said no, or ``track`` was refused over the quota. (``demo``, ``mock``: failed.)"""
EXIT_FAILED = EXIT_DENIED
"""``demo`` and ``mock`` (no API, nothing to deny): the demo failed, or the sandbox could not start."""
EXIT_USAGE = 2
"""A bad command, option or argument (click's, or one the SDK refused before sending anything)."""
EXIT_API = 3
"""The call failed: the API answered with an error, or could not be reached."""
EXIT_CONFIG = 4
"""No usable configuration: the secret key, API URL, timeout or retry count is missing or invalid."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT, as shells report it)."""

DOCS_URL = "https://billingos.github.io/billingos-python/cli/"
"""Where ``billingos --help`` sends the reader: the command line's page of the documentation site."""

EPILOG = f"""\b
Exit status:
  {EXIT_OK}    success; check: the customer has access
  {EXIT_DENIED}    no access: check said no, or track went over the quota
       (demo, mock: the demo failed, the sandbox could not start)
  {EXIT_USAGE}    usage error: a bad command, option or argument
  {EXIT_API}    the call failed: an API error (4xx, 5xx) or a network error
  {EXIT_CONFIG}    configuration error: no or invalid secret key, API URL, timeout or retries
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

\b
Environment:
  BILLINGOS_SECRET_KEY  the secret key (sk_test_... or sk_live_...), unless --secret-key
  BILLINGOS_API_URL     the API's base URL, unless --api-url (default: from the key)
  BILLINGOS_LOG         info or debug: one line per HTTP attempt on stderr

\b
Docs: {DOCS_URL}
The secret key is never printed."""

F = TypeVar("F", bound=Callable[..., Any])


class _Failure(Exception):
    """A failure already worded for the user, with the exit status it means."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- the entry point -----------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        result = cli.main(args=None if argv is None else list(argv), standalone_mode=False)
    except click.ClickException as exc:  # usage errors: click words them, with the usage line
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort (after a newline)
        return EXIT_INTERRUPTED
    except _Failure as exc:
        return _error(exc.message, exc.status)
    except QuotaExceededError as exc:
        return _error(_describe(exc), EXIT_DENIED)
    except ValidationError as exc:
        # Refused by the SDK before sending (status None): the argument is wrong. Else the server's 400/422.
        return _error(_describe(exc), EXIT_USAGE if exc.status_code is None else EXIT_API)
    except BillingOSError as exc:
        return _error(_describe(exc), EXIT_API)
    except Exception as exc:  # a bug: still one line, never a traceback
        return _error(f"unexpected {_describe(exc)}", EXIT_API)
    return result if isinstance(result, int) else EXIT_OK


def _error(message: str, status: int) -> int:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    return status


def _describe(exc: BaseException) -> str:
    """``NotFoundError: [404 RES_NOT_FOUND] Customer not found (request_id=req_…)``."""
    return f"{type(exc).__name__}: {exc}"


# -- options -------------------------------------------------------------------------------------


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    ctx.meta[f"billingos.{param.name}"] = value
    return value


def connection_options(f: F) -> F:
    """``--secret-key``, ``--api-url``, ``--timeout``, ``--max-retries``; read by :func:`connect`.

    No default is filled in here: ``None`` lets the SDK resolve the environment and its defaults.
    """
    options = [
        click.option(
            "--secret-key",
            metavar="KEY",
            expose_value=False,
            callback=_remember,
            help="Secret key, sk_test_... or sk_live_... [default: $BILLINGOS_SECRET_KEY, "
            "safer than this flag, which other users can see in ps]",
        ),
        click.option(
            "--api-url",
            metavar="URL",
            expose_value=False,
            callback=_remember,
            help="API base URL [default: $BILLINGOS_API_URL, else from the key: "
            "sk_test_ the sandbox, sk_live_ production]",
        ),
        click.option(
            "--timeout",
            type=float,
            metavar="SECONDS",
            expose_value=False,
            callback=_remember,
            help=f"Timeout of each attempt [default: {DEFAULT_TIMEOUT:g}]",
        ),
        click.option(
            "--max-retries",
            type=int,
            metavar="N",
            expose_value=False,
            callback=_remember,
            help=f"Retries after the first attempt; 0: none [default: {DEFAULT_MAX_RETRIES}]",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def json_option(f: F) -> F:
    """``--json``: one JSON document on stdout instead of text."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document (for scripts) instead of text."
    )(f)


_SDK_NAMES = re.compile(r"(?<![\w-])(secret_key|api_url|max_retries|timeout)(?!\w)")


def connect() -> BillingOS:
    """The blocking client, configured from the current command's options and the environment.

    Raises:
        _Failure: the configuration is unusable (exit status ``EXIT_CONFIG``); the SDK's message,
            with its argument names spelled as this command's options.
    """
    meta = click.get_current_context().meta
    try:
        return BillingOS(
            meta.get("billingos.secret_key"),
            api_url=meta.get("billingos.api_url"),
            timeout=meta.get("billingos.timeout"),
            max_retries=meta.get("billingos.max_retries"),
        )
    except BillingOSError as exc:
        flags = _SDK_NAMES.sub(lambda m: "--" + m.group(1).replace("_", "-"), exc.message)
        raise _Failure(f"{type(exc).__name__}: {flags}", EXIT_CONFIG) from None


def emit(as_json: bool, value: Any, text: str | list[str]) -> None:
    """Print ``value`` as JSON, or ``text`` (a line or lines)."""
    if as_json:
        click.echo(render.to_json(value))
    else:
        click.echo(text if isinstance(text, str) else "\n".join(text))


def _exit(status: int) -> NoReturn:
    raise click.exceptions.Exit(status)


# -- the commands --------------------------------------------------------------------------------


@click.group(
    invoke_without_command=True,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="billingos", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """BillingOS from the command line: entitlements, usage, session tokens, customers, selling.

    CUSTOMER is always your own user id (the customer's external id). Each API command takes
    --secret-key, --api-url, --timeout, --max-retries and --json after its arguments.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help(), err=True)
        _exit(EXIT_USAGE)


@cli.command(short_help="Does CUSTOMER have FEATURE? Exit 0 if so, 1 if not.")
@click.argument("customer")
@click.argument("feature")
@connection_options
@json_option
def check(customer: str, feature: str, as_json: bool) -> None:
    """Check whether CUSTOMER may use FEATURE: exit status 0 if so, 1 if not.

    An unknown customer is "no access" (reason customer_not_found), not an error.

    \b
    $ billingos check user_1 api_calls
    granted: user_1 has api_calls (usage_quota: 12 of 10000 used, 9988 left, resets ...)
    """
    with connect() as billing:
        ent = billing.entitlements.check(customer, feature)
    emit(as_json, ent, render.entitlement(customer, ent))
    if not ent.has_access:
        _exit(EXIT_DENIED)


@cli.command(short_help="Record usage of a metered FEATURE by CUSTOMER.")
@click.argument("customer")
@click.argument("feature")
@click.argument("quantity", type=float, default=1, required=False)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Count this usage once, however often it is sent (24 h) [default: a new one per run]",
)
@connection_options
@json_option
def track(customer: str, feature: str, quantity: float, idempotency_key: str | None, as_json: bool) -> None:
    """Record QUANTITY (default 1) units of FEATURE used by CUSTOMER.

    Over the plan's quota the server refuses it: exit status 1 (QuotaExceededError).

    \b
    $ billingos track user_1 api_calls 3
    tracked 3 api_calls for user_1: 15 of 10000 used, 9985 left (idempotency key ...)
    """
    with connect() as billing:
        record = billing.usage.track(customer, feature, quantity, idempotency_key=idempotency_key)
    emit(as_json, record, render.usage_record(customer, record))


@cli.command(short_help="Show CUSTOMER's usage this period.")
@click.argument("customer")
@click.option("--feature", metavar="FEATURE", help="Only this feature [default: every metered feature]")
@connection_options
@json_option
def metrics(customer: str, feature: str | None, as_json: bool) -> None:
    """Show CUSTOMER's usage of each metered feature in the current period."""
    with connect() as billing:
        found = billing.usage.metrics(customer, feature)
    emit(as_json, found, render.usage_metrics(found))


@cli.group(short_help="Create and decode session tokens.")
def token() -> None:
    """Create session tokens for your front end, and read them."""


@token.command("create", short_help="Mint a session token for USER.")
@click.argument("user")
@click.option(
    "--expires-in", type=int, metavar="SECONDS", help="Lifetime, 60 to 86400 [default: the server's, 3600]"
)
@click.option("--org", metavar="ID", help="Your organization id for this user (external organization id)")
@click.option(
    "--operation", "operations", multiple=True, metavar="OP", help="An allowed operation (repeatable)"
)
@connection_options
@json_option
def token_create(
    user: str, expires_in: int | None, org: str | None, operations: tuple[str, ...], as_json: bool
) -> None:
    """Mint a session token for USER (your user id), for the front-end SDK.

    It prints the token itself: hand it to that user's browser only.
    """
    with connect() as billing:
        created = billing.session_tokens.create(
            user,
            external_organization_id=org,
            expires_in=expires_in,
            allowed_operations=list(operations) or None,
        )
    emit(as_json, created, render.session_token(created, decoded=False))


@token.command("decode", short_help="Show a token's claims, offline (no key).")
@click.argument("token")
@json_option
def token_decode(token: str, as_json: bool) -> None:
    """Show the claims of TOKEN (bos_session_...; - reads it from stdin), offline.

    Decoded, not verified: the signature needs BillingOS's own secret. Never trust a token a user
    sent you because it decodes. Needs no key and no network.
    """
    if token == "-":  # noqa: S105 (stdin, not a password)
        token = sys.stdin.read().strip()
    claims = SessionToken.decode(token)
    doc = {**claims.to_dict(), "expired": claims.expired}
    emit(as_json, doc, render.session_token(claims, decoded=True))


@cli.group(short_help="List customers.")
def customers() -> None:
    """Look up customers."""


@customers.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many (pages of up to 100 are fetched as needed)",
)
@click.option("--email", metavar="EMAIL", help="Only the customer with this email")
@click.option("--external-id", metavar="ID", help="Only the customer with this external id (your user id)")
@connection_options
@json_option
def customers_list(limit: int, email: str | None, external_id: str | None, as_json: bool) -> None:
    """List customers, newest first."""
    shown: list[Customer] = []
    total: int | None = None
    with connect() as billing:
        pager = billing.customers.list(limit=min(limit, 100), email=email, external_id=external_id)
        for page in pager.pages():
            total = page.total if total is None else total
            shown.extend(page.data[: limit - len(shown)])
            if len(shown) >= limit:
                break
    emit(as_json, {"customers": shown, "total": total}, render.customers(shown, total))


# -- selling: as the customer (billing.as_customer) -----------------------------------------------

CLI_USER = "billingos-cli"
"""The user ``billingos products`` acts as without ``--user``: one who has no customer (no current plan)."""


@cli.command(short_help="List the products of the pricing page.")
@click.option(
    "--user",
    metavar="USER",
    default=CLI_USER,
    show_default=True,
    help="Act as this user (marks their current plan); the server needs a user to show the pricing page",
)
@click.option("--plan", "plans", multiple=True, metavar="PRODUCT_ID", help="Only this product (repeatable)")
@connection_options
@json_option
def products(user: str, plans: tuple[str, ...], as_json: bool) -> None:
    """List the products of the pricing page, their prices and features.

    The public backend serves the pricing page to a customer session token only: the command mints one
    for USER (a user without a customer is fine) and marks USER's current plan.

    \b
    $ billingos products
    product  price id    amount     every  features        ...
    """
    with connect() as billing, billing.as_customer(user) as customer:
        found = customer.products.list(list(plans) or None)
    emit(as_json, found, render.catalog(found))


@cli.command(short_help="Start a checkout of PRICE for USER.")
@click.argument("user")
@click.argument("price")
@click.option("--email", metavar="EMAIL", help="The customer's email (stored lowercased)")
@click.option("--name", metavar="NAME", help="The customer's name")
@click.option(
    "--confirm-free",
    is_flag=True,
    help="For a free price, complete the checkout now: USER is subscribed (confirm-free)",
)
@connection_options
@json_option
def checkout(
    user: str, price: str, email: str | None, name: str | None, confirm_free: bool, as_json: bool
) -> None:
    """Start a checkout of PRICE for USER; this creates the customer if there is none.

    A paid price prints the client secret the browser confirms with Stripe.js (a credential of USER:
    treat it like one). A free price is complete only once confirmed: --confirm-free does it.
    BillingOS needs a connected Stripe account for any checkout, even a free one.

    \b
    $ billingos checkout user_1 price_free --confirm-free
    checkout id   ...
    subscription  ...: active
    """
    with connect() as billing, billing.as_customer(user) as customer:
        session = customer.checkout.create(price, customer_email=email, customer_name=name)
        subscription = None
        if confirm_free and session.is_free:
            subscription = customer.checkout.confirm_free(session.id)
    if confirm_free and not session.is_free:
        click.echo("note: --confirm-free ignored: the price is not free", err=True)
    emit(
        as_json,
        {"checkout": session, "subscription": subscription},
        render.checkout_session(session, subscription),
    )


@cli.command(short_help="Open a billing-portal session for USER.")
@click.argument("user")
@connection_options
@json_option
def portal(user: str, as_json: bool) -> None:
    """Open a billing-portal session for USER (valid 24 h); its id is what the portal component takes.

    USER must be a customer already (a completed checkout), else BillingOS answers 404 (exit 3).
    """
    with connect() as billing, billing.as_customer(user) as customer:
        session = customer.portal.create()
    emit(as_json, session, render.portal_session(session))


@cli.command(short_help="Show USER's customer record and granted features.")
@click.argument("user")
@connection_options
@json_option
def state(user: str, as_json: bool) -> None:
    """Show USER's customer record and granted features (GET /v1/customer/me).

    On the public backend this answer is cached for an hour and lists no subscriptions: use
    `billingos check USER FEATURE` for what USER may do now, `billingos products --user USER` for
    the current plan.
    """
    with connect() as billing, billing.as_customer(user) as customer:
        found = customer.state()
    emit(as_json, found, render.customer_state(found))


@cli.command(short_help="Tour the SDK against an embedded server (no key).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
def demo(as_json: bool) -> None:
    """Run the SDK against an embedded BillingOS server and show each step.

    Needs no key and no network: it starts the embedded server on loopback, seeds a plan, and walks
    through customers, session tokens, entitlements, usage, quota, metrics, subscriptions, selling
    a plan through checkout and a retried request. Needs the testing extra: pip install
    'billingos[testing]'. Exit status 0, or 1 with a one-line error.
    """
    from .._demo import main as run_demo

    _exit(run_demo(as_json=as_json))


@cli.command(short_help="Serve a seeded sandbox on a local port (no key).")
@click.option("--port", type=int, help="Port to listen on; 0 picks a free one [default: 8787]")
@click.option("--host", metavar="ADDRESS", help="Address to listen on [default: 127.0.0.1]")
@click.option(
    "--rate-limits/--no-rate-limits",
    default=None,
    help="Throttle like the real server: X-RateLimit-* headers and 429 [default: on]",
)
def mock(port: int | None, host: str | None, rate_limits: bool | None) -> None:
    """Serve a seeded BillingOS sandbox on a local port until Ctrl-C.

    The same as python -m billingos.testing: it prints the URL and a test secret key to use with
    curl, another language's SDK or this command (--api-url, BILLINGOS_API_URL). Ctrl-C or SIGTERM
    stop it with exit status 0; 1 if it cannot listen. Needs the testing extra.
    """
    argv = []
    if port is not None:
        argv += ["--port", str(port)]
    if host is not None:
        argv += ["--host", host]
    if rate_limits is not None:
        argv.append("--rate-limits" if rate_limits else "--no-rate-limits")
    from ..testing.__main__ import main as serve
    from ..testing.__main__ import missing_extra

    try:  # starlette is imported when the sandbox is built, uvicorn when it starts serving
        status = serve(argv)
    except ModuleNotFoundError as exc:
        missing = missing_extra(exc)
        if missing is None:
            raise
        raise _Failure(
            f"the sandbox needs the testing extra ({missing} is missing): pip install 'billingos[testing]'",
            EXIT_FAILED,
        ) from None
    _exit(status)
