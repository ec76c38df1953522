"""The session-token cache of as_customer: freshness rule, LRU bound, drop, single flight."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from billingos import SessionToken
from billingos._tokens import TokenCache, TokenKey, needs_refresh

from ._factories import make_token

NOW = 1_800_000_000


def token(n: int, *, iat: int = NOW, exp: int = NOW + 3600) -> SessionToken:
    return SessionToken.decode(make_token(f"tok_{n:032x}", iat=iat, exp=exp))


def key(user: str) -> TokenKey:
    return (user, None, None)


@pytest.mark.parametrize(
    ("lifetime", "left", "refresh"),
    [
        (3600, 361, False),  # 10 % of an hour is 360 s
        (3600, 359, True),
        (300, 61, False),  # at least 60 s
        (300, 59, True),
        (60, 31, False),  # never more than half the lifetime
        (60, 29, True),
        (86400, 8641, False),
        (86400, 8639, True),
    ],
)
def test_needs_refresh_when_less_than_max_60s_or_10_percent_remains(
    lifetime: int, left: int, refresh: bool
) -> None:
    exp = NOW + left
    assert needs_refresh(token(1, iat=exp - lifetime, exp=exp), NOW) is refresh


def test_a_token_without_iat_is_refreshed_60s_before_exp() -> None:
    no_iat = attrs.evolve(token(1, exp=NOW + 61), issued_at=None)
    assert not needs_refresh(no_iat, NOW)
    assert needs_refresh(no_iat, NOW + 2)


async def _put(cache: TokenCache, k: TokenKey, value: SessionToken) -> None:
    async def mint() -> SessionToken:
        return value

    assert await cache.get(k, mint) is value


async def test_the_cache_keeps_at_most_max_entries_dropping_the_least_recently_used() -> None:
    cache = TokenCache(max_entries=2, clock=lambda: NOW)
    await _put(cache, key("a"), token(1))
    await _put(cache, key("b"), token(2))
    assert cache.fresh(key("a")) is not None  # a is now the most recently used
    await _put(cache, key("c"), token(3))
    assert len(cache) == 2
    assert key("b") not in cache
    assert key("a") in cache
    assert key("c") in cache
    assert cache.mints == 3
    assert repr(cache) == "<TokenCache entries=2 max_entries=2 mints=3>"


async def test_drop_forgets_only_the_token_it_names() -> None:
    cache = TokenCache(clock=lambda: NOW)
    old, new = token(1), token(2)
    await _put(cache, key("a"), new)
    cache.drop(key("a"), old)  # a stale refusal of a token already replaced
    assert cache.fresh(key("a")) is new
    cache.drop(key("a"), new)
    assert cache.fresh(key("a")) is None
    cache.drop(key("zzz"), new)  # nothing cached: nothing to do


async def test_a_stale_entry_is_minted_anew() -> None:
    now = [NOW]
    cache = TokenCache(clock=lambda: now[0])
    await _put(cache, key("a"), token(1))
    now[0] = NOW + 3300  # 300 s left of an hour: less than 360
    assert cache.fresh(key("a")) is None
    await _put(cache, key("a"), token(2))
    assert cache.mints == 2


async def test_concurrent_gets_share_one_mint() -> None:
    cache = TokenCache(clock=lambda: NOW)
    calls = 0
    gate = asyncio.Event()

    async def mint() -> SessionToken:
        nonlocal calls
        calls += 1
        await gate.wait()
        return token(calls)

    tasks = [asyncio.ensure_future(cache.get(key("a"), mint)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert {r.token_id for r in results} == {token(1).token_id}


async def test_a_failed_mint_is_raised_to_every_waiter() -> None:
    cache = TokenCache(clock=lambda: NOW)
    calls = 0
    gate = asyncio.Event()

    async def mint() -> SessionToken:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise RuntimeError("refused")

    tasks = [asyncio.ensure_future(cache.get(key("a"), mint)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(cache) == 0


def test_trio_shares_one_mint_and_a_cancelled_leader_hands_over() -> None:
    import anyio
    import trio  # noqa: F401  (a dev dependency: this test must run, not skip)

    cache = TokenCache(clock=lambda: NOW)
    calls = 0

    async def main() -> None:
        nonlocal calls
        hang = anyio.Event()

        async def hanging_mint() -> SessionToken:
            nonlocal calls
            calls += 1
            await hang.wait()  # never set: its caller is cancelled
            raise AssertionError("unreachable")

        async def mint() -> SessionToken:
            nonlocal calls
            calls += 1
            await anyio.lowlevel.checkpoint()
            return token(calls)

        got: list[SessionToken] = []

        async def waiter() -> None:
            got.append(await cache.get(key("a"), mint))

        leader_scope = anyio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await cache.get(key("a"), hanging_mint)

        async with anyio.create_task_group() as group:
            group.start_soon(leader)
            await anyio.sleep(0.01)
            for _ in range(5):
                group.start_soon(waiter)
            await anyio.sleep(0.01)
            leader_scope.cancel()
        assert calls == 2  # the hung one, then one shared by the five waiters
        assert len(got) == 5
        assert len({t.token_id for t in got}) == 1

    anyio.run(main, backend="trio")
