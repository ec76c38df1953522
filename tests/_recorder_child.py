"""A process that records usage into a SQLite outbox and waits to be killed (test_recorder_outbox.py).

    python tests/_recorder_child.py URL SECRET_KEY OUTBOX MODE

``MODE``:

- ``sealed``: records the first half of the events, waits until they are durable, starts a flush
  and waits until its first call is in flight; then records the second half (which stays unsealed:
  the window is an hour) and waits until that is durable too.
- ``unsealed``: records everything and waits until it is durable; nothing is sent.

Then it prints one line, ``READY <json: {"customer|feature": total}>``, and sleeps until killed. It
never retries within the test's lifetime (the backoff is a minute), so what the server saw is what
the kill interrupted.
"""

from __future__ import annotations

import json
import sys

import anyio

from billingos import AsyncBillingOS, RetryPolicy

CUSTOMERS = ("user_0", "user_1", "user_2")
FEATURES = ("api_calls", "exports")


def plan(half: int) -> list[tuple[str, str, float]]:
    """The events of one half: every (customer, feature), several events each, mixed quantities."""
    return [
        (customer, feature, (i % 3) + 1 + half)
        for customer in CUSTOMERS
        for feature in FEATURES
        for i in range(5 + half)
    ]


async def main(url: str, key: str, outbox: str, mode: str) -> None:
    totals: dict[str, float] = {}
    async with (
        AsyncBillingOS(key, api_url=url, timeout=30) as billing,
        billing.usage_recorder(
            outbox=outbox,
            flush_interval=3600,
            max_concurrency=2,
            retry_policy=RetryPolicy(initial_backoff=60, max_backoff=60),
        ) as recorder,
    ):

        def record(events: list[tuple[str, str, float]]) -> None:
            for customer, feature, quantity in events:
                recorder.record(customer, feature, quantity)
                totals[f"{customer}|{feature}"] = totals.get(f"{customer}|{feature}", 0) + quantity

        record(plan(0))
        await recorder.wait_durable()
        async with anyio.create_task_group() as tg:
            if mode == "sealed":
                tg.start_soon(recorder.flush)
                while recorder.stats.in_flight == 0:  # noqa: ASYNC110 (a counter: no event to await)
                    await anyio.sleep(0.001)
                record(plan(1))
                await recorder.wait_durable()
            print("READY", json.dumps(totals), flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    url, key, outbox, mode = sys.argv[1:5]
    anyio.run(main, url, key, outbox, mode)
