"""The embedded BillingOS server (``FakeBillingOS``) in a process of its own, for loopback benchmarks.

    with ServerProcess() as server:          # starts `python -m bench._server_proc`, waits for its URL
        before = server.stats()
        ...                                   # requests to server.url with server.secret_key
        after = server.stats()
        print(after.connections - before.connections, "connections opened")

The child serves a seeded sandbox (``billingos.testing.__main__.seed_sandbox``: ``user_1`` on Pro with
``api_calls``) with rate limits off, under uvicorn on 127.0.0.1, on a listening socket bound with
``TCP_NODELAY`` (without it every loopback request waits ~44 ms for a delayed ACK, see
``/work/shared/notes/loopback.md``). It counts accepted TCP connections (a uvicorn protocol subclass), so
keep-alive is measured server-side, and reports its own CPU time so a figure that is bounded by the
server, not the client, shows as such.

Protocol (one line each way, JSON on stdout): the child prints ``{"url", "secret_key"}`` once ready;
then ``stats`` on stdin answers ``{"connections", "requests", "cpu"}``, and ``stop`` (or EOF) stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import attrs

ROOT = Path(__file__).resolve().parents[1]
_START_DEADLINE = 30.0


@attrs.frozen
class ServerStats:
    connections: int
    """TCP connections accepted since the server started."""
    requests: int
    """HTTP requests answered since the server started."""
    cpu: float
    """CPU seconds the server process has used (user + system)."""


class ServerProcess:
    """Runs ``python -m bench._server_proc`` and talks to it over its stdin/stdout."""

    url: str
    secret_key: str

    def __init__(self, *, separate_cpus: bool = False) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._separate_cpus = separate_cpus
        self._own_cpus: set[int] | None = None

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench._server_proc"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        try:
            ready = self._read()
        except BaseException:
            self._kill()
            raise
        self.url, self.secret_key = ready["url"], ready["secret_key"]
        if self._separate_cpus:
            self._pin(self._proc.pid)
        return self

    @property
    def placement(self) -> str:
        """Where the server and this process run, for the report."""
        if self._own_cpus is None:
            return "server and client share every CPU (placement left to the OS scheduler)"
        client = sorted(os.sched_getaffinity(0))
        server = sorted(os.sched_getaffinity(self._proc.pid)) if self._proc is not None else []
        return f"server pinned to CPU {server}, client to CPU {client}"

    def _pin(self, server_pid: int) -> None:
        """The server on one CPU, this process on the others: neither steals the other's CPU mid-batch.

        On a 2-CPU machine the scheduler otherwise moves both around per batch, which spreads one ratio
        over 0.75-1.25 from one repetition to the next. Linux only; elsewhere nothing is pinned.
        """
        if not hasattr(os, "sched_setaffinity"):
            return
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return
        self._own_cpus = set(cpus)
        os.sched_setaffinity(server_pid, {cpus[-1]})
        for thread_id in _thread_ids():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(thread_id, set(cpus[:-1]))

    def _unpin(self) -> None:
        if self._own_cpus is not None:
            for thread_id in _thread_ids():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(thread_id, self._own_cpus)
            self._own_cpus = None

    def stats(self) -> ServerStats:
        self._write("stats")
        reply = self._read()
        return ServerStats(reply["connections"], reply["requests"], reply["cpu"])

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        self._unpin()
        try:
            self._write("stop")
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._kill()
        finally:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc = None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _write(self, line: str) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def _read(self) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = _readline(self._proc.stdout, _START_DEADLINE)
        if not line:
            raise RuntimeError(f"the benchmark server exited (status {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply


def _thread_ids() -> list[int]:
    """Every thread of this process (Linux): affinity is per thread, and threads exist already."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _readline(stream: IO[str], timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise RuntimeError(f"the benchmark server did not answer within {timeout:g} s")
    return result[0]


# -- the child ----------------------------------------------------------------------------------------


def _serve() -> None:
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from billingos.testing import FakeBillingOS
    from billingos.testing.__main__ import seed_sandbox

    accepted = 0

    class CountingProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: Any) -> None:
            nonlocal accepted
            accepted += 1
            super().connection_made(transport)

    fake = FakeBillingOS(rate_limits=None)
    seed_sandbox(fake)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # before bind: accepted sockets inherit it
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    config = uvicorn.Config(
        fake.app,
        http=CountingProtocol,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        # Idle clients wait while the other clients of an interleaved run are measured: uvicorn's 5 s
        # default would close their connections in between, and the next round would count reconnects.
        timeout_keep_alive=600,
        backlog=4096,
    )
    server = uvicorn.Server(config)

    def control() -> None:
        while not server.started:
            time.sleep(0.01)
        host, port = sock.getsockname()[:2]
        _say({"url": f"http://{host}:{port}", "secret_key": fake.secret_key})
        for line in sys.stdin:
            if line.strip() != "stats":
                break
            fake.app.requests.clear()  # the fake records every request; keep memory flat
            times = os.times()
            _say(
                {
                    "connections": accepted,
                    "requests": server.server_state.total_requests,
                    "cpu": times.user + times.system,
                }
            )
        server.should_exit = True

    threading.Thread(target=control, name="bench-server-control", daemon=True).start()
    server.run(sockets=[sock])


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _serve()
