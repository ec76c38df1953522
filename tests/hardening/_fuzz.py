"""Shared pieces of the hardening fuzz tests: the hypothesis profile, hostile-value strategies, a canned
transport that records what the SDK sent, the table of every endpoint, and a deep type check of models.

The profile is registered here and used as the ``parent`` of each fuzz test's settings, never loaded
globally, so other hypothesis tests in the same run keep their own settings. It is deterministic
(``derandomize=True``, or a fixed seed per endpoint; no example database): CI runs the same examples
every time. Set ``BILLINGOS_FUZZ_SCALE=10`` to run ten times as many examples locally.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from datetime import datetime
from enum import Enum
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import attrs
import httpx2
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st

import billingos
from billingos import AsyncBillingOS, RetryPolicy

from .._factories import (
    check_json,
    customer_json,
    error_body,
    make_token,
    metrics_json,
    page_json,
    subscription_json,
    track_json,
)

# -- the profile -------------------------------------------------------------------------------

PROFILE = "billingos-fuzz"
settings.register_profile(
    PROFILE,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    # One client per test serves every example (its transport is reset per example); bodies of
    # up to 100 kB (deep nesting) are generated on purpose.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
F = TypeVar("F", bound=Callable[..., Any])
_SCALE = max(1, int(os.environ.get("BILLINGOS_FUZZ_SCALE", "1") or 1))


def fuzz_settings(max_examples: int, name: str | None = None) -> Callable[[F], F]:
    """The profile with ``max_examples`` (times ``BILLINGOS_FUZZ_SCALE``).

    With ``name``, the examples come from a fixed seed derived from it instead of from the test's
    source, so the cases of one parametrized test (one inner function) each get their own examples.
    """
    profile = settings(settings.get_profile(PROFILE), max_examples=max_examples * _SCALE)
    if name is None:
        return profile
    pinned = settings(profile, derandomize=False)

    def decorate(test: F) -> F:
        return seed(zlib.crc32(name.encode()))(pinned(test))

    return decorate


# -- the client under test ---------------------------------------------------------------------

SECRET = "sk_test_" + "Qz7Lk2Vb9Xw4Rt6Yp1Nm8Hc3Jd5Fg0Sa7Ue2Wi4O"
"""A distinctive key: its secret part (after ``sk_test_``) occurs nowhere else."""
BASE_URL = "https://fuzz.billingos.test"


async def _no_sleep(_: float) -> None:
    return None


NO_SLEEP = RetryPolicy(sleep=_no_sleep)


@attrs.frozen
class Reply:
    """One canned HTTP response (built fresh for every request: a response is read only once)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


Answer = Reply | Exception
T = TypeVar("T")


class Canned:
    """A transport handler answering from a script of responses (the last one repeats), recording requests."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.requests: list[httpx2.Request] = []
        self.last: Answer | None = None

    def reset(self, *script: Answer) -> None:
        self.script = list(script)
        self.requests = []
        self.last = None

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        index = min(len(self.requests), len(self.script) - 1)
        self.requests.append(request)
        answer = self.script[index]
        self.last = answer
        if isinstance(answer, Exception):
            raise answer
        # A stream, not content=: httpx decodes a content-encoding when the SDK reads the body, not here.
        return httpx2.Response(
            answer.status,
            headers=list(answer.headers),
            stream=httpx2.ByteStream(answer.body),
            request=request,
        )


@contextmanager
def canned_http() -> Iterator[tuple[Canned, httpx2.AsyncClient]]:
    canned = Canned()
    yield canned, httpx2.AsyncClient(transport=httpx2.MockTransport(canned))


def make_client(http: httpx2.AsyncClient, **kwargs: Any) -> AsyncBillingOS:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("retry_policy", NO_SLEEP)
    return AsyncBillingOS(SECRET, api_url=BASE_URL, http_client=http, **kwargs)


Run = Callable[[Awaitable[T]], T]


@contextmanager
def fuzz_client(**kwargs: Any) -> Iterator[tuple[Run[Any], Canned, AsyncBillingOS]]:
    """A client on a canned transport, and ``run`` to drive its coroutines on a private event loop.

    The fuzz tests are plain functions that ``run`` each call: hypothesis inside pytest-asyncio's
    wrapper reported impossible "inconsistent data generation" for one parametrized case.
    """
    loop = asyncio.new_event_loop()
    try:
        with canned_http() as (canned, http):
            client = make_client(http, **kwargs)
            try:
                yield loop.run_until_complete, canned, client
            finally:
                loop.run_until_complete(client.aclose())
                loop.run_until_complete(http.aclose())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# -- every endpoint ----------------------------------------------------------------------------

MAX_ITEMS = 7
"""List iteration stops after this many items: a hostile server can declare a billion pages."""


async def _collect(iterator: Any) -> list[Any]:
    items: list[Any] = []
    async with aclosing(iterator.__aiter__()) as it:
        async for item in it:
            items.append(item)
            if len(items) >= MAX_ITEMS:
                break
    return items


async def _collect_pages(paginator: Any) -> list[Any]:
    pages: list[Any] = []
    async with aclosing(paginator.pages()) as it:
        async for page in it:
            pages.append(page)
            if len(pages) >= 3:
                break
    return pages


@attrs.frozen(repr=False)
class Endpoint:
    """One public call: how to make it with valid arguments, what it returns, a valid answer."""

    def __repr__(self) -> str:  # hypothesis prints it with every failing example: keep it short
        return f"<Endpoint {self.name}>"

    name: str
    call: Callable[[AsyncBillingOS], Awaitable[Any]]
    returns: Any
    """The type of the result (``None`` for calls that return nothing)."""
    ok_status: int
    ok_body: Any
    """A valid JSON answer (``None``: an empty body)."""
    covers: tuple[str, ...]
    """The public methods (``resource.method``) this call goes through."""
    weight: float = 1.0
    """Share of the examples: a shortcut or a variant of another row runs the same code, so fewer."""


TOKEN = make_token()
_CUSTOMER_PAGE = page_json([customer_json(), customer_json(id="c2")], total=2)
_SUBSCRIPTION_PAGE = page_json([subscription_json(), subscription_json(id="sub_2")], total=2)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "session_tokens.create",
        lambda b: b.session_tokens.create("user_1", expires_in=900, metadata={"a": 1}),
        billingos.SessionToken,
        201,
        {"sessionToken": TOKEN, "expiresAt": {}, "requestId": "req_" + "0" * 24},
        ("session_tokens.create",),
    ),
    Endpoint(
        "create_session_token",
        lambda b: b.create_session_token("user_1"),
        billingos.SessionToken,
        201,
        {"sessionToken": TOKEN, "expiresAt": {}},
        ("AsyncBillingOS.create_session_token",),
        weight=0.25,
    ),
    Endpoint(
        "session_tokens.revoke(id)",
        lambda b: b.session_tokens.revoke("tok_" + "a" * 32),
        None,
        200,
        {"message": "Session token revoked successfully"},
        ("session_tokens.revoke",),
    ),
    Endpoint(
        "session_tokens.revoke(token)",
        lambda b: b.session_tokens.revoke(TOKEN),
        None,
        200,
        {"message": "Session token revoked successfully"},
        ("session_tokens.revoke",),
        weight=0.25,
    ),
    Endpoint(
        "entitlements.check",
        lambda b: b.entitlements.check("user_1", "api_calls"),
        billingos.Entitlement,
        200,
        check_json(),
        ("entitlements.check",),
    ),
    Endpoint(
        "entitlements.prefetch",
        # Up to three requests (mint, grant list, metrics): one body that each of them reads.
        lambda b: b.entitlements.prefetch("user_1"),
        Mapping[str, billingos.Entitlement],
        200,
        {
            **metrics_json(),
            "sessionToken": TOKEN,
            "expiresAt": {},
            "entitlements": [
                {"feature_key": "api_calls", "feature_type": "usage_quota", "subscription_status": "active"},
                {"feature_key": "sso", "feature_type": "boolean_flag", "subscription_status": "trialing"},
            ],
        },
        ("entitlements.prefetch",),
    ),
    Endpoint(
        "check_entitlement",
        lambda b: b.check_entitlement("user_1", "api_calls", cache=False),
        billingos.Entitlement,
        200,
        check_json(),
        ("AsyncBillingOS.check_entitlement",),
        weight=0.25,
    ),
    Endpoint(
        "usage.track",
        lambda b: b.usage.track("user_1", "api_calls", 2.5, metadata={"k": [1, None]}),
        billingos.UsageRecord,
        201,
        track_json(),
        ("usage.track",),
    ),
    Endpoint(
        "track_usage",
        lambda b: b.track_usage("user_1", "api_calls", idempotency_key="k1"),
        billingos.UsageRecord,
        201,
        track_json(),
        ("AsyncBillingOS.track_usage",),
        weight=0.25,
    ),
    Endpoint(
        "usage.metrics",
        lambda b: b.usage.metrics("user_1"),
        billingos.UsageMetrics,
        200,
        metrics_json(),
        ("usage.metrics",),
    ),
    Endpoint(
        "usage.metrics(feature)",
        lambda b: b.usage.metrics("user_1", "api_calls"),
        billingos.UsageMetrics,
        200,
        metrics_json(),
        ("usage.metrics",),
        weight=0.25,
    ),
    Endpoint(
        "customers.create",
        lambda b: b.customers.create(
            "ada@example.com", external_id="user_1", name="Ada", billing_address={"country": "FR"}
        ),
        billingos.Customer,
        201,
        customer_json(),
        ("customers.create",),
    ),
    Endpoint(
        "customers.get",
        lambda b: b.customers.get("c1"),
        billingos.Customer,
        200,
        customer_json(),
        ("customers.get",),
    ),
    Endpoint(
        "customers.get_by_external_id",
        lambda b: b.customers.get_by_external_id("user_1"),
        billingos.Customer,
        200,
        customer_json(),
        ("customers.get_by_external_id",),
    ),
    Endpoint(
        "customers.update",
        lambda b: b.customers.update("c1", name="Ada L.", metadata={"plan": None}),
        billingos.Customer,
        200,
        customer_json(),
        ("customers.update",),
    ),
    Endpoint(
        "customers.delete",
        lambda b: b.customers.delete("c1"),
        None,
        204,
        None,
        ("customers.delete",),
    ),
    Endpoint(
        "customers.list (async for)",
        lambda b: _collect(b.customers.list(limit=2, sort_by="email")),
        list[billingos.Customer],
        200,
        _CUSTOMER_PAGE,
        ("customers.list", "AsyncPaginator.__aiter__"),
    ),
    Endpoint(
        "customers.list.page",
        lambda b: b.customers.list(email="ada@example.com").page(2),
        billingos.Page[billingos.Customer],
        200,
        _CUSTOMER_PAGE,
        ("customers.list", "AsyncPaginator.page"),
    ),
    Endpoint(
        "customers.list.pages",
        lambda b: _collect_pages(b.customers.list()),
        list[billingos.Page[billingos.Customer]],
        200,
        _CUSTOMER_PAGE,
        ("customers.list", "AsyncPaginator.pages"),
    ),
    Endpoint(
        "subscriptions.create",
        lambda b: b.subscriptions.create("c1", "price_1", metadata={"a": "b"}),
        billingos.Subscription,
        201,
        subscription_json(),
        ("subscriptions.create",),
    ),
    Endpoint(
        "subscriptions.get",
        lambda b: b.subscriptions.get("sub_1"),
        billingos.Subscription,
        200,
        subscription_json(),
        ("subscriptions.get",),
    ),
    Endpoint(
        "subscriptions.list (async for)",
        lambda b: _collect(b.subscriptions.list(customer_id="c1")),
        list[billingos.Subscription],
        200,
        _SUBSCRIPTION_PAGE,
        ("subscriptions.list", "AsyncPaginator.__aiter__"),
    ),
    Endpoint(
        "subscriptions.list.page",
        lambda b: b.subscriptions.list().page(1),
        billingos.Page[billingos.Subscription],
        200,
        [subscription_json()],
        ("subscriptions.list", "AsyncPaginator.page"),
    ),
    Endpoint(
        "subscriptions.update",
        lambda b: b.subscriptions.update("sub_1", cancel_at_period_end=True),
        billingos.Subscription,
        200,
        subscription_json(),
        ("subscriptions.update",),
    ),
    Endpoint(
        "subscriptions.cancel",
        lambda b: b.subscriptions.cancel("sub_1", at_period_end=False),
        billingos.Subscription,
        201,
        subscription_json(),
        ("subscriptions.cancel",),
    ),
    Endpoint(
        "subscriptions.reactivate",
        lambda b: b.subscriptions.reactivate("sub_1"),
        billingos.Subscription,
        201,
        subscription_json(),
        ("subscriptions.reactivate",),
    ),
)


def public_methods() -> set[str]:
    """Every public method of the async client's resources, its shortcuts and the paginator."""
    from billingos._resources import _base

    names: set[str] = set()
    with canned_http() as (_, http):
        client = make_client(http)
    for resource in ("session_tokens", "entitlements", "usage", "customers", "subscriptions"):
        obj = getattr(client, resource)
        names |= {
            f"{resource}.{name}"
            for name in dir(type(obj))
            if not name.startswith("_") and callable(getattr(obj, name))
        }
    shortcuts = {name for name, value in vars(AsyncBillingOS).items() if type(value).__name__ == "_Shortcut"}
    names |= {f"AsyncBillingOS.{name}" for name in shortcuts}
    paginator = _base.AsyncPaginator
    names |= {
        f"AsyncPaginator.{name}"
        for name in dir(paginator)
        if (not name.startswith("_") or name == "__aiter__") and callable(getattr(paginator, name))
    }
    return names


# -- a deep type check of what the SDK returned -----------------------------------------------


def assert_well_typed(value: Any, tp: Any, where: str = "$", bound: Mapping[Any, Any] | None = None) -> None:
    """``value`` is exactly what ``tp`` promises, all the way down (attrs models, generics, unions)."""
    bound = bound or {}
    if isinstance(tp, TypeVar):
        tp = bound[tp]
    if tp is Any:
        return
    if tp is None or tp is type(None):
        assert value is None, f"{where}: expected None, got {value!r}"
        return
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                assert_well_typed(value, arg, where, bound)
            except AssertionError as exc:
                errors.append(str(exc))
            else:
                return
        raise AssertionError(f"{where}: {value!r} matches no member of {tp}: {errors}")
    cls = origin or tp
    if attrs.has(cls):
        assert type(value) is cls, f"{where}: expected {cls.__name__}, got {type(value).__name__}"
        params = getattr(cls, "__parameters__", ())
        inner = {**bound, **dict(zip(params, get_args(tp), strict=False))}
        hints = get_type_hints(cls)
        for field in attrs.fields(cls):
            assert_well_typed(getattr(value, field.name), hints[field.name], f"{where}.{field.name}", inner)
        return
    if cls in (tuple, list):
        assert type(value) is cls, f"{where}: expected {cls.__name__}, got {type(value).__name__}"
        args = get_args(tp)
        item = args[0] if args else Any
        for i, element in enumerate(value):
            assert_well_typed(element, item, f"{where}[{i}]", bound)
        return
    if cls is Mapping or cls is dict:
        assert isinstance(value, Mapping), f"{where}: expected a mapping, got {type(value).__name__}"
        assert all(isinstance(k, str) for k in value), f"{where}: non-str key in {value!r}"
        return
    if cls is bool:
        assert type(value) is bool, f"{where}: expected bool, got {value!r}"
    elif cls is int:
        assert type(value) is int, f"{where}: expected int, got {value!r}"
    elif cls is float:
        assert type(value) is float, f"{where}: expected a float, got {value!r}"
        assert math.isfinite(value), f"{where}: expected a finite float, got {value!r}"
    elif cls is str:
        assert isinstance(value, str), f"{where}: expected str, got {value!r}"
    elif cls is datetime:
        assert isinstance(value, datetime), f"{where}: expected datetime, got {value!r}"
        assert value.tzinfo is not None, f"{where}: naive datetime {value!r}"
    elif isinstance(cls, type) and issubclass(cls, Enum):
        assert isinstance(value, cls), f"{where}: expected {cls.__name__}, got {value!r}"
        assert isinstance(value.value, str)
    else:
        raise AssertionError(f"{where}: no check for {tp!r}")


# -- hostile values ----------------------------------------------------------------------------

WIRE_KEYS = (
    "id",
    "email",
    "external_id",
    "name",
    "metadata",
    "data",
    "page",
    "limit",
    "total",
    "total_pages",
    "sessionToken",
    "expiresAt",
    "allowedOperations",
    "feature_key",
    "has_access",
    "reason",
    "usage",
    "remaining",
    "resets_at",
    "type",
    "success",
    "quantity",
    "recorded_at",
    "consumed_units",
    "limit_units",
    "remaining_units",
    "period_start",
    "period_end",
    "metrics",
    "customer_id",
    "consumed",
    "percentage_used",
    "resets_in_days",
    "status",
    "amount",
    "current_period_end",
    "cancel_at_period_end",
    "billing_address",
    "country",
    "error",
    "code",
    "message",
    "details",
    "requestId",
    "statusCode",
    "stale",
    "idempotency_key",
    "created_at",
    "email_verified",
)

HUGE_NUMBER_TEXTS = (
    "1" + "0" * 400,
    "9" * 5000,
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "123456789012345678901234567890.5",
)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "{}",
            "null",
            "1000.000000",
            "-1",
            "NaN",
            "Infinity",
            "1e400",
            "2026-02-27T10:00:00Z",
            "2026-13-45T99:99:99Z",
            "9999-12-31T23:59:59.999999+14:00",
            "active",
            "usage_quota",
            "quota_exceeded",
            "bos_session_x.y",
            "\x00",
            "\ud800",
        ]
    ),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(WIRE_KEYS), st.text(max_size=6)), children, max_size=5),
    ),
    max_leaves=16,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with some keys dropped, values replaced by any JSON, and extra keys added."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            action = draw(st.sampled_from(["keep"] * 12 + ["recurse", "recurse", "drop", "replace", "null"]))
            if action == "keep":
                result[key] = item
            elif action == "recurse":
                result[key] = draw(mutated(item, depth + 1))
            elif action == "replace":
                result[key] = draw(json_values)
            elif action == "null":
                result[key] = None
        if draw(st.booleans()):
            result[draw(st.sampled_from(WIRE_KEYS))] = draw(json_values)
        return result
    if isinstance(value, list):
        items = [draw(mutated(item, depth + 1)) for item in value]
        if draw(st.booleans()):
            items.append(draw(json_values))
        return items
    return draw(st.one_of(st.just(value), json_values))


def encode(value: Any) -> bytes:
    """JSON text, NaN and Infinity tokens included (Python's reader accepts them, so the SDK must cope)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def deep(n: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * n + b"]" * n
    if kind == "open":
        return b"[" * n
    return b'{"a":' * n + b"1" + b"}" * n


@st.composite
def bodies(draw: st.DrawFn, valid: Any) -> bytes:
    """A response body: the valid one, mutated, any JSON, or bytes that are no JSON at all."""
    text = encode(valid) if valid is not None else b""
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "mutated",
                "mutated",
                "mutated",
                "mutated",
                "json",
                "bytes",
                "html",
                "empty",
                "truncated",
                "encoding",
                "deep",
                "deep-field",
                "huge-number",
                "top-level",
            ]
        )
    )
    if kind == "valid":
        return text
    if kind == "mutated":
        return encode(draw(mutated(valid)))
    if kind == "json":
        return encode(draw(json_values))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "html":
        return b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"\r\n", b"\x00"]))
    if kind == "truncated":
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if kind == "encoding":
        how = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "bom", "invalid"]))
        plain = text.decode("utf-8", "surrogatepass") if text else '{"id": "é"}'
        if how == "bom":
            return b"\xef\xbb\xbf" + plain.encode()
        if how == "invalid":
            return plain.encode()[:1] + b"\xff\xfe\xc3(" + plain.encode()[1:]
        return plain.encode(how, "replace")
    if kind == "deep":
        return deep(
            draw(st.sampled_from([50, 999, 1000, 3000, 100_000])),
            draw(st.sampled_from(["list", "dict", "open"])),
        )
    if kind == "deep-field" and isinstance(valid, dict) and valid:
        key = draw(st.sampled_from(sorted(valid)))
        nested = deep(draw(st.sampled_from([900, 5000])), "list").decode()
        return text.replace(
            json.dumps(key).encode() + b":", json.dumps(key).encode() + b":" + nested.encode() + b',"_":', 1
        )
    if kind == "huge-number" and isinstance(valid, dict) and valid:
        key = draw(st.sampled_from(sorted(valid)))
        number = draw(st.sampled_from(HUGE_NUMBER_TEXTS))
        rest = {k: v for k, v in valid.items() if k != key}
        return (
            encode(rest)[:-1]
            + (b", " if rest else b"")
            + json.dumps(key).encode()
            + b": "
            + number.encode()
            + b"}"
        )
    top = draw(
        st.one_of(
            st.lists(json_values, max_size=3), st.text(max_size=10), st.floats(), st.integers(), st.none()
        )
    )
    return encode(top)


OK_STATUSES = (200, 201, 202, 203, 204, 206, 226, 299)
ERROR_STATUSES = (
    300,
    301,
    302,
    304,
    307,
    308,
    399,
    400,
    401,
    402,
    403,
    404,
    405,
    406,
    408,
    409,
    410,
    411,
    413,
    415,
    418,
    422,
    425,
    429,
    431,
    451,
    499,
    500,
    501,
    502,
    503,
    504,
    505,
    507,
    520,
    599,
    600,
    999,
)

HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"0",
            b"1",
            b"-5",
            b"1.5",
            b"1e999",
            b"nan",
            b"inf",
            b"-inf",
            b"99999999999999999999",
            b"Wed, 21 Oct 2015 07:28:00 GMT",
            b"Mon, 01 Jan 0001 00:00:00 -0000",
            b"Fri, 31 Dec 9999 23:59:59 GMT",
            b"Sat, 99 Foo 2026 99:99:99 GMT",
            b"\xff\xfe",
            b"\xe2\x82\xac",
            b"text/html",
        ]
    ),
    st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
CONTENT_TYPES = st.sampled_from(
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/json; charset=utf-16",
        b"application/json; charset=bogus",
        b"text/html; charset=iso-8859-1",
        b"text/plain",
        b"application/xml",
        b"multipart/form-data; boundary=x",
        b"application/problem+json",
        b"",
        b"\xff",
    ]
)
CONTENT_ENCODINGS = st.sampled_from(
    [b"identity", b"gzip", b"deflate", b"br", b"zstd", b"x-garbage", b"gzip, gzip"]
)


@st.composite
def headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    result: list[tuple[bytes, bytes]] = []
    if draw(st.booleans()):
        result.append((b"content-type", draw(CONTENT_TYPES)))
    if draw(st.booleans()):
        result.append((b"retry-after", draw(HEADER_VALUES)))
    if draw(st.booleans()):
        result.append((b"x-request-id", draw(HEADER_VALUES)))
    if draw(st.integers(0, 9)) == 0:
        result.append((b"content-encoding", draw(CONTENT_ENCODINGS)))
    return result


TRANSPORT_ERRORS = st.sampled_from(
    [
        httpx2.ConnectError("refused"),
        httpx2.ConnectTimeout("connect"),
        httpx2.ReadTimeout("read"),
        httpx2.WriteTimeout("write"),
        httpx2.PoolTimeout("pool"),
        httpx2.ReadError("reset"),
        httpx2.WriteError("broken pipe"),
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
        httpx2.LocalProtocolError("bad"),
        httpx2.ProxyError("proxy"),
        httpx2.UnsupportedProtocol("gopher"),
        httpx2.DecodingError("bad gzip"),
        httpx2.NetworkError(""),
        httpx2.TimeoutException(""),
    ]
)


@st.composite
def answers(draw: st.DrawFn, endpoint: Endpoint) -> list[Answer]:
    """One to three answers in a row (a retry gets the next): responses of any status, or transport errors."""
    script: list[Answer] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "error", "error", "transport"]))
        if kind == "transport":
            script.append(draw(TRANSPORT_ERRORS))
            continue
        if kind == "ok":
            status = draw(st.one_of(st.just(endpoint.ok_status), st.sampled_from(OK_STATUSES)))
            body = draw(bodies(endpoint.ok_body))
        else:
            status = draw(st.one_of(st.sampled_from(ERROR_STATUSES), st.integers(300, 999)))
            envelope = error_body(
                status, "RES_NOT_FOUND", draw(st.sampled_from(["Customer not found", "quota_exceeded", "x"]))
            )
            body = draw(bodies(envelope))
        script.append(Reply(status, tuple(draw(headers())), body))
    return script


# -- hostile client-side inputs ----------------------------------------------------------------


class Unserializable:
    def __repr__(self) -> str:
        return "<Unserializable>"


def _circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


def _deep_dict(n: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(n):
        node["a"] = {}
        node = node["a"]
    return root


HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(
        alphabet=st.sampled_from(
            list("./\\%?#;&=+ \t\r\n\x00\x7f\u2024\u2215\uff0e\uff0f\u202e\ufeff\ud800\udfffé日")
        ),
        max_size=12,
    ),
    st.sampled_from(
        [
            "",
            " ",
            "\t\n",
            ".",
            "..",
            "../x",
            "%2e%2e",
            "%2F",
            "/",
            "\\",
            "?x=1",
            "#frag",
            ";x",
            "\x00",
            "a\r\nX-Injected: 1",
            "\uff0e\uff0e",
            "\u2215",
            "\xc0\xae",
            "%c0%ae%c0%ae/",
            "%252e%252e%252f",
            "x" * 300,
            "x" * 70_000,
            "user_1",
            "tok_" + "a" * 32,
            "bos_session_",
            "bos_session_x.y",
        ]
    ),
)
"""Strings a caller might pass as an id, a key, an email or a name."""

ANY_VALUE = st.one_of(
    HOSTILE_TEXT,
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.text(max_size=3)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(Unserializable),
    st.builds(object),
    st.sampled_from([{1, 2}, frozenset(), b"", bytearray(b"x"), 1j, Ellipsis, NotImplemented]),
)
"""Any Python value at all, of any type."""

METADATA_VALUES = st.recursive(
    st.one_of(json_leaves, st.builds(Unserializable), st.sampled_from([{1, 2}, b"x", 1j])),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.none()), children, max_size=3),
    ),
    max_leaves=8,
)
METADATA = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=6), METADATA_VALUES, max_size=4),
    st.builds(_circular),
    st.sampled_from([25, 1100]).map(_deep_dict),
    st.just({"big": "x" * 100_001}),
    ANY_VALUE,
)
"""What a caller might pass as ``metadata``: JSON-able or not, circular, deep, too big, not a mapping."""


def token_with_payload(payload: bytes) -> str:
    """A ``bos_session_`` token around an arbitrary payload (signature well-formed)."""
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"bos_session_{body}.{'ab' * 32}"


TOKENS = st.one_of(
    st.builds(lambda jti: make_token(jti=jti), HOSTILE_TEXT),
    st.builds(
        token_with_payload,
        st.one_of(st.binary(max_size=30), st.sampled_from([deep(3000, "list"), b"{}", b"[]", b"null"])),
    ),
    st.builds(lambda exp: make_token(exp=exp), st.sampled_from([-1, 0, 10**20, 253402300800])),
)
"""Session tokens a caller might pass to ``revoke``: any claims, or a payload that is not a JSON object."""
