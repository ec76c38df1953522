"""Shared pieces of the conformance tests: a settable clock, the seeded world, and envelope checks.

Nothing here imports the SDK client: these tests talk to the fake with raw httpx, so the fake
cannot drift into agreeing with an SDK bug.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx2

from billingos.testing import FakeBillingOS, SubscriptionRecord

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0

USER = "user_1"
"""The seeded customer's external id (what usage and entitlements are keyed by)."""
OTHER = "user_2"
"""A second seeded customer on the same plan."""
QUOTA = "api_calls"
"""A ``usage_quota`` feature, limit ``QUOTA_LIMIT`` on the Pro plan."""
FLAG = "sso"
"""A ``boolean_flag`` feature on the Pro plan."""
NUMERIC = "seats"
"""A ``numeric_limit`` feature, limit 5 on the Pro plan."""
UNGRANTED = "exports"
"""A ``usage_quota`` feature that only the Team plan grants."""
QUOTA_LIMIT = 100
PRO_PRODUCT, PRO_PRICE = "prod_pro", "price_pro"
TEAM_PRODUCT, TEAM_PRICE = "prod_team", "price_team"
TRIAL_PRICE = "price_trial"

ISO_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$")
GENERATED_REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")
RATE_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-limit-scoped",
    "x-ratelimit-remaining-scoped",
    "x-ratelimit-reset-scoped",
)
DATE_KEYS = frozenset(
    {
        "created_at",
        "updated_at",
        "deleted_at",
        "current_period_start",
        "current_period_end",
        "trial_start",
        "trial_end",
        "canceled_at",
        "ended_at",
        "recorded_at",
        "period_start",
        "period_end",
        "resets_at",
        "expiresAt",
    }
)


class Clock:
    """A clock the test moves by hand (``FakeBillingOS(clock=...)``): no sleeps."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def seed(fake: FakeBillingOS) -> SubscriptionRecord:
    """Features, a Pro plan, a Team plan, a trial plan, two customers on Pro; returns USER's subscription."""
    fake.add_feature(QUOTA, "usage_quota", title="API calls")
    fake.add_feature(FLAG, "boolean_flag")
    fake.add_feature(NUMERIC, "numeric_limit")
    fake.add_feature(UNGRANTED, "usage_quota")
    fake.add_product(
        "Pro",
        features={QUOTA: QUOTA_LIMIT, FLAG: True, NUMERIC: 5},
        amount=2900,
        product_id=PRO_PRODUCT,
        price_id=PRO_PRICE,
    )
    fake.add_product(
        "Team",
        features={QUOTA: 1000, UNGRANTED: 10, FLAG: True},
        amount=9900,
        product_id=TEAM_PRODUCT,
        price_id=TEAM_PRICE,
    )
    fake.add_product(
        "Trial", features={QUOTA: 10}, trial_days=14, product_id="prod_trial", price_id=TRIAL_PRICE
    )
    fake.add_customer(USER, email="ada@example.com", name="Ada")
    fake.add_customer(OTHER, email="grace@example.com", name="Grace")
    fake.subscribe(OTHER, PRO_PRICE)
    return fake.subscribe(USER, PRO_PRICE)


def make_fake(clock: Clock | None = None, **kwargs: Any) -> FakeBillingOS:
    """A seeded fake on a hand-moved clock (rate limits off unless given)."""
    kwargs.setdefault("rate_limits", None)
    fake = FakeBillingOS(clock=clock or Clock(), seed=1234, **kwargs)
    seed(fake)
    return fake


def client(fake: FakeBillingOS, key: str | None = None, **kwargs: Any) -> httpx2.AsyncClient:
    """A raw httpx client on the fake's in-process transport, authenticated with ``key``."""
    headers = {"Authorization": f"Bearer {key or fake.secret_key}"}
    return httpx2.AsyncClient(transport=fake.transport(), base_url="http://fake", headers=headers, **kwargs)


def track_body(
    customer: str = USER, feature: str = QUOTA, quantity: float = 1, **extra: Any
) -> dict[str, Any]:
    return {"customer_id": customer, "feature_key": feature, "quantity": quantity, **extra}


def iso(timestamp: float) -> str:
    """``timestamp`` as the fake writes dates: ISO-8601, UTC, milliseconds, ``Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sized_json(size: int, base: dict[str, Any]) -> bytes:
    """``base`` plus ``metadata.pad``, serialised to exactly ``size`` bytes."""
    empty = json.dumps({**base, "metadata": {"pad": ""}}, separators=(",", ":")).encode()
    body = json.dumps({**base, "metadata": {"pad": "x" * (size - len(empty))}}, separators=(",", ":"))
    assert len(body.encode()) == size
    return body.encode()


def assert_error(
    response: httpx2.Response, status: int, code: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """The response is CONTRACT §2's error envelope, exactly; returns ``error``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "statusCode"}
    assert body["statusCode"] == status
    error: dict[str, Any] = body["error"]
    assert (
        {"code", "message", "requestId", "timestamp"}
        <= set(error)
        <= {
            "code",
            "message",
            "details",
            "requestId",
            "timestamp",
        }
    )
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code
    if message is not None:
        assert error["message"] == message
    assert error["requestId"] == response.headers["x-request-id"]
    assert ISO_MILLIS.match(error["timestamp"]), error["timestamp"]
    if "details" in error:
        assert isinstance(error["details"], dict)
    return error


def field_errors(response: httpx2.Response) -> dict[str, list[str]]:
    """``error.details.fieldErrors`` of a 400 (asserting the envelope on the way)."""
    error = assert_error(response, 400, "VAL_INVALID_INPUT")
    errors = error["details"]["fieldErrors"]
    assert isinstance(errors, dict)
    for messages in errors.values():
        assert messages
        assert all(isinstance(m, str) for m in messages)
    return errors


def as_number(value: Any) -> float:
    """A wire number: a JSON number, or a PostgreSQL decimal string such as ``"1000.000000"``."""
    if isinstance(value, str):
        assert re.fullmatch(r"-?\d+(\.\d+)?", value), value
        return float(value)
    assert isinstance(value, (int, float)), value
    assert not isinstance(value, bool), value
    return float(value)


def token_claims(token: str) -> dict[str, Any]:
    """The JSON payload of a ``bos_session_<base64url>.<hex>`` token (no signature check)."""
    payload = token.removeprefix("bos_session_").rpartition(".")[0]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims
