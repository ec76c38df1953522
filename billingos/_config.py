"""Client settings: where the key and base URL come from, and how the key is kept out of sight."""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
from collections.abc import Mapping
from typing import Literal

import attrs
import httpx2

from ._errors import ValidationError
from ._validate import shown

Environment = Literal["test", "live"]
TimeoutTypes = float | int | httpx2.Timeout
HttpBackend = Literal["httpx2", "httpx", "aiohttp"]
"""What carries the SDK's requests: httpx2 (the default), or aiohttp (the ``billingos[aiohttp]`` extra).
``"httpx"`` is accepted as another name for ``"httpx2"``."""

SANDBOX_URL = "https://sandbox-api.billingos.dev"
LIVE_URL = "https://api.billingos.dev"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""16 MiB of decoded body: a 100-customer page is ~100 kB, and ~10 MB with every customer's metadata near
the 100 kB a request may carry; anything larger is a broken or hostile answer, not data."""
DEFAULT_RATE_LIMIT_WAIT = 10.0
"""Seconds a call waits for its route's rate budget by default: a handler's patience, not a 60 s window."""
# keep-alive = max: every connection the pool opened under load stays open for the next burst (a lower
# value closes connections as they go idle, and each later burst pays new connects).
DEFAULT_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0)

_PREFIXES: Mapping[str, Environment] = {"sk_test_": "test", "sk_live_": "live"}


class SecretKey:
    """A secret key that never shows itself: ``str``, ``repr`` and f-strings print it masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the ``Authorization`` header only."""
        return self._value

    @property
    def masked(self) -> str:
        """``sk_test_…1a2b``: the prefix and the last four characters."""
        prefix = next((p for p in _PREFIXES if self._value.startswith(p)), "")
        if len(self._value) - len(prefix) < 16:
            return f"{prefix}…"  # too short to show any of it safely
        return f"{prefix}…{self._value[-4:]}"

    def __repr__(self) -> str:
        return f"SecretKey({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a BillingOS secret key is not picklable")


@attrs.frozen
class Settings:
    """Resolved, validated settings of one client. Built by :func:`resolve`."""

    secret_key: SecretKey
    api_url: str
    environment: Environment
    timeout: httpx2.Timeout
    max_retries: int
    limits: httpx2.Limits = DEFAULT_LIMITS
    http_backend: HttpBackend = "httpx2"
    deadline: float | None = None
    """Seconds an attempt may take from connect to the last body byte: ``timeout`` given as a number;
    ``None`` when ``timeout`` is an :class:`httpx2.Timeout` (its phases only)."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """The largest decoded response body accepted; a larger one is refused while it streams."""
    rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT
    """Seconds a call may wait for its route's rate budget before ``RateLimitError`` (unsent)."""


def resolve(
    secret_key: str | None,
    api_url: str | None,
    timeout: TimeoutTypes | None,
    max_retries: int | None,
    limits: httpx2.Limits | None,
    env: Mapping[str, str] | None = None,
    http_backend: str | None = None,
    max_response_bytes: int | None = None,
    rate_limit_wait: float | None = None,
) -> Settings:
    """Resolve every setting from arguments, then the environment, then defaults (CONTRACT §1).

    ``None`` always means "use the default", never "disable". A refused setting raises its
    ``ValidationError`` without the frames of the checks below this one and with ``secret_key``
    deleted from this frame: their locals hold the raw key, which a traceback rendered with locals
    (Sentry, rich, ``pytest -l``) would print. The caller deletes its own copy (``del secret_key``).
    """
    try:
        settings = _resolve(
            secret_key, api_url, timeout, max_retries, limits, env, http_backend, max_response_bytes
        )
        if rate_limit_wait is not None:
            settings = attrs.evolve(settings, rate_limit_wait=check_rate_limit_wait(rate_limit_wait))
        return settings
    except ValidationError as exc:
        raise exc.with_traceback(None) from None
    finally:
        del secret_key


def _resolve(
    secret_key: str | None,
    api_url: str | None,
    timeout: TimeoutTypes | None,
    max_retries: int | None,
    limits: httpx2.Limits | None,
    env: Mapping[str, str] | None,
    http_backend: str | None,
    max_response_bytes: int | None,
) -> Settings:
    env = os.environ if env is None else env
    key = secret_key if secret_key is not None else env.get("BILLINGOS_SECRET_KEY")
    environment = _check_key(key)
    assert key is not None  # _check_key refused None
    url = api_url if api_url is not None else (env.get("BILLINGOS_API_URL") or None)
    if url is None:
        url = LIVE_URL if environment == "live" else SANDBOX_URL
    return Settings(
        secret_key=SecretKey(key),
        api_url=check_url(url, environment, env),
        environment=environment,
        timeout=check_timeout(timeout),
        max_retries=check_max_retries(max_retries),
        limits=limits if limits is not None else DEFAULT_LIMITS,
        http_backend=check_http_backend(http_backend),
        deadline=deadline_of(timeout),
        max_response_bytes=check_max_response_bytes(max_response_bytes),
    )


def _check_key(key: object) -> Environment:
    if key is None:
        raise ValidationError(
            "No secret key: pass secret_key=... or set BILLINGOS_SECRET_KEY "
            "(it starts with sk_test_ or sk_live_).",
            code="invalid_argument",
        )
    if not isinstance(key, str):
        raise ValidationError(f"secret_key must be a str, not {type(key).__name__}.", code="invalid_argument")
    for prefix, environment in _PREFIXES.items():
        if (
            key.startswith(prefix)
            and len(key) > len(prefix)
            and key.isascii()
            and key.isprintable()
            and " " not in key
        ):
            return environment
    hint = " That looks like a publishable key; use the secret one." if key.startswith("pk_") else ""
    raise ValidationError(
        "Invalid secret key: it must start with sk_test_ or sk_live_ and contain no whitespace."
        + hint
        + " Find it in the BillingOS dashboard under API keys.",
        code="invalid_argument",
    )


def check_url(url: str, environment: Environment, env: Mapping[str, str] | None = None) -> str:
    """Validate a base URL; strip a trailing ``/``; refuse a live key over plain HTTP off loopback.

    Off loopback includes through a proxy: with ``HTTP_PROXY``/``ALL_PROXY`` set (read from ``env``,
    default ``os.environ``), httpx sends a plain-http request, ``Authorization`` header and all, to the
    proxy, even for a loopback URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValidationError("api_url must be a non-empty URL string.", code="invalid_argument")
    try:
        parsed = httpx2.URL(url.strip())
    except (httpx2.InvalidURL, TypeError) as exc:
        raise ValidationError(f"api_url is not a valid URL: {exc}", code="invalid_argument") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationError(
            f"api_url must be an http(s) URL with a host, got {url!r}.", code="invalid_argument"
        )
    if parsed.query or parsed.fragment:
        raise ValidationError("api_url must not contain a query or fragment.", code="invalid_argument")
    if environment == "live" and parsed.scheme == "http":
        if not is_loopback(parsed.host):
            raise ValidationError(
                "Refusing to send a live secret key over plain http:// to a non-loopback host; use https://.",
                code="invalid_argument",
            )
        if _proxied(parsed.host, env):
            raise ValidationError(
                "Refusing to send a live secret key over plain http://: the proxy settings of the "
                "environment (HTTP_PROXY or ALL_PROXY) would send it to the proxy in clear text. Use "
                f"https://, or exempt this host with NO_PROXY={parsed.host}.",
                code="invalid_argument",
            )
    return str(parsed).rstrip("/")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback address literals (127.0.0.0/8, ::1).

    Not for other names, even ``localhost.`` or ``*.localhost``: they are not in ``/etc/hosts``, so the
    resolver may ask DNS, whose answer need not be a loopback address.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _proxied(host: str, env: Mapping[str, str] | None) -> bool:
    """Whether httpx (``trust_env``, its default) would send a plain-http request for ``host`` via a proxy.

    Errs towards "yes": only ``NO_PROXY=*`` or an entry naming exactly this host counts as a bypass (httpx
    honours both; its suffix and port forms are not mirrored, so they make this refuse, never leak).
    """
    if env is None or env is os.environ:
        import urllib.request  # here, not at import time: only a live key over http:// gets here

        proxies = urllib.request.getproxies()  # what httpx and the aiohttp backend read
    else:
        proxies = {
            name.lower()[: -len("_proxy")]: value
            for name, value in env.items()
            if value and name.lower().endswith("_proxy")
        }
    if not (proxies.get("http") or proxies.get("all")):
        return False
    bypass = {entry.strip().lower().strip("[]") for entry in proxies.get("no", "").split(",")}
    return "*" not in bypass and host.lower().strip("[]") not in bypass


def check_timeout(timeout: TimeoutTypes | None) -> httpx2.Timeout:
    """Seconds or an :class:`httpx2.Timeout`; positive and finite. The connect phase defaults to 5 s."""
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if isinstance(timeout, httpx2.Timeout):
        for phase in ("connect", "read", "write", "pool"):
            value = getattr(timeout, phase)
            if value is not None:
                _positive(f"timeout.{phase}", value)
        return timeout
    seconds = _positive("timeout", timeout)
    return httpx2.Timeout(seconds, connect=min(seconds, DEFAULT_CONNECT_TIMEOUT))


def check_rate_limit_wait(value: object) -> float:
    """``rate_limit_wait``: a finite number of seconds >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
        raise ValidationError(
            f"rate_limit_wait must be a finite number of seconds >= 0 (0: never wait), got {value!r}.",
            code="invalid_argument",
        )
    return float(value)


def deadline_of(timeout: TimeoutTypes | None) -> float | None:
    """The whole-attempt deadline a checked ``timeout`` sets: its seconds; ``None`` for an ``httpx2.Timeout``.

    A number bounds the attempt from connect to the last body byte, so a server that trickles its answer
    cannot hold a call past it; an ``httpx2.Timeout`` keeps its per-phase meaning (each read, each write,
    the connect, the wait for a pooled connection), with no bound on the whole.
    """
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx2.Timeout):
        return None
    return float(timeout)


def check_max_response_bytes(max_response_bytes: int | None) -> int:
    """A positive int; ``None`` means the default (16 MiB)."""
    if max_response_bytes is None:
        return DEFAULT_MAX_RESPONSE_BYTES
    if (
        isinstance(max_response_bytes, bool)
        or not isinstance(max_response_bytes, int)
        or max_response_bytes < 1
    ):
        raise ValidationError(
            f"max_response_bytes must be an int >= 1 (bytes of decoded response body), got "
            f"{shown(max_response_bytes)}.",
            code="invalid_argument",
        )
    return max_response_bytes


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"{name} must be a number of seconds or an httpx2.Timeout, not {type(value).__name__}.",
            code="invalid_argument",
        )
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite or value <= 0:
        raise ValidationError(
            f"{name} must be a positive, finite number of seconds, got {shown(value)}.",
            code="invalid_argument",
        )
    return float(value)


def check_max_retries(max_retries: int | None) -> int:
    """A non-negative int; ``None`` means the default (3)."""
    if max_retries is None:
        return DEFAULT_MAX_RETRIES
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValidationError(
            f"max_retries must be an int >= 0 (0 disables retries), got {max_retries!r}.",
            code="invalid_argument",
        )
    return max_retries


AIOHTTP_MISSING = (
    "http_backend='aiohttp' needs the optional aiohttp backend: pip install 'billingos[aiohttp]' "
    "(it installs aiohttp)."
)


def check_http_backend(http_backend: str | None) -> HttpBackend:
    """``"httpx2"`` (the default; ``"httpx"`` names it too) or ``"aiohttp"``, which must be installed."""
    if http_backend is None or http_backend in ("httpx2", "httpx"):
        return "httpx2"
    if http_backend != "aiohttp":
        raise ValidationError(
            f"http_backend must be 'httpx2' or 'aiohttp', got {http_backend!r}.", code="invalid_argument"
        )
    # find_spec, not an import: refuse at construction without paying aiohttp's import time here.
    if importlib.util.find_spec("aiohttp") is None:
        raise ValidationError(AIOHTTP_MISSING, code="invalid_argument")
    return "aiohttp"


def check_http_client(settings: Settings, http_client: object) -> None:
    """Refuse an ``http_client=`` the SDK cannot send through, saying what to pass instead.

    It must be an ``httpx2.AsyncClient`` (the SDK awaits it on an event loop). A client of the old
    ``httpx`` package, a blocking ``httpx2.Client``, or anything else is refused, and so is
    ``http_backend="aiohttp"`` together with a client: that backend *is* the client.
    """
    if http_client is None:
        return
    if settings.http_backend != "httpx2":
        raise ValidationError(
            f"http_backend={settings.http_backend!r} makes the SDK build its own HTTP client; it cannot be "
            "combined with http_client=. Pass one or the other.",
            code="invalid_argument",
        )
    if isinstance(http_client, httpx2.AsyncClient):
        return
    cls = type(http_client)
    name = f"{cls.__module__.split('.')[0]}.{cls.__qualname__}"
    if name == "httpx.AsyncClient" or name == "httpx.Client":
        hint = (
            f"http_client= takes an httpx2.AsyncClient, not an {name} of the old httpx package: the SDK "
            "sends through httpx2 (its maintained continuation, same API). Build it the same way with "
            "`import httpx2` and `httpx2.AsyncClient(...)`, e.g. "
            "http_client=httpx2.AsyncClient(proxy=..., verify=...)."
        )
    elif name == "httpx2.Client":
        hint = (
            "http_client= takes an httpx2.AsyncClient, not the blocking httpx2.Client: the SDK's core is "
            "asynchronous (the blocking BillingOS runs it on its own loop thread). "
            "Pass httpx2.AsyncClient(...) with the same arguments."
        )
    else:
        hint = f"http_client= takes an httpx2.AsyncClient, not {cls.__name__}."
    raise ValidationError(hint, code="invalid_argument")


def evolve(
    settings: Settings,
    timeout: TimeoutTypes | None,
    max_retries: int | None,
    max_response_bytes: int | None = None,
) -> Settings:
    """``settings`` with a new timeout, retry count and/or response cap, validated; ``None``: unchanged."""
    return attrs.evolve(
        settings,
        timeout=settings.timeout if timeout is None else check_timeout(timeout),
        deadline=settings.deadline if timeout is None else deadline_of(timeout),
        max_retries=settings.max_retries if max_retries is None else check_max_retries(max_retries),
        max_response_bytes=(
            settings.max_response_bytes
            if max_response_bytes is None
            else check_max_response_bytes(max_response_bytes)
        ),
    )
