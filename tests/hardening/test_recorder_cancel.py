"""Cancelling the task that runs ``async with billing.usage_recorder()`` returns at once, and loses nothing.

The issue's bound is "within 0.5 s on trio and asyncio alike" (it measured 4.6 s on trio once); the test
asserts that generous bound, and above all the accounting. The embedded server, on loopback, holds every
track request unanswered, so the cancellation lands with calls in flight, others sealed and waiting for a
slot; then:

- memory recorder: every event is in a dead letter (code ``recorder_closed``); the calls that reached the
  server are marked ``possibly_counted``. Replaying every letter with its key, once the server has
  answered the held requests, leaves BillingOS with exactly the recorded total: nothing lost, nothing
  counted twice.
- outbox recorder: every event stays in the outbox; a new recorder on the file sends them (same keys) and
  BillingOS ends with exactly the recorded total.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from billingos import AsyncBillingOS
from billingos.testing import FakeBillingOS

from .._recorder_support import CUSTOMERS, FAST, seed
from ._event_loops import LOOPS, run_on
from .conftest import CountingApp, serve_counted, wait_until_async

EVENTS = 1000
BOUND = 0.5
"""Seconds: the issue's bound for a cancelled recorder to return."""
TRACK_PATH = "/v1/usage/track"


class HoldingTracks:
    """Wraps the fake's ASGI app: every track request is held, unanswered, until ``release`` is set."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.release = threading.Event()
        self.held = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == TRACK_PATH and not self.release.is_set():
            self.held += 1
            give_up = time.monotonic() + 30
            while not self.release.is_set() and time.monotonic() < give_up:  # noqa: ASYNC110 (a thread's event)
                await asyncio.sleep(0.001)  # uvicorn's loop is asyncio
        await self.app(scope, receive, send)


@pytest.fixture
def fake() -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None, seed=5)
    seed(fake)
    return fake


@pytest.fixture
def served(fake: FakeBillingOS) -> Iterator[tuple[str, HoldingTracks, CountingApp]]:
    holding = HoldingTracks(fake.app)
    try:
        with serve_counted(holding) as (url, counted):
            yield url, holding, counted
    finally:
        holding.release.set()


def total(fake: FakeBillingOS) -> float:
    return sum(fake.usage_of(customer, "api_calls") for customer in CUSTOMERS)


RUNS = [
    pytest.param(loop, http_backend, id=f"{loop}-{http_backend}")
    for loop in LOOPS
    for http_backend in ("httpx2", "aiohttp")
    if loop != "trio" or http_backend == "httpx2"
]


@pytest.mark.parametrize("where", ["memory", "outbox"])
@pytest.mark.parametrize(("backend", "http_backend"), RUNS)
def test_cancelling_the_recorders_task_returns_at_once_and_accounts_for_every_event(
    backend: str,
    http_backend: str,
    where: str,
    fake: FakeBillingOS,
    served: tuple[str, HoldingTracks, CountingApp],
    tmp_path: Path,
    figure: Any,
) -> None:
    url, holding, counted = served
    outbox = str(tmp_path / "usage.db") if where == "outbox" else None

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with AsyncBillingOS(fake.secret_key, api_url=url, http_backend=http_backend) as billing:

            async def run_recorder(task_status: anyio.abc.TaskStatus[None]) -> None:
                async with billing.usage_recorder(
                    outbox=outbox, flush_interval=0.02, retry_policy=FAST, max_concurrency=4
                ) as recorder:
                    out["recorder"] = recorder
                    for n in range(EVENTS):
                        recorder.record(CUSTOMERS[n % len(CUSTOMERS)], "api_calls")
                    task_status.started()
                    await anyio.sleep_forever()

            async with anyio.create_task_group() as group:
                await group.start(run_recorder)
                # four calls held by the server (in flight), the other six sealed and waiting for a slot
                await wait_until_async(lambda: holding.held >= 4, "the server holds 4 track calls")
                started = time.monotonic()
                group.cancel_scope.cancel()
            out["elapsed"] = time.monotonic() - started
            recorder = out["recorder"]
            out["stats"] = recorder.stats
            out["letters"] = recorder.dead_letters
            # Now let the server answer what it held (to connections closed long ago), and settle.
            holding.release.set()
            await counted.wait_idle()
            if outbox is None:
                for letter in recorder.dead_letters:  # the documented replay: same key, counted once
                    await billing.usage.track(
                        letter.customer_id,
                        letter.feature_key,
                        letter.quantity,
                        idempotency_key=letter.idempotency_key,
                    )
            else:
                async with billing.usage_recorder(outbox=outbox, retry_policy=FAST) as again:
                    out["loaded"] = again.stats.pending
                    await again.flush(timeout=10)
                    out["again"] = again.stats
        return out

    out = run_on(backend, main)
    stats, letters = out["stats"], out["letters"]
    figure(
        f"{backend}/{http_backend}/{where}: cancelled in {out['elapsed'] * 1000:.1f} ms with "
        f"{holding.held} calls held; pending={stats.pending} dead={stats.dead} "
        f"(letters: {sum(letter.events for letter in letters)} events, "
        f"{sum(letter.possibly_counted for letter in letters)} possibly counted); "
        f"BillingOS total after replay: {total(fake):.0f} of {EVENTS}"
    )
    assert out["elapsed"] < BOUND
    assert (stats.recorded, stats.confirmed, stats.in_flight) == (EVENTS, 0, 0)
    if outbox is None:
        assert (stats.pending, stats.dead) == (0, EVENTS)
        assert sum(letter.events for letter in letters) == EVENTS
        assert {letter.error.code for letter in letters} == {"recorder_closed"}
        # the calls that reached the server may have been counted: say so (replay with the key only)
        assert sum(letter.possibly_counted for letter in letters) == holding.held
    else:
        assert (stats.pending, stats.dead, len(letters)) == (EVENTS, 0, 0)
        assert out["loaded"] == EVENTS
        assert (out["again"].confirmed, out["again"].pending, out["again"].dead) == (EVENTS, 0, 0)
    assert total(fake) == EVENTS  # nothing lost, nothing counted twice
