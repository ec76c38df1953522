"""Subscriptions (snake_case wire)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import _validate as check
from .._convert import structurer
from .._errors import ValidationError
from .._http import route
from .._models import Page, Subscription
from .._tracing import traced
from ._base import AsyncPaginator, RequestOptions, Resource, Unpack
from ._raw import RawList, RawMethod, RawProxy

_decode_subscription = structurer(Subscription)
_decode_page = structurer(Page[Subscription])


def _decode_list(data: Any) -> Page[Subscription]:
    # The contract says "a list": accept a bare JSON array as well as the paged envelope.
    if isinstance(data, list):
        return Page(data=tuple(_decode_subscription(item) for item in data), total=len(data), total_pages=1)
    return _decode_page(data)


class AsyncSubscriptions(Resource):
    """``billing.subscriptions``: create, change, cancel and reactivate subscriptions.

    None of the writes is retried once it may have reached the server.
    """

    __slots__ = ()

    @property
    def with_raw_response(self) -> AsyncSubscriptionsWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` (status, headers, rate limit) around
        its result.

        Example::

            raw = await billing.subscriptions.with_raw_response.get("sub_1")
            print(raw.status_code, raw.request_id, raw.rate_limit)
            result = raw.parse()
        """
        return AsyncSubscriptionsWithRawResponse(self)

    @traced("subscriptions.create")
    async def create(
        self,
        customer_id: str,
        price_id: str,
        *,
        product_id: str | None = None,
        payment_method_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> Subscription:
        """Subscribe a customer to a price.

        Example::

            sub = await billing.subscriptions.create(customer.id, "price_pro_monthly")
        """
        body = {
            "customer_id": check.text("customer_id", customer_id),
            "price_id": check.text("price_id", price_id),
            "product_id": check.optional_text("product_id", product_id),
            "payment_method_id": check.optional_text("payment_method_id", payment_method_id),
            "metadata": check.metadata("metadata", metadata),
        }
        return await self._requester.request(
            "POST", "/subscriptions", body=body, decode=_decode_subscription, options=options
        )

    @traced("subscriptions.get")
    async def get(self, subscription_id: str, **options: Unpack[RequestOptions]) -> Subscription:
        """Fetch a subscription. Raises ``NotFoundError`` when there is none."""
        url = route(
            "/subscriptions/{subscription_id}", subscription_id=check.text("subscription_id", subscription_id)
        )
        return await self._requester.request("GET", url, decode=_decode_subscription, options=options)

    def list(
        self, customer_id: str | None = None, **options: Unpack[RequestOptions]
    ) -> AsyncPaginator[Subscription]:
        """Every subscription, or a customer's, fetched lazily page by page.

        Example::

            async for sub in billing.subscriptions.list(customer_id=customer.id):
                print(sub.status)
        """
        params: dict[str, str | int] = {}
        if customer_id is not None:
            params["customer_id"] = check.text("customer_id", customer_id)

        @traced("subscriptions.list")
        async def fetch(page: int) -> Page[Subscription]:
            query = {**params, "page": page} if page > 1 else params
            return await self._requester.request(
                "GET", "/subscriptions", params=query, decode=_decode_list, options=options
            )

        return AsyncPaginator(fetch)

    @traced("subscriptions.update")
    async def update(
        self,
        subscription_id: str,
        *,
        price_id: str | None = None,
        cancel_at_period_end: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> Subscription:
        """Change plan (``price_id``), schedule or unschedule a cancel, or replace metadata."""
        body = {
            "price_id": check.optional_text("price_id", price_id),
            "cancel_at_period_end": None
            if cancel_at_period_end is None
            else check.boolean("cancel_at_period_end", cancel_at_period_end),
            "metadata": check.metadata("metadata", metadata),
        }
        if all(v is None for v in body.values()):
            raise ValidationError(
                "subscriptions.update needs at least one field to change.", code="invalid_argument"
            )
        url = route(
            "/subscriptions/{subscription_id}", subscription_id=check.text("subscription_id", subscription_id)
        )
        return await self._requester.request(
            "PATCH", url, body=body, decode=_decode_subscription, options=options
        )

    @traced("subscriptions.cancel")
    async def cancel(
        self, subscription_id: str, *, at_period_end: bool = True, **options: Unpack[RequestOptions]
    ) -> Subscription:
        """Cancel a subscription: at the end of the current period (default) or now."""
        url = route(
            "/subscriptions/{subscription_id}/cancel",
            subscription_id=check.text("subscription_id", subscription_id),
        )
        body = {"cancel_at_period_end": check.boolean("at_period_end", at_period_end)}
        return await self._requester.request(
            "POST", url, body=body, decode=_decode_subscription, options=options
        )

    @traced("subscriptions.reactivate")
    async def reactivate(self, subscription_id: str, **options: Unpack[RequestOptions]) -> Subscription:
        """Undo a scheduled cancel."""
        url = route(
            "/subscriptions/{subscription_id}/reactivate",
            subscription_id=check.text("subscription_id", subscription_id),
        )
        return await self._requester.request("POST", url, decode=_decode_subscription, options=options)


class AsyncSubscriptionsWithRawResponse(RawProxy):
    """``billing.subscriptions.with_raw_response``: the methods of :class:`AsyncSubscriptions`,
    each returning a :class:`RawResponse` (``list``: of its first page)."""

    __slots__ = ()
    create = RawMethod(AsyncSubscriptions.create)
    get = RawMethod(AsyncSubscriptions.get)
    update = RawMethod(AsyncSubscriptions.update)
    cancel = RawMethod(AsyncSubscriptions.cancel)
    reactivate = RawMethod(AsyncSubscriptions.reactivate)
    list = RawList(AsyncSubscriptions.list)
