"""CONTRACT §1 Connection: auth, request ids, the success decoration, JSON bodies, the body limit, dates."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from billingos.testing import FakeBillingOS, SubscriptionRecord

from ._helpers import (
    DATE_KEYS,
    GENERATED_REQUEST_ID,
    ISO_8601,
    OTHER,
    PRO_PRICE,
    QUOTA,
    TRIAL_PRICE,
    USER,
    Clock,
    assert_error,
    client,
    field_errors,
    make_fake,
    sized_json,
    token_claims,
    track_body,
)

# -- auth ------------------------------------------------------------------------------------------


async def test_auth_bearer_sk_test_key_is_accepted(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    assert fake.secret_key.startswith("sk_test_")
    response = await http.get(f"/customers/external/{USER}")
    assert response.status_code == 200
    assert response.json()["external_id"] == USER


async def test_auth_added_sk_live_key_is_accepted(fake: FakeBillingOS) -> None:
    live = fake.add_secret_key(live=True)
    assert live.startswith("sk_live_")
    async with client(fake, live) as http:
        response = await http.get(f"/customers/external/{USER}")
    assert response.status_code == 200


async def test_auth_missing_key_is_401_auth_invalid_token(fake: FakeBillingOS) -> None:
    async with httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake") as http:
        response = await http.get(f"/customers/external/{USER}")
    assert_error(response, 401, "AUTH_INVALID_TOKEN")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer sk_test_" + "0" * 48,  # well-formed, unknown
        "Bearer sk_live_" + "0" * 48,
        "Bearer pk_test_123",
        "Bearer ",
        "Bearer",
        "Basic {key}",  # the right key, the wrong scheme
        "{key}",  # no scheme at all
    ],
)
async def test_auth_unknown_or_malformed_key_is_401_auth_invalid_token(
    fake: FakeBillingOS, authorization: str
) -> None:
    headers = {"Authorization": authorization.format(key=fake.secret_key)}
    async with httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake") as http:
        response = await http.get(f"/customers/external/{USER}", headers=headers)
    assert_error(response, 401, "AUTH_INVALID_TOKEN")


async def test_auth_rejected_request_is_not_executed(fake: FakeBillingOS) -> None:
    async with client(fake, "sk_test_" + "f" * 48) as http:
        response = await http.post("/v1/usage/track", json=track_body(quantity=5))
    assert_error(response, 401, "AUTH_INVALID_TOKEN")
    assert fake.usage_of(USER, QUOTA) == 0


async def test_auth_other_fake_keys_are_unknown(fake: FakeBillingOS) -> None:
    other = make_fake()
    async with client(fake, other.secret_key) as http:
        response = await http.get(f"/customers/external/{USER}")
    assert_error(response, 401, "AUTH_INVALID_TOKEN")


# -- request id ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"/customers/external/{USER}", 200),
        ("GET", "/customers/external/nobody", 404),
        ("GET", "/no/such/route", 404),
    ],
)
async def test_request_id_is_echoed_in_x_request_id(
    http: httpx2.AsyncClient, method: str, path: str, status: int
) -> None:
    sent = "req_0123456789abcdef01234567"
    response = await http.request(method, path, headers={"X-Request-Id": sent})
    assert response.status_code == status
    assert response.headers["x-request-id"] == sent


async def test_request_id_is_echoed_on_401(fake: FakeBillingOS) -> None:
    sent = "req_" + "7" * 24
    async with httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake") as http:
        response = await http.get("/customers", headers={"X-Request-Id": sent})
    error = assert_error(response, 401, "AUTH_INVALID_TOKEN")
    assert response.headers["x-request-id"] == sent
    assert error["requestId"] == sent


async def test_request_id_is_generated_when_absent(http: httpx2.AsyncClient) -> None:
    first = await http.get(f"/customers/external/{USER}")
    second = await http.get(f"/customers/external/{USER}")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED_REQUEST_ID.match(i) for i in ids), ids
    assert ids[0] != ids[1]
    assert [first.json()["requestId"], second.json()["requestId"]] == ids


async def test_request_id_is_echoed_on_204(http: httpx2.AsyncClient) -> None:
    created = (await http.post("/customers", json={"email": "rid@example.com"})).json()
    response = await http.delete(f"/customers/{created['id']}", headers={"X-Request-Id": "req_" + "4" * 24})
    assert response.status_code == 204
    assert response.headers["x-request-id"] == "req_" + "4" * 24


async def test_request_id_is_recorded_with_the_request(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    await http.get("/customers", headers={"X-Request-Id": "req_" + "a" * 24})
    assert fake.requests[-1].request_id == "req_" + "a" * 24


# -- success decoration: requestId in every object ---------------------------------------------------


async def _every_success(
    http: httpx2.AsyncClient, sub: SubscriptionRecord
) -> list[tuple[str, httpx2.Response]]:
    """One successful call to every endpoint, in an order that makes each one succeed."""
    calls: list[tuple[str, httpx2.Response]] = []

    async def call(name: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await http.request(method, path, **kwargs)
        assert response.is_success, (name, response.text)
        calls.append((name, response))
        return response.json() if response.content else {}

    token = await call("create session token", "POST", "/v1/session-tokens", json={"externalUserId": USER})
    jti = token_claims(token["sessionToken"])["jti"]
    await call("revoke session token", "DELETE", f"/v1/session-tokens/{jti}")
    await call("track", "POST", "/v1/usage/track", json=track_body())
    await call("check", "GET", "/v1/usage/check", params={"customer_id": USER, "feature_key": QUOTA})
    await call("metrics", "GET", "/v1/usage/metrics", params={"customer_id": USER})
    customer = await call("create customer", "POST", "/customers", json={"email": "new@example.com"})
    await call("list customers", "GET", "/customers")
    await call("get customer", "GET", f"/customers/{customer['id']}")
    await call("get customer by external id", "GET", f"/customers/external/{USER}")
    await call("update customer", "PATCH", f"/customers/{customer['id']}", json={"name": "N"})
    await call(
        "create subscription", "POST", "/subscriptions", json={"customer_id": OTHER, "price_id": PRO_PRICE}
    )
    await call("get subscription", "GET", f"/subscriptions/{sub.id}")
    await call("update subscription", "PATCH", f"/subscriptions/{sub.id}", json={"metadata": {"a": 1}})
    await call("cancel subscription", "POST", f"/subscriptions/{sub.id}/cancel", json={})
    await call("reactivate subscription", "POST", f"/subscriptions/{sub.id}/reactivate")
    return calls


async def test_request_id_is_added_to_every_success_object(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    calls = await _every_success(http, subscription)
    assert len(calls) == 15
    for name, response in calls:
        body = response.json()
        assert isinstance(body, dict), name
        assert body["requestId"] == response.headers["x-request-id"], name


async def test_json_every_success_body_is_application_json(
    http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    calls = await _every_success(http, subscription)
    calls.append(("list subscriptions", await http.get("/subscriptions", params={"customer_id": USER})))
    for name, response in calls:
        assert response.headers["content-type"].startswith("application/json"), name
        json.loads(response.content)  # strict JSON, UTF-8


async def test_json_malformed_body_is_400_envelope(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    response = await http.post(
        "/v1/usage/track", content=b'{"customer_id": "user_1",', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "VAL_INVALID_INPUT")
    assert fake.usage_of(USER, QUOTA) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_json_body_is_read_only_as_application_json(
    fake: FakeBillingOS, http: httpx2.AsyncClient, content_type: str | None
) -> None:
    """The real server parses bodies with express.json(): a body sent as anything else is not read."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps({"email": "plain@example.com"}).encode()
    response = await http.post("/customers", content=body, headers=headers)
    assert "email" in field_errors(response)
    listed = await http.get("/customers", params={"email": "plain@example.com"})
    assert listed.json()["total"] == 0


async def test_json_utf8_round_trip(http: httpx2.AsyncClient) -> None:
    body = {"email": "zoe@example.com", "name": "Zoë 日本 🚀", "metadata": {"note": "naïve"}}
    created = await http.post(
        "/customers",
        content=json.dumps(body, ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert created.status_code == 201, created.text
    fetched = (await http.get(f"/customers/{created.json()['id']}")).json()
    assert (fetched["name"], fetched["metadata"]) == ("Zoë 日本 🚀", {"note": "naïve"})


# -- body limit (100 kB) ---------------------------------------------------------------------------


async def test_body_limit_100_kb_is_accepted(fake: FakeBillingOS, http: httpx2.AsyncClient) -> None:
    body = sized_json(100_000, track_body())
    response = await http.post("/v1/usage/track", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert fake.usage_of(USER, QUOTA) == 1


async def test_body_limit_over_100_kb_is_413_and_not_executed(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    body = sized_json(100_001, track_body())
    response = await http.post("/v1/usage/track", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 413)
    assert fake.usage_of(USER, QUOTA) == 0


# -- dates -----------------------------------------------------------------------------------------


def _dates(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) under a date key, anywhere in a JSON document."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in DATE_KEYS:
                found.append((f"{path}.{key}", item))
            else:
                found.extend(_dates(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(_dates(item, f"{path}[{i}]"))
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


async def _date_bearing_bodies(fake: FakeBillingOS) -> list[Any]:
    """Bodies holding every kind of date: customer, (trial, canceled) subscriptions, track, check, metrics."""
    async with client(fake) as http:
        bodies = []
        calls: list[tuple[str, str, Any, Any]] = [
            ("POST", "/customers", {"email": "d@example.com", "external_id": "dates"}, None),
            ("POST", "/subscriptions", {"customer_id": "dates", "price_id": TRIAL_PRICE}, None),
            ("POST", "/subscriptions", {"customer_id": "dates", "price_id": PRO_PRICE}, None),
            ("POST", "/v1/usage/track", track_body("dates"), None),
            ("GET", "/v1/usage/check", None, {"customer_id": "dates", "feature_key": QUOTA}),
            ("GET", "/v1/usage/metrics", None, {"customer_id": "dates"}),
            ("GET", "/subscriptions", None, {"customer_id": "dates"}),
            ("GET", "/customers", None, None),
            ("POST", "/v1/session-tokens", {"externalUserId": "dates"}, None),
        ]
        for method, path, body, params in calls:
            response = await http.request(method, path, json=body, params=params)
            assert response.is_success, response.text
            bodies.append(response.json())
        trial = bodies[1]["id"]
        response = await http.post(f"/subscriptions/{trial}/cancel", json={"cancel_at_period_end": False})
        assert response.is_success, response.text
        bodies.append(response.json())
        return bodies


async def test_dates_are_iso_strings_empty_objects_or_null() -> None:
    bodies = await _date_bearing_bodies(make_fake(Clock()))
    dates = [d for body in bodies for d in _dates(body)]
    assert {path.rsplit(".", 1)[-1] for path, _ in dates} == DATE_KEYS
    for path, value in dates:
        assert value is None or value == {} or (isinstance(value, str) and ISO_8601.match(value)), path


async def test_dates_mangle_dates_turns_every_date_into_empty_object() -> None:
    fake = make_fake(Clock(), mangle_dates=True)
    bodies = await _date_bearing_bodies(fake)
    async with client(fake) as http:
        assert_error(await http.get("/customers/nope"), 404)  # the envelope's timestamp stays ISO
    dates = [d for body in bodies for d in _dates(body)]
    assert {path.rsplit(".", 1)[-1] for path, _ in dates} == DATE_KEYS
    for path, value in dates:
        assert value is None or value == {}, path
    non_null = {path.rsplit(".", 1)[-1] for path, value in dates if value is not None}
    assert non_null == DATE_KEYS - {"deleted_at"}  # every kind of date was present, each as {}
    for body in bodies:
        assert not [s for s in _strings(body) if ISO_8601.match(s)]
