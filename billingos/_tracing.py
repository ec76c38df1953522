"""OpenTelemetry spans for SDK calls (issue 14): one per call, a child per HTTP attempt.

The SDK never imports OpenTelemetry. It traces only when ``opentelemetry.trace`` has been imported
(by your set-up: ``trace.set_tracer_provider(...)``, ``opentelemetry-instrument``, a framework's
instrumentation) **and** a real tracer provider is set; otherwise every call goes straight to the
resource method, at the price of one dictionary look-up (``bench --only overhead``, the tracing rows)::

    billingos.entitlements.check            INTERNAL  the call: billingos.retries, url.template,
    │                                                 http.response.status_code, billingos.request_id,
    │                                                 billingos.cache.answered (with an EntitlementCache)
    ├── GET /v1/usage/check                 CLIENT    attempt 1: billingos.attempt=1, status, request id
    └── GET /v1/usage/check                 CLIENT    attempt 2 (a retry): http.request.resend_count=1

Customer ids, session tokens and filled paths are never in span data: the URL template stands for the
path (``/customers/{customer_id}``), errors carry their class and code but not their message, and no
exception is recorded (its message may name a customer). Setting ``BILLINGOS_TRACE_CUSTOMER_IDS=1``
adds ``url.full`` (the filled path and query, which name the customer) to each attempt span; tokens
and the secret key are never added, whatever the setting.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from ._errors import BillingOSError
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

P = ParamSpec("P")
T = TypeVar("T")

OPT_IN_ENV = "BILLINGOS_TRACE_CUSTOMER_IDS"
"""Set to ``1`` (or ``true``/``yes``) to add the filled URL (``url.full``) to attempt spans."""

_TRACE_MODULE = "opentelemetry.trace"

CALL: ContextVar[CallTrace | None] = ContextVar("billingos_call_trace", default=None)
"""The span of the SDK call running in this context, while OpenTelemetry records one."""

_tracer_of: tuple[object, Tracer] | None = None  # (provider, its tracer for billingos), reused


def active_tracer() -> Tracer | None:
    """The tracer to use now, or ``None`` (not imported, or no SDK tracer provider set): no spans."""
    trace = sys.modules.get(_TRACE_MODULE)
    if trace is None:
        return None
    return _tracer(trace)


def _tracer(trace: Any) -> Tracer | None:
    global _tracer_of
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None  # the API alone: every span would be a no-op, so make none
    cached = _tracer_of
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer: Tracer = provider.get_tracer("billingos", __version__)
    _tracer_of = (provider, tracer)
    return tracer


def traced(
    operation: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Give every call of an async SDK method a span named ``billingos.<operation>``.

    Without a recording tracer the method's own coroutine is returned untouched (no extra frame).

    Example::

        class AsyncCustomers(Resource):
            @traced("customers.get")
            async def get(self, customer_id: str) -> Customer: ...
    """
    name = "billingos." + operation

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
            if _TRACE_MODULE not in sys.modules:  # the whole cost when OpenTelemetry is not in use
                return fn(*args, **kwargs)
            tracer = _tracer(sys.modules[_TRACE_MODULE])
            if tracer is None:
                return fn(*args, **kwargs)
            # The caller's context, taken now: the blocking client creates this coroutine in the calling
            # thread and runs it on its loop thread, where the caller's current span is not current.
            context = sys.modules["opentelemetry.context"].get_current()
            return _in_span(tracer, name, context, fn(*args, **kwargs))

        return call

    return decorate


async def _in_span(tracer: Tracer, name: str, context: Any, work: Awaitable[T]) -> T:
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(
        name, context=context, kind=SpanKind.INTERNAL, record_exception=False, set_status_on_exception=False
    ) as span:
        record = CallTrace(span, tracer)
        token = CALL.set(record)
        try:
            return await work
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            CALL.reset(token)
            record.close()


def local_cache_answer(operation: str) -> None:
    """A span for a call answered without running its coroutine (the blocking client's cache hit).

    Example::

        _tracing.local_cache_answer("entitlements.check")
    """
    tracer = active_tracer()
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span("billingos." + operation, kind=SpanKind.INTERNAL) as span:
        span.set_attribute("billingos.cache.answered", True)
        span.set_attribute("billingos.retries", 0)


def note_cache(answered_from_memory: bool, stale_or_policy: bool = False) -> None:
    """Say on the current call's span whether the entitlement cache answered it.

    ``answered_from_memory``: a fresh hit. ``stale_or_policy``: BillingOS failed and the cache gave a
    stale answer or its ``on_unavailable`` verdict. A call that sent no request of its own (it joined
    another caller's) was answered by the cache too.

    Example::

        _tracing.note_cache(hit is not None)
    """
    record = CALL.get()
    if record is not None:
        answered = answered_from_memory or stale_or_policy or record.attempts == 0
        record.span.set_attribute("billingos.cache.answered", answered)


def _failed(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import StatusCode

    kind = type(exc).__name__
    span.set_attribute("error.type", kind)
    code = exc.code if isinstance(exc, BillingOSError) else None
    if code:
        span.set_attribute("billingos.error.code", code)
    if isinstance(exc, BillingOSError) and exc.status_code is not None:
        span.set_attribute("http.response.status_code", exc.status_code)
    # Class and code only: an error's message may quote a path or an argument that names a customer.
    span.set_status(StatusCode.ERROR, f"{kind} ({code})" if code else kind)


class CallTrace:
    """The span of one SDK call and what its attempts report to it."""

    __slots__ = ("attempts", "requests", "span", "tracer")

    def __init__(self, span: Span, tracer: Tracer) -> None:
        self.span = span
        self.tracer = tracer
        self.attempts = 0
        self.requests = 0

    def close(self) -> None:
        self.span.set_attribute("billingos.retries", self.attempts - self.requests)

    async def attempt(
        self, work: Awaitable[T], method: str, path: str, url: str, retry_number: int, request_id: str
    ) -> T:
        """Await ``work`` (one HTTP attempt) in a CLIENT span, a child of the call's span."""
        from opentelemetry.trace import SpanKind

        self.attempts += 1
        if retry_number == 0:
            self.requests += 1
        template = getattr(path, "template", path)
        parts = urlsplit(url)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.template": template,
            "server.address": parts.hostname or "",
            "billingos.attempt": retry_number + 1,
            "billingos.request_id": request_id,
        }
        if parts.port is not None:
            attributes["server.port"] = parts.port
        if retry_number:
            attributes["http.request.resend_count"] = retry_number
        if _opted_in():
            attributes["url.full"] = url
        call_span = self.span
        call_span.set_attribute("url.template", template)
        call_span.set_attribute("billingos.request_id", request_id)
        with self.tracer.start_as_current_span(
            f"{method} {template}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                reply = await work
            except BaseException as exc:
                _failed(span, exc)
                raise
            status = getattr(reply, "status_code", None)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                call_span.set_attribute("http.response.status_code", status)
            return reply


def _opted_in() -> bool:
    return os.environ.get(OPT_IN_ENV, "").strip().lower() in ("1", "true", "yes")


__all__ = ["CALL", "OPT_IN_ENV", "CallTrace", "active_tracer", "local_cache_answer", "note_cache", "traced"]
