"""Fixtures of the end-to-end suite: the SDK's own httpx client, over real sockets, to the fake on loopback.

One uvicorn server (``billingos.testing.serve_asgi``, what ``fake.serve()`` runs) serves the whole session;
each test gets a brand-new :class:`FakeBillingOS` mounted behind it, so no state leaks between tests.
Why not ``fake.serve()`` per test: starting it costs ~6 ms but stopping it ~160 ms (uvicorn's 0.1 s exit
tick and shutdown), which would be most of this suite's run time. The tests about serving itself, the real
``Retry-After`` wait and connection refused use ``fake.serve()`` directly.

Clients are function-scoped (an ``AsyncBillingOS`` belongs to one event loop) and record their backoff
sleeps instead of waiting (``RetryPolicy(sleep=...)``), so nothing here waits for a retry unless a test
says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack

import pytest

from billingos import AsyncBillingOS, BillingOS, RetryPolicy
from billingos.testing import FakeBillingOS, serve_asgi

from ._helpers import Loopback, Seeded, seed

SEED = 20240601

Mount = Callable[[FakeBillingOS], str]


@pytest.fixture(scope="session")
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    with serve_asgi(server) as url:
        server.url = url
        yield server


@pytest.fixture
def mount(loopback: Loopback) -> Iterator[Mount]:
    """``url = mount(fake)``: serve a fake you built yourself (rate limits, a clock) for this test."""
    with ExitStack() as stack:
        yield lambda fake: stack.enter_context(loopback.mount(fake))


@pytest.fixture
def fake(mount: Mount) -> FakeBillingOS:
    """A fresh fake (no rate limits, seeded fault randomness) mounted on the loopback server."""
    fake = FakeBillingOS(rate_limits=None, seed=SEED)
    mount(fake)
    return fake


@pytest.fixture
def url(fake: FakeBillingOS, loopback: Loopback) -> str:
    """The base URL of the loopback server (serving ``fake``)."""
    return loopback.url


@pytest.fixture
def seeded(fake: FakeBillingOS) -> Seeded:
    """``fake`` with the standard catalogue and ``user_42`` subscribed to Pro."""
    return seed(fake)


@pytest.fixture
async def client(fake: FakeBillingOS, url: str, policy: RetryPolicy) -> AsyncIterator[AsyncBillingOS]:
    """An ``AsyncBillingOS`` with its own httpx pool, talking to the fake over 127.0.0.1."""
    async with AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:
        yield billing


@pytest.fixture
def sync_client(fake: FakeBillingOS, url: str, policy: RetryPolicy) -> Iterator[BillingOS]:
    """The blocking facade, talking to the fake over 127.0.0.1."""
    with BillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:
        yield billing
