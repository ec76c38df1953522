"""``python -m billingos.testing``: serve a seeded BillingOS sandbox on a local port until Ctrl-C.

For curl, a front end, or another language's SDK::

    python -m billingos.testing --port 8787 [--host 127.0.0.1] [--no-rate-limits]
        [--admin-routes dashboard_only]

It prints the URL, a test secret key and a curl example. ``--port 0`` picks a free port. The
sandbox is :func:`seed_sandbox`: three features, two plans, two customers with subscriptions.
Ctrl-C (SIGINT) or SIGTERM stops it cleanly with exit status 0, also when its output goes to a pipe
whose reader Ctrl-C ended first (``| cat``, ``| tee``). Without the ``testing`` extra it says which
extra to install (exit status 1). Starlette and uvicorn are imported when :func:`main` runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ._fake import FakeBillingOS
    from ._state import Plan

EXTRA_MODULES = ("starlette", "uvicorn")
"""What the ``testing`` extra brings that the sandbox imports; one of them missing gets the hint."""


def seed_sandbox(fake: FakeBillingOS) -> dict[str, Plan]:
    """Seed the sandbox: features, the plans ``starter`` and ``pro`` (fixed ids), two subscribed customers.

    - features: ``api_calls`` (usage_quota), ``sso`` (boolean_flag), ``seats`` (numeric_limit);
    - ``price_starter``: 1 000 api_calls a month, 3 seats; ``price_pro``: 10 000, 25 seats and SSO;
    - ``user_1`` (ada@example.com) on Pro, ``user_2`` (grace@example.com) on Starter.
    """
    fake.add_feature("api_calls", "usage_quota", title="API calls")
    fake.add_feature("sso", "boolean_flag", title="Single sign-on")
    fake.add_feature("seats", "numeric_limit", title="Seats")
    plans = {
        "starter": fake.add_product(
            "Starter",
            features={"api_calls": 1000, "seats": 3},
            amount=900,
            product_id="prod_starter",
            price_id="price_starter",
        ),
        "pro": fake.add_product(
            "Pro",
            features={"api_calls": 10000, "seats": 25, "sso": True},
            amount=2900,
            product_id="prod_pro",
            price_id="price_pro",
        ),
    }
    fake.add_customer("user_1", email="ada@example.com", name="Ada Lovelace")
    fake.subscribe("user_1", plans["pro"].price_id)
    fake.add_customer("user_2", email="grace@example.com", name="Grace Hopper")
    fake.subscribe("user_2", plans["starter"].price_id)
    return plans


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m billingos.testing`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m billingos.testing",
        description="Serve a seeded BillingOS sandbox (the embedded server) until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8787, help="port to listen on; 0 picks a free one (8787)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--rate-limits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="throttle as the real server does, with X-RateLimit-* headers and 429 (default: on)",
    )
    parser.add_argument(
        "--admin-routes",
        choices=("secret_key", "dashboard_only"),
        default="secret_key",
        help="dashboard_only: /customers* and /subscriptions* refuse the secret key (401 'jwt malformed') "
        "as the public backend does (default: secret_key)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 after a clean stop, 1 if the server cannot start.

    Raises ``ModuleNotFoundError`` without the ``testing`` extra (``python -m billingos.testing`` and
    ``billingos mock`` turn it into a one-line hint).

    Example::

        sys.exit(main(["--port", "0", "--no-rate-limits"]))   # serves until Ctrl-C
    """
    from ._app import RateLimits
    from ._fake import FakeBillingOS

    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    fake = FakeBillingOS(
        rate_limits=RateLimits() if args.rate_limits else None, admin_routes=args.admin_routes
    )
    plans = seed_sandbox(fake)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with fake.serve(args.host, args.port) as url:
            _banner(out, url, fake.secret_key, plans, args.rate_limits)
            while not stop.wait(0.5):
                pass
    except OSError as exc:  # e.g. the port is taken
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say(out, "BillingOS sandbox stopped.")
    return 0


def _say(out: TextIO, text: str) -> None:
    """Print ``text``; a reader that has gone away (Ctrl-C ends ``| cat`` first) is not an error."""
    try:
        print(text, file=out, flush=True)
    except BrokenPipeError:
        # What is still buffered would fail again when the interpreter flushes at exit (a second
        # traceback, exit status 120): point the descriptor at /dev/null instead.
        try:
            fd = out.fileno()
        except (OSError, ValueError):  # not a real file (io.UnsupportedOperation is both)
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _banner(out: TextIO, url: str, key: str, plans: dict[str, Plan], rate_limits: bool) -> None:
    from ._app import RateLimits

    default = RateLimits()
    limits = f"on ({default.per_route} requests per route per {default.window:g} s)" if rate_limits else "off"
    check = f"{url}/v1/usage/check?customer_id=user_1&feature_key=api_calls"
    lines = [
        f"BillingOS sandbox listening on {url}",
        f"  secret key   {key}",
        f"  rate limits  {limits}",
        "  features     api_calls (usage_quota), sso (boolean_flag), seats (numeric_limit)",
        *(
            f"  plan         {p.price_id}: {p.name}, "
            + ", ".join(k if v is None else f"{k} {v:g}" for k, v in p.grants.items())
            for p in plans.values()
        ),
        "  customers    user_1 (ada@example.com, Pro), user_2 (grace@example.com, Starter)",
        "",
        "Try it:",
        f"  curl -s -H 'Authorization: Bearer {key}' '{check}'",
        "Or point an SDK at it:",
        f"  export BILLINGOS_API_URL={url} BILLINGOS_SECRET_KEY={key}",
        "",
        "Ctrl-C to stop.",
    ]
    _say(out, "\n".join(lines))


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The module of the ``testing`` extra whose absence ``exc`` reports, or ``None`` if it is another.

    Example::

        missing_extra(ModuleNotFoundError(name="uvicorn"))   # "uvicorn"
    """
    top = (exc.name or "").partition(".")[0]
    return top if top in EXTRA_MODULES else None


def _run() -> int:
    """``python -m billingos.testing``: :func:`main`, with a one-line hint when the extra is missing."""
    try:
        return main()
    except ModuleNotFoundError as exc:
        missing = missing_extra(exc)
        if missing is None:
            raise
        print(
            f"error: python -m billingos.testing needs the testing extra ({missing} is missing): "
            "pip install 'billingos[testing]'",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(_run())
