"""Fuzzing what the caller passes: every argument of every method, and the per-call options.

Each example draws every argument from a mix of valid values and hostile ones (any type; ids with CR/LF,
NUL, slashes, dots, lone surrogates, 70 000 characters; NaN, infinite, negative, bool and 400-digit
quantities; circular, 1 100-level deep, unserializable or 100 kB metadata; ...) and calls the method
against a transport that answers a valid body. Exactly one of two things must happen:

- a ``ValidationError`` (``status_code`` None, ``code="invalid_argument"``) before any request is sent;
- one request whose method and route are the method's, whose path segments and query decode back to
  exactly the ids given, and whose body is strict JSON (no NaN) holding exactly the values given.

Never a ``TypeError``, ``ValueError``, ``UnicodeEncodeError``, ``RecursionError``, ``OverflowError`` or
``httpx2.InvalidURL``. Deliberately accepted (and checked to round-trip unchanged): any non-blank id or
key, with spaces, NUL, control characters, slashes, dots, ``%`` and any Unicode (each is one
percent-encoded path segment or query value); ids up to the 64 kB URL limit of httpx; fractional and
very large (finite) quantities; ``None`` and nested values in metadata; nested metadata keys that JSON
turns into strings (``{1: "a"}`` inside metadata is sent as ``{"1": "a"}``, as ``json.dumps`` does).

Figure: ``pytest tests/hardening/test_fuzz_inputs.py --hypothesis-show-statistics``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import attrs
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

import billingos
from billingos import AsyncBillingOS, BillingAddress, SessionToken, ValidationError

from .._factories import (
    check_json,
    customer_json,
    make_token,
    metrics_json,
    page_json,
    subscription_json,
    track_json,
)
from ._fuzz import (
    ANY_VALUE,
    HOSTILE_TEXT,
    METADATA,
    SECRET,
    TOKEN,
    TOKENS,
    Canned,
    Reply,
    Run,
    canned_http,
    fuzz_client,
    fuzz_settings,
    make_client,
)

EXAMPLES = 100
"""Examples per method (17 methods): about 10 s in all."""

Kwargs = dict[str, Any]


@attrs.frozen
class Expected:
    method: str
    segments: tuple[str, ...]
    query: Mapping[str, str] = attrs.field(factory=dict)
    body: Mapping[str, Any] | None = None


@attrs.frozen(repr=False)
class Spec:
    """One method: its arguments, how to call it, a valid answer, and the request the arguments imply."""

    def __repr__(self) -> str:  # hypothesis prints it with every failing example: keep it short
        return f"<Spec {self.name}>"

    name: str
    args: st.SearchStrategy[Kwargs]
    call: Callable[[AsyncBillingOS, Kwargs], Awaitable[Any]]
    answer: Any
    expect: Callable[[Kwargs], Expected]
    positional: tuple[str, ...] = ()


def _split(spec: Spec, kwargs: Kwargs) -> tuple[list[Any], Kwargs]:
    args = [kwargs[name] for name in spec.positional if name in kwargs]
    rest = {k: v for k, v in kwargs.items() if k not in spec.positional}
    return args, rest


def _compact(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


# -- argument strategies: a valid and a hostile one per parameter ------------------------------

P = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]
"""A parameter: (valid values, hostile values). Valid ones include the odd but accepted ids."""


def _accepted(value: str) -> str:
    """``value`` made acceptable as an id: no CR, LF or lone surrogate, not blank, under 20 000 characters."""
    kept = "".join(c for c in value[:20_000] if c not in "\r\n" and not "\ud800" <= c <= "\udfff")
    return kept if kept.strip() else kept + "x"


_valid_ids = st.one_of(
    st.text(min_size=1, max_size=12),
    st.just("user_1"),
    HOSTILE_TEXT,
    st.text(alphabet="./%\\?#;&= \x00\u2215\uff0e", min_size=1, max_size=6),
).map(_accepted)
_hostile = st.one_of(HOSTILE_TEXT, ANY_VALUE)
ID: P = (_valid_ids, _hostile)
OPTIONAL_ID: P = (st.one_of(st.none(), _valid_ids), _hostile)
EXTERNAL_ID: P = (st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True), _hostile)
EMAIL: P = (st.one_of(st.emails(), st.just("ada@example.com")), _hostile)
QUANTITY: P = (
    st.one_of(st.integers(1, 10**6), st.floats(min_value=1e-9, max_value=1e12), st.just(10**300)),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**400), max_value=10**400),
        ANY_VALUE,
    ),
)
BOOLEAN: P = (st.booleans(), ANY_VALUE)
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
_json = st.recursive(
    _json_leaf,
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.none()), c, max_size=3),
    ),
    max_leaves=8,
)
METADATA_P: P = (st.one_of(st.none(), st.dictionaries(st.text(max_size=5), _json, max_size=4)), METADATA)
OPERATIONS: P = (
    st.one_of(st.none(), st.lists(_valid_ids, max_size=3), st.lists(_valid_ids, max_size=2).map(tuple)),
    st.one_of(st.lists(st.one_of(_valid_ids, ANY_VALUE), min_size=1, max_size=3), ANY_VALUE),
)
_ADDRESS_FIELDS = ("street", "city", "state", "postal_code", "country")
_address_text = st.text(min_size=1, max_size=6).filter(str.strip)
ADDRESS: P = (
    st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {},
            optional={
                **{f: st.one_of(st.none(), _address_text) for f in _ADDRESS_FIELDS[:-1]},
                "country": st.sampled_from(["FR", "us", "De"]),
            },
        ),
        st.builds(
            BillingAddress, city=st.one_of(st.none(), _address_text), country=st.sampled_from(["DE", None])
        ),
    ),
    st.one_of(
        st.fixed_dictionaries({"country": st.sampled_from(["F", "FRA", "1A", "  ", ""])}),
        st.builds(BillingAddress, city=ANY_VALUE),
        st.dictionaries(
            st.one_of(st.sampled_from(_ADDRESS_FIELDS), st.text(max_size=3), st.integers()),
            ANY_VALUE,
            min_size=1,
            max_size=3,
        ),
        ANY_VALUE,
    ),
)
EXPIRES_IN: P = (st.integers(60, 86400), st.one_of(st.integers(), ANY_VALUE))
LIMIT: P = (st.integers(1, 100), st.one_of(st.integers(), ANY_VALUE))
PAGE: P = (
    st.integers(1, 100),
    st.one_of(st.integers(max_value=0), st.integers(min_value=2**31 + 1), ANY_VALUE),
)
SORT_BY: P = (st.sampled_from(["created_at", "email", "name"]), st.one_of(HOSTILE_TEXT, ANY_VALUE))
SORT_ORDER: P = (st.sampled_from(["asc", "desc"]), st.one_of(HOSTILE_TEXT, ANY_VALUE))
TOKEN_OR_ID: P = (
    st.one_of(
        _valid_ids.filter(lambda v: not v.startswith("bos_session_")),
        st.builds(make_token, _valid_ids),
        st.just(TOKEN),
    ),
    st.one_of(_hostile, TOKENS),
)
_header_names = st.one_of(
    st.sampled_from(["X-Trace", "x-request-id", "Accept", "Idempotency-Key"]),
    st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}", fullmatch=True),
)
OPTIONS: P = (
    st.fixed_dictionaries(
        {},
        optional={
            "timeout": st.one_of(
                st.none(), st.floats(min_value=0.001, max_value=60), st.just(httpx2.Timeout(5.0))
            ),
            "max_retries": st.one_of(st.none(), st.integers(0, 5)),
            "extra_headers": st.one_of(
                st.none(),
                st.dictionaries(
                    _header_names.filter(lambda n: n.lower() != "authorization"),
                    st.from_regex(r"[\t\x20-\x7e]{0,12}", fullmatch=True),
                    max_size=2,
                ),
            ),
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "timeout": st.one_of(
                st.builds(
                    httpx2.Timeout, st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
                ),
                ANY_VALUE.filter(
                    lambda v: not (isinstance(v, int) and abs(v) > 10**300)
                ),  # see the xfail below
            ),
            "max_retries": ANY_VALUE,
            "extra_headers": st.one_of(
                st.dictionaries(
                    st.one_of(st.just("Authorization"), HOSTILE_TEXT), HOSTILE_TEXT, min_size=1, max_size=2
                ),
                ANY_VALUE,
            ),
        },
    ),
)


@st.composite
def arguments(draw: st.DrawFn, required: Mapping[str, P], optional: Mapping[str, P]) -> Kwargs:
    """Valid arguments with none, one, two or all of them (per-call options included) made hostile."""
    names = [*required, *(n for n in optional if draw(st.booleans())), "options"]
    mode = draw(st.sampled_from(["valid", "one", "one", "one", "two", "all"]))
    if mode == "valid":
        hostile: set[str] = set()
    elif mode == "all":
        hostile = set(names)
    else:
        hostile = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=1 if mode == "one" else 2)))
    params = {**required, **optional, "options": OPTIONS}
    kwargs = {name: draw(params[name][1 if name in hostile else 0]) for name in names}
    return {**{k: v for k, v in kwargs.items() if k != "options"}, **kwargs["options"]}


def _with_options(
    required: Mapping[str, P], optional: Mapping[str, P] | None = None
) -> st.SearchStrategy[Kwargs]:
    return arguments(required, optional or {})


def _token_id(value: str) -> str:
    return SessionToken.decode(value).token_id if value.startswith("bos_session_") else value


def _address_body(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, BillingAddress):
        value = attrs.asdict(value)
    return _compact(value)


SPECS: tuple[Spec, ...] = (
    Spec(
        "session_tokens.create",
        _with_options(
            {"external_user_id": ID},
            {
                "external_organization_id": OPTIONAL_ID,
                "expires_in": EXPIRES_IN,
                "allowed_operations": OPERATIONS,
                "metadata": METADATA_P,
            },
        ),
        lambda b, k: b.session_tokens.create(**k),
        {"sessionToken": TOKEN, "expiresAt": {}},
        lambda k: Expected(
            "POST",
            ("v1", "session-tokens"),
            body=_compact(
                {
                    "externalUserId": k["external_user_id"],
                    "externalOrganizationId": k.get("external_organization_id"),
                    "expiresIn": k.get("expires_in"),
                    "allowedOperations": k.get("allowed_operations"),
                    "metadata": k.get("metadata"),
                }
            ),
        ),
    ),
    Spec(
        "session_tokens.revoke",
        _with_options({"token_or_id": TOKEN_OR_ID}),
        lambda b, k: b.session_tokens.revoke(**k),
        {"message": "Session token revoked successfully"},
        lambda k: Expected("DELETE", ("v1", "session-tokens", _token_id(k["token_or_id"]))),
    ),
    Spec(
        "entitlements.check",
        _with_options({"customer_id": ID, "feature_key": ID}, {"cache": BOOLEAN}),
        lambda b, k: b.entitlements.check(**k),
        check_json(),
        lambda k: Expected(
            "GET",
            ("v1", "usage", "check"),
            {"customer_id": k["customer_id"], "feature_key": k["feature_key"]},
        ),
    ),
    Spec(
        "usage.track",
        _with_options(
            {"customer_id": ID, "feature_key": ID},
            {"quantity": QUANTITY, "idempotency_key": OPTIONAL_ID, "metadata": METADATA_P},
        ),
        lambda b, k: b.usage.track(**k),
        track_json(),
        lambda k: Expected(
            "POST",
            ("v1", "usage", "track"),
            body=_compact(
                {
                    "customer_id": k["customer_id"],
                    "feature_key": k["feature_key"],
                    "quantity": k.get("quantity", 1),
                    "idempotency_key": k.get("idempotency_key") or ...,
                    "metadata": k.get("metadata"),
                }
            ),
        ),
    ),
    Spec(
        "usage.metrics",
        _with_options({"customer_id": ID}, {"feature_key": OPTIONAL_ID}),
        lambda b, k: b.usage.metrics(**k),
        metrics_json(),
        lambda k: Expected(
            "GET",
            ("v1", "usage", "metrics"),
            _compact({"customer_id": k["customer_id"], "feature_key": k.get("feature_key")}),
        ),
    ),
    Spec(
        "customers.create",
        _with_options(
            {"email": EMAIL},
            {
                "external_id": EXTERNAL_ID,
                "name": OPTIONAL_ID,
                "billing_address": ADDRESS,
                "metadata": METADATA_P,
            },
        ),
        lambda b, k: b.customers.create(**k),
        customer_json(),
        lambda k: Expected(
            "POST",
            ("customers",),
            body=_compact(
                {
                    "email": k["email"],
                    "external_id": k.get("external_id"),
                    "name": k.get("name"),
                    "billing_address": _address_body(k.get("billing_address")),
                    "metadata": k.get("metadata"),
                }
            ),
        ),
    ),
    Spec(
        "customers.get",
        _with_options({"customer_id": ID}),
        lambda b, k: b.customers.get(**k),
        customer_json(),
        lambda k: Expected("GET", ("customers", k["customer_id"])),
    ),
    Spec(
        "customers.get_by_external_id",
        _with_options({"external_id": ID}),
        lambda b, k: b.customers.get_by_external_id(**k),
        customer_json(),
        lambda k: Expected("GET", ("customers", "external", k["external_id"])),
    ),
    Spec(
        "customers.update",
        _with_options(
            {"customer_id": ID},
            {
                "email": EMAIL,
                "external_id": EXTERNAL_ID,
                "name": OPTIONAL_ID,
                "billing_address": ADDRESS,
                "metadata": METADATA_P,
            },
        ),
        lambda b, k: b.customers.update(**k),
        customer_json(),
        lambda k: Expected(
            "PATCH",
            ("customers", k["customer_id"]),
            body=_compact(
                {
                    "email": k.get("email"),
                    "external_id": k.get("external_id"),
                    "name": k.get("name"),
                    "billing_address": _address_body(k.get("billing_address")),
                    "metadata": k.get("metadata"),
                }
            ),
        ),
    ),
    Spec(
        "customers.delete",
        _with_options({"customer_id": ID}),
        lambda b, k: b.customers.delete(**k),
        None,
        lambda k: Expected("DELETE", ("customers", k["customer_id"])),
    ),
    Spec(
        "customers.list.page",
        _with_options(
            {"page": PAGE},
            {
                "limit": LIMIT,
                "email": OPTIONAL_ID,
                "external_id": OPTIONAL_ID,
                "query": OPTIONAL_ID,
                "sort_by": SORT_BY,
                "sort_order": SORT_ORDER,
            },
        ),
        lambda b, k: b.customers.list(**{n: v for n, v in k.items() if n != "page"}).page(k["page"]),
        page_json([customer_json()]),
        lambda k: Expected(
            "GET",
            ("customers",),
            {
                **{
                    n: str(v)
                    for n, v in k.items()
                    if n in ("email", "external_id", "query", "sort_by", "sort_order") and v is not None
                },
                "limit": str(k.get("limit", 50)),
                "page": str(k["page"]),
            },
        ),
    ),
    Spec(
        "subscriptions.create",
        _with_options(
            {"customer_id": ID, "price_id": ID},
            {"product_id": OPTIONAL_ID, "payment_method_id": OPTIONAL_ID, "metadata": METADATA_P},
        ),
        lambda b, k: b.subscriptions.create(**k),
        subscription_json(),
        lambda k: Expected(
            "POST",
            ("subscriptions",),
            body=_compact(
                {
                    "customer_id": k["customer_id"],
                    "price_id": k["price_id"],
                    "product_id": k.get("product_id"),
                    "payment_method_id": k.get("payment_method_id"),
                    "metadata": k.get("metadata"),
                }
            ),
        ),
    ),
    Spec(
        "subscriptions.get",
        _with_options({"subscription_id": ID}),
        lambda b, k: b.subscriptions.get(**k),
        subscription_json(),
        lambda k: Expected("GET", ("subscriptions", k["subscription_id"])),
    ),
    Spec(
        "subscriptions.list.page",
        _with_options({"page": PAGE}, {"customer_id": OPTIONAL_ID}),
        lambda b, k: b.subscriptions.list(**{n: v for n, v in k.items() if n != "page"}).page(k["page"]),
        [subscription_json()],
        lambda k: Expected(
            "GET",
            ("subscriptions",),
            _compact(
                {"customer_id": k.get("customer_id"), "page": str(k["page"]) if k["page"] > 1 else None}
            ),
        ),
    ),
    Spec(
        "subscriptions.update",
        _with_options(
            {"subscription_id": ID},
            {"price_id": OPTIONAL_ID, "cancel_at_period_end": BOOLEAN, "metadata": METADATA_P},
        ),
        lambda b, k: b.subscriptions.update(**k),
        subscription_json(),
        lambda k: Expected(
            "PATCH",
            ("subscriptions", k["subscription_id"]),
            body=_compact(
                {
                    "price_id": k.get("price_id"),
                    "cancel_at_period_end": k.get("cancel_at_period_end"),
                    "metadata": k.get("metadata"),
                }
            ),
        ),
    ),
    Spec(
        "subscriptions.cancel",
        _with_options({"subscription_id": ID}, {"at_period_end": BOOLEAN}),
        lambda b, k: b.subscriptions.cancel(**k),
        subscription_json(),
        lambda k: Expected(
            "POST",
            ("subscriptions", k["subscription_id"], "cancel"),
            body={"cancel_at_period_end": k.get("at_period_end", True)},
        ),
    ),
    Spec(
        "subscriptions.reactivate",
        _with_options({"subscription_id": ID}),
        lambda b, k: b.subscriptions.reactivate(**k),
        subscription_json(),
        lambda k: Expected("POST", ("subscriptions", k["subscription_id"], "reactivate")),
    ),
)


# -- checking what was sent --------------------------------------------------------------------


def _json_key(key: Any) -> str:
    """How ``json.dumps`` writes a non-str key of a nested object (accepted: JSON keys are strings)."""
    if isinstance(key, str):
        return key
    return (
        json.dumps(key)
        if isinstance(key, (bool, type(None)))
        else repr(float(key))
        if isinstance(key, float)
        else str(key)
    )


def _as_sent(value: Any) -> Any:
    """``value`` as JSON carries it: tuples as lists, nested keys as strings."""
    if isinstance(value, Mapping):
        return {_json_key(k): _as_sent(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_sent(v) for v in value]
    return value


def _assert_same(sent: Any, given: Any, where: str) -> None:
    """Equal, and of the same JSON type all the way down (``True`` is not ``1``, ``1`` is not ``1.0``)."""
    if isinstance(given, float) and isinstance(sent, int) and not isinstance(sent, bool):
        sent = float(sent)  # 1e20 is written as 1e+20 and read back as a float; an int stays an int
    assert type(sent) is type(given) or (isinstance(sent, str) and isinstance(given, str)), (
        where,
        sent,
        given,
    )
    if isinstance(given, dict):
        assert sent.keys() == given.keys(), (where, sent, given)
        for key in given:
            _assert_same(sent[key], given[key], f"{where}.{key}")
    elif isinstance(given, list):
        assert len(sent) == len(given), (where, sent, given)
        for i, (a, b) in enumerate(zip(sent, given, strict=True)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert sent == given or (isinstance(given, float) and math.isclose(sent, given)), (where, sent, given)


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"the SDK sent the non-JSON number {name}")


def _assert_sent_as_expected(request: httpx2.Request, expected: Expected, kwargs: Kwargs) -> None:
    assert request.method == expected.method
    raw = request.url.raw_path.decode("ascii")  # everything is percent-encoded: pure ASCII
    path, _, query = raw.partition("?")
    assert not any(c in raw for c in " \t\r\n\x00#"), raw
    segments = tuple(unquote(s, errors="strict") for s in path.split("/")[1:])
    assert segments == expected.segments, (segments, expected.segments)
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), errors="strict")
    assert len(pairs) == len(dict(pairs)), pairs  # no parameter twice
    assert dict(pairs) == dict(expected.query), (pairs, expected.query)
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    if expected.body is None:
        assert request.content == b""
        assert "content-type" not in request.headers
        return
    assert request.headers["content-type"] == "application/json"
    assert len(request.content) <= 100_000
    body = json.loads(request.content.decode("utf-8"), parse_constant=_refuse_constant)
    given = dict(_as_sent(expected.body))
    if given.get("idempotency_key") is ...:  # generated: a UUID4
        assert len(body["idempotency_key"]) == 36
        given["idempotency_key"] = body["idempotency_key"]
    _assert_same(body, given, "$")
    extra = kwargs.get("extra_headers") or {}
    for name, value in extra.items():
        assert request.headers[name] == value


@pytest.fixture
def fuzzed() -> Iterator[tuple[Run[Any], Canned, AsyncBillingOS]]:
    with fuzz_client(max_retries=0) as fixture:
        yield fixture


def test_every_public_method_is_fuzzed() -> None:
    from ._fuzz import public_methods

    fuzzed_here = {s.name.removesuffix(".page") for s in SPECS} | {"AsyncPaginator.page"}
    shortcuts = {
        "AsyncBillingOS.create_session_token",
        "AsyncBillingOS.check_entitlement",
        "AsyncBillingOS.track_usage",
    }
    iteration = {"AsyncPaginator.pages", "AsyncPaginator.__aiter__"}  # page(n) with n = 1, 2, ...: no input
    several_requests = {"entitlements.prefetch"}  # fuzzed below, on its own
    assert public_methods() - shortcuts - iteration - several_requests == fuzzed_here


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_any_argument_is_sent_exactly_or_refused_before_sending(
    fuzzed: tuple[Run[Any], Canned, AsyncBillingOS], spec: Spec, figure: Callable[[str], None]
) -> None:
    run, canned, client = fuzzed
    body = b"" if spec.answer is None else json.dumps(spec.answer).encode()
    answer = Reply(200 if spec.answer is not None else 204, ((b"content-type", b"application/json"),), body)
    outcomes: Counter[str] = Counter()

    @fuzz_settings(EXAMPLES, name=spec.name)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        kwargs = data.draw(spec.args, label="arguments")
        canned.reset(answer)
        refused: ValidationError | None = None
        try:
            run(spec.call(client, kwargs))
        except ValidationError as exc:
            refused = exc
        if refused is not None:
            outcomes["refused"] += 1
            assert canned.requests == [], "refused after sending"
            assert (refused.status_code, refused.code) == (None, "invalid_argument")
            assert refused.message
            assert SECRET[8:] not in str(refused)
        else:
            outcomes["sent"] += 1
            assert len(canned.requests) == 1
            _assert_sent_as_expected(canned.requests[0], spec.expect(kwargs), kwargs)

    fuzz()
    total, sent, declined = sum(outcomes.values()), outcomes["sent"], outcomes["refused"]
    figure(f"{total} calls: {sent} sent exactly, {declined} refused before sending")


PREFETCH_ARGS = _with_options(
    {"customer_id": ID}, {"features": (st.one_of(st.none(), st.lists(_valid_ids, max_size=3)), _hostile)}
)


def test_prefetch_sends_the_customer_id_exactly_or_refuses_before_sending(
    fuzzed: tuple[Run[Any], Canned, AsyncBillingOS], figure: Callable[[str], None]
) -> None:
    """``entitlements.prefetch`` sends up to three requests (a mint, the grant list, the metrics): the
    mint carries the customer id exactly, the grant list goes with the session token, never the key."""
    run, canned, client = fuzzed
    json_type = ((b"content-type", b"application/json"),)
    mint = Reply(201, json_type, json.dumps({"sessionToken": TOKEN, "expiresAt": {}}).encode())
    grants = Reply(200, json_type, json.dumps({"entitlements": [], "customer_id": "c"}).encode())
    outcomes: Counter[str] = Counter()

    @fuzz_settings(EXAMPLES, name="entitlements.prefetch")
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        kwargs = data.draw(PREFETCH_ARGS, label="arguments")
        client._tokens._cache = None  # a fresh token cache: every valid call mints
        canned.reset(mint, grants)
        refused: ValidationError | None = None
        try:
            answers = run(client.entitlements.prefetch(**kwargs))
        except ValidationError as exc:
            refused = exc
        if refused is not None:
            outcomes["refused"] += 1
            assert canned.requests == [], "refused after sending"
            assert (refused.status_code, refused.code) == (None, "invalid_argument")
            assert SECRET[8:] not in str(refused)
            return
        outcomes["sent"] += 1
        assert answers == {}
        assert [(r.method, r.url.path) for r in canned.requests] == [
            ("POST", "/v1/session-tokens"),
            ("GET", "/v1/features/entitlements"),
        ]
        assert json.loads(canned.requests[0].content)["externalUserId"] == kwargs["customer_id"]
        assert canned.requests[1].headers["authorization"] == f"Bearer {TOKEN}"

    fuzz()
    figure(f"{sum(outcomes.values())} calls: {outcomes['sent']} sent exactly, {outcomes['refused']} refused")


# -- regressions for what the fuzzing found (each raised a non-BillingOS exception) ------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda b: b.customers.get("\ud800"), "lone surrogate"),
        (lambda b: b.usage.metrics("user_1", "\udfff"), "lone surrogate"),
        (lambda b: b.customers.get("x" * 70_000), "URL too long"),
        (lambda b: b.customers.list(query="q" * 70_000).page(1), "URL too long"),
        (lambda b: b.customers.get("c1", extra_headers={"X-Note": "café"}), "printable ASCII"),
        (lambda b: b.customers.get("c1", extra_headers={"X Bad:": "1"}), "HTTP token"),
        (lambda b: b.customers.get("c1", extra_headers=[("X-A", "1")]), "mapping"),
        (lambda b: b.customers.get("c1", extra_headers=NotImplemented), "mapping"),
        (lambda b: b.usage.track("\udc80", "api_calls"), "lone surrogate"),
        (
            lambda b: b.usage.track("u", "f", metadata={"a": [[[[]]]] * 2, "deep": _deep(1100)}),
            "nests deeper than 32 levels",
        ),
        (lambda b: b.customers.create("a@b.co", billing_address={1: "x", "zip": "y"}), "unknown fields"),
        (lambda b: b.subscriptions.list().page("2"), "page must be an int"),
        (lambda b: b.subscriptions.list().page(0), "page must be between"),
        (
            lambda b: b.session_tokens.revoke(
                "bos_session_"
                + __import__("base64").urlsafe_b64encode(b"[" * 3000).decode()
                + "."
                + "ab" * 32
            ),
            "Malformed session token",
        ),
    ],
    ids=[
        "surrogate-in-path",
        "surrogate-in-query",
        "70k-id",
        "70k-query",
        "non-ascii-header",
        "bad-header-name",
        "headers-not-a-mapping",
        "headers-not-a-mapping-nor-truthy",
        "surrogate-in-body",
        "metadata-nested-1100-deep",
        "address-key-not-a-str",
        "page-as-str",
        "page-zero",
        "token-payload-nested-3000-deep",
    ],
)
def test_inputs_that_used_to_raise_foreign_exceptions_are_validation_errors(
    fuzzed: tuple[Run[Any], Canned, AsyncBillingOS],
    call: Callable[[AsyncBillingOS], Awaitable[Any]],
    match: str,
) -> None:
    run, canned, client = fuzzed
    canned.reset(Reply(200, (), b"{}"))
    with pytest.raises(ValidationError, match=match):
        run(call(client))
    assert canned.requests == []


def _deep(n: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(n):
        node = {"a": node}
    return node


@pytest.mark.parametrize("where", ["client", "call"])
async def test_a_timeout_too_large_for_a_float_is_a_validation_error(where: str) -> None:
    with canned_http() as (canned, http):
        canned.reset(Reply(200, (), json.dumps(customer_json()).encode()))
        async with http:
            if where == "client":
                with pytest.raises(ValidationError):
                    make_client(http, timeout=10**400)
                return
            async with make_client(http) as client:
                with pytest.raises(ValidationError):
                    await client.customers.get("c1", timeout=10**400)


def test_decoding_a_token_whose_payload_is_nested_too_deep_is_a_validation_error() -> None:
    import base64

    token = "bos_session_" + base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=") + "." + "ab" * 32
    with pytest.raises(ValidationError):
        billingos.SessionToken.decode(token)
