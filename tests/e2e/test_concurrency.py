"""Many tracks at once, over real sockets: the server's count must equal the sum, faults or not."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx2
import pytest

from billingos import AsyncBillingOS, BillingOS, UsageRecord
from billingos.testing import FakeBillingOS, Fault

from ._helpers import Seeded, wait_for_requests

TRACK = "POST /v1/usage/track"
CALLS = 200


@pytest.fixture
def big_customer(fake: FakeBillingOS, seeded: Seeded) -> str:
    """A customer whose quota (one million) no test here reaches."""
    fake.add_customer("user_big")
    fake.subscribe("user_big", seeded.big.price_id)
    return "user_big"


async def test_200_concurrent_tracks_are_all_counted(
    client: AsyncBillingOS, fake: FakeBillingOS, big_customer: str, sleeps: list[float]
) -> None:
    records = await asyncio.gather(*(client.usage.track(big_customer, "api_calls", 1) for _ in range(CALLS)))

    assert fake.usage_of(big_customer, "api_calls") == CALLS
    keys = [r.idempotency_key for r in records]
    assert len(set(keys)) == CALLS
    received = fake.requests_to(TRACK)
    assert len(received) == CALLS
    assert {r.json["idempotency_key"] for r in received} == set(keys)
    assert len({r.request_id for r in received}) == CALLS
    assert sorted(r.usage.consumed_units for r in records if r.usage) == list(range(1, CALLS + 1))
    assert sleeps == []


async def test_200_concurrent_tracks_with_faults_are_counted_exactly_once(
    client: AsyncBillingOS, fake: FakeBillingOS, big_customer: str, sleeps: list[float]
) -> None:
    drops = fake.inject(TRACK, Fault.drop_response(), times=8, probability=0.08)
    unavailable = fake.inject(TRACK, Fault.error(503), times=8, probability=0.08)
    resets = fake.inject(TRACK, Fault.reset(), times=4, probability=0.04)

    records: list[UsageRecord] = await asyncio.gather(
        *(client.usage.track(big_customer, "api_calls", 1) for _ in range(CALLS))
    )

    faults = drops.hits + unavailable.hits + resets.hits
    assert drops.hits > 0
    assert unavailable.hits > 0
    assert fake.usage_of(big_customer, "api_calls") == CALLS  # not one more, not one less
    keys = {r.idempotency_key for r in records}
    assert len(keys) == CALLS
    received = fake.requests_to(TRACK)
    assert len(received) == CALLS + faults  # one retry per fault
    # Every fault cost one retry. Rarely one more: a pooled connection the server closed while
    # resetting another can be picked for a request that never reaches it; that retry is also safe.
    assert faults <= len(sleeps) <= faults + 2
    assert {r.json["idempotency_key"] for r in received} == keys
    per_key = Counter(r.json["idempotency_key"] for r in received)
    per_request_id = Counter(r.request_id for r in received)
    assert sorted(per_key.values()) == sorted(per_request_id.values())  # a retry reuses both
    assert Counter(r.status for r in received)[503] == unavailable.hits
    assert Counter(r.status for r in received)[201] == CALLS


async def test_concurrent_tracks_stop_exactly_at_the_quota(
    client: AsyncBillingOS, fake: FakeBillingOS, seeded: Seeded
) -> None:
    """120 concurrent tracks against a quota of 100: exactly 100 succeed and the server counts 100."""
    results = await asyncio.gather(
        *(client.usage.track(seeded.customer, "api_calls", 1) for _ in range(120)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, UsageRecord)]
    refused = [r for r in results if not isinstance(r, UsageRecord)]
    assert len(ok) == 100
    assert len(refused) == 20
    assert {type(e).__name__ for e in refused} == {"QuotaExceededError"}
    assert fake.usage_of(seeded.customer, "api_calls") == 100


def test_sync_facade_from_8_threads_sums_correctly(
    sync_client: BillingOS, fake: FakeBillingOS, big_customer: str, sleeps: list[float]
) -> None:
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)

    def work(n: int) -> list[str | None]:
        barrier.wait(timeout=10)
        return [
            sync_client.usage.track(big_customer, "api_calls", n + 1).idempotency_key
            for _ in range(per_thread)
        ]

    with ThreadPoolExecutor(threads) as pool:
        keys = [key for batch in pool.map(work, range(threads)) for key in batch]

    expected = per_thread * sum(range(1, threads + 1))  # 25 * 36 = 900
    assert fake.usage_of(big_customer, "api_calls") == expected
    assert len(set(keys)) == threads * per_thread
    assert len(fake.requests_to(TRACK)) == threads * per_thread
    assert sleeps == []


def test_sync_facade_from_8_threads_with_lost_responses(
    sync_client: BillingOS, fake: FakeBillingOS, big_customer: str, sleeps: list[float]
) -> None:
    drops = fake.inject(TRACK, Fault.drop_response(), times=6, probability=0.1)
    threads, per_thread = 8, 10

    def work(_: int) -> None:
        for _ in range(per_thread):
            sync_client.track_usage(big_customer, "api_calls", 2)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))

    assert drops.hits > 0
    assert fake.usage_of(big_customer, "api_calls") == 2 * threads * per_thread
    assert len(fake.requests_to(TRACK)) == threads * per_thread + drops.hits
    assert len(sleeps) == drops.hits


async def test_cancelled_calls_do_not_strand_pooled_connections(
    fake: FakeBillingOS, url: str, policy, big_customer: str
) -> None:
    """Callers cancelled mid-request (a web handler's client went away) leave the pool usable, and the
    server counts each track it received exactly once (how many of the four waiting for a connection got
    one before their cancellation arrived is a race: none to all)."""
    fake.inject(TRACK, Fault.delay(0.2), times=6)
    limits = httpx2.Limits(max_connections=2, max_keepalive_connections=2)
    async with AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy, limits=limits) as billing:
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(billing.usage.track, big_customer, "api_calls", 1)
            await wait_for_requests(fake, TRACK, 2)  # both connections are carrying a track
            group.cancel_scope.cancel()
        record = await billing.usage.track(big_customer, "api_calls", 1, timeout=2)
    received = len(fake.requests_to(TRACK))
    assert 3 <= received <= 7
    assert record.usage is not None
    # The server finishes a request whose client went away: each one it received is counted once.
    assert record.usage.consumed_units == received
    assert fake.usage_of(big_customer, "api_calls") == received


async def test_sync_facade_called_from_a_running_event_loop(
    sync_client: BillingOS, fake: FakeBillingOS, big_customer: str
) -> None:
    """The facade runs on its own loop thread, so blocking calls work even inside a coroutine (Jupyter)."""
    for _ in range(3):
        sync_client.track_usage(big_customer, "api_calls", 1)
    assert fake.usage_of(big_customer, "api_calls") == 3
