"""The models: SessionToken.decode, open enums, Page.next_page, and reprs that hide secrets."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from billingos import (
    Customer,
    EntitlementReason,
    FeatureType,
    Page,
    SessionToken,
    Subscription,
    SubscriptionStatus,
    ValidationError,
)

from ._factories import make_token
from .resources import EXP, JTI, MALFORMED_TOKENS

# -- SessionToken.decode -----------------------------------------------------------------------


def test_decode_reads_every_claim() -> None:
    token = make_token(
        JTI,
        exp=EXP,
        iat=EXP - 3600,
        user="user_42",
        external_organization_id="org_7",
        allowed_operations=["read", "write"],
        metadata={"plan": "pro"},
        merchant_id="merchant_1",
    )
    decoded = SessionToken.decode(token)
    assert decoded == SessionToken(
        session_token=token,
        token_id=JTI,
        expires_at=datetime(2026, 2, 27, 10, 0, tzinfo=UTC),
        issued_at=datetime(2026, 2, 27, 9, 0, tzinfo=UTC),
        external_user_id="user_42",
        external_organization_id="org_7",
        allowed_operations=("read", "write"),
        metadata={"plan": "pro"},
        merchant_id="merchant_1",
    )


def test_decode_without_optional_claims_uses_defaults() -> None:
    token = make_token(JTI, exp=EXP, iat=None, merchant_id=None, allowed_operations=None, metadata=None)
    decoded = SessionToken.decode(token)
    assert decoded.token_id == JTI
    assert decoded.external_organization_id is None
    assert decoded.allowed_operations == ()
    assert decoded.metadata == {}
    assert decoded.merchant_id is None


def test_decode_accepts_fractional_exp() -> None:
    decoded = SessionToken.decode(make_token(JTI, exp=EXP + 0.5))  # type: ignore[arg-type]
    assert decoded.expires_at == datetime(2026, 2, 27, 10, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(("token", "fragment"), MALFORMED_TOKENS)
def test_decode_refuses_malformed_token_with_clear_message(token: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment) as info:
        SessionToken.decode(token)
    assert info.value.message.startswith("Malformed session token")
    assert info.value.status_code is None


@pytest.mark.parametrize("value", ["", "tok_" + "3f" * 16, None, b"bos_session_x.y", 42])
def test_decode_refuses_non_tokens(value: Any) -> None:
    with pytest.raises(ValidationError, match="Malformed session token"):
        SessionToken.decode(value)


def test_decode_error_message_does_not_echo_the_token() -> None:
    token = make_token(JTI, exp=EXP)[:-1] + "z"  # signature no longer hex
    with pytest.raises(ValidationError) as info:
        SessionToken.decode(token)
    payload = token[len("bos_session_") :].split(".")[0]
    assert payload not in str(info.value)
    assert payload not in repr(info.value)


def test_expired_is_false_before_exp_and_true_after() -> None:
    now = int(time.time())
    assert SessionToken.decode(make_token(JTI, exp=now + 600)).expired is False
    assert SessionToken.decode(make_token(JTI, exp=now - 1)).expired is True


def test_session_token_repr_never_shows_the_token() -> None:
    token_string = make_token(JTI, exp=EXP, metadata={"secret_note": "hunter2"})
    token = SessionToken.decode(token_string)
    payload, signature = token_string[len("bos_session_") :].split(".")
    shown = repr(token)
    assert token_string not in shown
    assert payload[:16] not in shown
    assert signature not in shown
    assert "hunter2" not in shown
    assert JTI in shown  # the id is what a log reader needs


def test_session_token_is_frozen() -> None:
    token = SessionToken.decode(make_token(JTI, exp=EXP))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        token.token_id = "tok_other"  # type: ignore[misc]


# -- open enums --------------------------------------------------------------------------------

OPEN_ENUMS = [
    (SubscriptionStatus, "paused"),
    (FeatureType, "seat_based"),
    (EntitlementReason, "trial_expired"),
]


@pytest.mark.parametrize(("enum", "value"), OPEN_ENUMS, ids=[e.__name__ for e, _ in OPEN_ENUMS])
def test_open_enum_keeps_unknown_value(enum: Any, value: str) -> None:
    member = enum(value)
    assert isinstance(member, enum)
    assert member == value
    assert member.value == value
    assert str(member) == value
    assert f"{member}" == value


@pytest.mark.parametrize(("enum", "value"), OPEN_ENUMS, ids=[e.__name__ for e, _ in OPEN_ENUMS])
def test_open_enum_unknown_value_works_as_dict_key(enum: Any, value: str) -> None:
    assert {value: 1}[enum(value)] == 1


def test_open_enum_known_value_is_the_canonical_member() -> None:
    assert SubscriptionStatus("active") is SubscriptionStatus.ACTIVE
    assert FeatureType("usage_quota") is FeatureType.USAGE_QUOTA
    assert EntitlementReason("customer_not_found") is EntitlementReason.CUSTOMER_NOT_FOUND


def test_open_enum_unknown_value_does_not_join_the_members() -> None:
    SubscriptionStatus("paused")
    assert "paused" not in [s.value for s in SubscriptionStatus]


@pytest.mark.parametrize("value", [None, 3, b"active"])
def test_open_enum_refuses_non_strings(value: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the stdlib Enum lookup error)
        SubscriptionStatus(value)


def test_known_members_compare_equal_to_their_strings() -> None:
    assert SubscriptionStatus.ACTIVE == "active"
    assert str(SubscriptionStatus.PAST_DUE) == "past_due"
    assert EntitlementReason.CUSTOMER_NOT_FOUND == "customer_not_found"


# -- Page.next_page ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (Page(data=(1, 2), page=1, total_pages=3), 2),
        (Page(data=(1, 2), page=2, total_pages=3), 3),
        (Page(data=(1, 2), page=3, total_pages=3), None),
        (Page(data=(1,), page=4, total_pages=3), None),
        (Page(data=(), page=1, total_pages=3), None),
        (Page(data=(1, 2), page=1, total_pages=None), None),
        (Page(data=(1, 2), page=1, total_pages=0), None),
        (Page(data=(1, 2)), None),
    ],
    ids=[
        "first_of_3",
        "middle",
        "last",
        "past_last",
        "empty",
        "no_total_pages",
        "zero_total_pages",
        "defaults",
    ],
)
def test_next_page(page: Page[int], expected: int | None) -> None:
    assert page.next_page == expected


# -- reprs -------------------------------------------------------------------------------------


def test_customer_repr_hides_metadata_but_shows_id() -> None:
    customer = Customer(id="c1", email="ada@example.com", metadata={"ssn": "123-45-6789"})
    shown = repr(customer)
    assert "c1" in shown
    assert "123-45-6789" not in shown


def test_subscription_repr_hides_metadata_and_shows_status() -> None:
    sub = Subscription(id="sub_1", status=SubscriptionStatus("paused"), metadata={"note": "private"})
    shown = repr(sub)
    assert "sub_1" in shown
    assert "paused" in shown
    assert "private" not in shown
