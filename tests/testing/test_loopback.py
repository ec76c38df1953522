"""The fake over real loopback sockets (``fake.serve()``): request ids, lost responses, resets, body limit."""

from __future__ import annotations

import httpx2
import pytest

from billingos.testing import FakeBillingOS, Fault

from ._helpers import GENERATED_REQUEST_ID, QUOTA, USER, assert_error, sized_json, track_body

TRACK = "POST /v1/usage/track"


def _http(fake: FakeBillingOS, url: str) -> httpx2.Client:
    return httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {fake.secret_key}"}, timeout=5)


def test_loopback_request_id_is_echoed_and_generated(fake: FakeBillingOS) -> None:
    with fake.serve() as url, _http(fake, url) as http:
        assert url.startswith("http://127.0.0.1:")
        sent = http.get(f"/customers/external/{USER}", headers={"X-Request-Id": "req_" + "5" * 24})
        generated = http.get(f"/customers/external/{USER}")
        failed = http.get("/customers/nope", headers={"X-Request-Id": "req_" + "6" * 24})
    assert sent.status_code == 200
    assert sent.headers["x-request-id"] == sent.json()["requestId"] == "req_" + "5" * 24
    assert GENERATED_REQUEST_ID.match(generated.headers["x-request-id"])
    assert assert_error(failed, 404)["requestId"] == "req_" + "6" * 24


def test_loopback_drop_response_counts_but_the_client_sees_a_protocol_error(fake: FakeBillingOS) -> None:
    fake.inject(TRACK, Fault.drop_response())
    with fake.serve() as url, _http(fake, url) as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            http.post("/v1/usage/track", json=track_body(quantity=3))
        assert fake.usage_of(USER, QUOTA) == 3  # it happened
        assert fake.requests[-1].status is None
        after = http.post("/v1/usage/track", json=track_body())  # the server survives
    assert after.status_code == 201
    assert fake.usage_of(USER, QUOTA) == 4


def test_loopback_reset_is_a_protocol_error_and_nothing_happened(fake: FakeBillingOS) -> None:
    fake.inject(TRACK, Fault.reset())
    with fake.serve() as url, _http(fake, url) as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            http.post("/v1/usage/track", json=track_body(quantity=3))
        assert fake.usage_of(USER, QUOTA) == 0
        after = http.post("/v1/usage/track", json=track_body())
    assert after.status_code == 201
    assert fake.usage_of(USER, QUOTA) == 1


def test_loopback_body_limit_is_100_kb(fake: FakeBillingOS) -> None:
    headers = {"Content-Type": "application/json"}
    with fake.serve() as url, _http(fake, url) as http:
        at_limit = http.post("/v1/usage/track", content=sized_json(100_000, track_body()), headers=headers)
        over = http.post("/v1/usage/track", content=sized_json(100_001, track_body()), headers=headers)
        far_over = http.post("/v1/usage/track", content=sized_json(300_000, track_body()), headers=headers)
    assert at_limit.status_code == 201, at_limit.text
    assert_error(over, 413)
    assert_error(far_over, 413)
    assert fake.usage_of(USER, QUOTA) == 1


def test_loopback_delay_and_rate_limit_headers(fake: FakeBillingOS) -> None:
    fake.inject("GET /customers", Fault.delay(0.02))
    with fake.serve() as url, _http(fake, url) as http:
        response = http.get("/customers")
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit"] == "100"
    assert response.headers["x-ratelimit-remaining"] == "99"
