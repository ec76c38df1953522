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

Every SQLite call happens on one dedicated writer thread (``billingos-outbox``), never on the event
loop; the loop submits work to it and waits for the results in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
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


class OutboxLockedError(BillingOSError):
    """Another recorder (in this or another process) has this outbox open."""


_IN_SQLITE = threading.Lock()
"""Held by every outbox writer thread while it is inside SQLite, and by ``os.fork()`` (below).

SQLite is not fork-safe while another thread is inside it: a child forked at that moment inherits
SQLite's own mutexes locked, and its first ``sqlite3.connect`` (a recorder with an outbox of its own)
blocks for ever. Forking waits until no writer is inside SQLite (a transaction: milliseconds).
"""


def _after_fork_in_child() -> None:
    global _IN_SQLITE
    _IN_SQLITE = threading.Lock()  # the parent's writers do not exist here


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
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
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
            self._confirms.append(key)
        self._wake.set()

    def bury(self, row: DeadRow) -> None:
        with self._ops_lock:
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

    # -- the writer thread ---------------------------------------------------------------------

    def _start(self) -> Loaded:
        self._lock_file()
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

    def _lock_file(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: one recorder per file is on the caller
            return
        fd = os.open(self._file + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutboxLockedError(
                f"The outbox {self.path!r} is in use by another usage recorder (in this or another "
                "process). Give each process its own outbox file.",
                code="outbox_locked",
            ) from None
        self._lock_fd = fd

    def _unlock_file(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock (so does the death of the process)
            self._lock_fd = None

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
        conn = sqlite3.connect(self._file, isolation_level=None, check_same_thread=False, timeout=10)
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
                except sqlite3.Error as exc:
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
                except sqlite3.Error as exc:
                    failed = self._report(exc)
            if not failed:
                self.error = None
            retry_in = 0.2 if failed else None
            if stopping and not failed and self._jobs.empty() and not self._has_ops():
                return
            if stopping and failed:
                logger.error("The usage outbox %s could not be written at close: %s", self.path, self.error)
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
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _mark_durable(self, watermark: int) -> None:
        with self._durable_cond:
            if watermark > self._durable:
                self._durable = watermark
                self._durable_cond.notify_all()

    def _persist(self, conn: sqlite3.Connection) -> None:
        """Write the staged tallies as ``events`` rows."""
        tallies, watermark = self.staging.drain()
        if tallies:
            now = time.time()
            try:
                with self._transaction(conn, "persist"):
                    conn.executemany(
                        "INSERT INTO events (customer_id, feature_key, quantity, events, recorded_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(c, f, q, n, now) for (c, f), (q, n) in tallies.items()],
                    )
            except BaseException:
                self.staging.restore(tallies)
                raise
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
                conn.executemany(
                    "INSERT INTO batches (key, customer_id, feature_key, quantity, events, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (b.key, b.customer_id, b.feature_key, b.quantity, b.events, b.created_at)
                        for b in batches
                    ],
                )
                conn.execute("DELETE FROM events")
        except BaseException:
            self.staging.restore(tallies)  # the transaction rolled back: the rows are still there too
            raise
        self._mark_durable(watermark)
        return batches

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


def _outbox_error(exc: BaseException, path: str) -> BaseException:
    if isinstance(exc, BillingOSError) or not isinstance(exc, Exception):
        return exc
    error = BillingOSError(f"The usage outbox {path!r} failed: {exc}", code="outbox_error")
    error.__cause__ = exc
    return error
