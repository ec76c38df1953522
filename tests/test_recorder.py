"""The usage recorder against the embedded server, in memory (the SQLite outbox: test_recorder_outbox.py).

Nothing here sleeps and hopes: tests wait for ``flush()``, for a fault rule's ``hits``, or for a state
they can observe. Backoff is milliseconds (``FAST``); only the ``Retry-After`` test waits for real.
"""

from __future__ import annotations

import inspect
import math
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    BillingOSError,
    DeadLetter,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    RecorderFullError,
    RecorderStats,
    ServerError,
    SyncUsageRecorder,
    UsageRecorder,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault, RateLimits

from ._recorder_support import (
    BIG,
    CUSTOMERS,
    FAST,
    SMALL,
    TRACK,
    keys_sent,
    recorder,
    recorder_fixtures,
    seed,
    until,
)

SEED = 20260401

fake, billing, path = recorder_fixtures(SEED)


# -- record() ------------------------------------------------------------------------------------


async def test_record_is_a_plain_method_that_returns_before_any_request(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    assert not inspect.iscoroutinefunction(UsageRecorder.record)
    async with recorder(billing, flush_interval=3600) as r:
        assert r.record("user_0", "api_calls") is True
        assert r.record("user_0", "api_calls", 2.5) is True
        assert fake.requests_to(TRACK) == []  # nothing sent: the window is an hour
        assert r.stats.pending == 2
        await r.flush()
    assert fake.usage_of("user_0", "api_calls") == 3.5


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", "api_calls", 1), "customer_id"),
        (("   ", "api_calls", 1), "customer_id"),
        ((None, "api_calls", 1), "customer_id"),
        ((42, "api_calls", 1), "customer_id"),
        (("user_0", "", 1), "feature_key"),
        (("user_0", b"api_calls", 1), "feature_key"),
        (("user_0", "api_calls", 0), "quantity"),
        (("user_0", "api_calls", -1), "quantity"),
        (("user_0", "api_calls", math.nan), "quantity"),
        (("user_0", "api_calls", math.inf), "quantity"),
        (("user_0", "api_calls", True), "quantity"),
        (("user_0", "api_calls", "1"), "quantity"),
    ],
)
async def test_record_refuses_invalid_arguments(
    billing: AsyncBillingOS, fake: FakeBillingOS, args: tuple[Any, ...], field: str
) -> None:
    async with recorder(billing) as r:
        with pytest.raises(ValidationError, match=field) as caught:
            r.record(*args)
        assert caught.value.status_code is None
        assert r.stats.recorded == 0
    assert fake.requests_to(TRACK) == []


async def test_record_before_open_and_after_close_is_refused(billing: AsyncBillingOS) -> None:
    r = recorder(billing)
    with pytest.raises(BillingOSError) as before:
        r.record("user_0", "api_calls")
    assert before.value.code == "recorder_not_open"
    async with r:
        pass
    with pytest.raises(BillingOSError) as after:
        r.record("user_0", "api_calls")
    assert after.value.code == "recorder_closed"
    with pytest.raises(BillingOSError, match="once"):
        await r.__aenter__()


async def test_options_are_validated_when_the_recorder_is_made(billing: AsyncBillingOS) -> None:
    bad: list[dict[str, Any]] = [
        {"flush_interval": 0},
        {"max_concurrency": 0},
        {"max_pending": -1},
        {"on_full": "block"},
        {"retry_deadline": 25 * 3600},
        {"retry_policy": "fast"},
        {"outbox": 42},
        {"outbox": ":memory:"},
        {"on_dead_letter": "print"},
        {"flush_every": 1},
    ]
    for options in bad:
        with pytest.raises(ValidationError):
            billing.usage_recorder(**options)


# -- coalescing ----------------------------------------------------------------------------------


async def test_events_of_one_window_are_coalesced_into_one_call_per_customer_and_feature(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    async with recorder(billing, flush_interval=3600) as r:
        for _ in range(100):
            r.record("user_0", "api_calls", 2)
        for _ in range(50):
            r.record("user_0", "exports")
        r.record("user_1", "api_calls", 0.5)
        await r.flush()
        stats = r.stats

    bodies = sorted(
        (q.json["customer_id"], q.json["feature_key"], q.json["quantity"]) for q in fake.requests_to(TRACK)
    )
    assert bodies == [("user_0", "api_calls", 200), ("user_0", "exports", 50), ("user_1", "api_calls", 0.5)]
    assert stats == RecorderStats(recorded=151, coalesced=148, sent_calls=3, confirmed=151)
    assert fake.usage_of("user_0", "api_calls") == 200


async def test_each_window_is_its_own_call(billing: AsyncBillingOS, fake: FakeBillingOS) -> None:
    async with recorder(billing, flush_interval=3600) as r:
        r.record("user_0", "api_calls", 3)
        await r.flush()
        r.record("user_0", "api_calls", 4)
        await r.flush()
    assert [q.json["quantity"] for q in fake.requests_to(TRACK)] == [3, 4]
    assert len(set(keys_sent(fake))) == 2


async def test_the_background_window_sends_without_flush(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    async with recorder(billing, flush_interval=0.01) as r:
        r.record("user_0", "api_calls", 5)
        await until(lambda: r.stats.confirmed == 1)
    assert fake.usage_of("user_0", "api_calls") == 5


# -- exactly once under faults ---------------------------------------------------------------------


async def test_ten_thousand_events_from_50_tasks_under_faults_are_counted_exactly_once(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.drop_response(), times=None, probability=0.15)  # counted, answer lost
    fake.inject(TRACK, Fault.error(503), times=None, probability=0.15)
    fake.inject(TRACK, Fault.error(429, retry_after=0.01), times=None, probability=0.15)
    features = ("api_calls", "exports")
    expected: dict[tuple[str, str], float] = {}
    rng = random.Random(SEED)
    plan = [
        [(rng.choice(CUSTOMERS), rng.choice(features), rng.choice((1, 2, 3, 0.5))) for _ in range(200)]
        for _ in range(50)
    ]
    for events in plan:
        for customer, feature, quantity in events:
            expected[(customer, feature)] = expected.get((customer, feature), 0) + quantity

    async with recorder(billing, flush_interval=0.005, max_concurrency=8) as r:

        async def task(events: list[tuple[str, str, float]]) -> None:
            for i, (customer, feature, quantity) in enumerate(events):
                r.record(customer, feature, quantity)
                if i % 20 == 19:
                    await anyio.sleep(0.001)  # spread the events over several windows

        async with anyio.create_task_group() as tg:
            for events in plan:
                tg.start_soon(task, events)
        await r.flush()
        stats = r.stats

    for (customer, feature), total in expected.items():
        assert fake.usage_of(customer, feature) == pytest.approx(total, abs=1e-9)
    requests = fake.requests_to(TRACK)
    assert stats.recorded == stats.confirmed == 10_000
    assert stats.pending == stats.dead == 0
    assert len(requests) < 500, len(requests)  # < 5 % of the events, retries included
    assert stats.retried > 0
    assert {r.status for r in requests} >= {201, 503, 429, None}
    # Every key that reached the server belongs to a call the recorder saw confirmed: no call was
    # abandoned and re-sent under a new key.
    assert len(set(keys_sent(fake))) == stats.sent_calls
    first_quantity: dict[str, float] = {}
    for request in requests:  # and a key always carries the same quantity
        key, quantity = request.json["idempotency_key"], request.json["quantity"]
        assert first_quantity.setdefault(key, quantity) == quantity


async def test_a_retried_call_keeps_its_key_and_quantity_while_new_events_get_a_new_call(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    gate = fake.inject(TRACK, Fault.error(503), times=3)
    async with recorder(billing, flush_interval=3600, retry_policy=FAST) as r:
        r.record("user_0", "api_calls", 5)
        flushing = anyio.Event()

        async def first_flush() -> None:
            await r.flush()
            flushing.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_flush)
            await until(lambda: gate.hits >= 1)
            r.record("user_0", "api_calls", 7)  # arrives while the first call is being retried
            await flushing.wait()
        await r.flush()
        assert r.stats.retried == 3

    bodies = [(q.json["idempotency_key"], q.json["quantity"], q.status) for q in fake.requests_to(TRACK)]
    first_key = bodies[0][0]
    assert [b for b in bodies if b[0] == first_key] == [
        (first_key, 5, 503),
        (first_key, 5, 503),
        (first_key, 5, 503),
        (first_key, 5, 201),
    ]
    assert [b[1:] for b in bodies if b[0] != first_key] == [(7, 201)]
    assert fake.usage_of("user_0", "api_calls") == 12


async def test_retry_after_is_honoured(billing: AsyncBillingOS, fake: FakeBillingOS) -> None:
    fake.inject(TRACK, Fault.error(429, retry_after=0.3), times=1)
    async with recorder(billing, retry_policy=FAST) as r:
        r.record("user_0", "api_calls")
        started = time.monotonic()
        await r.flush()
        waited = time.monotonic() - started
    assert waited >= 0.3  # the backoff alone would have been a few ms
    assert [q.status for q in fake.requests_to(TRACK)] == [429, 201]
    assert fake.usage_of("user_0", "api_calls") == 1


async def test_a_throttled_customer_waits_without_holding_back_the_others() -> None:
    now = [time.time()]  # the server's clock stands still: its rate window only moves when we say
    fake = FakeBillingOS(
        rate_limits=RateLimits(per_route=1000, track_per_customer=2, window=1),
        clock=lambda: now[0],
        seed=SEED,
    )
    seed(fake)
    async with fake.client() as billing, recorder(billing, flush_interval=3600, max_concurrency=1) as r:
        for feature in ("api_calls", "exports", "small"):
            r.record("user_0", feature)  # 3 calls for user_0 in one window: the third is over the limit
        r.record("user_1", "api_calls")
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.flush)
            await until(lambda: fake.usage_of("user_1", "api_calls") == 1)
            now[0] += 2  # the window resets; the throttled call is retried after Retry-After (1 s)
        assert r.stats.confirmed == 4
    requests = [(q.json["customer_id"], q.json["feature_key"], q.status) for q in fake.requests_to(TRACK)]
    assert [status for *_, status in requests] == [201, 201, 429, 201, 201]
    assert requests[2][0] == "user_0"
    assert requests[3] == ("user_1", "api_calls", 201)  # went ahead while user_0 waited
    assert requests[4] == (*requests[2][:2], 201)  # the same call, after Retry-After
    assert len(set(keys_sent(fake))) == 4


# -- backpressure ----------------------------------------------------------------------------------


async def test_a_full_recorder_raises_and_recovers_once_drained(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    async with recorder(billing, flush_interval=3600, max_pending=10) as r:
        for _ in range(10):
            r.record("user_0", "api_calls")
        with pytest.raises(RecorderFullError) as caught:
            r.record("user_0", "api_calls")
        assert isinstance(caught.value, BillingOSError)
        assert caught.value.code == "recorder_full"
        assert "max_pending=10" in str(caught.value)
        assert r.stats.pending == 10
        await r.flush()
        assert r.record("user_0", "api_calls") is True
    assert fake.usage_of("user_0", "api_calls") == 11


async def test_a_full_recorder_in_drop_mode_drops_and_counts(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    async with recorder(billing, flush_interval=3600, max_pending=10, on_full="drop") as r:
        accepted = [r.record("user_0", "api_calls") for _ in range(25)]
        await r.flush()
        stats = r.stats
    assert accepted == [True] * 10 + [False] * 15
    assert (stats.recorded, stats.dropped, stats.confirmed) == (10, 15, 10)
    assert fake.usage_of("user_0", "api_calls") == 10


async def test_memory_stays_bounded_while_billingos_is_down(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    async with recorder(billing, max_pending=1000, on_full="drop", close_timeout=0.01) as r:
        for i in range(20_000):
            r.record(CUSTOMERS[i % 10], "api_calls")
        await until(lambda: r.stats.retried > 0)
        assert r.stats.pending == 1000
        assert r.stats.dropped == 19_000


# -- dead letters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer", "feature", "quantity", "error", "message"),
    [
        ("user_0", "small", SMALL + 1, QuotaExceededError, "quota_exceeded"),
        ("user_nobody", "api_calls", 1, NotFoundError, "Customer not found"),
        ("user_free", "api_calls", 1, NotFoundError, "No active subscription with this feature"),
        ("user_0", "unsold", 1, NotFoundError, "No active subscription with this feature"),
        ("user_0", "sso", 1, ValidationError, "Feature is not a usage quota type"),
    ],
)
async def test_a_permanent_error_dead_letters_the_call_at_once(
    billing: AsyncBillingOS,
    fake: FakeBillingOS,
    customer: str,
    feature: str,
    quantity: int,
    error: type[BillingOSError],
    message: str,
) -> None:
    delivered: list[DeadLetter] = []
    async with recorder(billing, on_dead_letter=delivered.append) as r:
        for _ in range(quantity):
            r.record(customer, feature)
        r.record("user_1", "api_calls")  # an unrelated call is not affected
        await r.flush()
        letters = r.dead_letters
        stats = r.stats

    (letter,) = letters
    assert delivered == [letter]
    assert type(letter.error) is error
    assert letter.error.message == message
    assert (letter.customer_id, letter.feature_key, letter.quantity, letter.events) == (
        customer,
        feature,
        quantity,
        quantity,
    )
    assert letter.attempts == 1  # not retried
    assert letter.possibly_counted is False
    assert letter.idempotency_key in keys_sent(fake)
    assert (stats.dead, stats.confirmed, stats.pending) == (quantity, 1, 0)
    assert fake.usage_of("user_1", "api_calls") == 1


async def test_a_bad_secret_key_dead_letters_with_authentication_error(fake: FakeBillingOS) -> None:
    async with (
        fake.async_http_client() as http,
        AsyncBillingOS("sk_test_wrong", api_url="http://billingos.fake", http_client=http) as billing,
        recorder(billing) as r,
    ):
        r.record("user_0", "api_calls")
        await r.flush()
        (letter,) = r.dead_letters
    assert isinstance(letter.error, AuthenticationError)
    assert letter.attempts == 1


async def test_transient_errors_are_retried_until_the_deadline_then_dead_lettered(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    async with recorder(billing, retry_deadline=0.1) as r:
        r.record("user_0", "api_calls", 3)
        started = time.monotonic()
        await r.flush()
        elapsed = time.monotonic() - started
        (letter,) = r.dead_letters
    assert isinstance(letter.error, ServerError)
    assert letter.error.status_code == 503
    assert letter.attempts > 2
    assert letter.possibly_counted is True  # a 5xx may come after the work was done
    assert elapsed >= 0.1
    assert set(keys_sent(fake)) == {letter.idempotency_key}  # one key for every attempt
    assert fake.usage_of("user_0", "api_calls") == 0


async def test_a_rate_limited_call_past_its_deadline_is_dead_lettered(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(429, retry_after=0.02), times=None)
    async with recorder(billing, retry_deadline=0.1) as r:
        r.record("user_0", "api_calls")
        await r.flush()
        (letter,) = r.dead_letters
    assert isinstance(letter.error, RateLimitError)
    assert letter.possibly_counted is False  # a 429 was never executed


async def test_a_dead_letter_after_lost_responses_can_be_replayed_without_counting_twice(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.drop_response(), times=None)
    async with recorder(billing, retry_deadline=0.05) as r:
        r.record("user_0", "api_calls", 4)
        await r.flush()
        (letter,) = r.dead_letters
    assert letter.possibly_counted is True
    assert fake.usage_of("user_0", "api_calls") == 4  # the server did count it, once

    fake.clear_faults()
    await billing.usage.track(
        letter.customer_id, letter.feature_key, letter.quantity, idempotency_key=letter.idempotency_key
    )
    assert fake.usage_of("user_0", "api_calls") == 4  # the documented replay is safe


async def test_a_failing_dead_letter_callback_does_not_lose_the_letter(
    billing: AsyncBillingOS, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(letter: DeadLetter) -> None:
        raise RuntimeError("callback bug")

    async with recorder(billing, on_dead_letter=explode) as r:
        r.record("user_nobody", "api_calls")
        await r.flush()
        (letter,) = r.dead_letters
        assert letter.customer_id == "user_nobody"
        assert r.clear_dead_letters() == 1
        assert r.dead_letters == ()
    assert "on_dead_letter raised" in caplog.text


# -- flush and close -----------------------------------------------------------------------------


async def test_flush_returns_only_once_the_server_has_counted(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    slow = fake.inject(TRACK, Fault.delay(0.05), times=None)
    async with recorder(billing, flush_interval=3600) as r:
        await r.flush()  # nothing recorded: returns at once
        assert slow.hits == 0
        for customer in CUSTOMERS:
            r.record(customer, "api_calls", 2)
        await r.flush()
        assert [fake.usage_of(c, "api_calls") for c in CUSTOMERS] == [2] * 10
        assert r.stats.pending == 0


async def test_flush_does_not_wait_for_events_recorded_after_it_started(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    slow = fake.inject(TRACK, Fault.delay(0.05), times=1)
    async with recorder(billing, flush_interval=3600) as r:
        r.record("user_0", "api_calls")
        done = anyio.Event()

        async def flush() -> None:
            await r.flush()
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(flush)
            await until(lambda: slow.hits == 1)  # the first window is sealed and on the wire
            r.record("user_1", "api_calls")
            await done.wait()
            assert r.stats.pending == 1  # the later event is still waiting for its window
        await r.flush()
    assert fake.usage_of("user_1", "api_calls") == 1


async def test_flush_timeout_leaves_events_pending_and_a_later_flush_sends_them_once(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    async with recorder(billing) as r:
        r.record("user_0", "api_calls", 6)
        with pytest.raises(TimeoutError):
            await r.flush(timeout=0.05)
        assert r.stats.pending == 1
        fake.clear_faults()
        await r.flush()
    assert fake.usage_of("user_0", "api_calls") == 6
    assert len(set(keys_sent(fake))) == 1


async def test_leaving_the_block_sends_what_is_pending(billing: AsyncBillingOS, fake: FakeBillingOS) -> None:
    async with recorder(billing, flush_interval=3600) as r:
        r.record("user_0", "api_calls", 9)
    assert fake.usage_of("user_0", "api_calls") == 9
    assert r.stats.pending == 0


async def test_close_with_a_timeout_reports_what_is_left_as_dead_letters_without_an_outbox(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    delivered: list[DeadLetter] = []
    async with recorder(billing, on_dead_letter=delivered.append) as r:
        r.record("user_0", "api_calls", 2)
        r.record("user_1", "api_calls", 3)
        await until(lambda: r.stats.retried >= 2)
        started = time.monotonic()
        stats = await r.aclose(timeout=0.05)
        assert time.monotonic() - started < 1
    assert stats.pending == 0
    assert stats.dead == 2
    assert {(d.customer_id, d.quantity) for d in delivered} == {("user_0", 2), ("user_1", 3)}
    assert {d.error.code for d in delivered} == {"recorder_closed"}
    assert all(isinstance(d.error.__cause__, ServerError) and d.possibly_counted for d in delivered)
    assert await r.aclose() == stats  # idempotent


async def test_a_cancelled_block_closes_the_recorder_at_once(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    started = time.monotonic()
    with anyio.move_on_after(0.05) as scope:
        async with recorder(billing, close_timeout=30) as r:
            r.record("user_0", "api_calls")
            await anyio.sleep(30)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 5  # close_timeout was not waited for
    (letter,) = r.dead_letters
    assert letter.error.code == "recorder_closed"


async def test_a_closed_client_stops_the_recorder_without_dead_lettering(fake: FakeBillingOS) -> None:
    billing = fake.client()
    async with recorder(billing, flush_interval=3600, close_timeout=0.05) as r:
        await billing.aclose()
        r.record("user_0", "api_calls")
        with pytest.raises(BillingOSError) as caught:
            await r.flush()
        assert caught.value.code == "client_closed"
    assert r.dead_letters[0].error.code == "recorder_closed"  # memory only: handed over at close


# -- threads and the sync facade -------------------------------------------------------------------


async def test_record_from_other_threads(billing: AsyncBillingOS, fake: FakeBillingOS) -> None:
    async with recorder(billing) as r:

        def worker(customer: str) -> None:
            for _ in range(2000):
                r.record(customer, "api_calls")

        threads = [threading.Thread(target=worker, args=(c,)) for c in CUSTOMERS[:8]]
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)
        await r.flush()
    assert [fake.usage_of(c, "api_calls") for c in CUSTOMERS[:8]] == [2000] * 8
    assert r.stats.recorded == 16_000


@pytest.fixture
def sync_billing(fake: FakeBillingOS) -> Iterator[Any]:
    with fake.sync_client() as client:
        yield client


def test_the_sync_recorder_on_the_blocking_facade(sync_billing: Any, fake: FakeBillingOS) -> None:
    fake.inject(TRACK, Fault.error(503), times=2)
    with sync_billing.usage_recorder(flush_interval=0.01, retry_policy=FAST) as r:
        assert isinstance(r, SyncUsageRecorder)

        def worker(customer: str) -> None:
            for _ in range(500):
                r.record(customer, "api_calls")

        threads = [threading.Thread(target=worker, args=(c,)) for c in CUSTOMERS[:4]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        r.record("user_nobody", "api_calls")
        r.flush(timeout=5)
        assert r.stats.confirmed == 2000
        (letter,) = r.dead_letters
        assert isinstance(letter.error, NotFoundError)
        assert r.clear_dead_letters() == 1
        r.record("user_0", "api_calls")
    assert r.stats.pending == 0
    assert fake.usage_of("user_0", "api_calls") == 501
    assert [fake.usage_of(c, "api_calls") for c in CUSTOMERS[1:4]] == [500] * 3
    assert r.close() == r.stats  # idempotent
    with pytest.raises(BillingOSError):
        r.record("user_0", "api_calls")


def test_the_sync_recorder_close_reports_and_refuses_bad_options(
    sync_billing: Any, fake: FakeBillingOS
) -> None:
    with pytest.raises(ValidationError):
        sync_billing.usage_recorder(max_pending=0)
    fake.inject(TRACK, Fault.error(503), times=None)
    r = sync_billing.usage_recorder(retry_policy=FAST)
    with pytest.raises(BillingOSError, match="not open"):
        r.record("user_0", "api_calls")
    with r:
        r.record("user_0", "api_calls")
        with pytest.raises(TimeoutError):
            r.flush(timeout=0.05)
        stats = r.close(timeout=0.05)
    assert stats.dead == 1
    assert r.dead_letters[0].error.code == "recorder_closed"


def test_closing_the_facade_first_closes_its_sync_recorder_without_hanging(fake: FakeBillingOS) -> None:
    billing = fake.sync_client()
    r = billing.usage_recorder(flush_interval=3600).__enter__()  # never closed by the application
    r.record("user_0", "api_calls", 2)
    closer = threading.Thread(target=billing.close)
    closer.start()
    closer.join(5)
    assert not closer.is_alive()
    (letter,) = r.dead_letters  # not lost silently: handed over as it would be by close(timeout=0)
    assert (letter.error.code, letter.quantity) == ("recorder_closed", 2)
    assert r.close() == r.stats


def test_the_recorder_runs_on_trio_too(fake: FakeBillingOS) -> None:
    async def main() -> RecorderStats:
        async with fake.client() as billing, recorder(billing) as r:
            for customer in CUSTOMERS:
                r.record(customer, "exports", 2)
            await r.flush()
            return r.stats

    stats = anyio.run(main, backend="trio")
    assert stats.confirmed == 10
    assert fake.usage_of("user_9", "exports") == 2
    assert BIG > 0
