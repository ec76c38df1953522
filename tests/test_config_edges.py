"""Edges of the client settings (``billingos/_config.py``) that test_config.py does not reach.

The masked form of keys too short to show, ``SecretKey`` equality (keys are compared, never shown),
and the proxy check when the environment is given as a mapping (``resolve(env=...)``, what the CLI
and the tests use) rather than read from ``os.environ``.
"""

from __future__ import annotations

import pickle

import pytest

from billingos import ValidationError
from billingos._config import SecretKey, check_url, resolve

from ._factories import LIVE_SECRET, SECRET

LOOPBACK = "http://127.0.0.1:8080"


# -- SecretKey -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk_test_abc", "sk_test_…"),  # 3 characters after the prefix: none of them shown
        ("sk_live_" + "x" * 15, "sk_live_…"),  # 15: still too short to show the last four
        ("sk_test_" + "x" * 12 + "1a2b", "sk_test_…1a2b"),  # 16: the last four are shown
        ("short", "…"),  # no known prefix, and short: nothing at all
    ],
)
def test_a_key_too_short_to_show_any_of_it_is_masked_entirely(value: str, masked: str) -> None:
    key = SecretKey(value)
    assert key.masked == masked
    assert str(key) == masked
    assert repr(key) == f"SecretKey({masked!r})"
    if not masked.endswith("1a2b"):
        assert value[-4:] not in repr(key)
    assert key.reveal() == value


def test_secret_keys_compare_and_hash_by_value_and_never_equal_a_plain_string() -> None:
    a, b, other = SecretKey(SECRET), SecretKey(SECRET), SecretKey(LIVE_SECRET)
    assert a == b
    assert hash(a) == hash(b)
    assert a != other
    assert a != SECRET  # a SecretKey is not its raw value (no accidental == leaks through comparisons)
    assert len({a, b, other}) == 2


def test_a_secret_key_refuses_to_be_pickled() -> None:
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(SecretKey(SECRET))


# -- the proxy check with an explicit environment ----------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_a_live_key_to_loopback_http_is_refused_when_the_given_environment_has_a_proxy(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HTTP_PROXY", raising=False)  # the mapping is what counts, not os.environ
    env = {variable: "http://proxy.example:3128"}
    with pytest.raises(ValidationError, match="proxy") as caught:
        resolve(LIVE_SECRET, LOOPBACK, None, None, None, env=env)
    assert caught.value.code == "invalid_argument"
    assert f"NO_PROXY={'127.0.0.1'}" in caught.value.message


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost, 127.0.0.1", "*", "[127.0.0.1]"])
def test_no_proxy_in_the_given_environment_exempts_the_host(no_proxy: str) -> None:
    env = {"HTTP_PROXY": "http://proxy.example:3128", "NO_PROXY": no_proxy}
    settings = resolve(LIVE_SECRET, LOOPBACK, None, None, None, env=env)
    assert settings.api_url == LOOPBACK
    assert settings.environment == "live"


@pytest.mark.parametrize("no_proxy", ["localhost", ".0.0.1", "127.0.0.1:8080", "127.0.0.0/8"])
def test_no_proxy_forms_not_mirrored_make_it_refuse_rather_than_leak(no_proxy: str) -> None:
    """Suffix, port and CIDR forms are not interpreted: the check errs towards refusing."""
    env = {"http_proxy": "http://proxy.example:3128", "no_proxy": no_proxy}
    with pytest.raises(ValidationError, match="proxy"):
        resolve(LIVE_SECRET, LOOPBACK, None, None, None, env=env)


def test_an_empty_or_https_only_proxy_in_the_given_environment_does_not_refuse() -> None:
    """Only a proxy for plain http (or for all schemes) would carry an http:// request."""
    env = {"HTTP_PROXY": "", "HTTPS_PROXY": "http://proxy.example:3128", "BILLINGOS_API_URL": LOOPBACK}
    settings = resolve(LIVE_SECRET, None, None, None, None, env=env)
    assert settings.api_url == LOOPBACK  # the URL came from the same mapping


def test_the_given_environment_replaces_os_environ_for_the_proxy_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert check_url(LOOPBACK, "live", {}) == LOOPBACK  # an explicit, proxy-free environment
    with pytest.raises(ValidationError, match="proxy"):
        check_url(LOOPBACK, "live")  # os.environ, which has one
    assert check_url(LOOPBACK, "test") == LOOPBACK  # a test key is never refused for it


def test_the_key_comes_from_the_given_environment_too() -> None:
    settings = resolve(None, None, None, None, None, env={"BILLINGOS_SECRET_KEY": LIVE_SECRET})
    assert settings.secret_key == SecretKey(LIVE_SECRET)
    assert settings.api_url == "https://api.billingos.dev"


@pytest.mark.parametrize(("levels", "refused"), [(32, False), (33, True), (5_000, True)])
def test_metadata_nesting_is_limited_the_same_on_every_python(levels: int, refused: bool) -> None:
    # json's own limit is ~1 000 levels on 3.10/3.11 and several thousand on 3.12+: ours is fixed.
    from billingos import ValidationError
    from billingos._validate import metadata

    value: dict[str, object] = {}
    inner = value
    for _ in range(levels - 1):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    if refused:
        with pytest.raises(ValidationError, match="nests deeper than 32 levels"):
            metadata("metadata", value)
    else:
        assert metadata("metadata", value) == value
