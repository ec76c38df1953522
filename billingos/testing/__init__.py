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

from ._app import ROUTES, RateLimits, ReceivedRequest
from ._fake import FakeBillingOS, serve_asgi
from ._faults import Fault, FaultRule
from ._state import CustomerRecord, Feature, Plan, SessionTokenRecord, SubscriptionRecord

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
