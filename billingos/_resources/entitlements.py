"""Entitlement checks: may this customer use this feature right now (snake_case wire)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .. import _tracing
from .. import _validate as check
from .._convert import structurer
from .._errors import NotFoundError, ValidationError
from .._http import Requester, check_options
from .._models import Entitlement, EntitlementReason, UsageMetrics
from .._response import capturing
from .._tracing import traced
from ._base import RequestOptions, Resource, Unpack
from ._raw import RawMethod, RawProxy

if TYPE_CHECKING:
    from .._cache import EntitlementCache
    from .._models import CustomerEntitlement

    Grants = Callable[[str, RequestOptions], Awaitable[list[CustomerEntitlement]]]

_structure_entitlement = structurer(Entitlement)
_decode_metrics = structurer(UsageMetrics)


def _decode_entitlement(data: Any) -> Entitlement:
    ent = _structure_entitlement(data)
    # ``stale`` is the cache's own flag, never the server's: a wire field of that name must not set it.
    return attrs.evolve(ent, stale=False) if ent.stale else ent


class AsyncEntitlements(Resource):
    """``billing.entitlements``: feature access checks."""

    __slots__ = ("_cache", "_grants")

    def __init__(
        self, requester: Requester, cache: EntitlementCache | None = None, grants: Grants | None = None
    ) -> None:
        super().__init__(requester)
        if cache is not None:
            settings = requester.settings
            cache._bind(settings.api_url, settings.secret_key)
        self._cache = cache
        # ``GET /v1/features/entitlements`` as the customer (the client's as_customer path: a session
        # token minted once per customer and cached); ``None``: prefetch is not offered.
        self._grants = grants

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
            return await self._fetch(customer_id, feature_key, options)
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
        batcher = store._batcher
        if batcher is not None and self._grants is not None:  # concurrent misses of one customer: one call
            bulk = functools.partial(self._bulk_answers, customer_id, options=options)
            fetch = functools.partial(batcher.fetch, customer_id, feature_key, fetch, bulk)
        ent = await store.get_or_fetch(customer_id, feature_key, fetch)
        _tracing.note_cache(False, ent.stale or ent.reason == EntitlementReason.BILLINGOS_UNAVAILABLE)
        return ent

    @traced("entitlements.prefetch")
    async def prefetch(
        self,
        customer_id: str,
        features: Sequence[str] | None = None,
        **options: Unpack[RequestOptions],
    ) -> Mapping[str, Entitlement]:
        """Warm the cache with every feature of ``customer_id`` (or just ``features``) in one call.

        It asks ``GET /v1/features/entitlements`` once, as the customer (a session token minted once
        per customer and kept in the client's token cache, as ``as_customer`` does), and, if a wanted
        feature is an active usage quota, ``GET /v1/usage/metrics`` once. From those it builds only
        the answers they really carry, the answers ``entitlements.check`` would give:

        - a feature whose one grant's subscription is not ``active``: ``has_access=False``,
          ``reason="subscription_not_active"``;
        - an active ``boolean_flag``: ``has_access=True``;
        - an active ``usage_quota`` with a metric: ``has_access`` (``usage < limit``), ``limit``,
          ``usage``, ``remaining``, ``resets_at`` (the period's end).

        Not answered (absent from the result, and left to ``check``): a ``numeric_limit`` feature
        (its limit is not in the list), a quota without a current metric, a feature granted twice or
        not granted at all, every feature of a customer BillingOS does not know. With an
        :class:`EntitlementCache` on the client, each answer is stored, so the next ``check`` of that
        feature within the cache's ``ttl`` is a hit. Errors raise as for any call (the cache is then
        unchanged and checks work as before).

        Example::

            answers = await billing.entitlements.prefetch("user_42")   # 1-2 requests (+1 first mint)
            ent = await billing.check_entitlement("user_42", "sso")     # from the cache, no request
            print(sorted(answers))                                       # ['api_calls', 'sso']
        """
        # It acts as the customer: a session token's user id has at most 255 characters.
        customer_id = check.text("customer_id", customer_id, max_length=255)
        wanted = None
        if features is not None:
            listed = check.string_list("features", features)
            wanted = frozenset(listed) if listed is not None else None
        check_options(options)  # before the first of its requests
        answers = await self._bulk_answers(customer_id, wanted, options=options)
        store = self._cache
        if store is not None:
            for feature_key, ent in answers.items():
                store.put(customer_id, feature_key, ent)
        return answers

    async def _bulk_answers(
        self, customer_id: str, wanted: frozenset[str] | None, *, options: RequestOptions
    ) -> Mapping[str, Entitlement]:
        """The answers one ``/v1/features/entitlements`` (+ one ``/v1/usage/metrics``) call carries."""
        from .._bulk import answers_from, metrics_needed  # on use: only a prefetch needs them

        if self._grants is None:
            raise ValidationError("prefetch needs a client (billing.entitlements).", code="invalid_argument")
        try:
            grants = await self._grants(customer_id, options)
        except NotFoundError as exc:
            if exc.message != "Customer not found":
                raise
            return {}  # its checks say customer_not_found, as usual
        metrics = None
        if metrics_needed(grants, wanted):
            metrics = await self._requester.request(
                "GET",
                "/v1/usage/metrics",
                params={"customer_id": customer_id},
                decode=_decode_metrics,
                options=options,
            )
        return answers_from(grants, metrics, wanted)

    async def _fetch(self, customer_id: str, feature_key: str, options: RequestOptions) -> Entitlement:
        """One ``GET /v1/usage/check``, "Customer not found" read as an answer."""
        params = {"customer_id": customer_id, "feature_key": feature_key}
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


class AsyncEntitlementsWithRawResponse(RawProxy):
    """``billing.entitlements.with_raw_response``: the methods of :class:`AsyncEntitlements`,
    each returning a :class:`RawResponse`."""

    __slots__ = ()
    check = RawMethod(AsyncEntitlements.check)
