"""``billingos._loops``: how "which event loop is running?" is answered in the unusual cases.

The entitlement cache's single flight picks its waiting primitive by the answer. It must never import
anything to answer, must work without sniffio (asyncio is then the only possible loop), and must say
"none" outside a loop.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from billingos import _loops
from billingos._loops import _load_sniffio, running_asyncio_loop


def test_without_asyncio_imported_no_loop_is_running_and_nothing_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "asyncio")
        m.setattr(_loops, "_current_async_library", _loops._UNLOADED)
        assert running_asyncio_loop() is None
        assert "asyncio" not in sys.modules  # the question did not import it
        assert _loops._current_async_library is _loops._UNLOADED  # nor sniffio
    assert sys.modules["asyncio"] is asyncio


def test_without_sniffio_the_loader_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sniffio", None)  # `import sniffio` raises ImportError
    assert _load_sniffio() is None


def test_outside_any_loop_no_loop_is_running() -> None:
    # asyncio is imported (pytest-asyncio), sniffio too: sniffio finds no async library -> None.
    assert "asyncio" in sys.modules
    assert running_asyncio_loop() is None


async def test_a_worker_thread_of_a_running_loop_has_no_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert running_asyncio_loop() is asyncio.get_running_loop()
    assert await asyncio.to_thread(running_asyncio_loop) is None  # with sniffio
    monkeypatch.setattr(_loops, "_current_async_library", None)  # as if sniffio were not installed
    assert running_asyncio_loop() is asyncio.get_running_loop()
    assert await asyncio.to_thread(running_asyncio_loop) is None  # without: asyncio's own answer
