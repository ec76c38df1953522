"""One module per API resource. Each method validates its arguments, calls the request path once,
and returns a model: retries, headers and JSON are not its business."""

from .customers import AsyncCustomers, AsyncCustomersWithRawResponse
from .entitlements import AsyncEntitlements, AsyncEntitlementsWithRawResponse
from .session_tokens import AsyncSessionTokens, AsyncSessionTokensWithRawResponse
from .subscriptions import AsyncSubscriptions, AsyncSubscriptionsWithRawResponse
from .usage import AsyncUsage, AsyncUsageWithRawResponse

__all__ = [
    "AsyncCustomers",
    "AsyncCustomersWithRawResponse",
    "AsyncEntitlements",
    "AsyncEntitlementsWithRawResponse",
    "AsyncSessionTokens",
    "AsyncSessionTokensWithRawResponse",
    "AsyncSubscriptions",
    "AsyncSubscriptionsWithRawResponse",
    "AsyncUsage",
    "AsyncUsageWithRawResponse",
]
