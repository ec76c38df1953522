"""examples/async_worker.py as a reader runs it: a subprocess, its key and URL from the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from .conftest import EXAMPLES, Sandbox

WORKER = [sys.executable, str(EXAMPLES / "async_worker.py"), "--json", "--flush-interval", "0.05"]
TIMEOUT = 60  # seconds: a hung worker fails the test instead of hanging it


def _summary(stdout: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


def test_bounded_run_records_exactly_what_the_server_counts(sandbox: Sandbox) -> None:
    done = subprocess.run(
        [*WORKER, "--jobs", "60"], env=os.environ.copy(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    summary = _summary(done.stdout)
    assert summary["jobs"] == 60
    assert summary["denied"] == summary["failed"] == {}
    # Job n bills customer ["user_1", "user_2"][n % 2] for 1 + n % 3 units.
    expected = {"user_1": 0, "user_2": 0}
    for n in range(1, 61):
        expected[["user_1", "user_2"][n % 2]] += 1 + n % 3
    assert summary["recorded"] == expected
    for customer, units in expected.items():
        assert sandbox.fake.usage_of(customer, "api_calls") == units
    assert "recorded=60" in done.stdout  # the recorder's stats line: every event accepted


def test_sigterm_drains_the_queue_and_the_recorder_before_exiting(sandbox: Sandbox) -> None:
    worker = subprocess.Popen(
        [*WORKER, "--progress", "20"], env=os.environ.copy(), stdout=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(TIMEOUT, worker.kill)
    watchdog.start()
    try:
        assert worker.stdout is not None
        for line in worker.stdout:  # unbounded run: wait until it has done real work, then stop it
            if line.startswith("processed 20 jobs"):
                break
        worker.send_signal(signal.SIGTERM)
        rest = worker.stdout.read()
        assert worker.wait() == 0
    finally:
        watchdog.cancel()
        if worker.stdout is not None:
            worker.stdout.close()
    summary = _summary(rest)
    assert summary["jobs"] >= 20
    assert summary["recorded"], "some usage was recorded before the signal"
    for customer, units in summary["recorded"].items():
        assert sandbox.fake.usage_of(customer, "api_calls") == units  # nothing lost at shutdown
    assert "pending=0" in rest
