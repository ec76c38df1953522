"""The retry policy: what is retried, how long to wait, and the tenacity loop that applies it.

What is retried (CONTRACT §3, §4):

- always: failures before the request left the client (connect errors, connect and pool
  timeouts) and 429, which the server did not execute; a ``Retry-After`` above
  ``max_retry_after`` is not waited for: the ``RateLimitError`` is raised at once;
- only when repeating is harmless (``retry_safe``: GET, DELETE, and usage tracking, which always
  carries an idempotency key): read/write timeouts, dropped connections, 500, 502, 503, 504;
- never: any other 4xx, and a non-idempotent POST that may have reached the server (a second
  session token or customer is worse than an error);
- never a ``BaseException`` such as ``CancelledError`` or ``KeyboardInterrupt``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import attrs
from tenacity import AsyncRetrying, IterState, RetryCallState, retry_if_exception, stop_after_attempt

from ._errors import BillingOSError, NetworkError, RateLimitError, ServerError

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"RetryPolicy.{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How failed calls are retried. Immutable; change it with :func:`attrs.evolve`.

    The wait before retry ``n`` (0-based) is ``min(initial_backoff * 2**n, max_backoff)``
    scaled by a random factor in ``jitter``, or the server's ``Retry-After`` when it sent one.

    Example::

        policy = RetryPolicy(max_backoff=2.0)
        billing = AsyncBillingOS(retry_policy=policy, max_retries=5)
    """

    initial_backoff: float = attrs.field(default=0.5, validator=_non_negative)
    max_backoff: float = attrs.field(default=8.0, validator=_non_negative)
    jitter: tuple[float, float] = (0.5, 1.0)
    max_retry_after: float = attrs.field(default=60.0, validator=_non_negative)
    # A factory, not ``default=anyio.sleep``: reading that attribute at class creation would load
    # anyio's event-loop module (and sniffio) during ``import billingos``.
    sleep: Callable[[float], Awaitable[None]] = attrs.field(factory=lambda: anyio.sleep, eq=False, repr=False)
    """How to wait; tests inject a recorder here so they never sleep for real."""

    def backoff(self, retries_taken: int) -> float:
        """Seconds to wait before the next retry when the server gave no ``Retry-After``."""
        base = min(self.initial_backoff * 2.0 ** min(retries_taken, 32), self.max_backoff)
        return base * random.uniform(*self.jitter)

    def delay(self, exc: BaseException, retries_taken: int) -> float:
        """Seconds to wait after ``exc``: ``Retry-After`` when the server sent one, else backoff."""
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return exc.retry_after
        return self.backoff(retries_taken)

    def should_retry(self, exc: BaseException, *, retry_safe: bool) -> bool:
        """Whether ``exc`` may be retried, for a request that is (or is not) safe to repeat."""
        if isinstance(exc, RateLimitError):
            if exc.code == "rate_budget_exhausted":  # refused unsent by the budget, which already waited
                return False
            return exc.retry_after is None or exc.retry_after <= self.max_retry_after
        if isinstance(exc, NetworkError):
            return retry_safe or not getattr(exc, "_maybe_sent", True)
        if isinstance(exc, ServerError):
            return retry_safe and exc.status_code in RETRYABLE_STATUSES
        return False

    async def call(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        max_retries: int,
        retry_safe: bool,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> T:
        """Run ``attempt(0)``, and on a retryable failure ``attempt(1)``, ... up to ``max_retries``.

        The first attempt runs without building any retry machinery (the common case costs
        nothing); only a failure hands over to :meth:`retry`.
        """
        try:
            return await attempt(0)
        except BillingOSError as exc:
            first_failure = exc
        return await self.retry(
            first_failure, attempt, max_retries=max_retries, retry_safe=retry_safe, on_retry=on_retry
        )

    async def retry(
        self,
        first_failure: BillingOSError,
        attempt: Callable[[int], Awaitable[T]],
        *,
        max_retries: int,
        retry_safe: bool,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> T:
        """Go on after the first attempt failed with ``first_failure``: raise it if it may not be
        retried, else wait and run ``attempt(1)``, ``attempt(2)``, ... (a fresh tenacity loop).

        What :meth:`call` does after its first attempt; the request path runs that first attempt
        itself (one coroutine frame fewer per call) and hands a failure over here.
        """
        if max_retries <= 0 or not self.should_retry(first_failure, retry_safe=retry_safe):
            raise first_failure

        wait = self.delay(first_failure, 0)
        if on_retry is not None:
            on_retry(first_failure, 1, wait)
        await self.sleep(wait)

        retry_number = 0

        async def retry() -> T:
            nonlocal retry_number
            retry_number += 1
            return await attempt(retry_number)

        def wait_for(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            assert exc is not None  # tenacity only waits after a failure it chose to retry
            return self.delay(exc, state.attempt_number)

        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None and state.next_action is not None:
                exc = state.outcome.exception()
                assert exc is not None
                on_retry(exc, state.attempt_number + 1, state.next_action.sleep)

        retrying = _TaskRetrying(
            stop=stop_after_attempt(max_retries),
            wait=wait_for,
            retry=retry_if_exception(lambda e: self.should_retry(e, retry_safe=retry_safe)),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(retry)


class _TaskRetrying(AsyncRetrying):
    """tenacity's ``AsyncRetrying`` with its state kept on the object instead of in a thread-local.

    tenacity keeps a retry loop's statistics and iteration state per thread. An SDK call is one asyncio
    task, but the blocking client's shared loop is run by whichever calling thread is free, so a task
    that waits between two attempts may resume on another thread: the thread-local then has no
    state (``KeyError: 'idle_for'``, a fresh iteration). One object serves one call, never two threads
    at once, so plain attributes are right here.
    """

    @property
    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] | None = self.__dict__.get("_task_statistics")
        if stats is None:
            stats = self.__dict__["_task_statistics"] = {}
        return stats

    @property
    def iter_state(self) -> IterState:
        state: IterState | None = self.__dict__.get("_task_iter_state")
        if state is None:
            state = self.__dict__["_task_iter_state"] = IterState()
        return state


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; ``None`` if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)
