"""Lists: lazy page-by-page iteration, one page with its totals, every page; async and sync."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import aclosing
from typing import Any

import httpx2
import pytest
import respx

from billingos import AsyncBillingOS, BillingOS, Customer, NotFoundError, Page, Subscription

from .._factories import customer_json, error_body, page_json, subscription_json


def paged_customers(pages: int, per_page: int = 2, *, total_pages: int | None = None) -> Callable[..., Any]:
    """A side effect answering ``GET /customers?page=n`` with ``per_page`` customers ``c<n>_<i>``.

    It answers any page number (even past the last), so only ``total_pages`` can stop a paginator.
    """
    declared = pages if total_pages is None else total_pages

    def answer(request: httpx2.Request) -> httpx2.Response:
        number = int(request.url.params["page"])
        limit = int(request.url.params["limit"])
        items = [customer_json(id=f"c{number}_{i}") for i in range(per_page)] if number <= pages else []
        return httpx2.Response(
            200,
            json=page_json(items, page=number, limit=limit, total=pages * per_page, total_pages=declared),
        )

    return answer


def pages_requested(route: respx.Route) -> list[str | None]:
    return [call.request.url.params.get("page") for call in route.calls]


async def test_async_for_fetches_pages_lazily(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(3))
    async with aclosing(billing.customers.list(limit=2).__aiter__()) as items:
        first = await items.__anext__()
        assert first.id == "c1_0"
        assert route.call_count == 1
        await items.__anext__()
        assert route.call_count == 1
        third = await items.__anext__()
        assert third.id == "c2_0"
        assert route.call_count == 2


async def test_creating_the_iterator_sends_nothing(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(3))
    billing.customers.list(limit=2)
    assert route.call_count == 0


async def test_async_for_yields_every_item_and_stops_at_total_pages(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(3))
    ids = [c.id async for c in billing.customers.list(limit=2)]
    assert ids == ["c1_0", "c1_1", "c2_0", "c2_1", "c3_0", "c3_1"]
    assert pages_requested(route) == ["1", "2", "3"]


async def test_async_for_stops_at_total_pages_even_if_more_pages_answer(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(5, total_pages=2))
    ids = [c.id async for c in billing.customers.list(limit=2)]
    assert len(ids) == 4
    assert route.call_count == 2


async def test_empty_first_page_ends_iteration(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").respond(200, json=page_json([], total=0, total_pages=0))
    assert [c async for c in billing.customers.list()] == []
    assert route.call_count == 1


async def test_empty_page_before_total_pages_ends_iteration(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    # The list shrank while we were reading it: page 2 is already empty though total_pages says 3.
    route = router.get("/customers").mock(side_effect=paged_customers(1, total_pages=3))
    ids = [c.id async for c in billing.customers.list(limit=2)]
    assert ids == ["c1_0", "c1_1"]
    assert pages_requested(route) == ["1", "2"]


async def test_filters_are_sent_with_every_page(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(2))
    ids = [c.id async for c in billing.customers.list(limit=2, sort_by="name", sort_order="asc")]
    assert len(ids) == 4
    assert [dict(call.request.url.params) for call in route.calls] == [
        {"limit": "2", "sort_by": "name", "sort_order": "asc", "page": "1"},
        {"limit": "2", "sort_by": "name", "sort_order": "asc", "page": "2"},
    ]


async def test_a_paginator_can_be_iterated_again_from_page_one(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(2))
    pager = billing.customers.list(limit=2)
    first = [c.id async for c in pager]
    second = [c.id async for c in pager]
    assert first == second
    assert pages_requested(route) == ["1", "2", "1", "2"]


async def test_error_on_a_later_page_propagates_after_earlier_items(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.params["page"] == "1":
            return httpx2.Response(200, json=page_json([customer_json(id="c1")], total_pages=2))
        return httpx2.Response(404, json=error_body(404, "RES_NOT_FOUND", "Page not found"))

    router.get("/customers").mock(side_effect=answer)
    seen: list[str] = []

    async def consume() -> None:
        async for customer in billing.customers.list():
            seen.append(customer.id)

    with pytest.raises(NotFoundError):
        await consume()
    assert seen == ["c1"]


async def test_page_returns_one_page_with_totals(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(3))
    page = await billing.customers.list(limit=2).page(2)
    assert isinstance(page, Page)
    assert [c.id for c in page.data] == ["c2_0", "c2_1"]
    assert all(isinstance(c, Customer) for c in page.data)
    assert (page.page, page.limit, page.total, page.total_pages) == (2, 2, 6, 3)
    assert page.next_page == 3
    assert pages_requested(route) == ["2"]


async def test_page_defaults_to_the_first(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(3))
    page = await billing.customers.list(limit=2).page()
    assert page.page == 1
    assert pages_requested(route) == ["1"]


async def test_pages_yields_each_page_in_order(billing: AsyncBillingOS, router: respx.MockRouter) -> None:
    router.get("/customers").mock(side_effect=paged_customers(3))
    pages = [p async for p in billing.customers.list(limit=2).pages()]
    assert [p.page for p in pages] == [1, 2, 3]
    assert [len(p.data) for p in pages] == [2, 2, 2]
    assert pages[-1].next_page is None


# -- subscriptions: a bare array or the paged envelope -----------------------------------------


async def test_subscriptions_list_accepts_bare_json_array(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/subscriptions").respond(
        200, json=[subscription_json(id="sub_1"), subscription_json(id="sub_2", status="trialing")]
    )
    subs = [s async for s in billing.subscriptions.list()]
    assert [s.id for s in subs] == ["sub_1", "sub_2"]
    assert all(isinstance(s, Subscription) for s in subs)
    assert route.call_count == 1


async def test_subscriptions_bare_array_page_reports_its_length_as_total(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    router.get("/subscriptions").respond(
        200, json=[subscription_json(id="sub_1"), subscription_json(id="sub_2")]
    )
    page = await billing.subscriptions.list().page()
    assert (page.total, page.total_pages, page.next_page) == (2, 1, None)


async def test_subscriptions_list_accepts_empty_bare_array(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/subscriptions").respond(200, json=[])
    assert [s async for s in billing.subscriptions.list()] == []
    assert route.call_count == 1


async def test_subscriptions_list_follows_paged_envelope(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        number = int(request.url.params.get("page", "1"))
        return httpx2.Response(
            200, json=page_json([subscription_json(id=f"sub_{number}")], page=number, limit=1, total_pages=2)
        )

    route = router.get("/subscriptions").mock(side_effect=answer)
    ids = [s.id async for s in billing.subscriptions.list(customer_id="cus_1")]
    assert ids == ["sub_1", "sub_2"]
    assert [dict(c.request.url.params) for c in route.calls] == [
        {"customer_id": "cus_1"},
        {"customer_id": "cus_1", "page": "2"},
    ]


async def test_subscriptions_envelope_without_page_number_does_not_loop(
    billing: AsyncBillingOS, router: respx.MockRouter
) -> None:
    # The contract pins no envelope for subscriptions; one that does not echo "page" must still end.
    def answer(request: httpx2.Request) -> httpx2.Response:
        if len(route.calls) > 5:
            raise AssertionError("the paginator keeps fetching the same page")
        number = int(request.url.params.get("page", "1"))
        return httpx2.Response(
            200, json={"data": [subscription_json(id=f"sub_{number}")], "total": 2, "total_pages": 2}
        )

    route = router.get("/subscriptions").mock(side_effect=answer)
    ids = [s.id async for s in billing.subscriptions.list()]
    assert ids == ["sub_1", "sub_2"]


# -- sync facade -------------------------------------------------------------------------------


def test_sync_list_returns_plain_iterable_over_every_page(
    sync_billing: BillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(2))
    pager = sync_billing.customers.list(limit=2)
    assert isinstance(pager, Iterable)
    assert not hasattr(pager, "__aiter__")
    assert [c.id for c in pager] == ["c1_0", "c1_1", "c2_0", "c2_1"]
    assert pages_requested(route) == ["1", "2"]


def test_sync_list_fetches_lazily(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    route = router.get("/customers").mock(side_effect=paged_customers(3))
    items: Iterator[Customer] = iter(sync_billing.customers.list(limit=2))
    assert route.call_count == 0
    assert next(items).id == "c1_0"
    assert route.call_count == 1


def test_sync_page_and_pages(sync_billing: BillingOS, router: respx.MockRouter) -> None:
    router.get("/customers").mock(side_effect=paged_customers(3))
    pager = sync_billing.customers.list(limit=2)
    page = pager.page(3)
    assert (page.page, page.total, page.total_pages, page.next_page) == (3, 6, 3, None)
    assert [p.page for p in pager.pages()] == [1, 2, 3]


def test_sync_subscriptions_list_accepts_bare_json_array(
    sync_billing: BillingOS, router: respx.MockRouter
) -> None:
    route = router.get("/subscriptions").respond(200, json=[subscription_json(id="sub_1")])
    assert [s.id for s in sync_billing.subscriptions.list(customer_id="cus_1")] == ["sub_1"]
    assert dict(route.calls.last.request.url.params) == {"customer_id": "cus_1"}
