"""Every exception the SDK raises.

::

    BillingOSError                      anything the SDK raises on purpose
    ├── ValidationError                 400/422, or bad input caught before sending (status_code None)
    │   └── QuotaExceededError          400 "quota_exceeded": the track would pass the plan's limit
    ├── AuthenticationError             401: missing, unknown or revoked secret key or session token
    ├── AuthorizationError              403: the key may not do this
    ├── NotFoundError                   404
    ├── ConflictError                   409: e.g. a customer's email or external id is taken
    ├── RateLimitError                  429: ``retry_after`` says when to try again, ``rate_limit`` the window
    ├── ServerError                     5xx (``status_code`` keeps the real status)
    ├── NetworkError                    no response: DNS, refused, reset, TLS, ...
    │   └── RequestTimeoutError         a connect/read/write/pool timeout
    └── ResponseDecodeError             a 2xx whose body is not the JSON the contract promises

Every exception carries the same attributes (``status_code``, ``code``, ``message``, ``details``,
``request_id``, ``headers``); ``str(exc)`` shows status, code, message and request id. The secret key
never appears in any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2

from ._response import RateLimit

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "BillingOSError",
    "ConflictError",
    "NetworkError",
    "NotFoundError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ServerError",
    "ValidationError",
]

_EMPTY_HEADERS = httpx2.Headers()


class BillingOSError(Exception):
    """Base class of every error the SDK raises.

    Attributes:
        message: what went wrong, in the server's words when it said any.
        status_code: the HTTP status, or ``None`` when no response was received or the
            SDK refused the call before sending it.
        code: the server's error code (``"RES_NOT_FOUND"``), or the SDK's own code for errors
            without a server body (``"network_error"``, ``"timeout"``, ``"decode_error"``,
            ``"invalid_argument"``, ``"client_closed"``, ``"http_<status>"``).
        details: the server's ``error.details`` object (e.g. ``{"fieldErrors": {...}}``), else ``{}``.
        request_id: the server's request id (body, then ``x-request-id`` header), else the id the
            SDK sent, so a support ticket can always quote one.
        headers: the response headers (empty when there was no response).

    Example::

        try:
            await billing.customers.get("cus_123")
        except billingos.NotFoundError as exc:
            log.info("no such customer (request %s)", exc.request_id)
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        headers: httpx2.Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.details: Mapping[str, Any] = details if details is not None else {}
        self.request_id = request_id
        self.headers = headers if headers is not None else _EMPTY_HEADERS

    def __str__(self) -> str:
        head = " ".join(str(part) for part in (self.status_code, self.code) if part is not None)
        text = f"[{head}] {self.message}" if head else self.message
        return f"{text} (request_id={self.request_id})" if self.request_id else text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code!r}, "
            f"code={self.code!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep every attribute through pickling (multiprocessing, celery result backends).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[BillingOSError], message: str, state: dict[str, Any]) -> BillingOSError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


class ValidationError(BillingOSError):
    """The request was refused as invalid: by the server (400/422) or by the SDK before sending.

    Server validation failures put per-field messages in ``details["fieldErrors"]``.
    """


class QuotaExceededError(ValidationError):
    """A usage track was refused because it would take the customer past the plan's limit."""


class AuthenticationError(BillingOSError):
    """401: the secret key is missing, unknown or revoked, or a customer session token is refused.

    On the public BillingOS backend, ``/customers*`` and ``/subscriptions*`` accept only dashboard
    sessions: a secret key gets 401 there, and the message then points to ``billing.as_customer(...)``.
    """


class AuthorizationError(BillingOSError):
    """403: the secret key is valid but may not perform this operation."""


class NotFoundError(BillingOSError):
    """404: the resource (customer, subscription, token, ...) does not exist."""


class ConflictError(BillingOSError):
    """409: the write conflicts with existing data (e.g. the email is already taken)."""


class RateLimitError(BillingOSError):
    """429: too many requests. The request was not executed.

    Attributes:
        retry_after: seconds the server asked to wait, or ``None`` when it did not say.
        rate_limit: the :class:`RateLimit` of the ``X-RateLimit-*`` headers (``limit``,
            ``remaining``, ``reset_seconds``), or ``None`` when the response carried none.

    Example::

        try:
            await billing.customers.get("cus_1")
        except billingos.RateLimitError as exc:
            print(exc.retry_after, exc.rate_limit)   # e.g. 12.0 RateLimit(limit=100, remaining=0, ...)
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        rate_limit: RateLimit | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.rate_limit = rate_limit


class ServerError(BillingOSError):
    """5xx: BillingOS (or a proxy in front of it) failed. ``status_code`` keeps the real status."""


class NetworkError(BillingOSError):
    """No response was received: the connection failed, was reset or dropped."""


class RequestTimeoutError(NetworkError):
    """The request timed out (connect, read, write, or waiting for a pooled connection)."""


class ResponseDecodeError(BillingOSError):
    """A successful response whose body is not the JSON the contract promises."""
