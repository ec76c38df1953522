"""Recorder figures: record() cost (in memory, with an outbox), drain time of 10 000 events, track calls.

Run: .venv/bin/python bench/recorder.py
"""

import os
import statistics
import tempfile
import threading
import time

import anyio

from billingos import RetryPolicy
from billingos.testing import FakeBillingOS

TRACK = "POST /v1/usage/track"
N = 200_000


def seed(fake, customers):
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Pro", features={"api_calls": 10**12})
    for i in range(customers):
        fake.add_customer(f"user_{i}")
        fake.subscribe(f"user_{i}", plan.price_id)


def per_call_us(rec, n, customers):
    ids = [f"user_{i % customers}" for i in range(n)]
    record = rec.record
    t = time.perf_counter()
    for c in ids:
        record(c, "api_calls")
    return (time.perf_counter() - t) / n * 1e6


async def bench_record(outbox):
    results = []
    for _ in range(5):
        fake = FakeBillingOS(rate_limits=None)
        seed(fake, 50)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "usage.db") if outbox else None
            async with fake.client() as billing:
                async with billing.usage_recorder(outbox=path, flush_interval=3600, max_pending=10**7) as rec:
                    results.append(per_call_us(rec, N, 50))
                    await rec.flush()
    return results


async def bench_durable_latency():
    fake = FakeBillingOS(rate_limits=None)
    seed(fake, 1)
    lat = []
    with tempfile.TemporaryDirectory() as d:
        async with fake.client() as billing:
            async with billing.usage_recorder(outbox=os.path.join(d, "u.db"), flush_interval=3600) as rec:
                for _ in range(200):
                    t = time.perf_counter()
                    rec.record("user_0", "api_calls")
                    rec._wait_durable_blocking(5)  # blocking on purpose: the writer thread does the work
                    lat.append((time.perf_counter() - t) * 1e3)
                await rec.flush()
    return lat


async def bench_drain(outbox, customers, features, loopback=True):
    fake = FakeBillingOS(rate_limits=None)
    fake.add_feature("f0", "usage_quota")
    for j in range(1, features):
        fake.add_feature(f"f{j}", "usage_quota")
    plan = fake.add_product("Pro", features={f"f{j}": 10**12 for j in range(features)})
    for i in range(customers):
        fake.add_customer(f"user_{i}")
        fake.subscribe(f"user_{i}", plan.price_id)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "usage.db") if outbox else None
        import contextlib

        from billingos import AsyncBillingOS

        with fake.serve() if loopback else contextlib.nullcontext() as url:
            async with AsyncBillingOS(fake.secret_key, api_url=url) if loopback else fake.client() as billing:
                async with billing.usage_recorder(outbox=path, flush_interval=0.05) as rec:
                    t = time.perf_counter()
                    for k in range(10_000):
                        rec.record(f"user_{k % customers}", f"f{(k // customers) % features}")
                    await rec.flush()
                    elapsed = time.perf_counter() - t
        calls = len(fake.requests_to(TRACK))
        total = sum(fake.usage_of(f"user_{i}", f"f{j}") for i in range(customers) for j in range(features))
    assert total == 10_000, total
    return elapsed, calls


async def bench_threads():
    fake = FakeBillingOS(rate_limits=None)
    seed(fake, 50)
    async with fake.client() as billing:
        async with billing.usage_recorder(flush_interval=3600, max_pending=10**7) as rec:
            out = []

            def worker():
                out.append(per_call_us(rec, 50_000, 50))

            ts = [threading.Thread(target=worker) for _ in range(4)]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            wall = time.perf_counter() - t
            await rec.flush()
    return out, wall


async def bench_faults():
    import random

    from billingos.testing import Fault

    fake = FakeBillingOS(rate_limits=None, seed=1)
    seed(fake, 10)
    fake.add_feature("exports", "usage_quota")
    fake.inject(TRACK, Fault.drop_response(), times=None, probability=0.15)
    fake.inject(TRACK, Fault.error(503), times=None, probability=0.15)
    fake.inject(TRACK, Fault.error(429, retry_after=0.01), times=None, probability=0.15)
    rng = random.Random(1)
    async with (
        fake.client() as billing,
        billing.usage_recorder(
            flush_interval=0.05, retry_policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.1)
        ) as rec,
    ):
        t = time.perf_counter()

        async def task():
            for i in range(200):
                rec.record(f"user_{rng.randrange(10)}", "api_calls")
                if i % 20 == 19:
                    await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(task)
        await rec.flush()
        elapsed = time.perf_counter() - t
        stats = rec.stats
    total = sum(fake.usage_of(f"user_{i}", "api_calls") for i in range(10))
    return elapsed, len(fake.requests_to(TRACK)), stats, total


async def main():
    mem = await bench_record(False)
    box = await bench_record(True)
    print(
        f"record() in memory : median {statistics.median(mem):.2f} µs/call (runs: {', '.join(f'{x:.2f}' for x in mem)})"
    )
    print(
        f"record() w/ outbox : median {statistics.median(box):.2f} µs/call (runs: {', '.join(f'{x:.2f}' for x in box)})"
    )
    th, wall = await bench_threads()
    print(
        f"record() 4 threads x 50k, in memory: per-thread {', '.join(f'{x:.2f}' for x in th)} µs/call; {200_000 / wall:,.0f} calls/s total"
    )
    lat = sorted(await bench_durable_latency())
    print(
        f"record() -> durable in the outbox (idle writer): median {statistics.median(lat):.2f} ms, p95 {lat[int(len(lat) * 0.95)]:.2f} ms"
    )
    elapsed, calls, stats, total = await bench_faults()
    print(
        f"10 000 events from 50 tasks, ~39% of track attempts faulted (drop 15%, 503 15%, 429 15%, in turn), in-process: {elapsed * 1000:.0f} ms, "
        f"{calls} track requests ({stats.sent_calls} calls + {stats.retried} retries), server total {total:.0f}"
    )
    for loopback in (True, False):
        for outbox in (False, True):
            for customers, features in ((10, 2), (200, 5)):
                elapsed, calls = await bench_drain(outbox, customers, features, loopback)
                print(
                    f"drain 10 000 events, {customers} customers x {features} features, "
                    f"outbox={'sqlite' if outbox else 'memory'}, {'loopback' if loopback else 'in-process'}: "
                    f"{elapsed * 1000:.0f} ms, {calls} track calls"
                )


anyio.run(main)
