"""docs/sync.md's Jupyter cells, run as a notebook runs them: top-level ``await``, one namespace, in order."""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billingos.testing import FakeBillingOS
from billingos.testing.__main__ import seed_sandbox

PAGE = Path(__file__).resolve().parent.parent / "docs" / "sync.md"


def _jupyter_cells() -> list[str]:
    section = PAGE.read_text().split("## Jupyter", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBillingOS]:
    fake = FakeBillingOS(rate_limits=None)
    seed_sandbox(fake)
    fake.add_customer("user_42")
    with fake.serve() as url:
        monkeypatch.setenv("BILLINGOS_API_URL", url)
        monkeypatch.setenv("BILLINGOS_SECRET_KEY", fake.secret_key)
        yield fake


async def test_the_jupyter_cells_run_in_order_and_close_every_client(sandbox_env: FakeBillingOS) -> None:
    cells = _jupyter_cells()
    assert len(cells) == 4
    namespace: dict[str, Any] = {}
    clients = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ResourceWarning of an unclosed client fails the test
        for cell in cells:
            code = compile(cell, str(PAGE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)  # a coroutine when the cell awaits
            if result is not None:
                await result
            clients.append(namespace["billing"])

    assert namespace["ent"].feature_key == "api_calls"
    assert {type(c).__name__ for c in clients} == {"AsyncBillingOS", "BillingOS"}
    assert all(client.is_closed for client in clients)
