"""Hostile ids against the embedded server over real loopback HTTP (uvicorn): no id reaches another route.

Each attack string is used in every position an id takes: a path segment (customers, subscriptions,
session tokens), a query value (entitlement check, metrics, customer list filter) and a JSON body
field (usage track). For every call the server's request log (``FakeBillingOS.requests``, recorded by
the app on the raw path) must show exactly one new request, on the intended route, with the id
decoded back intact and nothing else in the query, unless the SDK refused the id before sending
(``ValidationError``, no request at all) or the HTTP server refused the request line before routing
(no request reaches the app). The seeded customers have the attack strings as external ids and a
subscription, so the external-id lookup, the entitlement check, the metrics and the track also prove
the round trip end to end: the right customer comes back and its usage is counted.

Figure: the attack table (attack: outcome per position) in the "hardening figures" section.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import unquote

import attrs
import pytest

from billingos import AsyncBillingOS, BillingOSError, ValidationError
from billingos.testing import FakeBillingOS

FEATURE, PRICE = "api_calls", "price_pro"

ATTACKS: list[tuple[str, str]] = [
    ("../", "../"),
    ("..", ".."),
    (".", "."),
    ("../../customers", "../../customers"),
    ("..%2F", "..%2F"),
    ("%2e%2e", "%2e%2e"),
    ("%2e%2e%2f", "%2e%2e%2f"),
    ("%2F", "%2F"),
    ("/", "/"),
    ("a/b", "a/b"),
    ("\\", "\\"),
    ("..\\..\\", "..\\..\\"),
    ("?x=1", "?x=1"),
    ("&customer_id=user_1", "&customer_id=user_1"),
    ("#frag", "#frag"),
    (";", ";"),
    ("..;/", "..;/"),
    ("NUL", "a\x00b"),
    ("%00", "%00"),
    ("CR/LF", "a\r\nX-Injected: 1"),
    ("LF", "a\nb"),
    ("tab", "a\tb"),
    ("DEL", "a\x7fb"),
    ("fullwidth dots \uff0e\uff0e", "\uff0e\uff0e"),
    ("fullwidth \uff0e\uff0e\uff0f", "\uff0e\uff0e\uff0f"),
    ("division slash \u2215", "..\u2215..\u2215"),
    ("one-dot leader \u2024\u2024", "\u2024\u2024"),
    ("overlong %c0%ae%c0%ae%c0%af", "%c0%ae%c0%ae%c0%af"),
    ("overlong bytes (surrogateescape)", b"\xc0\xae\xc0\xae".decode("utf-8", "surrogateescape")),
    ("latin-1 À®", "\xc0\xae"),
    ("double-encoded %252e%252e%252f", "%252e%252e%252f"),
    ("spaces", " a b "),
    ("plus", "a+b"),
    ("RTL override", "abc\u202e/../"),
    ("zero-width + BOM", "\u200b\ufeff"),
    ("emoji", "😀/😀"),
    ("whitespace only", " \t "),
    ("empty", ""),
    ("8 000 chars", "a" * 8_000),
    ("20 000 chars", "b" * 20_000),
    ("70 000 chars", "c" * 70_000),
]


@attrs.frozen
class Target:
    """One position an id takes: the call, the route it must reach, where the id must arrive."""

    name: str
    kind: str
    """``path``, ``query`` or ``body``: where the id travels."""
    route: str
    call: Callable[[AsyncBillingOS, str], Awaitable[Any]]
    arrives: Callable[[Any, str], bool]
    """Given the received request and the attack, whether the id arrived intact where it should."""
    check: Callable[[Any, str, FakeBillingOS], None] | None = None
    """End-to-end check of the call's result (seeded customers carry the attack as external id)."""


def _segment(index: int) -> Callable[[Any, str], bool]:
    def arrived(received: Any, attack: str) -> bool:
        segments = [unquote(s) for s in received.path.strip("/").split("/")]
        return segments[index] == attack and received.query == {}

    return arrived


def _query(name: str, **others: str) -> Callable[[Any, str], bool]:
    def arrived(received: Any, attack: str) -> bool:
        return dict(received.query) == {name: attack, **others}

    return arrived


def _body(name: str) -> Callable[[Any, str], bool]:
    def arrived(received: Any, attack: str) -> bool:
        return isinstance(received.json, dict) and received.json.get(name) == attack

    return arrived


def _seeded_customer(result: Any, attack: str, fake: FakeBillingOS) -> None:
    assert result.external_id == attack
    record = fake.customer(attack)
    assert record is not None
    assert result.id == record.id


def _has_access(result: Any, attack: str, fake: FakeBillingOS) -> None:
    assert result.has_access, result  # the seeded customer's subscription, found by the attack id


def _metrics_of(result: Any, attack: str, fake: FakeBillingOS) -> None:
    assert result.customer_id == attack


def _counted(result: Any, attack: str, fake: FakeBillingOS) -> None:
    assert fake.usage_of(attack, FEATURE) >= 1


TARGETS: list[Target] = [
    Target("customers.get", "path", "GET /customers/{id}", lambda b, a: b.customers.get(a), _segment(1)),
    Target(
        "customers.get_by_external_id",
        "path",
        "GET /customers/external/{external_id}",
        lambda b, a: b.customers.get_by_external_id(a),
        _segment(2),
        _seeded_customer,
    ),
    Target(
        "customers.update",
        "path",
        "PATCH /customers/{id}",
        lambda b, a: b.customers.update(a, name="x"),
        _segment(1),
    ),
    Target(
        "customers.delete", "path", "DELETE /customers/{id}", lambda b, a: b.customers.delete(a), _segment(1)
    ),
    Target(
        "subscriptions.get",
        "path",
        "GET /subscriptions/{id}",
        lambda b, a: b.subscriptions.get(a),
        _segment(1),
    ),
    Target(
        "subscriptions.update",
        "path",
        "PATCH /subscriptions/{id}",
        lambda b, a: b.subscriptions.update(a, cancel_at_period_end=True),
        _segment(1),
    ),
    Target(
        "subscriptions.cancel",
        "path",
        "POST /subscriptions/{id}/cancel",
        lambda b, a: b.subscriptions.cancel(a),
        _segment(1),
    ),
    Target(
        "subscriptions.reactivate",
        "path",
        "POST /subscriptions/{id}/reactivate",
        lambda b, a: b.subscriptions.reactivate(a),
        _segment(1),
    ),
    Target(
        "session_tokens.revoke",
        "path",
        "DELETE /v1/session-tokens/{id}",
        lambda b, a: b.session_tokens.revoke(a),
        _segment(2),
    ),
    Target(
        "entitlements.check(customer)",
        "query",
        "GET /v1/usage/check",
        lambda b, a: b.entitlements.check(a, FEATURE),
        _query("customer_id", feature_key=FEATURE),
        _has_access,
    ),
    Target(
        "entitlements.check(feature)",
        "query",
        "GET /v1/usage/check",
        lambda b, a: b.entitlements.check("user_ok", a),
        lambda received, attack: dict(received.query) == {"customer_id": "user_ok", "feature_key": attack},
    ),
    Target(
        "usage.metrics",
        "query",
        "GET /v1/usage/metrics",
        lambda b, a: b.usage.metrics(a),
        _query("customer_id"),
        _metrics_of,
    ),
    Target(
        "customers.list(email)",
        "query",
        "GET /customers",
        lambda b, a: b.customers.list(email=a).page(1),
        _query("email", limit="50", page="1"),
    ),
    Target(
        "usage.track (body)",
        "body",
        "POST /v1/usage/track",
        lambda b, a: b.usage.track(a, FEATURE, 1),
        _body("customer_id"),
        _counted,
    ),
    Target(
        "usage.track(feature) (body)",
        "body",
        "POST /v1/usage/track",
        lambda b, a: b.usage.track("user_ok", a, 1),
        _body("feature_key"),
    ),
]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeBillingOS, str]]:
    fake = FakeBillingOS(rate_limits=None)
    fake.add_feature(FEATURE, "usage_quota")
    fake.add_product("Pro", features={FEATURE: 1_000_000}, price_id=PRICE)
    fake.subscribe(fake.add_customer("user_ok"), PRICE)
    for number, (_, attack) in enumerate(ATTACKS):
        if attack.strip():
            fake.subscribe(fake.add_customer(attack, email=f"hostile{number}@example.com"), PRICE)
    with fake.serve() as url:
        yield fake, url


@pytest.fixture
async def billing(served: tuple[FakeBillingOS, str]) -> AsyncIterator[AsyncBillingOS]:
    fake, url = served
    async with AsyncBillingOS(fake.secret_key, api_url=url, max_retries=0) as client:
        yield client


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", str(exc))
    for key, label in (
        ("CR or LF", "CR/LF"),
        ("lone surrogate", "lone surrogate"),
        ("URL too long", "URL > 64 kB"),
        ("must not be empty", "blank"),
        ("at most 255", "> 255 chars"),
    ):
        if key in message:
            return label
    return message[:40]


@pytest.mark.parametrize(("label", "attack"), ATTACKS, ids=[label for label, _ in ATTACKS])
async def test_a_hostile_id_reaches_its_own_route_intact_or_is_refused(
    served: tuple[FakeBillingOS, str],
    billing: AsyncBillingOS,
    label: str,
    attack: str,
    figure: Callable[[str], None],
) -> None:
    fake, _ = served
    outcomes: dict[str, Counter[str]] = {}
    for target in TARGETS:
        seen = outcomes.setdefault(target.kind, Counter())
        before = len(fake.requests)
        try:
            result = await target.call(billing, attack)
        except ValidationError as exc:
            if exc.status_code is None:  # refused by the SDK: nothing may have been sent
                assert len(fake.requests) == before, (target.name, fake.requests[before:])
                seen[f"SDK refused ({_short(exc)})"] += 1
                continue
            result = exc
        except BillingOSError as exc:
            result = exc
        received = fake.requests[before:]
        if not received:
            # The HTTP server refused the request line before the app saw it (too long).
            assert isinstance(result, BillingOSError), (target.name, result)
            assert result.status_code is not None, result
            assert 400 <= result.status_code < 500, result
            seen[f"HTTP server refused ({result.status_code})"] += 1
            continue
        assert len(received) == 1, (target.name, received)
        request = received[0]
        assert request.route == target.route, (
            f"{target.name}: {attack!r} reached {request.route} via {request.path}"
        )
        body = json.dumps(request.json)[:200]
        assert target.arrives(request, attack), (
            f"{target.name}: {attack!r} arrived as {request.path} {request.query} {body}"
        )
        if target.check is not None and attack.strip():
            assert not isinstance(result, BaseException), (target.name, result)
            target.check(result, attack, fake)
        seen["intact"] += 1
    figure(
        f"{label}: "
        + "; ".join(
            f"{kind} " + " + ".join(f"{n} {outcome}" for outcome, n in counts.items())
            for kind, counts in outcomes.items()
        )
    )
