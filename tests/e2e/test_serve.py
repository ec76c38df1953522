"""``fake.serve()`` itself: a fake on its own uvicorn server, as users and the demo start it."""

from __future__ import annotations

import httpx2
import pytest

from billingos import AsyncBillingOS, BillingOS, NetworkError
from billingos.testing import FakeBillingOS, Fault

from ._helpers import seed


async def test_async_client_against_fake_serve() -> None:
    fake = FakeBillingOS(rate_limits=None)
    seed(fake)
    fake.inject("POST /v1/usage/track", Fault.error(503))
    with fake.serve() as url:
        assert url.startswith("http://127.0.0.1:")
        async with AsyncBillingOS(fake.secret_key, api_url=url, max_retries=1) as billing:
            token = await billing.create_session_token("user_42")
            assert (await billing.check_entitlement("user_42", "api_calls")).has_access
            await billing.track_usage("user_42", "api_calls", 4)  # survives one 503 (a real 0.25-0.5 s wait)
            customers = [c async for c in billing.customers.list()]
            await billing.session_tokens.revoke(token.token_id)
    assert [c.external_id for c in customers] == ["user_42"]
    assert fake.usage_of("user_42", "api_calls") == 4
    assert [r.status for r in fake.requests_to("POST /v1/usage/track")] == [503, 201]


def test_sync_client_against_fake_serve() -> None:
    fake = FakeBillingOS(rate_limits=None)
    seed(fake)
    with fake.serve() as url, BillingOS(fake.secret_key, api_url=url) as billing:
        assert billing.check_entitlement("user_42", "sso").has_access
        billing.track_usage("user_42", "api_calls", 2)
    assert fake.usage_of("user_42", "api_calls") == 2


def test_serve_stops_listening_on_exit() -> None:
    fake = FakeBillingOS(rate_limits=None)
    with fake.serve() as url:
        assert httpx2.get(url + "/customers").status_code == 401  # no key
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/customers")


async def test_client_after_the_server_stopped_gets_network_error() -> None:
    fake = FakeBillingOS(rate_limits=None)
    seed(fake)
    with fake.serve() as url:
        pass
    async with AsyncBillingOS(fake.secret_key, api_url=url, max_retries=0) as billing:
        with pytest.raises(NetworkError):
            await billing.check_entitlement("user_42", "sso")
