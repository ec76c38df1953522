"""A FastAPI app on BillingOS: one client per app, a gated and metered route, the session-token route.

Run it against the sandbox (see examples/README.md)::

    pip install 'billingos[fastapi,testing]'          # FastAPI, and uvicorn to serve it
    python -m billingos.testing --port 8787           # another terminal; it prints the two variables:
    export BILLINGOS_API_URL=http://127.0.0.1:8787 BILLINGOS_SECRET_KEY=sk_test_...
    python examples/fastapi_app.py                    # http://127.0.0.1:8000

    curl -H 'X-User-Id: user_1' 'http://127.0.0.1:8000/search?q=invoices'   # 200, one api_call metered
    curl -H 'X-User-Id: user_2' 'http://127.0.0.1:8000/sso'                  # 403: Starter has no SSO
    curl -X POST -H 'X-User-Id: user_1' http://127.0.0.1:8000/billingos/session
    curl -H 'X-User-Id: user_1' http://127.0.0.1:8000/usage

The "authentication" here is an ``X-User-Id`` header, to keep the example short: use your own.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at runtime, and
# `Depends(require_api_calls)` names a local variable of create_app() that a string annotation cannot see.
import os
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException

from billingos import AsyncBillingOS, Entitlement, EntitlementCache
from billingos.integrations.fastapi import (
    BillingOSDep,
    BillingOSMiddleware,
    PendingUsage,
    RequireEntitlement,
    TrackUsage,
    billingos_lifespan,
    session_token_route,
)


def current_user(x_user_id: Annotated[str | None, Header()] = None) -> str | None:
    """Your authentication goes here: the signed-in user's id (the customer's external id), or None."""
    return x_user_id


def make_billing() -> AsyncBillingOS:
    """The app's client, built at startup: key and URL from BILLINGOS_SECRET_KEY / BILLINGOS_API_URL."""
    return AsyncBillingOS(entitlement_cache=EntitlementCache(ttl=30))


def create_app(billing: Callable[[], AsyncBillingOS] = make_billing) -> FastAPI:
    """The app. ``billing`` is a factory, so the app can start more than once (tests, reloads)."""
    # The lifespan opens the client and a usage recorder, and closes both (draining the recorder).
    app = FastAPI(title="billingos example", lifespan=billingos_lifespan(billing))
    app.add_middleware(BillingOSMiddleware)  # lets TrackUsage record only after a 2xx response
    # GET/POST /billingos/session: a session token for the front-end SDK (401 when nobody is signed in).
    app.include_router(session_token_route(current_user, expires_in=900))

    require_api_calls = RequireEntitlement("api_calls", customer_id=current_user)
    track_api_calls = TrackUsage("api_calls", customer_id=current_user)

    @app.get("/search")
    async def search(
        q: str,
        entitlement: Annotated[Entitlement, Depends(require_api_calls)],
        usage: Annotated[PendingUsage, Depends(track_api_calls)],
        pages: int = 1,
    ) -> dict[str, object]:
        """403 without access; otherwise ``pages`` units of api_calls are metered once the 200 is sent."""
        usage.quantity = pages  # known only here: the handler sets it before returning
        return {"q": q, "results": [f"{q} #{n}" for n in range(1, pages + 1)], "left": entitlement.remaining}

    @app.get("/sso", dependencies=[Depends(RequireEntitlement("sso", customer_id=current_user))])
    async def sso() -> dict[str, str]:
        """A boolean feature: only plans with SSO get past the gate."""
        return {"sso": "configured"}

    @app.get("/usage")
    async def usage_report(
        billing: BillingOSDep, user: Annotated[str | None, Depends(current_user)]
    ) -> dict[str, dict[str, float | None]]:
        """The signed-in user's usage this period, straight from BillingOS."""
        if not user:
            raise HTTPException(401, "Not authenticated.")
        metrics = await billing.usage.metrics(user)
        return {m.feature_key: {"consumed": m.consumed, "limit": m.limit} for m in metrics.metrics}

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
