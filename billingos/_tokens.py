"""The session-token cache of ``billing.as_customer``: one token per customer, minted once, shared.

How a customer-scoped call gets its token::

    cached token for (user, organization, operations), not near its expiry?  ── yes ─▶ it   (no request)
        │ no
    a mint of that key in flight (this event loop)?                          ── yes ─▶ wait, share it
        │ no
    mint one (POST /v1/session-tokens with the secret key) ─▶ stored, given to every waiter

"Near its expiry" is when less than ``max(60 s, 10 % of its lifetime)`` remains, read from the token's
own ``exp`` and ``iat`` (never more than half the lifetime, so a 60-second token is still used for 30).
The mint route is rate limited per IP and shared by every user of a merchant's server, which is why N
concurrent first calls for one user mint exactly once. A mint that fails gives every waiter its error
(no waiter mints again, which would multiply the requests a rate limit refused); a leader that is
cancelled lets one waiter lead a new mint.

The entries sit behind one ``threading.Lock`` taken for a few dictionary operations and never across an
``await``; at most ``max_entries`` tokens are kept, the least recently used dropped first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._loops import running_asyncio_loop
from ._models import SessionToken

if TYPE_CHECKING:
    import anyio

__all__ = ["DEFAULT_MAX_ENTRIES", "TokenCache", "TokenKey", "needs_refresh"]

DEFAULT_MAX_ENTRIES = 1024

TokenKey = tuple[str, str | None, frozenset[str] | None]
"""(external_user_id, external_organization_id, allowed_operations or None)."""

MIN_MARGIN = 60.0
"""Seconds before ``exp`` at which a cached token is minted anew, at least."""


def needs_refresh(token: SessionToken, now: float) -> bool:
    """Whether less than ``max(60 s, 10 % of the lifetime)`` (at most half of it) remains of ``token``."""
    expires = token.expires_at.timestamp()
    lifetime = expires - token.issued_at.timestamp() if token.issued_at is not None else 0.0
    margin = max(MIN_MARGIN, 0.1 * lifetime)
    if lifetime > 0:
        margin = min(margin, lifetime / 2)
    return expires - now < margin


class _Flight:
    __slots__ = ("done", "error", "token", "traceback")

    def __init__(self, done: anyio.Event) -> None:
        self.done = done
        self.token: SessionToken | None = None
        self.error: BaseException | None = None
        self.traceback: Any = None


class TokenCache:
    """Session tokens by customer key, bounded, with one mint in flight per key and event loop."""

    __slots__ = ("_clock", "_entries", "_flights", "_lock", "_max_entries", "mints")

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, clock: Callable[[], float] = time.time
    ) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[TokenKey, SessionToken] = OrderedDict()
        self._flights: dict[tuple[TokenKey, object], _Flight] = {}
        self.mints = 0
        """Tokens minted through this cache (a figure for tests and debugging)."""

    def fresh(self, key: TokenKey) -> SessionToken | None:
        """The cached token of ``key`` when it is not near its expiry, else ``None``."""
        now = self._clock()
        with self._lock:
            token = self._entries.get(key)
            if token is None or needs_refresh(token, now):
                return None
            self._entries.move_to_end(key)
            return token

    async def get(self, key: TokenKey, mint: Callable[[], Awaitable[SessionToken]]) -> SessionToken:
        """The fresh cached token of ``key``, or the one a single shared ``mint()`` returns."""
        loop = running_asyncio_loop()
        fkey = (key, loop if loop is not None else threading.get_ident())
        while True:
            token = self.fresh(key)
            if token is not None:
                return token
            import anyio  # a loop is running: anyio is already imported by the request path

            event = anyio.Event()
            with self._lock:
                flight = self._flights.get(fkey)
                leader = flight is None
                if flight is None:
                    flight = self._flights[fkey] = _Flight(event)
            if leader:
                return await self._lead(key, fkey, flight, mint)
            await flight.done.wait()
            if flight.token is not None:
                return flight.token
            if flight.error is not None:
                # The same exception reaches every waiter: reset its traceback so it does not grow.
                raise flight.error.with_traceback(flight.traceback)
            # The leader was cancelled before its mint ended: lead a new one (or join a newer one).

    async def _lead(
        self,
        key: TokenKey,
        fkey: tuple[TokenKey, object],
        flight: _Flight,
        mint: Callable[[], Awaitable[SessionToken]],
    ) -> SessionToken:
        try:
            token = await mint()
        except Exception as exc:
            flight.error, flight.traceback = exc, exc.__traceback__
            raise
        else:
            with self._lock:
                self.mints += 1
                self._entries[key] = token
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            flight.token = token
            return token
        finally:  # also on cancellation: waiters must not wait on a mint that has ended
            with self._lock:
                if self._flights.get(fkey) is flight:
                    del self._flights[fkey]
            flight.done.set()

    def drop(self, key: TokenKey, token: SessionToken) -> None:
        """Forget ``token`` (refused as expired or revoked, or revoked by a handle), if it is still cached."""
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached.token_id == token.token_id:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"<TokenCache entries={len(self._entries)} max_entries={self._max_entries} mints={self.mints}>"
