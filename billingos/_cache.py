"""The entitlement cache (issue 4, part 1). Skeleton: the public names and the hooks the client calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import attrs

from ._models import Entitlement, UsageRecord

OnUnavailable = Literal["raise", "allow", "deny"]


@attrs.frozen
class CacheStats:
    """Counters of an :class:`EntitlementCache`."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    stale: int = 0


class EntitlementCache:
    """An opt-in, per-client cache of entitlement checks (to be implemented)."""

    def __init__(
        self,
        ttl: float = 30.0,
        stale_if_error: float = 300.0,
        max_entries: int = 100_000,
        on_unavailable: OnUnavailable = "raise",
    ) -> None:
        self.ttl = ttl
        self.stale_if_error = stale_if_error
        self.max_entries = max_entries
        self.on_unavailable = on_unavailable

    def get_fresh(self, customer_id: str, feature_key: str) -> Entitlement | None:
        """A fresh cached answer, or None (sync, thread-safe, no I/O)."""
        return None

    async def get_or_fetch(
        self, customer_id: str, feature_key: str, fetch: Callable[[], Awaitable[Entitlement]]
    ) -> Entitlement:
        """The cached answer, or one upstream fetch shared by every concurrent caller."""
        return await fetch()

    def on_tracked(self, customer_id: str, feature_key: str, record: UsageRecord) -> None:
        """Update the cached entry from a successful track's usage snapshot."""

    def invalidate(self, customer_id: str, feature_key: str | None = None) -> None:
        """Forget one customer's entries (all features, or one)."""

    def clear(self) -> None:
        """Forget everything."""

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, coalesced and stale answers so far."""
        return CacheStats()
