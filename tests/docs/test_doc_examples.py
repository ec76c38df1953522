"""The examples of docs/serialization.md and docs/tracing.md, run as they are written.

Each page's ```python blocks that start with "# Runs in the test suite" are run in a fresh interpreter:
the tracing page sets the process-wide tracer provider, which must not leak into the rest of the suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
MARK = "# Runs in the test suite"


def _examples(page: str) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if b.startswith(MARK)]


@pytest.mark.parametrize("page", ["serialization.md", "tracing.md"])
def test_the_pages_examples_run(page: str) -> None:
    examples = _examples(page)
    assert examples, f"{page} has no example marked {MARK!r}"
    for code in examples:
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
