"""Usage tracking and metrics (snake_case wire). ``customer_id`` is always your own user id."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .. import _validate as check
from .._convert import structurer
from .._errors import NotFoundError, QuotaExceededError
from .._http import Requester
from .._models import UsageMetrics, UsageRecord
from .._tracing import traced
from ._base import RequestOptions, Resource, Unpack
from ._raw import RawMethod, RawProxy

if TYPE_CHECKING:
    from .._cache import EntitlementCache

_decode_record = structurer(UsageRecord)
_decode_metrics = structurer(UsageMetrics)


class AsyncUsage(Resource):
    """``billing.usage``: record metered usage and read it back."""

    __slots__ = ("_cache",)

    def __init__(self, requester: Requester, cache: EntitlementCache | None = None) -> None:
        super().__init__(requester)
        self._cache = cache

    @property
    def with_raw_response(self) -> AsyncUsageWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` (status, headers, rate limit) around
        its result.

        Example::

            raw = await billing.usage.with_raw_response.track("user_42", "api_calls", 3)
            print(raw.status_code, raw.request_id, raw.rate_limit)
            result = raw.parse()
        """
        return AsyncUsageWithRawResponse(self)

    @traced("usage.track")
    async def track(
        self,
        customer_id: str,
        feature_key: str,
        quantity: float = 1,
        *,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> UsageRecord:
        """Record ``quantity`` units of ``feature_key`` used by ``customer_id``.

        Every call carries an ``idempotency_key`` (yours, or a UUID4 generated once per call), the
        same on every retry, so a retried or replayed track is counted exactly once: this is the one
        POST the SDK retries after a lost response. The key used is returned in
        ``record.idempotency_key``; keep it to replay the call safely within 24 hours.

        With an :class:`EntitlementCache` on the client, a successful track updates the cached
        entitlement from the returned usage snapshot (``has_access=False`` once nothing remains), and
        a ``QuotaExceededError`` or ``NotFoundError`` drops it, so cached checks cannot run far past
        the quota.

        Raises:
            QuotaExceededError: the track would take the customer past the plan's limit.
            NotFoundError: unknown customer, or no active subscription with this feature.

        Example::

            record = await billing.usage.track("user_42", "api_calls", 3)
            print(record.usage.remaining_units)
        """
        key = (
            str(uuid.uuid4())
            if idempotency_key is None
            else check.text("idempotency_key", idempotency_key, max_length=255)
        )
        body = {
            "customer_id": check.text("customer_id", customer_id),
            "feature_key": check.text("feature_key", feature_key),
            "quantity": check.positive_number("quantity", quantity),
            "idempotency_key": key,
            "metadata": check.metadata("metadata", metadata),
        }

        def decode(data: Any) -> UsageRecord:
            return attrs.evolve(_decode_record(data), idempotency_key=key)

        try:
            record = await self._requester.request(
                "POST", "/v1/usage/track", body=body, decode=decode, options=options, retry_safe=True
            )
        except (QuotaExceededError, NotFoundError):
            # The cached answer said "has access" and BillingOS disagrees: ask again on the next check.
            if self._cache is not None:
                await self._cache._after_track(customer_id, feature_key, None)
            raise
        if self._cache is not None:  # consume the cached quota (in the shared store too, if any)
            await self._cache._after_track(customer_id, feature_key, record)
        return record

    @traced("usage.metrics")
    async def metrics(
        self, customer_id: str, feature_key: str | None = None, **options: Unpack[RequestOptions]
    ) -> UsageMetrics:
        """Current-period usage of ``customer_id``, for every metered feature or just ``feature_key``.

        Example::

            for m in (await billing.usage.metrics("user_42")).metrics:
                print(f"{m.feature_key}: {m.consumed}/{m.limit} ({m.percentage_used}%)")
        """
        params = {"customer_id": check.text("customer_id", customer_id)}
        if feature_key is not None:
            params["feature_key"] = check.text("feature_key", feature_key)
        return await self._requester.request(
            "GET", "/v1/usage/metrics", params=params, decode=_decode_metrics, options=options
        )


class AsyncUsageWithRawResponse(RawProxy):
    """``billing.usage.with_raw_response``: the methods of :class:`AsyncUsage`,
    each returning a :class:`RawResponse`."""

    __slots__ = ()
    track = RawMethod(AsyncUsage.track)
    metrics = RawMethod(AsyncUsage.metrics)
