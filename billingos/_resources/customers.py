"""Customers (snake_case wire; routes as the Node SDK documents them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .. import _validate as check
from .._convert import structurer
from .._errors import ValidationError
from .._http import route
from .._models import BillingAddress, Customer, Page
from .._tracing import traced
from ._base import AsyncPaginator, RequestOptions, Resource, Unpack
from ._raw import RawList, RawMethod, RawProxy

AddressInput = BillingAddress | Mapping[str, Any]
SortBy = Literal["created_at", "email", "name"]
SortOrder = Literal["asc", "desc"]

_decode_customer = structurer(Customer)
_decode_page = structurer(Page[Customer])
_ADDRESS_FIELDS = tuple(a.name for a in attrs.fields(BillingAddress))


def _address(value: AddressInput | None) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, BillingAddress):
        value = attrs.asdict(value)
    if not isinstance(value, Mapping):
        raise ValidationError(
            "billing_address must be a BillingAddress or a mapping.", code="invalid_argument"
        )
    unknown = set(value) - set(_ADDRESS_FIELDS)
    if unknown:
        raise ValidationError(
            f"billing_address has unknown fields {sorted(unknown, key=repr)}; "
            f"allowed: {', '.join(_ADDRESS_FIELDS)}.",
            code="invalid_argument",
        )
    result = {k: check.text(f"billing_address.{k}", v) for k, v in value.items() if v is not None}
    country = result.get("country")
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise ValidationError(
            f"billing_address.country must be a two-letter ISO code, got {country!r}.",
            code="invalid_argument",
        )
    return result


class AsyncCustomers(Resource):
    """``billing.customers``: create, read, update, delete and list customers."""

    __slots__ = ()

    @property
    def with_raw_response(self) -> AsyncCustomersWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` (status, headers, rate limit) around
        its result.

        Example::

            raw = await billing.customers.with_raw_response.get("cus_1")
            print(raw.status_code, raw.request_id, raw.rate_limit)
            result = raw.parse()
        """
        return AsyncCustomersWithRawResponse(self)

    @traced("customers.create")
    async def create(
        self,
        email: str,
        *,
        external_id: str | None = None,
        name: str | None = None,
        billing_address: AddressInput | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> Customer:
        """Create a customer. ``external_id`` is your own user id (letters, digits, ``_``, ``-``).

        Not retried once the request may have reached the server (a retry would answer 409).

        Raises:
            ConflictError: the email or external id is already taken.

        Example::

            customer = await billing.customers.create("ada@example.com", external_id="user_42", name="Ada")
        """
        body = {
            "email": check.email("email", email),
            "external_id": None if external_id is None else check.external_id("external_id", external_id),
            "name": check.optional_text("name", name, max_length=256),
            "billing_address": _address(billing_address),
            "metadata": check.metadata("metadata", metadata),
        }
        return await self._requester.request(
            "POST", "/customers", body=body, decode=_decode_customer, options=options
        )

    @traced("customers.get")
    async def get(self, customer_id: str, **options: Unpack[RequestOptions]) -> Customer:
        """Fetch a customer by BillingOS id. Raises ``NotFoundError`` when there is none."""
        url = route("/customers/{customer_id}", customer_id=check.text("customer_id", customer_id))
        return await self._requester.request("GET", url, decode=_decode_customer, options=options)

    @traced("customers.get_by_external_id")
    async def get_by_external_id(self, external_id: str, **options: Unpack[RequestOptions]) -> Customer:
        """Fetch a customer by your own user id. Raises ``NotFoundError`` when there is none."""
        url = route("/customers/external/{external_id}", external_id=check.text("external_id", external_id))
        return await self._requester.request("GET", url, decode=_decode_customer, options=options)

    @traced("customers.update")
    async def update(
        self,
        customer_id: str,
        *,
        email: str | None = None,
        external_id: str | None = None,
        name: str | None = None,
        billing_address: AddressInput | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> Customer:
        """Change some fields of a customer; those left ``None`` are not sent (so not changed).

        ``external_id`` can be set once, on a customer that has none.
        """
        body = {
            "email": None if email is None else check.email("email", email),
            "external_id": None if external_id is None else check.external_id("external_id", external_id),
            "name": check.optional_text("name", name, max_length=256),
            "billing_address": _address(billing_address),
            "metadata": check.metadata("metadata", metadata),
        }
        if all(v is None for v in body.values()):
            raise ValidationError(
                "customers.update needs at least one field to change.", code="invalid_argument"
            )
        url = route("/customers/{customer_id}", customer_id=check.text("customer_id", customer_id))
        return await self._requester.request(
            "PATCH", url, body=body, decode=_decode_customer, options=options
        )

    @traced("customers.delete")
    async def delete(self, customer_id: str, **options: Unpack[RequestOptions]) -> None:
        """Delete a customer (a soft delete that also cancels its subscriptions).

        A 404 answering a *retry* counts as success: the lost first attempt deleted it.
        """
        url = route("/customers/{customer_id}", customer_id=check.text("customer_id", customer_id))
        await self._requester.request(
            "DELETE", url, decode=_none, options=options, ok_on_retry=frozenset({404})
        )

    def list(
        self,
        *,
        limit: int = 50,
        email: str | None = None,
        external_id: str | None = None,
        query: str | None = None,
        sort_by: SortBy | None = None,
        sort_order: SortOrder | None = None,
        **options: Unpack[RequestOptions],
    ) -> AsyncPaginator[Customer]:
        """Every customer matching the filters, fetched lazily ``limit`` (1-100) per page.

        Example::

            async for customer in billing.customers.list(limit=100, sort_by="email"):
                ...
            first = await billing.customers.list(limit=10).page(1)
            print(first.total, first.total_pages)
        """
        params: dict[str, str | int] = {"limit": check.integer("limit", limit, low=1, high=100)}
        for name, value in (("email", email), ("external_id", external_id), ("query", query)):
            if value is not None:
                params[name] = check.text(name, value)
        if sort_by is not None:
            params["sort_by"] = check.choice("sort_by", sort_by, ("created_at", "email", "name"))
        if sort_order is not None:
            params["sort_order"] = check.choice("sort_order", sort_order, ("asc", "desc"))

        @traced("customers.list")
        async def fetch(page: int) -> Page[Customer]:
            check.integer("page", page, low=1, high=2**31)
            return await self._requester.request(
                "GET", "/customers", params={**params, "page": page}, decode=_decode_page, options=options
            )

        return AsyncPaginator(fetch)


class AsyncCustomersWithRawResponse(RawProxy):
    """``billing.customers.with_raw_response``: the methods of :class:`AsyncCustomers`,
    each returning a :class:`RawResponse` (``list``: of its first page)."""

    __slots__ = ()
    create = RawMethod(AsyncCustomers.create)
    get = RawMethod(AsyncCustomers.get)
    get_by_external_id = RawMethod(AsyncCustomers.get_by_external_id)
    update = RawMethod(AsyncCustomers.update)
    delete = RawMethod(AsyncCustomers.delete)
    list = RawList(AsyncCustomers.list)


def _none(_: Any) -> None:
    return None
