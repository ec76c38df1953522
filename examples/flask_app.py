"""A Flask app on BillingOS: the blocking client, an entitlement check, metered usage, session tokens.

Run it against the sandbox (see examples/README.md)::

    pip install 'billingos[testing]' flask
    python -m billingos.testing --port 8787           # another terminal; it prints the two variables:
    export BILLINGOS_API_URL=http://127.0.0.1:8787 BILLINGOS_SECRET_KEY=sk_test_...
    python examples/flask_app.py                      # http://127.0.0.1:5000

    curl -H 'X-User-Id: user_1' 'http://127.0.0.1:5000/search?q=invoices'   # 200, one api_call metered
    curl -H 'X-User-Id: user_2' 'http://127.0.0.1:5000/sso'                  # 403: Starter has no SSO
    curl -X POST -H 'X-User-Id: user_1' http://127.0.0.1:5000/billingos/session

One ``BillingOS`` per process serves every thread of the WSGI server; its usage recorder sends the
metered usage in the background, so no request waits for BillingOS to count it. The "authentication"
here is an ``X-User-Id`` header, to keep the example short: use your own.
"""

from __future__ import annotations

import atexit
import os
from contextlib import ExitStack
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from billingos import BillingOS, EntitlementCache, SyncUsageRecorder
from billingos.integrations.wsgi import session_token_response


class Billing:
    """What the app keeps in ``app.extensions["billingos"]``: the client, its recorder, and ``close()``."""

    def __init__(self, client: BillingOS) -> None:
        self._resources = ExitStack()
        self._resources.callback(client.close)  # closed last
        self.client = client
        # Opened for the process's lifetime: `with` is for scripts, an app closes it at exit.
        self.recorder: SyncUsageRecorder = self._resources.enter_context(client.usage_recorder())

    def close(self) -> None:
        """Send what the recorder still holds (up to its close_timeout), then close the client."""
        self._resources.close()


def current_user() -> str | None:
    """Your authentication goes here: the signed-in user's id (the customer's external id), or None."""
    return request.headers.get("X-User-Id") or None


def create_app(client: BillingOS | None = None) -> Flask:
    """The app; ``client`` defaults to a BillingOS from BILLINGOS_SECRET_KEY / BILLINGOS_API_URL."""
    app = Flask(__name__)
    billing = Billing(client if client is not None else BillingOS(entitlement_cache=EntitlementCache(ttl=30)))
    app.extensions["billingos"] = billing
    atexit.register(billing.close)  # idempotent: a test may close it first

    def refusal(user: str | None, feature_key: str) -> ResponseReturnValue | None:
        """None when ``user`` may use ``feature_key`` now; else the 401 or 403 to answer."""
        if user is None:
            return jsonify(error="unauthenticated"), 401
        entitlement = billing.client.check_entitlement(user, feature_key)  # from the cache when fresh
        if not entitlement.has_access:
            reason = None if entitlement.reason is None else str(entitlement.reason)
            return jsonify(error="entitlement_denied", feature_key=feature_key, reason=reason), 403
        return None

    @app.route("/billingos/session", methods=["GET", "POST"])
    def billingos_session() -> ResponseReturnValue:
        # 200 {"sessionToken", "expiresAt"}, 401 without a user, 502 when BillingOS fails.
        return session_token_response(billing.client, current_user(), expires_in=900)

    @app.get("/search")
    def search() -> ResponseReturnValue:
        user = current_user()
        answer = refusal(user, "api_calls")
        if answer is not None:
            return answer
        assert user is not None  # refusal() answered 401 otherwise
        q = request.args.get("q", "")
        pages = request.args.get("pages", 1, type=int)
        results: dict[str, Any] = {"q": q, "results": [f"{q} #{n}" for n in range(1, pages + 1)]}
        billing.recorder.record(user, "api_calls", pages)  # no network: sent in the background
        return jsonify(results)

    @app.get("/sso")
    def sso() -> ResponseReturnValue:
        return refusal(current_user(), "sso") or jsonify(sso="configured")

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
