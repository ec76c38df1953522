"""What the usage-recorder tests share: the catalogue they seed, and fast retry settings."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from billingos import AsyncBillingOS, RetryPolicy, UsageRecorder
from billingos._outbox import SQLiteOutbox
from billingos.testing import FakeBillingOS, Plan

TRACK = "POST /v1/usage/track"
CUSTOMERS = tuple(f"user_{i}" for i in range(10))
"""Subscribed to ``pro``."""
BIG = 10**9
"""The ``api_calls`` and ``exports`` quota of ``pro``: never reached."""
SMALL = 10
"""The ``small`` quota of ``pro``."""

FAST = RetryPolicy(initial_backoff=0.002, max_backoff=0.02)
"""Backoff for the recorder's own retries in tests: milliseconds, not seconds."""


def seed(fake: FakeBillingOS) -> Plan:
    """``api_calls``/``exports`` (quota ``BIG``), ``small`` (quota ``SMALL``) and the flag ``sso`` on
    ``pro``; ``unsold`` (a quota no plan grants); every customer of ``CUSTOMERS`` subscribed to ``pro``;
    ``user_free`` with no subscription."""
    for key in ("api_calls", "exports", "small", "unsold"):
        fake.add_feature(key, "usage_quota")
    fake.add_feature("sso", "boolean_flag")
    pro = fake.add_product("Pro", features={"api_calls": BIG, "exports": BIG, "small": SMALL, "sso": True})
    for customer in CUSTOMERS:
        fake.add_customer(customer)
        fake.subscribe(customer, pro.price_id)
    fake.add_customer("user_free")
    return pro


def keys_sent(fake: FakeBillingOS) -> list[str]:
    """The idempotency key of every track request the fake received, in order."""
    return [r.json["idempotency_key"] for r in fake.requests_to(TRACK)]


def outbox_rows(path: str) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of an outbox file, read with a connection of our own."""
    conn = sqlite3.connect(path)
    try:
        return {
            "events": conn.execute(
                "SELECT customer_id, feature_key, quantity, events FROM events"
            ).fetchall(),
            "batches": conn.execute(
                "SELECT key, customer_id, feature_key, quantity, events FROM batches ORDER BY rowid"
            ).fetchall(),
            "dead_letters": conn.execute("SELECT key, error_type FROM dead_letters").fetchall(),
        }
    finally:
        conn.close()


async def until(condition: Callable[[], object], limit: float = 5.0) -> None:
    """Poll ``condition`` until it is true: waiting for a state change (a fault rule's hits, a counter)
    that has no event to wait on; ``limit`` seconds fail the test instead of hanging it."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 (the server's counters have no event to await)
            await anyio.sleep(0.001)


def recorder_fixtures(seed_value: int) -> tuple[Any, Any, Any]:
    """The fixtures a recorder test module binds: ``fake, billing, path = recorder_fixtures(7)``.

    ``fake``: a rate-limit-free `FakeBillingOS` with the catalogue of :func:`seed`, its randomness
    seeded with ``seed_value``; ``billing``: an in-process `AsyncBillingOS` talking to it; ``path``: an
    outbox file in the test's temporary directory.
    """

    @pytest.fixture
    def fake() -> FakeBillingOS:
        fake = FakeBillingOS(rate_limits=None, seed=seed_value)
        seed(fake)
        return fake

    @pytest.fixture
    async def billing(fake: FakeBillingOS) -> AsyncIterator[AsyncBillingOS]:
        async with fake.client() as client:
            yield client

    @pytest.fixture
    def path(tmp_path: Path) -> str:
        return str(tmp_path / "usage.db")

    return fake, billing, path


def recorder(billing: AsyncBillingOS, outbox: str | None = None, **options: Any) -> UsageRecorder:
    """A recorder with test-friendly defaults: 20 ms windows, millisecond backoff (``FAST``)."""
    options.setdefault("flush_interval", 0.02)
    options.setdefault("retry_policy", FAST)
    if outbox is not None:
        options["outbox"] = outbox
    return billing.usage_recorder(**options)


def writer_of(r: UsageRecorder) -> SQLiteOutbox:
    """The recorder's SQLite outbox (private: for tests that reach into it)."""
    outbox = r._outbox
    assert isinstance(outbox, SQLiteOutbox)
    return outbox
