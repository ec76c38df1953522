"""Fixtures of the integration suite: a seeded embedded BillingOS, SDK clients bound to it in-process, and
``serve(app)``, which runs a real ASGI app's lifespan (asgi-lifespan) and talks to it over httpx's ASGI
transport (not Starlette's TestClient, whose portal thread warns under ``filterwarnings = error``).

Seed: feature ``api_calls`` (a quota of ``QUOTA`` per period) and ``sso`` (a flag) on the plan "Pro";
``user_pro`` subscribes to it, ``user_free`` is a customer with no subscription, and ``user_ghost`` is
unknown to BillingOS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx2
import pytest
from asgi_lifespan import LifespanManager

from billingos import AsyncBillingOS, BillingOS, RetryPolicy
from billingos.testing import FakeBillingOS

QUOTA = 3
PRO, FREE, GHOST = "user_pro", "user_free", "user_ghost"


async def _no_sleep(_seconds: float) -> None:
    return None


NO_SLEEP = RetryPolicy(sleep=_no_sleep)
"""Retries happen (3 by default) but never wait: an outage is answered in microseconds."""

ClientFactory = Callable[..., AsyncBillingOS]


@pytest.fixture
def fake() -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None, seed=4)
    fake.add_feature("api_calls", "usage_quota")
    fake.add_feature("sso", "boolean_flag")
    plan = fake.add_product("Pro", features={"api_calls": QUOTA, "sso": True})
    fake.add_customer(PRO)
    fake.subscribe(PRO, plan.price_id)
    fake.add_customer(FREE)
    return fake


@pytest.fixture
async def make_client(fake: FakeBillingOS) -> AsyncIterator[ClientFactory]:
    """``make_client(secret_key=None, **kwargs)``: an in-process AsyncBillingOS on ``fake``; no retry sleeps.

    The httpx clients it hands the SDK (which never closes an ``http_client`` it was given) are closed
    at teardown.
    """
    http_clients: list[httpx2.AsyncClient] = []

    def make(secret_key: str | None = None, **kwargs: Any) -> AsyncBillingOS:
        http = fake.async_http_client()
        http_clients.append(http)
        kwargs.setdefault("retry_policy", NO_SLEEP)
        key = secret_key or fake.secret_key
        return AsyncBillingOS(key, api_url="http://billingos.fake", http_client=http, **kwargs)

    yield make
    for http in http_clients:
        await http.aclose()


@pytest.fixture
def sync_billing(fake: FakeBillingOS) -> Iterator[BillingOS]:
    """The blocking facade on ``fake``, in-process (its own loop thread), retries without sleeping."""
    with fake.sync_client(retry_policy=NO_SLEEP) as billing:
        yield billing


@asynccontextmanager
async def serve(
    app: Any, *, lifespan: bool = True, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx2.AsyncClient]:
    """Start ``app`` (its lifespan, when ``lifespan``), yield an httpx client to it, then shut it down.

    ``raise_app_exceptions=False`` lets a test see the 500 an unhandled exception becomes.
    """
    async with AsyncExitStack() as stack:
        if lifespan:
            manager = await stack.enter_async_context(LifespanManager(app))
            app = manager.app  # passes the lifespan state into each request's scope, as servers do
        transport = httpx2.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        yield await stack.enter_async_context(httpx2.AsyncClient(transport=transport, base_url="http://app"))
