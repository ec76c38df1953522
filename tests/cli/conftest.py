"""Fixtures of the command-line tests: the real ``billingos`` console script against the embedded server.

One :class:`~billingos.testing.FakeBillingOS` (rate limits off), seeded like ``billingos mock``
(``user_1`` on Pro, ``user_2`` on Starter) plus a tiny plan, is served on loopback for the whole
module; a test that changes usage seeds its own customer, so the tests do not depend on their order.
Every run of the command is checked for what must never happen: a traceback, or a secret key in its
output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest

from billingos.testing import FakeBillingOS
from billingos.testing.__main__ import seed_sandbox

BILLINGOS = Path(sys.executable).parent / "billingos"
"""The console script pip installed next to this interpreter."""
TINY = "price_tiny"
"""A plan with 5 api_calls per period, to reach the quota."""


@attrs.frozen
class Result:
    """One finished run of the command."""

    status: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout as the one JSON document it must be."""
        return json.loads(self.out)


@attrs.frozen
class Sandbox:
    """The served fake, and how to run the command against it."""

    fake: FakeBillingOS
    url: str

    @property
    def key(self) -> str:
        return self.fake.secret_key

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        connect: bool = True,
        stdin: str | None = None,
        command: tuple[str, ...] = (str(BILLINGOS),),
    ) -> Result:
        """Run ``billingos *args``; with ``connect``, ``BILLINGOS_API_URL`` and ``BILLINGOS_SECRET_KEY``
        point at the sandbox (``env`` adds or overrides variables)."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BILLINGOS_")}
        if connect:
            environment.update(BILLINGOS_API_URL=self.url, BILLINGOS_SECRET_KEY=self.key)
        environment.update(env or {})
        proc = subprocess.run(
            [*command, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            check=False,
        )
        secrets = {self.key, *(v for v in [*args, *environment.values()] if v.startswith(("sk_", "pk_")))}
        for secret in secrets:
            assert secret not in proc.stdout
            assert secret not in proc.stderr
        assert "Traceback" not in proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def run_all(self, *commands: Sequence[str], **options: Any) -> list[Result]:
        """Run independent commands at the same time (each is ~0.5 s of interpreter start and imports)."""
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda args: self.run(*args, **options), commands))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    fake = FakeBillingOS(rate_limits=None)
    seed_sandbox(fake)
    fake.add_product("Tiny", features={"api_calls": 5}, price_id=TINY)
    with fake.serve() as url:
        yield Sandbox(fake, url)


def error_line(result: Result) -> str:
    """The one ``error: ...`` line a failed command prints on stderr, and nothing on stdout."""
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("error: "), result.err
    return result.err.rstrip("\n")
