"""One process of a fleet sharing an entitlement cache on Redis (tests/e2e/test_redis_cache.py).

    python tests/_redis_fleet_child.py URL SECRET_KEY REDIS_URL PREFIX CHECKS LEASE

Builds an ``AsyncBillingOS`` whose ``EntitlementCache`` has a ``RedisStore`` (``PREFIX``, ``LEASE``),
prints ``READY``, waits for a line on stdin (so that every process of the fleet starts at once), then
runs ``CHECKS`` concurrent ``check_entitlement("user_42", "api_calls")`` and prints one line,
``DONE <json>``: how many answered with access, and the cache's stats.
"""

from __future__ import annotations

import asyncio
import json
import sys

import attrs
import redis.asyncio

from billingos import AsyncBillingOS, EntitlementCache, RedisStore


async def main(url: str, key: str, redis_url: str, prefix: str, checks: int, lease: float) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix, lease=lease, poll_interval=0.01, timeout=5)
    cache = EntitlementCache(ttl=30, stale_if_error=300, store=store)
    async with AsyncBillingOS(key, api_url=url, max_retries=0, entitlement_cache=cache) as billing:
        await client.ping()  # connected before the start line: the fleet then starts together
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        results = await asyncio.gather(
            *(billing.check_entitlement("user_42", "api_calls") for _ in range(checks))
        )
    await client.aclose()
    report = {"access": sum(r.has_access for r in results), "stats": attrs.asdict(cache.stats)}
    print("DONE " + json.dumps(report), flush=True)


if __name__ == "__main__":
    u, k, r, p, n, lease = sys.argv[1:7]
    asyncio.run(main(u, k, r, p, int(n), float(lease)))
