"""One module per API resource. Each method validates its arguments, calls the request path once,
and returns a model: retries, headers and JSON are not its business."""

from .customers import AsyncCustomers
from .entitlements import AsyncEntitlements
from .session_tokens import AsyncSessionTokens
from .subscriptions import AsyncSubscriptions
from .usage import AsyncUsage

__all__ = ["AsyncCustomers", "AsyncEntitlements", "AsyncSessionTokens", "AsyncSubscriptions", "AsyncUsage"]
