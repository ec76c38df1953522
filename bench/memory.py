"""Scenario 8: memory: RSS stays flat over 100 000 calls, and what one client costs.

Each measurement runs in a fresh interpreter (``python -m bench.memory calls|clients ...``), so nothing
another scenario allocated blurs it. The calls alternate ``check_entitlement`` and ``usage.track`` over
the canned in-process transport of ``overhead.py``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import statistics
import sys
import time
import tracemalloc
from typing import Any

from ._harness import Context, Goal, Row, fmt, ratios, rss_bytes, run_child

KB = 1024


def _calls_child(step: int, checkpoints: int) -> dict[str, list[float]]:
    """RSS and allocated blocks after ``step`` warm-up calls, then after every further ``step`` calls."""
    from .overhead import sdk_client

    async def main() -> dict[str, list[float]]:
        rss: list[float] = []
        blocks: list[float] = []
        async with sdk_client() as billing:
            for _ in range(checkpoints + 1):
                for i in range(step // 2):
                    await billing.check_entitlement("user_42", "api_calls")
                    await billing.usage.track(f"user_{i % 100}", "api_calls")
                    if i % 500 == 499:
                        # A real transport suspends on every call, so the loop runs and purges the
                        # cancelled timers of finished attempts' deadlines (asyncio removes them
                        # lazily); the canned one never suspends, so let the loop run as any real one
                        # would, else those timers (~200 B each) pile up until it does.
                        await asyncio.sleep(0)
                gc.collect()
                rss.append(rss_bytes())
                blocks.append(sys.getallocatedblocks())
        return {"rss": rss, "blocks": blocks}

    return asyncio.run(main())


def _clients_child(kind: str, n: int) -> dict[str, float]:
    """Per-client RSS, traced memory and creation time of ``n`` more clients after a first one."""
    import httpx2

    from billingos import AsyncBillingOS

    from .overhead import SECRET_KEY

    def make() -> Any:
        return AsyncBillingOS(SECRET_KEY) if kind == "sdk" else httpx2.AsyncClient()

    keep = [make()]  # the first one pays for one-time set-up (imports, the shared TLS context)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    keep += [make() for _ in range(n)]
    seconds = time.perf_counter() - started
    gc.collect()
    rss = rss_bytes() - before
    tracemalloc.start()
    first, _ = tracemalloc.get_traced_memory()
    keep += [make() for _ in range(n)]
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"rss": rss / n, "traced": (traced - first) / n, "seconds": seconds / n}


def _flat_rows(ctx: Context) -> list[Row]:
    step = ctx.pick(20_000, 2_500, 200)
    checkpoints = ctx.pick(4, 4, 2)
    result = run_child(["-m", "bench.memory", "calls", json.dumps([step, checkpoints])], timeout=600)
    rss, blocks = result["rss"], result["blocks"]
    per_segment = [(b - a) / step for a, b in itertools.pairwise(rss)]
    per_segment_blocks = [(b - a) / step for a, b in itertools.pairwise(blocks)]
    total = step * checkpoints
    overall = (rss[-1] - rss[0]) / total
    first, last = fmt(step), fmt(step * (checkpoints + 1))
    return [
        Row(
            name=f"RSS growth per call, after {first} → after {last} calls",
            figure=overall,
            unit="B/call",
            goal="< 1 B/call",
            met=Goal("<", 1).met(overall),
            spread=(min(per_segment), max(per_segment)),
            note=f"RSS {rss[0] / 2**20:.1f} MB → {rss[-1] / 2**20:.1f} MB; spread: each {fmt(step)}-call segment",
        ),
        Row(
            name="allocated Python blocks per call, same calls",
            figure=(blocks[-1] - blocks[0]) / total,
            unit="blocks/call",
            spread=(min(per_segment_blocks), max(per_segment_blocks)),
            note=f"{fmt(blocks[0])} → {fmt(blocks[-1])} blocks (sys.getallocatedblocks after gc)",
        ),
    ]


def _client_rows(ctx: Context) -> list[Row]:
    n = ctx.pick(100, 20, 5)
    runs: dict[str, list[dict[str, float]]] = {"sdk": [], "raw": []}
    for rep in range(ctx.pick(3, 1, 1)):
        for kind in ("sdk", "raw") if rep % 2 == 0 else ("raw", "sdk"):
            runs[kind].append(run_child(["-m", "bench.memory", "clients", json.dumps([kind, n])]))

    def series(kind: str, key: str) -> list[float]:
        return [r[key] for r in runs[kind]]

    def kb(kind: str, key: str) -> str:
        return f"{statistics.median(series(kind, key)) / KB:.0f} KB"

    def ms(kind: str) -> str:
        return f"{statistics.median(series(kind, 'seconds')) * 1e3:.2f} ms"

    return [
        Row.measured(
            "one AsyncBillingOS: RSS",
            [x / KB for x in series("sdk", "rss")],
            "KB",
            note=f"traced by tracemalloc {kb('sdk', 'traced')}; created in {ms('sdk')}",
        ),
        Row.measured(
            "one AsyncBillingOS / one default httpx2.AsyncClient, RSS",
            ratios(series("sdk", "rss"), series("raw", "rss")),
            note=f"httpx2.AsyncClient(): RSS {kb('raw', 'rss')}, traced {kb('raw', 'traced')}, created in "
            f"{ms('raw')}: its own TLS context, which every AsyncBillingOS shares",
        ),
    ]


def run(ctx: Context) -> list[Row]:
    """8. Memory, each part in a fresh interpreter. Flat: RSS after 20 000 calls and after 100 000 calls
    (alternating ``check_entitlement`` and ``usage.track`` on the canned transport), as bytes per call
    (goal < 1 B/call, i.e. no growth; the spread is the same figure for each 20 000-call segment), with
    the count of allocated Python blocks as a finer check. Cost of one client: the RSS (and the memory
    tracemalloc sees) of creating 100 more ``AsyncBillingOS`` after a first one, against 100 default
    ``httpx2.AsyncClient`` (most of whose cost is an OpenSSL context, invisible to tracemalloc)."""
    return _flat_rows(ctx) + _client_rows(ctx)


if __name__ == "__main__":
    command, args = sys.argv[1], json.loads(sys.argv[2])
    if command == "calls":
        print(json.dumps(_calls_child(*args)))
    elif command == "clients":
        print(json.dumps(_clients_child(*args)))
    else:
        sys.exit("usage: python -m bench.memory calls|clients JSON-ARGS (run by python -m bench)")
