"""Scenario 3: loopback throughput against the embedded server running in its own process.

    python -m bench.loopback [--quick | --smoke] [--profile]
    python -m bench --only loopback

Four clients send the same ``GET /v1/usage/check`` (``check_entitlement("user_1", "api_calls")``) to one
``FakeBillingOS`` served by uvicorn in a child process (``bench/_server_proc.py``), at concurrency 1, 16, 64
and 256: the SDK (default httpx2 backend), raw ``httpx2.AsyncClient``, raw ``aiohttp.ClientSession``, and the
SDK with ``http_backend="aiohttp"``. At each concurrency every client is built with the same pinned pool
(``max_connections = min(concurrency, 100)``, all kept alive), so the ratios measure the clients, not how
large each pool happened to grow. See :func:`run` for the method and the goals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx2

from billingos import AsyncBillingOS
from billingos._config import DEFAULT_LIMITS, DEFAULT_TIMEOUT, HttpBackend

from ._harness import Context, Goal, Row, fmt
from ._server_proc import ServerProcess, ServerStats

CONCURRENCY = (1, 16, 64, 256)
CUSTOMER, FEATURE = "user_1", "api_calls"  # seed_sandbox: user_1 is on Pro, which grants api_calls
PATH = "/v1/usage/check"
PARAMS = {"customer_id": CUSTOMER, "feature_key": FEATURE}

SEQUENTIAL_GOAL = Goal("<=", 1.1)  # sequential SDK / raw httpx2, time per call
HTTPX_THROUGHPUT_GOAL = Goal(">=", 0.95)  # default backend vs raw httpx2, at every concurrency
AIOHTTP_THROUGHPUT_GOAL = Goal(">=", 0.9)  # aiohttp backend vs raw aiohttp, at every concurrency
KEEPALIVE_GOAL = Goal("==", 1)  # connections opened by N sequential calls

SDK, HTTPX, AIOHTTP, SDK_AIOHTTP = "SDK", "raw httpx2", "raw aiohttp", "SDK[aiohttp]"
Call = Callable[[], Awaitable[object]]


@dataclass
class Samples:
    """One client's measurements at one concurrency, one entry per repetition."""

    wall: list[float] = field(default_factory=list)  # seconds per call
    cpu: list[float] = field(default_factory=list)  # this process's CPU seconds per call
    server_cpu: list[float] = field(default_factory=list)  # the server process's CPU seconds per call
    connections: list[int] = field(default_factory=list)  # TCP connections the server accepted
    pooled: list[int] = field(default_factory=list)  # connections the client's pool holds after


# ---------------------------------------------------------------------------------------------
# The clients: each yields an awaitable "one check" function


def pinned(concurrency: int) -> httpx2.Limits:
    """The pool every client gets at ``concurrency``: as many connections as lanes (at most the default)."""
    size = min(concurrency, DEFAULT_LIMITS.max_connections or concurrency)
    return httpx2.Limits(
        max_connections=size, max_keepalive_connections=size, keepalive_expiry=DEFAULT_LIMITS.keepalive_expiry
    )


@contextlib.asynccontextmanager
async def sdk_client(
    server: ServerProcess, backend: HttpBackend, limits: httpx2.Limits = DEFAULT_LIMITS
) -> AsyncIterator[Call]:
    async with AsyncBillingOS(
        server.secret_key, api_url=server.url, http_backend=backend, limits=limits
    ) as billing:

        def call() -> Awaitable[object]:
            return billing.check_entitlement(CUSTOMER, FEATURE)

        transport = billing._requester.transport  # its backend is built on the first call
        if backend == "httpx2":
            call.pool_size = lambda: _pool_size(transport.backend.client)  # type: ignore[union-attr]
        else:
            call.pool_size = lambda: _aiohttp_pool_size(transport.backend.session)  # type: ignore[union-attr]
        yield call


@contextlib.asynccontextmanager
async def httpx_client(server: ServerProcess, limits: httpx2.Limits = DEFAULT_LIMITS) -> AsyncIterator[Call]:
    """What a user writes with httpx2: the same pool and timeout as the SDK, auth header set once."""
    headers = {"authorization": f"Bearer {server.secret_key}", "accept": "application/json"}
    timeout = httpx2.Timeout(DEFAULT_TIMEOUT, connect=5.0)
    async with httpx2.AsyncClient(
        base_url=server.url, headers=headers, limits=limits, timeout=timeout
    ) as client:

        async def call() -> object:
            response = await client.get(PATH, params=PARAMS)
            if response.status_code != 200:
                raise RuntimeError(f"raw httpx2: HTTP {response.status_code}")
            return json.loads(response.content)

        call.pool_size = lambda: _pool_size(client)  # type: ignore[attr-defined]
        yield call


def _pool_size(client: httpx2.AsyncClient) -> int:
    """Connections an httpx2 client's pool holds (httpcore2 internals)."""
    return len(client._transport._pool.connections)  # type: ignore[attr-defined]


def _aiohttp_pool_size(session: object) -> int:
    """Connections an aiohttp session holds: idle ones plus those in use (aiohttp connector internals)."""
    connector = getattr(session, "connector", None)
    if connector is None:
        return 0
    idle = sum(len(v) for v in connector._conns.values())
    return idle + len(connector._acquired)


@contextlib.asynccontextmanager
async def aiohttp_client(
    server: ServerProcess, limits: httpx2.Limits = DEFAULT_LIMITS
) -> AsyncIterator[Call]:
    """What a user writes with aiohttp: one ClientSession with the same pool size."""
    import aiohttp

    headers = {"authorization": f"Bearer {server.secret_key}", "accept": "application/json"}
    connector = aiohttp.TCPConnector(
        limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry
    )
    async with aiohttp.ClientSession(server.url, headers=headers, connector=connector) as session:

        async def call() -> object:
            async with session.get(PATH, params=PARAMS) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"raw aiohttp: HTTP {response.status}")
            return json.loads(body)

        call.pool_size = lambda: _aiohttp_pool_size(session)  # type: ignore[attr-defined]
        yield call


def aiohttp_installed() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def clients(
    server: ServerProcess, limits: httpx2.Limits = DEFAULT_LIMITS
) -> dict[str, contextlib.AbstractAsyncContextManager[Call]]:
    found: dict[str, contextlib.AbstractAsyncContextManager[Call]] = {
        SDK: sdk_client(server, "httpx2", limits),
        HTTPX: httpx_client(server, limits),
    }
    if aiohttp_installed():
        found[AIOHTTP] = aiohttp_client(server, limits)
        found[SDK_AIOHTTP] = sdk_client(server, "aiohttp", limits)
    return found


# ---------------------------------------------------------------------------------------------
# Driving the load


async def drive(call: Call, calls: int, concurrency: int) -> None:
    """``calls`` calls in ``concurrency`` lanes, each lane starting its next call when the previous ends."""
    if concurrency == 1:
        for _ in range(calls):
            await call()
        return

    async def lane(count: int) -> None:
        for _ in range(count):
            await call()

    share, extra = divmod(calls, concurrency)
    await asyncio.gather(*(lane(share + (i < extra)) for i in range(concurrency)))


async def measure(server: ServerProcess, call: Call, calls: int, concurrency: int, into: Samples) -> None:
    gc.collect()
    before = server.stats()
    cpu, wall = time.process_time(), time.perf_counter()
    await drive(call, calls, concurrency)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = server.stats()
    into.wall.append(wall / calls)
    into.cpu.append(cpu / calls)
    into.server_cpu.append((after.cpu - before.cpu) / calls)
    into.connections.append(after.connections - before.connections)
    pool_size = getattr(call, "pool_size", None)
    if pool_size is not None:
        into.pooled.append(pool_size())


async def keepalive(
    server: ServerProcess, factory: contextlib.AbstractAsyncContextManager[Call], calls: int
) -> int:
    """Connections the server accepted for ``calls`` sequential calls through a fresh client."""
    before: ServerStats = server.stats()
    async with factory as call:
        for _ in range(calls):
            await call()
    return server.stats().connections - before.connections


async def cold_burst(
    server: ServerProcess, factory: contextlib.AbstractAsyncContextManager[Call], calls: int
) -> Samples:
    """A fresh client's first ``calls`` calls at the highest concurrency: the pool grows under load.

    The throughput batches run on warmed-up pools; this is the burst a service sees when traffic jumps.
    """
    burst = Samples()
    async with factory as call:
        await measure(server, call, calls, CONCURRENCY[-1], burst)
    return burst


# ---------------------------------------------------------------------------------------------
# The scenario


@dataclass
class Results:
    calls: int
    reps: int
    samples: dict[int, dict[str, Samples]]  # concurrency -> client -> samples
    keepalive_calls: int
    keepalive: dict[str, int]
    bursts: dict[str, Samples]  # a fresh client's first `calls` calls at the highest concurrency


async def _measure_all(
    server: ServerProcess, calls: int, reps: int, keepalive_calls: int, log: Callable[[str], None]
) -> Results:
    samples: dict[int, dict[str, Samples]] = {}
    for concurrency in CONCURRENCY:
        async with contextlib.AsyncExitStack() as stack:
            calls_by_name = {
                name: await stack.enter_async_context(cm)
                for name, cm in clients(server, pinned(concurrency)).items()
            }
            names = list(calls_by_name)
            for name, call in calls_by_name.items():  # the same answer from every client
                answer = await call()
                has_access = answer.has_access if hasattr(answer, "has_access") else answer["has_access"]  # type: ignore[index]
                if has_access is not True:
                    raise RuntimeError(f"{name}: unexpected answer {answer!r}")
            level = samples[concurrency] = {name: Samples() for name in names}
            batch = batch_calls(calls, concurrency)
            for name in names:  # warm-up: open the pool's connections, unrecorded
                await drive(calls_by_name[name], min(batch, 4 * concurrency), concurrency)
            for rep in range(reps):
                for name in turns(names, rep):
                    await measure(server, calls_by_name[name], batch, concurrency, level[name])
            log(
                f"   c={concurrency:<3} "
                + "  ".join(f"{n} {fmt(statistics.median(s.wall) * 1e6)} µs" for n, s in level.items())
            )
    keepalives = {name: await keepalive(server, cm, keepalive_calls) for name, cm in clients(server).items()}
    burst_calls = batch_calls(calls, CONCURRENCY[-1])
    bursts = {name: await cold_burst(server, cm, burst_calls) for name, cm in clients(server).items()}
    return Results(calls, reps, samples, keepalive_calls, keepalives, bursts)


def batch_calls(calls: int, concurrency: int) -> int:
    """Calls per batch: ``calls``, or 4 per lane where that is more (256 lanes need 1 024 calls)."""
    return max(calls, 4 * concurrency)


def turns(names: Sequence[str], rep: int) -> list[str]:
    """The order the clients run in at repetition ``rep``: each SDK right next to the raw client it is
    compared with, so a ratio's two batches run back to back (the machine's slow spells, seconds long on a
    shared 2-CPU VM, then hit both), each going first every other repetition, and the pairs swapping too.
    """
    pairs = [[SDK, HTTPX], [SDK_AIOHTTP, AIOHTTP]]
    order: list[list[str]] = []
    for pair in pairs:
        present = [name for name in pair if name in names]
        order.append(present if rep % 2 == 0 else present[::-1])
    if (rep // 2) % 2:
        order.reverse()
    flat = [name for pair in order for name in pair]
    return flat + [name for name in names if name not in flat]


def _ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def rows_from(results: Results) -> list[Row]:
    rows: list[Row] = []
    for concurrency, level in results.samples.items():
        sdk, raw = level[SDK], level[HTTPX]
        if concurrency == 1:
            rows.append(
                Row.measured(
                    "c=1 (sequential): SDK / raw httpx2, time per call",
                    _ratios(sdk.wall, raw.wall),
                    goal=SEQUENTIAL_GOAL,
                )
            )
        # Throughput ratio = inverse time ratio: the same number of calls in each batch.
        rows.append(
            Row.measured(
                f"c={concurrency}: SDK throughput / raw httpx2",
                _ratios(raw.wall, sdk.wall),
                goal=HTTPX_THROUGHPUT_GOAL,
            )
        )
        rows.append(
            Row.measured(
                f"c={concurrency}: SDK / raw httpx2, client CPU per call",
                _ratios(sdk.cpu, raw.cpu),
                note="this process's CPU time: the client's own cost, whatever the server and the machine do",
                chart=False,
            )
        )
        if AIOHTTP in level:
            fast, raw_aio = level[SDK_AIOHTTP], level[AIOHTTP]
            rows.append(
                Row.measured(
                    f"c={concurrency}: SDK[aiohttp] / raw aiohttp, client CPU per call",
                    _ratios(fast.cpu, raw_aio.cpu),
                    chart=False,
                )
            )
            rows.append(
                Row.measured(
                    f"c={concurrency}: SDK[aiohttp] throughput / raw aiohttp",
                    _ratios(raw_aio.wall, fast.wall),
                    goal=AIOHTTP_THROUGHPUT_GOAL,
                )
            )
            rows.append(
                Row.measured(
                    f"c={concurrency}: SDK[aiohttp] throughput / SDK (httpx2)",
                    _ratios(sdk.wall, fast.wall),
                    chart=False,
                )
            )
        for name, s in level.items():
            note = (
                f"client CPU {fmt(statistics.median(s.cpu) * 1e6)} µs/call, server CPU "
                f"{fmt(statistics.median(s.server_cpu) * 1e6)} µs/call, "
                f"{fmt(statistics.median(s.connections))} connections opened per {batch_calls(results.calls, concurrency)} calls"
            )
            if s.pooled:
                note += f", pool of {fmt(statistics.median(s.pooled))} (pinned at {pinned(concurrency).max_connections})"
            rows.append(
                Row.measured(
                    f"c={concurrency}: {name}, per call", [w * 1e6 for w in s.wall], unit="µs", note=note
                )
            )
    for name, opened in results.keepalive.items():
        client_goal = KEEPALIVE_GOAL if name in (SDK, SDK_AIOHTTP) else None
        rows.append(
            Row(
                name=f"keep-alive: connections for {results.keepalive_calls} sequential calls, {name}",
                figure=opened,
                unit="",
                goal=None if client_goal is None else str(client_goal),
                met=None if client_goal is None else client_goal.met(opened),
            )
        )
    for name, burst in results.bursts.items():
        rows.append(
            Row(
                name=f"cold burst c={CONCURRENCY[-1]}: connections opened for {batch_calls(results.calls, CONCURRENCY[-1])} calls, {name}",
                figure=burst.connections[0],
                unit="",
                note=f"{fmt(burst.wall[0] * 1e6)} µs/call, client CPU {fmt(burst.cpu[0] * 1e6)} µs/call",
            )
        )
    if AIOHTTP not in results.samples[CONCURRENCY[0]]:
        rows.append(
            Row.skipped(
                "SDK[aiohttp] throughput / raw aiohttp",
                "aiohttp backend not installed: pip install 'billingos[aiohttp]'",
                goal=AIOHTTP_THROUGHPUT_GOAL,
            )
        )
    return rows


def run(ctx: Context) -> list[Row]:
    """The SDK's ``check_entitlement`` over loopback against the embedded server (``FakeBillingOS``, rate
    limits off, seeded) running under uvicorn in a process of its own, next to the same GET written with
    raw ``httpx2.AsyncClient`` and raw ``aiohttp.ClientSession``, and the SDK with ``http_backend="aiohttp"``.
    At each concurrency every client is built anew with the same pinned pool, ``max_connections =
    min(concurrency, 100)``, all kept alive when idle, and the per-call rows note the pool size each client
    ended with, so a ratio compares the clients, not their pools (with httpx 0.28 the pool size after a burst
    was luck, 16 to 80 connections, and httpcore 1.0.9's cost per call grew with its square). At each
    concurrency (1, 16, 64, 256 lanes, each lane starting its next call when its previous one ends) every
    client makes the same number of calls per batch (400, or 4 per lane where that is more); each SDK runs
    right next to the raw client it is compared with, the two taking turns to go first (:func:`turns`),
    and each figure is the median over 11 repetitions of the per-repetition ratio, with its range as the
    spread. On Linux with 2 CPUs or more the server process is pinned to one CPU and this process to the
    others, so that neither takes the other's CPU in the middle of a batch. The server counts the TCP connections it accepts, so keep-alive is
    checked server-side: a fresh client making sequential calls must open exactly one. Per-call rows note
    this process's CPU time per call (the client's own cost) and the server's: when the server's CPU per
    call is close to the wall time per call, the server, not the client, is the bottleneck.
    """
    calls = ctx.pick(full=400, quick=200, smoke=40)
    reps = ctx.pick(full=11, quick=3, smoke=1)
    keepalive_calls = ctx.pick(full=1000, quick=300, smoke=20)
    with ServerProcess(separate_cpus=True) as server:
        ctx.log(f"   {server.placement}")
        results = asyncio.run(_measure_all(server, calls, reps, keepalive_calls, ctx.log))
    return rows_from(results)


# ---------------------------------------------------------------------------------------------
# Profiling the SDK side (--profile)


async def _profile_async(server: ServerProcess, backend: HttpBackend, concurrency: int, calls: int) -> str:
    """cProfile of ``calls`` SDK calls at ``concurrency``: the top functions by own time, then by cumulative."""
    import cProfile
    import io
    import pstats

    async with sdk_client(server, backend) as call:
        await drive(call, min(calls, 4 * concurrency), concurrency)  # warm the pool up, unrecorded
        profiler = cProfile.Profile()
        profiler.enable()
        await drive(call, calls, concurrency)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return out.getvalue()


def profile(backends: Sequence[HttpBackend], calls: int) -> None:
    """Print a profile of the SDK side at concurrency 1 and 256 (cProfile: exact call counts, all frames)."""
    with ServerProcess() as server:
        for backend in backends:
            for concurrency in (1, 256):
                print(f"\n=== SDK http_backend={backend!r}, concurrency {concurrency}, {calls} calls ===")
                print(asyncio.run(_profile_async(server, backend, concurrency, calls)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loopback", description=__doc__.split("\n")[0])
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="fewer calls and repetitions (~20 s)")
    speed.add_argument("--smoke", action="store_true", help="tiny counts: only checks that it runs")
    parser.add_argument("--profile", action="store_true", help="profile the SDK side instead of measuring")
    args = parser.parse_args(argv)
    ctx = Context(mode="smoke" if args.smoke else "quick" if args.quick else "full")
    if args.profile:
        backends: list[HttpBackend] = ["httpx2", "aiohttp"] if aiohttp_installed() else ["httpx2"]
        profile(backends, ctx.pick(full=4000, quick=1000, smoke=50))
        return 0
    started = time.perf_counter()
    rows = run(ctx)
    print()
    for row in rows:
        spread = f"  [{row.spread_text()}]" if row.spread else ""
        goal = f"  goal {row.goal}" if row.goal else ""
        note = f"  ({row.note})" if row.note else ""
        print(f"{row.name:<62} {row.figure_text():>10}{spread}{goal}  {row.status}{note}")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
