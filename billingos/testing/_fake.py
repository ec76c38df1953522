"""``FakeBillingOS``: a stateful BillingOS you seed from Python and run in-process or on loopback."""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
import httpx2

from .._client import AsyncBillingOS
from .._sync import BillingOS
from ._app import ROUTES, AdminRoutes, BillingOSApp, RateLimits, ReceivedRequest
from ._customer_state import CustomerSide
from ._faults import DropConnection, Fault, FaultRule
from ._faults import FaultPlan as _FaultPlan
from ._state import CustomerRecord, Feature, FeatureType, Plan, SessionTokenRecord, Store, SubscriptionRecord


class FakeBillingOS:
    """A BillingOS server that behaves like the real one (CONTRACT.md), seeded from Python.

    Run it in-process (no sockets) with :meth:`client` / :meth:`async_http_client`, or on a loopback
    port with :meth:`serve`. State lives in memory; each instance is independent.

    Args:
        rate_limits: the server's throttling; ``None`` switches it off. Default: the real limits.
        mangle_dates: serialise every date in success bodies as ``{}``, the server's worst case.
        clock: seconds since the epoch (inject one to move time: periods, expiry, rate windows).
        seed: makes generated ids' randomness in probabilistic faults repeatable.
        stripe_connected: whether the organization has a connected Stripe account. Without one,
            ``POST /v1/checkout/create`` answers 400 ``Organization does not have a Stripe Connect
            account``, even for a free price (as the server does). See :meth:`disconnect_stripe`.
        admin_routes: ``"secret_key"`` (default): ``/customers*`` and ``/subscriptions*`` accept the
            secret key, as CONTRACT.md describes them. ``"dashboard_only"``: they behave like the
            public backend, which guards them with a dashboard login: a secret key gets 401
            ``AUTH_INVALID_TOKEN`` ``jwt malformed`` (``No auth token`` without a header), and
            ``PATCH /subscriptions/{id}`` and ``POST /subscriptions/{id}/reactivate`` are 404
            ``Cannot PATCH /subscriptions/…``.

    Example::

        fake = FakeBillingOS()
        fake.add_feature("api_calls", "usage_quota")
        plan = fake.add_product("Pro", features={"api_calls": 1000})
        fake.add_customer("user_42", email="ada@example.com")
        fake.subscribe("user_42", plan.price_id)

        async with fake.client() as billing:
            await billing.track_usage("user_42", "api_calls", 5)
        assert fake.usage_of("user_42", "api_calls") == 5
    """

    def __init__(
        self,
        *,
        rate_limits: RateLimits | None = RateLimits(),  # noqa: B008 (frozen, shared safely)
        mangle_dates: bool = False,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        stripe_connected: bool = True,
        admin_routes: AdminRoutes = "secret_key",
    ) -> None:
        self.merchant_id = "org_" + secrets.token_hex(8)
        self._store = Store(clock, secrets.token_bytes(32), self.merchant_id)
        self._faults = _FaultPlan(seed)
        self.secret_key = self.add_secret_key()
        """A ``sk_test_`` key the server accepts."""
        self._side = CustomerSide(self._store, stripe_connected=stripe_connected)
        self._app = BillingOSApp(
            self._store, self._faults, rate_limits, mangle_dates, clock, self._side, admin_routes
        )

    # -- the app -----------------------------------------------------------------------------

    @property
    def app(self) -> BillingOSApp:
        """The ASGI application (mount it anywhere, or serve it with any ASGI server)."""
        return self._app

    @property
    def requests(self) -> Sequence[ReceivedRequest]:
        """Every request received so far, oldest first."""
        return tuple(self._app.requests)

    def requests_to(self, route: str) -> list[ReceivedRequest]:
        """The requests received on one route, e.g. ``fake.requests_to("POST /v1/usage/track")``."""
        _check_route(route)
        return [r for r in self._app.requests if r.route == route]

    # -- seeding -----------------------------------------------------------------------------

    def add_secret_key(self, *, live: bool = False) -> str:
        """Another secret key the server accepts (``sk_live_`` with ``live=True``)."""
        key = ("sk_live_" if live else "sk_test_") + secrets.token_hex(24)
        self._store.api_keys.add(key)
        return key

    def add_feature(
        self,
        key: str,
        type: FeatureType = "boolean_flag",
        *,
        title: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Feature:
        """Define a feature: ``"boolean_flag"``, ``"usage_quota"`` (per period) or ``"numeric_limit"``.

        ``properties`` are the feature-level ``features.properties`` that ``GET /v1/products`` and
        ``GET /v1/features/entitlements`` show (the server shows these, not a plan's own limits).
        """
        return self._store.add_feature(key, type, title, properties)

    def add_product(
        self,
        name: str,
        *,
        features: Mapping[str, float | bool | None],
        amount: int = 0,
        currency: str = "usd",
        trial_days: int = 0,
        product_id: str | None = None,
        price_id: str | None = None,
        description: str | None = None,
        highlighted: bool = False,
        visible: bool = True,
    ) -> Plan:
        """A product with one monthly price granting ``features`` (feature key -> limit, ``True`` for flags).

        Returns the :class:`Plan` with its ``product_id`` and ``price_id``. With ``trial_days``, new
        subscriptions start ``trialing`` (which does not grant access, as on the real server).
        ``amount=0`` makes a free price (``POST /v1/checkout/{id}/confirm-free`` completes it).

        A ``usage_quota`` feature given ``None`` has a NULL limit ("unlimited" in the dashboard), which
        the real server counts as 0: checks report ``quota_exceeded`` and every track is refused.

        ``description``, ``highlighted`` (``metadata.recommended``) and ``visible``
        (``visible_in_pricing_table``) are what ``GET /v1/products`` shows; a hidden plan is left out.
        """
        for key, value in features.items():
            feature = self._store.features.get(key)
            if isinstance(value, bool) and feature is not None and feature.type != "boolean_flag":
                raise ValueError(f"feature {key!r} is a {feature.type}: give it a numeric limit")
        grants = {k: (None if isinstance(v, bool) or v is None else float(v)) for k, v in features.items()}
        plan = Plan(
            product_id=product_id or "prod_" + secrets.token_hex(8),
            price_id=price_id or "price_" + secrets.token_hex(8),
            name=name,
            grants=grants,
            amount=amount,
            currency=currency,
            trial_days=trial_days,
            description=description,
            highlighted=highlighted,
            visible=visible,
        )
        return self._store.add_plan(plan)

    def add_customer(
        self,
        external_id: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CustomerRecord:
        """A customer; ``external_id`` is your user id (what usage and entitlements are keyed by)."""
        email = email or f"{external_id or secrets.token_hex(4)}@example.com"
        fields = {"email": email, "external_id": external_id, "name": name, "metadata": dict(metadata or {})}
        return self._store.create_customer(fields)

    def subscribe(
        self, customer: str | CustomerRecord, price_id: str, *, status: str | None = None
    ) -> SubscriptionRecord:
        """Subscribe a customer (by external id, internal id or record) to a price, in any status."""
        ref = customer.id if isinstance(customer, CustomerRecord) else customer
        return self._store.create_subscription(ref, price_id, None, None, status=status)

    def set_status(self, subscription_id: str, status: str) -> SubscriptionRecord:
        """Move a subscription to another status (``past_due``, ``canceled``, or a new one)."""
        return self._store.set_subscription_status(subscription_id, status)

    def complete_checkout(self, session_id: str) -> SubscriptionRecord:
        """Pay a paid checkout session: the simulated payment and its ``payment_intent.succeeded`` webhook.

        Creates the subscription (``active``, or ``trialing`` for a plan with ``trial_days``) with the
        session's ``payment_intent_id``; ``GET /v1/checkout/{id}/status`` then shows it. Calling it
        again returns the same subscription. A free session raises ``ValueError`` (it completes
        through ``POST /v1/checkout/{id}/confirm-free``); an unknown one ``KeyError``.

        Example::

            session = (await http.post("/v1/checkout/create", json={"priceId": plan.price_id})).json()
            fake.complete_checkout(session["id"])
        """
        return self._side.complete_checkout(session_id)

    def disconnect_stripe(self) -> None:
        """Make the organization look unconnected to Stripe from now on (checkout then answers 400)."""
        with self._store.lock:
            self._side.stripe_account_id = None

    @property
    def stripe_account_id(self) -> str | None:
        """The connected account's ``acct_`` id (a paid checkout's ``stripeAccountId``), or ``None``."""
        return self._side.stripe_account_id

    # -- read-back ---------------------------------------------------------------------------

    def usage_of(self, customer: str, feature_key: str) -> float:
        """Units the server counted for this customer and feature in the current period."""
        return self._store.usage_of(customer, feature_key)

    def customer(self, ref: str) -> CustomerRecord | None:
        """A customer by external or internal id (``None`` if unknown or deleted)."""
        return self._store.find_customer(ref)

    def subscription(self, subscription_id: str) -> SubscriptionRecord:
        """A subscription by id (KeyError-free: raises the server's not-found error)."""
        return self._store.get_subscription(subscription_id)

    def session_tokens(self) -> list[SessionTokenRecord]:
        """Every session token minted so far, oldest first (revoked ones included)."""
        with self._store.lock:
            return list(self._store.tokens.values())

    def verify_session_token(self, token: str) -> dict[str, Any]:
        """The claims of a live token this server minted and signed; else ValueError."""
        return self._store.verify_session_token(token)

    # -- faults ------------------------------------------------------------------------------

    def inject(
        self, route: str, fault: Fault, *, times: int | None = 1, probability: float = 1.0
    ) -> FaultRule:
        """Arm ``fault`` on ``route`` (``"POST /v1/usage/track"``; wildcards: ``"*"``, ``"GET *"``).

        ``times``: how many requests it hits (``None``: all). ``probability``: the chance it hits
        each matching request (seeded by ``seed``). Returns the rule; ``rule.hits`` counts firings.
        """
        _check_route(route)
        return self._faults.add(route, fault, times, probability)

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self._faults.clear()

    # -- connecting --------------------------------------------------------------------------

    def transport(self) -> httpx2.AsyncBaseTransport:
        """An in-process httpx transport to this server (no sockets)."""
        return _InProcessTransport(self._app)

    def async_http_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` wired to this server in-process (for ``http_client=``)."""
        return httpx2.AsyncClient(transport=self.transport(), base_url="http://billingos.fake", **kwargs)

    def client(self, **kwargs: Any) -> AsyncBillingOS:
        """An ``AsyncBillingOS`` talking to this server in-process. Close it (``async with``)."""
        kwargs.setdefault("api_url", "http://billingos.fake")
        return AsyncBillingOS(self.secret_key, http_client=self.async_http_client(), **kwargs)

    def sync_client(self, **kwargs: Any) -> BillingOS:
        """A blocking ``BillingOS`` talking to this server in-process. Close it (``with``)."""
        kwargs.setdefault("api_url", "http://billingos.fake")
        return BillingOS(self.secret_key, http_client=self.async_http_client(), **kwargs)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve on a loopback port (``0``: any free one) in a background thread; yields the base URL.

        Example::

            with fake.serve() as url:
                with BillingOS(fake.secret_key, api_url=url) as billing:
                    billing.check_entitlement("user_42", "sso")
        """
        with serve_asgi(self._app, host, port) as url:
            yield url


class _InProcessTransport(httpx2.AsyncBaseTransport):
    """httpx's ASGI transport, with the fake's dropped connections surfacing as they would on a socket."""

    def __init__(self, app: BillingOSApp) -> None:
        self._inner = httpx2.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        # httpx's ASGITransport ignores timeouts; enforce the read timeout as a socket would, so a
        # Fault.delay longer than the client's timeout raises RequestTimeoutError in-process too.
        # (Unlike a real server, the timed-out request is then not processed at all.)
        read_timeout = request.extensions.get("timeout", {}).get("read")
        try:
            with anyio.fail_after(read_timeout):
                return await self._inner.handle_async_request(request)
        except TimeoutError:
            raise httpx2.ReadTimeout(
                "The fake did not answer within the read timeout.", request=request
            ) from None
        except DropConnection:
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None

    async def aclose(self) -> None:
        await self._inner.aclose()


class _QuietDrops(logging.Filter):
    """uvicorn logs an app exception as an error; a deliberate drop is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DropConnection))


@contextmanager
def serve_asgi(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread until the block exits; yields ``http://host:port``.

    The listening socket gets ``TCP_NODELAY`` before binding: without it, loopback requests wait
    ~44 ms each for a delayed ACK (see the team's loopback notes).
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    quiet = _QuietDrops()
    logging.getLogger("uvicorn.error").addFilter(quiet)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="billingos-fake", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake BillingOS server did not start")
            time.sleep(0.005)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        logging.getLogger("uvicorn.error").removeFilter(quiet)


def _check_route(pattern: str) -> None:
    import fnmatch

    known = [f"{method} {template}" for method, template in ROUTES]
    if not any(fnmatch.fnmatchcase(route, pattern) for route in known):
        raise ValueError(f"{pattern!r} matches no route; the routes are:\n  " + "\n  ".join(known))
