"""Entitlement cache: cost of a fresh hit vs an uncached check (in-process transport and loopback).

Run from the repository:  .venv/bin/python bench/cache_hit.py
Prints figures; asserts nothing but that hits made no requests.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from billingos import AsyncBillingOS, BillingOS, EntitlementCache
from billingos.testing import FakeBillingOS

CHECK = "GET /v1/usage/check"


def seeded() -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None)
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Pro", features={"api_calls": 1_000_000})
    fake.add_customer("user_42")
    fake.subscribe("user_42", plan.price_id)
    return fake


def per_call_us(samples: list[float], n: int) -> str:
    per = sorted(s / n * 1e6 for s in samples)
    return f"median {statistics.median(per):8.2f} µs   best {per[0]:8.2f} µs"


async def time_async(call: Callable[[], Awaitable[object]], n: int, repeats: int = 5) -> list[float]:
    for _ in range(min(n, 200)):  # warm-up
        await call()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            await call()
        out.append(time.perf_counter() - start)
    return out


def time_sync(call: Callable[[], object], n: int, repeats: int = 5) -> list[float]:
    for _ in range(min(n, 200)):
        call()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            call()
        out.append(time.perf_counter() - start)
    return out


async def async_figures(fake: FakeBillingOS, url: str) -> None:
    cache = EntitlementCache(ttl=3600)
    async with fake.client(entitlement_cache=cache) as billing:
        await billing.entitlements.check("user_42", "api_calls")
        before = len(fake.requests_to(CHECK))
        s = await time_async(lambda: billing.entitlements.check("user_42", "api_calls"), 100_000)
        assert len(fake.requests_to(CHECK)) == before, "a hit made a request"
        print(f"async  hit  (await entitlements.check)   {per_call_us(s, 100_000)}")
        s = await time_async(lambda: billing.check_entitlement("user_42", "api_calls"), 100_000)
        print(f"async  hit  (await check_entitlement)    {per_call_us(s, 100_000)}")
        s = time_sync(lambda: cache.get_fresh("user_42", "api_calls"), 200_000)
        print(f"       cache.get_fresh alone             {per_call_us(s, 200_000)}")
    async with fake.client() as billing:
        s = await time_async(lambda: billing.entitlements.check("user_42", "api_calls"), 1_000, 3)
        print(f"async  uncached, in-process transport    {per_call_us(s, 1_000)}")
    async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
        s = await time_async(lambda: billing.entitlements.check("user_42", "api_calls"), 1_000, 3)
        print(f"async  uncached, loopback (uvicorn)      {per_call_us(s, 1_000)}")
    cache = EntitlementCache(ttl=3600)
    async with AsyncBillingOS(fake.secret_key, api_url=url, entitlement_cache=cache) as billing:
        await billing.entitlements.check("user_42", "api_calls")
        s = await time_async(lambda: billing.entitlements.check("user_42", "api_calls"), 100_000)
        print(f"async  hit, loopback client              {per_call_us(s, 100_000)}")
        cache.clear()
        start = time.perf_counter()
        await asyncio.gather(*(billing.entitlements.check("user_42", "api_calls") for _ in range(1000)))
        took = time.perf_counter() - start
        print(
            f"async  1000 concurrent misses, loopback  {took * 1e3:8.2f} ms total ({took * 1e3:.2f} µs/check)"
        )


def sync_figures(fake: FakeBillingOS, url: str) -> None:
    cache = EntitlementCache(ttl=3600)
    with fake.sync_client(entitlement_cache=cache) as billing:
        billing.check_entitlement("user_42", "api_calls")
        before = len(fake.requests_to(CHECK))
        s = time_sync(lambda: billing.entitlements.check("user_42", "api_calls"), 100_000)
        assert len(fake.requests_to(CHECK)) == before, "a hit made a request"
        print(f"sync   hit  (entitlements.check)         {per_call_us(s, 100_000)}")
        s = time_sync(lambda: billing.check_entitlement("user_42", "api_calls"), 100_000)
        print(f"sync   hit  (check_entitlement)          {per_call_us(s, 100_000)}")
    with fake.sync_client() as billing:
        s = time_sync(lambda: billing.entitlements.check("user_42", "api_calls"), 1_000, 3)
        print(f"sync   uncached, in-process transport    {per_call_us(s, 1_000)}")
    with BillingOS(fake.secret_key, api_url=url) as billing:
        s = time_sync(lambda: billing.entitlements.check("user_42", "api_calls"), 1_000, 3)
        print(f"sync   uncached, loopback (uvicorn)      {per_call_us(s, 1_000)}")


def main() -> None:
    fake = seeded()
    with fake.serve() as url:
        asyncio.run(async_figures(fake, url))
        sync_figures(fake, url)


if __name__ == "__main__":
    main()
