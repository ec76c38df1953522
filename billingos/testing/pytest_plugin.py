"""pytest fixtures for testing your own billing code against the embedded BillingOS server.

pytest loads this plugin by itself wherever ``billingos`` is installed (entry point ``pytest11``,
name ``billingos``); the fixtures need the ``testing`` extra (``pip install 'billingos[testing]'``).
Importing this module imports nothing but pytest: :mod:`billingos.testing` is imported when a
fixture runs, so projects without the extra are not affected. Switch it off with ``-p no:billingos``.

Fixtures (all function-scoped, so every test gets a fresh, empty server):

``billingos_fake``
    a :class:`~billingos.testing.FakeBillingOS` with rate limits off; seed it in the test.
``billingos_url``
    ``billingos_fake`` served on a loopback port (``http://127.0.0.1:<port>``) for the test.
``async_billingos_client``
    an :class:`~billingos.AsyncBillingOS` bound to ``billingos_fake`` in-process (no sockets),
    closed after the test. An async fixture: it needs pytest-asyncio (``asyncio_mode = "auto"``)
    or anyio's pytest plugin (tests marked ``@pytest.mark.anyio``).
``billingos_client``
    a blocking :class:`~billingos.BillingOS` bound to ``billingos_fake`` in-process, closed after.

Example::

    async def test_export_is_metered(billingos_fake, async_billingos_client):
        billingos_fake.add_feature("exports", "usage_quota")
        plan = billingos_fake.add_product("Pro", features={"exports": 10})
        billingos_fake.add_customer("user_42")
        billingos_fake.subscribe("user_42", plan.price_id)

        await my_app.export("user_42", billing=async_billingos_client)

        assert billingos_fake.usage_of("user_42", "exports") == 1
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from billingos import AsyncBillingOS, BillingOS
    from billingos.testing import FakeBillingOS

__all__ = ["async_billingos_client", "billingos_client", "billingos_fake", "billingos_url"]


@pytest.fixture
def billingos_fake() -> FakeBillingOS:
    """A fresh, empty :class:`~billingos.testing.FakeBillingOS` (rate limits off) for this test.

    Seed it (``add_feature``, ``add_product``, ``add_customer``, ``subscribe``), arm faults
    (``inject``) and read it back (``usage_of``, ``requests``). Its key is ``secret_key``.
    """
    from billingos.testing import FakeBillingOS

    return FakeBillingOS(rate_limits=None)


@pytest.fixture
def billingos_url(billingos_fake: FakeBillingOS) -> Iterator[str]:
    """``billingos_fake`` served on a loopback port for this test: its base URL, ``http://127.0.0.1:…``.

    Use it with ``billingos_fake.secret_key`` wherever a real URL is needed: ``api_url=``, the
    ``BILLINGOS_API_URL`` environment variable, a subprocess, another language's SDK.
    """
    with billingos_fake.serve() as url:
        yield url


@pytest.fixture
async def async_billingos_client(billingos_fake: FakeBillingOS) -> AsyncIterator[AsyncBillingOS]:
    """An :class:`~billingos.AsyncBillingOS` talking to ``billingos_fake`` in-process; closed after the test.

    Needs pytest-asyncio in auto mode, or anyio's plugin with the test marked ``@pytest.mark.anyio``.
    For other settings (``max_retries``, ``retry_policy``, ``timeout``) build your own with
    ``billingos_fake.client(...)``.
    """
    async with billingos_fake.client() as client:
        yield client


@pytest.fixture
def billingos_client(billingos_fake: FakeBillingOS) -> Iterator[BillingOS]:
    """A blocking :class:`~billingos.BillingOS` talking to ``billingos_fake`` in-process; closed after."""
    with billingos_fake.sync_client() as client:
        yield client
