"""The usage recorder's SQLite outbox: written before sending, replayed with the same keys, and never on
the event loop. The ``kill -9`` tests run the recorder in a child process (``_recorder_child.py``)
against the fake served on loopback by this process, and restart it here.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from billingos import AsyncBillingOS, BillingOSError, NotFoundError
from billingos.testing import FakeBillingOS, Fault

from ._recorder_support import (
    CUSTOMERS,
    TRACK,
    keys_sent,
    outbox_rows,
    recorder,
    recorder_fixtures,
    until,
    writer_of,
)

fake, billing, path = recorder_fixtures(7)

CHILD = Path(__file__).with_name("_recorder_child.py")


# -- written before sending ------------------------------------------------------------------------


async def test_events_are_durable_before_they_are_sent_and_the_key_before_the_first_attempt(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    slow = fake.inject(TRACK, Fault.delay(0.1), times=1)
    async with recorder(billing, path, flush_interval=3600) as r:
        assert r.outbox == path
        for _ in range(4):
            r.record("user_0", "api_calls", 2)
        await r.wait_durable()
        assert outbox_rows(path)["events"] == [("user_0", "api_calls", 8, 4)]  # one row per tally

        async with anyio.create_task_group() as tg:
            tg.start_soon(r.flush)
            await until(lambda: slow.hits == 1)  # the call is on the server, not answered yet
            rows = outbox_rows(path)
            assert rows["events"] == []
            ((key, customer, feature, quantity, events),) = rows["batches"]
            assert (customer, feature, quantity, events) == ("user_0", "api_calls", 8, 4)
        assert keys_sent(fake) == [key]
        await until(lambda: outbox_rows(path)["batches"] == [])  # forgotten once confirmed
    assert fake.usage_of("user_0", "api_calls") == 8


async def test_wait_durable_returns_at_once_without_an_outbox(billing: AsyncBillingOS) -> None:
    async with billing.usage_recorder() as r:
        assert r.outbox is None
        r.record("user_0", "api_calls")
        with anyio.fail_after(1):
            await r.wait_durable()


async def test_a_second_recorder_on_the_same_file_is_refused(billing: AsyncBillingOS, path: str) -> None:
    async with recorder(billing, path):
        with pytest.raises(BillingOSError) as caught:
            async with recorder(billing, path):
                pass
        assert caught.value.code == "outbox_locked"
    async with recorder(billing, path):  # free again once the first one closed
        pass


async def test_an_outbox_is_never_replayed_to_another_environment(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    async with recorder(billing, path):
        pass
    live_key = fake.add_secret_key(live=True)
    async with AsyncBillingOS(
        live_key, api_url="http://127.0.0.1", http_client=fake.async_http_client()
    ) as live:
        with pytest.raises(BillingOSError) as caught:
            async with recorder(live, path):
                pass
    assert caught.value.code == "outbox_mismatch"
    assert "'test'" in str(caught.value)
    async with recorder(billing, path):  # the refused attempt left the file usable
        pass


# -- replay in a new recorder (same process) -------------------------------------------------------


async def test_close_keeps_what_is_left_and_the_next_recorder_sends_it_with_the_same_keys(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    async with recorder(billing, path) as first:
        for customer in CUSTOMERS[:3]:
            first.record(customer, "api_calls", 5)
        await until(lambda: first.stats.retried >= 3)
        stats = await first.aclose(timeout=0.02)
    assert (stats.pending, stats.dead) == (3, 0)
    assert first.dead_letters == ()
    tried = set(keys_sent(fake))
    assert {row[0] for row in outbox_rows(path)["batches"]} == tried

    fake.clear_faults()
    async with recorder(billing, path) as second:
        assert second.stats.pending == 3
        await second.flush()
        assert second.stats.confirmed == 3
    assert set(keys_sent(fake)) == tried  # the same three keys, no new call
    assert [fake.usage_of(c, "api_calls") for c in CUSTOMERS[:3]] == [5, 5, 5]
    assert outbox_rows(path) == {"events": [], "batches": [], "dead_letters": []}


async def test_a_call_the_server_counted_but_never_answered_is_counted_once_after_restart(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    fake.inject(TRACK, Fault.drop_response(), times=None)
    async with recorder(billing, path) as first:
        first.record("user_0", "api_calls", 7)
        await until(lambda: len(fake.requests_to(TRACK)) >= 2)
        await first.aclose(timeout=0)
    assert fake.usage_of("user_0", "api_calls") == 7

    fake.clear_faults()
    async with recorder(billing, path) as second:
        await second.flush()
    assert fake.usage_of("user_0", "api_calls") == 7
    assert len(set(keys_sent(fake))) == 1


async def test_dead_letters_are_kept_in_the_outbox_until_cleared(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    async with recorder(billing, path) as first:
        first.record("user_free", "api_calls", 3)
        await first.flush()
        (letter,) = first.dead_letters

    async with recorder(billing, path) as second:
        (kept,) = second.dead_letters
        assert isinstance(kept.error, NotFoundError)
        assert (kept.idempotency_key, kept.quantity, kept.error.message) == (
            letter.idempotency_key,
            3,
            "No active subscription with this feature",
        )
        assert second.stats.dead == 0  # counted by the recorder that buried it
        assert second.clear_dead_letters([kept]) == 1

    async with recorder(billing, path) as third:
        assert third.dead_letters == ()
    assert len(fake.requests_to(TRACK)) == 1  # a dead letter is never re-sent by itself


async def test_a_key_older_than_23_hours_is_dead_lettered_instead_of_replayed(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    async with recorder(billing, path) as first:
        first.record("user_0", "api_calls", 2)
        await until(lambda: first.stats.retried >= 1)
        await first.aclose(timeout=0)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE batches SET created_at = created_at - 86400")
    conn.close()
    sent = len(fake.requests_to(TRACK))

    fake.clear_faults()
    async with recorder(billing, path) as second:
        (letter,) = second.dead_letters
        await second.flush()
    assert letter.error.code == "idempotency_window_expired"
    assert letter.possibly_counted is True
    assert len(fake.requests_to(TRACK)) == sent


async def test_a_failing_write_is_retried_and_nothing_is_lost_or_doubled(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    failures = {"persist": 2, "seal": 1}

    def flaky(name: str) -> None:
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise sqlite3.OperationalError("disk I/O error")

    async with recorder(billing, path, flush_interval=3600) as r:
        writer_of(r).before_write = flaky
        for _ in range(10):
            r.record("user_0", "api_calls")
        await r.wait_durable(timeout=5)  # after two failed writes and a retry
        with pytest.raises(BillingOSError, match="disk I/O error"):
            await r.flush()
        r.record("user_0", "api_calls")
        await r.flush()
    assert fake.usage_of("user_0", "api_calls") == 11
    assert "could not be written" in caplog.text


# -- SQLite never runs on the event loop -----------------------------------------------------------


async def test_a_stuck_sqlite_write_does_not_block_the_event_loop(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    entered, release = threading.Event(), threading.Event()
    names: list[str] = []

    def stuck(name: str) -> None:
        names.append(name)
        if name == "seal":
            entered.set()
            release.wait(10)

    async with recorder(billing, path, flush_interval=3600) as r:
        writer_of(r).before_write = stuck
        r.record("user_0", "api_calls")
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.flush)
            await anyio.to_thread.run_sync(entered.wait)
            # The writer thread is inside a write and stays there until released. Meanwhile the loop
            # runs other coroutines and record() returns at once: nothing here waits for SQLite.
            ticks = 0
            started = time.monotonic()
            for _ in range(20):
                await anyio.sleep(0.001)
                ticks += 1
            for _ in range(1000):
                r.record("user_1", "api_calls")
            assert ticks == 20
            assert time.monotonic() - started < 1
            assert not release.is_set()  # the write is still stuck
            assert fake.requests_to(TRACK) == []  # the seal has not committed: nothing may be sent
            release.set()
        await r.flush()
    assert "seal" in names
    assert fake.usage_of("user_0", "api_calls") == 1
    assert fake.usage_of("user_1", "api_calls") == 1000


# -- kill -9 ---------------------------------------------------------------------------------------


async def read_line(child: Process) -> str:
    """The child's first line of output (its stderr instead, if it exits without one)."""
    assert child.stdout is not None
    data = b""
    with anyio.fail_after(30):
        try:
            while b"\n" not in data:
                data += await child.stdout.receive()
        except anyio.EndOfStream:
            assert child.stderr is not None
            errors = b"".join([chunk async for chunk in child.stderr])
            pytest.fail(f"the child exited early: {errors.decode(errors='replace')}")
    return data.decode().splitlines()[0]


SCENARIOS = {
    # fault on the track route while the child runs, and what the parent waits for before killing it
    "in flight on a slow server": (Fault.delay(0.5), "hits"),
    "counted, answer lost": (Fault.drop_response(), "processed"),
    "connection reset, not counted": (Fault.reset(), "hits"),
    "durable, never sealed": (None, "ready"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_a_recorder_killed_mid_flush_is_replayed_with_the_same_keys_and_counted_once(
    fake: FakeBillingOS, path: str, scenario: str
) -> None:
    fault, wait_for = SCENARIOS[scenario]
    rule = fake.inject(TRACK, fault, times=None) if fault is not None else None
    mode = "unsealed" if fault is None else "sealed"
    with fake.serve() as url:
        async with await anyio.open_process(
            [sys.executable, str(CHILD), url, fake.secret_key, path, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as child:
            try:
                line = await read_line(child)
                assert line.startswith("READY "), line
                totals = {tuple(k.split("|")): v for k, v in json.loads(line[6:]).items()}
                if wait_for == "hits":
                    assert rule is not None
                    await until(lambda: rule.hits >= 2, limit=10)
                elif wait_for == "processed":
                    await until(lambda: len(fake.requests_to(TRACK)) >= 2, limit=10)
            finally:
                os.kill(child.pid, signal.SIGKILL)
                await child.wait()
            assert child.returncode == -signal.SIGKILL
        if fault is not None and fault.kind == "delay":  # the server finishes what it was doing
            await until(lambda: len(fake.requests_to(TRACK)) >= 2, limit=10)

    fake.clear_faults()
    before = outbox_rows(path)
    sent_by_child = set(keys_sent(fake))
    counted_before = {key: fake.usage_of(*key) for key in totals}
    if mode == "sealed":
        assert len(before["batches"]) == 6  # one call per (customer, feature), keys fixed
        assert sent_by_child
        assert sent_by_child <= {row[0] for row in before["batches"]}
        assert len(before["events"]) == 6  # the second half: durable, not yet in a call
    else:
        assert before["batches"] == []
        assert sent_by_child == set()
        assert sum(row[3] for row in before["events"]) == 30
    if fault is not None and fault.kind in ("delay", "drop_response"):
        assert any(counted_before.values())  # the killed flush did reach the server

    already = len(fake.requests_to(TRACK))
    async with fake.client() as billing, recorder(billing, path) as r:
        await r.flush()
        stats = r.stats
    assert {key: fake.usage_of(*key) for key in totals} == totals  # every event exactly once
    assert (stats.pending, stats.dead) == (0, 0)
    after = [q.json["idempotency_key"] for q in fake.requests_to(TRACK)[already:]]
    sealed = {row[0] for row in before["batches"]}
    assert sealed <= set(after)  # every sealed call replayed under the key it was written with
    assert len(set(after)) == len(sealed) + 6  # plus one new call per (customer, feature) never sealed
    assert outbox_rows(path) == {"events": [], "batches": [], "dead_letters": []}


async def test_the_sync_recorder_writes_to_the_outbox(fake: FakeBillingOS, path: str) -> None:
    def run() -> None:
        with fake.sync_client() as billing, billing.usage_recorder(outbox=path, flush_interval=3600) as r:
            assert r.outbox == path
            r.record("user_0", "api_calls", 3)
            r.wait_durable(timeout=5)
            assert outbox_rows(path)["events"] == [("user_0", "api_calls", 3, 1)]
            r.flush(timeout=5)

    await anyio.to_thread.run_sync(run)
    assert fake.usage_of("user_0", "api_calls") == 3
    assert outbox_rows(path)["batches"] == []
