"""The rate budget on Redis: one :class:`~billingos._budget.BudgetStore` shared by a fleet.

``update(key, change)`` is an optimistic transaction: ``WATCH`` the route's key, read its window,
compute ``change(old)`` in Python, then ``MULTI``/``SET``/``EXEC``; when another process wrote the key
in between, ``EXEC`` fails and the whole read-compute-write runs again. So no two updates of one route
interleave, across every process sharing the Redis (the contract of ``BudgetStore``). Within one process
the updates of a route queue on a local lock first, so only the fleet's processes race for a key (a
conflict costs one more round trip), never each of a process's concurrent calls. A window is kept until
``FORGET_AFTER`` seconds after its reset (a Redis expiry), as the contract allows.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._budget import FORGET_AFTER, BudgetWindow
from ._errors import ValidationError

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisBudgetStore"]

T = TypeVar("T")


class RedisBudgetStore:
    """A rate budget shared by every process that uses the same Redis (one egress address, one budget).

    Each route's window is one Redis key (``prefix`` + the route), updated atomically with
    ``WATCH``/``MULTI``. Commands are bounded by ``timeout``; when Redis fails or is slow, ``update``
    raises and the budget lets that call through unbudgeted (it never fails a call by itself).
    Needs ``pip install 'billingos[redis]'``.

    Args:
        client: a ``redis.asyncio.Redis`` (redis-py >= 5), never closed by the store; one event loop.
        prefix: the start of every key.
        timeout: seconds one update may spend on Redis (its retries included, the local queue not).
        max_attempts: optimistic attempts before giving up under contention (then ``update`` raises).
        retry_interval: seconds after a failure during which ``update`` raises at once, without asking
            Redis (so a queue of calls does not wait out one timeout each).

    Example::

        import redis.asyncio
        from billingos import RedisBudgetStore

        budget_store = RedisBudgetStore(redis.asyncio.Redis(host="redis.internal"))
        window = await budget_store.update("GET /v1/usage/check", lambda old: (old, old))
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "billingos:budget:",
        timeout: float = 0.25,
        max_attempts: int = 100,
        retry_interval: float = 1.0,
    ) -> None:
        if not callable(getattr(client, "pipeline", None)):
            raise ValidationError(
                f"client must be a redis.asyncio.Redis, not {type(client).__name__}.", code="invalid_argument"
            )
        for name, value in (("timeout", timeout), ("retry_interval", retry_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValidationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}.", code="invalid_argument"
                )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValidationError(
                f"max_attempts must be an int >= 1, got {max_attempts!r}.", code="invalid_argument"
            )
        self._client = client
        self._prefix = str(prefix)
        self._timeout = float(timeout)
        self._max_attempts = max_attempts
        self._retry_interval = float(retry_interval)
        self._down_until = -math.inf
        self._failure: BaseException | None = None
        self._locks: dict[str, anyio.Lock] = {}  # per route: this process's updates take turns

    async def update(
        self, key: str, change: Callable[[BudgetWindow | None], tuple[BudgetWindow | None, T]]
    ) -> T:
        """Atomically replace ``key``'s window ``old`` by ``change(old)[0]``; return ``change(old)[1]``.

        Raises the Redis error (or ``TimeoutError``) when Redis cannot answer in ``timeout`` seconds.
        """
        import redis.exceptions  # a client was given, so redis is installed

        if time.monotonic() < self._down_until:
            raise RuntimeError("Redis failed moments ago; rate budget not consulted") from self._failure
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        rkey = self._prefix + key
        async with lock:
            try:
                with anyio.fail_after(self._timeout):
                    for _ in range(self._max_attempts):
                        async with self._client.pipeline(transaction=True) as pipe:
                            try:
                                await pipe.watch(rkey)
                                raw = await pipe.get(rkey)
                                new, result = change(None if raw is None else _decode(raw))
                                pipe.multi()  # type: ignore[no-untyped-call]
                                if new is None:
                                    pipe.delete(rkey)
                                else:
                                    pipe.set(rkey, _encode(new), px=_keep_ms(new))
                                await pipe.execute()
                            except redis.exceptions.WatchError:
                                continue  # another process updated the route meanwhile: read it again
                            return result
            except (OSError, redis.exceptions.RedisError) as exc:  # TimeoutError is an OSError
                self._failure = exc
                self._down_until = time.monotonic() + self._retry_interval
                raise
        raise RuntimeError(f"rate budget update of {key!r} lost {self._max_attempts} races in a row")

    def __repr__(self) -> str:
        return f"RedisBudgetStore(prefix={self._prefix!r})"


def _keep_ms(window: BudgetWindow) -> int:
    """Milliseconds to keep ``window``: until ``FORGET_AFTER`` s past its reset (or past now, unknown)."""
    seconds = FORGET_AFTER if window.reset_at is None else window.reset_at - time.time() + FORGET_AFTER
    return max(1000, math.ceil(seconds * 1000))


def _encode(window: BudgetWindow) -> str:
    return json.dumps(window._asdict(), separators=(",", ":"))


def _decode(raw: bytes | str) -> BudgetWindow:
    fields: dict[str, Any] = json.loads(raw)
    return BudgetWindow(**fields)  # exactly the fields written: ints stay ints, floats floats
