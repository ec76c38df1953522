"""The secret key, and session tokens the server mints, never show up where people look.

Every kind of failure is provoked against the embedded server over real loopback HTTP (so httpx,
httpcore and h11 frames are in the tracebacks) or a canned transport, with every logger at DEBUG.
After each one, nothing may contain the key (``sk_test_`` + 48 random hex characters, the other key
used for the 401, or any 12-character piece of their secret parts) or a session token (or any
12-character piece of it):

- log records: message, ``args``, ``exc_text``, the formatted record, and the record's exception
  rendered with ``capture_locals=True`` (what Sentry's logging integration and rich record);
- the exception: ``str``, ``repr``, ``vars``, its pickle, ``traceback.format_exception``, and
  ``traceback.TracebackException(capture_locals=True)`` of the whole chain (``__cause__`` and
  ``__context__`` included): every local of every SDK frame, and of every httpx/httpcore/h11 frame;
- the client's object graph (client, settings, requester, its headers, the httpx client, resources,
  cache, recorder, sync facade, its runner and loop thread, ...): ``repr``, ``str`` and ``vars`` of
  every object reached, and where the key is kept raw at all.

Pickling: a client, its settings and its requester refuse to pickle (``SecretKey.__reduce__``
raises ``TypeError``), so the key never reaches a pickle; exceptions and models pickle, without it.

Figure: the scenario table (one line per scenario: what was raised, how many log records and frame
locals were checked) in the "hardening figures" section.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import secrets
import socket
import string
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest

import billingos
from billingos import (
    AsyncBillingOS,
    BillingOS,
    BillingOSError,
    EntitlementCache,
    EntitlementReason,
    RetryPolicy,
)
from billingos.testing import FakeBillingOS, Fault

from .._factories import make_token

SDK_DIR = str(Path(billingos.__file__).parent)
THIRD_PARTY = ("httpx2", "httpcore2", "h11", "anyio", "tenacity")
USER, FEATURE, PRICE = "user_1", "api_calls", "price_pro"


async def _no_sleep(_: float) -> None:
    return None


NO_SLEEP = RetryPolicy(sleep=_no_sleep)


def _pieces(secret: str, size: int = 12) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


class Secrets:
    """What must never be seen: whole values and every 12-character piece of their secret parts."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.pieces: list[str] = []

    def add(self, value: str, *, secret_part: str) -> None:
        self.values.append(value)
        self.pieces.extend(_pieces(secret_part))

    def find(self, text: str) -> str | None:
        for value in self.values:
            if value in text:
                return value
        return next((piece for piece in self.pieces if piece in text), None)

    def find_bytes(self, data: bytes) -> str | None:
        return self.find(data.decode("latin-1"))


@attrs.define
class Audit:
    """Every place a secret was found, and how much was looked at."""

    secrets: Secrets
    leaks: list[str] = attrs.field(factory=list)
    records: int = 0
    frames: int = 0
    locals: int = 0
    objects: int = 0

    def check(self, where: str, text: str) -> None:
        found = self.secrets.find(text)
        if found is not None:
            self.leaks.append(f"{where}: {found[:16]}... in {text[:300]!r}")


# -- exceptions and tracebacks ------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def audit_exception(audit: Audit, exc: BaseException, where: str) -> None:
    for number, link in enumerate(_chain(exc)):
        name = f"{where} chain[{number}] {type(link).__name__}"
        audit.check(f"{name} str", str(link))
        audit.check(f"{name} repr", repr(link))
        audit.check(f"{name} vars", repr(vars(link)))
        if isinstance(link, BillingOSError):
            audit.check(f"{name} pickle", pickle.dumps(link).decode("latin-1"))
    audit.check(
        f"{where} format_exception", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    stack = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
    todo = [stack]
    while todo:
        current = todo.pop()
        for frame in current.stack:
            ours = frame.filename.startswith(SDK_DIR)
            theirs = any(f"{sep}{lib}{sep}" in frame.filename for lib in THIRD_PARTY for sep in "/\\"[:1])
            if not (ours or theirs):
                continue  # the test's own frames hold the key on purpose
            audit.frames += 1
            for local, text in (frame.locals or {}).items():
                audit.locals += 1
                audit.check(f"{where} frame {Path(frame.filename).name}:{frame.name} local {local}", text)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


# -- log records --------------------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def all_logs_at_debug() -> Iterator[Collect]:
    """Every logger (billingos, httpx, httpcore, asyncio, uvicorn, ...) at DEBUG into one handler."""
    handler = Collect()
    root = logging.getLogger()
    names = ["billingos", "httpx2", "httpcore2", "asyncio", "uvicorn", "uvicorn.error"]
    levels = {name: logging.getLogger(name).level for name in names}
    old_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_root)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def audit_records(audit: Audit, handler: Collect) -> None:
    for record in handler.records:
        audit.records += 1
        where = f"log {record.name}:{record.levelname}"
        audit.check(f"{where} message", record.getMessage())
        audit.check(f"{where} args", repr(record.args))
        audit.check(f"{where} formatted", handler.format(record))
        if record.exc_text:
            audit.check(f"{where} exc_text", record.exc_text)
        if record.exc_info and record.exc_info[1] is not None:
            audit_exception(audit, record.exc_info[1], f"{where} exc_info")


# -- the object graph ---------------------------------------------------------------------------

_WALKED_MODULES = ("billingos", "httpx2", "httpcore2", "tests.hardening")
_RAW_HOLDERS_ALLOWED = {
    "billingos._config.SecretKey",  # the one place the key is kept as text; repr/str are masked
    "httpx2.Headers",  # the Authorization header of requests sent by httpx2; repr is masked
    "billingos._transport.RequestHeaders",  # the Authorization header of the requester and of calls; masked
    "billingos._models.SessionToken",  # a session token (as_customer's cache, a given token); repr masked
}


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            yield f"[{key!r}]"[:40], value
            yield f"<key {key!r}>"[:40], key
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(list(obj)):
            yield f"[{i}]", value
        return
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from list(vars(obj).items())
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if slot in ("__dict__", "__weakref__"):
                continue
            try:
                yield slot, getattr(obj, slot)
            except AttributeError:
                continue


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def audit_graph(audit: Audit, root: object, where: str, raw_secrets: list[str]) -> set[str]:
    """Walk from ``root``; check repr/str/vars of every SDK object; return the types holding a raw secret.

    Containers (dicts, lists, ...) are checked when an SDK object owns them; inside httpx and httpcore
    objects only their own ``repr`` counts (httpx2.Headers keeps the raw header in ``_list``, and masks
    it in its repr).
    """
    holders: set[str] = set()
    seen: set[int] = set()
    todo: list[tuple[Any, str, str]] = [(root, where, "billingos")]
    while todo and len(seen) < 20_000:
        obj, path, owner = todo.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (bool, int, float, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, (str, bytes)):
            text = obj if isinstance(obj, str) else obj.decode("latin-1")
            if any(s in text for s in raw_secrets):
                holders.add(owner)
            continue
        module = type(obj).__module__ or ""
        container = isinstance(obj, (dict, list, tuple, set, frozenset))
        if not (container or module.startswith(_WALKED_MODULES)):
            continue
        audit.objects += 1
        ours = module.startswith("billingos") or (container and owner.startswith("billingos"))
        if ours or not container:
            try:
                text = repr(obj)
            except Exception as exc:  # a repr that fails is not a leak
                text = f"<repr failed: {exc!r}>"
            audit.check(f"{path} repr", text)
        if ours and not container:
            audit.check(f"{path} str", str(obj))
            if hasattr(obj, "__dict__"):
                audit.check(f"{path} vars", repr(vars(obj)))
        child_owner = owner if container else f"{module}.{type(obj).__qualname__}"
        for name, child in _children(obj):
            todo.append((child, f"{path}.{name}", child_owner))
    return holders


# -- the scenarios ------------------------------------------------------------------------------


@attrs.define
class World:
    fake: FakeBillingOS
    url: str
    key: str
    unknown_key: str
    refused_url: str
    secrets: Secrets
    tokens: list[str] = attrs.field(factory=list)
    keep: list[Any] = attrs.field(factory=list)
    """Objects whose graph is walked after the scenario (clients, caches, recorders, facades)."""


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    fake = FakeBillingOS(rate_limits=None)
    fake.add_feature(FEATURE, "usage_quota")
    plan = fake.add_product("Pro", features={FEATURE: 1000}, price_id=PRICE)
    fake.add_customer(USER, email="ada@example.com")
    fake.subscribe(USER, plan.price_id)
    unknown = "sk_test_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    refused = f"http://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()  # nothing listens there any more: connection refused
    found = Secrets()
    found.add(fake.secret_key, secret_part=fake.secret_key[len("sk_test_") :])
    found.add(unknown, secret_part=unknown[len("sk_test_") :])
    with fake.serve() as url:
        yield World(fake, url, fake.secret_key, unknown, refused, found)


def _client(world: World, **kwargs: Any) -> AsyncBillingOS:
    kwargs.setdefault("api_url", world.url)
    kwargs.setdefault("retry_policy", NO_SLEEP)
    client = AsyncBillingOS(kwargs.pop("key", world.key), **kwargs)
    world.keep.append(client)
    return client


async def _token(world: World, client: AsyncBillingOS) -> str:
    token = (await client.session_tokens.create(USER, expires_in=600)).session_token
    world.tokens.append(token)
    world.secrets.add(token, secret_part=token[len("bos_session_") :])
    return token


Scenario = Callable[[World], Awaitable[Any]]


async def auth_error(world: World) -> Any:
    async with _client(world, key=world.unknown_key) as billing:
        return await billing.customers.get_by_external_id(USER)


async def client_side_validation(world: World) -> Any:
    async with _client(world) as billing:
        return await billing.usage.track(USER, FEATURE, -1, metadata={"note": "x"})


async def not_found(world: World) -> Any:
    async with _client(world) as billing:
        return await billing.customers.get("no-such-customer")


async def rate_limited(world: World) -> Any:
    world.fake.inject("GET /customers/{id}", Fault.error(429, retry_after="oops"), times=None)
    try:
        async with _client(world, max_retries=2) as billing:
            return await billing.customers.get("c1")
    finally:
        world.fake.clear_faults()


async def rate_limited_too_long(world: World) -> Any:
    world.fake.inject("GET /customers/{id}", Fault.error(429, retry_after=3600), times=1)
    async with _client(world) as billing:
        return await billing.customers.get("c1")


async def server_error_after_retries(world: World) -> Any:
    world.fake.inject("GET /v1/usage/check", Fault.error(503), times=4)
    async with _client(world) as billing:
        return await billing.entitlements.check(USER, FEATURE)


async def read_timeout(world: World) -> Any:
    world.fake.inject("GET /v1/usage/metrics", Fault.delay(2), times=2)
    async with _client(world, timeout=0.2, max_retries=1) as billing:
        return await billing.usage.metrics(USER)


async def connection_refused(world: World) -> Any:
    async with _client(world, api_url=world.refused_url, max_retries=2) as billing:
        return await billing.customers.get("c1")


async def connection_reset(world: World) -> Any:
    world.fake.inject("POST /subscriptions", Fault.reset(), times=1)
    async with _client(world) as billing:
        return await billing.subscriptions.create(USER, PRICE)


async def response_dropped(world: World) -> Any:
    world.fake.inject("POST /v1/usage/track", Fault.drop_response(), times=None)
    try:
        async with _client(world, max_retries=1) as billing:
            return await billing.usage.track(USER, FEATURE, 1)
    finally:
        world.fake.clear_faults()


async def bad_json(world: World) -> Any:
    world.fake.inject("POST /v1/session-tokens", Fault.malformed_json(), times=1)
    async with _client(world) as billing:
        return await billing.session_tokens.create(USER)


async def html_proxy_page(world: World) -> Any:
    world.fake.inject("DELETE /v1/session-tokens/{id}", Fault.html(502), times=1)
    async with _client(world, max_retries=0) as billing:
        token = await _token(world, billing)
        return await billing.session_tokens.revoke(token)


async def revoke_twice(world: World) -> Any:
    async with _client(world) as billing:
        token = await _token(world, billing)
        await billing.session_tokens.revoke(token)
        return await billing.session_tokens.revoke(token)  # 404: already revoked


async def transport_exception(world: World) -> Any:
    def explode(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ProxyError(f"proxy said no to {request.url}")

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(explode))
    world.keep.append(http)
    async with http, _client(world, http_client=http, max_retries=1) as billing:
        return await billing.customers.get("c1")


async def token_response_not_decodable(world: World) -> Any:
    """A 201 whose token the SDK cannot decode: the body (token included) must not reach a traceback."""
    async with _client(world) as billing:
        token = await _token(world, billing)
    head, _, signature = token.rpartition(".")
    broken = f"{head}.{signature[:-1]}"  # 63 hex characters: "not 64 hex characters"
    world.secrets.add(broken, secret_part=broken[len("bos_session_") :])

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(201, json={"sessionToken": broken, "expiresAt": {}}, request=request)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    world.keep.append(http)
    async with http, _client(world, http_client=http) as billing:
        return await billing.session_tokens.create(USER)


async def cancelled(world: World) -> Any:
    """Cancelled mid-exchange (the server holds the request 2 s; the caller gives up after 0.1 s)."""
    world.fake.inject("GET /customers/{id}", Fault.delay(2), times=1)
    async with _client(world) as billing:
        return await asyncio.wait_for(billing.customers.get("c1"), timeout=0.1)


async def closed_client(world: World) -> Any:
    billing = _client(world)
    await billing.aclose()
    return await billing.customers.get("c1")


async def cache_stale_and_unavailable(world: World) -> Any:
    cache = EntitlementCache(ttl=0, stale_if_error=300, on_unavailable="deny")
    world.keep.append(cache)
    async with _client(world, entitlement_cache=cache, max_retries=0) as billing:
        assert (await billing.check_entitlement(USER, FEATURE)).has_access
        world.fake.inject("GET /v1/usage/check", Fault.error(503), times=3)
        stale = await billing.check_entitlement(USER, FEATURE)  # logged: served stale
        assert stale.stale
        other = await billing.check_entitlement("user_2", FEATURE)  # logged: unavailable, denied
        assert other.reason == EntitlementReason.BILLINGOS_UNAVAILABLE
        return await billing.entitlements.check(USER, FEATURE, cache=False)  # raises the 503


async def recorder_failures(world: World) -> Any:
    world.fake.inject("POST /v1/usage/track", Fault.error(503), times=None)
    try:
        async with _client(world) as billing:
            recorder = billing.usage_recorder(flush_interval=0.01, retry_deadline=0.3, retry_policy=NO_SLEEP)
            world.keep.append(recorder)
            async with recorder:
                recorder.record(USER, FEATURE, 2)
                recorder.record("nobody", FEATURE)
                await recorder.flush(timeout=5)
            letters = recorder.dead_letters
            assert letters
            raise letters[0].error
    finally:
        world.fake.clear_faults()


def _customer_transport(world: World, routes: dict[str, Callable[[], httpx2.Response]]) -> httpx2.AsyncClient:
    """A canned BillingOS that mints a new (random) session token per call, then answers ``routes``."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/v1/session-tokens" and request.method == "POST":
            head = make_token("tok_" + secrets.token_hex(16), user=USER).rpartition(".")[0]
            token = f"{head}.{secrets.token_hex(32)}"
            world.tokens.append(token)
            world.secrets.add(token, secret_part=token[len("bos_session_") :])
            return httpx2.Response(201, json={"sessionToken": token, "expiresAt": {}}, request=request)
        if request.method == "DELETE":
            return httpx2.Response(502, text="<html>bad gateway</html>", request=request)
        return routes[request.url.path]()

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    world.keep.append(http)
    return http


def _refused(message: str) -> Callable[[], httpx2.Response]:
    body = {
        "error": {"code": "AUTH_INVALID_TOKEN", "message": message, "requestId": "req_x"},
        "statusCode": 401,
    }
    return lambda: httpx2.Response(401, json=body)


async def customer_session_minted_token_refused_twice(world: World) -> Any:
    """A minted token refused as expired: minted anew, refused again, raised; the revoke on close fails."""
    http = _customer_transport(world, {"/v1/customer/me": _refused("Token expired")})
    async with http, _client(world, http_client=http) as billing:
        customer = billing.as_customer(USER, revoke_on_close=True)
        world.keep.append(customer)
        try:
            return await customer.state()
        finally:
            await customer.aclose()  # logged: the revoke gets a 502


async def customer_session_given_token_refused(world: World) -> Any:
    """A token given as session_token=, refused as revoked: raised with the SDK's message."""
    http = _customer_transport(world, {"/v1/products": _refused("Token not found or revoked")})
    async with http, _client(world, http_client=http) as billing:
        token = (await billing.session_tokens.create(USER)).session_token
        customer = billing.as_customer(USER, session_token=token)
        world.keep.append(customer)
        return await customer.products.list()


async def customer_session_refused_token_argument(world: World) -> Any:
    """as_customer refuses a token minted for another user: the token is in no frame's locals."""
    async with _client(world) as billing:
        token = await _token(world, billing)
        return billing.as_customer("someone_else", session_token=token)


async def sync_customer_session_refused_token_argument(world: World) -> Any:
    async with _client(world) as billing:
        token = await _token(world, billing)

    def blocking() -> Any:
        with BillingOS(world.key, api_url=world.url) as billing:
            world.keep.append(billing)
            return billing.as_customer("someone_else", session_token=token)

    return await asyncio.to_thread(blocking)


async def sync_customer_session(world: World) -> Any:
    """The blocking handle: a minted token refused as revoked twice, raised; the revoke on close fails."""
    http = _customer_transport(world, {"/v1/customer/me": _refused("Token not found or revoked")})

    def blocking() -> Any:
        with BillingOS(world.key, api_url=world.url, http_client=http, retry_policy=NO_SLEEP) as billing:
            world.keep.append(billing)
            with billing.as_customer(USER, revoke_on_close=True) as customer:
                world.keep.append(customer)
                return customer.state()

    return await asyncio.to_thread(blocking)


def _sync(name: str, call: Callable[[BillingOS], Any]) -> Scenario:
    async def scenario(world: World) -> Any:
        def blocking() -> Any:
            with BillingOS(world.key, api_url=world.url, retry_policy=NO_SLEEP, max_retries=1) as billing:
                world.keep.append(billing)
                return call(billing)

        return await asyncio.to_thread(blocking)

    scenario.__name__ = name
    return scenario


def _sync_server_error(billing: BillingOS) -> Any:
    return billing.customers.get("no-such-customer")


def _sync_recorder(billing: BillingOS) -> Any:
    with billing.usage_recorder(flush_interval=0.01) as recorder:
        recorder.record(USER, FEATURE)
        recorder.flush(timeout=5)
    return billing.usage.track(USER, FEATURE, float("nan"))  # refused before sending


SCENARIOS: list[Scenario] = [
    auth_error,
    client_side_validation,
    not_found,
    rate_limited,
    rate_limited_too_long,
    server_error_after_retries,
    read_timeout,
    connection_refused,
    connection_reset,
    response_dropped,
    bad_json,
    html_proxy_page,
    revoke_twice,
    transport_exception,
    token_response_not_decodable,
    cancelled,
    closed_client,
    cache_stale_and_unavailable,
    recorder_failures,
    _sync("sync_facade_not_found", _sync_server_error),
    _sync("sync_facade_recorder_and_validation", _sync_recorder),
    customer_session_minted_token_refused_twice,
    customer_session_given_token_refused,
    sync_customer_session,
    customer_session_refused_token_argument,
    sync_customer_session_refused_token_argument,
]


@pytest.fixture
def audit(world: World) -> Audit:
    return Audit(world.secrets)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_no_secret_in_logs_exceptions_tracebacks_or_the_client_graph(
    world: World, audit: Audit, scenario: Scenario, figure: Callable[[str], None]
) -> None:
    world.keep.clear()
    world.fake.clear_faults()
    raised: BaseException | None = None
    with all_logs_at_debug() as handler:
        try:
            await scenario(world)
        except (TimeoutError, BillingOSError, asyncio.CancelledError) as exc:
            raised = exc
        await asyncio.sleep(0)
    assert raised is not None, "every scenario ends in a failure"
    audit_exception(audit, raised, "exception")
    audit_records(audit, handler)
    holders: set[str] = set()
    raw = [world.key, world.unknown_key, *world.tokens]
    for number, obj in enumerate(world.keep):
        holders |= audit_graph(audit, obj, f"graph[{number}]:{type(obj).__name__}", raw)
    assert not audit.leaks, "\n".join(audit.leaks[:20])
    assert holders <= _RAW_HOLDERS_ALLOWED, holders
    figure(
        f"{type(raised).__name__}: {audit.records} log records, {audit.frames} frames "
        f"({audit.locals} locals), {audit.objects} objects checked; key kept raw only in "
        f"{sorted(h.rsplit('.', 1)[-1] for h in holders) or 'nothing reachable'}"
    )


# -- pickling -----------------------------------------------------------------------------------


async def test_a_client_refuses_to_pickle_so_its_key_never_reaches_a_pickle(world: World) -> None:
    """Decided: clients, settings and requesters are not picklable (the key would be in the bytes)."""
    async with _client(world) as billing:
        for obj in (billing, billing._requester.settings, billing._requester, billing.customers):
            with pytest.raises(TypeError) as info:
                pickle.dumps(obj)
            assert world.secrets.find(str(info.value)) is None
    with BillingOS(world.key, api_url=world.url) as facade:
        # Its loop runner fails first (a local function), the key would next: either way, no bytes.
        with pytest.raises((TypeError, AttributeError, pickle.PicklingError)) as refused:
            pickle.dumps(facade)
        assert world.secrets.find(str(refused.value)) is None


# -- configuration refused when the client is built (fixes proposed, files not owned here) ------


def _refused_configurations(world: World) -> list[tuple[str, Callable[[], object]]]:
    cache = EntitlementCache()
    AsyncBillingOS(world.unknown_key, api_url=world.url, entitlement_cache=cache)  # binds the cache
    return [
        ("bad api_url", lambda: AsyncBillingOS(world.key, api_url="ftp://nope")),
        ("bad timeout", lambda: AsyncBillingOS(world.key, timeout=-1)),
        ("sync bad api_url", lambda: BillingOS(world.key, api_url="ftp://nope")),
        (
            "cache of another key",
            lambda: AsyncBillingOS(world.key, api_url=world.url, entitlement_cache=cache),
        ),
        (
            "sync cache of another key",
            lambda: BillingOS(world.key, api_url=world.url, entitlement_cache=cache),
        ),
    ]


def test_a_refused_configuration_leaves_no_key_in_the_locals_of_sdk_frames(world: World) -> None:
    leaks = []
    for label, build in _refused_configurations(world):
        with pytest.raises(BillingOSError) as info:
            build()
        tb = info.value.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename.startswith(SDK_DIR):
                for name, value in frame.f_locals.items():
                    if isinstance(value, str) and world.secrets.find(value):
                        leaks.append(f"{label}: {frame.f_code.co_name}() local {name}")
            tb = tb.tb_next
    assert not leaks, leaks


def test_a_traceback_with_locals_of_a_refused_configuration_renders(world: World) -> None:
    with pytest.raises(BillingOSError) as info:
        AsyncBillingOS(world.key, api_url="ftp://nope")
    exc = info.value
    traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
