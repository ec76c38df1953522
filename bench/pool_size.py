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
import json
import sys
import time

import httpx

from billingos import AsyncBillingOS
from billingos._config import DEFAULT_LIMITS, DEFAULT_TIMEOUT

from ._server_proc import ServerProcess
from .loopback import CUSTOMER, FEATURE, PARAMS, PATH, drive
from .loopback import _pool_size as _loopback_pool_size

CALLS = 1500


async def _compare(server: ServerProcess) -> None:
    headers = {"authorization": f"Bearer {server.secret_key}", "accept": "application/json"}
    timeout = httpx.Timeout(DEFAULT_TIMEOUT, connect=5.0)
    async with (
        AsyncBillingOS(server.secret_key, api_url=server.url) as billing,
        httpx.AsyncClient(
            base_url=server.url, headers=headers, limits=DEFAULT_LIMITS, timeout=timeout
        ) as raw,
    ):

        async def raw_call() -> object:
            response = await raw.get(PATH, params=PARAMS)
            return json.loads(response.content)

        def sdk_call() -> object:
            return billing.check_entitlement(CUSTOMER, FEATURE)

        sdk_http = billing._requester.transport.client  # private: the SDK's own httpx client
        print(
            f"Python {sys.version.split()[0]}, {CALLS} calls per cell (µs per call, CPU µs per call, pool size)"
        )
        for concurrency in (1, 16, 64, 256):
            cells = []
            for name, call, client in (("SDK", sdk_call, sdk_http), ("raw httpx", raw_call, raw)):
                wall, cpu = time.perf_counter(), time.process_time()
                await drive(call, CALLS, concurrency)  # type: ignore[arg-type]
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                cells.append(
                    f"{name} {wall / CALLS * 1e6:6.0f} µs, CPU {cpu / CALLS * 1e6:6.0f} µs, "
                    f"{_loopback_pool_size(client):3d} connections"
                )
            print(f"c={concurrency:<3}  " + "   |   ".join(cells))


def main() -> int:
    with ServerProcess() as server:
        asyncio.run(_compare(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
