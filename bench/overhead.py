"""Scenarios 1 and 2: what the SDK costs per call on top of the raw httpx2 code a user would write instead.

Both sides run over the same in-process ``httpx2.MockTransport`` answering a canned response (no network,
no server), so the figure is the client's own work: building the request, sending it through httpx2,
decoding JSON and building the same frozen attrs model. The raw side is what a careful user would write
by hand: ``httpx2.AsyncClient`` with the auth header set once, ``json.loads``, the model built field by
field. The SDK side is the public call (``check_entitlement``, ``usage.track``, ``customers.list().page``)
with its default settings (retries on, request ids, validation).

The canned bodies and the raw calls live here; ``sync_facade.py`` and ``memory.py`` reuse them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx2

from billingos import (
    AsyncBillingOS,
    BillingAddress,
    Customer,
    Entitlement,
    FeatureType,
    Page,
    UsageRecord,
    UsageSnapshot,
)

from ._harness import Context, Goal, Row, interleave_async, median_us, per_call_async, ratios

API_URL = "https://api.billingos.test"
SECRET_KEY = "sk_test_" + "b" * 48
OVERHEAD_GOAL = Goal("<=", 1.25)

# ---------------------------------------------------------------------------------------------
# Canned responses, as the embedded server answers them (CONTRACT §5)

CHECK_BODY = (
    b'{"feature_key":"api_calls","has_access":true,"limit":1000.0,"usage":12.0,'
    b'"metadata":{"remaining":988.0,"resets_at":"2026-12-26T01:43:59.568Z","type":"usage_quota"},'
    b'"requestId":"req_eeaf7555eefacdc743aa49bb"}'
)
TRACK_BODY = (
    b'{"success":true,"feature_key":"api_calls","quantity":1,"recorded_at":"2026-11-26T01:43:59.581Z",'
    b'"usage":{"consumed_units":"13.000000","limit_units":"1000.000000","remaining_units":"987.000000",'
    b'"period_start":"2026-11-26T01:43:59.568Z","period_end":"2026-12-26T01:43:59.568Z"},'
    b'"requestId":"req_e2819a71109f2de8d4146ed6"}'
)


def _customer(i: int) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "external_id": f"user_{i}",
        "email": f"user_{i}@example.com",
        "email_verified": i % 2 == 0,
        "name": f"Customer {i}",
        "billing_address": {"street": f"{i} Main St", "city": "Springfield", "country": "US"}
        if i % 3 == 0
        else None,
        "stripe_customer_id": f"cus_{i:014d}" if i % 2 else None,
        "metadata": {"plan": "pro", "seats": i % 7},
        "created_at": "2026-11-26T01:43:59.568Z",
        "updated_at": "2026-11-26T01:43:59.568Z",
        "deleted_at": None,
    }


LIST_BODY = json.dumps(
    {
        "data": [_customer(i) for i in range(100)],
        "total": 250,
        "page": 1,
        "limit": 100,
        "total_pages": 3,
        "requestId": "req_24e469e872ce2d2f4ff024f7",
    },
    separators=(",", ":"),
).encode()

_CANNED = {
    "/v1/usage/check": (200, CHECK_BODY),
    "/v1/usage/track": (201, TRACK_BODY),
    "/customers": (200, LIST_BODY),
}


def canned(request: httpx2.Request) -> httpx2.Response:
    """The canned answer to ``request``, by path: what both sides of every comparison receive."""
    status, body = _CANNED[request.url.path]
    return httpx2.Response(
        status,
        headers={"content-type": "application/json", "x-request-id": "req_0123456789abcdef01234567"},
        content=body,
    )


def canned_transport() -> httpx2.MockTransport:
    return httpx2.MockTransport(canned)


def sdk_client() -> AsyncBillingOS:
    """An ``AsyncBillingOS`` with default settings, over the canned transport."""
    return AsyncBillingOS(
        SECRET_KEY, api_url=API_URL, http_client=httpx2.AsyncClient(transport=canned_transport())
    )


def raw_client() -> httpx2.AsyncClient:
    """The raw side: an ``httpx2.AsyncClient`` with the headers a user would set once."""
    return httpx2.AsyncClient(transport=canned_transport(), headers=RAW_HEADERS)


RAW_HEADERS = {"authorization": f"Bearer {SECRET_KEY}", "accept": "application/json"}

# ---------------------------------------------------------------------------------------------
# The raw calls: bare httpx2 + json.loads + the same attrs models, built by hand


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def entitlement_from(data: dict[str, Any]) -> Entitlement:
    meta = data.get("metadata") or {}
    kind = meta.get("type")
    return Entitlement(
        feature_key=data["feature_key"],
        has_access=data["has_access"],
        limit=_float(data.get("limit")),
        usage=_float(data.get("usage")),
        remaining=_float(meta.get("remaining")),
        resets_at=_date(meta.get("resets_at")),
        feature_type=FeatureType(kind) if kind else None,
    )


async def raw_check(client: httpx2.AsyncClient, customer_id: str, feature_key: str) -> Entitlement:
    response = await client.get(
        f"{API_URL}/v1/usage/check", params={"customer_id": customer_id, "feature_key": feature_key}
    )
    if response.status_code != 200:
        raise RuntimeError(response.status_code)
    return entitlement_from(json.loads(response.content))


async def raw_track(
    client: httpx2.AsyncClient, customer_id: str, feature_key: str, quantity: float = 1
) -> UsageRecord:
    key = str(uuid.uuid4())
    body = {
        "customer_id": customer_id,
        "feature_key": feature_key,
        "quantity": quantity,
        "idempotency_key": key,
    }
    response = await client.post(
        f"{API_URL}/v1/usage/track",
        content=json.dumps(body, separators=(",", ":")).encode(),
        headers={"content-type": "application/json"},
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(response.status_code)
    data = json.loads(response.content)
    usage = data.get("usage")
    return UsageRecord(
        feature_key=data["feature_key"],
        quantity=float(data["quantity"]),
        success=data.get("success", True),
        recorded_at=_date(data.get("recorded_at")),
        usage=None
        if usage is None
        else UsageSnapshot(
            consumed_units=float(usage["consumed_units"]),
            limit_units=_float(usage.get("limit_units")),
            remaining_units=_float(usage.get("remaining_units")),
            period_start=_date(usage.get("period_start")),
            period_end=_date(usage.get("period_end")),
        ),
        idempotency_key=key,
    )


def _customer_from(item: dict[str, Any]) -> Customer:
    address = item.get("billing_address")
    return Customer(
        id=item["id"],
        email=item.get("email"),
        external_id=item.get("external_id"),
        name=item.get("name"),
        email_verified=item.get("email_verified"),
        billing_address=None if address is None else BillingAddress(**address),
        stripe_customer_id=item.get("stripe_customer_id"),
        metadata=item.get("metadata") or {},
        created_at=_date(item.get("created_at")),
        updated_at=_date(item.get("updated_at")),
        deleted_at=_date(item.get("deleted_at")),
    )


async def raw_list_page(client: httpx2.AsyncClient, limit: int = 100, page: int = 1) -> Page[Customer]:
    response = await client.get(f"{API_URL}/customers", params={"limit": limit, "page": page})
    if response.status_code != 200:
        raise RuntimeError(response.status_code)
    data = json.loads(response.content)
    return Page(
        data=tuple(_customer_from(item) for item in data["data"]),
        page=data.get("page", page),
        limit=data.get("limit"),
        total=data.get("total"),
        total_pages=data.get("total_pages"),
    )


# ---------------------------------------------------------------------------------------------
# The comparisons


async def _compare(
    ctx: Context,
    name: str,
    sdk_call: Any,
    raw_call: Any,
    n: int,
    goal: Goal | None = OVERHEAD_GOAL,
    label: str = "SDK",
) -> Row:
    """Interleave ``n`` SDK calls and ``n`` raw calls, ``ctx.reps`` times; the row is SDK / raw."""
    times = await interleave_async(
        {"sdk": lambda: per_call_async(sdk_call, n), "raw": lambda: per_call_async(raw_call, n)}, ctx.reps
    )
    return Row.measured(
        name,
        ratios(times["sdk"], times["raw"]),
        goal=goal,
        note=f"{label} {median_us(times['sdk'])}, raw {median_us(times['raw'])} per call",
    )


async def _check_rows(ctx: Context) -> list[Row]:
    n = ctx.pick(2000, 500, 30)
    async with sdk_client() as billing, raw_client() as raw:
        sdk_ent = await billing.check_entitlement("user_42", "api_calls")
        raw_ent = await raw_check(raw, "user_42", "api_calls")
        assert sdk_ent == raw_ent, (sdk_ent, raw_ent)
        rows = [
            await _compare(
                ctx,
                "check_entitlement: SDK / raw httpx2",
                lambda: billing.check_entitlement("user_42", "api_calls"),
                lambda: raw_check(raw, "user_42", "api_calls"),
                n,
            )
        ]
        rows.append(await _tracing_row(ctx, billing, n))
    rows.append(await _openai_row(ctx, n))
    return rows


TRACING_GOAL = Goal("<=", 1.05)


async def _tracing_row(ctx: Context, billing: AsyncBillingOS, n: int) -> Row:
    """Issue 14: ``check_entitlement`` with ``opentelemetry-api`` imported but no SDK tracer provider set
    (every span would be a no-op) vs OpenTelemetry not imported at all; the SDK makes no span in either.

    Both sides use the same client; the "absent" batch hides ``opentelemetry.trace`` from ``sys.modules``
    while it runs, which is exactly what the SDK looks at."""
    import sys

    name = "tracing: opentelemetry-api without SDK / not imported"
    try:
        from opentelemetry import trace
    except ImportError as exc:
        return Row.skipped(name, f"opentelemetry-api not installed ({exc.name})")
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "a tracer provider is set"

    async def absent() -> float:
        module = sys.modules.pop("opentelemetry.trace")
        try:
            return await per_call_async(lambda: billing.check_entitlement("user_42", "api_calls"), n)
        finally:
            sys.modules["opentelemetry.trace"] = module

    async def present() -> float:
        return await per_call_async(lambda: billing.check_entitlement("user_42", "api_calls"), n)

    times = await interleave_async({"present": present, "absent": absent}, ctx.reps)
    return Row.measured(
        name,
        ratios(times["present"], times["absent"]),
        goal=TRACING_GOAL,
        note=f"API without SDK {median_us(times['present'])}, not imported {median_us(times['absent'])} per call",
    )


async def _openai_row(ctx: Context, n: int) -> Row:
    """openai-python's ``models.retrieve`` vs its own raw client (httpx2), on a canned transport."""
    name = "peer: openai models.retrieve / its raw client"
    try:
        import httpx2
        import openai
        from openai.types import Model
    except ImportError as exc:
        return Row.skipped(name, f"openai not installed ({exc.name})")

    body = b'{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}'

    def handler(request: Any) -> Any:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)

    base = "https://api.openai.test/v1"
    key = "sk-bench-" + "x" * 40
    async with (
        openai.AsyncOpenAI(
            api_key=key,
            base_url=base,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        ) as client,
        httpx2.AsyncClient(
            transport=httpx2.MockTransport(handler), headers={"authorization": f"Bearer {key}"}
        ) as raw,
    ):

        async def raw_retrieve() -> Any:
            response = await raw.get(f"{base}/models/gpt-4o")
            if response.status_code != 200:
                raise RuntimeError(response.status_code)
            return Model.model_construct(**json.loads(response.content))

        return await _compare(
            ctx, name, lambda: client.models.retrieve("gpt-4o"), raw_retrieve, n, goal=None, label="openai"
        )


async def _track_list_rows(ctx: Context) -> list[Row]:
    n_track = ctx.pick(2000, 500, 30)
    n_list = ctx.pick(150, 40, 4)
    async with sdk_client() as billing, raw_client() as raw:
        sdk_page = await billing.customers.list(limit=100).page(1)
        raw_page = await raw_list_page(raw)
        assert sdk_page == raw_page, "the two sides decode the page differently"
        sdk_record = await billing.usage.track("user_42", "api_calls", 1)
        raw_record = await raw_track(raw, "user_42", "api_calls", 1)
        assert sdk_record == attrs.evolve(raw_record, idempotency_key=sdk_record.idempotency_key)
        return [
            await _compare(
                ctx,
                "usage.track: SDK / raw httpx2",
                lambda: billing.usage.track("user_42", "api_calls", 1),
                lambda: raw_track(raw, "user_42", "api_calls", 1),
                n_track,
            ),
            await _compare(
                ctx,
                "customers.list page of 100: SDK / raw httpx2",
                lambda: billing.customers.list(limit=100).page(1),
                lambda: raw_list_page(raw),
                n_list,
            ),
        ]


def run_check(ctx: Context) -> list[Row]:
    """1. ``check_entitlement`` through ``AsyncBillingOS`` vs bare httpx2 + ``json.loads`` + ``Entitlement``
    by hand, over one canned in-process transport (goal SDK / raw ≤ 1.25); the same call with
    ``opentelemetry-api`` imported but no SDK vs not imported (goal ≤ 1.05: tracing costs nothing
    measurable); openai-python's ``models.retrieve`` vs its raw client on the same kind of transport,
    as a peer reference."""
    return asyncio.run(_check_rows(ctx))


def run_track_list(ctx: Context) -> list[Row]:
    """2. The same comparison for ``usage.track`` (a POST with a JSON body and an idempotency key) and
    for decoding a page of 100 customers (goal ≤ 1.25 each)."""
    return asyncio.run(_track_list_rows(ctx))
