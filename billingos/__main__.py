"""``python -m billingos``: the SDK's command line.

Commands:

- ``demo [--json]``: walk through the SDK against the embedded BillingOS server on loopback (needs
  the ``testing`` extra). Exit 0 on success; 1 with a one-line error on stderr otherwise.

To serve a seeded sandbox for curl or another language's SDK, see ``python -m billingos.testing``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m billingos`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m billingos", description="The BillingOS Python SDK.")
    parser.add_argument("--version", action="version", version=f"billingos {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the SDK against the embedded BillingOS server and show each step",
        description=(
            "Start the embedded BillingOS server on loopback, seed a plan, and walk through a real "
            "integration over HTTP: customers, session tokens, entitlements, usage, quota, metrics, "
            "subscriptions and a retried request. Needs the testing extra: pip install 'billingos[testing]'."
        ),
    )
    demo.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import main as demo

        return demo(as_json=args.json)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
