"""The ``billingos`` command line (console script, and ``python -m billingos``).

Commands: ``check``, ``track``, ``metrics``, ``token create``, ``token decode``, ``customers list``,
``products``, ``checkout``, ``portal``, ``state``, ``demo`` and ``mock``; ``billingos --help`` lists them
with the exit codes. It is written with click,
which comes with the ``cli`` extra (``pip install 'billingos[cli]'``). This module imports click only
when :func:`main` runs, so ``import billingos`` never does, and a missing click gets a one-line hint
instead of a traceback. The commands live in ``_commands.py``, their text and JSON output in
``_render.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

INSTALL_HINT = "billingos: the command line needs click: pip install 'billingos[cli]'"
"""What ``billingos`` prints (exit status 2) when the ``cli`` extra is not installed."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``billingos`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Example::

        sys.exit(main(["check", "user_42", "api_calls"]))   # 0: has access, 1: does not
    """
    try:
        import click  # noqa: F401 (only to know it is there)
    except ModuleNotFoundError as exc:
        if exc.name != "click":
            raise
        print(INSTALL_HINT, file=sys.stderr, flush=True)
        return 2
    try:
        from ._commands import run
    except KeyboardInterrupt:  # Ctrl-C while importing: the same quiet 130 as during a command
        return 130
    return run(argv)


__all__ = ["main"]
