"""The recorder's SQLite outbox on a hostile disk (issue 12, items 1-3): nothing recorded is lost, every
failure is an ``outbox_error`` / ``outbox_locked`` naming the path and the cause, and the lock is on the
file, whatever its name.

A full disk is real where the machine allows it: a 256 kB tmpfs mounted by the test (root only; the test
skips with the reason where ``mount`` is refused), filled with a filler file while the embedded server
(``billingos.testing``, uvicorn on loopback) is up. The same scenarios also run with the outbox's write
path patched to raise ``OSError(ENOSPC)``, so the logic is tested on every machine. Read-only places are a
read-only remount of a tmpfs as root (root ignores permission bits) and ``chmod`` otherwise.

Figures (printed and summarised at the end): events recorded, counted by the server, left in the outbox,
dead-lettered, lost. Before the fix, the full-disk scenario lost 3 000 of 3 001 events.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from billingos import AsyncBillingOS, BillingOS, BillingOSError, RecorderStats, RetryPolicy, UsageRecorder
from billingos._outbox import SQLiteOutbox
from billingos.testing import FakeBillingOS, Fault

from ._event_loops import LOOPS, LOOPS_AND_BACKENDS, run_on
from .conftest import serve_counted

TRACK = "POST /v1/usage/track"
EVENTS = 3_001
"""One event written before the disk fills, then 3 000 more: the issue's scenario."""
FAST = RetryPolicy(initial_backoff=0.002, max_backoff=0.02)


def _query(path: str | os.PathLike[str], sql: str) -> list[Any]:
    """``sql`` on the file through a connection closed at once (Python 3.13+ warns on one left to the GC)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


# -- disks ------------------------------------------------------------------------------------------------


def _mount_tmpfs(where: str, size: str = "256k") -> None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")


def _umount(where: str) -> None:
    subprocess.run(["umount", where], check=False, capture_output=True)
    if os.path.ismount(where):  # still busy (a test failed mid-way): detach it
        subprocess.run(["umount", "-l", where], check=False, capture_output=True)


@contextlib.contextmanager
def tmpfs(size: str = "256k") -> Iterator[Path]:
    """A fresh tmpfs of ``size``, unmounted on exit."""
    where = tempfile.mkdtemp(prefix="billingos-tmpfs-")
    try:
        _mount_tmpfs(where, size)
        try:
            yield Path(where)
        finally:
            _umount(where)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)


class RealFullDisk:
    """A 256 kB tmpfs; ``fill()`` writes a filler file until the kernel says ENOSPC."""

    name = "tmpfs"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> int:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written, refused = 0, None
        try:
            while refused is None:
                try:
                    written += os.write(fd, b"\0" * 4096)
                except OSError as exc:
                    refused = exc.errno
        finally:
            os.close(fd)
        assert refused == errno.ENOSPC
        return written

    def free(self) -> None:
        self.filler.unlink()


class InjectedFullDisk:
    """Every outbox transaction raises ``OSError(ENOSPC)`` while full (the write path is patched)."""

    name = "injected ENOSPC"

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.full = False
        real = SQLiteOutbox._transaction

        def transaction(outbox: SQLiteOutbox, conn: sqlite3.Connection, name: str) -> Any:
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(outbox, conn, name)

        monkeypatch.setattr(SQLiteOutbox, "_transaction", transaction)

    def fill(self) -> int:
        self.full = True
        return 0

    def free(self) -> None:
        self.full = False


Disk = RealFullDisk | InjectedFullDisk


@pytest.fixture(params=["tmpfs", "enospc"])
def disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    if request.param == "tmpfs":
        with tmpfs() as root:
            yield RealFullDisk(root)
    else:
        yield InjectedFullDisk(tmp_path, monkeypatch)


def server() -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None)
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Unlimited", features={"api_calls": 10**12})
    for n in range(3):
        fake.add_customer(f"cus_{n}")
        fake.subscribe(f"cus_{n}", plan.price_id)
    return fake


def client(fake: FakeBillingOS, url: str, http_backend: str = "httpx2") -> AsyncBillingOS:
    return AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=FAST, http_backend=http_backend)


def record_3000(r: UsageRecorder) -> None:
    for i in range(EVENTS - 1):
        r.record(f"cus_{i % 3}", "api_calls")


# -- item 1: a full disk loses nothing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loop", "http_backend"),
    [pytest.param(loop, backend, id=f"{loop}-{backend}") for loop, backend in LOOPS_AND_BACKENDS],
)  # aiohttp runs on asyncio only
def test_a_full_disk_while_billingos_is_up_loses_no_event(
    disk: Disk, loop: str, http_backend: str, figure: Callable[[str], None]
) -> None:
    fake = server()
    path = str(disk.root / "usage.db")

    async def main() -> tuple[RecorderStats, int, float]:
        async with client(fake, url, http_backend) as billing:
            async with billing.usage_recorder(outbox=path, flush_interval=3600) as r:
                r.record("cus_0", "api_calls")
                await r.wait_durable(timeout=5)
                disk.fill()
                record_3000(r)
                with pytest.raises(BillingOSError) as caught:
                    await r.wait_durable(timeout=0.5)
                assert caught.value.code == "outbox_error"
                assert path in str(caught.value)
                with pytest.raises(BillingOSError) as caught:  # the event on disk cannot be sealed now
                    await r.flush(timeout=10)
                assert caught.value.code == "outbox_error"
                assert "stay there" in str(caught.value)
                await server_idle()
            stats = r.stats
            disk.free()
            async with billing.usage_recorder(outbox=path, flush_interval=3600) as again:
                found = again.stats.pending
                await again.flush(timeout=10)
            return stats, found, fake.usage_of("cus_0", "api_calls")

    async def server_idle() -> None:
        await counter.wait_idle()

    with serve_counted(fake.app) as (url, counter):
        stats, found, _ = run_on(loop, main)
    counted = sum(fake.usage_of(f"cus_{n}", "api_calls") for n in range(3))
    figure(
        f"{disk.name}, {loop}, {http_backend}: {stats.recorded} recorded, "
        f"{stats.confirmed} confirmed while the disk was full, {stats.pending} left in the outbox, "
        f"{found} found by the next recorder, {counted:.0f} counted by the server, "
        f"{EVENTS - counted:.0f} lost (before: 3000 of 3001)"
    )
    assert (stats.recorded, stats.confirmed, stats.pending, stats.dead, stats.not_durable) == (
        EVENTS,
        EVENTS - 1,
        1,
        0,
        0,
    )
    assert found == 1
    assert counted == EVENTS


@pytest.mark.parametrize("loop", LOOPS)
def test_a_full_disk_with_billingos_down_reports_every_event_at_close(
    disk: Disk,
    loop: str,
    figure: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = server()
    fake.inject(TRACK, Fault.error(503), times=None)
    path = str(disk.root / "usage.db")
    handed: list[Any] = []

    async def main() -> tuple[RecorderStats, list[Any], int]:
        async with client(fake, url) as billing:
            r = billing.usage_recorder(
                outbox=path, flush_interval=0.05, close_timeout=0.3, on_dead_letter=handed.append
            )
            async with r:
                r.record("cus_0", "api_calls")
                await r.wait_durable(timeout=5)
                disk.fill()
                record_3000(r)
                with anyio.fail_after(10):
                    while not fake.requests_to(TRACK):  # noqa: ASYNC110 (sealed in memory, being sent)
                        await anyio.sleep(0.005)
            stats, letters = r.stats, list(r.dead_letters)
            await counter.wait_idle()
            disk.free()
            fake.clear_faults()
            async with billing.usage_recorder(outbox=path, flush_interval=3600) as again:
                found = again.stats.pending
                await again.flush(timeout=10)
                assert again.dead_letters == ()  # the memory-only letters were never in the file
            for letter in letters:  # what the application does with them: replay with the same key
                await billing.usage.track(
                    letter.customer_id,
                    letter.feature_key,
                    letter.quantity,
                    idempotency_key=letter.idempotency_key,
                )
            return stats, letters, found

    with (
        caplog.at_level(logging.WARNING, logger="billingos.recorder"),
        serve_counted(fake.app) as (url, counter),
    ):
        stats, letters, found = run_on(loop, main)
    in_letters = sum(letter.events for letter in letters)
    counted = sum(fake.usage_of(f"cus_{n}", "api_calls") for n in range(3))
    figure(
        f"{disk.name}, {loop}: {stats.recorded} recorded, {stats.pending} "
        f"in the outbox at close, {stats.not_durable} not durable -> {in_letters} in dead letters "
        f"({len(letters)} calls, code outbox_error), {found} found by the next recorder, {counted:.0f} "
        f"counted after replaying the letters, {EVENTS - stats.pending - in_letters} unaccounted "
        f"(before: 3000 of 3001 lost)"
    )
    assert (stats.recorded, stats.confirmed, stats.pending) == (EVENTS, 0, 1)
    assert stats.not_durable == stats.dead == in_letters == EVENTS - 1
    assert {letter.error.code for letter in letters} == {"outbox_error"}
    assert all(path in letter.error.message and letter.idempotency_key for letter in letters)
    assert sorted((lt.customer_id, lt.feature_key, lt.quantity) for lt in letters) == [
        (f"cus_{n}", "api_calls", 1000) for n in range(3)
    ]
    assert [lt.idempotency_key for lt in handed] == [lt.idempotency_key for lt in letters]
    assert found == 1
    assert counted == EVENTS  # every event: the one in the outbox, and the 3 000 replayed by key
    assert "3000 events in no file" in caplog.text
    assert "1 events unconfirmed (0 sealed calls, 1 events not yet sealed); they are in" in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_batches_sealed_in_memory_are_written_when_the_disk_recovers(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loop: str,
    figure: Callable[[str], None],
) -> None:
    disk = InjectedFullDisk(tmp_path, monkeypatch)
    fake = server()
    fake.inject(TRACK, Fault.error(503), times=None)
    path = str(tmp_path / "usage.db")

    async def main() -> tuple[RecorderStats, list[str], list[str]]:
        async with client(fake, url) as billing:
            async with billing.usage_recorder(outbox=path, flush_interval=0.05) as r:
                disk.fill()
                record_3000(r)
                with anyio.fail_after(10):
                    while not fake.requests_to(TRACK):  # noqa: ASYNC110
                        await anyio.sleep(0.005)
                with pytest.raises(BillingOSError):
                    await r.wait_durable(timeout=0.2)
                disk.free()
                await r.wait_durable(timeout=5)  # the memory-only batches are in the file now
                on_disk = [row[0] for row in _query(path, "SELECT key FROM batches")]
                stats = await r.aclose(timeout=0)
            sent = [request.json["idempotency_key"] for request in fake.requests_to(TRACK)]
            fake.clear_faults()
            async with billing.usage_recorder(outbox=path) as again:
                await again.flush(timeout=10)
            return stats, on_disk, sent

    with serve_counted(fake.app) as (url, _):
        stats, on_disk, sent = run_on(loop, main)
    counted = sum(fake.usage_of(f"cus_{n}", "api_calls") for n in range(3))
    figure(
        f"{loop}: {len(on_disk)} calls sealed in memory written once the disk recovered; {stats.pending} "
        f"events in the outbox at close, {stats.not_durable} not durable, {counted:.0f} counted after replay"
    )
    assert len(on_disk) == 3
    assert set(on_disk) <= set(sent)  # the keys already used: a replay is deduped
    assert (stats.pending, stats.not_durable, stats.dead) == (EVENTS - 1, 0, 0)
    assert counted == EVENTS - 1


def test_the_blocking_recorder_reports_what_a_full_disk_kept_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Callable[[str], None]
) -> None:
    disk = InjectedFullDisk(tmp_path, monkeypatch)
    fake = server()
    fake.inject(TRACK, Fault.error(503), times=None)
    path = str(tmp_path / "usage.db")
    with (
        serve_counted(fake.app) as (url, _),
        BillingOS(fake.secret_key, api_url=url, retry_policy=FAST) as billing,
        billing.usage_recorder(outbox=path, flush_interval=0.05) as r,
    ):
        disk.fill()
        for _ in range(10):
            r.record("cus_1", "api_calls")
        with pytest.raises(TimeoutError):  # an outbox_error, and still the TimeoutError it was
            r.wait_durable(timeout=0.2)
        stats = r.close(timeout=0.2)
    (letter,) = r.dead_letters
    figure(f"blocking: {stats.not_durable} of {stats.recorded} events not durable, all in one dead letter")
    assert (stats.recorded, stats.pending, stats.not_durable, letter.events) == (10, 0, 10, 10)
    assert letter.error.code == "outbox_error"


# -- item 2: an outbox that cannot be opened ----------------------------------------------------------------


@contextlib.contextmanager
def read_only_dir(tmp_path: Path, with_outbox: bool) -> Iterator[Path]:
    """A directory no one may write to (holding a closed outbox file when ``with_outbox``)."""
    if os.geteuid() != 0:
        where = tmp_path / "ro"
        where.mkdir()
        if with_outbox:
            _make_outbox(str(where / "usage.db"))
            (where / "usage.db").chmod(0o444)
        where.chmod(0o555)
        try:
            yield where
        finally:
            where.chmod(0o755)
        return
    with tmpfs("1m") as where:
        if with_outbox:
            _make_outbox(str(where / "usage.db"))
        done = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount a tmpfs read-only: {done.stderr.strip()}")
        yield where


def _make_outbox(path: str) -> None:
    async def main() -> None:
        fake = server()
        async with fake.client() as billing, billing.usage_recorder(outbox=path) as r:
            r.record("cus_0", "api_calls")
            await r.wait_durable(timeout=5)

    anyio.run(main)


def _opening_fails(path: str) -> BillingOSError:
    async def main() -> BillingOSError:
        fake = server()
        async with fake.client() as billing:
            with pytest.raises(BillingOSError) as caught:
                async with billing.usage_recorder(outbox=path):
                    pass
            return caught.value

    return anyio.run(main)


def _corrupt_page(path: str) -> None:
    _make_outbox(path)
    with open(path, "r+b") as f:  # page 2 onwards: the tables' b-tree pages
        f.seek(4096)
        f.write(b"\xff" * 4096)


OPEN_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing directory": (lambda d: str(d / "nowhere" / "usage.db"), "its directory does not exist"),
    "parent is a file": (
        lambda d: (d / "file").write_text("x") and str(d / "file" / "usage.db"),
        "a parent in its path is a file",
    ),
    "path is a directory": (lambda d: str(d), "it is a directory"),
    "not a database": (
        lambda d: (d / "usage.db").write_bytes(b"this is no database" * 300) and str(d / "usage.db"),
        "not a SQLite database, or it is corrupt",
    ),
    "wrong schema": (
        lambda d: (_query(d / "usage.db", "CREATE TABLE events (id INTEGER)"), str(d / "usage.db"))[1],
        "no such column",
    ),
    "read failure (corrupt page)": (
        lambda d: (_corrupt_page(str(d / "usage.db")), str(d / "usage.db"))[1],
        "malformed",
    ),
}


@pytest.mark.parametrize("case", list(OPEN_CASES))
def test_an_outbox_that_cannot_be_opened_is_an_outbox_error_naming_path_and_cause(
    case: str, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    make, cause = OPEN_CASES[case]
    path = make(tmp_path)
    error = _opening_fails(path)
    figure(f"{case}: {error}")
    assert error.code == "outbox_error"
    assert repr(path) in str(error)
    assert cause in str(error)
    assert not [t for t in __import__("threading").enumerate() if t.name == "billingos-outbox"]


@pytest.mark.parametrize("with_outbox", [False, True], ids=["new outbox", "existing outbox"])
def test_an_outbox_in_a_read_only_place_is_an_outbox_error(
    with_outbox: bool, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    with read_only_dir(tmp_path, with_outbox) as where:
        path = str(where / "usage.db")
        error = _opening_fails(path)
    figure(f"read-only directory, {'existing' if with_outbox else 'new'} outbox: {error}")
    assert error.code == "outbox_error"
    assert repr(path) in str(error)
    assert "read-only" in str(error) or "permission denied" in str(error)


def test_the_blocking_recorder_raises_the_same_outbox_error(tmp_path: Path) -> None:
    fake = server()
    path = str(tmp_path / "nowhere" / "usage.db")
    with (
        serve_counted(fake.app) as (url, _),
        BillingOS(fake.secret_key, api_url=url) as billing,
        pytest.raises(BillingOSError) as caught,
        billing.usage_recorder(outbox=path),
    ):
        pass
    assert caught.value.code == "outbox_error"
    assert repr(path) in str(caught.value)
    assert "does not exist" in str(caught.value)


# -- item 3: the lock is on the file, not the name ---------------------------------------------------------


def _alias(kind: str, real: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if kind == "symlink":
        link = real.parent / "link.db"
        link.symlink_to(real)
        return str(link)
    if kind == "hard link":
        link = real.parent / "hard.db"
        os.link(real, link)
        return str(link)
    if kind == "dotdot":
        (real.parent / "sub").mkdir()
        return str(real.parent / "sub" / ".." / real.name)
    monkeypatch.chdir(real.parent)
    return real.name  # relative


ALIASES = ["symlink", "hard link", "dotdot", "relative"]


@pytest.mark.parametrize("kind", ALIASES)
async def test_a_second_recorder_on_another_name_of_an_open_outbox_is_outbox_locked(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Callable[[str], None]
) -> None:
    fake = server()
    real = tmp_path / "usage.db"
    async with fake.client() as billing:
        async with billing.usage_recorder(outbox=str(real), flush_interval=3600) as first:
            first.record("cus_0", "api_calls", 2)
            await first.wait_durable(timeout=5)
            alias = _alias(kind, real, monkeypatch)
            with pytest.raises(BillingOSError) as caught:
                async with billing.usage_recorder(outbox=alias):
                    pass
            # the refused attempt took nothing from the first one: it still writes, seals and sends
            first.record("cus_0", "api_calls", 3)
            await first.wait_durable(timeout=5)
            await first.flush(timeout=5)
        async with billing.usage_recorder(outbox=alias) as again:  # free once the first one closed
            again.record("cus_1", "api_calls")
            await again.flush(timeout=5)
    figure(f"{kind}: {caught.value}")
    assert caught.value.code == "outbox_locked"
    assert repr(alias) in str(caught.value)
    assert fake.usage_of("cus_0", "api_calls") == 5
    assert fake.usage_of("cus_1", "api_calls") == 1
    assert _query(real, "PRAGMA integrity_check") == [("ok",)]


CHILD = textwrap.dedent(
    """
    import sys, anyio
    from billingos import BillingOSError
    from billingos._outbox import SQLiteOutbox, Staging

    async def main():
        outbox = SQLiteOutbox(Staging(), sys.argv[1], environment="test")
        try:
            await outbox.open()
        except BillingOSError as exc:
            print(exc.code)
        else:
            print("opened")
            await outbox.aclose()

    anyio.run(main)
    """
)


@pytest.mark.parametrize("kind", ALIASES)
async def test_another_process_on_another_name_of_an_open_outbox_is_outbox_locked(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Callable[[str], None]
) -> None:
    fake = server()
    real = tmp_path / "usage.db"

    def child(alias: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, alias], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    async with (
        fake.client() as billing,
        billing.usage_recorder(outbox=str(real), flush_interval=3600) as first,
    ):
        first.record("cus_0", "api_calls")
        await first.wait_durable(timeout=5)
        alias = _alias(kind, real, monkeypatch)
        while_open = await anyio.to_thread.run_sync(child, alias)
        await first.flush(timeout=5)
    after_close = await anyio.to_thread.run_sync(child, alias)
    figure(f"{kind}, another process: {while_open} while open, {after_close} after close")
    assert (while_open, after_close) == ("outbox_locked", "opened")
    assert fake.usage_of("cus_0", "api_calls") == 1
