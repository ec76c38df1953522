from __future__ import annotations

# respx mocks `httpx`/`httpcore`; the SDK sends through `httpx2`/`httpcore2`. In the tests only (never in
# the library), `import httpx` and `import httpcore` resolve to httpx2 and httpcore2, so respx patches
# the pool the SDK really uses. This must run before anything imports httpx: respx's own pytest plugin
# is therefore disabled in pyproject (`-p no:respx`) and loaded below, after the alias.
import httpx2

httpx2.alias_httpx()

from collections.abc import AsyncIterator, Iterator

import pytest
import respx

import billingos
from billingos import AsyncBillingOS, RetryPolicy

from ._factories import BASE_URL, SECRET

# Our own pytest plugin (billingos_fake, billingos_url, ...), loaded here rather than through its
# entry point (pyproject: -p no:billingos) so coverage measures billingos from its first import.
pytest_plugins = ["billingos.testing.pytest_plugin", "respx.plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hardening-figures",
        action="store_true",
        help="print the hardening suite's figures at the end of the run (always written to "
        ".pytest_cache/d/billingos/hardening-figures.txt)",
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own BillingOS settings, or a proxy (which changes what is refused)."""
    for name in ("BILLINGOS_SECRET_KEY", "BILLINGOS_API_URL", "BILLINGOS_LOG"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def sleeps() -> list[float]:
    """Every wait the retry policy asked for, in order (nothing actually sleeps)."""
    return []


@pytest.fixture
def policy(sleeps: list[float]) -> RetryPolicy:
    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    return RetryPolicy(sleep=record)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """A respx router for BASE_URL; every request must match a route."""
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def billing(router: respx.MockRouter, policy: RetryPolicy) -> AsyncIterator[AsyncBillingOS]:
    """An AsyncBillingOS pointed at the respx router, with sleeps recorded instead of waited."""
    async with AsyncBillingOS(SECRET, api_url=BASE_URL, retry_policy=policy) as client:
        yield client


@pytest.fixture
def sync_billing(router: respx.MockRouter, policy: RetryPolicy) -> Iterator[billingos.BillingOS]:
    """The blocking facade pointed at the respx router."""
    with billingos.BillingOS(SECRET, api_url=BASE_URL, retry_policy=policy) as client:
        yield client
