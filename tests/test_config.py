"""Configuration (CONTRACT §1): where the key and URL come from, what is refused, defaults, repr."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest

from billingos import AsyncBillingOS, BillingOS, ValidationError

from ._factories import BASE_URL, LIVE_SECRET, SECRET

SANDBOX = "https://sandbox-api.billingos.dev"
LIVE = "https://api.billingos.dev"
ENV_SECRET = "sk_test_" + "e" * 20 + "f00d"

Make = Callable[..., AsyncBillingOS]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Build clients that are closed after the test."""
    clients: list[AsyncBillingOS] = []

    def build(*args: Any, **kwargs: Any) -> AsyncBillingOS:
        client = AsyncBillingOS(*args, **kwargs)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


# -- the secret key ------------------------------------------------------------------------------


async def test_key_from_the_argument_is_used(make: Make) -> None:
    assert make(SECRET).environment == "test"


async def test_key_from_the_environment_is_used_when_no_argument(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLINGOS_SECRET_KEY", LIVE_SECRET)
    client = make()
    assert client.environment == "live"
    assert "9z9z" in repr(client)


async def test_key_argument_wins_over_the_environment(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLINGOS_SECRET_KEY", LIVE_SECRET)
    client = make(SECRET)
    assert client.environment == "test"
    assert "1a2b" in repr(client)


@pytest.mark.parametrize(
    ("key", "secret_part"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("pk_test_zq9SECRETzq9", "zq9SECRETzq9"),
        ("sk_test_", None),
        ("sk_live_", None),
        ("sk_prod_zq9SECRETzq9", "zq9SECRETzq9"),
        ("SK_TEST_zq9SECRETzq9", "zq9SECRETzq9"),
        (" sk_test_zq9SECRETzq9", "zq9SECRETzq9"),
        ("sk_test_zq9SECRETzq9 ", "zq9SECRETzq9"),
        ("sk_test_zq9SECRETzq9\n", "zq9SECRETzq9"),
        ("sk_test_zq9SE\tCRETzq9", "CRETzq9"),
        ("sk_test_zq9SE CRETzq9", "CRETzq9"),
        ("sk_test_zq9SE\u00a0CRETzq9", "CRETzq9"),
        ("sk_test_zq9SE\x00CRETzq9", "CRETzq9"),
    ],
    ids=[
        "none",
        "empty",
        "blank",
        "publishable",
        "test-prefix-only",
        "live-prefix-only",
        "unknown-prefix",
        "upper-case",
        "leading-space",
        "trailing-space",
        "trailing-newline",
        "inner-tab",
        "inner-space",
        "inner-nbsp",
        "inner-nul",
    ],
)
def test_bad_key_is_refused_without_echoing_it(key: str | None, secret_part: str | None) -> None:
    with pytest.raises(ValidationError) as info:
        AsyncBillingOS(key, api_url=BASE_URL)
    exc = info.value
    assert exc.status_code is None
    assert exc.message
    if secret_part is not None:
        for text in (str(exc), repr(exc), exc.message):
            assert secret_part not in text


@pytest.mark.parametrize("key", [12345, b"sk_test_zq9SECRETzq9", ["sk_test_x"]], ids=["int", "bytes", "list"])
def test_non_string_key_is_refused(key: Any) -> None:
    with pytest.raises(ValidationError) as info:
        AsyncBillingOS(key, api_url=BASE_URL)
    assert "zq9SECRETzq9" not in str(info.value)


def test_bad_key_from_the_environment_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLINGOS_SECRET_KEY", "pk_live_zq9SECRETzq9")
    with pytest.raises(ValidationError) as info:
        AsyncBillingOS(api_url=BASE_URL)
    assert "zq9SECRETzq9" not in str(info.value)


def test_missing_key_message_says_what_to_do() -> None:
    with pytest.raises(ValidationError) as info:
        AsyncBillingOS(api_url=BASE_URL)
    assert "BILLINGOS_SECRET_KEY" in str(info.value)


def test_sync_facade_refuses_a_bad_key_too() -> None:
    with pytest.raises(ValidationError) as info:
        BillingOS("pk_test_zq9SECRETzq9", api_url=BASE_URL)
    assert "zq9SECRETzq9" not in str(info.value)


# -- the base URL --------------------------------------------------------------------------------


async def test_api_url_argument_is_used(make: Make) -> None:
    assert (
        make(SECRET, api_url="https://billing.internal.example").api_url == "https://billing.internal.example"
    )


async def test_api_url_comes_from_the_environment_when_no_argument(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLINGOS_API_URL", "https://env.example.com")
    assert make(SECRET).api_url == "https://env.example.com"


async def test_api_url_argument_wins_over_the_environment(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLINGOS_API_URL", "https://env.example.com")
    assert make(SECRET, api_url="https://arg.example.com").api_url == "https://arg.example.com"


@pytest.mark.parametrize(("key", "url"), [(SECRET, SANDBOX), (LIVE_SECRET, LIVE)], ids=["test", "live"])
async def test_api_url_defaults_by_key_prefix(make: Make, key: str, url: str) -> None:
    assert make(key).api_url == url


async def test_empty_api_url_environment_variable_means_the_default(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLINGOS_API_URL", "")
    assert make(SECRET).api_url == SANDBOX


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.example.com/", "https://api.example.com"),
        ("https://api.example.com/v2/", "https://api.example.com/v2"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    ],
)
async def test_trailing_slash_is_stripped(make: Make, given: str, expected: str) -> None:
    assert make(SECRET, api_url=given).api_url == expected


async def test_trailing_slash_is_stripped_from_the_environment_url(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLINGOS_API_URL", "https://env.example.com/")
    assert make(SECRET).api_url == "https://env.example.com"


@pytest.mark.parametrize("url", ["http://api.billingos.dev", "http://10.0.0.5:8080", "http://example.com/"])
def test_live_key_over_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        AsyncBillingOS(LIVE_SECRET, api_url=url)
    assert LIVE_SECRET not in str(info.value)


def test_live_key_over_plain_http_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLINGOS_API_URL", "http://api.billingos.dev")
    with pytest.raises(ValidationError):
        AsyncBillingOS(LIVE_SECRET)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:3001",
        "http://localhost:3001",
        "http://[::1]:3001",
        "http://127.5.5.5",
        "http://localhost",
    ],
)
async def test_live_key_over_plain_http_to_loopback_is_allowed(make: Make, url: str) -> None:
    assert make(LIVE_SECRET, api_url=url).api_url == url


async def test_test_key_over_plain_http_to_a_remote_host_is_allowed(make: Make) -> None:
    assert make(SECRET, api_url="http://staging.example.com").api_url == "http://staging.example.com"


@pytest.mark.parametrize(
    "url", ["", "   ", "ftp://api.example.com", "api.example.com", "https://", "https://api.example.com/?x=1"]
)
def test_invalid_api_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        AsyncBillingOS(SECRET, api_url=url)


# -- None means default --------------------------------------------------------------------------


async def test_none_for_every_optional_setting_means_its_default(make: Make) -> None:
    client = make(SECRET, api_url=None, timeout=None, max_retries=None, limits=None, retry_policy=None)
    assert client.api_url == SANDBOX
    assert client.timeout == httpx2.Timeout(30.0, connect=5.0)
    assert client.max_retries == 3


async def test_with_options_none_keeps_the_clients_settings(make: Make) -> None:
    client = make(SECRET, timeout=12, max_retries=1)
    clone = client.with_options(timeout=None, max_retries=None)
    assert clone.timeout == client.timeout
    assert clone.max_retries == 1


# -- retries and timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 1, 10])
async def test_non_negative_max_retries_is_accepted(make: Make, max_retries: int) -> None:
    assert make(SECRET, max_retries=max_retries).max_retries == max_retries


@pytest.mark.parametrize(
    "max_retries", [-1, True, False, 1.0, "3"], ids=["negative", "true", "false", "float", "str"]
)
def test_bad_max_retries_is_refused(max_retries: Any) -> None:
    with pytest.raises(ValidationError):
        AsyncBillingOS(SECRET, max_retries=max_retries)


@pytest.mark.parametrize(
    "timeout",
    [
        0,
        0.0,
        -1,
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        "30",
        httpx2.Timeout(5.0, read=0),
        httpx2.Timeout(-1),
    ],
    ids=[
        "zero",
        "zero-float",
        "negative",
        "nan",
        "inf",
        "-inf",
        "bool",
        "str",
        "zero-read-phase",
        "negative-timeout",
    ],
)
def test_bad_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises(ValidationError):
        AsyncBillingOS(SECRET, timeout=timeout)


@pytest.mark.parametrize("bad", [0, -5, float("nan")])
async def test_with_options_refuses_a_bad_timeout(make: Make, bad: Any) -> None:
    client = make(SECRET)
    with pytest.raises(ValidationError):
        client.with_options(timeout=bad)


async def test_with_options_refuses_negative_max_retries(make: Make) -> None:
    with pytest.raises(ValidationError):
        make(SECRET).with_options(max_retries=-1)


async def test_httpx_timeout_is_accepted_as_is(make: Make) -> None:
    timeout = httpx2.Timeout(10.0, connect=2.0, pool=1.0)
    assert make(SECRET, timeout=timeout).timeout == timeout


async def test_connect_timeout_is_5_seconds_by_default(make: Make) -> None:
    timeout = make(SECRET).timeout
    assert timeout.connect == 5.0
    assert timeout.read == 30.0


@pytest.mark.parametrize(("seconds", "connect"), [(2, 2.0), (5, 5.0), (60, 5.0), (0.5, 0.5)])
async def test_a_number_of_seconds_caps_connect_at_5(make: Make, seconds: float, connect: float) -> None:
    timeout = make(SECRET, timeout=seconds).timeout
    assert timeout.connect == connect
    assert timeout.read == float(seconds)
    assert timeout.write == float(seconds)
    assert timeout.pool == float(seconds)


# -- repr and environment ------------------------------------------------------------------------


async def test_repr_shows_environment_url_and_masked_key(make: Make) -> None:
    text = repr(make(SECRET, api_url=BASE_URL))
    assert "'test'" in text
    assert BASE_URL in text
    assert "sk_test_…1a2b" in text
    assert SECRET not in text
    assert "s3cr3t" not in text


async def test_repr_of_a_live_client_masks_the_live_key(make: Make) -> None:
    text = repr(make(LIVE_SECRET))
    assert "'live'" in text
    assert LIVE in text
    assert "sk_live_…9z9z" in text
    assert "l1v3" not in text


async def test_repr_of_a_with_options_copy_masks_the_key(make: Make) -> None:
    text = repr(make(SECRET).with_options(timeout=1))
    assert "sk_test_…1a2b" in text
    assert "s3cr3t" not in text


def test_sync_facade_repr_shows_environment_url_and_masked_key() -> None:
    with BillingOS(SECRET, api_url=BASE_URL) as client:
        text = repr(client)
        assert client.environment == "test"
        assert client.api_url == BASE_URL
    assert "'test'" in text
    assert BASE_URL in text
    assert "sk_test_…1a2b" in text
    assert "s3cr3t" not in text


@pytest.mark.parametrize(("key", "environment"), [(SECRET, "test"), (LIVE_SECRET, "live")])
async def test_environment_property_follows_the_key_prefix(make: Make, key: str, environment: str) -> None:
    assert make(key).environment == environment


async def test_environment_follows_the_key_not_the_url(make: Make) -> None:
    assert make(SECRET, api_url=LIVE).environment == "test"


@pytest.mark.parametrize("cls", ["AsyncBillingOS", "BillingOS"])
def test_a_client_of_the_old_httpx_package_is_refused_saying_what_to_pass(cls: str) -> None:
    """Run where ``import httpx`` is the real httpx 0.28 (installed with respx), not the tests' alias."""
    import subprocess
    import sys

    code = (
        "import httpx, httpx2, billingos\n"
        "assert httpx is not httpx2 and httpx.AsyncClient is not httpx2.AsyncClient\n"
        "client = httpx.AsyncClient()\n"
        "try:\n"
        f"    billingos.{cls}('sk_test_' + 'a' * 32, http_client=client)\n"
        "except billingos.ValidationError as exc:\n"
        "    print(exc.code)\n"
        "    print(exc.message)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr
    code_line, message = child.stdout.strip().split("\n", 1)
    assert code_line == "invalid_argument"
    assert "not an httpx.AsyncClient of the old httpx package" in message
    assert "httpx2.AsyncClient(" in message  # what to pass instead
