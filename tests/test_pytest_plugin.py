"""The pytest plugin (``billingos.testing.pytest_plugin``): a user's suite using its fixtures, in pytester."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

USER_SUITE = """
import httpx2
import pytest

from billingos import AsyncBillingOS, BillingOS, QuotaExceededError
from billingos.testing import Fault


@pytest.fixture
def plan(billingos_fake):
    billingos_fake.add_feature("exports", "usage_quota")
    billingos_fake.add_feature("sso", "boolean_flag")
    plan = billingos_fake.add_product("Pro", features={"exports": 2, "sso": True})
    billingos_fake.add_customer("user_42", email="ada@example.com")
    billingos_fake.subscribe("user_42", plan.price_id)
    return plan


async def test_async_client(billingos_fake, plan, async_billingos_client):
    assert isinstance(async_billingos_client, AsyncBillingOS)
    await async_billingos_client.track_usage("user_42", "exports", 2)
    with pytest.raises(QuotaExceededError):
        await async_billingos_client.track_usage("user_42", "exports")
    assert billingos_fake.usage_of("user_42", "exports") == 2


async def test_async_client_retries_an_injected_fault(billingos_fake, plan, async_billingos_client):
    billingos_fake.inject("POST /v1/usage/track", Fault.drop_response())
    await async_billingos_client.track_usage("user_42", "exports")
    assert billingos_fake.usage_of("user_42", "exports") == 1
    assert len(billingos_fake.requests_to("POST /v1/usage/track")) == 2


def test_sync_client(billingos_fake, plan, billingos_client):
    assert isinstance(billingos_client, BillingOS)
    assert billingos_client.check_entitlement("user_42", "sso").has_access
    customer = billingos_client.customers.get_by_external_id("user_42")
    assert customer.email == "ada@example.com"


def test_url(billingos_fake, plan, billingos_url):
    assert billingos_url.startswith("http://127.0.0.1:")
    auth = {"Authorization": "Bearer " + billingos_fake.secret_key}
    query = {"customer_id": "user_42", "feature_key": "sso"}
    check = httpx2.get(billingos_url + "/v1/usage/check", params=query, headers=auth)
    assert check.json()["has_access"] is True
    with BillingOS(billingos_fake.secret_key, api_url=billingos_url) as billing:
        assert billing.entitlements.check("user_42", "exports").remaining == 2


def test_every_test_gets_a_fresh_server(billingos_fake):
    assert billingos_fake.customer("user_42") is None
    assert billingos_fake.requests == ()
"""

ANYIO_SUITE = """
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_async_client_under_anyio(billingos_fake, async_billingos_client):
    billingos_fake.add_feature("sso", "boolean_flag")
    plan = billingos_fake.add_product("Pro", features={"sso": True})
    billingos_fake.add_customer("user_42")
    billingos_fake.subscribe("user_42", plan.price_id)
    assert (await async_billingos_client.check_entitlement("user_42", "sso")).has_access
"""


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    plugins = {e.name: e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("billingos") == "billingos.testing.pytest_plugin"


def test_fixtures_work_in_a_user_suite_with_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_billing=USER_SUITE)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")

    result.assert_outcomes(passed=5)


def test_the_async_fixture_works_with_anyio_without_pytest_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_billing=ANYIO_SUITE)

    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider", "-W", "error")

    result.assert_outcomes(passed=2)


def test_the_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")

    result.stdout.fnmatch_lines(
        [
            "*billingos_fake*",
            "*A fresh, empty*FakeBillingOS*",
            "*billingos_url*",
            "*async_billingos_client*",
            "*billingos_client*",
        ]
    )


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_uses(billingos_fake):\n    pass\n")

    result = pytester.runpytest_subprocess("-p", "no:billingos", "-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'billingos_fake' not found*"])


def test_the_plugin_imports_without_the_testing_extra() -> None:
    """pytest loads the plugin wherever billingos is installed, with or without starlette and uvicorn."""
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "sys.modules['uvicorn'] = None\n"
        "import billingos.testing.pytest_plugin\n"
        "assert 'billingos.testing._app' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert proc.returncode == 0, proc.stderr
