"""The background usage recorder (issue 4, part 2). Skeleton: the public names the clients expose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from ._client import AsyncBillingOS
    from ._sync import BillingOS


class RecorderOptions(TypedDict, total=False):
    """Settings of a usage recorder (to be completed)."""


class UsageRecorder:
    """Records usage in the background, coalesced, exactly once (to be implemented)."""

    def __init__(self, client: AsyncBillingOS, **options: Any) -> None:
        self._client = client
        self._options = options


class SyncUsageRecorder:
    """The blocking counterpart of :class:`UsageRecorder` (to be implemented)."""

    def __init__(self, facade: BillingOS, **options: Any) -> None:
        self._facade = facade
        self._options = options
