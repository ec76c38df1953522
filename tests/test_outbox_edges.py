"""Edges of the SQLite outbox (``billingos/_outbox.py``) and of the recorder paths only an outbox reaches.

Disk failures are real SQLite failures: a trigger added to the file by the test (``RAISE(ABORT)``)
makes a write fail *inside* its transaction, as a full disk or a read-only file would, so the rollback and
the retry of the writer thread run for real; dropping the trigger is the disk recovering. Files an older
or newer SDK (or a person) left behind are built with ``sqlite3`` directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from billingos import AsyncBillingOS, BillingOSError, RateLimitError, RetryPolicy, UsageRecorder
from billingos._outbox import SCHEMA_VERSION, SQLiteOutbox, Staging
from billingos._recorder import SAFE_KEY_AGE
from billingos.testing import FakeBillingOS, Fault

from ._recorder_support import TRACK, keys_sent, outbox_rows, recorder_fixtures, until, writer_of
from ._recorder_support import recorder as shared_recorder

fake, billing, path = recorder_fixtures(5)


def recorder(billing: AsyncBillingOS, path: str, **options: Any) -> UsageRecorder:
    """The shared recorder, but flushing only when asked (``flush_interval=3600``)."""
    options.setdefault("flush_interval", 3600)
    return shared_recorder(billing, path, **options)


DISK_SAYS_NO = "disk says no"


@contextlib.contextmanager
def sql(path: str) -> Iterator[sqlite3.Connection]:
    """A connection of the test's own, committed and closed on exit."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def refuse(path: str, *triggers: str) -> None:
    """Make these writes fail inside their transaction: ``"INSERT ON events"``, ``"DELETE ON batches"``..."""
    with sql(path) as conn:
        for trigger in triggers:
            action, table = trigger.split(" ON ")
            conn.execute(
                f"CREATE TRIGGER refuse_{action.lower()}_{table} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{DISK_SAYS_NO}'); END"
            )


def recover(path: str) -> None:
    with sql(path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        for name in names:
            conn.execute(f"DROP TRIGGER {name}")


def outbox_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "billingos-outbox"]


def is_unlocked(path: str) -> bool:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the probe's own lock
    return True


async def make_outbox(billing: AsyncBillingOS, path: str) -> None:
    """Create the file with the current schema (an empty recorder, opened and closed)."""
    async with recorder(billing, path):
        pass


# -- writes that fail inside their transaction ------------------------------------------------------------


async def test_a_failed_event_write_rolls_back_and_merges_with_events_recorded_meanwhile(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    await make_outbox(billing, path)
    refuse(path, "INSERT ON events")
    async with recorder(billing, path) as r:
        meanwhile = {"pending": True}

        def record_during_the_write(name: str) -> None:
            if name == "persist" and meanwhile.pop("pending", False):
                r.record("user_0", "api_calls", 2)  # staged while the failing write holds the first one

        writer_of(r).before_write = record_during_the_write
        r.record("user_0", "api_calls", 1)
        with pytest.raises(TimeoutError, match=f"within 0.3 s \\(last error: {DISK_SAYS_NO}\\)"):
            await r.wait_durable(timeout=0.3)
        assert outbox_rows(path)["events"] == []  # rolled back: nothing half-written
        recover(path)
        await r.wait_durable(timeout=5)  # the writer's next retry succeeds
        assert outbox_rows(path)["events"] == [("user_0", "api_calls", 3, 2)]  # one row: merged
        await r.flush(timeout=5)
    assert fake.usage_of("user_0", "api_calls") == 3
    assert len(fake.requests_to(TRACK)) == 1
    assert "could not be written (will retry)" in caplog.text


async def test_a_confirmation_the_disk_refuses_is_retried_until_it_is_written(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    await make_outbox(billing, path)
    refuse(path, "DELETE ON batches")
    async with recorder(billing, path) as r:
        r.record("user_nobody", "api_calls")  # a dead letter: written in the same refused transaction
        r.record("user_0", "api_calls", 4)
        await r.flush(timeout=5)
        writer = writer_of(r)
        await until(lambda: writer.error is not None)
        rows = outbox_rows(path)
        assert len(rows["batches"]) == 2  # neither the confirmation nor the burial was written...
        assert rows["dead_letters"] == []  # ...and the transaction left no half of itself behind
        recover(path)
        await until(lambda: outbox_rows(path)["batches"] == [] and writer.error is None)
        assert [row[1] for row in outbox_rows(path)["dead_letters"]] == ["NotFoundError"]
    assert fake.usage_of("user_0", "api_calls") == 4


async def test_a_confirmation_still_refused_at_close_is_replayed_with_its_key_and_counted_once(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    await make_outbox(billing, path)
    refuse(path, "DELETE ON batches")
    async with recorder(billing, path) as first:
        first.record("user_0", "api_calls", 6)
        await first.flush(timeout=5)
        await until(lambda: writer_of(first).error is not None)
    assert "could not be written at close" in caplog.text
    assert not outbox_threads()
    (batch,) = outbox_rows(path)["batches"]

    recover(path)
    async with recorder(billing, path) as second:
        await second.flush(timeout=5)
    assert keys_sent(fake) == [batch[0], batch[0]]  # replayed with the key written at the seal
    assert fake.usage_of("user_0", "api_calls") == 6  # and deduplicated by BillingOS
    assert outbox_rows(path)["batches"] == []


async def test_events_the_disk_never_takes_are_sealed_in_memory_and_sent_anyway(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before issue 12 the event stayed staged, was never sent, and close() said it was "kept" in the file."""
    await make_outbox(billing, path)
    refuse(path, "INSERT ON events", "INSERT ON batches")  # neither persisted nor sealed
    async with recorder(billing, path, close_timeout=5) as r:
        r.record("user_0", "api_calls")
        with pytest.raises(TimeoutError, match="last error: disk says no") as caught:
            await r.wait_durable(timeout=0.3)
        assert isinstance(caught.value, BillingOSError)
        assert caught.value.code == "outbox_error"
        await r.flush(timeout=5)  # the disk refuses, BillingOS does not: confirmed
    assert "sealed in memory only and sent anyway" in caplog.text
    assert "kept in" not in caplog.text
    assert "they are in" not in caplog.text
    assert (r.stats.confirmed, r.stats.pending, r.stats.not_durable, r.dead_letters) == (1, 0, 0, ())
    assert fake.usage_of("user_0", "api_calls") == 1
    assert len(fake.requests_to(TRACK)) == 1
    recover(path)
    assert outbox_rows(path) == {"events": [], "batches": [], "dead_letters": []}


async def test_a_window_the_background_seal_cannot_write_is_sealed_on_a_later_tick(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    failures = {"seal": 2}

    def flaky(name: str) -> None:
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise sqlite3.OperationalError(DISK_SAYS_NO)

    with caplog.at_level(logging.DEBUG, logger="billingos.recorder"):
        async with recorder(billing, path, flush_interval=0.02) as r:
            writer_of(r).before_write = flaky
            r.record("user_0", "api_calls", 5)
            await until(lambda: fake.usage_of("user_0", "api_calls") == 5)  # no flush(): the pump did it
    assert failures["seal"] == 0
    assert "Sealing a usage window failed" in caplog.text
    assert len(fake.requests_to(TRACK)) == 1


async def test_a_seal_slower_than_the_writers_liveness_check_still_completes(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    """A slow disk: the loop's side polls the writer every 0.5 s while it waits, and keeps waiting while the
    writer is alive, however long the write takes."""
    held: list[float] = []

    def slow(name: str) -> None:
        if name == "seal" and not held:
            started = time.monotonic()
            threading.Event().wait(0.7)  # a write that takes longer than one poll
            held.append(time.monotonic() - started)

    async with recorder(billing, path) as r:
        writer_of(r).before_write = slow
        r.record("user_0", "api_calls", 2)
        await r.flush(timeout=10)
    assert held
    assert held[0] >= 0.5
    assert fake.usage_of("user_0", "api_calls") == 2


# -- files left behind ------------------------------------------------------------------------------------


async def test_an_outbox_written_by_a_newer_sdk_is_refused_and_left_unlocked(
    billing: AsyncBillingOS, path: str
) -> None:
    with sql(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(BillingOSError, match="newer billingos") as caught:
        await recorder(billing, path).__aenter__()
    assert caught.value.code == "outbox_error"
    assert is_unlocked(path)
    assert not outbox_threads()


async def test_an_outbox_whose_tables_cannot_be_read_is_an_outbox_error(
    billing: AsyncBillingOS, path: str
) -> None:
    with sql(path) as conn:
        conn.execute("CREATE TABLE batches (key TEXT PRIMARY KEY)")  # not the columns this SDK writes
    with pytest.raises(BillingOSError, match="failed: no such column") as caught:
        await recorder(billing, path).__aenter__()
    assert caught.value.code == "outbox_error"
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert is_unlocked(path)


async def dead_letter_that_cannot_be_loaded(billing: AsyncBillingOS, path: str) -> None:
    """An outbox holding one dead letter whose ``failed_at`` no datetime can hold."""
    async with recorder(billing, path) as first:
        first.record("user_nobody", "api_calls")
        await first.flush(timeout=5)
    with sql(path) as conn:
        conn.execute("UPDATE dead_letters SET failed_at = 1e300")


async def test_a_dead_letter_row_that_cannot_be_loaded_fails_the_open_and_releases_the_file(
    billing: AsyncBillingOS, path: str
) -> None:
    await dead_letter_that_cannot_be_loaded(billing, path)
    r = recorder(billing, path)
    with pytest.raises(Exception, match=r"out of range"):
        await r.__aenter__()
    assert is_unlocked(path)
    assert not outbox_threads()
    with pytest.raises(BillingOSError) as caught:
        r.record("user_0", "api_calls")
    assert caught.value.code == "recorder_not_open"

    with sql(path) as conn:
        conn.execute("UPDATE dead_letters SET failed_at = 1700000000")
    async with recorder(billing, path) as again:
        (letter,) = again.dead_letters
        assert letter.failed_at.timestamp() == 1700000000


async def test_a_failed_open_raises_the_original_error_not_an_exception_group(
    billing: AsyncBillingOS, path: str
) -> None:
    await dead_letter_that_cannot_be_loaded(billing, path)
    with pytest.raises((OverflowError, ValueError, OSError), match="out of range"):
        await recorder(billing, path).__aenter__()


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [("GremlinError", BillingOSError), ("RateLimitError", RateLimitError), ("Exception", BillingOSError)],
)
async def test_a_dead_letter_is_rebuilt_with_its_class_or_as_a_billingos_error_if_unknown(
    billing: AsyncBillingOS, path: str, error_type: str, expected: type[BillingOSError]
) -> None:
    """An error class a later SDK wrote (or one that is not an SDK error) is read back as a BillingOSError
    with the stored status, code, message and request id."""
    async with recorder(billing, path) as first:
        first.record("user_nobody", "api_calls")
        await first.flush(timeout=5)
        (original,) = first.dead_letters
    with sql(path) as conn:
        conn.execute("UPDATE dead_letters SET error_type = ?", (error_type,))
    async with recorder(billing, path) as second:
        (letter,) = second.dead_letters
    assert type(letter.error) is expected
    assert (letter.error.status_code, letter.error.code, letter.error.message, letter.error.request_id) == (
        original.error.status_code,
        original.error.code,
        original.error.message,
        original.error.request_id,
    )
    assert letter.idempotency_key == original.idempotency_key


# -- the 24-hour window, reached while waiting to retry ------------------------------------------------------


async def test_a_key_that_turns_23_hours_old_while_waiting_to_retry_is_dead_lettered_not_resent(
    billing: AsyncBillingOS, fake: FakeBillingOS, path: str
) -> None:
    fake.inject(TRACK, Fault.error(503), times=None)
    async with recorder(billing, path, flush_interval=0.02) as first:
        first.record("user_0", "api_calls", 2)
        await until(lambda: first.stats.retried >= 1)
        await first.aclose(timeout=0)
    with sql(path) as conn:  # the key was fixed 23 h minus one second ago
        conn.execute("UPDATE batches SET created_at = ?", (time.time() - SAFE_KEY_AGE + 1.0,))
    sent = len(fake.requests_to(TRACK))

    slow = RetryPolicy(initial_backoff=60, max_backoff=60)  # the retry falls after the key's 23 h
    started = time.monotonic()
    async with recorder(billing, path, retry_policy=slow) as second:
        with anyio.fail_after(10):
            await second.flush()
        (letter,) = second.dead_letters
    assert time.monotonic() - started < 5  # buried at the key's age limit, not after the 60 s backoff
    assert letter.error.code == "idempotency_window_expired"
    assert (letter.attempts, letter.possibly_counted) == (1, True)
    assert len(fake.requests_to(TRACK)) == sent + 1  # one attempt in time, none after
    assert outbox_rows(path)["batches"] == []


# -- the writer thread itself ------------------------------------------------------------------------------


async def test_sealing_after_the_writer_stopped_raises_instead_of_waiting_forever(path: str) -> None:
    outbox = SQLiteOutbox(Staging(), path, environment="test")
    await outbox.aclose()  # never opened: nothing to stop
    loaded = await outbox.open()
    assert (loaded.batches, loaded.unsealed, loaded.dead) == ((), 0, ())
    await outbox.aclose()
    await outbox.aclose()  # idempotent
    assert is_unlocked(path)
    with anyio.fail_after(5), pytest.raises(BillingOSError, match=r"writer thread .* has stopped") as caught:
        await outbox.seal()
    assert caught.value.code == "outbox_error"
    assert not outbox.wait_durable(1, timeout=5)  # nothing will ever write it: False at once
