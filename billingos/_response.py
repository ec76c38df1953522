"""What a call's HTTP response said besides its body: :class:`RawResponse` and :class:`RateLimit`.

::

    billing.customers.with_raw_response.get(id)    billing.request("GET", "/v1/...")
        └─ capture() around the method call            └─ Requester.request(..., decode=identity)
              └─ Requester.request records the final attempt's reply (or error) in the capture
        ─▶ RawResponse(status_code, headers, request_id, rate_limit, parse() -> the usual result)

The capture is a context variable: set by the ``with_raw_response`` wrapper around one call, it is seen
by every request that call sends (and only by them: other tasks and threads have their own context),
whatever the method does between them. The last request of the call wins, so a customer handle that
mints a token first reports the call itself, and a retried call reports its final attempt.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs
import httpx2

__all__ = ["RateLimit", "RawResponse"]

T = TypeVar("T")


@attrs.frozen
class RateLimit:
    """The server's throttling state, from the ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` headers.

    Each field is ``None`` when its header is absent or not a number. BillingOS counts per client IP
    and route (CONTRACT §3); ``reset_seconds`` is the time until the window resets, not an epoch.

    Example::

        raw = await billing.customers.with_raw_response.get("cus_1")
        if raw.rate_limit is not None and raw.rate_limit.remaining == 0:
            await asyncio.sleep(raw.rate_limit.reset_seconds or 1)
    """

    limit: int | None = None
    """Requests allowed in the window."""
    remaining: int | None = None
    """Requests left in the current window."""
    reset_seconds: float | None = None
    """Seconds until the window resets."""

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, scoped: bool = False) -> RateLimit | None:
        """The rate limit the headers state, or ``None`` when they state none of the three fields.

        ``scoped=True`` reads the ``X-RateLimit-*-Scoped`` variants (the per-customer limit of
        ``POST /v1/usage/track``) instead.

        Example::

            RateLimit.from_headers({"x-ratelimit-limit": "100", "x-ratelimit-remaining": "7"})
            # RateLimit(limit=100, remaining=7, reset_seconds=None)
        """
        suffix = "-scoped" if scoped else ""
        limit = _integer(headers.get("x-ratelimit-limit" + suffix))
        remaining = _integer(headers.get("x-ratelimit-remaining" + suffix))
        reset = _seconds(headers.get("x-ratelimit-reset" + suffix))
        if limit is None and remaining is None and reset is None:
            return None
        return cls(limit, remaining, reset)


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):  # NaN, negative, infinite
        return None
    return seconds


class RawResponse(Generic[T]):
    """A call's HTTP response: status, headers, request id and rate limit, with the usual result.

    Returned by ``billing.<resource>.with_raw_response.<method>(...)`` (``parse()`` gives the model the
    method returns) and by ``billing.request(...)`` (``parse()`` gives the decoded JSON, ``None`` for
    an empty body). The response is that of the call's final attempt. An error status still raises
    the usual exception (which carries ``headers``, ``request_id`` and, for a 429, ``rate_limit``).

    Example::

        raw = await billing.customers.with_raw_response.get("cus_1")
        print(raw.status_code, raw.request_id, raw.rate_limit)
        customer = raw.parse()            # the Customer that customers.get would return
    """

    __slots__ = ("_parsed", "headers", "rate_limit", "request_id", "status_code")

    status_code: int
    """The HTTP status of the final attempt (e.g. 200, 201, 204)."""
    headers: httpx2.Headers
    """The response headers (case-insensitive)."""
    request_id: str
    """The server's ``X-Request-Id``, else the id the SDK sent."""
    rate_limit: RateLimit | None
    """From the ``X-RateLimit-*`` headers; ``None`` when the response carries none."""

    def __init__(self, status_code: int, headers: httpx2.Headers, request_id: str, parsed: T) -> None:
        self.status_code = status_code
        self.headers = headers
        self.request_id = request_id
        self.rate_limit = RateLimit.from_headers(headers)
        self._parsed = parsed

    def parse(self) -> T:
        """The result the plain call returns: a model, ``None``, or (``billing.request``) decoded JSON."""
        return self._parsed

    def __repr__(self) -> str:  # the body (tokens, personal data) and the headers are left out
        return (
            f"<RawResponse status_code={self.status_code} request_id={self.request_id!r} "
            f"rate_limit={self.rate_limit!r}>"
        )


@attrs.define
class Capture:
    """What the requests of one ``with_raw_response`` call leave behind: the last response seen."""

    status_code: int | None = None
    headers: httpx2.Headers = attrs.field(factory=httpx2.Headers)
    request_id: str | None = None

    def record(self, status_code: int | None, headers: httpx2.Headers, request_id: str | None) -> None:
        self.status_code = status_code
        self.headers = headers
        self.request_id = request_id

    def response(self, parsed: T) -> RawResponse[T]:
        """The :class:`RawResponse` of the call that returned ``parsed``."""
        if self.status_code is None or self.request_id is None:
            # The method answered without a response (it cannot today: raw calls skip every cache).
            raise RuntimeError("this call sent no request, so it has no raw response")
        return RawResponse(self.status_code, self.headers, self.request_id, parsed)


CAPTURE: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("billingos_raw", default=None)
"""Set around one ``with_raw_response`` call; ``Requester.request`` records into it."""


def capturing() -> bool:
    """Whether the running code is inside a ``with_raw_response`` call (a cache must then be skipped)."""
    return CAPTURE.get() is not None


async def call_raw(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RawResponse[Any]:
    """``await method(*args, **kwargs)`` with a fresh capture: its result and its final response."""
    capture = Capture()
    token = CAPTURE.set(capture)
    try:
        parsed = await method(*args, **kwargs)
    finally:
        CAPTURE.reset(token)
    return capture.response(parsed)
