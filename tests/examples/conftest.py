"""Fixtures of the examples' smoke tests: the sandbox the examples' README runs them against, on loopback.

``sandbox`` is the pytest plugin's ``billingos_fake`` seeded exactly as ``python -m billingos.testing``
seeds its sandbox (``user_1`` on Pro, ``user_2`` on Starter, features ``api_calls``, ``sso``, ``seats``),
served over real HTTP on 127.0.0.1 (``billingos_url``), with ``BILLINGOS_SECRET_KEY`` and
``BILLINGOS_API_URL`` pointing at it, as the README tells a reader to export them. ``user_3`` is a
customer without a subscription. ``load_example(name)`` imports ``examples/<name>.py`` from its path.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import attrs
import pytest

from billingos.testing import FakeBillingOS
from billingos.testing.__main__ import seed_sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
USER_1 = {"X-User-Id": "user_1"}  # Pro: api_calls 10 000, sso
USER_2 = {"X-User-Id": "user_2"}  # Starter: api_calls 1 000, no sso
USER_3 = {"X-User-Id": "user_3"}  # a customer without a subscription

_loads = itertools.count()


@attrs.frozen
class Sandbox:
    fake: FakeBillingOS
    url: str


@pytest.fixture
def sandbox(billingos_fake: FakeBillingOS, billingos_url: str, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    seed_sandbox(billingos_fake)
    billingos_fake.add_customer("user_3")
    monkeypatch.setenv("BILLINGOS_SECRET_KEY", billingos_fake.secret_key)
    monkeypatch.setenv("BILLINGOS_API_URL", billingos_url)
    return Sandbox(billingos_fake, billingos_url)


@pytest.fixture
def load_example(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """``load_example("fastapi_app")``: imports ``examples/fastapi_app.py`` afresh."""

    def load(name: str) -> ModuleType:
        module_name = f"billingos_example_{name}_{next(_loads)}"
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, module_name, module)  # Flask finds its root path through it
        spec.loader.exec_module(module)
        return module

    return load
