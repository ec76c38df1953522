"""The ``billingos`` logger, and ``BILLINGOS_LOG=debug|info`` to switch on a stderr handler."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("billingos")
_configured = False


def setup_from_env() -> None:
    """Attach one stderr handler at the level ``BILLINGOS_LOG`` names (once per process)."""
    global _configured
    if _configured:
        return
    _configured = True
    level = {"debug": logging.DEBUG, "info": logging.INFO}.get(os.environ.get("BILLINGOS_LOG", "").lower())
    if level is None:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
