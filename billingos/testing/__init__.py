"""An embedded BillingOS server for tests and demos: stateful, faithful to the wire contract, one import away.

Needs the ``testing`` extra (``pip install 'billingos[testing]'``: starlette and uvicorn).

Example::

    from billingos.testing import FakeBillingOS, Fault

    fake = FakeBillingOS()
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Pro", features={"api_calls": 100})
    fake.add_customer("user_42")
    fake.subscribe("user_42", plan.price_id)
    fake.inject("POST /v1/usage/track", Fault.drop_response())   # counted, answer lost

    with fake.serve() as url:                      # or in-process: fake.client()
        ...

A pytest plugin (``billingos.testing.pytest_plugin``, registered automatically) provides the
fixtures ``billingos_fake``, ``billingos_url``, ``async_billingos_client`` and ``billingos_client``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import ROUTES, RateLimits, ReceivedRequest
    from ._fake import FakeBillingOS, serve_asgi
    from ._faults import Fault, FaultRule
    from ._state import CustomerRecord, Feature, Plan, SessionTokenRecord, SubscriptionRecord

# Loaded on first use: the pytest plugin in this package is registered for every install of
# billingos, so importing the package must not need starlette or uvicorn (the `testing` extra).
_EXPORTS = {
    "ROUTES": "._app",
    "RateLimits": "._app",
    "ReceivedRequest": "._app",
    "FakeBillingOS": "._fake",
    "serve_asgi": "._fake",
    "Fault": "._faults",
    "FaultRule": "._faults",
    "CustomerRecord": "._state",
    "Feature": "._state",
    "Plan": "._state",
    "SessionTokenRecord": "._state",
    "SubscriptionRecord": "._state",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ImportError as exc:
        raise ImportError(
            f"billingos.testing needs the 'testing' extra: pip install 'billingos[testing]' ({exc})"
        ) from exc
    globals()[name] = value
    return value


__all__ = [
    "ROUTES",
    "CustomerRecord",
    "FakeBillingOS",
    "Fault",
    "FaultRule",
    "Feature",
    "Plan",
    "RateLimits",
    "ReceivedRequest",
    "SessionTokenRecord",
    "SubscriptionRecord",
    "serve_asgi",
]
