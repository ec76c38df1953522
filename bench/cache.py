"""Scenario 4: the entitlement cache: a fresh hit's cost, its speed-up over a real check, single flight.

The server is the embedded ``FakeBillingOS`` on loopback, in its own process, so an uncached check pays
for a real HTTP exchange and the server's work does not compete with the client for the GIL.
"""

from __future__ import annotations

import asyncio
import time

from billingos import AsyncBillingOS, BillingOS, EntitlementCache

from ._harness import (
    Context,
    Goal,
    Row,
    Server,
    interleave,
    interleave_async,
    loopback_server,
    median_us,
    per_call,
    per_call_async,
    ratios,
)

CHECK = "GET /v1/usage/check"
HIT_GOAL = Goal("<=", 5)


async def _async_rows(ctx: Context, server: Server) -> list[Row]:
    n_hits = ctx.pick(20_000, 5_000, 200)
    n_uncached = ctx.pick(400, 150, 10)
    cache = EntitlementCache(ttl=3600)
    async with (
        AsyncBillingOS(server.secret_key, api_url=server.url, entitlement_cache=cache) as cached,
        AsyncBillingOS(server.secret_key, api_url=server.url) as uncached,
    ):
        await cached.check_entitlement("user_0", "api_calls")
        before = server.count(CHECK)
        times = await interleave_async(
            {
                "hit": lambda: per_call_async(
                    lambda: cached.check_entitlement("user_0", "api_calls"), n_hits
                ),
                "uncached": lambda: per_call_async(
                    lambda: uncached.check_entitlement("user_0", "api_calls"), n_uncached
                ),
            },
            ctx.reps,
        )
        uncached_requests = (ctx.reps + 1) * n_uncached
        assert server.count(CHECK) - before == uncached_requests, "a cache hit sent a request"

        # 1 000 concurrent checks of one key on an empty cache: the cache must send exactly one request.
        upstream: list[float] = []
        walls: list[float] = []
        for _ in range(ctx.pick(5, 3, 1)):
            cache.clear()
            before = server.count(CHECK)
            started = time.perf_counter()
            answers = await asyncio.gather(
                *(cached.check_entitlement("user_0", "api_calls") for _ in range(1000))
            )
            walls.append(time.perf_counter() - started)
            assert all(a.has_access for a in answers)
            upstream.append(server.count(CHECK) - before)

    return [
        Row.measured("fresh hit: await check_entitlement", [t * 1e6 for t in times["hit"]], "µs", HIT_GOAL),
        Row.measured(
            "speed-up: uncached loopback check / fresh hit",
            ratios(times["uncached"], times["hit"]),
            goal=Goal(">=", 50),
            note=f"uncached {median_us(times['uncached'])}, hit {median_us(times['hit'])} per call",
        ),
        Row.measured(
            "1 000 concurrent identical misses: upstream requests",
            upstream,
            "requests",
            Goal("==", 1),
            note=f"all answered in {min(walls) * 1e3:.0f}–{max(walls) * 1e3:.0f} ms",
        ),
    ]


def _sync_row(ctx: Context, server: Server) -> Row:
    n_hits = ctx.pick(20_000, 5_000, 200)
    cache = EntitlementCache(ttl=3600)
    with BillingOS(server.secret_key, api_url=server.url, entitlement_cache=cache) as billing:
        billing.check_entitlement("user_0", "api_calls")
        times = interleave(
            {"hit": lambda: per_call(lambda: billing.check_entitlement("user_0", "api_calls"), n_hits)},
            ctx.reps,
        )
    return Row.measured(
        "fresh hit: BillingOS.check_entitlement (sync)", [t * 1e6 for t in times["hit"]], "µs", HIT_GOAL
    )


def run(ctx: Context) -> list[Row]:
    """4. The entitlement cache against the embedded server on loopback (its own process): the cost of a
    fresh hit (goal ≤ 5 µs, async and through the blocking facade); the speed-up of a hit over an
    uncached check, both timed in alternating batches (goal ≥ 50×); and the upstream requests that
    1 000 concurrent checks of one key on an empty cache cause (goal exactly 1; the figure is the median
    over repetitions, the spread their range)."""
    with loopback_server() as server:
        rows = asyncio.run(_async_rows(ctx, server))
        rows.insert(1, _sync_row(ctx, server))
    return rows
