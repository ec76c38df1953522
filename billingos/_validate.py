"""Client-side argument checks: a clear ``ValidationError`` naming the field, before anything is sent."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import ValidationError

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message: shortened, and safe for ints too long to print.

    Example: ``shown(10**5000)`` is ``'<an int of 5001 digits>'`` (``repr`` raises ``ValueError``).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an int of {len(str(abs(value))) if value.bit_length() < 14000 else 'over 4200'} digits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_argument")


def text(name: str, value: object, *, max_length: int | None = None) -> str:
    """A non-empty, non-blank string, at most ``max_length`` characters."""
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a str, not {type(value).__name__}.")
    if not value.strip():
        raise _invalid(f"{name} must not be empty.")
    if max_length is not None and len(value) > max_length:
        raise _invalid(f"{name} must be at most {max_length} characters, got {len(value)}.")
    return value


def optional_text(name: str, value: object, *, max_length: int | None = None) -> str | None:
    """``None``, or what :func:`text` accepts."""
    return None if value is None else text(name, value, max_length=max_length)


def email(name: str, value: object) -> str:
    """Something that looks like an email address."""
    value = text(name, value, max_length=320)
    if not _EMAIL.match(value):
        raise _invalid(f"{name} must be an email address, got {value!r}.")
    return value


def external_id(name: str, value: object) -> str:
    """Letters, digits, ``_`` and ``-``, 1 to 255 characters (CONTRACT §5, customers)."""
    if not isinstance(value, str) or not _EXTERNAL_ID.match(value):
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise _invalid(f"{name} must match ^[A-Za-z0-9_-]{{1,255}}$, got {shown}.")
    return value


def integer(name: str, value: object, *, low: int, high: int) -> int:
    """An int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{name} must be an int, not {type(value).__name__}.")
    if not low <= value <= high:
        raise _invalid(f"{name} must be between {low} and {high}, got {shown(value)}.")
    return value


def positive_number(name: str, value: object) -> int | float:
    """A finite number > 0 (fractions allowed, bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"{name} must be a number, not {type(value).__name__}.")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float: JSON readers would see Infinity
        finite = False
    if not finite or value <= 0:
        raise _invalid(f"{name} must be a finite number greater than 0, got {shown(value)}.")
    return value


MAX_METADATA_DEPTH = 32
"""How deeply metadata may nest. Deeper would hit Python's recursion limit when the body is encoded, at a
depth that differs between Python versions; a fixed limit refuses the same metadata everywhere."""


def metadata(name: str, value: object) -> Mapping[str, Any] | None:
    """``None`` or a mapping with string keys, nested at most ``MAX_METADATA_DEPTH`` levels (values are
    checked when the body is encoded)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _invalid(f"{name} must be a mapping with str keys.")
    _check_depth(name, value)
    return dict(value)


def _check_depth(name: str, value: Mapping[Any, Any]) -> None:
    """Breadth-first, without recursion; a self-containing value stops at the limit too."""
    level: list[object] = list(value.values())
    for _ in range(MAX_METADATA_DEPTH - 1):
        level = [
            child
            for item in level
            if isinstance(item, (Mapping, list, tuple))
            for child in (item.values() if isinstance(item, Mapping) else item)
        ]
        if not level:
            return
    if any(isinstance(item, (Mapping, list, tuple)) for item in level):
        raise _invalid(f"{name} nests deeper than {MAX_METADATA_DEPTH} levels of objects and arrays.")


def string_list(name: str, value: object) -> list[str] | None:
    """``None`` or a list/tuple of non-empty strings (a bare string is refused, not split)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _invalid(f"{name} must be a list of str.")
    return [text(f"{name}[{i}]", item) for i, item in enumerate(value)]


def boolean(name: str, value: object) -> bool:
    """A real bool (``"false"`` is not accepted as False)."""
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be a bool, not {type(value).__name__}.")
    return value


def choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """One of ``allowed``."""
    if value not in allowed:
        raise _invalid(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.")
    return str(value)
