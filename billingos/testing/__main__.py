"""``python -m billingos.testing``: serve a seeded BillingOS sandbox on a local port until Ctrl-C.

For curl, a front end, or another language's SDK::

    python -m billingos.testing --port 8787 [--host 127.0.0.1] [--no-rate-limits]
        [--admin-routes dashboard_only]

It prints the URL, a test secret key and a curl example. ``--port 0`` picks a free port. The
sandbox is :func:`seed_sandbox`: three features, two plans, two customers with subscriptions.
Ctrl-C (SIGINT) or SIGTERM stops it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from ._app import RateLimits
from ._fake import FakeBillingOS
from ._state import Plan


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
    """Serve until SIGINT or SIGTERM; 0 after a clean stop, 1 if the server cannot start."""
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
    print("BillingOS sandbox stopped.", file=out, flush=True)
    return 0


def _banner(out: TextIO, url: str, key: str, plans: dict[str, Plan], rate_limits: bool) -> None:
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
    print("\n".join(lines), file=out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
