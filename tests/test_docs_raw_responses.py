"""The examples of docs/raw-responses.md and docs/escape-hatch.md, run as written against the embedded server.

Each ```python block runs in order with ``billing`` (an ``AsyncBillingOS``; top-level ``await`` allowed),
``secret_key`` and ``api_url`` defined, against a seeded ``FakeBillingOS`` served on loopback.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from billingos import AsyncBillingOS
from billingos.testing import FakeBillingOS

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["raw-responses.md", "escape-hatch.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page: str) -> list[str]:
    return _BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.fixture
def served() -> Iterator[tuple[FakeBillingOS, str]]:
    fake = FakeBillingOS()  # rate limits on, as the real server: the examples print them
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Pro", features={"api_calls": 1000})
    fake.add_customer("user_42", email="ada@example.com")
    fake.subscribe("user_42", plan.price_id)
    for n in range(12):
        fake.add_customer(f"user_{n + 100}", email=f"u{n}@example.com")
    with fake.serve() as url:
        yield fake, url


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_examples(page: str) -> None:
    assert len(blocks(page)) >= 3


@pytest.mark.parametrize("page", PAGES)
async def test_the_examples_of_the_page_run(page: str, served: tuple[FakeBillingOS, str]) -> None:
    fake, url = served
    async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
        namespace = {"billing": billing, "secret_key": fake.secret_key, "api_url": url}
        for number, source in enumerate(blocks(page)):
            code = compile(source, f"{page}[{number}]", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)  # our own documentation, as written
            if result is not None:
                await result
            namespace["billing"] = billing  # a blocking example rebinds it
    assert fake.requests  # the examples did talk to the server
