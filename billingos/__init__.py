"""The BillingOS Python SDK: session tokens, entitlements, metered usage, customers, subscriptions, and
customer-scoped pricing, checkout, portal and state (``billing.as_customer``).

Example::

    import billingos

    async with billingos.AsyncBillingOS() as billing:       # key from BILLINGOS_SECRET_KEY
        if (await billing.check_entitlement("user_42", "api_calls")).has_access:
            await billing.track_usage("user_42", "api_calls")

Everything public is exported here; every other module is private.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._budget import BudgetStore, BudgetWindow, MemoryBudgetStore, RateBudget
from ._client import AsyncBillingOS, AsyncBillingOSWithRawResponse
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
    Catalog,
    CatalogProduct,
    CheckoutCustomer,
    CheckoutProduct,
    CheckoutSession,
    CheckoutSubscription,
    CurrentSubscription,
    Customer,
    CustomerEntitlement,
    CustomerState,
    Entitlement,
    EntitlementReason,
    FeatureType,
    GrantedFeature,
    Page,
    PortalSession,
    Price,
    PriceInterval,
    ProductFeature,
    SessionToken,
    Subscription,
    SubscriptionStatus,
    UsageMetric,
    UsageMetrics,
    UsageRecord,
    UsageSnapshot,
)
from ._resources import (
    AsyncCustomers,
    AsyncCustomersWithRawResponse,
    AsyncEntitlements,
    AsyncEntitlementsWithRawResponse,
    AsyncSessionTokens,
    AsyncSessionTokensWithRawResponse,
    AsyncSubscriptions,
    AsyncSubscriptionsWithRawResponse,
    AsyncUsage,
    AsyncUsageWithRawResponse,
)
from ._resources._base import AsyncPaginator
from ._response import RateLimit, RawResponse
from ._retry import RetryPolicy
from ._version import __version__

if TYPE_CHECKING:
    from ._cache import CacheStats, EntitlementCache
    from ._customer_session import (
        AsyncCustomerCheckout,
        AsyncCustomerEntitlements,
        AsyncCustomerPortal,
        AsyncCustomerProducts,
        AsyncCustomerSession,
        AsyncCustomerUsage,
    )
    from ._recorder import (
        DeadLetter,
        RecorderFullError,
        RecorderOptions,
        RecorderStats,
        SyncUsageRecorder,
        UsageRecorder,
    )
    from ._redis_budget import RedisBudgetStore
    from ._redis_store import RedisStore
    from ._sync import (
        BillingOS,
        BillingOSWithRawResponse,
        CustomerCheckout,
        CustomerEntitlements,
        CustomerPortal,
        CustomerProducts,
        Customers,
        CustomerSession,
        CustomersWithRawResponse,
        CustomerUsage,
        Entitlements,
        EntitlementsWithRawResponse,
        Paginator,
        SessionTokens,
        SessionTokensWithRawResponse,
        Subscriptions,
        SubscriptionsWithRawResponse,
        Usage,
        UsageWithRawResponse,
    )

# Loaded on first use: an async service never needs the blocking facade (and its loop-thread
# machinery), only code that records usage needs the recorder (and sqlite3), and only a client
# configured with a cache needs the cache, and only code acting as a customer needs the handles.
_LAZY = {
    "AsyncCustomerCheckout": "._customer_session",
    "AsyncCustomerEntitlements": "._customer_session",
    "AsyncCustomerPortal": "._customer_session",
    "AsyncCustomerProducts": "._customer_session",
    "AsyncCustomerSession": "._customer_session",
    "AsyncCustomerUsage": "._customer_session",
    "CustomerCheckout": "._sync",
    "CustomerEntitlements": "._sync",
    "CustomerPortal": "._sync",
    "CustomerProducts": "._sync",
    "CustomerSession": "._sync",
    "CustomerUsage": "._sync",
    "CacheStats": "._cache",
    "EntitlementCache": "._cache",
    "RedisBudgetStore": "._redis_budget",  # the rate budget shared by a fleet on Redis
    "RedisStore": "._redis_store",  # and redis only when a RedisStore is given a client
    "BillingOS": "._sync",
    "BillingOSWithRawResponse": "._sync",
    "CustomersWithRawResponse": "._sync",
    "EntitlementsWithRawResponse": "._sync",
    "SessionTokensWithRawResponse": "._sync",
    "SubscriptionsWithRawResponse": "._sync",
    "UsageWithRawResponse": "._sync",
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
    "AsyncBillingOSWithRawResponse",
    "AsyncCustomerCheckout",
    "AsyncCustomerEntitlements",
    "AsyncCustomerPortal",
    "AsyncCustomerProducts",
    "AsyncCustomerSession",
    "AsyncCustomerUsage",
    "AsyncCustomers",
    "AsyncCustomersWithRawResponse",
    "AsyncEntitlements",
    "AsyncEntitlementsWithRawResponse",
    "AsyncPaginator",
    "AsyncSessionTokens",
    "AsyncSessionTokensWithRawResponse",
    "AsyncSubscriptions",
    "AsyncSubscriptionsWithRawResponse",
    "AsyncUsage",
    "AsyncUsageWithRawResponse",
    "AuthenticationError",
    "AuthorizationError",
    "BillingAddress",
    "BillingOS",
    "BillingOSError",
    "BillingOSWithRawResponse",
    "BudgetStore",
    "BudgetWindow",
    "CacheStats",
    "Catalog",
    "CatalogProduct",
    "CheckoutCustomer",
    "CheckoutProduct",
    "CheckoutSession",
    "CheckoutSubscription",
    "ConflictError",
    "CurrentSubscription",
    "Customer",
    "CustomerCheckout",
    "CustomerEntitlement",
    "CustomerEntitlements",
    "CustomerPortal",
    "CustomerProducts",
    "CustomerSession",
    "CustomerState",
    "CustomerUsage",
    "Customers",
    "CustomersWithRawResponse",
    "DeadLetter",
    "Entitlement",
    "EntitlementCache",
    "EntitlementReason",
    "Entitlements",
    "EntitlementsWithRawResponse",
    "FeatureType",
    "GrantedFeature",
    "MemoryBudgetStore",
    "NetworkError",
    "NotFoundError",
    "Page",
    "Paginator",
    "PortalSession",
    "Price",
    "PriceInterval",
    "ProductFeature",
    "QuotaExceededError",
    "RateBudget",
    "RateLimit",
    "RateLimitError",
    "RawResponse",
    "RecorderFullError",
    "RecorderOptions",
    "RecorderStats",
    "RedisBudgetStore",
    "RedisStore",
    "RequestOptions",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "RetryPolicy",
    "ServerError",
    "SessionToken",
    "SessionTokens",
    "SessionTokensWithRawResponse",
    "Subscription",
    "SubscriptionStatus",
    "Subscriptions",
    "SubscriptionsWithRawResponse",
    "SyncUsageRecorder",
    "Usage",
    "UsageMetric",
    "UsageMetrics",
    "UsageRecord",
    "UsageRecorder",
    "UsageSnapshot",
    "UsageWithRawResponse",
    "ValidationError",
    "__version__",
]
