"""Which event loop is running, answered without importing asyncio when none can be.

asyncio (~15 ms), sniffio and anyio.lowlevel are not needed by ``import billingos``. No asyncio loop
can be running before something has imported asyncio, so finding it absent from ``sys.modules``
answers "which event loop?" without importing anything; code that runs only on a running asyncio loop
imports it locally (a ``sys.modules`` hit, ~0.1 µs).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["in_event_loop", "keep_running", "kept_running", "running_asyncio_loop"]


def _load_sniffio() -> Callable[[], str] | None:
    """`sniffio.current_async_library` if sniffio is installed, else ``None``.

    trio depends on sniffio, so without sniffio the only possible event loop is asyncio (httpcore2 makes
    the same inference). Imported dynamically so type checking does not depend on it being installed.
    """
    try:
        module = importlib.import_module("sniffio")
    except ImportError:
        return None
    current_async_library: Callable[[], str] = module.current_async_library
    return current_async_library


_UNLOADED: Any = object()
_current_async_library: Callable[[], str] | None = _UNLOADED  # _load_sniffio() on first use


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when called from an asyncio task (plain or under anyio), else ``None``."""
    if "asyncio" not in sys.modules:  # nothing imported asyncio: no asyncio loop can be running
        return None
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    if "trio" not in sys.modules:  # the usual case: only asyncio can be running, no need to ask sniffio
        return loop
    # trio-asyncio runs an asyncio loop inside trio: ask sniffio which one this task belongs to.
    global _current_async_library
    if _current_async_library is _UNLOADED:
        _current_async_library = _load_sniffio()
    if _current_async_library is not None:
        try:
            if _current_async_library() != "asyncio":
                return None
        except RuntimeError:  # sniffio.AsyncLibraryNotFoundError
            return None
    return loop


def in_event_loop() -> bool:
    """Whether this thread is running an event loop (asyncio, or trio), where blocking work would stall it."""
    if "asyncio" in sys.modules:
        import asyncio

        if asyncio._get_running_loop() is not None:  # no exception raised and caught when there is none
            return True
    trio: Any = sys.modules.get("trio")
    if trio is not None:
        in_trio_run = getattr(trio.lowlevel, "in_trio_run", None)  # trio >= 0.26
        if in_trio_run is not None:
            return bool(in_trio_run())
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return False
        return True
    return False


_HOLDS: weakref.WeakKeyDictionary[Any, weakref.WeakMethod[Callable[[], AbstractContextManager[None]]]] = (
    weakref.WeakKeyDictionary()
)


def keep_running(loop: object, hold: Callable[[], AbstractContextManager[None]]) -> None:
    """Register ``hold`` (a bound method) as what keeps ``loop`` running between calls.

    The blocking client runs its loop only while a call needs it; background work on that loop (the
    shared cache's listener) enters :func:`kept_running` to have it run on the client's own thread.
    """
    _HOLDS[loop] = weakref.WeakMethod(hold)


def kept_running() -> AbstractContextManager[None]:
    """Inside this block, the running loop keeps running between calls (a no-op on a plain asyncio loop).

    Example::

        with kept_running():
            await listen_forever()
    """
    loop = running_asyncio_loop()
    found = None if loop is None else _HOLDS.get(loop)
    hold = None if found is None else found()
    return contextlib.nullcontext() if hold is None else hold()
