"""The rate budget against the embedded server with its limits on (issue 15 item 1).

Time is the fake's clock, shared by the server's windows, the cache and the budget: the budget's
``sleep`` moves it to the instant it waits for, so "wait for the next window" takes no real time and
every assertion is a count of what the server received and answered.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from billingos import AsyncBillingOS, EntitlementCache, RateBudget, RateLimit, RateLimitError
from billingos.testing import FakeBillingOS, RateLimits

from .._factories import Clock
from ._helpers import statuses
from .conftest import Mount

pytestmark = pytest.mark.anyio

CHECK = "GET /v1/usage/check"
TRACK = "POST /v1/usage/track"


def budget_on(clock: Clock) -> RateBudget:
    async def sleep(seconds: float) -> None:  # the wait for a window: the clock jumps there
        clock.now = max(clock.now, clock.now + seconds)
        await anyio.lowlevel.checkpoint()

    return RateBudget(clock=clock, sleep=sleep)


def limited_fake(mount: Mount, clock: Clock, per_route: int, customers: int = 0) -> tuple[FakeBillingOS, str]:
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=per_route, window=60), clock=clock)
    url = mount(fake)
    fake.add_feature("api_calls", "usage_quota")
    fake.add_feature("sso", "boolean_flag")
    fake.add_feature("seats", "numeric_limit")
    plan = fake.add_product("Pro", features={"api_calls": 1_000_000, "sso": True, "seats": 5})
    for n in range(customers):
        fake.add_customer(f"user_{n}", email=f"u{n}@example.com")
        fake.subscribe(f"user_{n}", plan.price_id)
    return fake, url


async def test_300_mixed_calls_in_one_window_get_no_429_every_check_answered_every_track_counted_once(
    mount: Mount,
) -> None:
    clock = Clock()
    fake, url = limited_fake(mount, clock, per_route=100, customers=150)
    cache = EntitlementCache(ttl=0, stale_if_error=3600, clock=clock)
    features = ("api_calls", "sso", "seats")
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, entitlement_cache=cache, rate_budget=budget_on(clock)
    ) as billing:
        # The cache holds an answer for 20 customers x 3 features (60 of the window's 100 checks).
        for n in range(20):
            for feature in features:
                await billing.entitlements.check(f"user_{n}", feature)
        answers = []
        async with billing.usage_recorder(flush_interval=3600) as recorder:

            async def check(n: int) -> None:
                answers.append(await billing.entitlements.check(f"user_{n % 20}", features[n % 3]))

            async with anyio.create_task_group() as tg:  # 150 checks and 150 tracks at once
                for n in range(150):
                    tg.start_soon(check, n)
                    recorder.record(f"user_{n}", "api_calls")
            await recorder.flush()  # 150 track calls (one per customer): 100 now, 50 in the next window
            assert recorder.stats.confirmed == 150
            assert not recorder.dead_letters

    assert [s for s in statuses(fake, CHECK) + statuses(fake, TRACK) if s != 200 and s != 201] == []
    assert len(answers) == 150
    assert all(a.has_access for a in answers)
    assert cache.stats.stale > 0  # the budget answered from the cache instead of sending
    assert len(fake.requests_to(CHECK)) <= 100  # one window: the checks never waited for the next
    assert len(fake.requests_to(TRACK)) == 150
    assert [fake.usage_of(f"user_{n}", "api_calls") for n in range(150)] == [1.0] * 150


async def test_a_call_over_the_budget_waits_for_the_window_then_is_sent(mount: Mount) -> None:
    clock = Clock()
    fake, url = limited_fake(mount, clock, per_route=3, customers=1)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, rate_budget=budget_on(clock), rate_limit_wait=60
    ) as b:
        for _ in range(5):
            await b.usage.metrics("user_0")
    assert statuses(fake, "GET /v1/usage/metrics") == [200] * 5
    assert clock.now == 1060.0  # the two last calls waited for the second window


async def test_a_call_over_the_budget_raises_rate_limit_error_without_sending(mount: Mount) -> None:
    clock = Clock()
    fake, url = limited_fake(mount, clock, per_route=3, customers=1)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, rate_budget=budget_on(clock), rate_limit_wait=10
    ) as b:
        for _ in range(3):
            await b.usage.metrics("user_0")
        with pytest.raises(RateLimitError) as caught:
            await b.usage.metrics("user_0")
        assert b.rate_limits["GET /v1/usage/metrics"] == RateLimit(limit=3, remaining=0, reset_seconds=60.0)
    assert caught.value.code == "rate_budget_exhausted"
    assert caught.value.retry_after == 60.0
    assert caught.value.status_code is None
    assert statuses(fake, "GET /v1/usage/metrics") == [200] * 3  # the fourth was never sent


async def test_the_scoped_window_of_each_customer_is_budgeted_too(mount: Mount) -> None:
    """``POST /v1/usage/track`` has a per-customer window beside the per-route one (X-RateLimit-*-Scoped):
    a customer's tracks past it are refused unsent, another customer's go on."""
    clock = Clock()
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=1000, track_per_customer=5, window=60), clock=clock)
    url = mount(fake)
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Pro", features={"api_calls": 1_000_000})
    for user in ("user_a", "user_b"):
        fake.add_customer(user, email=f"{user}@example.com")
        fake.subscribe(user, plan.price_id)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, rate_budget=budget_on(clock), rate_limit_wait=0, max_retries=0
    ) as billing:
        refused = []
        for n in range(8):
            try:
                await billing.usage.track("user_a", "api_calls", 1, idempotency_key=f"a{n}")
            except RateLimitError as exc:
                refused.append(exc)
        for n in range(3):  # another customer's own window is untouched
            await billing.usage.track("user_b", "api_calls", 1, idempotency_key=f"b{n}")
        assert TRACK in billing._requester.transport.budget.scoped_routes  # type: ignore[union-attr]
        assert billing.rate_limits[TRACK].limit == 1000  # the route's window, not a customer's
    assert [e.code for e in refused] == ["rate_budget_exhausted"] * 3
    assert all(e.status_code is None for e in refused)  # never sent
    assert statuses(fake, TRACK) == [201] * 8  # 5 of user_a, 3 of user_b: no 429
    assert fake.usage_of("user_a", "api_calls") == 5
    assert fake.usage_of("user_b", "api_calls") == 3


def test_the_blocking_client_reports_rate_limits_per_route(mount: Mount) -> None:
    from billingos import BillingOS

    clock = Clock()
    fake, url = limited_fake(mount, clock, per_route=100, customers=1)
    with BillingOS(fake.secret_key, api_url=url, rate_budget=budget_on(clock)) as billing:
        billing.check_entitlement("user_0", "sso")
        billing.check_entitlement("user_0", "seats")
        assert billing.rate_limits[CHECK] == RateLimit(limit=100, remaining=98, reset_seconds=60.0)
        clock.advance(61)
        assert billing.rate_limits[CHECK] == RateLimit(limit=100, remaining=100, reset_seconds=0.0)


async def test_rate_budget_false_sends_and_gets_the_429(mount: Mount) -> None:
    clock = Clock()
    fake, url = limited_fake(mount, clock, per_route=1, customers=1)
    async with AsyncBillingOS(fake.secret_key, api_url=url, rate_budget=False, max_retries=0) as billing:
        await billing.usage.metrics("user_0")
        with pytest.raises(RateLimitError) as caught:
            await billing.usage.metrics("user_0")
        assert billing.rate_limits == {}
    assert caught.value.status_code == 429


async def test_the_recorder_stretches_its_flush_interval_to_fit_the_track_budget(mount: Mount) -> None:
    """A flush of B (customer, feature) pairs costs B track calls: with R left until the reset in T s,
    the next flush comes after T * B / R s (never shorter than flush_interval, never longer than T)."""
    clock = Clock()
    fake, url = limited_fake(mount, clock, per_route=100, customers=20)
    billing = AsyncBillingOS(fake.secret_key, api_url=url, rate_budget=budget_on(clock))
    async with billing, billing.usage_recorder(flush_interval=1) as recorder:
        assert recorder._interval() == 1  # nothing known of the track route yet
        for n in range(20):
            recorder.record(f"user_{n}", "api_calls")
        await recorder.flush()
        window = billing.rate_limits[TRACK]
        assert (window.limit, window.remaining) == (100, 80)
        assert window.reset_seconds is not None
        assert recorder._interval() == pytest.approx(window.reset_seconds * 20 / 80)  # 60 * 20 / 80
        assert recorder._interval() > 1
    assert len(fake.requests_to(TRACK)) == 20
