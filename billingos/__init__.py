"""The BillingOS Python SDK: session tokens, entitlements, metered usage, customers, subscriptions.

Example::

    import billingos

    async with billingos.AsyncBillingOS() as billing:       # key from BILLINGOS_SECRET_KEY
        if (await billing.check_entitlement("user_42", "api_calls")).has_access:
            await billing.track_usage("user_42", "api_calls")

Everything public is exported here; every other module is private.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._client import AsyncBillingOS
from ._errors import (
    AuthenticationError,
    AuthorizationError,
    BillingOSError,
    ConflictError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    ValidationError,
)
from ._http import RequestOptions
from ._models import (
    BillingAddress,
    Customer,
    Entitlement,
    EntitlementReason,
    FeatureType,
    Page,
    SessionToken,
    Subscription,
    SubscriptionStatus,
    UsageMetric,
    UsageMetrics,
    UsageRecord,
    UsageSnapshot,
)
from ._resources import AsyncCustomers, AsyncEntitlements, AsyncSessionTokens, AsyncSubscriptions, AsyncUsage
from ._resources._base import AsyncPaginator
from ._retry import RetryPolicy
from ._version import __version__

if TYPE_CHECKING:
    from ._cache import CacheStats, EntitlementCache
    from ._recorder import (
        DeadLetter,
        RecorderFullError,
        RecorderOptions,
        RecorderStats,
        SyncUsageRecorder,
        UsageRecorder,
    )
    from ._sync import BillingOS, Customers, Entitlements, Paginator, SessionTokens, Subscriptions, Usage

# Loaded on first use: an async service never needs the blocking facade (and its loop-thread
# machinery), only code that records usage needs the recorder (and sqlite3), and only a client
# configured with a cache needs the cache.
_LAZY = {
    "CacheStats": "._cache",
    "EntitlementCache": "._cache",
    "BillingOS": "._sync",
    "Customers": "._sync",
    "Entitlements": "._sync",
    "Paginator": "._sync",
    "SessionTokens": "._sync",
    "Subscriptions": "._sync",
    "Usage": "._sync",
    "DeadLetter": "._recorder",
    "RecorderFullError": "._recorder",
    "RecorderOptions": "._recorder",
    "RecorderStats": "._recorder",
    "SyncUsageRecorder": "._recorder",
    "UsageRecorder": "._recorder",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AsyncBillingOS",
    "AsyncCustomers",
    "AsyncEntitlements",
    "AsyncPaginator",
    "AsyncSessionTokens",
    "AsyncSubscriptions",
    "AsyncUsage",
    "AuthenticationError",
    "AuthorizationError",
    "BillingAddress",
    "BillingOS",
    "BillingOSError",
    "CacheStats",
    "ConflictError",
    "Customer",
    "Customers",
    "DeadLetter",
    "Entitlement",
    "EntitlementCache",
    "EntitlementReason",
    "Entitlements",
    "FeatureType",
    "NetworkError",
    "NotFoundError",
    "Page",
    "Paginator",
    "QuotaExceededError",
    "RateLimitError",
    "RecorderFullError",
    "RecorderOptions",
    "RecorderStats",
    "RequestOptions",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "RetryPolicy",
    "ServerError",
    "SessionToken",
    "SessionTokens",
    "Subscription",
    "SubscriptionStatus",
    "Subscriptions",
    "SyncUsageRecorder",
    "Usage",
    "UsageMetric",
    "UsageMetrics",
    "UsageRecord",
    "UsageRecorder",
    "UsageSnapshot",
    "ValidationError",
    "__version__",
]
