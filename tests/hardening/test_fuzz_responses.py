"""Fuzzing what the server answers: every endpoint, any body, any status, any headers, lost connections.

Whatever comes back, a call returns a model of exactly the promised type (checked field by field,
generics and unions included) or raises a ``billingos.BillingOSError`` subclass consistent with the
status: never a ``KeyError``, ``TypeError``, ``ValueError``, ``UnicodeDecodeError``, ``RecursionError``
or ``OverflowError``. Each example scripts one to three answers; with ``max_retries=2`` (and no
sleeping) a retried call gets the next, so retry paths (429 with a garbage ``Retry-After``, a 5xx then a
garbage 2xx, a DELETE whose retry is answered 404) are fuzzed as well.

Figure: ``pytest tests/hardening/test_fuzz_responses.py --hypothesis-show-statistics`` prints the
examples run per endpoint (``EXAMPLES`` each; ``BILLINGOS_FUZZ_SCALE=10`` for ten times as many).
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import billingos
from billingos import (
    AsyncBillingOS,
    AuthenticationError,
    AuthorizationError,
    BillingOSError,
    ConflictError,
    EntitlementCache,
    EntitlementReason,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    ValidationError,
)
from billingos._http import _Call, _decode, error_from_response

from ._fuzz import (
    ENDPOINTS,
    Canned,
    Endpoint,
    Reply,
    Run,
    answers,
    assert_well_typed,
    bodies,
    deep,
    fuzz_client,
    fuzz_settings,
    public_methods,
)

EXAMPLES = 100
"""Examples per endpoint (a quarter of that for shortcuts and variants): 2 125 calls, about 15 s."""

_BY_STATUS: dict[int, type[BillingOSError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthorizationError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitError,
}


@pytest.fixture
def fuzzed() -> Iterator[tuple[Run[Any], Canned, AsyncBillingOS]]:
    with fuzz_client() as fixture:
        yield fixture


def test_the_endpoint_table_covers_every_public_method() -> None:
    covered = {name for endpoint in ENDPOINTS for name in endpoint.covers}
    assert public_methods() == covered


def _check_error(exc: BillingOSError, canned: Canned) -> None:
    """The exception is a BillingOSError whose class and status agree with what was last received."""
    assert isinstance(exc, BillingOSError), repr(exc)
    assert isinstance(exc.message, str)
    assert exc.message
    assert isinstance(exc.request_id, str)
    assert exc.request_id
    assert str(exc)
    assert repr(exc)
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), str(copy)) == (type(exc), str(exc))
    last = canned.last
    assert last is not None, "the SDK raised without sending anything"
    if isinstance(last, Exception):
        assert isinstance(exc, (NetworkError, ResponseDecodeError)), (last, exc)
        assert exc.status_code is None
        return
    if isinstance(exc, ResponseDecodeError) and exc.status_code is None:
        # A body whose Content-Encoding does not decode fails inside httpx, before the SDK sees the
        # status (known and accepted: still a ResponseDecodeError, whatever the status was).
        assert any(name == b"content-encoding" for name, _ in last.headers), (last, exc)
        return
    if 200 <= last.status < 300:
        assert isinstance(exc, ResponseDecodeError), (last, exc)
        assert exc.status_code == last.status
        return
    assert exc.status_code == last.status, (last, exc)
    if last.status < 200:
        return  # 1xx is not an error the SDK knows; anything BillingOSError is fine
    expected = _BY_STATUS.get(last.status, ServerError if last.status >= 500 else BillingOSError)
    assert isinstance(exc, expected), (last.status, exc)
    if isinstance(exc, RateLimitError):
        assert exc.retry_after is None or exc.retry_after >= 0


def _check_result(endpoint: Endpoint, result: Any, canned: Canned) -> None:
    assert_well_typed(result, endpoint.returns)
    last = canned.last
    assert isinstance(last, Reply), last
    if not 200 <= last.status < 300:
        # Only two non-2xx answers are successes: "Customer not found" for a check, 404 on a DELETE retry.
        assert last.status == 404, (last, result)
        if isinstance(result, billingos.Entitlement):
            assert result.reason == EntitlementReason.CUSTOMER_NOT_FOUND
            assert result.has_access is False
        elif endpoint.name == "entitlements.prefetch":
            assert result == {}  # "Customer not found" on the grant list: no answers, checks will say it
        else:
            assert result is None
            assert len(canned.requests) > 1


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_any_response_is_a_typed_model_or_a_billingos_error(
    fuzzed: tuple[Run[Any], Canned, AsyncBillingOS], endpoint: Endpoint, figure: Callable[[str], None]
) -> None:
    run, canned, client = fuzzed
    outcomes: Counter[str] = Counter()

    @fuzz_settings(round(EXAMPLES * endpoint.weight), name=endpoint.name)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        canned.reset(*data.draw(answers(endpoint), label="answers"))
        try:
            result = run(endpoint.call(client))
        except BillingOSError as exc:
            outcomes[type(exc).__name__] += 1
            _check_error(exc, canned)
        else:
            outcomes["model" if result is not None else "None"] += 1
            _check_result(endpoint, result, canned)
        assert 1 <= len(canned.requests) <= 3 * 3  # 3 attempts at most per page, 3 pages at most

    fuzz()
    figure(f"{sum(outcomes.values())} responses: " + ", ".join(f"{n} {k}" for k, n in outcomes.most_common()))


@fuzz_settings(60)
@given(data=st.data())
def test_any_response_through_the_entitlement_cache_is_an_entitlement_or_a_billingos_error(
    data: st.DataObject,
) -> None:
    """The cache's stale-if-error and allow/deny paths see the same garbage: still no foreign exception."""
    endpoint = next(e for e in ENDPOINTS if e.name == "entitlements.check")
    policy = data.draw(st.sampled_from(["raise", "allow", "deny"]), label="on_unavailable")
    cache = EntitlementCache(ttl=0, stale_if_error=300, on_unavailable=policy)
    with fuzz_client(entitlement_cache=cache) as (run, canned, client):
        for _ in range(2):  # the second call may be answered stale from the first
            canned.reset(*data.draw(answers(endpoint), label="answers"))
            try:
                result = run(client.entitlements.check("user_1", "api_calls"))
            except BillingOSError as exc:
                _check_error(exc, canned)
            else:
                assert_well_typed(result, billingos.Entitlement)


# -- the decoding functions directly (no transport: thousands of bodies per second) ------------


@fuzz_settings(200)
@given(
    status=st.integers(100, 999),
    body=st.one_of(*(bodies(e.ok_body) for e in ENDPOINTS[::4])),
    request_id=st.text(max_size=30),
)
def test_error_from_response_maps_any_body_to_a_billingos_error(
    status: int, body: bytes, request_id: str
) -> None:
    import httpx2

    response = httpx2.Response(status, content=body, request=httpx2.Request("GET", "https://x.test/p"))
    exc = error_from_response(response, request_id)
    assert isinstance(exc, BillingOSError)
    assert exc.status_code == status
    assert str(exc)


@pytest.mark.parametrize(
    "body",
    # Deep enough for every Python: 3.12+ reads JSON nested thousands of levels deep (3.10/3.11: ~1 000).
    [deep(100_000, "list"), deep(100_000, "dict"), deep(100_000, "open"), b'{"id": 1' + b"0" * 5000 + b"}"],
    ids=["deep-list", "deep-dict", "deep-unclosed", "huge-int"],
)
def test_bodies_that_break_the_json_reader_are_decode_errors(body: bytes) -> None:
    """Regression: a deeply nested body raised ``RecursionError`` out of every call (json.loads)."""
    import httpx2

    request = httpx2.Request("GET", "https://x.test/customers/c1")
    call = _Call(
        "GET", "/customers/c1", str(request.url), request.headers, None, httpx2.Timeout(5), 5.0, "req_1"
    )
    with pytest.raises(ResponseDecodeError, match="not JSON"):
        _decode(httpx2.Response(200, content=body, request=request), call, lambda data: data)
    error = error_from_response(httpx2.Response(404, content=body, request=request), "req_1")
    assert type(error) is NotFoundError
    assert "no JSON error body" in error.message
