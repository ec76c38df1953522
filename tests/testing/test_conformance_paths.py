"""Hostile path segments (CONTRACT §6, first defect): a percent-encoded segment is one segment.

Each one reaches the route its position names, as a single parameter, and never another route.
"""

from __future__ import annotations

import httpx2
import pytest

from billingos.testing import FakeBillingOS, SubscriptionRecord

from ._helpers import USER, assert_error, token_claims

HOSTILE = [
    "..%2Fadmin",
    "a%2Fb",
    "%2E%2E",
    "%2e%2e",
    "%2E",
    "x%3Fy",
    "x%3Fcustomer_id%3Duser_1",
    "%23",
    "x%23frag",
    "%2F",
    "..%2F..%2Fv1%2Fusage%2Fcheck",
    "external%2Fuser_1",
    "%C3%A9",
    "é",
    "日本",
    "%20",
]

ROUTES = [
    ("GET", "/customers/{}", "GET /customers/{id}", "Customer not found"),
    ("GET", "/customers/external/{}", "GET /customers/external/{external_id}", "Customer not found"),
    ("PATCH", "/customers/{}", "PATCH /customers/{id}", "Customer not found"),
    ("DELETE", "/customers/{}", "DELETE /customers/{id}", "Customer not found"),
    ("GET", "/subscriptions/{}", "GET /subscriptions/{id}", "Subscription not found"),
    ("PATCH", "/subscriptions/{}", "PATCH /subscriptions/{id}", "Subscription not found"),
    ("POST", "/subscriptions/{}/cancel", "POST /subscriptions/{id}/cancel", "Subscription not found"),
    ("POST", "/subscriptions/{}/reactivate", "POST /subscriptions/{id}/reactivate", "Subscription not found"),
    ("DELETE", "/v1/session-tokens/{}", "DELETE /v1/session-tokens/{id}", "Session token not found"),
]


@pytest.mark.parametrize("segment", HOSTILE)
@pytest.mark.parametrize(("method", "template", "route", "message"), ROUTES, ids=[r[2] for r in ROUTES])
async def test_paths_hostile_segment_reaches_its_own_route_as_one_segment(
    fake: FakeBillingOS,
    http: httpx2.AsyncClient,
    method: str,
    template: str,
    route: str,
    message: str,
    segment: str,
) -> None:
    body: dict[str, object] | None = {} if method in ("PATCH", "POST") else None
    response = await http.request(method, template.format(segment), json=body)
    assert_error(response, 404, "RES_NOT_FOUND", message)
    received = fake.requests[-1]
    assert received.route == route
    assert received.query == {}


async def test_paths_encoded_slash_cannot_reach_the_external_id_route(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    response = await http.get(f"/customers/external%2F{USER}")
    assert_error(response, 404, "RES_NOT_FOUND", "Customer not found")
    assert fake.requests[-1].route == "GET /customers/{id}"


async def test_paths_traversal_cannot_cancel_another_resource(
    fake: FakeBillingOS, http: httpx2.AsyncClient, subscription: SubscriptionRecord
) -> None:
    attempts = [
        ("DELETE", f"/customers/..%2Fsubscriptions%2F{subscription.id}%2Fcancel"),
        ("POST", f"/subscriptions/{subscription.id}%2Fcancel/reactivate"),
        ("POST", f"/subscriptions/..%2Fsubscriptions%2F{subscription.id}/cancel"),
        ("PATCH", f"/customers/..%2Fsubscriptions%2F{subscription.id}"),
    ]
    for method, path in attempts:
        response = await http.request(
            method, path, json={"cancel_at_period_end": False} if method != "DELETE" else None
        )
        assert response.status_code == 404, (path, response.text)
    sub = (await http.get(f"/subscriptions/{subscription.id}")).json()
    assert (sub["status"], sub["cancel_at_period_end"]) == ("active", False)
    assert fake.customer(USER) is not None


async def test_paths_traversal_cannot_revoke_a_token_through_another_path(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    token = (await http.post("/v1/session-tokens", json={"externalUserId": USER})).json()["sessionToken"]
    jti = token_claims(token)["jti"]
    for path in (
        f"/v1/session-tokens/{jti}%2F..",
        f"/v1/session-tokens/x%2F..%2F{jti}",
        f"/customers/..%2F{jti}",
    ):
        assert (await http.delete(path)).status_code == 404
    fake.verify_session_token(token)  # still alive


async def test_paths_encoded_segment_is_decoded_once(http: httpx2.AsyncClient) -> None:
    """``user%5F1`` is ``user_1``; ``user%255F1`` is the literal ``user%5F1`` (no double decoding)."""
    once = await http.get("/customers/external/user%5F1")
    assert once.status_code == 200
    assert once.json()["external_id"] == USER
    assert_error(await http.get("/customers/external/user%255F1"), 404, "RES_NOT_FOUND", "Customer not found")


async def test_paths_extra_or_missing_segments_match_no_route(
    fake: FakeBillingOS, http: httpx2.AsyncClient
) -> None:
    for method, path in [
        ("GET", "/customers/a/b"),
        ("GET", "/customers/external/a/b"),
        ("DELETE", "/v1/session-tokens/"),
        ("DELETE", "/v1/session-tokens"),
        ("POST", "/subscriptions//cancel"),
    ]:
        assert_error(await http.request(method, path), 404, "RES_NOT_FOUND")
        assert fake.requests[-1].route == f"{method} ?", path
