"""``billingos._exchange``: how "which event loop is running?" is answered in the unusual cases.

The answer picks the path of every request: a detached task on asyncio (a cancelled caller never strands
a pooled connection), a shielded scope elsewhere. It must never import anything to answer, must work
without sniffio (asyncio is then the only possible loop), and must say "none" outside a loop.
"""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest

from billingos import AsyncBillingOS, _exchange
from billingos._exchange import _Exchanger, _load_sniffio, _running_asyncio_loop

from ._factories import BASE_URL, SECRET, check_json


def test_without_asyncio_imported_no_loop_is_running_and_nothing_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "asyncio")
        m.setattr(_exchange, "_current_async_library", _exchange._UNLOADED)
        assert _running_asyncio_loop() is None
        assert "asyncio" not in sys.modules  # the question did not import it
        assert _exchange._current_async_library is _exchange._UNLOADED  # nor sniffio
    assert sys.modules["asyncio"] is asyncio


def test_without_sniffio_the_loader_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sniffio", None)  # `import sniffio` raises ImportError
    assert _load_sniffio() is None


def test_outside_any_loop_no_loop_is_running() -> None:
    # asyncio is imported (pytest-asyncio), sniffio too: sniffio finds no async library -> None.
    assert "asyncio" in sys.modules
    assert _running_asyncio_loop() is None


async def test_a_worker_thread_of_a_running_loop_has_no_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _running_asyncio_loop() is asyncio.get_running_loop()
    assert await asyncio.to_thread(_running_asyncio_loop) is None  # with sniffio
    monkeypatch.setattr(_exchange, "_current_async_library", None)  # as if sniffio were not installed
    assert _running_asyncio_loop() is asyncio.get_running_loop()
    assert await asyncio.to_thread(_running_asyncio_loop) is None  # without: asyncio's own answer


async def test_without_sniffio_calls_still_run_detached_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """No sniffio means no trio: the asyncio path (a task the exchanger owns) is taken, and works."""
    monkeypatch.setattr(_exchange, "_load_sniffio", lambda: None)
    monkeypatch.setattr(_exchange, "_current_async_library", _exchange._UNLOADED)
    arrived, release = asyncio.Event(), asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await release.wait()
        return httpx.Response(200, json=check_json(has_access=False, limit=1000, usage=1000))

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=http) as billing,
    ):
        exchanger = billing._requester.transport.exchanger
        assert isinstance(exchanger, _Exchanger)
        call = asyncio.ensure_future(billing.check_entitlement("user_1", "api_calls"))
        await arrived.wait()
        assert exchanger.in_flight == 1  # the exchange runs in its own task
        assert _exchange._current_async_library is None  # loaded once: "no sniffio"
        release.set()
        entitlement = await call
        assert entitlement.has_access is False
        assert exchanger.in_flight == 0
