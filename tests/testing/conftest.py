from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from billingos.testing import FakeBillingOS, RateLimits, SubscriptionRecord

from ._helpers import Clock, client, seed


@pytest.fixture
def clock() -> Clock:
    """The fake's clock, at 2026-01-01T00:00:00Z until a test moves it."""
    return Clock()


@pytest.fixture
def seeded(clock: Clock) -> tuple[FakeBillingOS, SubscriptionRecord]:
    """A fake with the real rate limits (100/min per route), seeded by ``_helpers.seed``."""
    fake = FakeBillingOS(clock=clock, seed=1234, rate_limits=RateLimits())
    return fake, seed(fake)


@pytest.fixture
def fake(seeded: tuple[FakeBillingOS, SubscriptionRecord]) -> FakeBillingOS:
    return seeded[0]


@pytest.fixture
def subscription(seeded: tuple[FakeBillingOS, SubscriptionRecord]) -> SubscriptionRecord:
    """USER's active Pro subscription."""
    return seeded[1]


@pytest.fixture
async def http(fake: FakeBillingOS) -> AsyncIterator[httpx2.AsyncClient]:
    """Raw httpx on the fake's in-process transport, with a valid ``Authorization`` header."""
    async with client(fake) as http:
        yield http
