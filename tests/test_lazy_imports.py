"""``import billingos`` loads only what the first async call needs (issue 5, scenario 7).

Each check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Modules `import billingos` must not load: each is loaded on first use instead.
LAZY = (
    "asyncio",  # only an asyncio loop needs it, and that loop's owner imported it already
    "sniffio",
    "anyio.lowlevel",
    "billingos._cache",  # only a client configured with an EntitlementCache
    "billingos._redis_store",  # only a cache shared on Redis
    "redis",  # never imported by the SDK itself: the app builds the redis.asyncio client it gives
    "billingos._sync",  # only the blocking facade
    "billingos._customer_session",  # only code acting as a customer (as_customer)
    "billingos._tokens",
    "billingos._recorder",
    "billingos._outbox",  # and sqlite3 with it (not listed: coverage loads it in measured children)
    "billingos.testing",
    "billingos._cli",
    "opentelemetry",  # never imported by the SDK: spans are made only when the app imported it
)


def _loaded_after(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_billingos_loads_none_of_the_lazy_modules() -> None:
    loaded = _loaded_after("import billingos")
    assert sorted(loaded & set(LAZY)) == []


def test_the_lazy_names_still_resolve_and_load_their_module() -> None:
    loaded = _loaded_after(
        """
        import billingos
        assert billingos.EntitlementCache.__module__ == "billingos._cache"
        assert billingos.CacheStats.__module__ == "billingos._cache"
        assert "EntitlementCache" in dir(billingos)
        """
    )
    assert "billingos._cache" in loaded
    assert "billingos._sync" not in loaded


def test_as_customer_loads_the_handle_and_token_cache_on_use_only() -> None:
    loaded = _loaded_after(
        """
        import billingos
        client = billingos.AsyncBillingOS("sk_test_x", api_url="http://127.0.0.1:9")
        assert "billingos._customer_session" not in __import__("sys").modules
        handle = client.as_customer("user_42")
        assert type(handle) is billingos.AsyncCustomerSession
        assert billingos.AsyncCustomerSession.__module__ == "billingos._customer_session"
        """
    )
    assert {"billingos._customer_session", "billingos._tokens"} <= loaded
    assert "billingos._sync" not in loaded


def test_a_client_with_a_cache_still_type_checks_the_argument_at_run_time() -> None:
    loaded = _loaded_after(
        """
        import billingos
        try:
            billingos.AsyncBillingOS("sk_test_x", api_url="http://127.0.0.1:9", entitlement_cache=object())
        except billingos.ValidationError as exc:
            assert "entitlement_cache must be an EntitlementCache, not object" in str(exc), exc
        else:
            raise AssertionError("accepted a non-cache")
        """
    )
    assert "billingos._cache" in loaded


def test_a_first_async_call_works_without_asyncio_imported_before_the_loop() -> None:
    # The trio path never imports asyncio; the asyncio path finds it loaded by asyncio.run itself.
    loaded = _loaded_after(
        """
        import httpx2, billingos

        def handler(request):
            return httpx2.Response(200, json={"customer_id": "c", "feature_key": "f", "has_access": True})

        async def main():
            client = billingos.AsyncBillingOS(
                "sk_test_x", api_url="http://127.0.0.1:9",
                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
            )
            async with client:
                ent = await client.check_entitlement("c", "f")
            assert ent.has_access is True

        import asyncio
        asyncio.run(main())
        """
    )
    assert "asyncio" in loaded
