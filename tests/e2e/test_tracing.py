"""OpenTelemetry spans (issue 14, item 3) over loopback: both clients, both HTTP backends.

The spans are read with the OpenTelemetry SDK's ``InMemorySpanExporter``. The SDK looks its tracer up
through ``opentelemetry.trace.get_tracer_provider()`` at each call; the ``spans`` fixture makes that
return a provider of its own for the test, so the process-wide provider is never set (it can be set
only once) and the rest of the suite runs untraced.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from billingos import AsyncBillingOS, BillingOS, EntitlementCache, NotFoundError, RetryPolicy
from billingos._tracing import OPT_IN_ENV
from billingos.testing import FakeBillingOS, Fault

from ._helpers import Seeded, request_ids

pytestmark = pytest.mark.usefixtures("seeded")

CHECK = "GET /v1/usage/check"
GET_EXTERNAL = "GET /customers/external/{external_id}"
BACKENDS = ["httpx2", "aiohttp"]


class Spans:
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [s for s in self.all() if s.parent is not None and s.parent.span_id == parent.context.span_id]

    def text(self) -> str:
        """Everything a span exporter would send: names, attributes, statuses, events."""
        return repr(
            [
                (s.name, dict(s.attributes or {}), s.status.description, [e.name for e in s.events])
                for s in self.all()
            ]
        )


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spans]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.delenv(OPT_IN_ENV, raising=False)
    yield Spans(exporter)
    provider.shutdown()


@pytest.fixture(params=BACKENDS)
async def billing(
    request: pytest.FixtureRequest, fake: FakeBillingOS, url: str, policy: RetryPolicy
) -> AsyncIterator[AsyncBillingOS]:
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=policy, http_backend=request.param
    ) as client:
        yield client


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_call_is_one_span_with_a_client_span_per_attempt(
    billing: AsyncBillingOS, spans: Spans, fake: FakeBillingOS, seeded: Seeded
) -> None:
    ent = await billing.entitlements.check(seeded.customer, "api_calls")
    assert ent.has_access

    [call] = spans.named("billingos.entitlements.check")
    [attempt] = spans.children(call)
    assert call.kind == SpanKind.INTERNAL
    assert call.parent is None
    assert attempt.kind == SpanKind.CLIENT
    assert attempt.name == "GET /v1/usage/check"
    [sent_id] = request_ids(fake, CHECK)
    assert _attrs(attempt) == {
        "http.request.method": "GET",
        "url.template": "/v1/usage/check",
        "server.address": "127.0.0.1",
        "server.port": int(billing.api_url.rsplit(":", 1)[1]),
        "billingos.attempt": 1,
        "billingos.request_id": sent_id,
        "http.response.status_code": 200,
    }
    assert _attrs(call) == {
        "url.template": "/v1/usage/check",
        "billingos.request_id": sent_id,
        "http.response.status_code": 200,
        "billingos.retries": 0,
    }
    assert seeded.customer not in spans.text()


async def test_retries_are_sibling_attempt_spans_and_the_template_hides_the_id(
    billing: AsyncBillingOS, spans: Spans, fake: FakeBillingOS, seeded: Seeded
) -> None:
    fake.inject(GET_EXTERNAL, Fault.error(503), times=2)

    customer = await billing.customers.get_by_external_id(seeded.customer)

    [call] = spans.named("billingos.customers.get_by_external_id")
    attempts = sorted(spans.children(call), key=lambda s: _attrs(s)["billingos.attempt"])
    assert [s.name for s in attempts] == ["GET /customers/external/{external_id}"] * 3
    assert [_attrs(s)["http.response.status_code"] for s in attempts] == [503, 503, 200]
    assert [_attrs(s).get("http.request.resend_count") for s in attempts] == [None, 1, 2]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert _attrs(attempts[0])["error.type"] == "ServerError"
    assert _attrs(call)["billingos.retries"] == 2
    assert call.status.status_code == StatusCode.UNSET
    assert seeded.customer not in spans.text()
    assert customer.id not in spans.text()


async def test_a_failed_call_says_its_error_class_and_code_but_not_its_message(
    billing: AsyncBillingOS, spans: Spans
) -> None:
    with pytest.raises(NotFoundError):
        await billing.customers.get("cus_secret_42")

    [call] = spans.named("billingos.customers.get")
    assert call.status.status_code == StatusCode.ERROR
    assert _attrs(call)["error.type"] == "NotFoundError"
    assert _attrs(call)["http.response.status_code"] == 404
    assert call.status.description == f"NotFoundError ({_attrs(call)['billingos.error.code']})"
    assert not call.events  # no recorded exception: its message or traceback may name the customer
    assert _attrs(spans.children(call)[0])["url.template"] == "/customers/{customer_id}"
    assert "cus_secret_42" not in spans.text()


async def test_the_opt_in_adds_the_filled_url_to_attempt_spans(
    billing: AsyncBillingOS, spans: Spans, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPT_IN_ENV, "1")
    await billing.entitlements.check(seeded.customer, "api_calls")

    [attempt] = spans.named("GET /v1/usage/check")
    assert _attrs(attempt)["url.full"] == (
        f"{billing.api_url}/v1/usage/check?customer_id={seeded.customer}&feature_key=api_calls"
    )
    assert fake_key_absent(spans, billing)


def fake_key_absent(spans: Spans, billing: AsyncBillingOS) -> bool:
    return "sk_test" not in spans.text() and "Bearer" not in spans.text()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_cache_answer_is_said_on_the_span(
    backend: str, spans: Spans, fake: FakeBillingOS, url: str, policy: RetryPolicy, seeded: Seeded
) -> None:
    async with AsyncBillingOS(
        fake.secret_key,
        api_url=url,
        retry_policy=policy,
        http_backend=backend,
        entitlement_cache=EntitlementCache(ttl=60),
    ) as billing:
        await billing.entitlements.check(seeded.customer, "api_calls")  # a miss: asks BillingOS
        await billing.entitlements.check(seeded.customer, "api_calls")  # from memory
        await billing.entitlements.check(seeded.customer, "api_calls", cache=False)

    miss, hit, skipped = spans.named("billingos.entitlements.check")
    assert [_attrs(s)["billingos.cache.answered"] for s in (miss, hit, skipped)] == [False, True, False]
    assert [len(spans.children(s)) for s in (miss, hit, skipped)] == [1, 0, 1]


async def test_a_stale_answer_while_billingos_is_down_is_the_caches(
    spans: Spans, fake: FakeBillingOS, url: str, seeded: Seeded
) -> None:
    now = [0.0]
    cache = EntitlementCache(ttl=1, stale_if_error=300, clock=lambda: now[0])
    no_retries = RetryPolicy(sleep=_no_sleep)
    async with AsyncBillingOS(
        fake.secret_key, api_url=url, retry_policy=no_retries, max_retries=0, entitlement_cache=cache
    ) as billing:
        await billing.entitlements.check(seeded.customer, "api_calls")
        now[0] = 10.0
        fake.inject(CHECK, Fault.error(503))
        ent = await billing.entitlements.check(seeded.customer, "api_calls")

    assert ent.stale
    fresh, stale = spans.named("billingos.entitlements.check")
    assert _attrs(fresh)["billingos.cache.answered"] is False
    assert _attrs(stale)["billingos.cache.answered"] is True
    assert stale.status.status_code == StatusCode.UNSET  # the caller got an answer
    [failed] = spans.children(stale)
    assert _attrs(failed)["http.response.status_code"] == 503


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_blocking_client_traces_under_the_callers_span(
    backend: str, spans: Spans, fake: FakeBillingOS, url: str, seeded: Seeded
) -> None:
    tracer = trace.get_tracer_provider().get_tracer("app")
    with (
        BillingOS(
            fake.secret_key, api_url=url, http_backend=backend, entitlement_cache=EntitlementCache(ttl=60)
        ) as billing,
        tracer.start_as_current_span("handle request") as parent,
    ):
        billing.entitlements.check(seeded.customer, "api_calls")
        billing.entitlements.check(seeded.customer, "api_calls")  # answered in this thread
        billing.usage.track(seeded.customer, "api_calls", 2)

    checks = spans.named("billingos.entitlements.check")
    [track] = spans.named("billingos.usage.track")
    for span in [*checks, track]:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
    assert [_attrs(s)["billingos.cache.answered"] for s in checks] == [False, True]
    assert [s.name for s in spans.children(track)] == ["POST /v1/usage/track"]
    assert seeded.customer not in spans.text()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_customer_session_calls_are_spans_too(
    backend: str, spans: Spans, fake: FakeBillingOS, url: str, seeded: Seeded
) -> None:
    async with AsyncBillingOS(fake.secret_key, api_url=url, http_backend=backend) as billing:
        catalog = await billing.as_customer(seeded.customer).products.list()
    assert catalog.products

    [call] = spans.named("billingos.customer.products.list")
    children = sorted(spans.children(call), key=lambda s: s.name)
    assert [s.name for s in children] == ["GET /v1/products", "billingos.session_tokens.create"]
    # the session token minted for the call is a call of its own, with its own attempt
    assert [s.name for s in spans.children(children[1])] == ["POST /v1/session-tokens"]
    text = spans.text()
    assert "bos_session_" not in text
    assert seeded.customer not in text


async def test_without_a_tracer_provider_the_method_runs_undecorated(
    fake: FakeBillingOS, url: str, seeded: Seeded
) -> None:
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # the API alone: a proxy
    async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
        pending = billing.entitlements.check(seeded.customer, "api_calls")
        assert inspect.iscoroutine(pending)
        assert pending.cr_code is type(billing.entitlements).check.__wrapped__.__code__  # type: ignore[attr-defined]
        assert (await pending).has_access


async def test_the_escape_hatch_is_a_span_whose_template_hides_the_path(
    billing: AsyncBillingOS, spans: Spans, seeded: Seeded
) -> None:
    """``billing.request`` gets a call span too; which segments of the caller's own path are ids is
    unknown, so its template is ``{path}``, never the path."""
    raw = await billing.request("GET", f"/customers/external/{seeded.customer}")
    assert raw.status_code == 200

    [call] = spans.named("billingos.request")
    [attempt] = spans.children(call)
    assert attempt.name == "GET {path}"
    assert _attrs(attempt)["url.template"] == "{path}"
    assert _attrs(call)["http.response.status_code"] == 200
    assert seeded.customer not in spans.text()
