"""Scenario 6: the usage recorder: what ``record()`` costs the caller, and how fast 10 000 events drain.

``record()`` is timed in this process, in alternating batches with and without the SQLite outbox (the
recorder's flushes go to the canned transport of ``overhead.py``; they do not happen during a batch).
Each drain runs in a fresh interpreter (``python -m bench.recorder drain ...``) so that its peak RSS is
its own, against the embedded server on loopback in a process of its own, which counts the track calls
and the units it received.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

from ._harness import (
    Context,
    Goal,
    Row,
    Server,
    fmt,
    interleave,
    loopback_server,
    median_us,
    peak_rss_bytes,
    per_call,
    ratios,
    rss_bytes,
    run_child,
)

TRACK = "POST /v1/usage/track"
EVENTS = 10_000
THREADS = 4
MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# record()


async def _record_times(ctx: Context) -> dict[str, list[float]]:
    from .overhead import sdk_client

    n = ctx.pick(100_000, 20_000, 1_000)
    ids = [f"user_{i % 50}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            sdk_client() as billing,
            billing.usage_recorder(flush_interval=3600, max_pending=10**9) as memory,
            billing.usage_recorder(
                outbox=os.path.join(tmp, "usage.db"), flush_interval=3600, max_pending=10**9
            ) as outbox,
        ):

            def batch(record: Any) -> float:
                it = iter(ids)
                return per_call(lambda: record(next(it), "api_calls"), n)

            times = interleave(
                {"memory": lambda: batch(memory.record), "outbox": lambda: batch(outbox.record)}, ctx.reps
            )
            await memory.flush()
            await outbox.flush()

            # record() from several threads at once (a threaded web server): per call, in each thread.
            per_thread: list[float] = []

            def worker() -> None:
                per_thread.append(batch(memory.record))

            threads = [threading.Thread(target=worker) for _ in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            times["threads"] = per_thread
            await memory.flush()

            # How soon an event is on disk (what a kill -9 keeps) when the writer thread is idle.
            durable = []
            for _ in range(ctx.pick(200, 50, 5)):
                started = time.perf_counter()
                outbox.record("user_0", "api_calls")
                await outbox.wait_durable(timeout=5)
                durable.append(time.perf_counter() - started)
            times["durable"] = durable
            await outbox.flush()
    return times


# ---------------------------------------------------------------------------------------------
# Draining 10 000 events, in a child process


def _drain_child(
    url: str, key: str, outbox: bool, customers: int, features: int, events: int
) -> dict[str, float]:
    from billingos import AsyncBillingOS

    async def main() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "usage.db") if outbox else None
            async with AsyncBillingOS(key, api_url=url) as billing:
                async with billing.usage_recorder(outbox=path) as recorder:
                    rss_before = rss_bytes()
                    started = time.perf_counter()
                    for k in range(events):
                        recorder.record(f"user_{k % customers}", f"f{(k // customers) % features}")
                    await recorder.flush()
                    seconds = time.perf_counter() - started
                    stats = recorder.stats
        return {
            "seconds": seconds,
            "peak_rss": peak_rss_bytes(),
            "rss_before": rss_before,
            "sent_calls": stats.sent_calls,
        }

    return asyncio.run(main())


def _drain_rows(ctx: Context) -> list[Row]:
    events = ctx.pick(EVENTS, EVENTS, 500)
    workloads = {"full": [(10, 2), (200, 5)], "quick": [(200, 5)], "smoke": [(10, 2)]}[ctx.mode]
    reps = ctx.pick(3, 1, 1)
    rows = []
    with loopback_server(customers=200, features=[f"f{j}" for j in range(5)]) as server:
        for customers, features in workloads:
            keys = min(customers * features, events)
            runs: dict[str, list[dict[str, float]]] = {"memory": [], "outbox": []}
            for rep in range(reps):
                for kind in ("memory", "outbox") if rep % 2 == 0 else ("outbox", "memory"):
                    runs[kind].append(_drain_once(server, kind == "outbox", customers, features, events))
            for kind in ("memory", "outbox"):
                seconds = [r["seconds"] * 1e3 for r in runs[kind]]
                calls = max(r["calls"] for r in runs[kind])
                peak = max(r["peak_rss"] for r in runs[kind]) / MB
                growth = max(r["peak_rss"] - r["rss_before"] for r in runs[kind]) / MB
                rows.append(
                    Row.measured(
                        f"drain {fmt(events)} events over {fmt(keys)} keys, {kind}: time",
                        seconds,
                        "ms",
                        note=f"{calls:.0f} track calls ({keys} keys); peak RSS {peak:.0f} MB "
                        f"(+{growth:.1f} MB while recording and draining)",
                    )
                )
            rows.append(
                Row.measured(
                    f"drain over {fmt(keys)} keys: outbox / memory, time",
                    ratios([r["seconds"] for r in runs["outbox"]], [r["seconds"] for r in runs["memory"]]),
                )
            )
    return rows


def _drain_once(server: Server, outbox: bool, customers: int, features: int, events: int) -> dict[str, float]:
    before_calls = server.count(TRACK)
    before_units = sum(server.total(f"f{j}") for j in range(features))
    spec = json.dumps([server.url, server.secret_key, outbox, customers, features, events])
    result: dict[str, float] = run_child(["-m", "bench.recorder", "drain", spec])
    result["calls"] = server.count(TRACK) - before_calls
    counted = sum(server.total(f"f{j}") for j in range(features)) - before_units
    if counted != events:
        raise RuntimeError(f"the server counted {counted} units for {events} events")
    return result


def run(ctx: Context) -> list[Row]:
    """6. The usage recorder. ``record()``: the caller's cost per event, in memory and with the SQLite
    outbox (goal ≤ 10 µs each), timed in alternating batches. Draining 10 000 events to the embedded
    server on loopback (its own process), each drain in a fresh interpreter: the time from the first
    ``record()`` until ``flush()`` returns, the track calls the server received (one per distinct
    customer and feature, the coalescing at work), the server's unit count checked to be exactly
    10 000, and the drain process's peak RSS; with and without the outbox. Also ``record()`` from 4
    threads at once, and how soon a recorded event is on disk with the outbox."""
    times = asyncio.run(_record_times(ctx))
    goal = Goal("<=", 10)
    rows = [
        Row.measured("record(), in memory", [t * 1e6 for t in times["memory"]], "µs", goal),
        Row.measured("record(), with the SQLite outbox", [t * 1e6 for t in times["outbox"]], "µs", goal),
        Row.measured(
            "record(): outbox / memory",
            ratios(times["outbox"], times["memory"]),
            note=f"outbox {median_us(times['outbox'])}, memory {median_us(times['memory'])}",
        ),
        Row.measured(
            f"record() from {THREADS} threads at once, in memory",
            [t * 1e6 for t in times["threads"]],
            "µs",
            note="per call in each thread; spread: the threads",
        ),
        Row.measured(
            "record() → durable in the outbox (idle writer)",
            [t * 1e3 for t in times["durable"]],
            "ms",
            note="record() then await wait_durable(); spread: the events",
        ),
    ]
    return rows + _drain_rows(ctx)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "drain":
        print(json.dumps(_drain_child(*json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m bench.recorder drain JSON-ARGS (run by python -m bench)")
