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

The state lives behind :class:`BudgetStore`, an async read-modify-write of one route's :class:`Window`.
:class:`MemoryBudgetStore` keeps it in this process; a store on a shared server (Redis) lets a fleet
behind one egress address spend one budget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

import attrs

__all__ = ["BudgetStore", "MemoryBudgetStore", "Window"]

T = TypeVar("T")


@attrs.frozen
class Window:
    """One route's rate-limit window as the budget knows it: an immutable value a store keeps per key.

    Times are seconds since the epoch (``time.time()``), so that processes sharing a store agree on
    them (the budget's clock is injectable; every process of a fleet must use the same kind).
    """

    limit: int | None
    """Requests the server allows per window; ``None``: the route answered without rate-limit headers
    (limiting off on that server), so the budget lets every call through."""
    remaining: int
    """Requests the budget may still send in this window, by the server's last word minus what was
    sent since (never above ``limit``)."""
    reset_at: float | None
    """When the window resets; ``None`` when it rolled over and no response of the new window has
    said yet (then at most ``remaining`` calls are sent and the next ones wait for an answer)."""
    in_flight: int = 0
    """Requests sent on this route and not answered yet (across the fleet, for a shared store)."""


@runtime_checkable
class BudgetStore(Protocol):
    """Where the rate budget keeps its :class:`Window` per route: the one operation it needs.

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
      fields; ``attrs.asdict(window)`` / ``Window(**fields)``).
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

    async def update(self, key: str, change: Callable[[Window | None], tuple[Window | None, T]]) -> T:
        """Atomically replace ``key``'s window ``old`` by ``change(old)[0]``; return ``change(old)[1]``."""
        ...


FORGET_AFTER = 120.0
"""Seconds after a window's reset (or its last update, when its reset is unknown) that a store may drop it."""


class MemoryBudgetStore:
    """The in-process :class:`BudgetStore`: a dictionary behind a ``threading.Lock`` (the blocking
    client's calls run on their own loop thread; the lock is held for one ``change`` call, never
    across an ``await``).

    Example::

        budget_store = MemoryBudgetStore()
        window = await budget_store.update("GET /v1/usage/check", lambda old: (old, old))
    """

    __slots__ = ("_lock", "_windows")

    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}
        self._lock = threading.Lock()

    async def update(self, key: str, change: Callable[[Window | None], tuple[Window | None, T]]) -> T:
        return self.update_now(key, change)

    def update_now(self, key: str, change: Callable[[Window | None], tuple[Window | None, T]]) -> T:
        """:meth:`update` without the coroutine (the budget's fast path for this store)."""
        with self._lock:
            new, result = change(self._windows.get(key))
            if new is None:
                self._windows.pop(key, None)
            else:
                self._windows[key] = new
            return result

    def __len__(self) -> int:
        return len(self._windows)

    def __repr__(self) -> str:
        return f"<MemoryBudgetStore routes={len(self._windows)}>"
