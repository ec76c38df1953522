"""Scenario 10: running at scale (issue 15): the rate budget's cost, and the requests of the 500-user workload.

The workload of the issue: 500 users x 3 gated features, each re-checked every 30 s through an
``EntitlementCache(ttl=30)``, against a server that allows 100 requests per route per minute. It runs on
the embedded server in-process, on its clock (no real minute passes): the figures are counts of what
the server received and answered, per simulated minute, never wall time.

    python -m bench --only scale --quick
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import httpx2

from billingos import EntitlementCache, RateBudget
from billingos._budget import MemoryBudgetStore
from billingos.testing import FakeBillingOS, RateLimits

from ._harness import Context, Goal, Row, per_call_async

USERS = 500
FEATURES = ("api_calls", "sso", "seats")
PERIOD = 30.0  # each (user, feature) is checked every 30 s
LIMIT = 100  # requests per route per minute (production)
CHECK = "GET /v1/usage/check"
GRANTS = "GET /v1/features/entitlements"
METRICS = "GET /v1/usage/metrics"
MINT = "POST /v1/session-tokens"
BATCH_WINDOW = 0.005  # seconds a miss waits for the other misses of its customer (real time)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


_RAW_HEADERS = [  # a BillingOS response's headers, as the default (httpx2) backend hands them over
    (b"content-type", b"application/json; charset=utf-8"),
    (b"content-length", b"187"),
    (b"date", b"Wed, 02 Dec 2026 15:00:00 GMT"),
    (b"x-request-id", b"req_4f1c2a"),
    (b"x-ratelimit-limit", b"1000000000"),
    (b"x-ratelimit-remaining", b"999999999"),
    (b"x-ratelimit-reset", b"60"),
    (b"connection", b"keep-alive"),
]


async def _budget_overhead(ctx: Context, *, httpx2_headers: bool = False) -> list[float]:
    """Seconds per call of what the budget adds to an attempt: ``acquire`` before, ``settle`` after.

    ``httpx2_headers``: the response headers are an ``httpx2.Headers`` (the default backend's), not a
    dict of the three headers alone."""
    budget = RateBudget(MemoryBudgetStore())
    headers: Mapping[str, str]
    if httpx2_headers:
        headers = httpx2.Headers(_RAW_HEADERS)
    else:
        headers = {
            "x-ratelimit-limit": "1000000000",
            "x-ratelimit-remaining": "999999999",
            "x-ratelimit-reset": "60",
        }
    await budget.acquire(CHECK, 10.0)
    await budget.settle(CHECK, headers)
    n = ctx.pick(200_000, 50_000, 500)

    async def one() -> None:  # what the request path does around each attempt (billingos/_http.py)
        if not budget.acquired_now(CHECK):
            await budget.acquire(CHECK, 10.0)
        if not budget.settled_now(CHECK, headers):
            await budget.settle(CHECK, headers)

    async def nothing() -> None:  # the loop and the coroutine around it, which the request path has not
        pass

    # Each sample: the loop of ``one`` minus the same loop of ``nothing``, measured side by side.
    return [await per_call_async(one, n) - await per_call_async(nothing, n) for _ in range(ctx.reps)]


async def _workload(minutes: int, *, budget: bool, batch: bool = False) -> dict[str, Any]:
    """The 500-user workload for ``minutes`` simulated minutes: requests and answers per minute.

    ``batch``: the cache batches the concurrent misses of one customer into one bulk fetch
    (``EntitlementCache(batch_window=...)``: ``/v1/features/entitlements`` + ``/v1/usage/metrics``).
    """
    clock = _Clock()
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=LIMIT, window=60), clock=clock, seed=1)
    fake.add_feature("api_calls", "usage_quota")
    fake.add_feature("sso", "boolean_flag")
    fake.add_feature("seats", "numeric_limit")
    plan = fake.add_product("Pro", features={"api_calls": 10_000, "sso": True, "seats": 5})
    for n in range(USERS):
        fake.add_customer(f"user_{n}", email=f"u{n}@example.com")
        fake.subscribe(f"user_{n}", plan.price_id)
    cache = EntitlementCache(
        ttl=30, stale_if_error=3600, clock=clock, batch_window=BATCH_WINDOW if batch else None
    )
    logging.getLogger("billingos").setLevel(logging.ERROR)  # thousands of stale answers, each logged
    answers: Counter[str] = Counter()
    options: dict[str, Any] = {"max_retries": 0}  # a retried 429 waits Retry-After: not in a handler
    if budget:
        options.update(rate_budget=RateBudget(clock=clock), rate_limit_wait=0)
    else:
        options.update(rate_budget=False)
    async with fake.client(entitlement_cache=cache, **options) as billing:

        async def check(user: int, feature: str) -> None:
            try:
                answer = await billing.entitlements.check(f"user_{user}", feature)
            except Exception:
                answers["unanswered"] += 1
            else:
                answers["stale" if answer.stale else "fresh"] += 1

        for _ in range(int(minutes * 60 / PERIOD)):
            await asyncio.gather(*(check(u, f) for u in range(USERS) for f in FEATURES))
            clock.now += PERIOD
    statuses = Counter(r.status for r in fake.requests_to(CHECK))
    return {
        "requests_per_minute": sum(statuses.values()) / minutes,
        "answered_429_per_minute": sum(r.status == 429 for r in fake.requests) / minutes,
        "bulk_requests_per_minute": sum(len(fake.requests_to(r)) for r in (GRANTS, METRICS)) / minutes,
        "mints_per_minute": len(fake.requests_to(MINT)) / minutes,
        "answers": dict(answers),
    }


def _budget_row(samples: list[float]) -> Row:
    return Row.measured(
        "rate budget overhead per call (acquire + settle, in-memory store)",
        [s * 1e6 for s in samples],
        "µs",
        Goal("<", 2),
        note="the loop of acquire + settle minus an empty loop of the same awaits, side by side",
    )


def run(ctx: Context) -> list[Row]:
    """10. Running at scale: the rate budget's cost per call (goal < 2 µs: acquire + settle on the
    in-memory store), and the upstream check requests per simulated minute of the issue's workload
    (500 users x 3 features re-checked every 30 s, cache ttl 30 s, server limit 100/route/min) without
    the budget (the SDK before issue 15) and with it (goal: at most the limit, and no 429)."""
    samples = asyncio.run(_budget_overhead(ctx))
    samples_httpx2 = asyncio.run(_budget_overhead(ctx, httpx2_headers=True))
    minutes = ctx.pick(4, 2, 1)
    before = asyncio.run(_workload(minutes, budget=False))
    after = asyncio.run(_workload(minutes, budget=True))
    batched = asyncio.run(_workload(minutes, budget=True, batch=True))

    def note(figures: dict[str, Any]) -> str:
        a = figures["answers"]
        return (
            f"{figures['answered_429_per_minute']:.0f}/min answered 429; answers over {minutes} min: "
            f"fresh {a.get('fresh', 0)}, stale {a.get('stale', 0)}, none {a.get('unanswered', 0)}"
        )

    return [
        _budget_row(samples),
        Row.measured(
            "rate budget overhead per call, reading httpx2 response headers (the default backend)",
            [s * 1e6 for s in samples_httpx2],
            "µs",
            None,
        ),
        Row.measured(
            "500-user workload, check requests per minute: without the budget",
            [before["requests_per_minute"]],
            "req/min",
            None,
            note=note(before),
        ),
        Row.measured(
            "500-user workload, check requests per minute: with the budget",
            [after["requests_per_minute"]],
            "req/min",
            Goal("<=", LIMIT),
            note=note(after),
        ),
        Row.measured(
            "500-user workload, answered 429 per minute: with the budget",
            [after["answered_429_per_minute"]],
            "req/min",
            Goal("==", 0),
        ),
        Row.measured(
            "500-user workload, check requests per minute: with the budget and batching",
            [batched["requests_per_minute"]],
            "req/min",
            Goal("<=", LIMIT),
            note=note(batched),
        ),
        Row.measured(
            "500-user workload, entitlements + metrics requests per minute: with batching",
            [batched["bulk_requests_per_minute"]],
            "req/min",
            Goal("<=", 2 * LIMIT),
            note=f"{batched['mints_per_minute']:.0f}/min session tokens minted (one per customer, cached)",
        ),
        Row.measured(
            "500-user workload, answered 429 per minute (all routes): with the budget and batching",
            [batched["answered_429_per_minute"]],
            "req/min",
            Goal("==", 0),
        ),
    ]
