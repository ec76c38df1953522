"""``python -m billingos``: the ``billingos`` command line (see ``billingos --help`` and
https://billingos.github.io/billingos-python/cli/).

The same commands as the ``billingos`` console script: ``check``, ``track``, ``metrics``, ``token``,
``customers``, ``demo`` and ``mock``. They need the ``cli`` extra (``pip install 'billingos[cli]'``);
without it, this prints which extra to install and exits with status 2.
"""

from __future__ import annotations

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
