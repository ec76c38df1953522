"""The pieces every route family of the fake shares: what a handler sees, body and field checks.

``FieldErrors`` collects class-validator style messages into one 400 with ``details.fieldErrors``,
as the server's ``ValidationPipe`` does; ``_app`` (secret-key routes) and ``_customer_routes``
(session-token routes) both use it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeGuard

import attrs

from ._state import invalid

Handler = Callable[["Call"], Awaitable[tuple[int, Any]]]
"""A route's handler: the call in, ``(status, payload)`` out."""


@attrs.define
class Call:
    """What a handler sees of one request."""

    params: dict[str, str]
    query: Mapping[str, str]
    body: Any
    user: str | None = None
    """The session token's ``external_user_id`` on customer-session routes (``None`` elsewhere)."""


def object_body(body: Any) -> dict[str, Any]:
    """The JSON body as an object (``{}`` when absent); 400 when it is another JSON value."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


def is_number(value: object) -> TypeGuard[float]:
    """A finite JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FieldErrors:
    """Collects class-validator style messages, then raises one 400 with ``details.fieldErrors``."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def string(
        self, field: str, value: object, *, required: bool = False, max_length: int | None = None
    ) -> None:
        if value is None:
            if required:
                self.add(field, f"{field} should not be empty")
                self.add(field, f"{field} must be a string")
            return
        if not isinstance(value, str):
            self.add(field, f"{field} must be a string")
        elif required and not value:
            self.add(field, f"{field} should not be empty")
        elif max_length is not None and len(value) > max_length:
            self.add(field, f"{field} must be shorter than or equal to {max_length} characters")

    def mapping(self, field: str, value: object) -> None:
        if value is not None and not isinstance(value, dict):
            self.add(field, f"{field} must be an object")

    def boolean(self, field: str, value: object) -> None:
        if value is not None and not isinstance(value, bool):
            self.add(field, f"{field} must be a boolean value")

    def integer(self, field: str, value: str, *, low: int, high: int) -> int:
        try:
            number = int(value)
        except ValueError:
            self.add(field, f"{field} must be an integer number")
            return low
        if not low <= number <= high:
            self.add(
                field,
                f"{field} must not be less than {low}"
                if number < low
                else f"{field} must not be greater than {high}",
            )
        return number

    def unknown(self, body: Mapping[str, Any], allowed: Collection[str]) -> None:
        """``forbidNonWhitelisted``: every top-level field not in ``allowed`` is an error."""
        for name in body:
            if name not in allowed:
                self.add(name, f"property {name} should not exist")

    def raise_if_any(self, message: str = "Validation failed") -> None:
        if self.errors:
            raise invalid(message, self.errors)


__all__ = ["Call", "FieldErrors", "Handler", "is_number", "object_body"]
