"""Process B of tests/e2e/test_redis_fleet_news.py: caches an answer, then sees another process's track.

    python tests/_redis_news_child.py URL SECRET_KEY REDIS_URL PREFIX

Checks ``user_42``/``api_calls`` once (a miss: one request, and the cache starts listening), prints
``READY <json stats>``, waits for a line on stdin (the parent has tracked by then), waits until its cache
has applied one message of the fleet (a bounded poll of a count), checks again and prints
``DONE <json>``: the answer and the cache's stats.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import attrs
import redis.asyncio

from billingos import AsyncBillingOS, EntitlementCache, RedisStore


async def main(url: str, key: str, redis_url: str, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    cache = EntitlementCache(ttl=300, store=RedisStore(client, prefix=prefix, timeout=5))
    async with AsyncBillingOS(key, api_url=url, max_retries=0, entitlement_cache=cache) as billing:
        await billing.check_entitlement("user_42", "api_calls")
        print("READY " + json.dumps(attrs.asdict(cache.stats)), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        end = time.monotonic() + 10
        while cache.stats.fleet_updates < 1 and time.monotonic() < end:  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.005)
        ent = await billing.check_entitlement("user_42", "api_calls")
    await client.aclose()
    report = {"has_access": ent.has_access, "remaining": ent.remaining, "stats": attrs.asdict(cache.stats)}
    print("DONE " + json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
