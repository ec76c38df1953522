"""Fault injection: what the fake does wrong, on which route, how many times."""

from __future__ import annotations

import fnmatch
import random
import threading
from typing import Literal

import attrs

FaultKind = Literal["error", "delay", "malformed_json", "html", "reset", "drop_response"]


class DropConnection(Exception):
    """Raised inside the app to make the server drop the connection without a complete response."""


@attrs.frozen
class Fault:
    """One kind of misbehaviour. Build it with the class methods, then :meth:`FakeBillingOS.inject` it.

    Example::

        fake.inject("POST /v1/usage/track", Fault.drop_response())        # counted, answer lost
        fake.inject("GET /customers/{id}", Fault.error(503), times=2)
        fake.inject("*", Fault.error(429, retry_after=1))
    """

    kind: FaultKind
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, status: int = 503, *, retry_after: float | str | None = None) -> Fault:
        """Answer ``status`` with the server's error envelope, without processing the request."""
        if not 400 <= status <= 599:
            raise ValueError(f"an error status is 400-599, got {status}")
        return cls("error", status=status, retry_after=None if retry_after is None else str(retry_after))

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before processing the request normally (a slow route)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("delay", seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a body that is not JSON, without processing the request."""
        return cls("malformed_json", status=200)

    @classmethod
    def html(cls, status: int = 502) -> Fault:
        """Answer ``status`` with an HTML page, as a proxy in front of the API would."""
        return cls("html", status=status)

    @classmethod
    def reset(cls) -> Fault:
        """Drop the connection before processing: nothing happened on the server."""
        return cls("reset")

    @classmethod
    def drop_response(cls) -> Fault:
        """Process the request, then drop the connection: it happened, but the client cannot know."""
        return cls("drop_response")


@attrs.define(eq=False)
class FaultRule:
    """A fault armed on the routes matching ``pattern`` (``"METHOD /template"``, wildcards allowed)."""

    pattern: str
    fault: Fault
    remaining: int | None
    """Faults left to fire; ``None`` means forever."""
    probability: float = 1.0
    hits: int = 0
    """How many times it fired."""
    _rng: random.Random = attrs.field(factory=random.Random, repr=False)

    def matches(self, route: str) -> bool:
        return fnmatch.fnmatchcase(route, self.pattern)


class FaultPlan:
    """The armed faults, consulted once per request, thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def add(self, pattern: str, fault: Fault, times: int | None, probability: float) -> FaultRule:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1, or None for every matching request")
        if not 0 < probability <= 1:
            raise ValueError("probability must be in (0, 1]")
        rule = FaultRule(pattern, fault, times, probability, rng=random.Random(self._rng.random()))
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, route: str) -> Fault | None:
        """The fault to apply to this request, if any (the first armed rule that matches and fires)."""
        with self._lock:
            for rule in self._rules:
                if rule.remaining == 0 or not rule.matches(route):
                    continue
                if rule.probability < 1 and rule._rng.random() >= rule.probability:
                    continue
                rule.hits += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule.fault
        return None
