"""``timeout`` as a number bounds the whole attempt, from connect to the last body byte (issue 12, item 6).

Before: with ``timeout=2, max_retries=0`` a server trickling its head or body one byte at a time, each byte
well within the read timeout, kept the call alive for 20 s on both backends (the timeout was per read).
Now the request path cancels the attempt at its deadline (``asyncio.timeout`` / a trio cancel scope, no
task added) and raises ``RequestTimeoutError``; the server, a raw asyncio one (``_hostile.py``), counts
the bytes it trickled before the client hung up. An ``httpx2.Timeout`` keeps its per-phase meaning.

Each scenario runs on asyncio with both backends and on trio (httpx2; aiohttp is asyncio only).
"""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from billingos import AsyncBillingOS, RequestTimeoutError, RetryPolicy

from ._event_loops import LOOPS_AND_BACKENDS, run_on
from ._hostile import CHECK_BODY, HostileServer, drip, head

SECRET = "sk_test_" + "h" * 32
COMBOS = LOOPS_AND_BACKENDS
NO_WAIT = RetryPolicy(initial_backoff=0.0, max_backoff=0.0)
ANSWER = head(len(CHECK_BODY)) + CHECK_BODY


def client(url: str, backend: str, **kwargs: Any) -> AsyncBillingOS:
    return AsyncBillingOS(SECRET, api_url=url, http_backend=backend, retry_policy=NO_WAIT, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("loop", "backend"), COMBOS)
@pytest.mark.parametrize("where", ["head", "body"])
def test_a_trickled_answer_is_cut_at_the_deadline(loop: str, backend: str, where: str, figure) -> None:
    deadline, interval = 1.0, 0.05
    dripped: list[int] = []
    if where == "head":
        answers = [drip(ANSWER, interval, dripped)]
    else:
        first = head(len(CHECK_BODY))

        async def answer(server: HostileServer, writer: Any) -> None:
            await server.write(writer, first)
            await drip(CHECK_BODY, interval, dripped)(server, writer)

        answers = [answer]
    server = HostileServer(answers)
    whole = len(ANSWER) if where == "head" else len(CHECK_BODY)

    async def main() -> float:
        async with client(url, backend, timeout=deadline, max_retries=0) as billing:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError) as caught:
                await billing.entitlements.check("user_1", "api_calls")
            took = time.monotonic() - started
            assert caught.value.code == "timeout"
            assert "whole attempt" in caught.value.message
            assert caught.value.request_id is not None
            # The pool still works: a well-behaved answer on the next call.
            assert (await billing.entitlements.check("user_1", "api_calls")).has_access
            return took

    with server.running() as url:
        took = run_on(loop, main)
    figure(
        f"{loop}/{backend}, {where} trickled 1 byte per {interval * 1000:.0f} ms ({whole} bytes: "
        f"{whole * interval:.1f} s whole): timeout={deadline:g} cut the call after {took:.2f} s, with "
        f"{dripped[0]} of {whole} bytes sent (before: the call lived until the last byte)"
    )
    assert dripped[0] < whole  # cut mid-answer, not after it (the figure shows when)
    assert server.requests == 2


@pytest.mark.parametrize(("loop", "backend"), COMBOS)
def test_a_deadline_counts_as_an_attempt_a_get_is_retried_a_create_is_not(
    loop: str, backend: str, figure
) -> None:
    """A GET cut at its deadline is retried (repeating it is harmless); a customer create is not: the
    request may have reached the server, the existing "may have been sent" rule."""
    dripped: list[int] = []
    server = HostileServer([drip(ANSWER, 0.05, dripped) for _ in range(3)])

    async def main() -> None:
        async with client(url, backend, timeout=0.3, max_retries=1) as billing:
            with pytest.raises(RequestTimeoutError):
                await billing.entitlements.check("user_1", "api_calls")
            assert server.requests == 2  # the first attempt and its one retry
            with pytest.raises(RequestTimeoutError) as caught:
                await billing.customers.create("a@example.com", max_retries=3)
            assert caught.value._maybe_sent is True  # type: ignore[attr-defined]
            assert server.requests == 3  # one attempt: not retried

    with server.running() as url:
        run_on(loop, main)
    figure(
        f"{loop}/{backend}: GET with max_retries=1 -> 2 attempts cut at 0.3 s each; POST /customers with "
        f"max_retries=3 -> 1 attempt (may have been sent, not repeated)"
    )


@pytest.mark.parametrize(("loop", "backend"), COMBOS)
def test_an_httpx2_timeout_keeps_its_per_phase_meaning(loop: str, backend: str, figure) -> None:
    """``httpx2.Timeout(0.3)``: each read may wait 0.3 s, the whole answer may take longer."""
    interval = 0.01
    dripped: list[int] = []
    first = head(len(CHECK_BODY))

    async def answer(server: HostileServer, writer: Any) -> None:
        await server.write(writer, first)
        await drip(CHECK_BODY, interval, dripped)(server, writer)

    server = HostileServer([answer])

    async def main() -> float:
        async with client(url, backend, timeout=httpx2.Timeout(0.3), max_retries=0) as billing:
            started = time.monotonic()
            assert (await billing.entitlements.check("user_1", "api_calls")).has_access
            return time.monotonic() - started

    with server.running() as url:
        took = run_on(loop, main)
    figure(
        f"{loop}/{backend}: httpx2.Timeout(0.3), body trickled over {len(CHECK_BODY) * interval:.1f} s: "
        f"answered after {took:.2f} s (per read, no whole-attempt bound)"
    )
    assert dripped == [len(CHECK_BODY)]  # every byte trickled, and the whole answer was accepted
