"""CONTRACT §3 Rate limits: headers on every response, 429 + Retry-After, nothing executed when throttled.

Windows move with the fake's injected clock: no test sleeps.
"""

from __future__ import annotations

import httpx2
import pytest

from billingos.testing import FakeBillingOS, Fault, RateLimits

from ._helpers import (
    OTHER,
    QUOTA,
    RATE_HEADERS,
    USER,
    Clock,
    assert_error,
    client,
    make_fake,
    track_body,
)


def _assert_rate_headers(response: httpx2.Response) -> dict[str, int]:
    missing = [h for h in RATE_HEADERS if h not in response.headers]
    assert not missing, (response.status_code, missing)
    values = {h: int(response.headers[h]) for h in RATE_HEADERS}
    assert all(v >= 0 for v in values.values())
    return values


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", f"/customers/external/{USER}", None, 200),
        ("POST", "/customers", {"email": "new@example.com"}, 201),
        ("POST", "/v1/usage/track", track_body(), 201),
        ("GET", "/v1/usage/check", None, 400),  # no query: validation error
        ("GET", "/customers/nobody", None, 404),
        ("POST", "/customers", {"email": "ada@example.com"}, 409),
    ],
)
async def test_rate_limit_headers_on_every_response(
    http: httpx2.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == status
    values = _assert_rate_headers(response)
    assert values["x-ratelimit-limit"] == 100
    assert values["x-ratelimit-remaining"] == 99


async def test_rate_limit_headers_on_204(http: httpx2.AsyncClient) -> None:
    created = await http.post("/customers", json={"email": "gone@example.com"})
    response = await http.delete(f"/customers/{created.json()['id']}")
    assert response.status_code == 204
    _assert_rate_headers(response)


async def test_rate_limit_headers_on_401(fake: FakeBillingOS) -> None:
    """The contract says every response: an unauthenticated one too (the throttler runs before auth)."""
    async with httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake") as http:
        response = await http.get("/customers")
    assert_error(response, 401, "AUTH_INVALID_TOKEN")
    _assert_rate_headers(response)


async def test_rate_limit_headers_on_429() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=1))
    async with client(fake) as http:
        await http.get("/customers")
        response = await http.get("/customers")
    assert response.status_code == 429
    values = _assert_rate_headers(response)
    assert values["x-ratelimit-remaining"] == 0


async def test_rate_limit_remaining_counts_down_per_route() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=3, window=60))
    async with client(fake) as http:
        remaining = [int((await http.get("/customers")).headers["x-ratelimit-remaining"]) for _ in range(3)]
        other_route = await http.get(f"/customers/external/{USER}")
    assert remaining == [2, 1, 0]
    assert other_route.status_code == 200
    assert other_route.headers["x-ratelimit-remaining"] == "2"


async def test_rate_limit_is_per_route_template_not_per_path() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=2))
    async with client(fake) as http:
        await http.get("/customers/a")
        await http.get("/customers/b")
        response = await http.get("/customers/c")
    assert_error(response, 429, "RATE_LIMIT_EXCEEDED")


async def test_rate_limit_is_per_client_ip() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=1))
    headers = {"Authorization": f"Bearer {fake.secret_key}"}

    def from_ip(ip: str) -> httpx2.AsyncClient:
        transport = httpx2.ASGITransport(app=fake.app, client=(ip, 40000))
        return httpx2.AsyncClient(transport=transport, base_url="http://fake", headers=headers)

    async with from_ip("10.0.0.1") as first, from_ip("10.0.0.2") as second:
        assert (await first.get("/customers")).status_code == 200
        assert (await first.get("/customers")).status_code == 429
        assert (await second.get("/customers")).status_code == 200


async def test_rate_limit_reset_is_seconds_until_window_end_not_epoch() -> None:
    clock = Clock()
    fake = make_fake(clock, rate_limits=RateLimits(per_route=10, window=60))
    async with client(fake) as http:
        first = await http.get("/customers")
        clock.advance(15.5)
        later = await http.get("/customers")
    assert first.headers["x-ratelimit-reset"] == "60"
    assert later.headers["x-ratelimit-reset"] in ("44", "45")  # 44.5 s left, whole seconds
    assert later.headers["x-ratelimit-reset-scoped"] == later.headers["x-ratelimit-reset"]


async def test_rate_limit_exceeded_is_429_with_retry_after_seconds() -> None:
    clock = Clock()
    fake = make_fake(clock, rate_limits=RateLimits(per_route=3, window=60))
    async with client(fake) as http:
        for _ in range(3):
            assert (await http.get("/customers")).status_code == 200
        clock.advance(20)
        response = await http.get("/customers")
    assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert response.headers["retry-after"] == "40"
    assert response.headers["x-ratelimit-remaining"] == "0"


async def test_rate_limited_track_is_not_executed() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=2))
    async with client(fake) as http:
        statuses = [(await http.post("/v1/usage/track", json=track_body())).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    assert fake.usage_of(USER, QUOTA) == 2


async def test_rate_limited_create_is_not_executed() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=1))
    async with client(fake) as http:
        assert (await http.post("/customers", json={"email": "one@example.com"})).status_code == 201
        response = await http.post("/customers", json={"email": "two@example.com"})
    assert_error(response, 429)
    async with client(fake) as http:
        listed = await http.get("/customers", params={"email": "two@example.com"})
    assert listed.status_code == 200
    assert listed.json()["total"] == 0


async def test_rate_limit_window_reopens_after_window_seconds() -> None:
    clock = Clock()
    fake = make_fake(clock, rate_limits=RateLimits(per_route=1, window=60))
    async with client(fake) as http:
        assert (await http.get("/customers")).status_code == 200
        clock.advance(59)
        assert (await http.get("/customers")).status_code == 429
        clock.advance(1)
        response = await http.get("/customers")
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset"] == "60"


async def test_rate_limit_track_per_customer() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=100, track_per_customer=2))
    async with client(fake) as http:
        ok = [await http.post("/v1/usage/track", json=track_body(USER)) for _ in range(2)]
        over = await http.post("/v1/usage/track", json=track_body(USER))
        other = await http.post("/v1/usage/track", json=track_body(OTHER))
    assert [r.status_code for r in ok] == [201, 201]
    assert [r.headers["x-ratelimit-remaining-scoped"] for r in ok] == ["1", "0"]
    assert ok[0].headers["x-ratelimit-limit-scoped"] == "2"
    assert ok[1].headers["x-ratelimit-remaining"] == "98"  # the per-route budget is separate
    assert_error(over, 429, "RATE_LIMIT_EXCEEDED")
    assert int(over.headers["retry-after"]) >= 1
    assert other.status_code == 201
    assert fake.usage_of(USER, QUOTA) == 2
    assert fake.usage_of(OTHER, QUOTA) == 1


async def test_rate_limit_defaults_are_100_per_route_and_1000_per_customer(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    track = await http.post("/v1/usage/track", json=track_body())
    assert track.headers["x-ratelimit-limit"] == "100"
    assert track.headers["x-ratelimit-limit-scoped"] == "1000"
    statuses = [(await http.get("/customers")).status_code for _ in range(101)]
    assert statuses == [200] * 100 + [429]


async def test_rate_limit_window_is_configurable() -> None:
    fake = make_fake(Clock(), rate_limits=RateLimits(per_route=5, window=10))
    async with client(fake) as http:
        response = await http.get("/customers")
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-reset"] == "10"


async def test_rate_limits_none_switches_throttling_off() -> None:
    fake = make_fake(Clock(), rate_limits=None)
    async with client(fake) as http:
        statuses = {(await http.get("/customers")).status_code for _ in range(150)}
    assert statuses == {200}


async def test_rate_limit_injected_429_keeps_its_retry_after(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    fake.inject("POST /v1/usage/track", Fault.error(429, retry_after=7))
    response = await http.post("/v1/usage/track", json=track_body())
    assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert response.headers["retry-after"] == "7"
    assert fake.usage_of(USER, QUOTA) == 0
