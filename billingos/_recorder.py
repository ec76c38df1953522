"""The background usage recorder: ``record()`` returns at once; BillingOS counts every event exactly once.

::

    record()  (any thread, ~1 µs, no I/O)       staged: summed per (customer, feature)
      |   every flush_interval, or flush()
      v
    seal: one batch per (customer, feature),    written to the outbox (SQLite) BEFORE any send
          with an idempotency key fixed for good
      |   at most max_concurrency at once
      v
    usage.track(..., idempotency_key=key, max_retries=0)
      |-- 2xx -------------------------------> confirmed: forgotten
      |-- permanent 4xx ---------------------> dead letter (list, callback, outbox)
      '-- network / 5xx / 429 --> backoff, same key, until retry_deadline --> dead letter

The recorder is the only retry layer: it calls ``usage.track`` with ``max_retries=0`` and retries
itself, with the same key, across flush windows, without holding a concurrency slot while it waits.
See ``docs/recorder.md`` for the guarantees, their limits, and the figures.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import os
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, TypeVar

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from . import _budget, _errors
from . import _validate as check
from ._errors import (
    AuthenticationError,
    AuthorizationError,
    BillingOSError,
    ConflictError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    ValidationError,
)
from ._outbox import (
    Batch,
    DeadRow,
    Loaded,
    NotWritten,
    Outbox,
    OutboxNotWrittenError,
    SealedInMemoryOnly,
    SQLiteOutbox,
    Staging,
)
from ._resources._base import Unpack
from ._response import RateLimit
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from typing import Self

    from ._resources import AsyncUsage

__all__ = [
    "DeadLetter",
    "RecorderFullError",
    "RecorderOptions",
    "RecorderStats",
    "SyncUsageRecorder",
    "UsageRecorder",
]

logger = logging.getLogger("billingos.recorder")

_T = TypeVar("_T")


class RecorderClient(Protocol):
    """What a recorder needs of its client (``AsyncBillingOS`` is one): it depends on this, not the class."""

    @property
    def environment(self) -> str: ...
    @property
    def is_closed(self) -> bool: ...
    @property
    def usage(self) -> AsyncUsage: ...


class TaskStarter(Protocol):
    """Starts a task on the blocking client's loop from another thread (anyio's ``start_task``)."""

    def start_task(self, func: Callable[..., Awaitable[Any]], *args: Any) -> tuple[Future[Any], Any]: ...


class RecorderHost(Protocol):
    """What a blocking recorder needs of the blocking client (``BillingOS`` builds one for it)."""

    def start(self) -> tuple[TaskStarter, RecorderClient]:
        """Start the loop if needed; what starts tasks on it, and the client the recorder sends through."""
        ...

    def run(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call()`` on the loop thread and wait for it."""
        ...


OnFull = Literal["raise", "drop"]

SAFE_KEY_AGE = 23 * 3600.0
"""A key older than this is never sent again: BillingOS forgets idempotency keys after 24 h."""

_INF = math.inf
_MAX_QUANTITY = 2.0**63  # beyond this, JSON readers lose precision or overflow: let the slow path decide


class RecorderFullError(BillingOSError):
    """``record()`` refused an event: ``max_pending`` events are already waiting for BillingOS.

    Raised only with ``on_full="raise"`` (the default); with ``on_full="drop"`` the event is
    dropped and counted in ``stats.dropped`` instead.

    Example::

        try:
            recorder.record("user_42", "api_calls")
        except billingos.RecorderFullError:
            metrics.increment("usage_backlog_full")   # BillingOS has been unreachable for a while
    """


class RecorderOptions(TypedDict, total=False):
    """Settings of a usage recorder, passed as keywords to ``billing.usage_recorder(...)``.

    Example::

        async with billing.usage_recorder(outbox="/var/lib/app/usage.db", flush_interval=2.0) as r:
            r.record("user_42", "api_calls")
    """

    outbox: str | os.PathLike[str] | None
    """A SQLite file that keeps events until BillingOS confirms them (created if missing; one
    recorder per file at a time). ``None`` (default): in memory, lost if the process dies."""
    flush_interval: float
    """Seconds of one coalescing window: events of the same (customer, feature) within it become one
    ``usage.track`` call. Default 1.0."""
    max_concurrency: int
    """Track calls in flight at once. Default 8."""
    max_pending: int
    """Events recorded but not yet confirmed (or dead-lettered) beyond which ``record()`` refuses
    more (see ``on_full``). Default 100 000."""
    on_full: OnFull
    """``"raise"`` (default): ``record()`` raises :class:`RecorderFullError` when full; ``"drop"``:
    it drops the event, counts it in ``stats.dropped`` and returns ``False``."""
    retry_deadline: float
    """Seconds after a call's first attempt during which transient failures (network, 5xx, 429) are
    retried; then it is dead-lettered. Default 600; at most 23 h (BillingOS forgets keys after 24 h)."""
    retry_policy: RetryPolicy | None
    """Backoff between the recorder's retries (``Retry-After`` is always honoured). Default
    ``RetryPolicy(initial_backoff=0.5, max_backoff=30)``."""
    timeout: float | None
    """Seconds per track attempt; ``None`` (default): the client's timeout."""
    on_dead_letter: Callable[[DeadLetter], object] | None
    """Called with each :class:`DeadLetter`, on the recorder's event loop (keep it quick, no
    blocking I/O). An exception it raises is logged and ignored."""
    close_timeout: float
    """Seconds ``async with`` / ``close()`` waits for pending events before giving up. Default 10."""
    max_dead_letters: int
    """Dead letters kept in ``recorder.dead_letters`` (oldest forgotten first; the outbox keeps them
    all until :meth:`UsageRecorder.clear_dead_letters`). Default 10 000."""
    outbox_fsync: bool
    """``True``: fsync every outbox commit (``synchronous=FULL``), so events survive a power cut or an
    OS crash too, at ~1-10 ms per commit. ``False`` (default, ``synchronous=NORMAL`` in WAL mode):
    a committed event survives the process being killed, not the machine losing power."""


@attrs.frozen
class _Settings:
    outbox: str | None = None
    flush_interval: float = 1.0
    max_concurrency: int = 8
    max_pending: int = 100_000
    on_full: OnFull = "raise"
    retry_deadline: float = 600.0
    retry_policy: RetryPolicy = attrs.field(
        factory=lambda: RetryPolicy(initial_backoff=0.5, max_backoff=30.0)
    )
    timeout: float | None = None
    on_dead_letter: Callable[[DeadLetter], object] | None = None
    close_timeout: float = 10.0
    max_dead_letters: int = 10_000
    outbox_fsync: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> _Settings:
        unknown = sorted(set(options) - set(RecorderOptions.__annotations__))
        if unknown:
            raise _invalid(
                f"Unknown usage recorder option(s): {', '.join(unknown)}. "
                f"Known: {', '.join(sorted(RecorderOptions.__annotations__))}."
            )
        values: dict[str, Any] = {}
        for name, value in options.items():
            if value is None and name not in ("outbox", "timeout", "on_dead_letter", "retry_policy"):
                continue  # None means the default, as everywhere in the SDK
            values[name] = value
        if values.get("outbox") is not None:
            outbox = values["outbox"]
            if not isinstance(outbox, (str, os.PathLike)):
                raise _invalid(f"outbox must be a file path or None, not {type(outbox).__name__}.")
            values["outbox"] = os.fspath(outbox)
            if not values["outbox"] or values["outbox"] == ":memory:":
                raise _invalid("outbox must name a file; pass None for an in-memory recorder.")
        for name in ("flush_interval", "close_timeout"):
            if name in values:
                values[name] = float(check.positive_number(name, values[name]))
        if values.get("timeout") is not None:
            values["timeout"] = float(check.positive_number("timeout", values["timeout"]))
        if "retry_deadline" in values:
            deadline = float(check.positive_number("retry_deadline", values["retry_deadline"]))
            if deadline > SAFE_KEY_AGE:
                raise _invalid(
                    f"retry_deadline must be at most {SAFE_KEY_AGE:.0f} s: BillingOS forgets idempotency "
                    "keys after 24 h, so a later retry could count twice."
                )
            values["retry_deadline"] = deadline
        for name, high in (("max_concurrency", 10_000), ("max_pending", 10**12), ("max_dead_letters", 10**9)):
            if name in values:
                values[name] = check.integer(name, values[name], low=1, high=high)
        if values.get("on_full", "raise") not in ("raise", "drop"):
            raise _invalid(f"on_full must be 'raise' or 'drop', got {values['on_full']!r}.")
        if values.get("retry_policy") is None:
            values.pop("retry_policy", None)
        elif not isinstance(values["retry_policy"], RetryPolicy):
            raise _invalid(
                f"retry_policy must be a RetryPolicy, not {type(values['retry_policy']).__name__}."
            )
        callback = values.get("on_dead_letter")
        if callback is not None and not callable(callback):
            raise _invalid("on_dead_letter must be callable.")
        if not isinstance(values.get("outbox_fsync", False), bool):
            raise _invalid("outbox_fsync must be a bool.")
        return cls(**values)


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_argument")


@attrs.frozen
class RecorderStats:
    """Counters of a :class:`UsageRecorder` since it was opened (a snapshot; read ``recorder.stats`` again).

    Example::

        s = recorder.stats
        print(f"{s.recorded} events in {s.sent_calls} calls, {s.pending} pending, {s.dead} dead")
    """

    recorded: int = 0
    """Events ``record()`` accepted."""
    dropped: int = 0
    """Events ``record()`` dropped because the recorder was full (``on_full="drop"``)."""
    coalesced: int = 0
    """Events that shared a track call with an earlier event of the same window (no call of their own)."""
    sent_calls: int = 0
    """Track calls BillingOS confirmed (each with its own idempotency key)."""
    confirmed: int = 0
    """Events BillingOS confirmed."""
    retried: int = 0
    """Track attempts that were retries (same key) of an earlier failed attempt."""
    in_flight: int = 0
    """Track attempts awaiting an answer right now."""
    pending: int = 0
    """Events neither confirmed nor dead-lettered: staged, in the outbox, waiting to retry or in flight.
    After closing: what is left in the outbox file (the next recorder on it sends it); always 0 without
    an outbox."""
    dead: int = 0
    """Events dead-lettered by this recorder (``not_durable`` included)."""
    not_durable: int = 0
    """After closing: events that are in no file. Neither confirmed by BillingOS nor in the outbox
    (the disk refused them, or there is no outbox), they exist only in :attr:`UsageRecorder.dead_letters`
    (code ``"outbox_error"`` or ``"recorder_closed"``) and ``on_dead_letter`` got them: replay them
    with their idempotency key before the process exits, or they are lost. 0 means every event recorded
    was confirmed, dead-lettered on the outbox, or is in the outbox file."""


@attrs.frozen(eq=False)
class DeadLetter:
    """A coalesced track call the recorder gave up on, with the error that decided it.

    Replaying it with the same key is always safe: BillingOS counts a key at most once (for 24 h).

    Example::

        for letter in recorder.dead_letters:
            if isinstance(letter.error, billingos.QuotaExceededError):
                notify_sales(letter.customer_id)
            else:  # e.g. the deadline passed while BillingOS was down
                await billing.usage.track(letter.customer_id, letter.feature_key, letter.quantity,
                                          idempotency_key=letter.idempotency_key)
        recorder.clear_dead_letters()
    """

    customer_id: str
    feature_key: str
    quantity: float
    """The summed quantity of the call."""
    events: int
    """How many recorded events it carried."""
    idempotency_key: str
    error: BillingOSError
    """The last error: a permanent one (``QuotaExceededError``, ``NotFoundError``, ``ValidationError``,
    ``AuthenticationError``...), the transient one that outlived ``retry_deadline``, or code
    ``"recorder_closed"`` / ``"idempotency_window_expired"``."""
    attempts: int
    """Attempts made by this process (0 for a call it never sent)."""
    possibly_counted: bool
    """An attempt may have been counted although no success was seen (lost response, timeout, 5xx,
    or a call replayed from the outbox). Replay with ``idempotency_key`` to be sure, never without."""
    failed_at: datetime


@attrs.define(eq=False)
class _Flight:
    """A batch on its way: attempts, deadline and the window (``gen``) it belongs to."""

    batch: Batch
    gen: int
    attempts: int = 0
    first_attempt: float | None = None
    expires: float = _INF
    """Monotonic time after which the key is too old to send (``SAFE_KEY_AGE``)."""
    possibly_counted: bool = False
    last_error: BillingOSError | None = None


def _is_permanent(exc: BillingOSError) -> bool:
    if isinstance(
        exc, (ValidationError, NotFoundError, AuthenticationError, AuthorizationError, ConflictError)
    ):
        return True
    if isinstance(exc, (NetworkError, ServerError, RateLimitError, ResponseDecodeError)):
        return False
    return exc.status_code != 408  # other statuses (3xx, 4xx) will not change by retrying


def _may_have_counted(exc: BillingOSError) -> bool:
    if isinstance(exc, NetworkError):
        return bool(getattr(exc, "_maybe_sent", True))
    return isinstance(exc, (ServerError, ResponseDecodeError))


def _expired_error() -> BillingOSError:
    return BillingOSError(
        "This call's idempotency key is more than 23 h old: BillingOS may have forgotten it, so sending it "
        "again could count it twice. Check the customer's usage, then replay or drop it.",
        code="idempotency_window_expired",
    )


def _rebuild_error(row: DeadRow) -> BillingOSError:
    cls = getattr(_errors, row.error_type, None)
    if not (isinstance(cls, type) and issubclass(cls, BillingOSError)):
        cls = BillingOSError
    return cls(row.message, status_code=row.status_code, code=row.code, request_id=row.request_id)


class UsageRecorder:
    """Records usage in the background: coalesced per window, retried, counted exactly once.

    Get one from ``billing.usage_recorder(**options)`` (see :class:`RecorderOptions`) and use it as an
    async context manager; :meth:`record` is a plain method you can call from async code and from
    any thread. Every ``usage.track`` it makes carries an idempotency key fixed before the first
    attempt (and written to the outbox first, when there is one), so retries, and replays after a
    crash, are counted once.

    Example::

        async with AsyncBillingOS() as billing:
            async with billing.usage_recorder(outbox="usage.db") as recorder:
                recorder.record("user_42", "api_calls")        # no await, no I/O
                ...
                await recorder.flush()                          # everything so far is confirmed
    """

    def __init__(self, client: RecorderClient, **options: Unpack[RecorderOptions]) -> None:
        self._settings = settings = _Settings.from_options(options)
        self._client = client
        self._staging = staging = Staging()
        self._outbox: Outbox = (
            SQLiteOutbox(
                staging, settings.outbox, environment=client.environment, fsync=settings.outbox_fsync
            )
            if settings.outbox is not None
            else Outbox(staging)
        )
        self._max_pending = settings.max_pending
        self._drop_when_full = settings.on_full == "drop"
        self._phase: Literal["new", "open", "closing", "closed"] = "new"
        # Everything below is touched on the event loop only (dead letters: under staging.lock too).
        self._flights: dict[str, _Flight] = {}
        self._ready: deque[_Flight] = deque()
        self._delayed: list[tuple[float, int, _Flight]] = []
        self._order = itertools.count()
        self._gates: dict[str, float] = {}
        self._global_gate = 0.0
        self._outstanding: dict[int, int] = {}
        self._gen = 0
        self._last_batches = 0  # track calls the last seal made: what the next window will cost, roughly
        self._in_flight = 0
        self._broken: BillingOSError | None = None
        self._dead: deque[DeadLetter] = deque(maxlen=settings.max_dead_letters)
        self._counts = {
            "coalesced": 0,
            "sent_calls": 0,
            "confirmed": 0,
            "retried": 0,
            "dead": 0,
            "not_durable": 0,
        }
        self._outer: TaskGroup | None = None
        self._inner: TaskGroup | None = None

    # -- recording (any thread) ----------------------------------------------------------------

    def record(self, customer_id: str, feature_key: str, quantity: float = 1) -> bool:
        """Record ``quantity`` units of ``feature_key`` used by ``customer_id``; returns at once.

        Never waits on the network or the disk: the event is summed into the current window (and,
        with an outbox, written to it by a background thread within about a millisecond; use
        :meth:`wait_durable` to wait for that). Thread-safe.

        Returns ``True``, or ``False`` when the recorder is full and ``on_full="drop"``.

        Raises:
            ValidationError: an empty id or a quantity that is not a finite number > 0.
            RecorderFullError: ``max_pending`` events are waiting (``on_full="raise"``).
            BillingOSError: the recorder is not open (code ``"recorder_closed"`` once closed).

        Example::

            recorder.record("user_42", "api_calls")          # 1 unit
            recorder.record("user_42", "gb_exported", 0.25)
        """
        if type(customer_id) is not str or not customer_id or customer_id.isspace():
            customer_id = check.text("customer_id", customer_id)
        if type(feature_key) is not str or not feature_key or feature_key.isspace():
            feature_key = check.text("feature_key", feature_key)
        kind: type = type(quantity)
        if not ((kind is int or kind is float) and 0 < quantity < _MAX_QUANTITY):
            quantity = check.positive_number("quantity", quantity)
        staging = self._staging
        wake = None
        with staging.lock:
            if not staging.accepting:
                raise self._refusal()
            if staging.pending >= self._max_pending:
                if self._drop_when_full:
                    staging.dropped += 1
                    return False
                raise RecorderFullError(
                    f"The usage recorder is full: {staging.pending} events are waiting for BillingOS "
                    f"(max_pending={self._max_pending}). Is BillingOS reachable? Pass on_full='drop' to "
                    "drop and count events instead.",
                    code="recorder_full",
                )
            staging.recorded += 1
            staging.pending += 1
            staging.unsealed += 1
            key = (customer_id, feature_key)
            tally = staging.tallies.get(key)
            if tally is None:
                staging.tallies[key] = [quantity, 1]
            else:
                tally[0] += quantity
                tally[1] += 1
            if not staging.signalled:
                staging.signalled = True
                wake = staging.wake
        if wake is not None:
            wake()
        return True

    def _refusal(self) -> BillingOSError:
        if self._phase == "new":
            return BillingOSError(
                "This usage recorder is not open yet: use `async with billing.usage_recorder() as recorder`.",
                code="recorder_not_open",
            )
        return BillingOSError("This usage recorder is closed; open a new one.", code="recorder_closed")

    # -- reading ---------------------------------------------------------------------------------

    @property
    def stats(self) -> RecorderStats:
        """A snapshot of the counters (see :class:`RecorderStats`). Thread-safe.

        Example::

            print(recorder.stats.pending)
        """
        staging = self._staging
        with staging.lock:
            recorded, dropped, pending = staging.recorded, staging.dropped, staging.pending
        return RecorderStats(
            recorded=recorded, dropped=dropped, pending=pending, in_flight=self._in_flight, **self._counts
        )

    @property
    def dead_letters(self) -> tuple[DeadLetter, ...]:
        """The calls given up on, oldest first (also those a previous recorder left in the outbox).

        Example::

            for letter in recorder.dead_letters:
                log.error("usage not counted: %s %s x%s: %s", letter.customer_id,
                          letter.feature_key, letter.quantity, letter.error)
        """
        with self._staging.lock:
            return tuple(self._dead)

    def clear_dead_letters(self, letters: Iterable[DeadLetter] | None = None) -> int:
        """Forget these dead letters (default: all), here and in the outbox; returns how many.

        Example::

            handled = [l for l in recorder.dead_letters if replay(l)]
            recorder.clear_dead_letters(handled)
        """
        with self._staging.lock:
            if letters is None:
                gone = list(self._dead)
                self._dead.clear()
            else:
                wanted = {id(letter) for letter in letters}
                gone = [letter for letter in self._dead if id(letter) in wanted]
                kept = [letter for letter in self._dead if id(letter) not in wanted]
                self._dead.clear()
                self._dead.extend(kept)
        if gone:
            self._outbox.forget(letter.idempotency_key for letter in gone)
        return len(gone)

    @property
    def outbox(self) -> str | None:
        """The outbox file, or ``None`` for an in-memory recorder.

        Example::

            log.info("usage outbox: %s", recorder.outbox or "memory only")
        """
        return self._outbox.path

    # -- waiting ---------------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (mirrors the sync API)
        """Send what is recorded now, and wait until BillingOS confirmed (or dead-lettered) all of it.

        Events recorded while it waits are not waited for. Transient failures are retried until
        ``retry_deadline``, so this can take that long when BillingOS is down: pass ``timeout``.

        Raises:
            TimeoutError: ``timeout`` seconds passed first (nothing is lost; sending goes on).
            BillingOSError: the recorder cannot send any more (its client was closed) or the
                outbox cannot be written.

        Example::

            recorder.record("user_42", "api_calls", 3)
            await recorder.flush(timeout=10)
            assert recorder.stats.pending == 0 or recorder.dead_letters
        """
        if self._phase != "open":
            raise self._refusal()
        with anyio.fail_after(timeout):
            await self._drain()

    async def wait_durable(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every event recorded so far is written to the outbox (a ``kill -9`` keeps it).

        It does not wait for BillingOS. Without an outbox nothing is durable and this returns at once.

        Raises:
            TimeoutError: not written within ``timeout`` seconds. When the disk refuses writes it is
                also a ``BillingOSError`` with code ``"outbox_error"`` naming the file and the error
                (the events are kept in memory and sent all the same).

        Example::

            recorder.record("user_42", "exports")
            await recorder.wait_durable()     # now survives a crash of this process
        """
        await anyio.to_thread.run_sync(self._wait_durable_blocking, timeout, abandon_on_cancel=True)

    def _wait_durable_blocking(self, timeout: float | None) -> None:
        with self._staging.lock:
            target = self._staging.recorded
        if not self._outbox.wait_durable(target, timeout):
            if self._phase == "closed":
                raise BillingOSError(
                    "The usage recorder closed before these events could be written to its outbox.",
                    code="recorder_closed",
                )
            error = getattr(self._outbox, "error", None)
            if error is None:
                raise TimeoutError(f"Recorded events were not written to the outbox within {timeout} s")
            raise OutboxNotWrittenError(
                f"Recorded events were not written to the outbox {self._outbox.path!r} within {timeout} s "
                f"(last error: {error}). They are kept in memory and sent all the same.",
                code="outbox_error",
            ) from error

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._phase != "new":
            raise BillingOSError("A usage recorder can be opened only once.", code="recorder_reused")
        loaded = await self._outbox.open()
        self._stopped = anyio.Event()
        self._closed = anyio.Event()
        self._progress = anyio.Event()
        self._wake = anyio.Event()
        self._seal_lock = anyio.Lock()
        self._outer = outer = anyio.create_task_group()
        await outer.__aenter__()
        try:
            self._load(loaded)
            await outer.start(self._run)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._outbox.aclose()
            # Given the exception, anyio's task group would re-raise it inside an ExceptionGroup:
            # cancel the group's scope and leave it cleanly, then raise the original error as is.
            outer.cancel_scope.cancel()
            await outer.__aexit__(None, None, None)
            raise
        self._phase = "open"
        with self._staging.lock:
            self._staging.accepting = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The body's exception is the application's: it comes out as itself, never inside an
        # ExceptionGroup. So the task group that runs the recorder's own tasks is always left with no
        # exception (its tasks have ended by then: aclose() stopped them). A failure of the recorder's
        # own (closing, or a task of that group) is raised as itself when the body succeeded or was
        # cancelled by that failure; when the body failed, the body's exception wins and the
        # recorder's failure is logged and noted on it (``add_note``).
        closing: BaseException | None = None
        try:
            await self.aclose()
        except BaseException as error:  # a cancellation too: the task group must be left all the same
            closing = error
        ours = False  # cancelled by the recorder's own task group: one of its tasks failed
        failure: BaseException | None = closing if isinstance(closing, Exception) else None
        if self._outer is not None:
            outer, self._outer = self._outer, None
            ours = outer.cancel_scope.cancel_called
            try:
                await outer.__aexit__(None, None, None)  # at once: aclose() ended its tasks
            except BaseExceptionGroup as group:
                failure = _first_error(group)
        if failure is None:
            if closing is not None and exc is None:
                raise closing  # cancelled while closing, after a body that succeeded
            return  # the body's own exception, if any, propagates as it was raised
        cancelled = anyio.get_cancelled_exc_class()
        if exc is None or (ours and isinstance(exc, cancelled)):
            raise failure
        logger.error("Closing the usage recorder failed after the application's exception", exc_info=failure)
        exc.add_note(f"While closing the usage recorder after this exception: {failure!r}")

    async def aclose(self, timeout: float | None = None) -> RecorderStats:  # noqa: ASYNC109
        """Stop accepting events, send what is pending for up to ``timeout`` seconds, and stop.

        ``timeout`` defaults to the ``close_timeout`` option (10 s). Returns the final stats:
        ``pending`` is what could not be confirmed in time and is in the outbox file; the next
        recorder on the same file sends it (same keys). What is in no file (no outbox, or a disk that
        refused it) is handed to the dead letters with code ``"recorder_closed"`` or
        ``"outbox_error"`` and counted in ``stats.not_durable``, so nothing disappears silently.
        ``async with`` calls this for you.

        Example::

            stats = await recorder.aclose(timeout=5)
            if stats.pending:
                log.warning("%d usage events left in %s", stats.pending, recorder.outbox)
            if stats.not_durable:  # in no file: only in recorder.dead_letters
                replay(recorder.dead_letters)
        """
        if self._phase == "new":
            self._phase = "closed"
            return self.stats
        if self._phase == "closing":
            with anyio.CancelScope(shield=True):
                await self._closed.wait()
        if self._phase != "open":
            return self.stats
        self._phase = "closing"
        with self._staging.lock:
            self._staging.accepting = False
        wait = self._settings.close_timeout if timeout is None else timeout
        try:
            with anyio.move_on_after(wait):
                try:
                    await self._drain()
                except BillingOSError as exc:
                    logger.warning("Closing the usage recorder without draining it: %s", exc)
        finally:
            with anyio.CancelScope(shield=True):
                await self._shutdown()
        return self.stats

    async def _shutdown(self) -> None:
        if self._inner is not None:
            self._inner.cancel_scope.cancel()
        await self._stopped.wait()
        if self._outbox.durable:
            await self._outbox.aclose()  # writes the last staged events, confirmations and dead letters
            self._bury_not_written(self._outbox.not_written())
            pending = self.stats.pending
            if pending:
                logger.warning(
                    "The usage recorder closed with %d events unconfirmed (%d sealed calls, %d events not "
                    "yet sealed); they are in %s and the next recorder on that file sends them (sealed calls "
                    "with the same keys).",
                    pending,
                    len(self._flights),
                    self._staging.unsealed,
                    self._outbox.path,
                )
        else:
            staged = await self._outbox.seal()  # events never sealed: never sent either
            with self._staging.lock:
                self._staging.unsealed -= sum(batch.events for batch in staged)
            for batch in staged:
                self._track(batch, self._gen + 1)
            for flight in sorted(self._flights.values(), key=lambda f: f.gen):
                error = BillingOSError(
                    "The usage recorder closed before BillingOS confirmed these events, and it has no "
                    "outbox to keep them.",
                    code="recorder_closed",
                )
                error.__cause__ = flight.last_error
                self._counts["not_durable"] += flight.batch.events
                self._bury(flight, error)
        self._phase = "closed"
        self._closed.set()

    def _bury_not_written(self, lost: NotWritten) -> None:
        """At close, hand what the disk never took to the dead letters: it exists in this process only."""
        if not (lost.batches or lost.staged or lost.dead):
            return
        if lost.staged:
            with self._staging.lock:
                self._staging.unsealed -= sum(batch.events for batch in lost.staged)
        flights = [self._flights[b.key] for b in lost.batches if b.key in self._flights]
        flights += [self._track(batch, self._gen + 1) for batch in lost.staged]
        not_durable = sum(f.batch.events for f in flights) + sum(row.batch.events for row in lost.dead)
        self._counts["not_durable"] += not_durable
        for flight in flights:
            error = BillingOSError(
                f"The usage outbox {self._outbox.path!r} could not be written ({lost.error}) and the "
                "recorder closed before BillingOS confirmed these events: they are in this dead letter "
                "only. Replay it with its idempotency key.",
                code="outbox_error",
            )
            error.__cause__ = lost.error
            self._bury(flight, error)
        logger.error(
            "The usage recorder closed with %d events in no file: the outbox %s could not be written (%s). "
            "They are in recorder.dead_letters with their idempotency keys (%d not yet sent, %d dead letters "
            "not written): replay them before this process exits, or they are lost.",
            not_durable,
            self._outbox.path,
            lost.error,
            sum(f.batch.events for f in flights),
            sum(row.batch.events for row in lost.dead),
        )

    # -- the background tasks --------------------------------------------------------------------

    def _load(self, loaded: Loaded) -> None:
        """Take over what a previous recorder left in the outbox."""
        now, wall = time.monotonic(), time.time()
        for row in loaded.dead:
            letter = self._letter(row.batch, _rebuild_error(row), row.attempts, row.possibly_counted)
            self._dead.append(attrs.evolve(letter, failed_at=datetime.fromtimestamp(row.failed_at, UTC)))
        with self._staging.lock:
            self._staging.pending += loaded.unsealed + sum(b.events for b in loaded.batches)
            self._staging.unsealed += loaded.unsealed
        for batch in loaded.batches:
            flight = self._track(batch, 0)
            flight.possibly_counted = True
            flight.expires = now + (batch.created_at + SAFE_KEY_AGE - wall)
            if flight.expires <= now:
                self._bury(flight, _expired_error())
            else:
                self._ready.append(flight)
        if loaded.batches or loaded.unsealed:
            logger.info(
                "The usage outbox %s had %d calls and %d unsent events from a previous run; sending them.",
                self._outbox.path,
                len(loaded.batches),
                loaded.unsealed,
            )

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as inner:
                self._inner = inner
                inner.start_soon(self._pump)
                inner.start_soon(self._dispatch)
                task_status.started()
        finally:
            self._stopped.set()

    async def _pump(self) -> None:
        """Seal a window every ``flush_interval`` seconds."""
        while True:
            await anyio.sleep(self._interval())
            if self._staging.unsealed > 0:
                try:
                    _, partial = await self._seal()
                    if partial is not None:
                        raise partial
                except BillingOSError as exc:  # the outbox failed: its writer logs and retries
                    logger.debug("Sealing a usage window failed: %s", exc)

    def _interval(self) -> float:
        """``flush_interval``, stretched so that the track calls of a window fit the route's rate budget.

        A window of B (customer, feature) pairs costs B calls; with R calls left until the reset in T
        seconds, sealing every T * B / R seconds spends the budget evenly (more events coalesce per
        call instead of waiting in line for the next window). Never longer than T.
        """
        base = self._settings.flush_interval
        limits: Mapping[str, RateLimit] | None = getattr(self._client, "rate_limits", None)
        window = limits.get(_budget.TRACK_ROUTE) if limits else None
        if window is None or window.remaining is None or not window.reset_seconds or not self._last_batches:
            return base
        spread = window.reset_seconds * self._last_batches / max(window.remaining, 1)
        return max(base, min(spread, window.reset_seconds))

    async def _seal(self) -> tuple[int, SealedInMemoryOnly | None]:
        """Turn every unsealed event into batches (written to the outbox first); returns their window, and
        the error of a seal the disk refused while events on it could not be sealed (the rest is sent)."""
        async with self._seal_lock:
            with anyio.CancelScope(shield=True):  # sealed batches must be scheduled, whatever happens
                partial: SealedInMemoryOnly | None = None
                try:
                    batches = await self._outbox.seal()
                except SealedInMemoryOnly as exc:  # the disk refused: what memory held is sent anyway
                    batches, partial = exc.batches, exc
                self._gen += 1
                gen = self._gen
                self._last_batches = len(batches)
                if batches:
                    with self._staging.lock:
                        self._staging.unsealed -= sum(b.events for b in batches)
                    for batch in batches:
                        self._counts["coalesced"] += batch.events - 1
                        self._ready.append(self._track(batch, gen))
                    self._wake.set()
        return gen, partial

    def _track(self, batch: Batch, gen: int) -> _Flight:
        flight = _Flight(batch, gen)
        self._flights[batch.key] = flight
        self._outstanding[gen] = self._outstanding.get(gen, 0) + 1
        return flight

    async def _drain(self) -> None:
        gen, partial = await self._seal()
        while True:
            if self._broken is not None:
                raise self._broken
            if all(g > gen for g in self._outstanding):
                if partial is not None:  # what memory held is done; events on disk are not all sent
                    raise partial
                return
            await self._progress.wait()

    async def _dispatch(self) -> None:
        """Start sends while there is room, honouring backoff and rate-limit gates."""
        assert self._inner is not None
        while True:
            wake = self._wake
            now = time.monotonic()
            delayed = self._delayed
            while delayed and delayed[0][0] <= now:
                self._ready.append(heapq.heappop(delayed)[2])
            ready = self._ready
            while ready and self._in_flight < self._settings.max_concurrency and self._broken is None:
                flight = ready.popleft()
                customer = flight.batch.customer_id
                gate = max(self._global_gate, self._gates.get(customer, 0.0))
                if gate > now:
                    heapq.heappush(delayed, (gate, next(self._order), flight))
                    continue
                self._gates.pop(customer, None)
                self._in_flight += 1
                self._inner.start_soon(self._send, flight)
            timeout = delayed[0][0] - now if delayed else _INF
            with anyio.move_on_after(max(timeout, 0.0)):
                await wake.wait()
            if wake.is_set():
                self._wake = anyio.Event()

    async def _send(self, flight: _Flight) -> None:
        batch = flight.batch
        try:
            now = time.monotonic()
            if now >= flight.expires:
                self._bury(flight, _expired_error())
                return
            if flight.first_attempt is None:
                flight.first_attempt = now
            else:
                self._counts["retried"] += 1
            flight.attempts += 1
            # A spent rate budget: wait for the window (until the retry deadline) rather than be refused.
            waiting = _budget.WAIT.set(max(flight.first_attempt + self._settings.retry_deadline - now, 0.0))
            try:
                await self._client.usage.track(
                    batch.customer_id,
                    batch.feature_key,
                    batch.quantity,
                    idempotency_key=batch.key,
                    max_retries=0,
                    timeout=self._settings.timeout,
                )
            except BillingOSError as exc:
                self._failed(flight, exc)
            except anyio.get_cancelled_exc_class():
                # Closed (or the recorder's task cancelled) mid-call: the request may have reached
                # BillingOS, so its dead letter must say so (replay with the key, never without).
                flight.possibly_counted = True
                raise
            except Exception as exc:  # a bug somewhere below: keep it visible, never lose the events
                logger.exception("Unexpected error sending usage %s", batch.key)
                error = BillingOSError(f"Unexpected error: {exc!r}", code="unexpected_error")
                error.__cause__ = exc
                flight.possibly_counted = True
                self._bury(flight, error)
            else:
                self._counts["sent_calls"] += 1
                self._counts["confirmed"] += batch.events
                self._finish(flight)
                self._outbox.confirm(batch.key)
            finally:
                _budget.WAIT.reset(waiting)
        finally:
            self._in_flight -= 1
            self._wake.set()

    def _failed(self, flight: _Flight, exc: BillingOSError) -> None:
        flight.last_error = exc
        if _may_have_counted(exc):
            flight.possibly_counted = True
        if exc.code == "client_closed":
            # Not the event's fault: keep it pending (in the outbox, if any) and stop sending.
            self._broken = BillingOSError(
                "The usage recorder's BillingOS client was closed; close the recorder before its client.",
                code="client_closed",
            )
            self._ready.appendleft(flight)
            self._notify_progress()
            return
        if _is_permanent(exc):
            self._bury(flight, exc)
            return
        now = time.monotonic()
        assert flight.first_attempt is not None
        deadline = min(flight.first_attempt + self._settings.retry_deadline, flight.expires)
        if now >= deadline:
            self._bury(flight, exc)
            return
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            delay = exc.retry_after
            until = now + delay
            if until > deadline:  # may not be retried before the deadline: give up now
                self._bury(flight, exc)
                return
            self._gates[flight.batch.customer_id] = max(self._gates.get(flight.batch.customer_id, 0.0), until)
            if exc.code == _budget.BUDGET_EXHAUSTED or exc.headers.get("x-ratelimit-remaining") == "0":
                # the route's limit, not the customer's
                self._global_gate = max(self._global_gate, until)
        else:
            delay = self._settings.retry_policy.backoff(flight.attempts - 1)
        heapq.heappush(self._delayed, (min(now + delay, deadline), next(self._order), flight))

    def _finish(self, flight: _Flight) -> None:
        if self._flights.pop(flight.batch.key, None) is None:
            return
        left = self._outstanding[flight.gen] - 1
        if left:
            self._outstanding[flight.gen] = left
        else:
            del self._outstanding[flight.gen]
        with self._staging.lock:
            self._staging.pending -= flight.batch.events
        self._notify_progress()

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    def _letter(
        self, batch: Batch, error: BillingOSError, attempts: int, possibly_counted: bool
    ) -> DeadLetter:
        return DeadLetter(
            customer_id=batch.customer_id,
            feature_key=batch.feature_key,
            quantity=batch.quantity,
            events=batch.events,
            idempotency_key=batch.key,
            error=error,
            attempts=attempts,
            possibly_counted=possibly_counted,
            failed_at=datetime.now(UTC),
        )

    def _bury(self, flight: _Flight, error: BillingOSError) -> None:
        batch = flight.batch
        letter = self._letter(batch, error, flight.attempts, flight.possibly_counted)
        self._counts["dead"] += batch.events
        self._finish(flight)
        with self._staging.lock:
            self._dead.append(letter)
        self._outbox.bury(
            DeadRow(
                batch,
                failed_at=letter.failed_at.timestamp(),
                attempts=letter.attempts,
                possibly_counted=letter.possibly_counted,
                error_type=type(error).__name__,
                status_code=error.status_code,
                code=error.code,
                message=error.message,
                request_id=error.request_id,
            )
        )
        logger.warning(
            "Usage dead-lettered: %s %s x%s (%d events, key %s): %s",
            batch.customer_id,
            batch.feature_key,
            batch.quantity,
            batch.events,
            batch.key,
            error,
        )
        callback = self._settings.on_dead_letter
        if callback is not None:
            try:
                callback(letter)
            except Exception:
                logger.exception("on_dead_letter raised; the dead letter is kept in recorder.dead_letters")

    def __repr__(self) -> str:
        where = self._outbox.path or "memory"
        return f"<UsageRecorder {self._phase} outbox={where!r} pending={self.stats.pending}>"


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error of a group the recorder's own task group raised (a bug of ours if it has more)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(reversed(item.exceptions))
        else:
            leaves.append(item)
    first = leaves[0] if leaves else group
    for other in leaves[1:]:
        first.add_note(f"The usage recorder also failed with: {other!r}")
    return first


async def _set(event: anyio.Event) -> None:
    event.set()


def _forked_error() -> BillingOSError:
    return BillingOSError(
        "This usage recorder was opened in the parent process, before os.fork(); it cannot record or "
        "send from here. Open a recorder in each process (e.g. in gunicorn's post_fork), with its own "
        "outbox file.",
        code="recorder_forked",
    )


_FACADE_POLL = 0.2
"""Seconds between checks, by a sync recorder's host task, that the facade's client is still open."""

_OPEN_SYNC_RECORDERS: weakref.WeakSet[SyncUsageRecorder] = weakref.WeakSet()


def _disown_sync_recorders_after_fork() -> None:
    for recorder in list(_OPEN_SYNC_RECORDERS):
        recorder._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_sync_recorders_after_fork)


class SyncUsageRecorder:
    """The blocking counterpart of :class:`UsageRecorder`, from ``BillingOS.usage_recorder()``.

    It runs a :class:`UsageRecorder` on the facade's event-loop thread. :meth:`record` does not
    touch that thread at all (it is the same thread-safe, no-I/O method), so any number of
    threads (a WSGI server's workers) can record through one recorder. ``on_dead_letter`` runs on
    the facade's loop thread.

    Example::

        with BillingOS() as billing, billing.usage_recorder(outbox="usage.db") as recorder:
            recorder.record("user_42", "api_calls")
            recorder.flush(timeout=10)
    """

    def __init__(self, host: RecorderHost, **options: Unpack[RecorderOptions]) -> None:
        self._outbox_path = _Settings.from_options(
            options
        ).outbox  # refuse bad options in the caller's thread
        self._host_api = host
        self._options = options
        self._recorder: UsageRecorder | None = None
        self._host: Future[None] | None = None
        self._stop: anyio.Event | None = None
        self._forked = False

    def _require(self) -> UsageRecorder:
        recorder = self._recorder
        if recorder is None:
            if self._forked:
                raise _forked_error()
            raise BillingOSError(
                "This usage recorder is not open yet: use `with billing.usage_recorder() as recorder`.",
                code="recorder_not_open",
            )
        return recorder

    def __enter__(self) -> Self:
        if self._forked:
            raise _forked_error()
        if self._recorder is not None:
            raise BillingOSError("A usage recorder can be opened only once.", code="recorder_reused")
        portal, client = self._host_api.start()
        recorder = UsageRecorder(client, **self._options)
        self._host, self._stop = portal.start_task(self._serve, recorder)
        self._recorder = recorder
        _OPEN_SYNC_RECORDERS.add(self)
        return self

    def _after_fork_in_child(self) -> None:
        """In a forked child: this recorder's loop, tasks and writer thread stayed in the parent.

        Recording here would stage events nothing ever sends, and flushing or closing would wait for a
        loop that does not exist in this process. So every method but :meth:`close` now raises
        ``recorder_forked``; the child opens its own recorder. The child's copy of the outbox lock is
        released, so that lock dies with the parent as documented.
        """
        recorder, self._recorder = self._recorder, None
        self._forked = True
        self._host = self._stop = None
        if recorder is not None and isinstance(recorder._outbox, SQLiteOutbox):
            recorder._outbox._unlock_file()

    @staticmethod
    async def _serve(recorder: UsageRecorder, *, task_status: TaskStatus[anyio.Event]) -> None:
        """The task that owns the recorder on the facade's loop, from ``__enter__`` to ``close()``.

        It also ends when the facade's client is closed first (``billing.close()``, interpreter exit):
        the loop thread cannot stop while a task waits, so the recorder must not wait for a ``close()``
        that may never come. It then closes at once, as ``close(timeout=0)`` would.
        """
        stop = anyio.Event()
        async with recorder:
            task_status.started(stop)
            while not stop.is_set():
                with anyio.move_on_after(_FACADE_POLL):
                    await stop.wait()
                if recorder._client.is_closed:
                    await recorder.aclose(timeout=0)
                    return

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def record(self, customer_id: str, feature_key: str, quantity: float = 1) -> bool:
        """Record usage; returns at once, from any thread (see :meth:`UsageRecorder.record`).

        Example::

            recorder.record("user_42", "api_calls")
        """
        return self._require().record(customer_id, feature_key, quantity)

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything recorded so far is confirmed or dead-lettered (see
        :meth:`UsageRecorder.flush`). Raises ``TimeoutError`` after ``timeout`` seconds.

        Example::

            recorder.flush(timeout=10)
        """
        recorder = self._require()
        self._host_api.run(lambda: recorder.flush(timeout))

    def wait_durable(self, timeout: float | None = None) -> None:
        """Block until every event recorded so far is in the outbox (no loop hop; see
        :meth:`UsageRecorder.wait_durable`).

        Example::

            recorder.wait_durable(timeout=1)
        """
        self._require()._wait_durable_blocking(timeout)

    def close(self, timeout: float | None = None) -> RecorderStats:
        """Send what is pending for up to ``timeout`` seconds, stop, and return the final stats (see
        :meth:`UsageRecorder.aclose`). Idempotent. Closing the ``BillingOS`` first closes the
        recorder too, at once (what is left goes to the outbox or the dead letters). In a child
        process forked while it was open, it does nothing and returns empty stats: the recorder runs
        in the parent.

        Example::

            stats = recorder.close(timeout=5)
        """
        if self._forked:  # the parent's recorder: nothing of it runs in this process
            return RecorderStats()
        recorder = self._require()
        _OPEN_SYNC_RECORDERS.discard(self)
        host, stop, self._host = self._host, self._stop, None
        if host is None or stop is None:
            return recorder.stats
        try:
            if not host.done():
                return self._host_api.run(lambda: recorder.aclose(timeout))
            return recorder.stats
        finally:
            if not host.done():
                with contextlib.suppress(BillingOSError):  # the facade closed: the host task ends by itself
                    self._host_api.run(lambda: _set(stop))
            host.result()

    @property
    def stats(self) -> RecorderStats:
        """A snapshot of the counters (see :class:`RecorderStats`).

        Example::

            print(recorder.stats.pending)
        """
        return self._require().stats

    @property
    def dead_letters(self) -> tuple[DeadLetter, ...]:
        """The calls given up on (see :attr:`UsageRecorder.dead_letters`).

        Example::

            for letter in recorder.dead_letters:
                log.error("usage not counted: %s", letter)
        """
        return self._require().dead_letters

    def clear_dead_letters(self, letters: Iterable[DeadLetter] | None = None) -> int:
        """Forget dead letters (see :meth:`UsageRecorder.clear_dead_letters`).

        Example::

            recorder.clear_dead_letters()
        """
        return self._require().clear_dead_letters(letters)

    @property
    def outbox(self) -> str | None:
        """The outbox file, or ``None`` for an in-memory recorder.

        Example::

            assert billing.usage_recorder(outbox="usage.db").outbox == "usage.db"
        """
        return self._outbox_path

    def __repr__(self) -> str:
        return f"<SyncUsageRecorder {self._recorder!r}>"
