"""The entitlement cache's second level: answers shared by a fleet on Redis, one upstream request per miss.

How the shared level answers a miss of a process's in-memory level (``EntitlementCache`` calls it)::

    HGET the customer's hash field          fresh (age < ttl) ─────────────────▶ it            (shared_hits)
        │ missing or old (kept as a stale-if-error candidate)
    SET lock NX PX lease, with a token  ── taken ─▶ HGET again (filled meanwhile? it)
        │ held by another process              └─▶ fetch upstream, HSET the answer, release    (misses)
    poll every poll_interval: the answer filled after we started? ──────▶ it           (shared_coalesced)
        the lock gone (released, or its lease ran out: a crashed holder) ─▶ try to take it again

    any Redis error or timeout (each command bounded by ``timeout``) ─▶ the store is "down" for
    ``retry_interval`` seconds: misses fetch upstream directly, the in-memory level carries on.

Entries live in one Redis hash per customer (field: feature key; value: ``{"t": arrived, "e":
Entitlement.to_dict()}``), expiring ``keep`` seconds after the last write, so a customer is forgotten
with one ``DEL`` and a feature with one ``HDEL``. Ages use the wall clock (``time.time``) of the process
that wrote the answer: keep the fleet's clocks in sync (NTP), as for any shared TTL.
Keys start with ``prefix`` and a hash of the client's API URL and secret key (never the key itself), so
two accounts or environments sharing one Redis never read each other's answers.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs

from ._errors import ValidationError
from ._logs import logger
from ._models import Entitlement, EntitlementReason, FeatureType

if TYPE_CHECKING:
    import redis.asyncio

    from ._redis_listener import Listener

__all__ = ["RedisStore"]

Source = Literal["upstream", "shared", "waited"]
"""Where a shared fetch's answer came from: this process's request, Redis, or another process's request."""

# Delete the lock only if it still holds our token: a holder whose lease ran out must not free the lock
# another process took after it.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class _StoreDown(Exception):
    """A Redis command failed or timed out; the cache carries on without the shared level."""


class RedisStore:
    """The shared level of an :class:`EntitlementCache`: a fleet of processes shares answers on Redis.

    ``EntitlementCache(store=RedisStore(redis.asyncio.Redis(...)))`` keeps its in-memory level as the
    first one; a miss there reads Redis, and a miss in Redis is fetched by one process of the fleet
    while the others wait for its answer (a Redis lock with a lease: a crashed holder blocks nobody past
    ``lease`` seconds). A track updates (or drops) the shared entry, stale-if-error reads it too, and a
    Redis that is down or slow only costs the fleet its sharing: the cache answers from memory and
    BillingOS, says so in :attr:`EntitlementCache.stats` (``store_errors``, ``store_down``) and logs a
    warning, and never fails a check because of Redis. Needs ``pip install 'billingos[redis]'``.

    Args:
        client: a ``redis.asyncio.Redis`` (redis-py >= 5). The store never closes it. Like every
            ``redis.asyncio`` client it belongs to one event loop: give each loop its own.
        prefix: the start of every key the store writes.
        timeout: seconds any one Redis command may take before the store counts Redis as down.
        lease: seconds the lock of a miss is held at most: longer than a check takes, short enough
            that a crashed holder does not keep the fleet waiting long.
        poll_interval: seconds between two looks of a waiting process at the holder's answer.
        retry_interval: seconds the store stays down after a failure before trying Redis again.
        clock: the wall clock in seconds that ages shared answers (inject one in tests).

    Example::

        import redis.asyncio
        from billingos import AsyncBillingOS, EntitlementCache, RedisStore

        store = RedisStore(redis.asyncio.Redis(host="redis.internal"))
        cache = EntitlementCache(ttl=30, stale_if_error=300, store=store)
        async with AsyncBillingOS(entitlement_cache=cache) as billing:
            ent = await billing.check_entitlement("user_42", "api_calls")   # one request per fleet
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "billingos:",
        timeout: float = 0.25,
        lease: float = 10.0,
        poll_interval: float = 0.02,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(getattr(client, "hget", None)) or not callable(getattr(client, "set", None)):
            raise ValidationError(
                f"client must be a redis.asyncio.Redis, not {type(client).__name__}.", code="invalid_argument"
            )
        if not isinstance(prefix, str):
            raise ValidationError(
                f"prefix must be a str, not {type(prefix).__name__}.", code="invalid_argument"
            )
        for name, value in (
            ("timeout", timeout),
            ("lease", lease),
            ("poll_interval", poll_interval),
            ("retry_interval", retry_interval),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValidationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}.", code="invalid_argument"
                )
        self._client = client
        self._prefix = prefix
        self._timeout = float(timeout)
        self._lease_ms = max(1, round(lease * 1000))
        self._poll = float(poll_interval)
        self._retry_interval = float(retry_interval)
        self._clock = clock
        self._down_until = -math.inf  # time.monotonic() until which Redis is not asked
        self._errors = 0
        self._release: Any = None  # the registered release script, made on first use

    @property
    def client(self) -> redis.asyncio.Redis:
        """The ``redis.asyncio.Redis`` the store sends its commands to."""
        return self._client

    @property
    def errors(self) -> int:
        """Redis commands that failed or timed out so far (each time, the cache carried on without Redis)."""
        return self._errors

    @property
    def down(self) -> bool:
        """``True`` while the store skips Redis after a failure (for ``retry_interval`` seconds)."""
        return time.monotonic() < self._down_until

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r}, lease={self._lease_ms / 1000!r}, down={self.down!r})"

    # -- what EntitlementCache calls -----------------------------------------------------------

    async def fetch(
        self,
        scope: str,
        customer_id: str,
        feature_key: str,
        fetch: Callable[[], Awaitable[Entitlement]],
        *,
        ttl: float,
        keep: float,
        seen: Callable[[Entitlement, float], None],
    ) -> tuple[Entitlement, float, Source]:
        """An answer for a miss of the in-memory level: ``(entitlement, age in seconds, source)``.

        ``seen(entitlement, age)`` receives a shared answer too old to serve, as a stale-if-error
        candidate. Errors of ``fetch()`` propagate (the lock is released first); Redis errors never do.
        """
        if self.down:
            return await fetch(), 0.0, "upstream"
        hkey, lkey = self._keys(scope, customer_id, feature_key)
        started = self._clock()
        waited = False
        try:
            while True:
                found = await self._read(hkey, feature_key)
                if found is not None:
                    ent, arrived = found
                    age = max(0.0, self._clock() - arrived)
                    if age < ttl or arrived >= started:
                        return ent, age, "waited" if waited else "shared"
                    seen(ent, age)
                token = secrets.token_hex(16)
                if await self._call(self._client.set(lkey, token, nx=True, px=self._lease_ms)):
                    break
                waited = True
                await anyio.sleep(self._poll)
            # We hold the lock: whoever held it before may have filled the entry just before releasing.
            found = await self._read(hkey, feature_key)
            if found is not None and (found[1] >= started or self._clock() - found[1] < ttl):
                await self._unlock(lkey, token)
                return found[0], max(0.0, self._clock() - found[1]), "waited" if waited else "shared"
        except _StoreDown:
            return await fetch(), 0.0, "upstream"
        try:
            ent = await fetch()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._unlock_quietly(lkey, token)
            raise
        try:
            await self._write(hkey, feature_key, ent, keep)
            await self._unlock(lkey, token)
        except _StoreDown:
            pass  # answered all the same; the others take over when the lease ends
        return ent, 0.0, "upstream"

    async def tracked(
        self,
        scope: str,
        customer_id: str,
        feature_key: str,
        consume: Callable[[Entitlement], Entitlement | None],
        keep: float,
        origin: str = "",
    ) -> None:
        """Apply a track to the shared entry (``consume`` gives the new answer, ``None`` drops it) and
        tell the fleet on the scope's channel, in the same transaction (``origin``: the sender's id)."""
        if self.down:
            return
        import redis.exceptions  # the store exists, so redis is installed

        hkey, _ = self._keys(scope, customer_id, feature_key)
        channel = self._channel(scope)
        try:
            for _ in range(3):  # optimistic: retry when another process wrote the hash meanwhile
                try:
                    async with self._client.pipeline(transaction=True) as pipe:
                        await self._call(pipe.watch(hkey))
                        raw = await self._call(pipe.hget(hkey, feature_key))
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if raw is None:  # nothing shared: a process may still hold one in memory
                            pipe.publish(channel, _message(origin, customer_id, feature_key, None))
                        else:
                            ent, arrived = _decode(raw)
                            updated = consume(ent)
                            value = None if updated is None else _encode(updated, arrived)
                            if value is None:
                                pipe.hdel(hkey, feature_key)
                            else:
                                pipe.hset(hkey, feature_key, value)
                            pipe.publish(channel, _message(origin, customer_id, feature_key, value))
                        await self._call(pipe.execute())
                        return
                except redis.exceptions.WatchError:
                    continue
            await self.invalidate(scope, customer_id, feature_key, origin)  # too contended: ask again next
        except _StoreDown:
            return

    async def invalidate(
        self, scope: str, customer_id: str, feature_key: str | None, origin: str = ""
    ) -> None:
        """Forget the shared answers of a customer (every feature, or one), and tell the fleet's memory."""
        if self.down:
            return
        hkey, _ = self._keys(scope, customer_id, feature_key or "")
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                if feature_key is None:
                    pipe.delete(hkey)
                else:
                    pipe.hdel(hkey, feature_key)
                pipe.publish(self._channel(scope), _message(origin, customer_id, feature_key, None))
                await self._call(pipe.execute())
        except _StoreDown:
            return

    def listener(self, scope: str, deliver: Callable[[bytes], None]) -> Listener:
        """A :class:`~billingos._redis_listener.Listener` of ``scope``'s channel (tracks and invalidations
        of the fleet; decode each with :func:`read_message`). Its failures are the store's: counted in
        :attr:`errors`, and Redis is skipped for ``retry_interval`` seconds."""
        from ._redis_listener import Listener

        return Listener(
            self._client,
            self._channel(scope),
            deliver,
            timeout=self._timeout,
            retry_interval=self._retry_interval,
            failed=self._failed,
        )

    # -- internals -----------------------------------------------------------------------------

    def _channel(self, scope: str) -> str:
        return f"{self._prefix}{scope}:t"

    def _keys(self, scope: str, customer_id: str, feature_key: str) -> tuple[str, str]:
        base = f"{self._prefix}{scope}:"
        return (
            f"{base}e:{customer_id}",
            f"{base}l:{len(customer_id)}:{customer_id}:{feature_key}",
        )

    async def _read(self, hkey: str, feature_key: str) -> tuple[Entitlement, float] | None:
        raw = await self._call(self._client.hget(hkey, feature_key))
        if raw is None:
            return None
        try:
            return _decode(raw)
        except (ValueError, KeyError, TypeError, ValidationError):
            logger.warning("ignoring an unreadable shared entitlement entry in Redis (key %s)", hkey)
            return None

    async def _write(self, hkey: str, feature_key: str, ent: Entitlement, keep: float) -> None:
        px = max(self._lease_ms, math.ceil(keep * 1000))
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(hkey, feature_key, _encode(ent, self._clock()))
            pipe.pexpire(hkey, px)
            await self._call(pipe.execute())

    async def _unlock(self, lkey: str, token: str) -> None:
        if self._release is None:
            self._release = self._client.register_script(_RELEASE)
        await self._call(self._release(keys=[lkey], args=[token]))

    async def _unlock_quietly(self, lkey: str, token: str) -> None:
        with contextlib.suppress(_StoreDown):  # else the lease frees it
            await self._unlock(lkey, token)

    async def _call(self, command: Awaitable[Any]) -> Any:
        """Await one Redis command within ``timeout``; any failure marks the store down.

        ``asyncio.timeout``, not ``anyio.fail_after``: redis.asyncio runs on asyncio only, and an anyio
        cancel scope costs ~4x as much (it is on the path of every shared hit, see bench scenario 11).
        """
        import asyncio  # redis.asyncio is running: already imported

        try:
            async with asyncio.timeout(self._timeout):
                return await command
        except Exception as exc:
            self._failed(exc)
            raise _StoreDown from exc

    def _failed(self, exc: BaseException) -> None:
        """A command (or the listener's subscription) failed: count it, skip Redis for a while, say so."""
        self._errors += 1
        was_up = not self.down
        self._down_until = time.monotonic() + self._retry_interval
        if was_up:
            logger.warning(
                "Redis unavailable for the shared entitlement cache (%s: %s); answering from memory "
                "and BillingOS for %.0f s before trying Redis again",
                type(exc).__name__, exc, self._retry_interval,
            )  # fmt: skip


def _encode(ent: Entitlement, arrived: float) -> str:
    return json.dumps({"t": arrived, "e": ent.to_dict()}, separators=(",", ":"))


def _decode(raw: bytes | str) -> tuple[Entitlement, float]:
    data = json.loads(raw)
    return _entitlement(data["e"]), float(data["t"])


_FIELDS = frozenset(attrs.fields_dict(Entitlement))
_FLOATS = ("limit", "usage", "remaining")


def _entitlement(d: Any) -> Entitlement:
    """``Entitlement.from_dict(d)`` for what ``to_dict`` wrote, built directly (the shared hit's path:
    cattrs costs ~3x as much); anything else, or any doubt, goes through ``from_dict``."""
    if type(d) is dict and d.keys() == _FIELDS:
        key, access, stale, reason, ftype, resets = (
            d["feature_key"], d["has_access"], d["stale"], d["reason"], d["feature_type"], d["resets_at"]
        )  # fmt: skip
        reason_ = None if reason is None else EntitlementReason._value2member_map_.get(reason)
        ftype_ = None if ftype is None else FeatureType._value2member_map_.get(ftype)
        if (
            type(key) is str
            and type(access) is bool
            and type(stale) is bool
            and (reason is None or reason_ is not None)
            and (ftype is None or ftype_ is not None)
            and (resets is None or type(resets) is str)
            and all(d[f] is None or type(d[f]) is float for f in _FLOATS)
        ):
            try:
                at = None if resets is None else datetime.fromisoformat(resets)
            except ValueError:
                at = None
            if resets is None or (at is not None and at.tzinfo is not None):
                return Entitlement(
                    feature_key=key,
                    has_access=access,
                    reason=reason_,  # type: ignore[arg-type]
                    limit=d["limit"],
                    usage=d["usage"],
                    remaining=d["remaining"],
                    resets_at=at,
                    feature_type=ftype_,  # type: ignore[arg-type]
                    stale=stale,
                )
    return Entitlement.from_dict(d)


def _message(origin: str, customer_id: str, feature_key: str | None, value: str | None) -> str:
    """A fleet message: ``feature_key`` None for every feature; ``value`` (an encoded entry) None to drop."""
    head = json.dumps({"o": origin, "c": customer_id, "f": feature_key}, separators=(",", ":"))
    return head if value is None else head[:-1] + ',"v":' + value + "}"


def read_message(raw: bytes | str) -> tuple[str, str, str | None, Entitlement | None]:
    """A fleet message as ``(origin, customer_id, feature_key or None, new answer or None: drop)``."""
    data = json.loads(raw)
    value = data.get("v")
    return (
        str(data["o"]),
        str(data["c"]),
        None if data["f"] is None else str(data["f"]),
        None if value is None else Entitlement.from_dict(value["e"]),
    )
