"""``billingos demo`` and ``billingos mock``: the commands that bring their own server."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from .conftest import BILLINGOS, Sandbox


def test_demo_json_exits_0(sandbox: Sandbox) -> None:
    result = sandbox.run("demo", "--json", connect=False)

    assert result.status == 0, result.err
    doc = result.json()
    assert doc["ok"] is True
    assert doc["steps"][-1]["name"] == "blocking_client"


def test_mock_without_the_testing_extra_says_how_to_install_it() -> None:
    code = "import sys; sys.modules['uvicorn'] = None; from billingos._cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "mock", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        "error: the sandbox needs the testing extra (uvicorn is missing): pip install 'billingos[testing]'\n"
    )


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_mock_serves_a_sandbox_the_other_commands_can_use(sandbox: Sandbox) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLINGOS_")}
    proc = subprocess.Popen(
        [str(BILLINGOS), "mock", "--port", "0", "--no-rate-limits"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        banner = ""
        deadline = time.monotonic() + 20
        while "Ctrl-C to stop." not in banner:  # printed once the server accepts connections
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, f"exited ({proc.wait()}) before it was ready: {banner}"
            banner += line
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)\n", banner)
        key = re.search(r"secret key\s+(sk_test_\w+)\n", banner)
        assert url is not None, banner
        assert key is not None, banner
        assert "rate limits  off" in banner

        check = sandbox.run(
            "check",
            "user_1",
            "sso",
            env={"BILLINGOS_API_URL": url.group(1), "BILLINGOS_SECRET_KEY": key.group(1)},
        )
        assert check.status == 0, check.err
        assert check.out == "granted: user_1 has sso (boolean_flag)\n"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert lines.get(timeout=10) == "BillingOS sandbox stopped.\n"
        assert proc.stderr is not None
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_mock_piped_into_a_reader_that_ctrl_c_ended_first_exits_0_quietly() -> None:
    """``billingos mock | tee``, Ctrl-C: tee dies first, the goodbye line meets a closed pipe."""
    proc = subprocess.Popen(
        [str(BILLINGOS), "mock", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        banner = ""
        while "Ctrl-C to stop." not in banner:
            line = proc.stdout.readline()
            assert line, f"exited ({proc.wait()}) before it was ready: {banner}"
            banner += line
        proc.stdout.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)

        assert proc.returncode == 0
        assert err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
