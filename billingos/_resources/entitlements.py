"""Entitlement checks: may this customer use this feature right now (snake_case wire)."""

from __future__ import annotations

from .. import _validate as check
from .._cache import EntitlementCache
from .._convert import structurer
from .._errors import NotFoundError
from .._http import Requester
from .._models import Entitlement, EntitlementReason
from ._base import RequestOptions, Resource, Unpack

_decode_entitlement = structurer(Entitlement)


class AsyncEntitlements(Resource):
    """``billing.entitlements``: feature access checks."""

    __slots__ = ("_cache",)

    def __init__(self, requester: Requester, cache: EntitlementCache | None = None) -> None:
        super().__init__(requester)
        self._cache = cache

    async def check(
        self, customer_id: str, feature_key: str, **options: Unpack[RequestOptions]
    ) -> Entitlement:
        """Whether ``customer_id`` (your own user id) may use ``feature_key`` now.

        A customer BillingOS has never seen has no access: the server's 404 "Customer not found"
        becomes ``has_access=False, reason="customer_not_found"`` rather than an exception, so a
        handler can answer 403 instead of crashing. Every other failure raises.

        Example::

            ent = await billing.entitlements.check("user_42", "api_calls")
            if not ent.has_access:
                return JSONResponse({"reason": ent.reason}, status_code=403)
            print(ent.remaining, ent.resets_at)
        """
        params = {
            "customer_id": check.text("customer_id", customer_id),
            "feature_key": check.text("feature_key", feature_key),
        }
        try:
            return await self._requester.request(
                "GET", "/v1/usage/check", params=params, decode=_decode_entitlement, options=options
            )
        except NotFoundError as exc:
            if exc.message != "Customer not found":
                raise
            return Entitlement(
                feature_key=feature_key, has_access=False, reason=EntitlementReason.CUSTOMER_NOT_FOUND
            )
