"""Loopback HTTP servers for tests: a real uvicorn server in a background thread.

`serve_asgi(app)` binds 127.0.0.1 on an ephemeral port with ``TCP_NODELAY`` set on the listening socket
before binding (without it, uvicorn on a socket we bind ourselves answers ~44 ms late: delayed ACK against
Nagle, see /work/shared/notes/loopback.md), runs uvicorn on its own asyncio loop in a daemon thread, and
yields the base URL. On exit it asks the server to stop and joins the thread; the server closes the socket.

`make_app()` returns a tiny raw ASGI app (no framework) with two routes:

- ``GET /fast``: answers ``{"ok": true}`` at once;
- ``GET /slow``: sleeps ``SLOW_ROUTE_SECONDS`` (50 ms) on the server, then answers ``{"ok": true}``;
- ``GET /hold``: (with ``make_app(hold=event)``) answers only once the test sets ``event``.

Any other path answers 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SLOW_ROUTE_SECONDS = 0.05
_STARTUP_DEADLINE_SECONDS = 10.0
_SHUTDOWN_DEADLINE_SECONDS = 10.0

_OK_BODY = b'{"ok":true}'
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_OK_BODY)).encode())]


def make_app(
    on_request: Callable[[str], object] | None = None, hold: threading.Event | None = None
) -> ASGIApp:
    """A raw ASGI app with a ``/fast`` route and a ``/slow`` route (50 ms server-side sleep).

    `on_request`, if given, is called with the path as each request arrives (in the server's thread),
    so a test can wait until a request has reached the server instead of sleeping. With `hold`, the
    ``/hold`` route answers only once the test has set that event.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is expected
            return
        path = scope["path"]
        if on_request is not None:
            on_request(path)
        if path == "/slow":
            await asyncio.sleep(SLOW_ROUTE_SECONDS)
        elif path == "/hold" and hold is not None:
            await asyncio.to_thread(hold.wait)
        elif path != "/fast":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": _OK_BODY})

    return app


def _bind_listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Must be set before bind: accepted sockets inherit it (see loopback.md).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def serve_asgi(app: ASGIApp) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 (ephemeral port) in a background thread; yield its base URL.

    Waits until the server has started (bounded; raises `RuntimeError` if it does not), and on exit stops
    it and joins the thread (bounded). Close your HTTP clients before leaving the block, or the server
    waits for their keep-alive connections (up to its 1 s graceful-shutdown timeout).
    """
    sock = _bind_listening_socket()
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,  # do not reconfigure the test process's logging
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced in the test thread, not lost in this one
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-loopback-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_DEADLINE_SECONDS
        while not server.started:
            if errors or not thread.is_alive():
                raise RuntimeError("loopback server failed to start") from (errors[0] if errors else None)
            if time.monotonic() > deadline:
                raise RuntimeError("loopback server did not start in time")
            time.sleep(0.001)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(_SHUTDOWN_DEADLINE_SECONDS)
        sock.close()  # no-op when uvicorn already closed it; closes it if startup failed
        if thread.is_alive():
            raise RuntimeError("loopback server did not shut down in time")
        if errors:
            raise RuntimeError("loopback server failed") from errors[0]
