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


def test_a_quota_is_used_to_the_unit_and_never_overrun(sandbox: Sandbox) -> None:
    """user_2 (Starter, 1 000 api_calls) has 10 left: the worker bills exactly 10, with no dead letter."""
    with sandbox.fake.sync_client() as billing:
        billing.usage.track("user_2", "api_calls", 990)

    done = subprocess.run(
        [*WORKER, "--jobs", "300"], env=os.environ.copy(), capture_output=True, text=True, timeout=TIMEOUT
    )

    assert done.returncode == 0, done.stderr
    summary = _summary(done.stdout)
    assert "not counted" not in done.stdout  # no dead letter: nothing done and then refused
    assert "dead=0" in done.stdout  # the recorder's stats line
    assert summary["failed"] == {}
    assert summary["recorded"]["user_2"] == 10
    assert sandbox.fake.usage_of("user_2", "api_calls") == 1000
    assert summary["jobs"] + summary["denied"]["user_2"] == 300
    # Once the recorder's last track counted the 1 000th unit, the cached entitlement itself says no.
    assert summary["denied_by_billingos"]["user_2"] > 0
    assert "user_1" not in summary["denied"]
    assert sandbox.fake.usage_of("user_1", "api_calls") == summary["recorded"]["user_1"]
