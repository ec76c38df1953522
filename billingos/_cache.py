"""The entitlement cache: fresh answers from memory, one upstream request per miss, a stale answer when down.

How a cached ``entitlements.check`` is answered::

    fresh entry (younger than ttl)?  ── yes ─▶ the entry, from memory: no await, no request  (hits)
        │ no
    a fetch of this key in flight?   ── yes ─▶ wait for it, share its outcome               (coalesced)
        │ no
    start one detached fetch                                                                (misses)
        ├── answer ──────────────────────────▶ stored, delivered to every waiter
        ├── NetworkError / ServerError / RateLimitError
        │     ├── entry younger than stale_if_error ─▶ it, with stale=True                  (stale)
        │     └── none: on_unavailable: "raise" the error,
        │         or "allow"/"deny" reason=billingos_unavailable                            (unavailable)
        └── any other error (auth, validation, ...) ─▶ raised to every waiter, never masked

Everything the cache holds sits behind one ``threading.Lock``, taken for a few dictionary operations and
never across an ``await``, so the blocking facade reads it from any thread (``get_fresh``) without
hopping to its loop thread.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import anyio
import attrs

from . import _budget
from . import _validate as check
from ._errors import NetworkError, RateLimitError, ServerError, ValidationError
from ._logs import logger
from ._loops import running_asyncio_loop
from ._models import Entitlement, EntitlementReason, FeatureType, UsageRecord

if TYPE_CHECKING:
    import asyncio

    from ._bulk import Batcher
    from ._config import SecretKey  # at run time only where a loop runs (so already imported): see _loops
    from ._redis_listener import Listener
    from ._redis_store import RedisStore

__all__ = ["CacheStats", "EntitlementCache", "OnUnavailable"]

OnUnavailable = Literal["raise", "allow", "deny"]
"""What a check answers when BillingOS is unavailable and nothing usable is cached."""

UNAVAILABLE_ERRORS = (NetworkError, ServerError, RateLimitError)
"""The failures that mean "BillingOS is unavailable" (stale-if-error and ``on_unavailable`` apply)."""

_POLICIES = ("raise", "allow", "deny")
_Key = tuple[str, str]  # (customer_id, feature_key)
_FlightKey = tuple[str, str, object]  # + the event loop (asyncio) or thread (other backends) waiting


@attrs.frozen
class CacheStats:
    """Counters of an :class:`EntitlementCache`, a snapshot taken by :attr:`EntitlementCache.stats`.

    Every cached check counts once in ``hits``, ``misses`` or ``coalesced``; ``stale`` and
    ``unavailable`` count the answers among those that were a fallback. Checks with ``cache=False``
    are not counted.

    Example::

        stats = billing.entitlement_cache.stats
        print(f"hit rate {stats.hits / max(1, stats.hits + stats.misses + stats.coalesced):.1%}")
    """

    hits: int = 0
    """Answered from a fresh entry, without a request."""
    misses: int = 0
    """Started an upstream request: one per request the cache sent (on trio, a waiter that takes over
    from a cancelled leader counts here too)."""
    coalesced: int = 0
    """Shared the upstream request another concurrent check had started."""
    stale: int = 0
    """Answered with a stale entry (``stale=True``) because BillingOS was unavailable."""
    unavailable: int = 0
    """Answered by the ``on_unavailable="allow"``/``"deny"`` policy (nothing usable was cached)."""
    evictions: int = 0
    """Entries dropped to stay within ``max_entries`` (least recently used first)."""
    size: int = 0
    """Entries held now (in this process's memory)."""
    shared_hits: int = 0
    """With a ``store``: misses of the memory answered from the shared store, without a request."""
    shared_coalesced: int = 0
    """With a ``store``: misses of the memory answered by another process's request (it held the lock)."""
    store_errors: int = 0
    """With a ``store``: its commands that failed or timed out (the cache carried on from memory)."""
    store_down: bool = False
    """With a ``store``: ``True`` while it is skipped after a failure (the cache runs on memory alone)."""
    bulk_fetches: int = 0
    """With ``batch_window``: bulk fetches made for two or more concurrent misses of one customer."""
    fleet_updates: int = 0
    """With a ``store``: entries of this process's memory refreshed or dropped because another process
    tracked usage of them or invalidated them (news on the store's channel)."""
    fleet_listening: bool = False
    """With a ``store``: ``True`` while this process listens for the fleet's tracks (subscribed on Redis);
    while ``False`` (not started yet: it starts with the first miss; Redis down) memory entries live to
    their ``ttl``."""


@attrs.frozen
class _Outcome:
    """What one upstream fetch produced, delivered to each of its waiters."""

    entitlement: Entitlement | None = None
    error: BaseException | None = None
    traceback: TracebackType | None = None
    kind: Literal["fresh", "stale", "unavailable"] = "fresh"


@attrs.define(eq=False)
class _Flight:
    """One upstream fetch in progress and its waiters' meeting point."""

    task: asyncio.Task[_Outcome] | None = None
    """asyncio: the detached task doing the fetch (waiters ``shield`` it)."""
    done: anyio.Event | None = None
    """Other backends: set when the leading caller has finished (or was cancelled)."""
    outcome: _Outcome | None = None
    """Other backends: the outcome, ``None`` if the leader was cancelled before one existed."""


class EntitlementCache:
    """An opt-in, per-client cache of entitlement checks, bounded, coalescing, and stale-if-error.

    Give it to a client (``AsyncBillingOS(entitlement_cache=...)`` or ``BillingOS(...)``) and
    ``entitlements.check`` / ``check_entitlement`` answer from it. A cache belongs to one client and
    its ``with_options`` copies (one account and environment): a client with another secret key or
    URL refuses it.

    Args:
        ttl: seconds an answer is fresh, counted from when it arrived. A fresh answer is served from
            memory without a request. ``0`` keeps nothing fresh (every check asks BillingOS, yet
            concurrent checks still share one request and failures can fall back to a stale answer).
        stale_if_error: how old (seconds since it arrived) an answer may be and still be served,
            marked ``stale=True``, when BillingOS fails with ``NetworkError``, ``ServerError`` or
            ``RateLimitError``. ``0`` disables it.
        max_entries: at most this many (customer, feature) answers are kept; the least recently used
            is dropped first.
        on_unavailable: when BillingOS is unavailable and nothing usable is cached: ``"raise"`` the
            error (default), or answer ``"allow"`` / ``"deny"`` with
            ``reason=EntitlementReason.BILLINGOS_UNAVAILABLE``.
        clock: a monotonic clock in seconds (inject one in tests).
        store: a shared second level, :class:`RedisStore`: answers shared by every process of a fleet,
            one upstream request per miss across the fleet, tracks applied fleet-wide. Memory stays the
            first level; when the store is down or slow the cache runs on memory alone (see
            ``stats.store_down``), never failing a check for it. ``misses`` then counts this process's
            fetches, of which ``shared_hits`` and ``shared_coalesced`` sent no request.
        batch_window: opt-in (seconds, e.g. ``0.005``): a miss waits this long for misses of *other*
            features of the same customer; when two or more came, one ``entitlements.prefetch``-style
            bulk fetch (``/v1/features/entitlements`` as the customer, plus ``/v1/usage/metrics`` for
            quotas) answers those it can, and the others are checked one by one, as are all of them if
            the bulk fetch fails or its route's budget is spent (it never waits for a budget). Each
            miss pays the window in latency; ``stats.bulk_fetches`` counts the bulk fetches.

    Example::

        cache = EntitlementCache(ttl=30, stale_if_error=300, max_entries=100_000)
        async with AsyncBillingOS(entitlement_cache=cache) as billing:
            ent = await billing.check_entitlement("user_42", "api_calls")   # one request
            ent = await billing.check_entitlement("user_42", "api_calls")   # from memory
            print(cache.stats.hits)                                          # 1
    """

    def __init__(
        self,
        ttl: float = 30.0,
        stale_if_error: float = 300.0,
        max_entries: int = 100_000,
        on_unavailable: OnUnavailable = "raise",
        clock: Callable[[], float] = time.monotonic,
        store: RedisStore | None = None,
        batch_window: float | None = None,
    ) -> None:
        self._ttl = _seconds("ttl", ttl)
        self._batcher: Batcher | None = None
        if batch_window is not None:
            from ._bulk import Batcher

            self._batcher = Batcher(_seconds("batch_window", batch_window))
        self._stale_if_error = _seconds("stale_if_error", stale_if_error)
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValidationError(
                f"max_entries must be an int >= 1, got {max_entries!r}.", code="invalid_argument"
            )
        if on_unavailable not in _POLICIES:
            raise ValidationError(
                f"on_unavailable must be 'raise', 'allow' or 'deny', got {on_unavailable!r}.",
                code="invalid_argument",
            )
        if not callable(clock):
            raise ValidationError(
                f"clock must be a callable returning seconds, not {type(clock).__name__}.",
                code="invalid_argument",
            )
        if store is not None:
            from ._redis_store import RedisStore

            if not isinstance(store, RedisStore):
                raise ValidationError(
                    f"store must be a RedisStore, not {type(store).__name__}.", code="invalid_argument"
                )
        self._store = store
        self._origin = secrets.token_hex(8)  # this cache's id in the fleet's messages (skips its own)
        self._listener: Listener | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._fleet_updates = 0
        self._scope = "unbound"  # the store's key space: a hash of the client's URL and key (see _bind)
        self._shared_hits = self._shared_coalesced = 0
        self._max_entries = max_entries
        self._on_unavailable: OnUnavailable = on_unavailable
        self._clock = clock
        self._keep = max(self._ttl, self._stale_if_error)  # older than this, an entry is useless
        self._lock = threading.Lock()
        # (customer, feature) -> (answer, clock() when it arrived); least recently used first.
        self._entries: OrderedDict[_Key, tuple[Entitlement, float]] = OrderedDict()
        self._features: dict[str, set[str]] = {}  # customer -> cached feature keys (for invalidate)
        self._flights: dict[_FlightKey, _Flight] = {}
        self._tasks: set[asyncio.Task[_Outcome]] = set()  # strong references to detached fetches
        self._owner: str | None = None
        self._hits = self._misses = self._coalesced = self._stale = self._unavailable = 0
        self._evictions = 0
        _CACHES.add(self)

    # -- configuration (read-only) -------------------------------------------------------------

    @property
    def ttl(self) -> float:
        """Seconds an answer stays fresh. Example: ``EntitlementCache(ttl=5).ttl == 5``."""
        return self._ttl

    @property
    def stale_if_error(self) -> float:
        """Seconds an answer may be served stale while BillingOS is unavailable (``0``: never)."""
        return self._stale_if_error

    @property
    def max_entries(self) -> int:
        """The bound on cached (customer, feature) answers."""
        return self._max_entries

    @property
    def batch_window(self) -> float | None:
        """Seconds a miss waits for misses of other features of its customer (``None``: no batching)."""
        return None if self._batcher is None else self._batcher.window

    @property
    def store(self) -> RedisStore | None:
        """The shared second level (:class:`RedisStore`), or ``None`` for a cache in memory only."""
        return self._store

    @property
    def on_unavailable(self) -> OnUnavailable:
        """``"raise"``, ``"allow"`` or ``"deny"``: the answer when down with nothing usable cached."""
        return self._on_unavailable

    # -- reading -------------------------------------------------------------------------------

    def get_fresh(self, customer_id: str, feature_key: str) -> Entitlement | None:
        """The fresh cached answer, or ``None``. Synchronous, thread-safe, no I/O; counts a hit.

        The blocking facade calls it in the calling thread before going to its loop thread.

        Example::

            ent = cache.get_fresh("user_42", "api_calls")
            if ent is None:
                ent = await billing.entitlements.check("user_42", "api_calls")
        """
        key = (customer_id, feature_key)
        now = self._clock()
        with self._lock:
            hit = self._fresh_locked(key, now)
            if hit is not None:
                self._hits += 1
            return hit

    async def get_or_fetch(
        self, customer_id: str, feature_key: str, fetch: Callable[[], Awaitable[Entitlement]]
    ) -> Entitlement:
        """The fresh cached answer, or the outcome of one ``fetch()`` shared by every concurrent caller.

        On asyncio the fetch runs in a task of its own, detached from the callers: a cancelled caller
        stops waiting at once and the others (and the cache) still get the answer. On other backends
        (trio) the first caller fetches and the others wait for it; if that caller is cancelled, the
        fetch is cancelled with it and one of the waiters starts a new one.
        ``entitlements.check`` is the caller; you do not normally call this yourself.

        Example::

            ent = await cache.get_or_fetch("user_42", "sso", lambda: fetch_from_somewhere())
        """
        key = (customer_id, feature_key)
        loop = running_asyncio_loop()
        fkey: _FlightKey = (customer_id, feature_key, loop if loop is not None else threading.get_ident())
        first_try = True
        while True:
            event = None if loop is not None else anyio.Event()
            now = self._clock()
            with self._lock:
                hit = self._fresh_locked(key, now)
                if hit is not None:
                    if first_try:
                        self._hits += 1
                    return hit
                flight = self._flights.get(fkey)
                leader = flight is None
                if flight is None:
                    flight = self._flights[fkey] = _Flight(done=event)
                if leader:
                    self._misses += 1
                elif first_try:
                    self._coalesced += 1
            first_try = False

            if loop is not None:
                task = flight.task
                if task is None:  # we lead; created outside the lock (an eager task may finish at once)
                    task = flight.task = loop.create_task(self._fetch(key, fkey, flight, fetch))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                import asyncio  # a loop is running: already imported

                return self._deliver(await asyncio.shield(task))

            assert flight.done is not None
            if leader:
                try:
                    flight.outcome = await self._fetch(key, fkey, flight, fetch)
                finally:
                    flight.done.set()
                return self._deliver(flight.outcome)
            await flight.done.wait()
            if flight.outcome is not None:
                return self._deliver(flight.outcome)
            # The leader was cancelled before an outcome existed: lead a new fetch (or join a newer one).

    # -- writing -------------------------------------------------------------------------------

    def put(self, customer_id: str, feature_key: str, entitlement: Entitlement) -> None:
        """Store an answer BillingOS just gave (a ``cache=False`` check does this). Thread-safe.

        Example::

            cache.put("user_42", "sso", await billing.entitlements.check("user_42", "sso", cache=False))
        """
        now = self._clock()
        with self._lock:
            self._store_locked((customer_id, feature_key), entitlement, now)
        if self._store is not None:
            self._listen()

    def on_tracked(self, customer_id: str, feature_key: str, record: UsageRecord) -> None:
        """Apply a successful ``usage.track`` to the cached entry: consume locally. Thread-safe.

        The entry takes the track's usage snapshot (``usage``, ``remaining``, ``limit``,
        ``resets_at``); when ``remaining`` reaches 0 it becomes ``has_access=False,
        reason="quota_exceeded"``. An entry the snapshot cannot update (no snapshot, not a usage
        quota) is dropped. Its age is unchanged: consuming does not extend its freshness. Usage never
        goes back within a period, so an older snapshot (a replayed idempotency key) changes nothing.
        Fetches in flight for the key will not store their (possibly older) answer. ``usage.track``
        calls this; a track that fails with ``QuotaExceededError`` or ``NotFoundError`` invalidates.

        Example::

            record = await billing.usage.track("user_42", "api_calls", 5)   # calls on_tracked itself
        """
        key = (customer_id, feature_key)
        with self._lock:
            self._detach_flights_locked(customer_id, feature_key)
            entry = self._entries.get(key)
            if entry is None:
                return
            updated = _consume(entry[0], record)
            if updated is None:
                self._drop_locked(key)
            else:
                self._entries[key] = (updated, entry[1])

    def invalidate(self, customer_id: str, feature_key: str | None = None) -> None:
        """Forget one customer's answers: every feature, or just ``feature_key``. Thread-safe.

        Checks already waiting on a request in flight still get its answer, but that answer is not
        stored; the next check asks BillingOS. Call it when you learn the customer's plan changed
        (a webhook, an upgrade in your own UI).

        Example::

            cache.invalidate("user_42")                  # after user_42 upgraded
            cache.invalidate("user_42", "api_calls")     # just one feature
        """
        check.text("customer_id", customer_id)
        if feature_key is not None:
            check.text("feature_key", feature_key)
        with self._lock:
            self._detach_flights_locked(customer_id, feature_key)
            if feature_key is not None:
                self._drop_locked((customer_id, feature_key))
                return
            for feature in tuple(self._features.get(customer_id, ())):
                self._drop_locked((customer_id, feature))

    def clear(self) -> None:
        """Forget every answer (counters are kept). Thread-safe.

        Example::

            cache.clear()
            assert cache.stats.size == 0
        """
        with self._lock:
            self._entries.clear()
            self._features.clear()
            self._flights.clear()

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters (:class:`CacheStats`).

        Example::

            s = cache.stats
            print(s.hits, s.misses, s.coalesced, s.stale, s.unavailable, s.evictions, s.size)
        """
        store = self._store
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                coalesced=self._coalesced,
                stale=self._stale,
                unavailable=self._unavailable,
                evictions=self._evictions,
                size=len(self._entries),
                shared_hits=self._shared_hits,
                shared_coalesced=self._shared_coalesced,
                store_errors=0 if store is None else store.errors,
                store_down=False if store is None else store.down,
                bulk_fetches=0 if self._batcher is None else self._batcher.bulk_fetches,
                fleet_updates=self._fleet_updates,
                fleet_listening=self._listener is not None and self._listener.listening,
            )

    def __len__(self) -> int:
        """Entries held now. Example: ``len(cache)``."""
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"EntitlementCache(ttl={self._ttl!r}, stale_if_error={self._stale_if_error!r}, "
            f"max_entries={self._max_entries!r}, on_unavailable={self._on_unavailable!r}, "
            f"size={len(self._entries)})"
        )

    # -- the client's hooks --------------------------------------------------------------------

    def _bind(self, api_url: str, secret_key: SecretKey) -> None:
        """Tie the cache to one account and environment; a second client with another key is refused.

        Answers are keyed by (customer, feature) only, so a cache shared by a test-mode and a
        live-mode client would answer one with the other's data. Only a hash of the key is kept.
        """
        # The key is revealed only inside this expression, never bound to a local a traceback could show.
        owner = api_url + " " + hashlib.sha256(secret_key.reveal().encode()).hexdigest()
        with self._lock:
            if self._owner is None:
                self._owner = owner
                self._scope = hashlib.sha256(owner.encode()).hexdigest()[:16]
                return
            if self._owner == owner:
                return
        raise ValidationError(
            "This EntitlementCache already serves a client with another secret key or API URL; its "
            "answers would be wrong for this one. Give each client its own EntitlementCache "
            "(with_options copies of a client share it).",
            code="invalid_argument",
        )

    # -- internals (call with the lock held where the name says so) ----------------------------

    def _fresh_locked(self, key: _Key, now: float) -> Entitlement | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = now - entry[1]
        if age < self._ttl:
            self._entries.move_to_end(key)
            return entry[0]
        if age > self._keep:
            self._drop_locked(key)  # useless even as a stale fallback
        return None

    def _store_locked(self, key: _Key, entitlement: Entitlement, now: float) -> None:
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        else:
            self._features.setdefault(key[0], set()).add(key[1])
        entries[key] = (entitlement, now)
        while len(entries) > self._max_entries:
            old, _ = entries.popitem(last=False)
            self._unindex_locked(old)
            self._evictions += 1

    def _drop_locked(self, key: _Key) -> None:
        if self._entries.pop(key, None) is not None:
            self._unindex_locked(key)

    def _unindex_locked(self, key: _Key) -> None:
        features = self._features.get(key[0])
        if features is not None:
            features.discard(key[1])
            if not features:
                del self._features[key[0]]

    def _detach_flights_locked(self, customer_id: str, feature_key: str | None) -> None:
        """Fetches in flight keep serving their waiters, but will not store, and new checks start anew."""
        for fkey in [k for k in self._flights if k[0] == customer_id and feature_key in (None, k[1])]:
            del self._flights[fkey]

    async def _fetch(
        self, key: _Key, fkey: _FlightKey, flight: _Flight, fetch: Callable[[], Awaitable[Entitlement]]
    ) -> _Outcome:
        """Run one upstream fetch; store its answer unless detached meanwhile; never raise an Exception."""
        age = 0.0
        # A stale answer at hand: if the route's rate budget is spent, answer it rather than wait.
        waiting = _budget.WAIT.set(0.0) if self._has_stale(key) else None
        try:
            if self._store is None:
                entitlement = await fetch()
            else:
                listener = self._listen()
                if listener is not None and not listener.settled.is_set() and not self._store.down:
                    # The first miss waits for the subscription (bounded by the store's timeout), so that
                    # no track published between its read and the subscription goes unseen.
                    await listener.settled.wait()
                entitlement, age, source = await self._store.fetch(
                    self._scope, *key, fetch, ttl=self._ttl, keep=self._keep, seen=self._adopter(key)
                )
                if source != "upstream":
                    with self._lock:
                        if source == "shared":
                            self._shared_hits += 1
                        else:
                            self._shared_coalesced += 1
        except UNAVAILABLE_ERRORS as exc:
            outcome = self._fallback(key, exc)
        except Exception as exc:
            outcome = _Outcome(error=exc, traceback=exc.__traceback__)
        else:
            outcome = _Outcome(entitlement)
            now = self._clock()
            with self._lock:
                if self._flights.get(fkey) is flight:
                    self._store_locked(key, entitlement, now - age)
        finally:  # also on cancellation: the next check must not wait on a flight that has ended
            if waiting is not None:
                _budget.WAIT.reset(waiting)
            with self._lock:
                if self._flights.get(fkey) is flight:
                    del self._flights[fkey]
        return outcome

    def _adopter(self, key: _Key) -> Callable[[Entitlement, float], None]:
        """Keep a shared answer too old to serve in memory (unless memory has a newer one): the
        stale-if-error fallback then finds it."""

        def adopt(entitlement: Entitlement, age: float) -> None:
            arrived = self._clock() - age
            with self._lock:
                entry = self._entries.get(key)
                if (entry is None or entry[1] < arrived) and age <= self._keep:
                    self._store_locked(key, entitlement, arrived)

        return adopt

    async def _after_track(self, customer_id: str, feature_key: str, record: UsageRecord | None) -> None:
        """``usage.track``'s hook: ``record`` applied (``on_tracked``), or ``None`` when BillingOS refused
        the track (``invalidate``), in memory and, with a store, in the shared store too."""
        if record is None:
            self.invalidate(customer_id, feature_key)
        else:
            self.on_tracked(customer_id, feature_key, record)
        store = self._store
        if store is None:
            return
        self._listen()
        if record is None:
            await store.invalidate(self._scope, customer_id, feature_key, self._origin)
        else:
            await store.tracked(
                self._scope,
                customer_id,
                feature_key,
                lambda ent: _consume(ent, record),
                self._keep,
                self._origin,
            )

    async def invalidate_shared(self, customer_id: str, feature_key: str | None = None) -> None:
        """:meth:`invalidate`, and the same in the shared ``store`` (every process then asks again).

        Other processes' caches drop it from their memory too, as soon as the news reaches them (they
        listen on the store's channel; one that is not listening keeps its answer until its ``ttl``).
        Without a store it is :meth:`invalidate`. Redis errors are counted in ``stats.store_errors``,
        never raised.

        Example::

            await cache.invalidate_shared("user_42")   # the customer changed plans
        """
        self.invalidate(customer_id, feature_key)
        if self._store is not None:
            self._listen()
            await self._store.invalidate(self._scope, customer_id, feature_key, self._origin)

    # -- the fleet's news (a store's channel) ---------------------------------------------------

    def _listen(self) -> Listener | None:
        """Start listening for the fleet's tracks on this asyncio loop, once (no I/O here: a task does it).

        Called on misses, tracks and puts, never on a memory hit. ``None`` off asyncio (redis.asyncio
        needs it) or without a store.
        """
        store = self._store
        loop = running_asyncio_loop()
        if store is None or loop is None:
            return None
        task = self._listener_task
        if task is not None and not task.done():
            if task.get_loop() is loop:
                return self._listener
            if not task.get_loop().is_closed():
                return None  # listening on the loop the cache was first used on (a redis client's)
        listener = store.listener(self._scope, self._fleet_message)
        task = loop.create_task(listener.run(), name="billingos-cache-listener")
        self._listener, self._listener_task = listener, task
        return listener

    async def _stop_listening(self) -> None:
        """Stop the listener (its pub/sub connection closed): the client closes. It starts again on use."""
        task, self._listener_task = self._listener_task, None
        listener = self._listener
        if task is None or listener is None or task.done():
            return
        loop = running_asyncio_loop()
        if task.get_loop() is not loop:
            if not task.get_loop().is_closed():
                task.get_loop().call_soon_threadsafe(listener.stop, task)
            return
        import asyncio  # a loop is running: already imported

        with anyio.CancelScope(shield=True):
            for _ in range(50):  # its cleanup is bounded by the store's timeout; a stray cancel is re-sent
                listener.stop(task)
                await asyncio.wait({task}, timeout=0.1)
                if task.done():
                    break

    def _fleet_message(self, raw: bytes) -> None:
        """Apply another process's track or invalidation to this process's memory (the listener's hook)."""
        from ._redis_store import read_message

        origin, customer_id, feature_key, entitlement = read_message(raw)
        if origin == self._origin:
            return  # our own: memory already has it
        with self._lock:
            self._detach_flights_locked(customer_id, feature_key)  # they may hold an older answer
            if feature_key is None:
                keys = [(customer_id, f) for f in tuple(self._features.get(customer_id, ()))]
            else:
                keys = [(customer_id, feature_key)]
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    continue  # nothing held: the next check reads the shared entry
                if entitlement is None:
                    self._drop_locked(key)
                elif _not_older(entitlement, entry[0]):
                    self._entries[key] = (entitlement, entry[1])  # its age is unchanged, as on_tracked
                else:
                    continue
                self._fleet_updates += 1

    def _has_stale(self, key: _Key) -> bool:
        """Whether an answer young enough for stale-if-error is held for ``key``."""
        if self._stale_if_error <= 0:
            return False
        with self._lock:
            entry = self._entries.get(key)
        return entry is not None and self._clock() - entry[1] <= self._stale_if_error

    def _fallback(self, key: _Key, exc: Exception) -> _Outcome:
        """BillingOS is unavailable: a stale answer young enough, else the ``on_unavailable`` policy."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        customer_id, feature_key = key
        age = math.inf if entry is None else now - entry[1]
        if entry is not None and age < self._ttl:  # stored meanwhile (a cache=False check): fresh
            return _Outcome(entry[0])
        if entry is not None and age <= self._stale_if_error:
            log = logger.debug if getattr(exc, "code", None) == _budget.BUDGET_EXHAUSTED else logger.warning
            log(
                "entitlement check %s/%s failed (%s: %s); serving the answer from %.0f s ago as stale",
                customer_id, feature_key, type(exc).__name__, exc, age,
            )  # fmt: skip
            return _Outcome(attrs.evolve(entry[0], stale=True), kind="stale")
        if self._on_unavailable == "raise":
            return _Outcome(error=exc, traceback=exc.__traceback__)
        allow = self._on_unavailable == "allow"
        logger.warning(
            "entitlement check %s/%s failed (%s: %s) with nothing usable cached; "
            "on_unavailable=%r answers has_access=%s",
            customer_id, feature_key, type(exc).__name__, exc, self._on_unavailable, allow,
        )  # fmt: skip
        return _Outcome(
            Entitlement(
                feature_key=feature_key, has_access=allow, reason=EntitlementReason.BILLINGOS_UNAVAILABLE
            ),
            kind="unavailable",
        )

    def _deliver(self, outcome: _Outcome) -> Entitlement:
        """Hand one waiter its copy of the shared outcome, counting fallbacks per answer."""
        if outcome.entitlement is None:
            assert outcome.error is not None
            # The same exception object reaches every waiter; resetting its traceback keeps each
            # waiter's traceback the fetch's plus its own, instead of growing with every waiter.
            raise outcome.error.with_traceback(outcome.traceback)
        if outcome.kind != "fresh":
            with self._lock:
                if outcome.kind == "stale":
                    self._stale += 1
                else:
                    self._unavailable += 1
        return outcome.entitlement

    def _after_fork_in_child(self) -> None:
        """The parent's lock may have been held while forking, and its flights (and listener) belong
        to its loops."""
        self._lock = threading.Lock()
        self._flights = {}
        self._tasks = set()
        self._listener = self._listener_task = None


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"{name} must be a number of seconds, not {type(value).__name__}.", code="invalid_argument"
        )
    if not math.isfinite(value) or value < 0:
        raise ValidationError(
            f"{name} must be a finite number of seconds >= 0, got {value!r}.", code="invalid_argument"
        )
    return float(value)


def _consume(entitlement: Entitlement, record: UsageRecord) -> Entitlement | None:
    """``entitlement`` after ``record``'s track, from the track's usage snapshot; ``None`` if unknowable."""
    snapshot = record.usage
    if snapshot is None or entitlement.feature_type not in (None, FeatureType.USAGE_QUOTA):
        return None
    same_period = (
        snapshot.period_end is None
        or entitlement.resets_at is None
        or snapshot.period_end <= entitlement.resets_at
    )
    if same_period and entitlement.usage is not None and snapshot.consumed_units < entitlement.usage:
        return entitlement  # an older snapshot (a replayed idempotency key): usage never goes back
    limit = snapshot.limit_units if snapshot.limit_units is not None else entitlement.limit
    remaining = snapshot.remaining_units
    if remaining is None and limit is not None:
        remaining = limit - snapshot.consumed_units
    if remaining is not None:
        remaining = max(remaining, 0.0)
    has_access = remaining is None or remaining > 0
    return attrs.evolve(
        entitlement,
        has_access=has_access,
        reason=None if has_access else EntitlementReason.QUOTA_EXCEEDED,
        usage=snapshot.consumed_units,
        limit=limit,
        remaining=remaining,
        resets_at=snapshot.period_end or entitlement.resets_at,
        stale=False,
    )


def _not_older(new: Entitlement, held: Entitlement) -> bool:
    """Whether ``new`` (another process's answer after a track) is not older than the ``held`` one:
    usage never goes back within a period (the same rule as :func:`_consume`)."""
    same_period = new.resets_at is None or held.resets_at is None or new.resets_at == held.resets_at
    return not (same_period and new.usage is not None and held.usage is not None and new.usage < held.usage)


_CACHES: weakref.WeakSet[EntitlementCache] = weakref.WeakSet()


def _reset_caches_after_fork() -> None:
    for cache in list(_CACHES):
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_caches_after_fork)
