"""Helpers shared by the end-to-end tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import attrs

from billingos.testing import FakeBillingOS, Plan, SubscriptionRecord

QUOTA = 100
"""The ``api_calls`` quota of the ``pro`` plan."""


class Loopback:
    """The ASGI app of the session-wide server: forwards every request to the mounted fake's app."""

    def __init__(self) -> None:
        self.url = ""
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app
        if app is None:  # nothing mounted: a visible 503 rather than a hang
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    @contextmanager
    def mount(self, fake: FakeBillingOS) -> Iterator[str]:
        """Route every request to ``fake`` until the block exits; yields the base URL."""
        previous, self._app = self._app, fake.app
        try:
            yield self.url
        finally:
            self._app = previous


@attrs.frozen
class Seeded:
    """The catalogue the ``seeded`` fixture puts in the fake."""

    pro: Plan
    """api_calls (quota ``QUOTA``), sso (flag), seats (numeric limit 5)."""
    basic: Plan
    """sso only."""
    big: Plan
    """api_calls with a quota of one million, for the concurrency tests."""
    customer: str
    """An external id subscribed (``active``) to ``pro``."""
    subscription: SubscriptionRecord
    """``customer``'s subscription to ``pro``, the server's live record of it."""


def seed(fake: FakeBillingOS) -> Seeded:
    fake.add_feature("api_calls", "usage_quota", title="API calls")
    fake.add_feature("sso", "boolean_flag")
    fake.add_feature("seats", "numeric_limit")
    pro = fake.add_product("Pro", features={"api_calls": QUOTA, "sso": True, "seats": 5}, amount=4900)
    basic = fake.add_product("Basic", features={"sso": True}, amount=900)
    big = fake.add_product("Big", features={"api_calls": 1_000_000})
    fake.add_customer("user_42", email="ada@example.com", name="Ada")
    subscription = fake.subscribe("user_42", pro.price_id)
    return Seeded(pro=pro, basic=basic, big=big, customer="user_42", subscription=subscription)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released without ``listen``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def minted_tokens(fake: FakeBillingOS) -> int:
    """How many session tokens the server minted: the server-side truth for the token tests."""
    return len(fake.session_tokens())


def statuses(fake: FakeBillingOS, route: str) -> list[int | None]:
    """The status the server answered to each request on ``route`` (``None``: processed, answer dropped)."""
    return [r.status for r in fake.requests_to(route)]


def request_ids(fake: FakeBillingOS, route: str) -> set[str]:
    return {r.request_id for r in fake.requests_to(route)}


async def wait_for_requests(fake: FakeBillingOS, route: str, count: int) -> None:
    """Until the server has recorded ``count`` requests on ``route`` (it records a request once processed)."""
    with anyio.fail_after(5):
        while True:
            if len(fake.requests_to(route)) >= count:
                return
            await anyio.sleep(0.01)
