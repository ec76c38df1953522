"""Entitlement checks: may this customer use this feature right now (snake_case wire)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import attrs

from .. import _tracing
from .. import _validate as check
from .._convert import structurer
from .._errors import NotFoundError, ValidationError
from .._http import Requester
from .._models import Entitlement, EntitlementReason
from .._response import capturing
from .._tracing import traced
from ._base import RequestOptions, Resource, Unpack
from ._raw import RawMethod, RawProxy

if TYPE_CHECKING:
    from .._cache import EntitlementCache

_structure_entitlement = structurer(Entitlement)


def _decode_entitlement(data: Any) -> Entitlement:
    ent = _structure_entitlement(data)
    # ``stale`` is the cache's own flag, never the server's: a wire field of that name must not set it.
    return attrs.evolve(ent, stale=False) if ent.stale else ent


class AsyncEntitlements(Resource):
    """``billing.entitlements``: feature access checks."""

    __slots__ = ("_cache",)

    def __init__(self, requester: Requester, cache: EntitlementCache | None = None) -> None:
        super().__init__(requester)
        if cache is not None:
            settings = requester.settings
            cache._bind(settings.api_url, settings.secret_key)
        self._cache = cache

    @property
    def with_raw_response(self) -> AsyncEntitlementsWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` (status, headers, rate limit) around
        its result.

        Example::

            raw = await billing.entitlements.with_raw_response.check("user_42", "api_calls")
            print(raw.status_code, raw.request_id, raw.rate_limit)
            result = raw.parse()
        """
        return AsyncEntitlementsWithRawResponse(self)

    @traced("entitlements.check")
    async def check(
        self,
        customer_id: str,
        feature_key: str,
        *,
        cache: bool = True,
        **options: Unpack[RequestOptions],
    ) -> Entitlement:
        """Whether ``customer_id`` (your own user id) may use ``feature_key`` now.

        A customer BillingOS has never seen has no access: the server's 404 "Customer not found"
        becomes ``has_access=False, reason="customer_not_found"`` rather than an exception, so a
        handler can answer 403 instead of crashing. Every other failure raises.

        With an :class:`EntitlementCache` on the client, a fresh cached answer is returned from
        memory; concurrent checks of the same customer and feature share one request (sent with the
        first caller's ``options``); while BillingOS is unavailable a recent answer is returned with
        ``stale=True``, or the cache's ``on_unavailable`` policy applies. ``cache=False`` skips all of
        that for this call: it asks BillingOS, raises its errors as they are, and stores the answer
        so later cached checks see it. ``with_raw_response.check`` always behaves like ``cache=False``.

        Example::

            ent = await billing.entitlements.check("user_42", "api_calls")
            if not ent.has_access:
                return JSONResponse({"reason": ent.reason}, status_code=403)
            print(ent.remaining, ent.resets_at)

            ent = await billing.entitlements.check("user_42", "api_calls", cache=False)  # ask now
        """
        customer_id = check.text("customer_id", customer_id)
        feature_key = check.text("feature_key", feature_key)
        if cache is not True and cache is not False:
            raise ValidationError(f"cache must be True or False, got {cache!r}.", code="invalid_argument")
        store = self._cache
        if store is None or self._requester.transport.closed:  # closed: let the request path say so
            # _fetch's request, awaited here: one coroutine fewer on every resume of an uncached check
            try:
                return await self._requester.request(
                    "GET",
                    _CHECK,
                    params=_params(customer_id, feature_key),
                    decode=_decode_entitlement,
                    options=options,
                )
            except NotFoundError as exc:
                return _no_customer(exc, feature_key)
        if not cache or capturing():  # a raw call reports a response: it always asks BillingOS
            ent = await self._fetch(customer_id, feature_key, options)
            store.put(customer_id, feature_key, ent)
            _tracing.note_cache(False)
            return ent
        hit = store.get_fresh(customer_id, feature_key)
        if hit is not None:
            _tracing.note_cache(True)
            return hit
        fetch = functools.partial(self._fetch, customer_id, feature_key, options)
        ent = await store.get_or_fetch(customer_id, feature_key, fetch)
        _tracing.note_cache(False, ent.stale or ent.reason == EntitlementReason.BILLINGOS_UNAVAILABLE)
        return ent

    async def _fetch(self, customer_id: str, feature_key: str, options: RequestOptions) -> Entitlement:
        """One ``GET /v1/usage/check``, "Customer not found" read as an answer."""
        try:
            return await self._requester.request(
                "GET",
                _CHECK,
                params=_params(customer_id, feature_key),
                decode=_decode_entitlement,
                options=options,
            )
        except NotFoundError as exc:
            return _no_customer(exc, feature_key)


_CHECK = "/v1/usage/check"


def _params(customer_id: str, feature_key: str) -> dict[str, str]:
    return {"customer_id": customer_id, "feature_key": feature_key}


def _no_customer(exc: NotFoundError, feature_key: str) -> Entitlement:
    """The answer for a customer BillingOS has never seen; any other 404 is raised again."""
    if exc.message != "Customer not found":
        raise exc
    return Entitlement(feature_key=feature_key, has_access=False, reason=EntitlementReason.CUSTOMER_NOT_FOUND)


class AsyncEntitlementsWithRawResponse(RawProxy):
    """``billing.entitlements.with_raw_response``: the methods of :class:`AsyncEntitlements`,
    each returning a :class:`RawResponse`."""

    __slots__ = ()
    check = RawMethod(AsyncEntitlements.check)
