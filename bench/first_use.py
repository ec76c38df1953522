"""Scenario 9: the longest stall of a running event loop while a fresh client makes its first calls.

    python -m bench --only first-use

Each case runs in a fresh interpreter (nothing imported or cached), against the embedded server in a
process of its own: inside ``asyncio.run``, a ticker task notes the largest gap between its 1 ms sleeps
while the client is created and makes its first two calls. Building the SDK's own pool costs tens of
milliseconds once (the verifying TLS context, importing httpcore2's network backend or aiohttp); that
work must happen in a worker thread, never on the loop (issue 11, item 7: no SDK call stalls the loop for
more than 20 ms). ``tests/test_first_use.py`` asserts where the work happens; this measures the stall.
"""

from __future__ import annotations

from ._harness import Context, Goal, Row, loopback_server, run_child

STALL_GOAL = Goal("<=", 20.0)

_CHILD = """
import asyncio, json, sys, time

backend, url, key = sys.argv[1:4]

async def main():
    worst = 0.0
    stop = False

    async def ticker():
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # the ticker runs
    worst = 0.0
    from billingos import AsyncBillingOS  # the import itself is the application's, before its loop

    async with AsyncBillingOS(key, api_url=url, http_backend=backend) as billing:
        await billing.check_entitlement("user_1", "api_calls")
        await billing.check_entitlement("user_1", "api_calls")
    stop = True
    await tick
    return worst

import billingos  # imported before the loop starts, as an application does at its top
print(json.dumps(asyncio.run(main()) * 1000))
"""


def run(ctx: Context) -> list[Row]:
    """The largest loop stall (ms) while a client created inside a running loop makes its first two calls,
    per backend, median of a few fresh interpreters."""
    reps = ctx.pick(full=5, quick=3, smoke=1)
    rows = []
    with loopback_server(customers=2) as server:
        for backend in ("httpx2", "aiohttp"):
            stalls = [
                float(run_child(["-c", _CHILD, backend, server.url, server.secret_key])) for _ in range(reps)
            ]
            rows.append(
                Row.measured(
                    f"loop stall during a fresh client's first calls, http_backend={backend!r}",
                    stalls,
                    unit="ms",
                    goal=STALL_GOAL,
                    note=f"largest gap between 1 ms ticks; median of {reps} fresh interpreters",
                )
            )
    return rows
