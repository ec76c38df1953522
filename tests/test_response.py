"""RawResponse, RateLimit and billing.request's argument checks, without a socket."""

from __future__ import annotations

import asyncio
import pickle

import httpx2
import pytest

from billingos import RateLimit, RateLimitError, RawResponse, ValidationError
from billingos._raw_request import check_method, check_params, check_path
from billingos._response import CAPTURE, capturing
from billingos.testing import FakeBillingOS


def test_rate_limit_reads_the_three_headers() -> None:
    headers = {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "7", "x-ratelimit-reset": "42"}
    assert RateLimit.from_headers(headers) == RateLimit(limit=100, remaining=7, reset_seconds=42.0)


def test_rate_limit_is_none_without_any_header_and_a_field_is_none_where_its_header_is_absent() -> None:
    assert RateLimit.from_headers({}) is None
    assert RateLimit.from_headers({"x-ratelimit-remaining": "0"}) == RateLimit(remaining=0)


@pytest.mark.parametrize("value", ["", "abc", "-1", "1.5", "\uff11\uff12", "9" * 30])
def test_rate_limit_ignores_a_count_that_is_not_a_whole_number(value: str) -> None:
    assert RateLimit.from_headers({"x-ratelimit-limit": value, "x-ratelimit-reset": "1"}) == RateLimit(
        reset_seconds=1.0
    )


@pytest.mark.parametrize("value", ["soon", "nan", "inf", "-3"])
def test_rate_limit_ignores_a_reset_that_is_not_a_duration(value: str) -> None:
    headers = {"x-ratelimit-limit": "5", "x-ratelimit-reset": value}
    assert RateLimit.from_headers(headers) == RateLimit(limit=5)


def test_rate_limit_reads_the_scoped_variants_on_request() -> None:
    headers = httpx2.Headers({"X-RateLimit-Limit-Scoped": "1000", "X-RateLimit-Remaining-Scoped": "999"})
    assert RateLimit.from_headers(headers) is None
    assert RateLimit.from_headers(headers, scoped=True) == RateLimit(limit=1000, remaining=999)


def test_raw_response_repr_shows_neither_body_nor_headers() -> None:
    headers = httpx2.Headers({"set-cookie": "session=s3cr3t", "x-ratelimit-limit": "10"})
    raw = RawResponse(200, headers, "req_1", {"sessionToken": "bos_session_s3cr3t"})
    assert "s3cr3t" not in repr(raw)
    assert raw.rate_limit == RateLimit(limit=10)
    assert raw.parse() == {"sessionToken": "bos_session_s3cr3t"}


def test_rate_limit_error_keeps_rate_limit_through_pickling() -> None:
    exc = RateLimitError("slow down", status_code=429, retry_after=3.0, rate_limit=RateLimit(10, 0, 3.0))
    again = pickle.loads(pickle.dumps(exc))
    assert again.rate_limit == RateLimit(10, 0, 3.0)
    assert again.retry_after == 3.0


@pytest.mark.parametrize("method", ["get", "Post", "PUT", "patch", "DELETE"])
def test_request_accepts_the_http_methods_in_any_case(method: str) -> None:
    assert check_method(method) == method.upper()


@pytest.mark.parametrize("method", ["HEAD", "TRACE", "", None, 1])
def test_request_refuses_other_methods(method: object) -> None:
    with pytest.raises(ValidationError, match="method must be one of"):
        check_method(method)


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/v1/usage/check", "/v1/usage/check"),
        ("/customers/a b", "/customers/a%20b"),
        ("/customers/caf\u00e9", "/customers/caf%C3%A9"),
        ("/customers/a%2Fb", "/customers/a%2Fb"),
    ],
)
def test_request_encodes_what_a_path_cannot_hold_and_keeps_escapes(path: str, sent: str) -> None:
    assert check_path(path) == sent


@pytest.mark.parametrize(
    "path",
    [
        "https://evil.example/v1",
        "HTTP://evil.example",
        "//evil.example/v1",
        "javascript:alert(1)",
        "v1/usage",
        "",
        "/v1/\r\nX-Evil: 1",
        "/v1/\n",
        "/v1/\x00",
        "/v1\\..\\admin",
        "/v1/../admin",
        "/v1/./x",
        "/v1/%2e%2E/admin",
        "/v1/usage?x=1",
        "/v1/usage#frag",
        "/v1/\ud800",
    ],
)
def test_request_refuses_a_path_that_could_leave_api_url(path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_path(path)
    assert caught.value.code == "invalid_argument"


def test_request_params_drop_none_and_spell_booleans_as_json_does() -> None:
    assert check_params({"a": None, "b": True, "c": False, "d": 3, "e": 1.5, "f": "x"}) == {
        "b": "true",
        "c": "false",
        "d": 3,
        "e": "1.5",
        "f": "x",
    }
    assert check_params(None) is None


@pytest.mark.parametrize("params", [["a"], {"a": object()}, {"a": float("nan")}, {1: "x"}])
def test_request_refuses_params_it_cannot_encode(params: object) -> None:
    with pytest.raises(ValidationError):
        check_params(params)


async def test_a_raw_call_captures_only_its_own_requests_among_concurrent_calls() -> None:
    fake = FakeBillingOS(rate_limits=None)
    fake.add_customer("user_1", email="a@example.com")
    async with fake.client() as billing:
        plain, raw = await asyncio.gather(
            billing.customers.get_by_external_id("user_1"),
            billing.customers.with_raw_response.get_by_external_id("user_1"),
        )
        assert raw.parse() == plain
        assert raw.request_id in {r.request_id for r in fake.requests}
        assert not capturing()  # the capture ended with its call
        assert CAPTURE.get() is None


async def test_request_validates_before_sending() -> None:
    fake = FakeBillingOS(rate_limits=None)
    async with fake.client() as billing:
        with pytest.raises(ValidationError, match="idempotent"):
            await billing.request("POST", "/v1/usage/track", idempotent="yes")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="at most"):
            await billing.request("POST", "/customers", json={"x": "a" * 200_000})
    assert fake.requests == ()
