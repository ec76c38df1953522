"""The one cattrs converter: every wire quirk of CONTRACT §1 and §5 is handled here, once.

- unknown keys (``requestId``, anything the server adds later) are ignored;
- dates arrive as ISO-8601 strings (a trailing ``Z`` included, on Python 3.10 too), ``null`` or
  ``{}`` (a server bug): the last two read as ``None``;
- numbers may arrive as JSON numbers or numeric strings (``"1000.000000"``);
- nothing is coerced silently: ``null`` or ``5`` for a string field is an error, never ``"None"``/``"5"``;
- unknown enum values are kept (see ``_OpenEnum``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import ValidationError
from ._models import (
    Catalog,
    CatalogProduct,
    CheckoutCustomer,
    CheckoutProduct,
    CheckoutSession,
    CheckoutSubscription,
    CurrentSubscription,
    Entitlement,
    EntitlementReason,
    FeatureType,
    Page,
    PortalSession,
    Price,
    _Model,
    _OpenEnum,
)

T = TypeVar("T")
E = TypeVar("E", bound=_OpenEnum)

converter = cattrs.Converter(detailed_validation=True)


def _fail(expected: str, value: object) -> ValueError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ValueError(f"expected {expected}, got {shown}")


def _structure_str(value: object, _: type) -> str:
    if isinstance(value, str):
        return value
    raise _fail("a string", value)


def _structure_bool(value: object, _: type) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail("a boolean", value)


def _number(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise _fail("a number", value) from None
    else:
        raise _fail("a number", value)
    if not math.isfinite(result):
        raise _fail("a finite number", value)
    return result


def _structure_float(value: object, _: type) -> float:
    return _number(value)


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _number(value)
    if not number.is_integer():
        raise _fail("an integer", value)
    return int(number)


_FRACTION = re.compile(r"\.(\d+)")


def parse_datetime(value: str) -> datetime:
    """ISO-8601 to an aware datetime (UTC when the string has no offset)."""
    try:
        parsed = datetime.fromisoformat(value)  # Python 3.11+ reads nearly every ISO form directly
    except ValueError:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Python 3.10 takes exactly 3 or 6 fraction digits; PostgreSQL trims trailing zeros (".12").
        text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
        parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _structure_datetime(value: object, _: type) -> datetime | None:
    if isinstance(value, str):
        try:
            return parse_datetime(value)
        except ValueError:
            raise _fail("an ISO-8601 date", value) from None
    if value is None or value == {}:
        return None  # the server serialises Date objects as {} (CONTRACT §1)
    raise _fail("an ISO-8601 date", value)


def _structure_mapping(value: object, _: type) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise _fail("an object", value)


def _structure_open_enum(value: object, cls: type[_OpenEnum]) -> _OpenEnum:
    if not isinstance(value, str):
        raise _fail(f"a {cls.__name__} string", value)
    return cls(value)


converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(bool, _structure_bool)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(datetime, _structure_datetime)
# More specific than str in the MRO, so str-based enums are not caught by the str hook.
converter.register_structure_hook(_OpenEnum, _structure_open_enum)
converter.register_structure_hook_func(lambda t: t == Mapping[str, Any], _structure_mapping)


def _is_optional(type_: Any) -> bool:
    args = get_args(type_)
    return get_origin(type_) in (Union, UnionType) and len(args) == 2 and type(None) in args


def _optional_hook(type_: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    # cattrs' generic Optional handling dispatches on the inner type at every call; bind it once.
    inner = next(a for a in get_args(type_) if a is not type(None))
    hook = conv.get_structure_hook(inner)

    def structure_optional(value: Any, _: Any) -> Any:
        return None if value is None else hook(value, inner)

    return structure_optional


converter.register_structure_hook_factory(_is_optional, _optional_hook)


@functools.cache
def _entitlement_fields() -> Callable[[Any, Any], Entitlement]:
    return make_dict_structure_fn(Entitlement, converter)


class _Unusual(Exception):
    """A field :func:`_fast_entitlement` leaves to the generated structurer."""


def _plain_number(value: object) -> float | None:
    """``float(value)`` for a finite JSON number, ``None`` for null."""
    if value is None:
        return None
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return float(value)
    raise _Unusual


@functools.cache
def _members(cls: type[E]) -> dict[str, E]:
    """An enum's members by value: a dict lookup instead of ``cls(value)`` (its metaclass call)."""
    return {member.value: member for member in cls}


def _plain_enum(value: object, cls: type[E]) -> E | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _Unusual
    member = _members(cls).get(value)
    return member if member is not None else cls(value)  # an open enum keeps an unknown value


_parse_cached = functools.lru_cache(maxsize=256)(parse_datetime)
"""``parse_datetime`` for the fast path: a customer's quota resets at the same instant answer after answer."""

_FLAT_FIELDS = frozenset({"stale", "remaining", "resets_at", "feature_type"})
"""Top-level keys the generated structurer would read (the wire nests the last three in metadata)."""


def _fast_entitlement(value: dict[str, Any]) -> Entitlement | None:
    """The usual answer of ``/v1/usage/check`` read without cattrs (a third of the cost of a check).

    Only exact JSON types are taken here; ``None`` sends anything else (strings for numbers, a
    malformed field, a top-level ``stale`` or ``remaining``) to the generated structurer, which also
    words the errors.
    """
    key = value.get("feature_key")
    access = value.get("has_access")
    if type(key) is not str or type(access) is not bool or not _FLAT_FIELDS.isdisjoint(value):
        return None
    try:
        reason = _plain_enum(value.get("reason"), EntitlementReason)
        limit = _plain_number(value.get("limit"))
        usage = _plain_number(value.get("usage"))
        remaining = resets_at = feature_type = None
        meta = value.get("metadata")
        if meta is not None:
            if type(meta) is not dict:
                return None
            remaining = _plain_number(meta.get("remaining"))
            feature_type = _plain_enum(meta.get("type"), FeatureType)
            resets = meta.get("resets_at")
            if resets is not None:
                if type(resets) is not str:
                    return None
                resets_at = _parse_cached(resets)
    except (_Unusual, ValueError):
        return None
    return Entitlement(
        feature_key=key,
        has_access=access,
        reason=reason,
        limit=limit,
        usage=usage,
        remaining=remaining,
        resets_at=resets_at,
        feature_type=feature_type,
    )


def _structure_entitlement(value: object, cls: type) -> Entitlement:
    # The wire nests remaining/resets_at/type under "metadata"; the model keeps them flat.
    if not isinstance(value, dict):
        raise _fail("an object", value)
    fast = _fast_entitlement(value)
    if fast is not None:
        return fast
    meta = value.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise _fail("an object for metadata", meta)
    flat = {k: v for k, v in value.items() if k != "metadata"}
    if meta:
        for wire, attr in (("remaining", "remaining"), ("resets_at", "resets_at"), ("type", "feature_type")):
            if meta.get(wire) is not None:
                flat[attr] = meta[wire]
    return _entitlement_fields()(flat, cls)


converter.register_structure_hook(Entitlement, _structure_entitlement)


# The products, checkout and portal routes answer in camelCase (CONTRACT-CUSTOMER §0); their models
# are read with each attribute renamed, once, when first used.
_CAMEL_CASE = frozenset(
    {
        Catalog,
        CatalogProduct,
        CheckoutCustomer,
        CheckoutProduct,
        CheckoutSession,
        CheckoutSubscription,
        CurrentSubscription,
        PortalSession,
        Price,
    }
)


def camel(name: str) -> str:
    """``interval_count`` -> ``intervalCount``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _camel_hook(cls: Any) -> Callable[[Any, Any], Any]:
    renames = {f.name: override(rename=camel(f.name)) for f in attrs.fields(cls) if camel(f.name) != f.name}
    return make_dict_structure_fn(cls, converter, **renames)  # type: ignore[arg-type]


converter.register_structure_hook_factory(lambda t: t in _CAMEL_CASE, _camel_hook)


def structurer(cls: type[T]) -> Callable[[Any], T]:
    """A fast ``data -> cls`` function. Its hook is generated on first use (not at import: code
    generation for every model would add milliseconds to ``import billingos``), then reused."""
    hook: Callable[[Any, type[T]], T] | None = None

    def structure(data: Any) -> T:
        nonlocal hook
        if not isinstance(data, dict):
            raise _fail("a JSON object", data)
        if hook is None:
            hook = converter.get_structure_hook(cls)
        return hook(data, cls)

    return structure


def describe(exc: BaseException) -> str:
    """A short, readable account of a structuring failure: ``expected a string @ $.email``."""
    if isinstance(exc, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
        messages = cattrs.transform_error(exc, format_exception=_format)
        return "; ".join(messages[:5]) + (f" (+{len(messages) - 5} more)" if len(messages) > 5 else "")
    return _format(exc, None)


def _format(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError) and str(exc).startswith("expected"):
        return str(exc)
    name = getattr(type_, "__name__", None)
    return f"invalid value ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})" + (
        f" for {name}" if name else ""
    )


# -- the model form: to_dict / to_json / from_dict (issue 14) ---------------------------------------
# The same rules, read the other way: dates as ISO-8601 strings, enums as their values, tuples as lists.
# The dict form keeps the models' own attribute names, so the wire's camelCase renames and the nesting of
# an entitlement's metadata are undone by a copy of the converter, made on first use.


def _is_tuple(type_: Any) -> bool:
    return type_ is tuple or get_origin(type_) is tuple


@functools.cache
def model_converter() -> cattrs.Converter:
    """The converter of the dict form: the wire converter without its wire renames."""
    conv = converter.copy()
    # Only here: the wire converter's unstructure output stays as it was (the selling routes format it).
    conv.register_unstructure_hook(datetime, datetime.isoformat)
    conv.register_unstructure_hook(_OpenEnum, lambda member: member.value)
    conv.register_unstructure_hook_func(_is_tuple, lambda value: [conv.unstructure(v) for v in value])
    conv.register_structure_hook_factory(_is_optional, lambda t: _optional_hook(t, conv))
    conv.register_structure_hook_factory(
        lambda t: (attrs.has(t) and t in _CAMEL_CASE) or t is Entitlement,
        lambda t: make_dict_structure_fn(t, conv),
    )
    return conv


def to_dict(model: object) -> Any:
    """``model`` (or a dict or list of models) as JSON types, as ``Model.to_dict`` gives it."""
    return model_converter().unstructure(model)


class _Codec:
    """What ``Model.to_dict``, ``to_json`` and ``from_dict`` call (installed on ``_models._Model``)."""

    def to_dict(self, model: object) -> dict[str, Any]:
        result: dict[str, Any] = to_dict(model)
        return result

    def to_json(self, model: object, indent: int | None) -> str:
        return json.dumps(to_dict(model), indent=indent, ensure_ascii=False)

    def from_dict(self, cls: type[T], data: Mapping[str, Any], item_type: type | None) -> T:
        target: Any = cls
        if cls is Page:
            if item_type is None:
                raise ValidationError(
                    "Page.from_dict needs item_type, the model of its items: "
                    "Page.from_dict(data, item_type=Customer).",
                    code="invalid_argument",
                )
            target = Page[item_type]  # type: ignore[valid-type]
        if not isinstance(data, Mapping):
            raise ValidationError(
                f"{cls.__name__}.from_dict expects a mapping, got {type(data).__name__}.",
                code="invalid_argument",
            )
        try:
            result: T = model_converter().structure(dict(data), target)
        except Exception as exc:  # whatever a malformed dict makes cattrs raise
            raise ValidationError(f"Not a {cls.__name__}: {describe(exc)}", code="invalid_argument") from None
        return result


_Model._codec = _Codec()


__all__ = [
    "FeatureType",
    "camel",
    "converter",
    "describe",
    "model_converter",
    "parse_datetime",
    "structurer",
    "to_dict",
]
