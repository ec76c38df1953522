"""``python -m billingos.testing``: the real command in a subprocess, used with raw httpx, then stopped."""

from __future__ import annotations

import io
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx2
import pytest

from billingos.testing import FakeBillingOS
from billingos.testing.__main__ import _banner, build_parser, seed_sandbox


class Sandbox:
    """The command running in a subprocess, with its stdout read line by line on a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "billingos.testing", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def read_until(self, marker: str, timeout: float = 20) -> str:
        """Everything printed up to and including the line containing ``marker``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                raise AssertionError(f"exited ({self.proc.wait()}) before {marker!r}: {''.join(seen)}")
            seen.append(line)
            if marker in line:
                return "".join(seen)

    def rest(self) -> str:
        """What it printed after the last read, once it has exited."""
        out = []
        while (line := self.lines.get(timeout=10)) is not None:
            out.append(line)
        return "".join(out)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def sandboxes() -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for sandbox in started:
        sandbox.close()


def start(sandboxes: list[Sandbox], *args: str) -> tuple[Sandbox, str, str, str]:
    """Start the command; returns it, its banner, the URL and the key it printed."""
    sandbox = Sandbox(*args)
    sandboxes.append(sandbox)
    banner = sandbox.read_until("Ctrl-C to stop.")
    url = re.search(r"listening on (http://\S+)", banner)
    key = re.search(r"secret key\s+(sk_test_\w+)", banner)
    assert url is not None, banner
    assert key is not None, banner
    return sandbox, banner, url.group(1), key.group(1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serves_the_seeded_sandbox_until_a_signal(sandboxes: list[Sandbox], sig: signal.Signals) -> None:
    sandbox, banner, url, key = start(sandboxes, "--port", "0")

    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert f"curl -s -H 'Authorization: Bearer {key}' '{url}/v1/usage/check?customer_id=user_1" in banner
    assert f"export BILLINGOS_API_URL={url} BILLINGOS_SECRET_KEY={key}" in banner
    auth = {"Authorization": f"Bearer {key}"}
    with httpx2.Client(base_url=url, headers=auth, timeout=10) as http:
        check = http.get("/v1/usage/check", params={"customer_id": "user_1", "feature_key": "api_calls"})
        assert check.status_code == 200
        assert check.json()["has_access"] is True
        assert check.json()["limit"] == 10000
        assert "x-ratelimit-limit" in check.headers  # on by default, as on the real server
        sso = http.get("/v1/usage/check", params={"customer_id": "user_2", "feature_key": "sso"})
        assert sso.json()["has_access"] is False  # Starter has no SSO
        customers = http.get("/customers").json()
        assert {c["external_id"] for c in customers["data"]} == {"user_1", "user_2"}
        subs = http.get("/subscriptions").json()
        assert {(s["price_id"], s["status"]) for s in subs} == {
            ("price_pro", "active"),
            ("price_starter", "active"),
        }
        assert http.get("/customers", headers={"Authorization": "Bearer sk_test_wrong"}).status_code == 401

    sandbox.proc.send_signal(sig)

    assert sandbox.proc.wait(10) == 0
    assert "BillingOS sandbox stopped." in sandbox.rest()
    assert sandbox.proc.stderr is not None
    assert sandbox.proc.stderr.read() == ""


def test_no_rate_limits_switches_throttling_off(sandboxes: list[Sandbox]) -> None:
    sandbox, banner, url, key = start(sandboxes, "--port", "0", "--no-rate-limits", "--host", "127.0.0.1")

    assert "rate limits  off" in banner
    response = httpx2.get(f"{url}/customers", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200
    assert "x-ratelimit-limit" not in response.headers
    sandbox.proc.send_signal(signal.SIGINT)
    assert sandbox.proc.wait(10) == 0


def test_a_taken_port_exits_1_with_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "billingos.testing", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: cannot serve on 127.0.0.1:{port}: ")


def test_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.rate_limits) == ("127.0.0.1", 8787, True)
    assert args.admin_routes == "secret_key"


def test_admin_routes_dashboard_only_refuses_the_secret_key(sandboxes: list[Sandbox]) -> None:
    sandbox, _, url, key = start(sandboxes, "--port", "0", "--admin-routes", "dashboard_only")

    response = httpx2.get(f"{url}/customers", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "jwt malformed"
    sandbox.proc.send_signal(signal.SIGINT)
    assert sandbox.proc.wait(10) == 0


def _stop_with_its_reader_gone(command: list[str]) -> subprocess.CompletedProcess[str]:
    """``command | cat`` and Ctrl-C: the terminal's SIGINT ends ``cat`` first, then the sandbox.

    The banner is read, the pipe's read end is closed (``cat`` gone), then SIGINT: the goodbye line
    meets a pipe with no reader (EPIPE, BrokenPipeError in Python).
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = ""
        while "Ctrl-C to stop." not in banner:
            line = proc.stdout.readline()
            assert line, f"exited ({proc.wait()}) before it was ready: {banner}"
            banner += line
        proc.stdout.close()
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        _, err = proc.communicate(timeout=20)
        return subprocess.CompletedProcess(command, proc.returncode, "", err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_ctrl_c_with_the_pipe_reader_gone_exits_0_without_a_traceback() -> None:
    result = _stop_with_its_reader_gone([sys.executable, "-m", "billingos.testing", "--port", "0"])

    assert result.returncode == 0
    assert result.stderr == ""


def test_without_the_testing_extra_it_says_which_extra_to_install() -> None:
    for module in ("starlette", "uvicorn"):
        code = (
            f"import runpy, sys; sys.modules[{module!r}] = None; sys.argv[1:] = ['--port', '0']; "
            "runpy.run_module('billingos.testing', run_name='__main__', alter_sys=True)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )

        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr == (
            f"error: python -m billingos.testing needs the testing extra ({module} is missing): "
            "pip install 'billingos[testing]'\n"
        )


def test_the_banner_in_docs_cli_md_is_the_banner_the_sandbox_prints() -> None:
    """docs/cli.md shows ``billingos mock``'s banner; the key in it is printed whole, as it really is."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    shown = re.search(r"```text\n\$ billingos mock\n(.*?)```", page, re.DOTALL)
    assert shown is not None
    key = re.search(r"secret key   (sk_test_\w+)\n", shown.group(1))
    assert key is not None
    out = io.StringIO()

    _banner(out, "http://127.0.0.1:8787", key.group(1), seed_sandbox(FakeBillingOS()), rate_limits=True)

    assert out.getvalue() == shown.group(1)
