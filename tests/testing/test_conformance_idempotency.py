"""CONTRACT §4 Idempotency: only usage tracking dedupes (body ``idempotency_key``, per customer, 24 h)."""

from __future__ import annotations

import httpx2

from billingos.testing import FakeBillingOS

from ._helpers import DAY, OTHER, QUOTA, USER, Clock, as_number, assert_error, track_body


async def test_idempotency_replay_returns_first_usage_and_counts_nothing(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    first = await http.post("/v1/usage/track", json=track_body(quantity=3, idempotency_key="k1"))
    assert first.status_code == 201
    await http.post("/v1/usage/track", json=track_body(quantity=4))  # moves the count on
    replay = await http.post("/v1/usage/track", json=track_body(quantity=3, idempotency_key="k1"))
    assert replay.status_code in (200, 201)
    assert replay.json()["usage"] == first.json()["usage"]
    assert as_number(replay.json()["usage"]["consumed_units"]) == 3
    assert fake.usage_of(USER, QUOTA) == 7


async def test_idempotency_replay_with_other_quantity_still_returns_first(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    first = await http.post("/v1/usage/track", json=track_body(quantity=2, idempotency_key="k"))
    replay = await http.post("/v1/usage/track", json=track_body(quantity=50, idempotency_key="k"))
    assert replay.json()["usage"] == first.json()["usage"]
    assert fake.usage_of(USER, QUOTA) == 2


async def test_idempotency_replay_is_not_refused_when_the_quota_is_now_full(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    first = await http.post("/v1/usage/track", json=track_body(quantity=60, idempotency_key="big"))
    assert first.status_code == 201
    replay = await http.post("/v1/usage/track", json=track_body(quantity=60, idempotency_key="big"))
    assert replay.json()["usage"] == first.json()["usage"]
    assert fake.usage_of(USER, QUOTA) == 60


async def test_idempotency_is_per_customer(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    await http.post("/v1/usage/track", json=track_body(USER, quantity=2, idempotency_key="shared"))
    other = await http.post("/v1/usage/track", json=track_body(OTHER, quantity=5, idempotency_key="shared"))
    assert other.status_code == 201
    assert as_number(other.json()["usage"]["consumed_units"]) == 5
    assert fake.usage_of(USER, QUOTA) == 2
    assert fake.usage_of(OTHER, QUOTA) == 5


async def test_idempotency_expires_after_24_hours(
    fake: FakeBillingOS, http: httpx2.AsyncClient, clock: Clock
) -> None:
    await http.post("/v1/usage/track", json=track_body(idempotency_key="day"))
    clock.advance(DAY - 1)
    await http.post("/v1/usage/track", json=track_body(idempotency_key="day"))
    assert fake.usage_of(USER, QUOTA) == 1
    clock.advance(1)
    late = await http.post("/v1/usage/track", json=track_body(idempotency_key="day"))
    assert late.status_code == 201
    assert fake.usage_of(USER, QUOTA) == 2


async def test_idempotency_key_header_is_ignored(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    for _ in range(2):
        response = await http.post("/v1/usage/track", json=track_body(), headers={"Idempotency-Key": "h"})
        assert response.status_code == 201
    assert fake.usage_of(USER, QUOTA) == 2


async def test_idempotency_tracks_without_key_always_count(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    headers = {"X-Request-Id": "req_" + "c" * 24}  # even a replayed request id does not dedupe
    for _ in range(3):
        await http.post("/v1/usage/track", json=track_body(), headers=headers)
    assert fake.usage_of(USER, QUOTA) == 3


async def test_idempotency_none_for_session_tokens_a_retry_mints_a_second_token(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    headers = {"X-Request-Id": "req_" + "d" * 24, "Idempotency-Key": "same"}
    body = {"externalUserId": USER}
    first = await http.post("/v1/session-tokens", json=body, headers=headers)
    second = await http.post("/v1/session-tokens", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    tokens = [first.json()["sessionToken"], second.json()["sessionToken"]]
    claims = [fake.verify_session_token(t) for t in tokens]
    assert claims[0]["jti"] != claims[1]["jti"]


async def test_idempotency_none_for_customers_a_retried_create_is_409(http: httpx2.AsyncClient) -> None:
    body = {"email": "retry@example.com", "external_id": "retry"}
    headers = {"X-Request-Id": "req_" + "e" * 24, "Idempotency-Key": "same"}
    assert (await http.post("/customers", json=body, headers=headers)).status_code == 201
    assert_error(await http.post("/customers", json=body, headers=headers), 409, "RES_CONFLICT")
