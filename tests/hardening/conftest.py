"""Shared helpers of the hardening suite: soak size and seed, figures, a loopback server you can wait on.

- ``BILLINGOS_SOAK_EVENTS`` sizes the ``soak`` tests (1 000 by default, 10 000 for the long form);
  ``BILLINGOS_SOAK_SEED`` replays a run (every soak test prints the seed it used).
- ``figure("...")`` records one line per test: printed at once (``-s``), and all together written to
  ``.pytest_cache/d/billingos/hardening-figures.txt`` at the end of the run; with
  ``--hardening-figures`` they are also printed in a "hardening figures" section of the summary. A
  default run ends on pytest's own lines.
- ``serve_counted(app)`` serves an ASGI app (a ``FakeBillingOS.app``) on loopback with
  ``billingos.testing.serve_asgi`` and counts the requests it is still working on, so a test can wait
  until the server is idle (a delayed request still lands after the client gave up on it) instead of
  sleeping and hoping.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from billingos.testing import serve_asgi

_FIGURES: list[str] = []


def soak_events() -> int:
    """``BILLINGOS_SOAK_EVENTS`` (default 1 000): the size of the soak tests."""
    raw = os.environ.get("BILLINGOS_SOAK_EVENTS", "1000")
    try:
        events = int(raw)
    except ValueError:
        raise pytest.UsageError(f"BILLINGOS_SOAK_EVENTS must be an integer, got {raw!r}") from None
    if events < 10:
        raise pytest.UsageError(f"BILLINGOS_SOAK_EVENTS must be at least 10, got {events}")
    return events


@pytest.fixture
def seed() -> int:
    """``BILLINGOS_SOAK_SEED`` when set, else a fresh random seed; printed, so a failure can be replayed."""
    raw = os.environ.get("BILLINGOS_SOAK_SEED")
    value = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"seed={value} (replay with BILLINGOS_SOAK_SEED={value})")
    return value


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``figure(text)``: this test's headline number, for the closing summary."""

    def record(text: str) -> None:
        line = f"{request.node.name}: {text}"
        _FIGURES.append(line)
        print(line)

    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The figures to a file (when the cache is on), and to the summary with ``--hardening-figures``."""
    if not _FIGURES:
        return
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        path = cache.mkdir("billingos") / "hardening-figures.txt"
        path.write_text("".join(f"{line}\n" for line in _FIGURES))
    if config.getoption("hardening_figures"):
        terminalreporter.section("hardening figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


class CountingApp:
    """An ASGI wrapper counting the HTTP requests the wrapped app has started and not yet finished."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.in_flight = 0
        self.started = 0
        self.peak = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.in_flight += 1
            self.started += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def wait_idle(self, deadline: float = 15.0) -> None:
        """Until no request is being worked on (call it once the client has stopped sending)."""
        await wait_until_async(lambda: self.in_flight == 0, "the server is idle", deadline)

    def wait_idle_blocking(self, deadline: float = 15.0) -> None:
        wait_until(lambda: self.in_flight == 0, "the server is idle", deadline)


@contextmanager
def serve_counted(app: Any) -> Iterator[tuple[str, CountingApp]]:
    """``app`` on a loopback port (uvicorn, ``TCP_NODELAY``); yields its URL and its request counter."""
    counted = CountingApp(app)
    with serve_asgi(counted) as url:
        yield url, counted


def wait_until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``deadline`` seconds."""
    until = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > until:
            pytest.fail(f"timed out after {deadline} s waiting until {what}")
        time.sleep(0.002)


async def wait_until_async(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Poll ``condition`` (checking between loop iterations) until it holds; fail after ``deadline`` s."""
    until = time.monotonic() + deadline
    while True:
        if condition():
            return
        if time.monotonic() > until:
            pytest.fail(f"timed out after {deadline} s waiting until {what}")
        await anyio.sleep(0.005)
