"""Helpers of the customer-session conformance tests: minting a token and calling as the customer."""

from __future__ import annotations

from typing import Any

import httpx2

from billingos.testing import FakeBillingOS


async def mint(http: httpx2.AsyncClient, user: str, **body: Any) -> str:
    """A session token for ``user``, minted through ``POST /v1/session-tokens`` with the secret key."""
    response = await http.post("/v1/session-tokens", json={"externalUserId": user, **body})
    assert response.status_code == 201, response.text
    token: str = response.json()["sessionToken"]
    return token


def as_customer(fake: FakeBillingOS, token: str | None) -> httpx2.AsyncClient:
    """Raw httpx on the fake in-process, sending ``token`` (none when ``None``) as the bearer."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake", headers=headers)


def success(response: httpx2.Response, status: int) -> dict[str, Any]:
    """A success object: ``status``, JSON, and the top-level ``requestId`` the server adds."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["requestId"] == response.headers["x-request-id"]
    return body
