"""Scenario 5: the blocking facade (``BillingOS``) against the async client it runs, and against raw threads.

``BillingOS`` runs ``AsyncBillingOS`` on one shared event loop, which a calling thread runs itself when it
is free (no thread hop), and which is handed over otherwise. Both sides use the canned in-process
transport of ``overhead.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2

from billingos import BillingOS

from ._harness import Context, Goal, Row, fmt, interleave, median_us, per_call, per_call_async, ratios
from .overhead import API_URL, RAW_HEADERS, SECRET_KEY, canned_transport, entitlement_from, sdk_client

THREADS = 8


def _sync_sdk() -> BillingOS:
    return BillingOS(
        SECRET_KEY, api_url=API_URL, http_client=httpx2.AsyncClient(transport=canned_transport())
    )


def _threaded(work: Callable[[int], None], threads: int) -> float:
    """Wall seconds for ``threads`` threads to each run ``work(index)``, started together."""
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        barrier.wait()
        work(index)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started


def _per_call_rows(ctx: Context) -> list[Row]:
    n = ctx.pick(1500, 250, 20)
    loop = asyncio.new_event_loop()
    try:
        core = sdk_client()
        with _sync_sdk() as billing:
            assert billing.check_entitlement("user_42", "api_calls") == loop.run_until_complete(
                core.check_entitlement("user_42", "api_calls")
            )
            state = billing._runner._state  # private, for the bench only: the facade's shared loop
            assert state is not None
            shared, own = state.loop, state.core

            def handed_over(coro_fn: Callable[[], Any]) -> Callable[[], object]:
                # The path of a caller that cannot run the loop itself (it runs another loop, or another
                # thread is running this one): the call handed to the thread running the loop, here the
                # facade's standby thread, kept running by hold().
                return lambda: asyncio.run_coroutine_threadsafe(coro_fn(), shared.loop).result()

            def with_held(work: Callable[[], float]) -> float:
                with shared.hold():
                    return work()

            times = interleave(
                {
                    "sync": lambda: per_call(lambda: billing.check_entitlement("user_42", "api_calls"), n),
                    "async": lambda: loop.run_until_complete(
                        per_call_async(lambda: core.check_entitlement("user_42", "api_calls"), n)
                    ),
                    "handed over": lambda: with_held(
                        lambda: per_call(
                            handed_over(lambda: own.check_entitlement("user_42", "api_calls")), n
                        )
                    ),
                    "no-op hop": lambda: with_held(lambda: per_call(handed_over(_noop), n)),
                },
                ctx.reps,
            )
        loop.run_until_complete(core.aclose())
    finally:
        loop.close()
    return [
        Row.measured(
            "check_entitlement: sync facade / async, per call",
            ratios(times["sync"], times["async"]),
            goal=Goal("<=", 1.5),
            note=f"sync {median_us(times['sync'])}, async {median_us(times['async'])} per call: the calling "
            "thread runs the facade's loop itself",
        ),
        Row.measured(
            "handed over to the thread running the loop / async, per call",
            ratios(times["handed over"], times["async"]),
            note=f"{median_us(times['handed over'])} per call (a caller inside another running loop, or "
            f"while another thread runs this one); a no-op coroutine's round trip: {median_us(times['no-op hop'])}",
        ),
    ]


async def _noop() -> None:
    return None


def _threads_row(ctx: Context) -> Row:
    n = ctx.pick(300, 100, 5)  # calls per thread
    clients = [httpx2.Client(transport=canned_transport(), headers=RAW_HEADERS) for _ in range(THREADS)]

    def raw(index: int) -> None:
        client = clients[index]
        for _ in range(n):
            response = client.get(
                f"{API_URL}/v1/usage/check", params={"customer_id": "user_42", "feature_key": "api_calls"}
            )
            if response.status_code != 200:
                raise RuntimeError(response.status_code)
            entitlement_from(json.loads(response.content))

    try:
        with _sync_sdk() as billing:

            def sdk(_: int) -> None:
                for _ in range(n):
                    billing.check_entitlement("user_42", "api_calls")

            walls = interleave(
                {"sdk": lambda: _threaded(sdk, THREADS), "raw": lambda: _threaded(raw, THREADS)}, ctx.reps
            )
    finally:
        for client in clients:
            client.close()
    calls = THREADS * n
    # Throughput ratio = (calls / sdk wall) / (calls / raw wall) = raw wall / sdk wall.
    return Row.measured(
        f"{THREADS} threads: one shared BillingOS / a sync httpx2.Client each, throughput",
        ratios(walls["raw"], walls["sdk"]),
        note=f"best: SDK {fmt(calls / min(walls['sdk']))} calls/s, raw {fmt(calls / min(walls['raw']))} calls/s",
    )


def run(ctx: Context) -> list[Row]:
    """5. ``BillingOS.check_entitlement`` (the blocking facade: a hop to its event-loop thread and back)
    vs ``await AsyncBillingOS.check_entitlement`` on the same canned transport, per call (goal ≤ 1.5×);
    and the throughput of 8 threads sharing one ``BillingOS`` vs 8 threads each with its own
    ``httpx2.Client`` doing the raw GET + ``json.loads`` + ``Entitlement`` (reported, no goal; above 1 the
    SDK is faster)."""
    return [*_per_call_rows(ctx), _threads_row(ctx)]
