"""The event loops the hardening scenarios run on: asyncio, uvloop (asyncio's API on libuv) and trio.

``run_on(loop, main)`` runs ``main`` as ``anyio.run`` would, with ``loop`` one of :data:`LOOPS`. uvloop is a
test dependency (``dev`` extra and ``test`` group) on CPython outside Windows, where it has wheels; a
platform without it runs the other two.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
LOOPS = ["asyncio", "uvloop", "trio"] if HAS_UVLOOP else ["asyncio", "trio"]
ASYNCIO_LOOPS = [loop for loop in LOOPS if loop != "trio"]
"""Where an asyncio-only backend (aiohttp) runs."""


def run_on(loop: str, main: Callable[[], Awaitable[T]]) -> T:
    if loop == "uvloop":
        return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(main, backend=loop)


LOOPS_AND_BACKENDS = [
    (loop, backend)
    for loop in LOOPS
    for backend in ("httpx2", "aiohttp")
    if loop != "trio" or backend == "httpx2"
]
"""Every (event loop, HTTP backend) a scenario runs on: aiohttp is asyncio only (asyncio and uvloop)."""
