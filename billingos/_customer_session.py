"""``billing.as_customer(...)``: the calls BillingOS offers to one customer, made from your server.

The public BillingOS backend serves its pricing, checkout, portal, state and feature routes to the
holder of a customer **session token**, not to the secret key (CONTRACT-CUSTOMER §1.4). A handle mints
that token on first use through ``session_tokens.create`` (the secret key's one request path), keeps it
in the client's :class:`~billingos._tokens.TokenCache`, and sends it as the bearer of each call::

    handle call ─▶ token from the cache (minted once per user, re-minted before it expires)
                ─▶ Requester.request(..., authorization=token)   (retries, deadlines, errors: shared)
                ─▶ 401 "Token expired" / "Token not found or revoked"?
                       a token it minted: dropped, minted anew, the call repeated once
                       a token it was given (session_token=): raised, never re-minted

Checkout status and free-plan confirmation need no token on that server (the checkout id is the
credential): they are sent with no ``Authorization`` header at all.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from . import _validate as check
from ._convert import structurer
from ._errors import AuthenticationError, BillingOSError, NotFoundError, ValidationError
from ._http import Method, Requester, check_options, route
from ._models import (
    Catalog,
    CheckoutSession,
    CustomerEntitlement,
    CustomerState,
    Entitlement,
    EntitlementReason,
    PortalSession,
    SessionToken,
    Subscription,
    UsageMetrics,
    UsageRecord,
    decode_session_token,
)
from ._resources._base import RequestOptions, Unpack
from ._resources.entitlements import _decode_entitlement
from ._tokens import TokenCache, TokenKey
from ._tracing import traced

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

    from ._resources.session_tokens import AsyncSessionTokens

__all__ = [
    "AsyncCustomerCheckout",
    "AsyncCustomerEntitlements",
    "AsyncCustomerPortal",
    "AsyncCustomerProducts",
    "AsyncCustomerSession",
    "AsyncCustomerUsage",
    "CustomerArguments",
    "customer_arguments",
]

T = TypeVar("T")

logger = logging.getLogger("billingos")

RENEWABLE = frozenset({"Token expired", "Token not found or revoked"})
"""401 messages after which a token the SDK minted is minted anew (CONTRACT-CUSTOMER §1.2)."""

_decode_state = structurer(CustomerState)
_decode_catalog = structurer(Catalog)
_decode_checkout = structurer(CheckoutSession)
_decode_subscription = structurer(Subscription)
_decode_portal = structurer(PortalSession)
_decode_entitlement_item = structurer(CustomerEntitlement)
_decode_metrics = structurer(UsageMetrics)
_decode_record = structurer(UsageRecord)


# -- arguments ------------------------------------------------------------------------------------


@attrs.frozen
class CustomerArguments:
    """The validated arguments of ``as_customer`` (a given token decoded: its repr is masked)."""

    external_user_id: str
    external_organization_id: str | None
    allowed_operations: tuple[str, ...] | None
    session_token: SessionToken | None
    expires_in: int
    revoke_on_close: bool

    @property
    def key(self) -> TokenKey:
        operations = None if self.allowed_operations is None else frozenset(self.allowed_operations)
        return (self.external_user_id, self.external_organization_id, operations)


def customer_arguments(
    external_user_id: object,
    external_organization_id: object,
    allowed_operations: object,
    session_token: object,
    expires_in: object,
    revoke_on_close: object,
) -> CustomerArguments:
    """Check ``as_customer``'s arguments: a ``ValidationError`` naming the argument, before any request."""
    user = check.text("external_user_id", external_user_id, max_length=255)
    organization = check.optional_text("external_organization_id", external_organization_id, max_length=255)
    operations = check.string_list("allowed_operations", allowed_operations)
    lifetime = check.integer("expires_in", expires_in, low=60, high=86400)
    revoke = check.boolean("revoke_on_close", revoke_on_close)
    token: SessionToken | None = None
    if session_token is not None:
        try:
            token = decode_session_token(session_token)
        except ValidationError as exc:
            raise ValidationError(f"session_token: {exc.message}", code="invalid_argument") from None
        finally:
            del session_token  # the raw token: never a local of a frame a traceback shows
        if token.external_user_id and token.external_user_id != user:
            raise ValidationError(
                f"session_token was minted for another user ({token.external_user_id!r}), "
                f"not external_user_id {user!r}.",
                code="invalid_argument",
            )
    return CustomerArguments(
        user, organization, None if operations is None else tuple(operations), token, lifetime, revoke
    )


# -- the handle -----------------------------------------------------------------------------------


class AsyncCustomerSession:
    """What one of your customers can do, done from your server: ``billing.as_customer(user_id)``.

    Pricing (``products``), checkout, billing portal, state and features, through the routes the public
    BillingOS backend serves to a customer session token. The handle mints that token on first use and
    keeps it in the client's token cache (1024 customers, least recently used dropped), shared by every
    handle of the same user, organization and operations: a page that makes five calls mints once. A
    token is minted anew shortly before it expires, and once after a 401 saying it expired or was
    revoked. A token you pass as ``session_token=`` is used as given and never minted anew.

    ``revoke_on_close=True`` revokes, on :meth:`aclose` (or the end of ``async with``), the token the
    handle used, if the SDK minted it; other handles of that user then mint a new one on their next
    call. Creating a handle sends nothing; a closed handle refuses further calls.

    Example::

        async with billing.as_customer("user_42") as customer:
            catalog = await customer.products.list()
            session = await customer.checkout.create(catalog.products[0].prices[0].id)
    """

    __slots__ = (
        "_args",
        "_cache",
        "_closed",
        "_requester",
        "_session_tokens",
        "_used",
        "checkout",
        "entitlements",
        "portal",
        "products",
        "usage",
    )

    products: AsyncCustomerProducts
    """The pricing page: products with prices and features, and the current subscription."""
    checkout: AsyncCustomerCheckout
    """Start a checkout, read its status, complete a free one."""
    portal: AsyncCustomerPortal
    """Open a billing-portal session."""
    entitlements: AsyncCustomerEntitlements
    """Feature access of this customer."""
    usage: AsyncCustomerUsage
    """Metered usage of this customer."""

    def __init__(
        self,
        requester: Requester,
        session_tokens: AsyncSessionTokens,
        cache: TokenCache,
        args: CustomerArguments,
    ) -> None:
        self._requester = requester
        self._session_tokens = session_tokens
        self._cache = cache
        self._args = args
        self._used: SessionToken | None = None  # the last token taken from the cache
        self._closed = False
        self.products = AsyncCustomerProducts(self)
        self.checkout = AsyncCustomerCheckout(self)
        self.portal = AsyncCustomerPortal(self)
        self.entitlements = AsyncCustomerEntitlements(self)
        self.usage = AsyncCustomerUsage(self)

    @property
    def external_user_id(self) -> str:
        """Your own id of this customer."""
        return self._args.external_user_id

    @property
    def external_organization_id(self) -> str | None:
        """Your id of the customer's organization, if one was given."""
        return self._args.external_organization_id

    @property
    def is_closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    @traced("customer.state")
    async def state(self, **options: Unpack[RequestOptions]) -> CustomerState:
        """The customer, its granted features and (see below) subscriptions: ``GET /v1/customer/me``.

        On the public backend ``active_subscriptions`` is always empty and the answer is cached by the
        server for up to an hour, so a checkout or a plan change shows here late: read the current plan
        from ``products.list()`` and gate features with ``entitlements.check()``, which are fresh.

        Raises:
            NotFoundError: BillingOS has no customer for this user yet (no checkout completed).

        Example::

            state = await customer.state()
            print(state.customer.email, [f.feature_key for f in state.granted_features])
        """
        return await self._call("GET", "/v1/customer/me", decode=_decode_state, options=options)

    # -- tokens and the one call path ---------------------------------------------------------

    async def _token(self) -> SessionToken:
        given = self._args.session_token
        if given is not None:
            return given
        token = await self._cache.get(self._args.key, self._mint)
        self._used = token
        return token

    async def _mint(self) -> SessionToken:
        args = self._args
        return await self._session_tokens.create(
            args.external_user_id,
            external_organization_id=args.external_organization_id,
            expires_in=args.expires_in,
            allowed_operations=args.allowed_operations,
        )

    async def _call(
        self,
        method: Method,
        url_path: str,
        *,
        decode: Callable[[Any], T],
        options: RequestOptions,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
        retry_safe: bool | None = None,
        token: bool = True,
    ) -> T:
        """One call of this customer: with its session token (``token=False``: with no credential)."""
        if self._closed:
            raise BillingOSError(
                "This customer session is closed; call billing.as_customer(...) again.", code="session_closed"
            )
        if not token:
            return await self._requester.request(
                method, url_path, decode=decode, options=options, params=params, body=body,
                retry_safe=retry_safe, authorization="",
            )  # fmt: skip
        check_options(options)  # a bad option is refused before a token is minted for the call
        current = await self._token()
        try:
            return await self._requester.request(
                method, url_path, decode=decode, options=options, params=params, body=body,
                retry_safe=retry_safe, authorization=current.session_token,
            )  # fmt: skip
        except AuthenticationError as exc:
            if exc.message not in RENEWABLE:
                raise
            if self._args.session_token is not None:
                _explain_given_token(exc)
                raise
            # Refused before the route ran (the guard comes first), so repeating the call is safe.
            self._cache.drop(self._args.key, current)
        current = await self._token()  # a new mint (shared with concurrent calls refused alike)
        return await self._requester.request(
            method, url_path, decode=decode, options=options, params=params, body=body,
            retry_safe=retry_safe, authorization=current.session_token,
        )  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the handle; with ``revoke_on_close=True``, revoke the token it minted. Idempotent.

        A token given as ``session_token=`` is never revoked. A failed revoke is logged (without the
        token) rather than raised: the token then expires on its own.
        """
        if self._closed:
            return
        self._closed = True
        used, self._used = self._used, None
        if not self._args.revoke_on_close or used is None:
            return
        self._cache.drop(self._args.key, used)
        if self._requester.transport.is_closed:
            logger.warning(
                "customer session of %s: not revoking its token, the client is already closed "
                "(the token expires at %s)",
                self._args.external_user_id,
                used.expires_at.isoformat(),
            )
            return
        try:
            await self._session_tokens.revoke(used.token_id)
        except NotFoundError:
            pass  # revoked already
        except BillingOSError as exc:
            logger.warning(
                "customer session of %s: revoking token %s failed (%s); it expires at %s",
                self._args.external_user_id,
                used.token_id,
                exc,
                used.expires_at.isoformat(),
            )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        args = self._args
        source = "given" if args.session_token is not None else "cached"
        closed = " closed" if self._closed else ""
        return (
            f"<AsyncCustomerSession external_user_id={args.external_user_id!r} "
            f"external_organization_id={args.external_organization_id!r} token={source}{closed}>"
        )


def _explain_given_token(exc: AuthenticationError) -> None:
    """A refused ``session_token=``: say that the SDK does not mint it anew (status, code, id kept)."""
    what = "expired" if exc.message == "Token expired" else "was revoked"
    exc.message = (
        f"The session token given to as_customer(session_token=...) {what} ({exc.message}). The SDK "
        "does not re-mint tokens it was given: pass a new one, or leave session_token unset and let "
        "as_customer mint and cache tokens itself."
    )
    exc.args = (exc.message,)


# -- the sub-resources ----------------------------------------------------------------------------


class _Part:
    __slots__ = ("_session",)

    def __init__(self, session: AsyncCustomerSession) -> None:
        self._session = session


def _plan_ids(value: object) -> str | None:
    ids = check.string_list("plan_ids", value)
    if ids is None:
        return None
    for number, item in enumerate(ids):
        if "," in item:
            raise ValidationError(f"plan_ids[{number}] must not contain a comma.", code="invalid_argument")
    return ",".join(item.strip() for item in ids)


def _repair_price_id(catalog: Catalog) -> Catalog:
    """``currentSubscription.priceId`` holds the product id (CONTRACT-CUSTOMER §5.6): find the real one.

    The product's only price when it has exactly one in this catalog; otherwise ``None``.
    """
    current = catalog.current_subscription
    if current is None or current.price_id is None:
        return catalog
    price_ids = {price.id for product in catalog.products for price in product.prices}
    if current.price_id in price_ids and current.price_id != current.product_id:
        return catalog  # a server that sends the right id
    product = next((p for p in catalog.products if p.id == current.product_id), None)
    price_id = product.prices[0].id if product is not None and len(product.prices) == 1 else None
    return attrs.evolve(catalog, current_subscription=attrs.evolve(current, price_id=price_id))


class AsyncCustomerProducts(_Part):
    """``customer.products``: the pricing page of this customer."""

    __slots__ = ()

    @traced("customer.products.list")
    async def list(self, plan_ids: Sequence[str] | None = None, **options: Unpack[RequestOptions]) -> Catalog:
        """The products on the pricing page, with prices, features and the customer's current plan.

        ``plan_ids`` keeps only those products (ids as BillingOS gives them). ``current_subscription``
        is ``None`` for a user who has no customer yet. Its ``price_id`` is repaired by the SDK (the
        server sends the product id there): see :class:`CurrentSubscription`.

        Example::

            catalog = await customer.products.list()
            pro = next(p for p in catalog.products if p.name == "Pro")
        """
        ids = _plan_ids(plan_ids)
        params = None if ids is None else {"planIds": ids}

        def decode(data: Any) -> Catalog:
            return _repair_price_id(_decode_catalog(data))

        return await self._session._call("GET", "/v1/products", params=params, decode=decode, options=options)


def _checkout(data: Any) -> CheckoutSession:
    session = _decode_checkout(data)
    sub = session.subscription
    if sub is not None and sub.price_id == "":  # a free subscription whose price is null
        return attrs.evolve(session, subscription=attrs.evolve(sub, price_id=None))
    return session


class AsyncCustomerCheckout(_Part):
    """``customer.checkout``: sell a plan to this customer."""

    __slots__ = ()

    @traced("customer.checkout.create")
    async def create(
        self,
        price_id: str,
        *,
        customer_email: str | None = None,
        customer_name: str | None = None,
        existing_subscription_id: str | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> CheckoutSession:
        """Start a checkout of ``price_id``; this creates the BillingOS customer if there is none.

        A paid price returns a ``client_secret`` your front end confirms with Stripe.js; the
        subscription appears once the payment succeeded (``status(session.id).is_complete``). A free
        price returns ``client_secret == ""``: complete it with :meth:`confirm_free`.

        On the public backend a checkout needs the organization's connected Stripe account **even for a
        free price** (else 400 "Organization does not have a Stripe Connect account"), ``metadata``
        replaces the customer's stored metadata, and an email that belongs to another customer moves
        that customer's record to this user. Not retried once it may have reached the server.

        Raises:
            NotFoundError: unknown or archived price or product.
            ValidationError: no connected Stripe account, or a field the server refused.

        Example::

            session = await customer.checkout.create(price.id, customer_email="ada@example.com")
            return {"checkoutId": session.id, "clientSecret": session.client_secret}
        """
        body = {
            "priceId": check.text("price_id", price_id),
            "customerEmail": None
            if customer_email is None
            else check.email("customer_email", customer_email),
            "customerName": check.optional_text("customer_name", customer_name, max_length=256),
            "existingSubscriptionId": check.optional_text(
                "existing_subscription_id", existing_subscription_id
            ),
            "successUrl": check.optional_text("success_url", success_url),
            "cancelUrl": check.optional_text("cancel_url", cancel_url),
            "metadata": check.metadata("metadata", metadata),
        }
        return await self._session._call(
            "POST", "/v1/checkout/create", body=body, decode=_checkout, options=options
        )

    @traced("customer.checkout.status")
    async def status(self, session_id: str, **options: Unpack[RequestOptions]) -> CheckoutSession:
        """The checkout again, with ``subscription`` once there is one (``is_complete``).

        The server sends no status: a pending, expired or failed checkout all read as not complete.
        Sent without a token (the checkout id is the credential on the public backend).

        Raises:
            NotFoundError: no such checkout.
        """
        url = route("/v1/checkout/{session_id}/status", session_id=check.text("session_id", session_id))
        return await self._session._call("GET", url, decode=_checkout, options=options, token=False)

    @traced("customer.checkout.confirm_free")
    async def confirm_free(self, session_id: str, **options: Unpack[RequestOptions]) -> Subscription:
        """Complete a checkout of a free price: the customer is subscribed now, no payment.

        This is how your server puts a new user on a free plan. Confirming the same checkout again
        returns the same subscription (so a lost response is retried safely). An already active
        subscription to the product is returned as it is; a canceled one is reactivated. Other
        subscriptions of the customer are left alone. Sent without a token.

        Raises:
            ValidationError: the checkout is not of a free price.
            NotFoundError: no such checkout.

        Example::

            session = await customer.checkout.create(free_price.id)
            subscription = await customer.checkout.confirm_free(session.id)
        """
        url = route("/v1/checkout/{session_id}/confirm-free", session_id=check.text("session_id", session_id))
        return await self._session._call(
            "POST", url, decode=_decode_subscription, options=options, retry_safe=True, token=False
        )


class AsyncCustomerPortal(_Part):
    """``customer.portal``: the billing portal of this customer."""

    __slots__ = ()

    @traced("customer.portal.create")
    async def create(
        self, metadata: Mapping[str, Any] | None = None, **options: Unpack[RequestOptions]
    ) -> PortalSession:
        """A portal session for this customer; hand ``session.id`` to your front end.

        The id is the portal's only credential, valid 24 hours. Not retried once it may have reached
        the server.

        Raises:
            NotFoundError: the customer does not exist yet ("Customer must complete checkout before
                accessing portal"): run a checkout first.

        Example::

            portal = await customer.portal.create()
            return {"portalSessionId": portal.id, "expiresAt": portal.expires_at}
        """
        body = {"metadata": check.metadata("metadata", metadata)}
        return await self._session._call(
            "POST", "/v1/portal/create", body=body, decode=_decode_portal, options=options
        )


class AsyncCustomerEntitlements(_Part):
    """``customer.entitlements``: what this customer may use."""

    __slots__ = ()

    @traced("customer.entitlements.check")
    async def check(self, feature_key: str, **options: Unpack[RequestOptions]) -> Entitlement:
        """Whether this customer may use ``feature_key`` now.

        As with the secret-key check, a user BillingOS has no customer for has no access:
        ``has_access=False, reason="customer_not_found"`` rather than an exception. On the public
        backend only an ``active`` subscription gives access (``trialing`` answers
        ``subscription_not_active``) and a quota without a limit reads as exceeded.

        Example::

            if not (await customer.entitlements.check("exports")).has_access:
                raise HTTPException(403)
        """
        feature_key = check.text("feature_key", feature_key)
        try:
            return await self._session._call(
                "GET", "/v1/features/check", params={"feature_key": feature_key},
                decode=_decode_entitlement, options=options,
            )  # fmt: skip
        except NotFoundError as exc:
            if exc.message != "Customer not found":
                raise
            return Entitlement(
                feature_key=feature_key, has_access=False, reason=EntitlementReason.CUSTOMER_NOT_FOUND
            )

    @traced("customer.entitlements.list")
    async def list(self, **options: Unpack[RequestOptions]) -> list[CustomerEntitlement]:
        """Every feature granted to this customer, whatever the status of the granting subscription.

        Filter on ``subscription_status`` for what gives access now.

        Raises:
            NotFoundError: BillingOS has no customer for this user yet.
        """

        def decode(data: Any) -> list[CustomerEntitlement]:
            items = data.get("entitlements") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise ValueError("expected an entitlements list")
            return [_decode_entitlement_item(item) for item in items]

        return await self._session._call("GET", "/v1/features/entitlements", decode=decode, options=options)


class AsyncCustomerUsage(_Part):
    """``customer.usage``: metered usage of this customer."""

    __slots__ = ()

    @traced("customer.usage.track")
    async def track(
        self,
        feature_key: str,
        quantity: float = 1,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[RequestOptions],
    ) -> UsageRecord:
        """Record ``quantity`` units of ``feature_key`` used by this customer.

        Every call carries an ``idempotency_key`` (yours, or a UUID4 made once per call), the same on
        every retry, so a retried track counts once; it is returned in ``record.idempotency_key``.
        The answer has no usage snapshot (``record.usage`` is ``None``).

        Raises:
            QuotaExceededError: the track would pass the plan's limit.
            NotFoundError: no customer, or no grant of this feature.
        """
        key = (
            str(uuid.uuid4())
            if idempotency_key is None
            else check.text("idempotency_key", idempotency_key, max_length=255)
        )
        body = {
            "feature_key": check.text("feature_key", feature_key),
            "quantity": check.positive_number("quantity", quantity),
            "idempotency_key": key,
        }

        def decode(data: Any) -> UsageRecord:
            return attrs.evolve(_decode_record(data), idempotency_key=key)

        return await self._session._call(
            "POST", "/v1/features/track-usage", body=body, decode=decode, options=options, retry_safe=True
        )

    @traced("customer.usage.metrics")
    async def metrics(
        self, feature_key: str | None = None, **options: Unpack[RequestOptions]
    ) -> UsageMetrics:
        """This customer's usage in the current period, for every metered feature or ``feature_key``.

        The public backend drops an unknown ``feature_key`` filter and answers every metric; the SDK
        keeps only ``feature_key``'s, so the answer is empty rather than someone else's feature.

        Raises:
            NotFoundError: BillingOS has no customer for this user yet.
        """
        params = None if feature_key is None else {"feature_key": check.text("feature_key", feature_key)}

        def decode(data: Any) -> UsageMetrics:
            metrics = _decode_metrics(data)
            if feature_key is not None:
                kept = tuple(m for m in metrics.metrics if m.feature_key == feature_key)
                metrics = attrs.evolve(metrics, metrics=kept)
            return metrics

        return await self._session._call(
            "GET", "/v1/features/usage-metrics", params=params, decode=decode, options=options
        )
