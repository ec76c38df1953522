"""Why scenario 3's default-backend throughput swings with concurrency: how many connections each pool holds.

    python -m bench.pool_size          # SDK vs raw httpx at c=1, 16, 64, 256 against one server process

httpcore 1.0.9's pool rescans every connection for every waiting request on each state change
(``AsyncConnectionPool._assign_requests_to_connections``: about 13 000 ``is_idle()`` calls per request
at c=64 under cProfile, for the SDK and raw httpx alike). Its cost per call therefore grows with the
number of connections the pool ends up holding, and that number depends on scheduling: the SDK's
exchanges run in tasks of their own (``_exchange.py``: cancellation safety), which start one loop
iteration later on Python 3.11 and at once on 3.12+ (eager tasks). This prints, per concurrency, the
time and CPU per call and the connections each pool holds afterwards, so a throughput ratio in
``docs/performance.md`` can be read against it. Not part of the report; no goal.
"""

from __future__ import annotations

import asyncio
import sys
import time

from ._server_proc import ServerProcess
from .loopback import drive, httpx_client, sdk_client

CALLS = 1500


async def _compare(server: ServerProcess) -> None:
    async with sdk_client(server, "httpx") as sdk, httpx_client(server) as raw:
        print(
            f"Python {sys.version.split()[0]}, {CALLS} calls per cell (µs per call, CPU µs per call, pool size)"
        )
        for concurrency in (1, 16, 64, 256):
            cells = []
            for name, call in (("SDK", sdk), ("raw httpx", raw)):
                wall, cpu = time.perf_counter(), time.process_time()
                await drive(call, CALLS, concurrency)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                cells.append(
                    f"{name} {wall / CALLS * 1e6:6.0f} µs, CPU {cpu / CALLS * 1e6:6.0f} µs, "
                    f"{call.pool_size():3d} connections"  # type: ignore[attr-defined]  # set by loopback.py
                )
            print(f"c={concurrency:<3}  " + "   |   ".join(cells))


def main() -> int:
    with ServerProcess() as server:
        asyncio.run(_compare(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
