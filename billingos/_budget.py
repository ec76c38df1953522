"""The rate budget: spend each route's server-side rate limit deliberately instead of learning it from a 429.

BillingOS counts requests per client IP and per route handler in fixed windows (CONTRACT §3,
CONTRACT-CUSTOMER §0.1) and states the window on every response (``X-RateLimit-Limit``,
``-Remaining``, ``-Reset``, seconds until the reset). The budget keeps that state per route and asks it
before every attempt::

    Requester.request ─▶ budget.acquire(route)  (before each attempt)
        window known, remaining > in flight  ──▶ send (one unit reserved: in_flight += 1)
        route never seen / window rolled over, nothing learnt yet
                                             ──▶ one probe is sent, the others wait for its answer
        spent until the reset                ──▶ wait for the reset, at most ``rate_limit_wait`` s
                                                 (the recorder: as long as it takes; a cached check
                                                 with a stale answer at hand: not at all), then
                                                 RateLimitError(code="rate_budget_exhausted"), unsent
    response (any status) ─▶ budget.settle(route, headers): in_flight -= 1, the window the server stated

The state lives behind :class:`BudgetStore`, an async read-modify-write of one route's :class:`BudgetWindow`.
:class:`MemoryBudgetStore` keeps it in this process; a store on a shared server (Redis) lets a fleet
behind one egress address spend one budget.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import NamedTuple, Protocol, TypeVar, runtime_checkable

from httpx2 import Headers as _Httpx2Headers

from ._errors import RateLimitError
from ._response import RateLimit

__all__ = ["BudgetStore", "BudgetWindow", "MemoryBudgetStore", "RateBudget"]

logger = logging.getLogger("billingos")

T = TypeVar("T")


class BudgetWindow(NamedTuple):
    """One route's rate-limit window as the budget knows it: an immutable value a store keeps per key.

    Times are seconds since the epoch (``time.time()``), so that processes sharing a store agree on
    them (the budget's clock is injectable; every process of a fleet must use the same kind).
    """

    limit: int | None
    """Requests the server allows per window; ``None``: the route answered without rate-limit headers
    (limiting off on that server), so the budget lets every call through; ``0``: not known yet (the
    first requests of the route are in flight, ``RateBudget(first=...)`` of them at most)."""
    remaining: int
    """Requests the budget may still send in this window, by the server's last word minus what was
    sent since (never above ``limit``)."""
    reset_at: float | None
    """When the window resets; ``None`` when it rolled over and no response of the new window has
    said yet (then at most ``remaining`` calls are sent and the next ones wait for an answer)."""
    in_flight: int = 0
    """Requests sent on this route and not answered yet (across the fleet, for a shared store)."""

    # A NamedTuple, not an attrs class: one is built per request, and a frozen attrs instance costs
    # ~4x as much to build (the budget's whole cost per call has a goal of < 2 µs).


@runtime_checkable
class BudgetStore(Protocol):
    """Where the rate budget keeps its :class:`BudgetWindow` per route: the one operation it needs.

    Contract (what :class:`MemoryBudgetStore` does, and what a shared store such as Redis must do):

    - ``await store.update(key, change)`` reads the window stored under ``key`` (``None`` when there is
      none), computes ``new, result = change(old)``, stores ``new`` (``None`` deletes the key) and
      returns ``result``, **atomically per key**: no other ``update`` of the same key, from this
      process or any other sharing the store, may interleave between the read and the write.
    - ``change`` is a pure, fast, synchronous function of its argument. The store may call it more
      than once (an optimistic transaction that retries on conflict, e.g. Redis ``WATCH``/``MULTI``);
      only the result of the call whose ``new`` was written is returned. It never raises for a valid
      window (if it does, the exception propagates and nothing is written).
    - ``key`` is a short printable string (``"GET /v1/usage/check"``, or with a scope:
      ``"POST /v1/usage/track customer:<id>"``); a shared store may prefix it with a namespace.
    - A store may forget a window whose ``reset_at`` is more than :data:`FORGET_AFTER` seconds in the
      past (e.g. a Redis key expiring at ``reset_at + FORGET_AFTER``), and a window with
      ``reset_at=None`` after :data:`FORGET_AFTER` seconds without an update: a forgotten window reads
      as ``None``, which the budget treats as a route it has not seen (one probe first). It must not
      forget a window earlier than that.
    - Values must round-trip exactly: ``limit`` and ``remaining`` are ints (``limit`` may be ``None``),
      ``reset_at`` a float or ``None``, ``in_flight`` an int (for Redis: a hash or JSON of the four
      fields; ``attrs.asdict(window)`` / ``BudgetWindow(**fields)``).
    - If the store cannot answer (network down, timeout), ``update`` raises; the budget then lets the
      call through unbudgeted and logs it once (a rate budget must never fail a call by itself).

    Example (a store that counts its updates, delegating to the in-memory one)::

        class CountingStore:
            def __init__(self) -> None:
                self.inner, self.updates = MemoryBudgetStore(), 0

            async def update(self, key, change):
                self.updates += 1
                return await self.inner.update(key, change)
    """

    async def update(self, key: str, change: Change[T]) -> T:
        """Atomically replace ``key``'s window ``old`` by ``change(old)[0]``; return ``change(old)[1]``."""
        ...


Change = Callable[[BudgetWindow | None], tuple[BudgetWindow | None, T]]
"""What :meth:`BudgetStore.update` applies: the old window (``None``: none) to (the new one, a result)."""

_MAX_SLOTS = 4096  # windows the in-memory store holds before it forgets those that have reset

FORGET_AFTER = 120.0
"""Seconds after a window's reset (or its last update, when its reset is unknown) that a store may drop it."""


class _Slot:
    """One route's window in :class:`MemoryBudgetStore`: mutable, updated in place by the fast path."""

    __slots__ = ("in_flight", "limit", "remaining", "reset_at")

    def __init__(self, limit: int | None, remaining: int, reset_at: float | None, in_flight: int) -> None:
        self.limit = limit
        self.remaining = remaining
        self.reset_at = reset_at
        self.in_flight = in_flight


class MemoryBudgetStore:
    """The in-process :class:`BudgetStore`: a dictionary behind a ``threading.Lock`` (the blocking
    client's calls run on their own loop thread; the lock is held for one ``change`` call, never
    across an ``await``).

    Each route's window is kept as a mutable slot: :class:`RateBudget` updates it in place (no
    :class:`BudgetWindow` built, no ``change`` function per call), while :meth:`update` keeps the
    :class:`BudgetStore` contract, reading and writing the slot as a :class:`BudgetWindow`.

    Example::

        budget_store = MemoryBudgetStore()
        window = await budget_store.update("GET /v1/usage/check", lambda old: (old, old))
    """

    __slots__ = ("__weakref__", "_lock", "_slots")

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        _STORES.add(self)

    async def update(self, key: str, change: Change[T]) -> T:
        return self.update_now(key, change)

    def update_now(self, key: str, change: Change[T]) -> T:
        """:meth:`update` without the coroutine."""
        with self._lock:
            slot = self._slots.get(key)
            old = None
            if slot is not None:
                old = BudgetWindow(slot.limit, slot.remaining, slot.reset_at, slot.in_flight)
            new, result = change(old)
            if new is None:
                self._slots.pop(key, None)
            elif slot is None:
                self._slots[key] = _Slot(*new)
            else:
                slot.limit, slot.remaining, slot.reset_at, slot.in_flight = new
            return result

    def acquire_now(self, key: str, now: float, first: int) -> float:
        """The decision of :func:`_acquire` (``_GO``, ``_NEWS`` or the reset time), made in place."""
        lock = self._lock
        lock.acquire()  # not ``with``: its __exit__ call is a third of this method's cost
        try:
            slot = self._slots.get(key)
            if slot is not None and slot.remaining > 0:  # the common case, first: budget left
                reset_at = slot.reset_at
                if reset_at is not None and now < reset_at and slot.limit is not None:
                    slot.remaining -= 1
                    slot.in_flight += 1
                    return _GO
            if slot is None:  # never seen: ``first`` calls go before its first answer
                if len(self._slots) >= _MAX_SLOTS:
                    self._prune(now)
                self._slots[key] = _Slot(0, first - 1, None, 1)
                return _GO
            limit = slot.limit
            if limit is None:
                return _GO
            reset_at = slot.reset_at
            if reset_at is not None and now >= reset_at:  # rolled over: in flight counts in the new one
                slot.remaining = max(limit - slot.in_flight, 0)
                slot.reset_at = reset_at = None
            if slot.remaining > 0:
                slot.remaining -= 1
                slot.in_flight += 1
                return _GO
            if reset_at is None:
                if slot.in_flight == 0:  # no one will tell: this call asks (a probe)
                    slot.in_flight = 1
                    return _GO
                return _NEWS
            return reset_at
        finally:
            lock.release()

    def settle_now(self, key: str, now: float, stated: _Stated | None, answered: bool) -> None:
        """What :func:`_settle` does, in place."""
        lock = self._lock
        lock.acquire()
        try:
            slot = self._slots.get(key)
            if stated is not None and slot is not None and slot.limit:
                old_reset = slot.reset_at
                if old_reset is not None:
                    reset_at = now + stated[2]
                    if reset_at <= old_reset + _SAME_WINDOW_SLACK:  # the common case: the window known
                        slot.limit = stated[0]
                        if stated[1] < slot.remaining:  # Remaining only lowers the budget in a window
                            slot.remaining = stated[1]
                        if reset_at > old_reset:
                            slot.reset_at = reset_at
                        in_flight = slot.in_flight
                        slot.in_flight = in_flight - 1 if in_flight > 0 else 0
                        return
            in_flight = max((slot.in_flight if slot is not None else 1) - 1, 0)
            if stated is None:
                if answered:  # a response without rate-limit headers: no limiting there
                    if slot is None:
                        self._slots[key] = _Slot(None, 0, None, in_flight)
                    else:
                        slot.limit, slot.remaining, slot.reset_at, slot.in_flight = None, 0, None, in_flight
                elif slot is not None:
                    slot.in_flight = in_flight
                return
            limit, remaining, reset = stated
            reset_at = now + reset
            if slot is not None and slot.limit:  # a new window (the known one is handled above)
                if slot.reset_at is None:
                    remaining = min(slot.remaining, remaining - in_flight)
                else:
                    remaining -= in_flight
            else:
                remaining -= in_flight
            remaining = max(min(remaining, limit), 0)
            if slot is None:
                self._slots[key] = _Slot(limit, remaining, reset_at, in_flight)
            else:
                slot.limit, slot.remaining = limit, remaining
                slot.reset_at, slot.in_flight = reset_at, in_flight
        finally:
            lock.release()

    def _prune(self, now: float) -> None:
        """Forget the windows nobody waits on that have reset (scoped windows: one per customer or
        session token), so that the store stays bounded; under the lock."""
        for key, slot in list(self._slots.items()):
            if slot.in_flight == 0 and (slot.reset_at is None or slot.reset_at <= now):
                del self._slots[key]

    def __len__(self) -> int:
        return len(self._slots)

    def _after_fork_in_child(self) -> None:
        """The parent's lock may have been held while forking; its in-flight requests are not ours."""
        self._lock = threading.Lock()
        for slot in self._slots.values():
            slot.in_flight = 0

    def __repr__(self) -> str:
        return f"<MemoryBudgetStore routes={len(self._slots)}>"


_BACKGROUND: set[object] = set()  # release tasks of cancelled calls, kept alive until done

_STORES: weakref.WeakSet[MemoryBudgetStore] = weakref.WeakSet()


def _reset_stores_after_fork() -> None:
    for store in list(_STORES):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reset_stores_after_fork)

WAIT: contextvars.ContextVar[float | None] = contextvars.ContextVar("billingos_budget_wait", default=None)
"""The longest a call made in this context waits for its budget (``None``: the client's
``rate_limit_wait``). The recorder sets ``math.inf`` (a track waits for the window rather than being
refused); a cached check with a stale answer at hand sets ``0`` (answer stale rather than wait)."""

TRACK_ROUTE = "POST /v1/usage/track"
"""The budget key of usage tracking (the recorder adapts its flush interval to it)."""

BUDGET_EXHAUSTED = "rate_budget_exhausted"
"""``RateLimitError.code`` of a call the budget refused without sending it."""

_GO = -1.0  # acquire's decision: send now
_NEWS = -2.0  # acquire's decision: wait for an answer of this route (its probe is in flight)
_SAME_WINDOW_SLACK = 1.5  # seconds: Reset is whole seconds (rounded up) and a response takes time


def _acquire(now: float, first: int) -> Callable[[BudgetWindow | None], tuple[BudgetWindow | None, float]]:
    def change(old: BudgetWindow | None) -> tuple[BudgetWindow | None, float]:
        if old is None:  # never seen: ``first`` calls go before its first answer, the others wait for it
            return BudgetWindow(0, first - 1, None, 1), _GO
        limit = old.limit
        if limit is None:
            return old, _GO
        window = old
        if window.reset_at is not None and now >= window.reset_at:
            # Rolled over. What is still in flight may land in the new window: count it there.
            window = BudgetWindow(limit, max(limit - window.in_flight, 0), None, window.in_flight)
        if window.remaining > 0:
            return BudgetWindow(limit, window.remaining - 1, window.reset_at, window.in_flight + 1), _GO
        if window.reset_at is None:
            if window.in_flight == 0:  # no one will tell: this call asks (a probe)
                return BudgetWindow(limit, window.remaining, None, 1), _GO
            return window, _NEWS
        return window, window.reset_at

    return change


_Stated = tuple[int, int, float]  # (limit, remaining, reset seconds) of a response's headers


_INTS: dict[str | bytes, int] = {}
_FLOATS: dict[str | bytes, float] = {}
_MEMO_SIZE = 4096  # distinct header values remembered (a window has at most limit + reset of them)
_RATE_HEADERS = {b"x-ratelimit-limit": 0, b"x-ratelimit-remaining": 1, b"x-ratelimit-reset": 2}


def _stated(headers: Mapping[str, str]) -> _Stated | None:
    """The three ``X-RateLimit-*`` figures, or ``None`` unless all three are there and readable.

    The headers are read in one pass: httpx2's ``Headers`` (the default backend) keeps a list of
    (raw name, lowercased name, value) bytes, and each of its ``get`` calls lowercases, encodes and
    scans that whole list again (~1.5 µs each, against ~0.1 µs for a lookup in aiohttp's or a dict).
    Each value's parse is remembered: ``int("97")`` costs more than a dict lookup, and a route's values
    repeat (at most ``limit`` remainders and ``reset`` seconds per window).
    """
    limit_text: str | bytes | None
    remaining_text: str | bytes | None
    reset_text: str | bytes | None
    if headers.__class__ is _Httpx2Headers:
        found: list[bytes | None] = [None, None, None]
        names = _RATE_HEADERS
        for item in headers._list:  # httpx2 internals: (raw name, lowercased name, value) bytes
            slot = names.get(item[1])
            if slot is not None:
                if found[slot] is not None:  # sent twice: let the general reader decide
                    return _parse_stated(headers, "", None, None)
                found[slot] = item[2]
        limit_text, remaining_text, reset_text = found
    else:
        get = headers.get
        limit_text = get("x-ratelimit-limit")
        remaining_text = get("x-ratelimit-remaining")
        reset_text = get("x-ratelimit-reset")
    if limit_text is None:
        return None
    ints, floats = _INTS, _FLOATS
    limit = ints.get(limit_text)
    remaining = ints.get(remaining_text) if remaining_text is not None else None
    reset = floats.get(reset_text) if reset_text is not None else None
    if limit is None or remaining is None or reset is None:
        return _parse_stated(headers, limit_text, remaining_text, reset_text)
    return limit, remaining, reset


class _Scoped(Mapping[str, str]):
    """A response's ``X-RateLimit-*-Scoped`` headers, read under the plain names (for :func:`_stated`)."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return self._headers[name + "-scoped"]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._headers.get(name + "-scoped", default)

    def __iter__(self) -> Iterator[str]:
        return (k[: -len("-scoped")] for k in self._headers if k.lower().endswith("-scoped"))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@functools.lru_cache(maxsize=4096)
def _digest(scope: str) -> str:
    """A scope (a customer id, or the server's own ``token_…`` digest) as the budget's key shows it."""
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def _parse_stated(
    headers: Mapping[str, str],
    limit_text: str | bytes,
    remaining_text: str | bytes | None,
    reset_text: str | bytes | None,
) -> _Stated | None:
    """:func:`_stated`'s slow path: parse (and remember) values not seen yet."""
    try:  # the common case: three plain numbers
        if remaining_text is None or reset_text is None:
            raise KeyError
        stated = (int(limit_text), int(remaining_text), float(reset_text))
    except (KeyError, ValueError):
        parsed = RateLimit.from_headers(headers)
        if parsed is None or parsed.limit is None or parsed.remaining is None or parsed.reset_seconds is None:
            return None
        return parsed.limit, parsed.remaining, parsed.reset_seconds
    if stated[0] < 0 or stated[1] < 0 or not 0 <= stated[2] < 1e9:  # negative, NaN or infinite
        return None
    if len(_INTS) >= _MEMO_SIZE or len(_FLOATS) >= _MEMO_SIZE:
        _INTS.clear()
        _FLOATS.clear()
    _INTS[limit_text], _INTS[remaining_text], _FLOATS[reset_text] = stated
    return stated


def _settle(
    now: float, stated: _Stated | None, answered: bool
) -> Callable[[BudgetWindow | None], tuple[BudgetWindow | None, None]]:
    def change(old: BudgetWindow | None) -> tuple[BudgetWindow | None, None]:
        in_flight = max((old.in_flight if old is not None else 1) - 1, 0)
        if stated is None:
            if answered:  # a response without rate-limit headers: no limiting there
                return BudgetWindow(None, 0, None, in_flight), None
            return (None if old is None else old._replace(in_flight=in_flight)), None
        limit, remaining, reset = stated
        reset_at = now + reset
        if old is not None and old.limit:
            if old.reset_at is not None and reset_at <= old.reset_at + _SAME_WINDOW_SLACK:
                # The same window: what we sent since is not in the server's figure yet, maybe.
                return BudgetWindow(
                    limit, min(old.remaining, remaining), max(old.reset_at, reset_at), in_flight
                ), None
            if old.reset_at is None:  # rolled over here, first word of the new window
                remaining = min(old.remaining, remaining - in_flight)
            else:
                remaining -= in_flight
        else:
            remaining -= in_flight  # the others in flight may not be counted yet
        return BudgetWindow(limit, max(min(remaining, limit), 0), reset_at, in_flight), None

    return change


class RateBudget:
    """Spends each route's rate limit deliberately: no request is sent that the server would refuse.

    A client has one (``AsyncBillingOS(rate_budget=...)``, default: an in-memory one); it reads the
    ``X-RateLimit-*`` headers of every response and, before each attempt, decides whether to send,
    wait for the window's reset (at most the client's ``rate_limit_wait`` seconds), or refuse with
    ``RateLimitError(code="rate_budget_exhausted")`` without sending. See ``docs/scale.md``.

    Args:
        store: where the windows live: :class:`MemoryBudgetStore` (default, this process) or a shared
            :class:`BudgetStore` such as a Redis one (a fleet behind one egress IP spends one budget).
        first: requests sent on a route before its first answer says its limit (default 8); the
            next ones wait for that answer (however long it takes: it is on its way).
        clock: seconds since the epoch (``time.time``; inject one in tests, with ``sleep``).
        sleep: how to wait for a window's reset (``anyio.sleep``).

    Example::

        billing = AsyncBillingOS(rate_budget=RateBudget(), rate_limit_wait=5)
        ...
        print(billing.rate_limits["GET /v1/usage/check"])   # RateLimit(limit=100, remaining=63, ...)
    """

    __slots__ = (
        "_broken",
        "_clock",
        "_first",
        "_memory",
        "_scope_checked",
        "_seen",
        "_sleep",
        "scoped_routes",
        "store",
    )

    def __init__(
        self,
        store: BudgetStore | None = None,
        *,
        first: int = 8,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if store is not None and not isinstance(store, BudgetStore):
            raise TypeError(f"store must be a BudgetStore, not {type(store).__name__}")
        self.store: BudgetStore = store if store is not None else MemoryBudgetStore()
        # The in-memory store is updated in place, with no coroutine and no function per call.
        self._memory = self.store if type(self.store) is MemoryBudgetStore else None
        if isinstance(first, bool) or not isinstance(first, int) or first < 1:
            raise TypeError(f"first must be an int >= 1, not {first!r}")
        self._first = first
        self._clock = clock
        self._sleep = sleep
        # The last word per route: the three figures a response stated, and when (the reset is then
        # ``stated[2]`` seconds after that time); kept as they come, with no tuple built per response.
        self._seen: dict[str, tuple[_Stated, float]] = {}
        self.scoped_routes: set[str] = set()
        """Routes whose responses state a scoped window of their own (per customer, per session token):
        each scope of them is budgeted too, under :meth:`scoped_key`."""
        self._scope_checked: set[str] = set()
        self._broken = False

    @property
    def rate_limits(self) -> Mapping[str, RateLimit]:
        """The last window each route's responses stated, in this process: ``{"GET /v1/usage/check":
        RateLimit(limit, remaining, reset_seconds)}``, ``reset_seconds`` counted from now."""
        now = self._clock()
        result = {}
        for key, ((limit, remaining, reset_after), when) in list(self._seen.items()):
            reset = when + reset_after - now
            result[key] = RateLimit(limit, limit, 0.0) if reset <= 0 else RateLimit(limit, remaining, reset)
        return result

    async def _update(self, key: str, change: Change[T]) -> T | None:
        memory = self._memory
        if memory is not None:
            return memory.update_now(key, change)
        try:
            return await self.store.update(key, change)
        except Exception as exc:  # a store down must never fail a call: send unbudgeted
            if not self._broken:
                self._broken = True
                logger.warning("Rate budget store %r failed (%s): calls are sent unbudgeted", self.store, exc)
            return None

    async def acquire(self, key: str, max_wait: float) -> None:
        """Reserve one request of ``key``'s window, waiting at most ``max_wait`` seconds for it.

        Raises:
            RateLimitError: ``code="rate_budget_exhausted"``, nothing sent, when the budget stays
                spent for longer than ``max_wait`` (``retry_after``: seconds until the reset, if known).
        """
        clock = self._clock
        if self.acquired_now(key):
            return
        wait = WAIT.get()
        if wait is not None:
            max_wait = wait
        started = clock()
        news_since: float | None = None  # time.monotonic() when this call began waiting for an answer
        polls = 0
        while True:
            now = clock()
            decision = await self._update(key, _acquire(now, self._first))
            if decision is None or decision == _GO:
                return
            if decision == _NEWS:
                # An answer is on its way (its call's own timeout bounds it): wait for it, unless this
                # call must not wait at all, or nothing came for FORGET_AFTER seconds. That wait sleeps
                # in real time, so it is measured in real time: the budget's clock is a wall clock that
                # may jump (an injected one, moved on by the other waiters' ``sleep``).
                if news_since is None:
                    news_since = time.monotonic()
                if max_wait <= 0 or time.monotonic() - news_since > FORGET_AFTER:
                    raise self._refusal(key, None)
                await _real_sleep(min(0.005 * 2**polls, 0.1))
                polls += 1
                continue
            wake = decision
            if wake - started > max_wait:
                raise self._refusal(key, decision - now)
            await (self._sleep or _real_sleep)(max(wake - now, 0.0))

    def _refusal(self, key: str, retry_after: float | None) -> RateLimitError:
        seen = self._seen.get(key)
        return RateLimitError(
            f"The rate budget of {key} is spent for this window; the request was not sent "
            f"(the client's rate_limit_wait bounds how long a call waits for the next window).",
            code=BUDGET_EXHAUSTED,
            retry_after=retry_after,
            rate_limit=None if seen is None else RateLimit(seen[0][0], 0, retry_after),
        )

    def acquired_now(self, key: str) -> bool:
        """The request path's fast path: ``True`` when one request of ``key`` was reserved at once,
        in place on the in-memory store (no coroutine); ``False``: call :meth:`acquire`.

        Example::

            if not budget.acquired_now("GET /v1/usage/check"):
                await budget.acquire("GET /v1/usage/check", 5.0)
        """
        memory = self._memory
        return memory is not None and memory.acquire_now(key, self._clock(), self._first) == _GO

    def settled_now(self, key: str, headers: Mapping[str, str] | None) -> bool:
        """:meth:`settle` done at once on the in-memory store (``True``), or not at all (``False``:
        a shared store; call :meth:`settle`).

        Example::

            if not budget.settled_now("GET /v1/usage/check", response_headers):
                await budget.settle("GET /v1/usage/check", response_headers)
        """
        memory = self._memory
        if memory is None:
            return False
        stated = None if headers is None else _stated(headers)
        now = self._clock()
        memory.settle_now(key, now, stated, headers is not None)
        if stated is not None:  # kept with the time it was stated (see rate_limits)
            self._seen[key] = (stated, now)
        return True

    async def settle(self, key: str, headers: Mapping[str, str] | None) -> None:
        """Release ``key``'s reservation; learn the window the response ``headers`` state (``None``:
        no response arrived, e.g. a connection error)."""
        if self.settled_now(key, headers):
            return
        stated = None if headers is None else _stated(headers)
        now = self._clock()
        await self._update(key, _settle(now, stated, headers is not None))
        if stated is not None:  # kept with the time it was stated (see rate_limits)
            self._seen[key] = (stated, now)

    def scoped_key(self, key: str, scope: str | None) -> str | None:
        """The budget key of ``scope``'s own window on route ``key`` (``"POST /v1/usage/track
        3f2a…"``), or ``None`` when the route has no scoped window or the call no scope.

        The server adds a scoped limit to some routes (``POST /v1/usage/track``: per customer;
        ``POST /v1/checkout/create``: per session token) and states it in ``X-RateLimit-*-Scoped``;
        the scope shows in the key only as a digest.
        """
        if scope is None or key not in self.scoped_routes:
            return None
        return f"{key} {_digest(scope)}"

    def wants_scope(self, key: str) -> bool:
        """Whether a call of route ``key`` needs its scope: the route has a scoped window, or no answer
        of it has said yet."""
        return key in self.scoped_routes or key not in self._scope_checked

    def learn_scope(self, key: str, headers: Mapping[str, str], refused: bool) -> None:
        """Note whether route ``key`` has a scoped window of its own: its response states scoped
        figures other than the route's (checked on the route's first answer, and on every 429)."""
        if key in self._scope_checked and not refused:
            return
        self._scope_checked.add(key)
        scoped = _stated(_Scoped(headers))
        if scoped is not None and scoped != _stated(headers):
            self.scoped_routes.add(key)

    async def settle_scoped(self, key: str, headers: Mapping[str, str] | None) -> None:
        """:meth:`settle` of a scoped key, from the ``-Scoped`` figures of ``headers`` (not shown in
        :attr:`rate_limits`, which lists routes)."""
        stated = None if headers is None else _stated(_Scoped(headers))
        now = self._clock()
        if self._memory is not None:
            self._memory.settle_now(key, now, stated, headers is not None)
        else:
            await self._update(key, _settle(now, stated, headers is not None))

    def release_now(self, key: str) -> None:
        """Release ``key``'s reservation without awaiting (a cancelled call): done in the background
        for a shared store, at once for the in-memory one."""
        if self._memory is not None:
            self._memory.settle_now(key, self._clock(), None, False)
            return
        change = _settle(self._clock(), None, False)
        try:
            import asyncio

            task = asyncio.get_running_loop().create_task(self._update(key, change))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
        except RuntimeError:  # not on asyncio (trio): the window's in_flight heals at its expiry
            pass

    def __repr__(self) -> str:
        return f"<RateBudget store={self.store!r}>"


def budget_of(rate_budget: object) -> RateBudget | None:
    """A client's ``rate_budget`` argument as its budget: ``None``/``True`` a new in-memory one."""
    if rate_budget is None or rate_budget is True:
        return RateBudget()
    if rate_budget is False:
        return None
    if isinstance(rate_budget, RateBudget):
        return rate_budget
    from ._errors import ValidationError

    raise ValidationError(
        f"rate_budget must be a RateBudget, True or False, not {type(rate_budget).__name__}.",
        code="invalid_argument",
    )


async def _real_sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)
