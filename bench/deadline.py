"""Per-call cost of the whole-attempt deadline and of the capped body reader.

Paired batches, interleaved: timeout=30 (a number: whole-attempt deadline) against
timeout=httpx2.Timeout(30) (per phase: no deadline), over
- mock: an httpx2.MockTransport client (no network): the deadline's own cost;
- loopback: a raw keep-alive HTTP/1.1 server in a thread (own loop), both backends.
Usage: python -m bench.deadline [asyncio|trio] [calls]   (CPU time per call; not a `python -m bench` scenario)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time

import anyio
import httpx2

from billingos import AsyncBillingOS

SECRET = "sk_test_" + "a" * 32
BODY = (
    b'{"feature_key":"api_calls","has_access":true,"limit":1000,"usage":10,'
    b'"metadata":{"remaining":990,"resets_at":"2026-03-01T00:00:00Z","type":"usage_quota"}}'
)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


def serve() -> int:
    ready = threading.Event()
    port: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                writer.write(HEAD % len(BODY) + BODY)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait()
    return port[0]


async def batch(billing: AsyncBillingOS, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await billing.entitlements.check("user_1", "api_calls")
    return (time.process_time() - started) / n * 1e6


async def run(loop_name: str, calls: int) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=BODY, headers={"content-type": "application/json"})

    port = serve()
    setups = [("mock", "httpx2", None)]
    setups.append(("loopback", "httpx2", f"http://127.0.0.1:{port}"))
    if loop_name == "asyncio":
        setups.append(("loopback", "aiohttp", f"http://127.0.0.1:{port}"))
    for where, backend, url in setups:
        results: dict[str, list[float]] = {"number (deadline)": [], "httpx2.Timeout (none)": []}
        clients = {}
        timeouts = (("number (deadline)", 30), ("httpx2.Timeout (none)", httpx2.Timeout(30, connect=5)))
        for label, timeout in timeouts:
            if url is None:
                http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
                clients[label] = AsyncBillingOS(
                    SECRET, api_url="http://127.0.0.1:1", http_client=http, timeout=timeout
                )
            else:
                clients[label] = AsyncBillingOS(
                    SECRET,
                    api_url=url,
                    timeout=timeout,
                    http_backend=backend,  # type: ignore[arg-type]
                )
            await batch(clients[label], 200)  # warm up
        for _ in range(15):
            for label, billing in clients.items():
                results[label].append(await batch(billing, calls))
        for billing in clients.values():
            await billing.aclose()
        a, b = (statistics.median(v) for v in results.values())
        print(
            f"{loop_name} {where} {backend}: number {a:.1f} us/call, httpx2.Timeout {b:.1f} us/call, "
            f"difference {a - b:+.1f} us (median of 15 paired batches of {calls})"
        )


if __name__ == "__main__":
    loop_name = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    anyio.run(run, loop_name, calls, backend=loop_name)
