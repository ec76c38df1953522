"""What every resource shares: its requester, and the paginator lists return."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar, Unpack

import attrs

from .. import _validate as check
from .._http import Requester, RequestOptions
from .._models import Page

__all__ = ["AsyncPaginator", "RequestOptions", "Resource", "Unpack"]

T = TypeVar("T")


class Resource:
    """Base of the async resources: holds the client's :class:`Requester`."""

    __slots__ = ("_requester",)

    def __init__(self, requester: Requester) -> None:
        self._requester = requester


class AsyncPaginator(Generic[T]):
    """Every item of a list, across pages, fetched lazily one page at a time.

    Example::

        async for customer in billing.customers.list(limit=100):
            print(customer.email)

        page = await billing.customers.list(limit=10).page(2)   # one page and its totals
        print(page.total, page.total_pages, len(page.data))
    """

    __slots__ = ("_fetch",)

    def __init__(self, fetch: Callable[[int], Awaitable[Page[T]]]) -> None:
        self._fetch = fetch

    async def page(self, number: int = 1) -> Page[T]:
        """Fetch one page (1-based) with its totals; ``page.page`` is always ``number``."""
        number = check.integer("page", number, low=1, high=2**31)
        page = await self._fetch(number)
        return page if page.page == number else attrs.evolve(page, page=number)

    async def pages(self) -> AsyncIterator[Page[T]]:
        """Every page in order, starting at page 1."""
        number: int | None = 1
        while number is not None:
            page = await self.page(number)
            yield page
            number = page.next_page

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.data:
                yield item
