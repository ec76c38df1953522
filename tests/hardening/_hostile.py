"""A hostile HTTP/1.1 server for the hardening suite: raw asyncio on loopback, in a thread of its own.

The embedded server (``billingos.testing``) is well behaved on purpose; this one answers the way a broken
or malicious server would: a response trickled one byte at a time, a body of tens of megabytes, a gzip
bomb, a chunked body that never ends. It runs its own asyncio loop in a daemon thread, so the client under
test may run on asyncio or trio, and it counts what it saw: connections, requests, and connections the
client hung up on (a refused body's connection must be closed, never pooled).

Each request is answered by ``answer(n)`` (``n``: 0 for the server's first request), a coroutine function
taking the server and the stream writer; answers past the scripted ones are a small, valid entitlement check.
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

Answer = Callable[["HostileServer", asyncio.StreamWriter], Awaitable[None]]

CHECK_BODY = json.dumps(
    {
        "feature_key": "api_calls",
        "has_access": True,
        "limit": 1000,
        "usage": 10,
        "metadata": {"remaining": 990, "resets_at": "2026-03-01T00:00:00Z", "type": "usage_quota"},
    }
).encode()
CHUNK = 64 * 1024


def head(length: int | None = None, *, encoding: str | None = None, chunked: bool = False) -> bytes:
    """A 200 response head for a JSON body."""
    lines = ["HTTP/1.1 200 OK", "content-type: application/json"]
    if length is not None:
        lines.append(f"content-length: {length}")
    if encoding:
        lines.append(f"content-encoding: {encoding}")
    if chunked:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class HostileServer:
    """Counts: ``connections`` accepted, ``requests`` read, ``hangups`` (connections the client closed),
    ``sent`` (response bytes written, all connections)."""

    def __init__(self, answers: Sequence[Answer]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests = 0
        self.hangups = 0
        self.sent = 0
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write and wait until the kernel took it (a closed connection raises ``ConnectionError``)."""
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    request = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:  # the client closed the connection
                    self.hangups += 1
                    return
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                n = self.requests
                self.requests += 1
                if n < len(self.answers):
                    await self.answers[n](self, writer)
                else:
                    await self.write(writer, head(len(CHECK_BODY)) + CHECK_BODY)
        except (ConnectionError, asyncio.IncompleteReadError):  # the client hung up mid-answer
            self.hangups += 1
        finally:
            writer.close()

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a loopback port; yields the URL."""
        ready = threading.Event()
        stop: list[asyncio.Event] = []

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            stop.append(asyncio.Event())
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await stop[0].wait()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10)
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(stop[0].set)
            thread.join(10)


# ---------------------------------------------------------------------------------------------------------
# answers


def drip(data: bytes, interval: float, dripped: list[int]) -> Answer:
    """``data`` one byte every ``interval`` s; appends to ``dripped`` the bytes it wrote, as it goes."""

    async def answer(server: HostileServer, writer: asyncio.StreamWriter) -> None:
        dripped.append(0)
        for byte in data:
            await server.write(writer, bytes([byte]))
            dripped[-1] += 1
            await asyncio.sleep(interval)

    return answer


def big_json(size: int) -> Answer:
    """A valid JSON object of ``size`` bytes (a long string field), with its Content-Length."""
    prefix, suffix = b'{"feature_key":"api_calls","has_access":true,"pad":"', b'"}'
    filler = b"x" * CHUNK

    async def answer(server: HostileServer, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, head(size) + prefix)
        left = size - len(prefix) - len(suffix)
        while left > 0:
            piece = filler[: min(left, CHUNK)]
            await server.write(writer, piece)
            left -= len(piece)
        await server.write(writer, suffix)

    return answer


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` zero bytes (1 GiB of them is about 1 MB)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    parts = [deflate.compress(zeros) for _ in range(inflated // len(zeros))]
    parts.append(deflate.flush())
    return b"".join(parts)


def compressed(bomb: bytes) -> Answer:
    """``bomb`` as a gzip-encoded body with its Content-Length."""

    async def answer(server: HostileServer, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, head(len(bomb), encoding="gzip"))
        for start in range(0, len(bomb), CHUNK):
            await server.write(writer, bomb[start : start + CHUNK])

    return answer


def endless(cap: int) -> Answer:
    """A chunked body of blanks that never ends (``cap`` bytes at most: a broken client fails, not hangs)."""
    chunk = b"%x\r\n" % CHUNK + b" " * CHUNK + b"\r\n"

    async def answer(server: HostileServer, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, head(chunked=True))
        for _ in range(cap // CHUNK):
            await server.write(writer, chunk)

    return answer
