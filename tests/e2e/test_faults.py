"""Fault scenarios over real sockets. Each asserts the server-side truth (what the fake counted, minted and
received), not only what the client saw.

Backoff sleeps are recorded, not waited (the ``sleeps`` fixture), except in the one test that proves the
real ``Retry-After`` wait.
"""

from __future__ import annotations

import email.utils
import time

import httpx2
import pytest

from billingos import (
    AsyncBillingOS,
    BillingOS,
    ConflictError,
    NetworkError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    ValidationError,
)
from billingos.testing import FakeBillingOS, Fault, RateLimits

from ._helpers import closed_port, minted_tokens, request_ids, seed, statuses, wait_for_requests

pytestmark = pytest.mark.usefixtures("seeded")

TOKENS = "POST /v1/session-tokens"
TRACK = "POST /v1/usage/track"
CHECK = "GET /v1/usage/check"
GET_CUSTOMER = "GET /customers/external/{external_id}"


# -- a lost response on usage.track ------------------------------------------------------------


async def test_lost_track_response_is_retried_and_counted_once(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    rule = fake.inject(TRACK, Fault.drop_response())

    record = await client.usage.track("user_42", "api_calls", 7)

    assert rule.hits == 1
    assert len(sleeps) == 1
    first, retry = fake.requests_to(TRACK)
    assert (first.status, retry.status) == (None, 201)  # processed then dropped; replayed
    assert first.json["idempotency_key"] == retry.json["idempotency_key"] == record.idempotency_key
    assert first.request_id == retry.request_id
    assert fake.usage_of("user_42", "api_calls") == 7  # counted once, not 14
    assert record.usage is not None
    assert record.usage.consumed_units == 7  # the replay returns the first call's result


async def test_reset_track_is_retried_and_counted_once(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TRACK, Fault.reset())
    await client.usage.track("user_42", "api_calls", 2)
    assert len(sleeps) == 1
    assert len(fake.requests_to(TRACK)) == 2
    assert fake.usage_of("user_42", "api_calls") == 2


async def test_timed_out_track_is_retried_and_counted_once(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    """The slow first attempt still lands on the server after the retry: the key dedupes it."""
    fake.inject(TRACK, Fault.delay(0.6))

    record = await client.usage.track("user_42", "api_calls", 4, timeout=0.25)

    assert len(sleeps) == 1
    await wait_for_requests(fake, TRACK, 2)  # the delayed first attempt, processed late
    assert {r.json["idempotency_key"] for r in fake.requests_to(TRACK)} == {record.idempotency_key}
    assert fake.usage_of("user_42", "api_calls") == 4


# -- 429 with Retry-After ---------------------------------------------------------------------------


async def test_429_with_retry_after_is_waited_and_succeeds(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TRACK, Fault.error(429, retry_after=1))

    record = await client.usage.track("user_42", "api_calls", 3)

    assert sleeps == [1.0]
    assert statuses(fake, TRACK) == [429, 201]
    assert len(request_ids(fake, TRACK)) == 1
    assert record.usage is not None
    assert record.usage.consumed_units == 3
    assert fake.usage_of("user_42", "api_calls") == 3


async def test_429_on_a_post_that_is_not_idempotent_is_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    """A 429 was not executed, so even session-token creation is safe to repeat."""
    fake.inject(TOKENS, Fault.error(429, retry_after="2"))
    await client.session_tokens.create("user_42")
    assert sleeps == [2.0]
    assert statuses(fake, TOKENS) == [429, 201]
    assert minted_tokens(fake) == 1


async def test_429_retry_after_is_really_waited(sleeps: list[float]) -> None:
    """The real path: the default policy's sleep, on a server started with ``fake.serve()``."""
    fake = FakeBillingOS(rate_limits=None)
    seed(fake)
    fake.inject(CHECK, Fault.error(429, retry_after=1))
    with fake.serve() as url:
        async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
            started = time.monotonic()
            ent = await billing.entitlements.check("user_42", "sso")
            elapsed = time.monotonic() - started
    assert ent.has_access
    assert 0.95 <= elapsed < 3
    first, second = fake.requests_to(CHECK)
    assert (first.status, second.status) == (429, 200)


# -- 5xx -------------------------------------------------------------------------------------------


async def test_503_on_a_get_is_retried_and_succeeds(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(GET_CUSTOMER, Fault.error(503), times=2)

    customer = await client.customers.get_by_external_id("user_42")

    assert customer.email == "ada@example.com"
    assert len(sleeps) == 2
    assert statuses(fake, GET_CUSTOMER) == [503, 503, 200]
    assert len(request_ids(fake, GET_CUSTOMER)) == 1  # one logical call, one request id


async def test_503_on_a_get_gives_up_after_the_configured_retries(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(GET_CUSTOMER, Fault.error(503), times=None)
    with pytest.raises(ServerError) as caught:
        await client.customers.get_by_external_id("user_42", max_retries=2)
    assert caught.value.status_code == 503
    assert len(sleeps) == 2
    assert statuses(fake, GET_CUSTOMER) == [503, 503, 503]


async def test_500_on_session_token_create_is_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TOKENS, Fault.error(500))

    with pytest.raises(ServerError) as caught:
        await client.session_tokens.create("user_42")

    assert caught.value.status_code == 500
    assert sleeps == []
    assert statuses(fake, TOKENS) == [500]  # exactly one request received
    assert minted_tokens(fake) == 0  # the injected 500 answered before the server minted anything

    token = await client.session_tokens.create("user_42")  # the caller's own retry mints exactly one
    assert minted_tokens(fake) == 1
    assert fake.verify_session_token(token.session_token)["jti"] == token.token_id


async def test_lost_session_token_response_is_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TOKENS, Fault.drop_response())

    with pytest.raises(NetworkError) as caught:
        await client.session_tokens.create("user_42")

    assert not isinstance(caught.value, RequestTimeoutError)
    assert caught.value.status_code is None
    assert sleeps == []
    assert statuses(fake, TOKENS) == [None]  # processed, answer dropped, never sent again
    assert minted_tokens(fake) == 1  # the server minted one token the client never saw


async def test_reset_session_token_create_is_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TOKENS, Fault.reset())
    with pytest.raises(NetworkError):
        await client.session_tokens.create("user_42")
    assert sleeps == []
    assert len(fake.requests_to(TOKENS)) == 1
    assert minted_tokens(fake) == 0


async def test_a_reset_is_recorded_without_a_status(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    """The client received no answer to a reset request, so the server's record must not claim a 200."""
    fake.inject(TOKENS, Fault.reset())
    with pytest.raises(NetworkError):
        await client.session_tokens.create("user_42")
    assert statuses(fake, TOKENS) == [None]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_on_customer_create_is_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float], status: int
) -> None:
    fake.inject("POST /customers", Fault.error(status))
    with pytest.raises(ServerError) as caught:
        await client.customers.create("new@example.com")
    assert caught.value.status_code == status
    assert sleeps == []
    assert statuses(fake, "POST /customers") == [status]
    assert fake.customer("new@example.com") is None


# -- an HTML 502 page from a proxy -------------------------------------------------------------------


async def test_html_502_on_a_post_is_a_server_error_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TOKENS, Fault.html(502))

    with pytest.raises(ServerError) as caught:
        await client.session_tokens.create("user_42")

    error = caught.value
    assert error.status_code == 502
    assert error.code == "http_502"
    assert "502" in error.message
    assert error.request_id == fake.requests_to(TOKENS)[0].request_id
    assert error.headers["content-type"].startswith("text/html")
    assert sleeps == []
    assert statuses(fake, TOKENS) == [502]
    assert minted_tokens(fake) == 0


async def test_html_502_on_a_get_is_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.html(502))
    assert (await client.entitlements.check("user_42", "sso")).has_access
    assert len(sleeps) == 1
    assert statuses(fake, CHECK) == [502, 200]


async def test_html_502_on_track_is_retried_and_counted_once(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(TRACK, Fault.html(502))
    await client.usage.track("user_42", "api_calls", 5)
    assert len(sleeps) == 1
    assert statuses(fake, TRACK) == [502, 201]
    assert fake.usage_of("user_42", "api_calls") == 5


# -- no server at all ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_connection_refused_is_a_network_error_after_the_configured_retries(
    policy: RetryPolicy, sleeps: list[float], max_retries: int
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with AsyncBillingOS("sk_test_" + "1" * 32, api_url=url, retry_policy=policy) as billing:
        with pytest.raises(NetworkError) as caught:
            await billing.entitlements.check("user_42", "sso", max_retries=max_retries)
    assert not isinstance(caught.value, RequestTimeoutError)
    assert caught.value.code == "network_error"
    assert caught.value.status_code is None
    assert len(sleeps) == max_retries  # 1 + max_retries attempts, a backoff before each retry


async def test_connection_refused_is_retried_even_for_a_non_idempotent_post(
    policy: RetryPolicy, sleeps: list[float]
) -> None:
    """Nothing reached a server, so retrying a token creation cannot mint a second token."""
    fake = FakeBillingOS(rate_limits=None)
    with fake.serve() as url:
        pass  # the server has stopped: its port now refuses connections
    async with AsyncBillingOS(fake.secret_key, api_url=url, retry_policy=policy) as billing:
        with pytest.raises(NetworkError):
            await billing.session_tokens.create("user_42")
    assert len(sleeps) == 3
    assert fake.requests == ()
    assert minted_tokens(fake) == 0


def test_connection_refused_sync(policy: RetryPolicy, sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        BillingOS("sk_test_" + "1" * 32, api_url=url, retry_policy=policy, max_retries=2) as billing,
        pytest.raises(NetworkError),
    ):
        billing.usage.track("user_42", "api_calls")
    assert len(sleeps) == 2


# -- slow route ------------------------------------------------------------------------------------


async def test_slow_route_is_a_request_timeout(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.delay(1.0))
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError) as caught:
        await client.entitlements.check("user_42", "sso", timeout=0.1, max_retries=0)
    assert time.monotonic() - started < 0.8
    assert isinstance(caught.value, NetworkError)
    assert caught.value.code == "timeout"
    assert "the whole attempt" in caught.value.message  # a number bounds the attempt, not one read
    assert sleeps == []


async def test_slow_route_with_a_per_phase_timeout_is_a_read_timeout(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.delay(1.0))
    with pytest.raises(RequestTimeoutError) as caught:
        await client.entitlements.check("user_42", "sso", timeout=httpx2.Timeout(0.1), max_retries=0)
    assert caught.value.code == "timeout"
    assert "read" in caught.value.message
    assert "the whole attempt" not in caught.value.message
    assert sleeps == []


async def test_slow_route_with_retries_times_out_then_succeeds(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.delay(0.6))
    fast = client.with_options(timeout=0.25)
    assert (await fast.entitlements.check("user_42", "sso")).has_access
    assert len(sleeps) == 1
    await wait_for_requests(fake, CHECK, 2)
    assert len(request_ids(fake, CHECK)) == 1


async def test_slow_session_token_create_times_out_and_is_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    """The client gave up, but the server still minted: exactly one token, because no retry was sent."""
    fake.inject(TOKENS, Fault.delay(0.3))
    with pytest.raises(RequestTimeoutError):
        await client.session_tokens.create("user_42", timeout=0.1)
    assert sleeps == []
    await wait_for_requests(fake, TOKENS, 1)
    assert minted_tokens(fake) == 1
    assert len(fake.requests_to(TOKENS)) == 1


# -- malformed bodies ------------------------------------------------------------------------------


async def test_malformed_json_is_a_response_decode_error(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.malformed_json())
    with pytest.raises(ResponseDecodeError) as caught:
        await client.entitlements.check("user_42", "sso")
    error = caught.value
    assert error.status_code == 200
    assert error.code == "decode_error"
    assert error.request_id == fake.requests_to(CHECK)[0].request_id
    assert sleeps == []
    assert statuses(fake, CHECK) == [200]  # not retried


async def test_malformed_json_on_track_counts_nothing(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    fake.inject(TRACK, Fault.malformed_json())
    with pytest.raises(ResponseDecodeError):
        await client.usage.track("user_42", "api_calls", 3)
    assert len(fake.requests_to(TRACK)) == 1
    assert fake.usage_of("user_42", "api_calls") == 0  # the fault answered without processing


# -- rate limits -----------------------------------------------------------------------------------


async def test_rate_limit_exhausted_with_a_long_retry_after_raises_at_once(
    mount, policy: RetryPolicy, sleeps: list[float]
) -> None:
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=2, window=3600))
    seed(fake)
    url = mount(fake)
    # rate_budget=False: this is about a 429 the client did not see coming (see test_rate_budget.py)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, rate_budget=False
    ) as billing:
        await billing.usage.track("user_42", "api_calls")
        await billing.usage.track("user_42", "api_calls")
        with pytest.raises(RateLimitError) as caught:
            await billing.usage.track("user_42", "api_calls")
        assert (await billing.entitlements.check("user_42", "sso")).has_access  # limits are per route

    error = caught.value
    assert error.status_code == 429
    assert error.code == "RATE_LIMIT_EXCEEDED"
    assert error.retry_after is not None
    assert 3590 <= error.retry_after <= 3600
    assert error.headers["x-ratelimit-remaining"] == "0"
    assert sleeps == []  # too long to wait for: raised at once
    assert statuses(fake, TRACK) == [201, 201, 429]
    assert fake.usage_of("user_42", "api_calls") == 2  # the throttled call was not executed


async def test_rate_limit_headers_on_success(mount, policy: RetryPolicy) -> None:
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=5, window=60))
    seed(fake)
    url = mount(fake)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, rate_budget=False
    ) as billing:  # the 429 path itself: the rate budget would not send the sixth call
        for _ in range(5):
            await billing.entitlements.check("user_42", "sso")
        with pytest.raises(RateLimitError) as caught:
            await billing.entitlements.check("user_42", "sso", max_retries=0)
    assert caught.value.retry_after is not None
    assert 1 <= caught.value.retry_after <= 60
    assert statuses(fake, CHECK) == [200] * 5 + [429]


async def test_rate_limit_with_a_short_retry_after_is_waited(
    mount, policy: RetryPolicy, sleeps: list[float]
) -> None:
    """A short window: the SDK waits the ``Retry-After`` (recorded here) and tries again, bounded by
    max_retries; the server executed only the calls it let through."""
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=1, window=30))
    seed(fake)
    url = mount(fake)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, rate_budget=False
    ) as billing:  # the 429 path itself (tests/e2e/test_rate_budget.py: with the budget)
        await billing.usage.track("user_42", "api_calls")
        with pytest.raises(RateLimitError):
            await billing.usage.track("user_42", "api_calls", max_retries=2)
    assert len(sleeps) == 2
    assert all(25 <= s <= 30 for s in sleeps)
    assert statuses(fake, TRACK) == [201, 429, 429, 429]
    assert fake.usage_of("user_42", "api_calls") == 1


async def test_429_without_retry_after_backs_off(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.error(429))
    assert (await client.entitlements.check("user_42", "sso")).has_access
    (wait,) = sleeps
    assert 0.25 <= wait <= 0.5  # initial_backoff 0.5 scaled by the (0.5, 1.0) jitter
    assert statuses(fake, CHECK) == [429, 200]


async def test_per_customer_track_limit(mount, policy: RetryPolicy, sleeps: list[float]) -> None:
    """The server's per-customer 429 as the SDK reports it (without the rate budget, which would not send
    the fourth track: tests/e2e/test_rate_budget.py)."""
    fake = FakeBillingOS(rate_limits=RateLimits(per_route=100, track_per_customer=3, window=600))
    seeded = seed(fake)
    fake.add_customer("user_other")
    fake.subscribe("user_other", seeded.pro.price_id)
    url = mount(fake)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, rate_budget=False
    ) as billing:
        for _ in range(3):
            await billing.usage.track("user_42", "api_calls")
        with pytest.raises(RateLimitError) as caught:
            await billing.usage.track("user_42", "api_calls")
        await billing.usage.track("user_other", "api_calls")  # another customer is not throttled
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 60
    assert caught.value.headers["x-ratelimit-remaining-scoped"] == "0"
    assert sleeps == []
    assert fake.usage_of("user_42", "api_calls") == 3
    assert fake.usage_of("user_other", "api_calls") == 1


# -- lost responses on the other writes ------------------------------------------------------------


async def test_lost_customer_create_response_is_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject("POST /customers", Fault.drop_response())
    with pytest.raises(NetworkError):
        await client.customers.create("lost@example.com", external_id="user_lost")
    assert sleeps == []
    assert statuses(fake, "POST /customers") == [None]
    assert fake.customer("user_lost") is not None  # it was created, once
    with pytest.raises(ConflictError):  # which is why the SDK does not retry it (CONTRACT §4)
        await client.customers.create("lost@example.com", external_id="user_lost")


async def test_lost_customer_delete_response_is_retried_and_succeeds(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    customer = fake.add_customer("user_gone")
    fake.inject("DELETE /customers/{id}", Fault.drop_response())
    assert await client.customers.delete(customer.id) is None  # the retry's 404 means the first one worked
    assert len(sleeps) == 1
    assert statuses(fake, "DELETE /customers/{id}") == [None, 404]
    assert fake.customer("user_gone") is None


async def test_lost_revoke_response_is_retried_and_succeeds(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    token = await client.session_tokens.create("user_42")
    fake.inject("DELETE /v1/session-tokens/{id}", Fault.drop_response())
    await client.session_tokens.revoke(token.session_token)
    assert len(sleeps) == 1
    assert statuses(fake, "DELETE /v1/session-tokens/{id}") == [None, 404]
    with pytest.raises(ValueError, match="revoked"):
        fake.verify_session_token(token.session_token)


async def test_lost_cancel_response_is_not_retried(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    (sub,) = [s async for s in client.subscriptions.list(customer_id="user_42")]
    fake.inject("POST /subscriptions/{id}/cancel", Fault.drop_response())
    with pytest.raises(NetworkError):
        await client.subscriptions.cancel(sub.id, at_period_end=False)
    assert sleeps == []
    assert statuses(fake, "POST /subscriptions/{id}/cancel") == [None]
    assert fake.subscription(sub.id).status == "canceled"


async def test_oversized_body_is_refused_before_sending(client: AsyncBillingOS, fake: FakeBillingOS) -> None:
    with pytest.raises(ValidationError) as caught:
        await client.usage.track("user_42", "api_calls", metadata={"blob": "x" * 100_001})
    assert caught.value.status_code is None
    assert fake.requests == ()


async def test_retry_after_as_an_http_date(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    fake.inject(CHECK, Fault.error(429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True)))
    assert (await client.entitlements.check("user_42", "sso")).has_access
    (wait,) = sleeps
    assert 28 <= wait <= 30
    assert statuses(fake, CHECK) == [429, 200]


async def test_lost_response_on_the_last_unit_of_quota_is_not_a_quota_error(
    client: AsyncBillingOS, fake: FakeBillingOS, sleeps: list[float]
) -> None:
    """The retry is a replay: the server returns the first result instead of re-checking the quota."""
    await client.usage.track("user_42", "api_calls", 99)
    fake.inject(TRACK, Fault.drop_response())
    record = await client.usage.track("user_42", "api_calls", 1)
    assert record.usage is not None
    assert record.usage.remaining_units == 0
    assert len(sleeps) == 1
    assert statuses(fake, TRACK) == [201, None, 201]
    assert fake.usage_of("user_42", "api_calls") == 100
