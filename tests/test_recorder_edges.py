"""Edges of the usage recorder (``billingos/_recorder.py``) that test_recorder.py does not reach, in memory
and on the blocking facade (the SQLite outbox's edges: test_outbox_edges.py).

Statuses without an SDK class (408 is retried, 418 is not), a bug below the recorder, the route-wide
rate limit, the lifecycle's odd orders (close before open, two closes at once, ``__aexit__`` twice), and
a sync recorder in a forked child, simulated in-process: the at-fork hook runs for this test's
recorder only, so the child's paths are measured here (the real-fork test in tests/hardening runs them in
a child that coverage cannot see).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

import billingos._recorder as recorder_module
from billingos import (
    AsyncBillingOS,
    BillingOSError,
    RecorderStats,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault, RateLimits

from ._factories import BASE_URL, SECRET, track_json
from ._recorder_support import CUSTOMERS, TRACK, keys_sent, recorder, recorder_fixtures, seed, until

fake, billing, path = recorder_fixtures(11)


# -- options -----------------------------------------------------------------------------------------


async def test_none_for_an_option_with_a_default_means_that_default(billing: AsyncBillingOS) -> None:
    names = ("flush_interval", "max_concurrency", "max_pending", "on_full", "retry_deadline")
    names += ("close_timeout", "max_dead_letters", "outbox_fsync")
    r = billing.usage_recorder(**dict.fromkeys(names))  # type: ignore[arg-type]
    assert r._settings == recorder_module._Settings()
    async with r:
        assert r.record("user_0", "api_calls") is True


@pytest.mark.parametrize("value", [1, "yes", 0.0])
async def test_outbox_fsync_must_be_a_bool(billing: AsyncBillingOS, value: object) -> None:
    with pytest.raises(ValidationError, match="outbox_fsync must be a bool") as caught:
        billing.usage_recorder(outbox_fsync=value)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_argument"


async def test_a_path_object_is_accepted_as_the_outbox_and_reported_as_a_string(
    billing: AsyncBillingOS, tmp_path: Path
) -> None:
    r = billing.usage_recorder(outbox=tmp_path / "usage.db")
    assert r.outbox == str(tmp_path / "usage.db")
    assert billing.usage_recorder().outbox is None


# -- statuses the SDK has no class for ----------------------------------------------------------------


async def test_a_408_is_retried_with_the_same_key_and_counted_once(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(408))
    async with recorder(billing) as r:
        r.record("user_0", "api_calls", 3)
        await r.flush(timeout=5)
        assert r.stats.retried == 1
        assert r.dead_letters == ()
    assert [q.status for q in fake.requests_to(TRACK)] == [408, 201]
    assert len(set(keys_sent(fake))) == 1
    assert fake.usage_of("user_0", "api_calls") == 3


@pytest.mark.parametrize("status", [402, 418, 451])
async def test_another_4xx_is_dead_lettered_at_once(
    billing: AsyncBillingOS, fake: FakeBillingOS, status: int
) -> None:
    fake.inject(TRACK, Fault.error(status))
    async with recorder(billing) as r:
        r.record("user_0", "api_calls", 2)
        await r.flush(timeout=5)
        (letter,) = r.dead_letters
    assert type(letter.error) is BillingOSError
    assert letter.error.status_code == status
    assert (letter.attempts, letter.possibly_counted, letter.quantity) == (1, False, 2)
    assert len(fake.requests_to(TRACK)) == 1
    assert fake.usage_of("user_0", "api_calls") == 0


# -- a bug below the recorder --------------------------------------------------------------------------


async def test_an_unexpected_exception_below_dead_letters_the_call_and_the_recorder_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a BillingOSError (a bug in a transport, say): logged with its traceback, the call becomes a
    dead letter marked possibly counted (nobody knows how far it got), and later calls still go out."""
    seen: list[str] = []  # paths of the requests the transport got

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.path)
        if len(seen) == 1:
            raise ZeroDivisionError("a bug in a custom transport")
        return httpx2.Response(201, json=track_json())

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    delivered: list[Any] = []
    async with (
        http,
        AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=http) as billing,
        recorder(billing, on_dead_letter=delivered.append) as r,
    ):
        r.record("user_0", "api_calls", 4)
        await r.flush(timeout=5)
        (letter,) = r.dead_letters
        r.record("user_0", "api_calls", 1)
        await r.flush(timeout=5)
        stats = r.stats
    assert delivered == [letter]
    assert letter.error.code == "unexpected_error"
    assert "ZeroDivisionError" in letter.error.message
    assert isinstance(letter.error.__cause__, ZeroDivisionError)
    assert (letter.quantity, letter.attempts, letter.possibly_counted) == (4, 1, True)
    assert (stats.sent_calls, stats.confirmed, stats.dead, stats.pending) == (1, 1, 1, 0)  # events
    assert len(seen) == 2
    assert "Unexpected error sending usage" in caplog.text


# -- the route-wide rate limit ---------------------------------------------------------------------------


async def test_an_exhausted_route_limit_holds_back_every_customer_until_retry_after() -> None:
    """A 429 whose ``X-RateLimit-Remaining`` is 0 is the route's limit, not the customer's: sending another
    customer's call before ``Retry-After`` would only be refused too. With a per-route limit of 2 per
    second, a third and fourth call (two other customers) are both sent once, after the wait."""
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=2, track_per_customer=1000, window=1), seed=11)
    seed(fake)
    # rate_budget=False: the 429 comes unforeseen, as when another client behind the same IP spent the limit
    async with (
        fake.client(rate_budget=False) as billing,
        recorder(billing, flush_interval=3600, max_concurrency=1) as r,
    ):
        for customer in CUSTOMERS[:4]:
            r.record(customer, "api_calls")
        with anyio.fail_after(10):
            await r.flush()
        assert r.stats.confirmed == 4
    requests = [(q.json["customer_id"], q.status) for q in fake.requests_to(TRACK)]
    assert [status for _, status in requests] == [201, 201, 429, 201, 201]  # one 429, not two
    assert requests[2] == ("user_2", 429)
    assert {customer for customer, _ in requests[3:]} == {"user_2", "user_3"}


async def test_with_the_rate_budget_a_spent_route_gets_no_429_the_tracks_wait_for_the_window() -> None:
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=2, track_per_customer=1000, window=1), seed=11)
    seed(fake)
    async with fake.client() as billing, recorder(billing, flush_interval=3600, max_concurrency=1) as r:
        for customer in CUSTOMERS[:4]:
            r.record(customer, "api_calls")
        with anyio.fail_after(10):
            await r.flush()
        assert r.stats.confirmed == 4
    assert [q.status for q in fake.requests_to(TRACK)] == [201] * 4


# -- lifecycle in odd orders -------------------------------------------------------------------------------


async def test_flush_refuses_before_open_and_after_close(billing: AsyncBillingOS) -> None:
    r = recorder(billing)
    with pytest.raises(BillingOSError) as before:
        await r.flush()
    assert before.value.code == "recorder_not_open"
    async with r:
        await r.flush()
    with pytest.raises(BillingOSError) as after:
        await r.flush(timeout=1)
    assert after.value.code == "recorder_closed"


async def test_closing_a_recorder_never_opened_returns_empty_stats_and_it_cannot_be_opened(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    r = recorder(billing)
    assert await r.aclose() == RecorderStats()
    assert "closed" in repr(r)
    with pytest.raises(BillingOSError) as record:
        r.record("user_0", "api_calls")
    assert record.value.code == "recorder_closed"
    with pytest.raises(BillingOSError) as reopen:
        await r.__aenter__()
    assert reopen.value.code == "recorder_reused"
    assert fake.requests_to(TRACK) == []


async def test_a_second_close_while_the_first_drains_waits_for_it_and_reports_the_same_stats(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.delay(0.2))
    results: dict[str, RecorderStats] = {}
    r = await recorder(billing, flush_interval=3600).__aenter__()
    try:
        r.record("user_0", "api_calls", 5)

        async def close(name: str) -> None:
            results[name] = await r.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(close, "first")
            await until(lambda: len(fake.requests_to(TRACK)) == 1)  # the first close is draining
            assert "closing" in repr(r)
            tg.start_soon(close, "second")
    finally:
        await r.__aexit__(None, None, None)
    assert results["first"] == results["second"]
    assert (results["second"].confirmed, results["second"].pending) == (1, 0)
    assert fake.usage_of("user_0", "api_calls") == 5


async def test_leaving_the_block_twice_is_harmless(billing: AsyncBillingOS, fake: FakeBillingOS) -> None:
    r = recorder(billing)
    async with r:
        r.record("user_0", "api_calls")
    stats = r.stats
    await r.__aexit__(None, None, None)  # an exit stack unwinding twice, say
    assert r.stats == stats
    assert fake.usage_of("user_0", "api_calls") == 1


async def test_clearing_letters_the_recorder_does_not_hold_clears_nothing(
    billing: AsyncBillingOS, fake: FakeBillingOS
) -> None:
    async with recorder(billing) as r:
        r.record("user_nobody", "api_calls")
        await r.flush()
        (letter,) = r.dead_letters
        other = recorder(billing)
        async with other:
            other.record("user_nobody", "exports")
            await other.flush()
            (foreign,) = other.dead_letters
        assert r.clear_dead_letters([]) == 0
        assert r.clear_dead_letters([foreign]) == 0
        assert r.dead_letters == (letter,)
        assert r.clear_dead_letters([letter, foreign]) == 1
        assert r.dead_letters == ()
        assert r.clear_dead_letters() == 0


# -- the sync recorder ----------------------------------------------------------------------------------


def test_a_sync_recorder_can_be_opened_only_once(fake: FakeBillingOS) -> None:
    with fake.sync_client() as billing:
        r = billing.usage_recorder(flush_interval=0.01)
        with r:
            r.record("user_0", "api_calls")
            with pytest.raises(BillingOSError) as nested:
                r.__enter__()
            assert nested.value.code == "recorder_reused"
        with pytest.raises(BillingOSError) as again:
            r.__enter__()
        assert again.value.code == "recorder_reused"
        assert "UsageRecorder closed" in repr(r)
    assert fake.usage_of("user_0", "api_calls") == 1


@pytest.mark.parametrize("durable", [True, False], ids=["outbox", "memory"])
def test_a_sync_recorder_in_a_forked_child_refuses_everything_but_close(
    fake: FakeBillingOS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """In a child the parent's recorder would stage events nothing sends, and flush() would wait for a loop
    that is not there: every method raises ``recorder_forked``; close() returns empty stats at once."""
    monkeypatch.setattr(recorder_module, "_OPEN_SYNC_RECORDERS", weakref.WeakSet())
    path = str(tmp_path / "usage.db") if durable else None
    with fake.sync_client() as billing:
        r = billing.usage_recorder(outbox=path, flush_interval=3600).__enter__()
        r.record("user_0", "api_calls", 2)
        r.wait_durable(timeout=5)
        parent, host, stop = r._recorder, r._host, r._stop
        assert parent is not None
        assert host is not None
        assert stop is not None
        try:
            recorder_module._disown_sync_recorders_after_fork()  # what os.fork() runs in the child

            for call in (
                lambda: r.record("user_0", "api_calls"),
                lambda: r.flush(timeout=1),
                lambda: r.wait_durable(timeout=1),
                lambda: r.stats,
                lambda: r.dead_letters,
                lambda: r.clear_dead_letters(),
                r.__enter__,
            ):
                with pytest.raises(BillingOSError, match=r"before os\.fork") as caught:
                    call()
                assert caught.value.code == "recorder_forked"
            assert r.close() == RecorderStats()
            assert r.close(timeout=5) == RecorderStats()  # still nothing, however often
            assert r.outbox == path
            assert repr(r) == "<SyncUsageRecorder None>"
        finally:
            # Back in the "parent": its recorder never noticed, and closes as usual.
            final = billing._runner.run(lambda _core: parent.aclose())
            billing._runner.run(lambda _core: recorder_module._set(stop))
            host.result(timeout=10)
    assert final.pending == 0
    assert fake.usage_of("user_0", "api_calls") == 2


def test_the_at_fork_hook_disowns_only_open_sync_recorders(
    fake: FakeBillingOS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "_OPEN_SYNC_RECORDERS", weakref.WeakSet())
    with fake.sync_client() as billing:
        closed = billing.usage_recorder()
        with closed:
            pass
        never_opened = billing.usage_recorder()
        recorder_module._disown_sync_recorders_after_fork()
        assert closed.close() == closed.stats  # closed before the fork: untouched
        with never_opened as r:  # not open at the fork: usable in the child
            r.record("user_1", "api_calls")
    assert fake.usage_of("user_1", "api_calls") == 1
