"""Edges of ``RetryPolicy`` (``billingos/_retry.py``) that test_retry.py does not reach: its own
validation, and ``call()`` driven directly, without an ``on_retry`` observer, over several retries.
"""

from __future__ import annotations

import math

import pytest

from billingos import BillingOSError, NetworkError, RateLimitError, RetryPolicy, ServerError, ValidationError


@pytest.mark.parametrize("field", ["initial_backoff", "max_backoff", "max_retry_after"])
@pytest.mark.parametrize("value", [-0.1, math.inf, math.nan, "1", None])
def test_a_negative_non_finite_or_non_numeric_setting_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{field} must be a finite number >= 0"):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_zero_is_a_valid_setting_and_means_no_wait() -> None:
    policy = RetryPolicy(initial_backoff=0, max_backoff=0, max_retry_after=0)
    assert policy.backoff(5) == 0
    limited = RateLimitError("slow down", status_code=429, retry_after=1.0)
    assert not policy.should_retry(limited, retry_safe=True)  # 1 s is above a max_retry_after of 0


class Attempts:
    """``attempt(n)`` raising the queued errors in order, then returning ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.numbers: list[int] = []

    async def __call__(self, number: int) -> str:
        self.numbers.append(number)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def policy(sleeps: list[float]) -> RetryPolicy:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return RetryPolicy(initial_backoff=1.0, max_backoff=8.0, jitter=(1.0, 1.0), sleep=sleep)


def server_error() -> ServerError:
    return ServerError("down", status_code=503)


async def test_call_without_an_observer_retries_through_tenacity_with_exponential_waits() -> None:
    sleeps: list[float] = []
    attempts = Attempts(server_error(), server_error(), server_error())
    assert await policy(sleeps).call(attempts, max_retries=3, retry_safe=True) == "ok"
    assert attempts.numbers == [0, 1, 2, 3]
    assert sleeps == [1.0, 2.0, 4.0]  # jitter pinned to 1: the exact doubling


async def test_call_without_an_observer_raises_the_last_error_once_retries_are_spent() -> None:
    sleeps: list[float] = []
    last = server_error()
    attempts = Attempts(server_error(), server_error(), last)
    with pytest.raises(ServerError) as caught:
        await policy(sleeps).call(attempts, max_retries=2, retry_safe=True)
    assert caught.value is last
    assert attempts.numbers == [0, 1, 2]
    assert sleeps == [1.0, 2.0]


async def test_call_stops_at_an_error_that_may_not_be_retried_after_a_retryable_one() -> None:
    sleeps: list[float] = []
    refused = ValidationError("bad", status_code=400)
    attempts = Attempts(server_error(), refused)
    with pytest.raises(ValidationError) as caught:
        await policy(sleeps).call(attempts, max_retries=5, retry_safe=True)
    assert caught.value is refused
    assert sleeps == [1.0]


async def test_an_observer_sees_every_retry_with_its_number_and_wait() -> None:
    sleeps: list[float] = []
    seen: list[tuple[str, int, float]] = []
    limited = RateLimitError("slow down", status_code=429, retry_after=0.25)
    attempts = Attempts(server_error(), limited)
    result = await policy(sleeps).call(
        attempts,
        max_retries=3,
        retry_safe=True,
        on_retry=lambda exc, n, wait: seen.append((type(exc).__name__, n, wait)),
    )
    assert result == "ok"
    assert seen == [("ServerError", 1, 1.0), ("RateLimitError", 2, 0.25)]  # Retry-After beats backoff
    assert sleeps == [1.0, 0.25]


async def test_a_network_error_that_surely_never_left_is_retried_even_for_an_unsafe_call() -> None:
    sleeps: list[float] = []
    never_sent = NetworkError("connect failed", code="connect_error")
    never_sent._maybe_sent = False  # type: ignore[attr-defined]
    maybe_sent = NetworkError("reset", code="network_error")
    attempts = Attempts(never_sent)
    assert await policy(sleeps).call(attempts, max_retries=1, retry_safe=False) == "ok"
    with pytest.raises(NetworkError):
        await policy(sleeps).call(Attempts(maybe_sent), max_retries=1, retry_safe=False)
    assert sleeps == [1.0]


async def test_a_non_billingos_exception_is_never_retried() -> None:
    sleeps: list[float] = []
    with pytest.raises(KeyError):
        await policy(sleeps).call(Attempts(KeyError("x")), max_retries=3, retry_safe=True)
    plain = BillingOSError("odd", status_code=418)
    with pytest.raises(BillingOSError):
        await policy(sleeps).call(Attempts(plain), max_retries=3, retry_safe=True)
    assert sleeps == []
