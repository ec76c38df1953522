"""Scenario 11: the entitlement cache shared on Redis: what a Redis-backed hit costs next to the Redis
round trip it cannot avoid.

A Redis-backed hit is a check that misses this process's memory and finds a fresh answer in Redis (what
every process but one sees after a fleet-wide miss). It is timed against a bare ``HGET`` of the same
entry with the same ``redis.asyncio`` client, in alternating batches; goal: within 2×. The servers
(a ``redis-server`` on a free loopback port, the embedded BillingOS in its own process) run beside the
client; without a ``redis-server`` binary the scenario reports itself skipped.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from billingos import AsyncBillingOS, EntitlementCache, RedisStore

from ._harness import Context, Goal, Row, interleave_async, loopback_server, median_us, per_call_async, ratios

CHECK = "GET /v1/usage/check"


@contextmanager
def _redis_server(binary: str) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.01)
        yield port
    finally:
        proc.terminate()
        proc.wait()


async def _rows(ctx: Context, port: int, secret_key: str, url: str) -> list[Row]:
    import redis.asyncio

    n = ctx.pick(3_000, 1_000, 50)
    client = redis.asyncio.Redis(host="127.0.0.1", port=port)
    cache = EntitlementCache(ttl=3600, store=RedisStore(client, timeout=5))
    async with AsyncBillingOS(secret_key, api_url=url, entitlement_cache=cache) as billing:
        await billing.check_entitlement("user_0", "api_calls")  # the one request: Redis holds it now
        (hkey,) = await client.keys("billingos:*:e:user_0")

        async def shared_hit() -> object:
            cache.invalidate("user_0", "api_calls")  # this process's memory only: the next read is Redis
            return await billing.check_entitlement("user_0", "api_calls")

        times = await interleave_async(
            {
                "shared": lambda: per_call_async(shared_hit, n),
                "hget": lambda: per_call_async(lambda: client.hget(hkey, "api_calls"), n),
            },
            ctx.reps,
        )
        assert cache.stats.shared_hits >= n, "a Redis-backed hit was not answered from Redis"
    await client.aclose()
    return [
        Row.measured(
            "Redis-backed hit / Redis HGET round trip (loopback)",
            ratios(times["shared"], times["hget"]),
            goal=Goal("<=", 2),
            note=f"hit {median_us(times['shared'])}, HGET {median_us(times['hget'])} per call",
        )
    ]


def run(ctx: Context) -> list[Row]:
    """11. A Redis-backed entitlement hit against a bare Redis round trip, alternating batches (goal ≤ 2×)."""
    import redis  # noqa: F401 - without redis-py, the harness reports the scenario skipped

    binary = shutil.which("redis-server")
    if binary is None:
        return [
            {"name": "Redis-backed hit", "figure": None, "unit": "×", "goal": "<= 2", "met": None,
             "spread": "skipped: no redis-server on PATH"}  # type: ignore[list-item]
        ]  # fmt: skip
    with _redis_server(binary) as port, loopback_server() as server:
        return asyncio.run(_rows(ctx, port, server.secret_key, server.url))
