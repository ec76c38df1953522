"""Nothing blocks a running event loop on first use (issue 11, item 7).

Building the SDK's own pool costs tens of milliseconds once: the verifying TLS context, and importing
httpcore2's network backend or aiohttp. A client created inside a running loop must do that work in a
worker thread on its first request, never on the loop's thread. Each case runs in a fresh interpreter
(nothing imported or cached yet), with an audit hook that notes every import of httpcore2, h11, aiohttp
and anyio's lazily imported modules, and every TLS context built, and on which thread. While the loop
runs, none may happen on the loop's own thread; the hook must also see that work happen (on another
thread), or it proves nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json, sys, threading

    watching = False
    seen = []  # (what, on the loop's thread?) while the loop runs

    def note(what):
        if watching:
            seen.append((what, threading.current_thread() is threading.main_thread()))

    def hook(event, args):
        if event == "import" and args[0].split(".")[0] in ("httpcore2", "h11", "aiohttp", "anyio"):
            note(args[0])

    sys.addaudithook(hook)

    import anyio
    import httpx2

    real = httpx2.create_ssl_context

    def counted(*args, **kwargs):
        note("ssl_context")
        return real(*args, **kwargs)

    httpx2.create_ssl_context = counted

    from billingos import AsyncBillingOS
    from billingos.testing import FakeBillingOS

    backend, loop = sys.argv[1], sys.argv[2]
    fake = FakeBillingOS()

    async def main(url):
        global watching
        watching = True
        async with AsyncBillingOS(fake.secret_key, api_url=url, http_backend=backend) as billing:
            await billing.session_tokens.create("u1")
            await billing.session_tokens.create("u2")
        watching = False

    with fake.serve() as url:
        anyio.run(main, url, backend=loop)
    print(json.dumps(seen))
    """
)


@pytest.mark.parametrize(
    ("backend", "loop"), [("httpx2", "asyncio"), ("httpx2", "trio"), ("aiohttp", "asyncio")]
)
def test_the_first_call_does_its_setup_off_the_loop(backend: str, loop: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, backend, loop], capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr
    seen = [tuple(item) for item in json.loads(child.stdout.strip().splitlines()[-1])]
    on_loop = [what for what, on_loop_thread in seen if on_loop_thread]
    assert on_loop == []
    done_elsewhere = {what for what, _ in seen}
    assert "ssl_context" in done_elsewhere  # the hook saw the work: it happened, in a worker thread
    expected = "aiohttp" if backend == "aiohttp" else "httpcore2"
    assert any(what.split(".")[0] == expected for what in done_elsewhere), done_elsewhere
