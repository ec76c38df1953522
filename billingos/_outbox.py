"""Where the usage recorder keeps events until BillingOS confirms them: in memory, or in a SQLite file.

The life of an event::

    record()  ->  Staging.tallies          in memory, per (customer, feature): [summed quantity, events]
              ->  ``events`` rows          SQLite only: the writer thread persists the tallies within ~1 ms
    seal      ->  ``batches`` row          one per (customer, feature) of the window, with its
                                           idempotency key, committed BEFORE the first send
    confirmed ->  row deleted              (a crash before the delete replays the key: deduped)
    permanent ->  ``dead_letters`` row     kept until the application clears it

Sealing moves every ``events`` row and every staged tally into ``batches`` in one transaction, so
an event is in exactly one place at any moment, and a batch's key and quantity never change once
written: that is what makes a replay after ``kill -9`` count every event exactly once.

When the disk refuses a seal (full, I/O error, read-only), the staged tallies are sealed in memory
instead (``unsaved``) and sent all the same: nothing waits on a broken disk. Those batches are written
to ``batches`` by the writer's next successful transaction; until then ``wait_durable`` does not count
them, and at close whatever is still in memory only is handed back (``not_written``) for the recorder to
report. The ``events`` rows already on disk stay there until a seal can commit, so no event is ever in
two places.

One recorder per file: the lock is taken on the database file itself (``flock``, by inode, so a
symlink, a hard link or another spelling of the path is the same file) and, in this process, in a
registry keyed by ``(st_dev, st_ino)``; ``<outbox>.lock`` is locked too, as earlier versions did.

Every SQLite call happens on one dedicated writer thread (``billingos-outbox``), never on the event
loop; the loop submits work to it and waits for the results in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import anyio
import attrs

from ._errors import BillingOSError

logger = logging.getLogger("billingos.recorder")

T = TypeVar("T")

Key = tuple[str, str]
"""``(customer_id, feature_key)``."""

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    quantity NOT NULL,              -- no declared type: an int stays an int, a float a float
    events INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    key TEXT PRIMARY KEY,           -- the idempotency key, fixed before the first attempt
    customer_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    quantity NOT NULL,
    events INTEGER NOT NULL,
    created_at REAL NOT NULL        -- wall clock: the server forgets keys after 24 h
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL             -- "environment": test or live, from the first recorder's key
);
CREATE TABLE IF NOT EXISTS dead_letters (
    key TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    quantity NOT NULL,
    events INTEGER NOT NULL,
    created_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    possibly_counted INTEGER NOT NULL,
    error_type TEXT NOT NULL,
    status_code INTEGER,
    code TEXT,
    message TEXT NOT NULL,
    request_id TEXT
);
"""


def new_key() -> str:
    """A fresh idempotency key for one coalesced track call."""
    return "rec_" + uuid.uuid4().hex


class Staging:
    """Events recorded but not yet sealed, coalesced per key, and the counters ``record()`` updates.

    Everything here is guarded by ``lock``: ``record()`` runs on any thread.
    """

    __slots__ = (
        "accepting",
        "dropped",
        "lock",
        "pending",
        "recorded",
        "signalled",
        "tallies",
        "unsealed",
        "wake",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tallies: dict[Key, list[Any]] = {}
        """``(customer, feature) -> [summed quantity, number of events]``."""
        self.recorded = 0
        """Events accepted so far (also the sequence number of the latest one)."""
        self.pending = 0
        """Events neither confirmed nor dead-lettered (staged, in the outbox, or in flight)."""
        self.unsealed = 0
        """Events not yet in a batch (staged here or in ``events`` rows)."""
        self.dropped = 0
        self.accepting = False
        self.signalled = False
        """True once ``wake`` was called for the current tallies (so it is called once per drain)."""
        self.wake: Callable[[], None] | None = None

    def drain(self) -> tuple[dict[Key, list[Any]], int]:
        """Take the staged tallies, and the number of events recorded up to them."""
        with self.lock:
            tallies = self.tallies
            self.tallies = {}  # always a new dict: the caller owns the old one, even when it is empty
            self.signalled = False
            return tallies, self.recorded

    def restore(self, tallies: dict[Key, list[Any]]) -> None:
        """Put back tallies that could not be written (they are merged with anything staged since)."""
        if not tallies:
            return
        with self.lock:
            for key, (quantity, events) in tallies.items():
                tally = self.tallies.get(key)
                if tally is None:
                    self.tallies[key] = [quantity, events]
                else:
                    tally[0] += quantity
                    tally[1] += events


@attrs.frozen
class Batch:
    """One coalesced track call: its key, fixed before the first attempt, never changes."""

    key: str
    customer_id: str
    feature_key: str
    quantity: float
    events: int
    created_at: float
    """Wall-clock time the key was fixed (the server dedupes a key for 24 h)."""
    replayed: bool = False
    """Loaded from the outbox at start: an earlier process may already have sent it."""


@attrs.frozen
class DeadRow:
    """A dead letter as the outbox stores it."""

    batch: Batch
    failed_at: float
    attempts: int
    possibly_counted: bool
    error_type: str
    status_code: int | None
    code: str | None
    message: str
    request_id: str | None

    def as_row(self) -> tuple[Any, ...]:
        b = self.batch
        return (
            *(b.key, b.customer_id, b.feature_key, b.quantity, b.events, b.created_at),
            *(self.failed_at, self.attempts, int(self.possibly_counted), self.error_type),
            *(self.status_code, self.code, self.message, self.request_id),
        )


_BURY = (
    "INSERT OR REPLACE INTO dead_letters (key, customer_id, feature_key, quantity, events, created_at, "
    "failed_at, attempts, possibly_counted, error_type, status_code, code, message, request_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LOAD_DEAD = (
    "SELECT key, customer_id, feature_key, quantity, events, created_at, failed_at, attempts, "
    "possibly_counted, error_type, status_code, code, message, request_id FROM dead_letters "
    "ORDER BY failed_at, rowid"
)


@attrs.frozen
class Loaded:
    """What a new recorder finds in its outbox."""

    batches: tuple[Batch, ...] = ()
    unsealed: int = 0
    dead: tuple[DeadRow, ...] = ()


@attrs.frozen
class NotWritten:
    """What a closed SQLite outbox holds in memory only (see :meth:`SQLiteOutbox.not_written`)."""

    batches: tuple[Batch, ...] = ()
    """Sealed in memory (the disk refused the seal), sent or not, never written."""
    staged: tuple[Batch, ...] = ()
    """Staged events the last write could not persist, sealed at close so they carry a key."""
    dead: tuple[DeadRow, ...] = ()
    """Dead letters whose row was never written."""
    error: BaseException | None = None
    """The writer's last error."""


def _seal_tallies(groups: dict[Key, list[Any]], now: float) -> list[Batch]:
    return [Batch(new_key(), c, f, q, n, now) for (c, f), (q, n) in groups.items()]


class Outbox:
    """The in-memory outbox (no ``outbox=`` path): nothing survives the process.

    The SQLite outbox below has the same methods. ``seal``, ``open`` and ``aclose`` are awaited on
    the event loop; ``confirm``, ``bury`` and ``forget`` return at once (the SQLite outbox applies
    them on its writer thread shortly after: a crash before that replays or re-buries, which is safe).
    """

    durable = False
    path: str | None = None

    def __init__(self, staging: Staging) -> None:
        self.staging = staging

    async def open(self) -> Loaded:
        return Loaded()

    async def seal(self) -> list[Batch]:
        tallies, _ = self.staging.drain()
        return _seal_tallies(tallies, time.time())

    def confirm(self, key: str) -> None:
        """BillingOS confirmed the batch: forget it."""

    def bury(self, row: DeadRow) -> None:
        """The batch failed for good: keep it as a dead letter."""

    def forget(self, keys: Iterable[str]) -> None:
        """The application cleared these dead letters."""

    def wait_durable(self, target: int, timeout: float | None) -> bool:
        """Block until the first ``target`` recorded events are written. Nothing is, in memory."""
        return True

    async def aclose(self) -> None:
        """Write what is left and release the file."""

    def not_written(self) -> NotWritten:
        """After :meth:`aclose`: what exists in this process only. In memory, the recorder buries it all."""
        return NotWritten()


class OutboxLockedError(BillingOSError):
    """Another recorder (in this or another process) has this outbox open."""


class SealedInMemoryOnly(BillingOSError):
    """A seal the disk refused while events already written to it wait to be sealed (``outbox_error``).

    ``batches`` are the staged events, sealed in memory and to be sent all the same; the events on disk
    stay there, to be sealed by a later seal (or the next recorder on the file).
    """

    def __init__(self, message: str, batches: list[Batch]) -> None:
        super().__init__(message, code="outbox_error")
        self.batches = batches


class OutboxNotWrittenError(BillingOSError, TimeoutError):
    """``wait_durable`` timed out because the disk refuses writes (``code="outbox_error"``).

    Both a ``BillingOSError`` and the ``TimeoutError`` ``wait_durable`` documents, so either ``except``
    catches it.
    """


_IN_SQLITE = threading.Lock()
"""Held by every outbox writer thread while it is inside SQLite, and by ``os.fork()`` (below).

SQLite is not fork-safe while another thread is inside it: a child forked at that moment inherits
SQLite's own mutexes locked, and its first ``sqlite3.connect`` (a recorder with an outbox of its own)
blocks for ever. Forking waits until no writer is inside SQLite (a transaction: milliseconds).
"""


_CLAIMED: dict[tuple[int, int], str] = {}
"""``(st_dev, st_ino)`` of every outbox file a recorder of this process has open -> its real path.

Checked BEFORE opening a file descriptor on the database: closing any descriptor of a file drops every
POSIX lock this process holds on it, SQLite's own included, so a refused second recorder must never
open (and close) the file another recorder of this process is using.
"""
_CLAIMED_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _IN_SQLITE, _CLAIMED_LOCK
    _IN_SQLITE = threading.Lock()  # the parent's writers do not exist here
    _CLAIMED_LOCK = threading.Lock()
    _CLAIMED.clear()  # the parent's recorders do not run here; their flock still guards the files


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _IN_SQLITE.acquire(),
        after_in_parent=lambda: _IN_SQLITE.release(),
        after_in_child=_after_fork_in_child,
    )


class SQLiteOutbox(Outbox):
    """A SQLite file in WAL mode, owned by one writer thread; one recorder per file at a time."""

    durable = True

    def __init__(self, staging: Staging, path: str, *, environment: str, fsync: bool = False) -> None:
        super().__init__(staging)
        self._environment = environment
        self.path = self._file = path
        self._real = path
        """The file itself (``os.path.realpath``), resolved when it is opened."""
        self._fsync = fsync
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._ops_lock = threading.Lock()
        self._confirms: list[str] = []
        self._buries: list[DeadRow] = []
        self._forgets: list[str] = []
        self._wake = threading.Event()
        self._stopping = False
        self._durable = 0
        self._durable_cond = threading.Condition()
        self._unsaved: dict[str, Batch] = {}
        """Batches sealed in memory because the disk refused the seal; guarded by ``_ops_lock``."""
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._db_fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self.error: BaseException | None = None
        """The last error the writer hit (it keeps retrying); ``None`` when healthy."""
        self.before_write: Callable[[str], None] | None = None
        """Test hook: called on the writer thread before each transaction, with its name."""
        staging.wake = self._wake.set

    # -- the event loop's side ---------------------------------------------------------------

    async def open(self) -> Loaded:
        return await anyio.to_thread.run_sync(self._start)

    async def seal(self) -> list[Batch]:
        future: Future[list[Batch]] = Future()
        self._jobs.put((self._seal, future))
        self._wake.set()
        return await anyio.to_thread.run_sync(self._result, future)

    def _result(self, future: Future[T]) -> T:
        while True:
            try:
                return future.result(timeout=0.5)
            except FutureTimeout:
                thread = self._thread
                if (thread is None or not thread.is_alive()) and not future.done():
                    raise BillingOSError(
                        f"The writer thread of the usage outbox {self.path!r} has stopped.",
                        code="outbox_error",
                    ) from None

    def confirm(self, key: str) -> None:
        with self._ops_lock:
            self._unsaved.pop(key, None)  # confirmed: it no longer needs a place on disk
            self._confirms.append(key)
        self._wake.set()

    def bury(self, row: DeadRow) -> None:
        with self._ops_lock:
            self._unsaved.pop(row.batch.key, None)  # its dead-letter row replaces it
            self._buries.append(row)
        self._wake.set()

    def forget(self, keys: Iterable[str]) -> None:
        with self._ops_lock:
            self._forgets.extend(keys)
        self._wake.set()

    def wait_durable(self, target: int, timeout: float | None) -> bool:
        with self._durable_cond:
            return (
                self._durable_cond.wait_for(
                    lambda: self._durable >= target or self._thread is None or not self._thread.is_alive(),
                    timeout,
                )
                and self._durable >= target
            )

    async def aclose(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        await anyio.to_thread.run_sync(thread.join)
        self._thread = None

    def not_written(self) -> NotWritten:
        """After :meth:`aclose`: what the disk never took, and so exists only in this process.

        Batches sealed in memory and never written, dead letters never written, and the staged tallies
        the last write could not persist, sealed here (each with a key) so they can be reported.
        """
        with self._ops_lock:
            unsaved, self._unsaved = list(self._unsaved.values()), {}
            buries, self._buries = self._buries, []
        tallies, _ = self.staging.drain()
        return NotWritten(
            batches=tuple(unsaved),
            staged=tuple(_seal_tallies(tallies, time.time())),
            dead=tuple(buries),
            error=self.error,
        )

    # -- the writer thread ---------------------------------------------------------------------

    def _start(self) -> Loaded:
        self._claim()
        opened: Future[Loaded] = Future()
        thread = threading.Thread(target=self._main, args=(opened,), name="billingos-outbox", daemon=True)
        self._thread = thread
        thread.start()
        try:
            return opened.result()
        except BaseException:
            thread.join()
            self._thread = None
            self._unlock_file()
            raise

    def _claim(self) -> None:
        """Open and lock the database file (by inode) and ``<outbox>.lock``, or raise why not."""
        real = os.path.realpath(self._file)
        with _CLAIMED_LOCK:
            try:
                before = os.stat(real)
            except FileNotFoundError:
                before = None  # created below
            except OSError as exc:
                raise _open_error(self._file, exc, "checking the file") from exc
            if before is not None and (before.st_dev, before.st_ino) in _CLAIMED:
                raise self._locked(f", as {_CLAIMED[(before.st_dev, before.st_ino)]!r}")
            try:
                fd = os.open(real, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise _open_error(self._file, exc, "opening the file") from exc
            lock_fd: int | None = None
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise BillingOSError(
                        f"The usage outbox {self.path!r} cannot be opened: it is not a regular file.",
                        code="outbox_error",
                    )
                self._flock(fd, self._file)
                try:  # what earlier versions lock: a recorder of theirs on this name is seen too
                    lock_fd = os.open(
                        self._file + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600
                    )
                except OSError as exc:
                    raise _open_error(
                        self._file, exc, f"creating its lock file {self._file + '.lock'!r}"
                    ) from exc
                self._flock(lock_fd, self._file)
            except BaseException:
                if lock_fd is not None:
                    os.close(lock_fd)
                os.close(fd)  # safe: no recorder of this process has this inode open (checked above)
                raise
            self._identity = (info.st_dev, info.st_ino)
            _CLAIMED[self._identity] = real
            self._real, self._db_fd, self._lock_fd = real, fd, lock_fd

    def _flock(self, fd: int, path: str) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the in-process registry is the only lock
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._locked(" (in this or another process)") from None
        except OSError as exc:
            raise _open_error(path, exc, "locking the file") from exc

    def _locked(self, where: str) -> OutboxLockedError:
        return OutboxLockedError(
            f"The outbox {self.path!r} is in use by another usage recorder{where}: the same file, whatever "
            "its name (symlink, hard link, relative path). Give each process its own outbox file.",
            code="outbox_locked",
        )

    def _unlock_file(self) -> None:
        """Release the locks (called after the SQLite connection is closed; the death of the process
        releases them too)."""
        for name in ("_lock_fd", "_db_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)
        if self._identity is not None:
            with _CLAIMED_LOCK:
                _CLAIMED.pop(self._identity, None)
            self._identity = None

    def _main(self, opened: Future[Loaded]) -> None:
        try:
            with _IN_SQLITE:
                conn = self._connect()
        except BaseException as exc:
            opened.set_exception(_outbox_error(exc, self._file))
            return
        try:
            try:
                with _IN_SQLITE:
                    loaded = self._load(conn)
            except BaseException as exc:
                opened.set_exception(_outbox_error(exc, self._file))
                return
            opened.set_result(loaded)
            self._serve(conn)
        except BaseException as exc:  # pragma: no cover - a bug: fail the waiters rather than hang them
            logger.exception("The writer thread of the usage outbox %s stopped", self.path)
            self.error = exc
            raise
        finally:
            with _IN_SQLITE:
                conn.close()
            self._unlock_file()
            while True:  # nothing runs the jobs any more: fail them
                try:
                    _, future = self._jobs.get_nowait()
                except queue.Empty:
                    break
                future.set_exception(
                    BillingOSError(f"The usage outbox {self.path!r} is closed.", code="outbox_error")
                )
            with self._durable_cond:
                self._durable_cond.notify_all()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._real, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BillingOSError(
                    f"The outbox {self.path!r} was written by a newer billingos (schema {version}).",
                    code="outbox_error",
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('environment', ?)", (self._environment,)
            )
            (environment,) = conn.execute("SELECT value FROM meta WHERE name = 'environment'").fetchone()
            if environment != self._environment:
                raise BillingOSError(
                    f"The outbox {self._file!r} holds usage for the {environment!r} environment; this client "
                    f"uses a {self._environment!r} key. Use another file (or the matching key).",
                    code="outbox_mismatch",
                )
        except BaseException:
            conn.close()
            raise
        return conn

    def _load(self, conn: sqlite3.Connection) -> Loaded:
        batches = tuple(
            Batch(key, c, f, q, n, created, replayed=True)
            for key, c, f, q, n, created in conn.execute(
                "SELECT key, customer_id, feature_key, quantity, events, created_at FROM batches "
                "ORDER BY created_at, rowid"
            )
        )
        unsealed = conn.execute("SELECT COALESCE(SUM(events), 0) FROM events").fetchone()[0]
        dead = tuple(
            DeadRow(
                Batch(row[0], row[1], row[2], row[3], row[4], row[5], replayed=True),
                failed_at=row[6],
                attempts=row[7],
                possibly_counted=bool(row[8]),
                error_type=row[9],
                status_code=row[10],
                code=row[11],
                message=row[12],
                request_id=row[13],
            )
            for row in conn.execute(_LOAD_DEAD)
        )
        return Loaded(batches, int(unsealed), dead)

    def _serve(self, conn: sqlite3.Connection) -> None:
        retry_in: float | None = None
        while True:
            self._wake.wait(retry_in)
            self._wake.clear()
            stopping = self._stopping
            failed = False
            with _IN_SQLITE:
                try:
                    self._persist(conn)
                except _DISK_ERRORS as exc:
                    failed = self._report(exc)
                while True:
                    try:
                        work, future = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        result = work(conn)
                    except BaseException as exc:
                        future.set_exception(_outbox_error(exc, self._file))
                    else:
                        future.set_result(result)
                try:
                    self._apply_ops(conn)
                except _DISK_ERRORS as exc:
                    failed = self._report(exc)
            if not failed:
                self.error = None
            retry_in = 0.2 if failed else None
            if stopping and not failed and self._jobs.empty() and not self._has_ops():
                return
            if stopping and failed:
                logger.error(
                    "The usage outbox %s could not be written at close: %s (the recorder reports what it "
                    "holds in memory only)",
                    self.path,
                    self.error,
                )
                return

    def _report(self, exc: BaseException) -> bool:
        if self.error is None or str(self.error) != str(exc):
            logger.error("The usage outbox %s could not be written (will retry): %s", self.path, exc)
        self.error = exc
        return True

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection, name: str) -> Iterator[None]:
        if self.before_write is not None:
            self.before_write(name)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")  # a full disk often fails here, not at the INSERT
        except BaseException:
            # SQLITE_FULL / SQLITE_IOERR may already have rolled back (then ROLLBACK itself fails); a
            # transaction left open would be committed later with this one's half inside it.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _mark_durable(self, watermark: int) -> None:
        with self._durable_cond:
            if watermark > self._durable:
                self._durable = watermark
                self._durable_cond.notify_all()

    def _persist(self, conn: sqlite3.Connection) -> None:
        """Write the staged tallies as ``events`` rows, and the batches sealed in memory as ``batches``."""
        tallies, watermark = self.staging.drain()
        with self._ops_lock:
            unsaved = list(self._unsaved.values())
        if tallies or unsaved:
            now = time.time()
            try:
                with self._transaction(conn, "persist"):
                    conn.executemany(
                        "INSERT INTO events (customer_id, feature_key, quantity, events, recorded_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(c, f, q, n, now) for (c, f), (q, n) in tallies.items()],
                    )
                    conn.executemany(_INSERT_BATCH, [_batch_row(b) for b in unsaved])
            except BaseException:
                self.staging.restore(tallies)
                raise
            if unsaved:
                with self._ops_lock:  # a confirm or bury since then queued its own DELETE
                    for batch in unsaved:
                        self._unsaved.pop(batch.key, None)
                logger.warning(
                    "The usage outbox %s is writable again: %d calls kept in memory only are now in it.",
                    self.path,
                    len(unsaved),
                )
        self._mark_durable_unless_unsaved(watermark)

    def _mark_durable_unless_unsaved(self, watermark: int) -> None:
        with self._ops_lock:
            if self._unsaved:
                return  # events sealed in memory are older than the watermark: not all of it is on disk
        self._mark_durable(watermark)

    def _seal(self, conn: sqlite3.Connection) -> list[Batch]:
        """Move every unsealed event (rows and staged tallies) into new batches, in one transaction."""
        tallies, watermark = self.staging.drain()
        try:
            with self._transaction(conn, "seal"):
                groups = {key: [q, n] for key, (q, n) in tallies.items()}
                for c, f, q, n in conn.execute(
                    "SELECT customer_id, feature_key, quantity, events FROM events"
                ):
                    tally = groups.get((c, f))
                    if tally is None:
                        groups[(c, f)] = [q, n]
                    else:
                        tally[0] += q
                        tally[1] += n
                batches = _seal_tallies(groups, time.time())
                conn.executemany(_INSERT_BATCH, [_batch_row(b) for b in batches])
                conn.execute("DELETE FROM events")
        except _DISK_ERRORS as exc:
            # The disk refused: seal in memory what only memory holds, and send it anyway. The rows on
            # disk stay there (rolled back), to be sealed once the disk takes writes again.
            self._report(exc)
            batches = _seal_tallies(tallies, time.time())
            if batches:
                with self._ops_lock:
                    self._unsaved.update((b.key, b) for b in batches)
                logger.warning(
                    "The usage outbox %s could not be written (%s): %d events (%d calls) are sealed in "
                    "memory only and sent anyway; they are not durable until the disk takes writes again.",
                    self.path,
                    exc,
                    sum(b.events for b in batches),
                    len(batches),
                )
            on_disk = self._events_on_disk(conn)
            if on_disk:
                error = SealedInMemoryOnly(
                    f"The usage outbox {self.path!r} could not be written ({exc}): "
                    + (f"{on_disk} events" if on_disk > 0 else "the events")
                    + " already in it cannot be sealed now; they stay there and are sent once the disk takes "
                    "writes again (or by the next recorder on this file).",
                    batches,
                )
                error.__cause__ = exc
                raise error from exc
            return batches
        except BaseException:
            self.staging.restore(tallies)  # the transaction rolled back: the rows are still there too
            raise
        self._mark_durable_unless_unsaved(watermark)
        return batches

    def _events_on_disk(self, conn: sqlite3.Connection) -> int:
        """How many events the ``events`` rows hold (-1: unknown, the read failed too)."""
        try:
            return int(conn.execute("SELECT COALESCE(SUM(events), 0) FROM events").fetchone()[0])
        except _DISK_ERRORS:
            return -1

    def _has_ops(self) -> bool:
        with self._ops_lock:
            return bool(self._confirms or self._buries or self._forgets)

    def _apply_ops(self, conn: sqlite3.Connection) -> None:
        with self._ops_lock:
            confirms, self._confirms = self._confirms, []
            buries, self._buries = self._buries, []
            forgets, self._forgets = self._forgets, []
        if not (confirms or buries or forgets):
            return
        try:
            with self._transaction(conn, "apply"):
                if buries:
                    conn.executemany(_BURY, [r.as_row() for r in buries])
                gone = [(key,) for key in confirms] + [(r.batch.key,) for r in buries]
                conn.executemany("DELETE FROM batches WHERE key = ?", gone)
                conn.executemany("DELETE FROM dead_letters WHERE key = ?", [(key,) for key in forgets])
        except BaseException:
            with self._ops_lock:  # keep them for the next round
                self._confirms[:0] = confirms
                self._buries[:0] = buries
                self._forgets[:0] = forgets
            raise


_DISK_ERRORS = (sqlite3.Error, OSError)
"""What a write can fail with when the disk, not the program, is at fault (full, I/O, read-only...)."""

_INSERT_BATCH = (
    "INSERT OR IGNORE INTO batches (key, customer_id, feature_key, quantity, events, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _batch_row(b: Batch) -> tuple[Any, ...]:
    return (b.key, b.customer_id, b.feature_key, b.quantity, b.events, b.created_at)


_SQLITE_HINTS = {
    "SQLITE_NOTADB": "it is not a SQLite database, or it is corrupt",
    "SQLITE_CORRUPT": "the file is corrupt",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "the disk failed to read or write",
    "SQLITE_READONLY": "the file or its directory is read-only",
    "SQLITE_CANTOPEN": "SQLite cannot open it or create its -wal/-shm files next to it",
    "SQLITE_PERM": "permission denied",
}

_OS_HINTS = {
    errno.ENOENT: "its directory does not exist",
    errno.ENOTDIR: "a parent in its path is a file, not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.EISDIR: "it is a directory",
    errno.ENOSPC: "the disk is full",
    errno.EIO: "the disk failed to read or write",
    errno.ENOLCK: "the file system does not support locks",
}


def _open_error(path: str, exc: OSError, doing: str) -> BillingOSError:
    cause = _OS_HINTS.get(exc.errno or 0, exc.strerror or "error")
    return BillingOSError(
        f"The usage outbox {path!r} cannot be opened: {cause} ({doing}: {exc}).", code="outbox_error"
    )


def _outbox_error(exc: BaseException, path: str) -> BaseException:
    if isinstance(exc, BillingOSError) or not isinstance(exc, Exception):
        return exc
    hint = None
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or ""  # "SQLITE_IOERR_WRITE" -> "SQLITE_IOERR"
        hint = _SQLITE_HINTS.get("_".join(name.split("_")[:2]))
    elif isinstance(exc, OSError):
        hint = _OS_HINTS.get(exc.errno or 0)
    detail = f"{exc} ({hint})" if hint else str(exc)
    error = BillingOSError(f"The usage outbox {path!r} failed: {detail}", code="outbox_error")
    error.__cause__ = exc
    return error
