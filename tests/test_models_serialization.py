"""Every model's ``to_dict`` / ``to_json`` / ``from_dict`` (issue 14, item 2): JSON-safe and round-tripping.

Each exported model is built with every field set (nested models, dates with microseconds and an offset,
enums known and unknown, metadata), serialized and read back.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Union, get_args, get_origin, get_type_hints

import attrs
import pytest

import billingos
from billingos import (
    Catalog,
    CheckoutSession,
    Customer,
    Entitlement,
    EntitlementReason,
    FeatureType,
    Page,
    SessionToken,
    ValidationError,
)
from billingos import _models as models
from billingos._convert import converter

from ._factories import make_token

WHEN = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))

MODELS = sorted(
    (getattr(models, name) for name in models.__all__ if attrs.has(getattr(models, name))),
    key=lambda cls: cls.__name__,
)


def _value(type_: Any, depth: int = 0) -> Any:
    """A value of ``type_`` that is not its default (so a field lost in a round trip shows)."""
    origin = get_origin(type_)
    if origin in (Union, types.UnionType):
        return _value(next(a for a in get_args(type_) if a is not type(None)), depth)
    if origin is tuple:
        return (_value(get_args(type_)[0], depth), _value(get_args(type_)[0], depth))
    if type_ == Mapping[str, Any]:
        return {"plan": "pro", "seats": 3, "tags": ["a", "b"], "nested": {"ok": True, "none": None}}
    if isinstance(type_, type) and issubclass(type_, models._OpenEnum):
        return type_("a_value_from_a_newer_server") if depth % 2 else next(iter(type_))
    if isinstance(type_, type) and attrs.has(type_):
        return _instance(type_, depth + 1)
    return {str: "text é", bool: True, int: 7, float: 2.5, datetime: WHEN}[type_]


def _instance(cls: type, depth: int = 0) -> Any:
    if cls is Page:
        return Page(data=(_instance(Customer, depth),), page=2, limit=1, total=3, total_pages=3)
    hints = get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], depth) for f in attrs.fields(cls)})


def test_every_exported_model_is_a_serializable_model() -> None:
    exported = [getattr(billingos, n) for n in billingos.__all__ if n in models.__all__]
    assert {c for c in exported if attrs.has(c)} == set(MODELS)
    for cls in MODELS:
        assert issubclass(cls, models._Model), cls


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_every_model_round_trips_through_to_dict_and_to_json(cls: type[Any]) -> None:
    model = _instance(cls)
    as_dict = model.to_dict()
    # JSON types only: strict encoding succeeds, and decoding gives the very same dict.
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    assert json.loads(model.to_json()) == as_dict
    assert sorted(as_dict) == sorted(f.name for f in attrs.fields(cls))

    extra: dict[str, Any] = {"item_type": Customer} if cls is Page else {}
    assert cls.from_dict(as_dict, **extra) == model
    assert cls.from_dict(json.loads(model.to_json(indent=2)), **extra) == model


def test_dates_are_iso_strings_and_enums_their_values() -> None:
    ent = Entitlement(
        "api_calls",
        False,
        reason=EntitlementReason.QUOTA_EXCEEDED,
        resets_at=WHEN,
        feature_type=FeatureType("a_new_type"),
    )
    assert ent.to_dict() == {
        "feature_key": "api_calls",
        "has_access": False,
        "reason": "quota_exceeded",
        "limit": None,
        "usage": None,
        "remaining": None,
        "resets_at": "2026-03-01T12:30:05.123456+02:00",
        "feature_type": "a_new_type",
        "stale": False,
    }
    back = Entitlement.from_dict(ent.to_dict())
    assert back.resets_at == WHEN
    assert back.resets_at.utcoffset() == timedelta(hours=2)
    assert back.feature_type == "a_new_type"


def test_the_issue_example_json_dumps_an_entitlement() -> None:
    ent = Entitlement("api_calls", True, resets_at=WHEN)
    with pytest.raises(TypeError, match="datetime"):
        json.dumps(attrs.asdict(ent))  # what failed before issue 14
    assert json.loads(ent.to_json())["resets_at"] == WHEN.isoformat()


def test_the_dict_form_is_the_models_not_the_wires() -> None:
    # camelCase on the wire, snake_case attributes in the dict form
    catalog = _instance(Catalog)
    assert "current_subscription" in catalog.to_dict()
    assert "interval_count" in catalog.to_dict()["products"][0]["prices"][0]
    wire = {"products": [{"id": "p", "name": "Pro", "trialDays": 14}], "currentSubscription": None}
    assert converter.structure(wire, Catalog).products[0].trial_days == 14  # the wire reader is unchanged
    # an entitlement's metadata is flat in the dict form
    assert "metadata" not in _instance(Entitlement).to_dict()


def test_secrets_are_in_the_dict_form_but_still_masked_in_repr() -> None:
    token = SessionToken.decode(make_token("tok_1", exp=2_000_000_000, user="user_42"))
    assert SessionToken.from_dict(token.to_dict()) == token
    assert token.to_dict()["session_token"] == token.session_token
    assert token.session_token not in repr(SessionToken.from_dict(token.to_dict()))
    checkout = CheckoutSession("cs_1", client_secret="pi_1_secret_2")
    assert CheckoutSession.from_dict(checkout.to_dict()).client_secret == "pi_1_secret_2"


def test_from_dict_ignores_unknown_keys_and_fills_defaults() -> None:
    customer = Customer.from_dict({"id": "cus_1", "added_by_a_newer_sdk": 1})
    assert customer == Customer("cus_1")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"email": "a@b.c"}, r"Not a Customer: required field missing @ \$\.id"),
        ({"id": 5}, r"expected a string, got 5 @ \$\.id"),
        ({"id": "cus_1", "created_at": "yesterday"}, r"expected an ISO-8601 date"),
        (["cus_1"], r"Customer.from_dict expects a mapping, got list"),
    ],
)
def test_from_dict_refuses_what_is_not_a_model_with_a_validation_error(data: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        Customer.from_dict(data)
    assert caught.value.code == "invalid_argument"


def test_page_from_dict_needs_the_item_type() -> None:
    page = _instance(Page)
    with pytest.raises(ValidationError, match="item_type"):
        Page.from_dict(page.to_dict())
    assert Page.from_dict(page.to_dict(), item_type=Customer).data[0] == page.data[0]
