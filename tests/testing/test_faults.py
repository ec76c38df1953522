"""Fault injection (issue 3): every kind, ``times``, ``probability`` with a seed, wildcard patterns."""

from __future__ import annotations

import json
import time

import httpx2
import pytest

from billingos.testing import ROUTES, FakeBillingOS, Fault

from ._helpers import QUOTA, USER, Clock, assert_error, client, track_body

TRACK = "POST /v1/usage/track"


async def _track(http: httpx2.AsyncClient) -> httpx2.Response:
    return await http.post("/v1/usage/track", json=track_body())


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 409, 400])
async def test_fault_error_answers_the_envelope_without_processing(
    fake: FakeBillingOS, http: httpx2.AsyncClient, status: int
) -> None:
    fake.inject(TRACK, Fault.error(status))
    error = assert_error(await _track(http), status)
    if status >= 500:
        assert error["code"].startswith("SYS_")
    assert fake.usage_of(USER, QUOTA) == 0
    assert (await _track(http)).status_code == 201  # times=1 by default
    assert fake.usage_of(USER, QUOTA) == 1


async def test_fault_error_with_and_without_retry_after(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    fake.inject(TRACK, Fault.error(503, retry_after=2))
    fake.inject(TRACK, Fault.error(503))
    with_header = await _track(http)
    without = await _track(http)
    assert with_header.headers["retry-after"] == "2"
    assert "retry-after" not in without.headers
    assert_error(without, 503)


async def test_fault_error_echoes_the_request_id(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.inject("GET /customers", Fault.error(500))
    response = await http.get("/customers", headers={"X-Request-Id": "req_" + "9" * 24})
    assert response.headers["x-request-id"] == "req_" + "9" * 24
    assert assert_error(response, 500)["requestId"] == "req_" + "9" * 24


async def test_fault_delay_processes_after_the_delay(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.inject(TRACK, Fault.delay(0.05))
    started = time.perf_counter()
    response = await _track(http)
    assert time.perf_counter() - started >= 0.05
    assert response.status_code == 201
    assert fake.usage_of(USER, QUOTA) == 1


async def test_fault_malformed_json_is_200_not_json_and_not_processed(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    fake.inject(TRACK, Fault.malformed_json())
    response = await _track(http)
    assert response.status_code == 200
    with pytest.raises(ValueError):  # noqa: PT011 (json.JSONDecodeError)
        json.loads(response.content)
    assert fake.usage_of(USER, QUOTA) == 0


@pytest.mark.parametrize("status", [502, 504])
async def test_fault_html_is_a_proxy_page_not_processed(
    fake: FakeBillingOS, http: httpx2.AsyncClient, status: int
) -> None:
    fake.inject(TRACK, Fault.html(status))
    response = await _track(http)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<html")
    assert fake.usage_of(USER, QUOTA) == 0


async def test_fault_reset_in_process_is_a_protocol_error_and_not_processed(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    fake.inject(TRACK, Fault.reset())
    with pytest.raises(httpx2.RemoteProtocolError):
        await _track(http)
    assert fake.usage_of(USER, QUOTA) == 0
    assert fake.requests[-1].route == TRACK


async def test_fault_reset_is_recorded_with_no_status(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    """The client got no response, so the record has no status (as for drop_response)."""
    fake.inject(TRACK, Fault.reset())
    with pytest.raises(httpx2.RemoteProtocolError):
        await _track(http)
    assert fake.requests[-1].status is None


async def test_fault_drop_response_in_process_is_processed_then_lost(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    fake.inject(TRACK, Fault.drop_response())
    with pytest.raises(httpx2.RemoteProtocolError):
        await _track(http)
    assert fake.usage_of(USER, QUOTA) == 1
    assert fake.requests[-1].status is None
    assert (await _track(http)).status_code == 201
    assert fake.usage_of(USER, QUOTA) == 2


async def test_fault_times_counts_firings(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    rule = fake.inject(TRACK, Fault.error(503), times=2)
    statuses = [(await _track(http)).status_code for _ in range(4)]
    assert statuses == [503, 503, 201, 201]
    assert rule.hits == 2
    assert rule.remaining == 0
    assert fake.usage_of(USER, QUOTA) == 2


async def test_fault_times_none_is_forever(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    rule = fake.inject("GET /customers", Fault.error(500), times=None)
    statuses = {(await http.get("/customers")).status_code for _ in range(10)}
    assert statuses == {500}
    assert rule.hits == 10
    fake.clear_faults()
    assert (await http.get("/customers")).status_code == 200


async def test_fault_only_hits_its_route(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.inject("GET /customers/{id}", Fault.error(500), times=None)
    assert (await http.get("/customers")).status_code == 200
    assert (await http.get(f"/customers/external/{USER}")).status_code == 200
    assert (await http.get("/customers/x")).status_code == 500


async def _pattern(seed: int) -> list[int]:
    fake = FakeBillingOS(clock=Clock(), seed=seed, rate_limits=None)
    rule = fake.inject("GET /customers", Fault.error(503), times=None, probability=0.5)
    async with client(fake) as http:
        statuses = [(await http.get("/customers")).status_code for _ in range(40)]
    assert rule.hits == statuses.count(503)
    return statuses


async def test_fault_probability_with_a_seed_is_repeatable() -> None:
    first, second = await _pattern(7), await _pattern(7)
    assert first == second
    assert 0 < first.count(503) < 40
    assert set(first) == {200, 503}


async def test_fault_probability_one_always_fires(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    rule = fake.inject("GET /customers", Fault.error(503), times=3, probability=1.0)
    assert [(await http.get("/customers")).status_code for _ in range(4)] == [503, 503, 503, 200]
    assert rule.hits == 3


async def test_fault_wildcard_star_matches_every_route(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.inject("*", Fault.error(503), times=None)
    for method, path in [
        ("GET", "/customers"),
        ("POST", "/v1/usage/track"),
        ("DELETE", "/v1/session-tokens/x"),
        ("PATCH", "/subscriptions/x"),
    ]:
        assert (await http.request(method, path, json={})).status_code == 503, path
    assert fake.usage_of(USER, QUOTA) == 0


async def test_fault_wildcard_method_pattern(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.inject("GET *", Fault.error(502), times=None)
    assert (await http.get("/customers")).status_code == 502
    assert (
        await http.get("/v1/usage/check", params={"customer_id": USER, "feature_key": QUOTA})
    ).status_code == 502
    assert (await _track(http)).status_code == 201


async def test_fault_wildcard_path_pattern(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    fake.inject("* /subscriptions/*", Fault.error(500), times=None)
    assert (await http.get("/subscriptions/x")).status_code == 500
    assert (await http.post("/subscriptions/x/cancel", json={})).status_code == 500
    assert (await http.get("/subscriptions")).status_code == 200


async def test_fault_first_armed_matching_rule_fires(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    first = fake.inject(TRACK, Fault.error(500))
    second = fake.inject("*", Fault.error(502))
    assert [(await _track(http)).status_code for _ in range(3)] == [500, 502, 201]
    assert (first.hits, second.hits) == (1, 1)


@pytest.mark.parametrize("pattern", ["GET /nope", "POST /customers/{id}", "get /customers", "/customers"])
def test_fault_bad_pattern_is_value_error_listing_routes(fake: FakeBillingOS, pattern: str) -> None:
    with pytest.raises(ValueError, match="matches no route") as raised:
        fake.inject(pattern, Fault.error(500))
    for method, template in ROUTES:
        assert f"{method} {template}" in str(raised.value)


def test_fault_arguments_are_validated(fake: FakeBillingOS) -> None:
    with pytest.raises(ValueError, match="400-599"):
        Fault.error(200)
    with pytest.raises(ValueError, match="seconds"):
        Fault.delay(-1)
    with pytest.raises(ValueError, match="times"):
        fake.inject(TRACK, Fault.reset(), times=0)
    for probability in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="probability"):
            fake.inject(TRACK, Fault.reset(), probability=probability)


async def test_fault_does_not_fire_on_unmatched_paths(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    rule = fake.inject("*", Fault.error(500), times=None)
    assert_error(await http.get("/nowhere"), 404, "RES_NOT_FOUND")
    assert rule.hits == 0
