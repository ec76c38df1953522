"""Wire-format builders for the tests: tokens, error bodies and payloads as the server sends them."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

SECRET = "sk_test_" + "s3cr3t" * 4 + "1a2b"
LIVE_SECRET = "sk_live_" + "l1v3" * 6 + "9z9z"
BASE_URL = "https://api.test.billingos.dev"


def make_token(
    jti: str = "tok_" + "a" * 32,
    *,
    exp: int | None = None,
    iat: int | None = None,
    user: str = "user_1",
    **claims: Any,
) -> str:
    """A session token in the documented format (the signature is not a real HMAC)."""
    now = int(time.time())
    payload = {
        "jti": jti,
        "iat": now if iat is None else iat,
        "exp": now + 3600 if exp is None else exp,
        "merchant_id": "org_1",
        "external_user_id": user,
        "allowed_operations": [],
        "metadata": {},
        **claims,
    }
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"bos_session_{body}.{'ab' * 32}"


def error_body(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    request_id: str = "req_" + "e" * 24,
) -> dict[str, Any]:
    """The server's error envelope (CONTRACT §2)."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "requestId": request_id,
        "timestamp": "2026-02-27T10:00:00.000Z",
    }
    if details is not None:
        error["details"] = details
    return {"error": error, "statusCode": status}


def customer_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "3f1c2a4e-0000-4000-8000-000000000001",
        "external_id": "user_1",
        "email": "ada@example.com",
        "email_verified": False,
        "name": "Ada",
        "billing_address": {
            "street": "1 Main St",
            "city": "Paris",
            "state": None,
            "postal_code": "75001",
            "country": "FR",
        },
        "stripe_customer_id": None,
        "metadata": {"plan": "pro"},
        "created_at": "2026-02-27T10:00:00.000Z",
        "updated_at": {},
        "deleted_at": None,
        "requestId": "req_" + "0" * 24,
    }
    data.update(overrides)
    return data


def subscription_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "sub_1",
        "customer_id": "3f1c2a4e-0000-4000-8000-000000000001",
        "product_id": "prod_1",
        "price_id": "price_1",
        "status": "active",
        "amount": 2900,
        "currency": "usd",
        "current_period_start": "2026-02-01T00:00:00Z",
        "current_period_end": "2026-03-01T00:00:00Z",
        "trial_start": None,
        "trial_end": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "ended_at": None,
        "metadata": {},
        "created_at": "2026-02-01T00:00:00Z",
        "updated_at": {},
    }
    data.update(overrides)
    return data


def track_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "success": True,
        "feature_key": "api_calls",
        "quantity": 1,
        "recorded_at": "2026-02-27T10:00:00.000Z",
        "usage": {
            "consumed_units": "11.000000",
            "limit_units": "1000.000000",
            "remaining_units": 989,
            "period_start": "2026-02-01T00:00:00Z",
            "period_end": "2026-03-01T00:00:00Z",
        },
        "requestId": "req_" + "0" * 24,
    }
    data.update(overrides)
    return data


def check_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "feature_key": "api_calls",
        "has_access": True,
        "limit": 1000,
        "usage": 10,
        "metadata": {"remaining": 990, "resets_at": "2026-03-01T00:00:00Z", "type": "usage_quota"},
    }
    data.update(overrides)
    return data


def metrics_json(**overrides: Any) -> dict[str, Any]:
    """A ``GET /v1/usage/metrics`` answer with one metered feature."""
    data: dict[str, Any] = {
        "metrics": [
            {
                "feature_key": "api_calls",
                "feature_title": "API calls",
                "product_name": None,
                "consumed": "250.000000",
                "limit": 1000,
                "remaining": 750.5,
                "percentage_used": 25,
                "period_start": "2026-02-01T00:00:00Z",
                "period_end": "2026-03-01T00:00:00.000Z",
                "resets_in_days": 2,
            }
        ],
        "customer_id": "user_1",
        "requestId": "req_" + "0" * 24,
    }
    data.update(overrides)
    return data


def page_json(
    items: list[dict[str, Any]],
    *,
    page: int = 1,
    limit: int = 50,
    total: int | None = None,
    total_pages: int = 1,
) -> dict[str, Any]:
    """The paged list envelope (``GET /customers``)."""
    return {
        "data": items,
        "total": len(items) if total is None else total,
        "page": page,
        "limit": limit,
        "total_pages": total_pages,
    }


class Clock:
    """A clock the test moves by hand: EntitlementCache(clock=...), FakeBillingOS(clock=...)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
