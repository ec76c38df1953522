"""Forking tests share this: run a function in a forked child and get its JSON result back."""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only (absent on Windows)")
"""A platform guard, not a missing feature: every test it marks runs on Linux and macOS."""


def run_in_child(work: Callable[[], dict[str, Any]], deadline: float = 30.0) -> tuple[int, dict[str, Any]]:
    """Fork; run ``work`` in the child and return its exit code and its JSON result (never returns there).

    The child always leaves through ``os._exit``, so no pytest machinery runs in it; a child still alive
    after ``deadline`` seconds is killed and the test fails. An exception in ``work`` fails the test with
    the child's traceback.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_fd)
            try:
                result = work()
            except BaseException:
                result = {"error": traceback.format_exc()}
            os.write(write_fd, json.dumps(result, default=repr).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    until = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > until:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            pytest.fail(f"the forked child did not exit within {deadline} s (killed)")
        time.sleep(0.005)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    result = json.loads(data) if data else {}
    assert "error" not in result, result["error"]
    return os.waitstatus_to_exitcode(status), result
