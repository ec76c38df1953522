"""A real ``redis-server`` on a loopback port for the tests of ``RedisStore`` (issue 15, item 4).

The binary comes from Debian's ``redis-server`` package (``.ci/run`` installs it, and so does
``.ci/pytest-py314`` inside the 3.14 chroot). Without it the tests that need it are skipped, except
under CI (``CI`` set), where a missing server is an error: a green CI must have run them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def redis_server_binary() -> str:
    """The path of ``redis-server``; skips the test (fails it under CI) when there is none."""
    found = os.environ.get("BILLINGOS_REDIS_SERVER") or shutil.which("redis-server")
    if found is None:
        for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
            if os.access(candidate, os.X_OK):
                found = candidate
    if found is None:
        message = "redis-server not found (apt-get install redis-server; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process: no persistence, loopback only, stopped (or killed) by the test."""

    def __init__(self, workdir: Path) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, port: int | None = None) -> RedisServer:
        """Start it on a free port (or on ``port``: :meth:`restart` after :meth:`kill`)."""
        for _ in range(5):  # the free port may be taken between finding it and redis binding it
            self.port = port or _free_port()
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            self.process.kill()
            self.process.wait()
        raise RuntimeError("redis-server did not start on a free loopback port")

    def _wait_ready(self, deadline: float = 10.0) -> bool:
        """Until it answers PING (or exits: the port was taken)."""
        assert self.process is not None
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.005)
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL, as a crash: every connection to it is reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> RedisServer:
        """Start again on the same port (after :meth:`kill`): clients that reconnect find it there."""
        return self.start(self.port)

    def freeze(self) -> None:
        """SIGSTOP: it keeps its connections but answers nothing (a slow Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for a module's tests (each test keeps to its own key prefix)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of one test alone, for the tests that kill, freeze or restart it."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
