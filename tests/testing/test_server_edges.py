"""Edges of the embedded server (``billingos.testing``) the conformance suites do not reach: bodies that
are not objects, malformed billing addresses, unusual fault statuses, a plan change to an unknown price,
the idempotency table's bound, the in-process read timeout, and a server that fails to start.
"""

from __future__ import annotations

import time

import httpx2
import pytest

from billingos import NotFoundError, RequestTimeoutError, ServerError
from billingos.testing import FakeBillingOS, Fault, serve_asgi

from ._helpers import PRO_PRICE, QUOTA, USER, Clock, assert_error, client, field_errors, seed, track_body

TRACK = "POST /v1/usage/track"


# -- request bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[1, 2], "text", 3, True])
async def test_a_json_body_that_is_not_an_object_is_a_400(http: httpx2.AsyncClient, body: object) -> None:
    response = await http.post("/customers", json=body)
    error = assert_error(response, 400, "VAL_INVALID_INPUT")
    assert error["message"] == "The request body must be a JSON object"


async def test_a_json_null_body_is_an_empty_object(http: httpx2.AsyncClient) -> None:
    """``null`` is read as ``{}``: what is then missing is reported field by field."""
    response = await http.post("/customers", content=b"null", headers={"content-type": "application/json"})
    assert "email" in field_errors(response)


@pytest.mark.parametrize("address", [["1 Main St"], "1 Main St", 42])
async def test_a_billing_address_that_is_not_an_object_is_refused(
    http: httpx2.AsyncClient, address: object
) -> None:
    errors = field_errors(
        await http.post("/customers", json={"email": "a@example.com", "billing_address": address})
    )
    assert errors["billing_address"] == ["billing_address must be an object"]


async def test_an_unknown_billing_address_field_is_refused(http: httpx2.AsyncClient) -> None:
    body = {"email": "a@example.com", "billing_address": {"country": "FR", "planet": "Earth"}}
    errors = field_errors(await http.post("/customers", json=body))
    assert errors == {"billing_address.planet": ["property planet should not exist"]}


@pytest.mark.parametrize("value", [75001, ["Paris"], {"name": "Paris"}, True])
async def test_a_billing_address_field_that_is_not_a_string_is_refused(
    http: httpx2.AsyncClient, value: object
) -> None:
    body = {"email": "a@example.com", "billing_address": {"city": value, "country": "FR"}}
    errors = field_errors(await http.post("/customers", json=body))
    assert errors == {"billing_address.city": ["city must be a string"]}


async def test_null_billing_address_fields_are_accepted(
    http: httpx2.AsyncClient, fake: FakeBillingOS
) -> None:
    body = {"email": "a@example.com", "billing_address": {"city": None, "country": "FR"}}
    response = await http.post("/customers", json=body)
    assert response.status_code == 201
    assert response.json()["billing_address"]["country"] == "FR"


async def test_a_seeded_value_json_cannot_carry_fails_loudly_naming_its_type(fake: FakeBillingOS) -> None:
    """Metadata seeded from Python is sent as it is: a value JSON has no form for is an error in the test,
    not something silently turned into another value on the wire."""
    fake.add_customer("user_odd", metadata={"tags": {"a", "b"}})
    async with client(fake) as http:
        with pytest.raises(TypeError, match="not JSON serialisable: set"):
            await http.get("/customers/external/user_odd")
        assert (await http.get(f"/customers/external/{USER}")).status_code == 200  # the server goes on


# -- faults with statuses HTTP has no name for --------------------------------------------------------


async def test_an_error_fault_with_an_unnamed_status_uses_a_generic_reason(
    http: httpx2.AsyncClient, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.error(599))
    response = await http.post("/v1/usage/track", json=track_body())
    error = assert_error(response, 599, "SYS_INTERNAL_ERROR")
    assert error["message"] == "Error"
    assert fake.usage_of(USER, QUOTA) == 0  # answered without processing


async def test_an_html_fault_with_an_unnamed_status_uses_a_generic_reason(
    http: httpx2.AsyncClient, fake: FakeBillingOS
) -> None:
    fake.inject(TRACK, Fault.html(499))
    response = await http.post("/v1/usage/track", json=track_body())
    assert response.status_code == 499
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>499 Error</title>" in response.text


async def test_the_sdk_reads_an_unnamed_5xx_as_a_server_error(fake: FakeBillingOS) -> None:
    fake.inject(TRACK, Fault.error(599))
    async with fake.client(max_retries=0) as billing:
        with pytest.raises(ServerError) as caught:
            await billing.usage.track(USER, QUOTA)
    assert caught.value.status_code == 599
    assert caught.value.message == "Error"


# -- state rules ---------------------------------------------------------------------------------------


async def test_changing_a_subscription_to_an_unknown_price_is_a_404_and_changes_nothing(
    fake: FakeBillingOS, subscription: object
) -> None:
    sub_id = subscription.id  # type: ignore[attr-defined]
    async with fake.client() as billing:
        with pytest.raises(NotFoundError, match="Price not found"):
            await billing.subscriptions.update(sub_id, price_id="price_missing", metadata={"x": "1"})
        assert (await billing.subscriptions.get(sub_id)).price_id == PRO_PRICE
    assert fake.subscription(sub_id).metadata == {}


async def test_the_idempotency_table_forgets_expired_keys_once_it_holds_100_000(clock: Clock) -> None:
    """A long run keeps memory bounded: at 100 000 keys, the expired ones are dropped; live ones stay."""
    fake = FakeBillingOS(clock=clock, rate_limits=None)
    seed(fake)
    async with client(fake) as http:
        first = await http.post("/v1/usage/track", json=track_body(quantity=2, idempotency_key="live_key"))
        assert first.status_code == 201
        store = fake._store  # the only way to reach the bound without 100 000 requests
        store.idempotency.update({("cus_gone", f"old_{i}"): (clock.now - 1, {}) for i in range(100_000)})
        clock.advance(3600)  # "live_key" has 23 h left; every "old_" key expired before now

        second = await http.post("/v1/usage/track", json=track_body(quantity=3, idempotency_key="new_key"))
        assert second.status_code == 201
        assert len(store.idempotency) == 2
        assert {key for _, key in store.idempotency} == {"live_key", "new_key"}

        replay = await http.post("/v1/usage/track", json=track_body(quantity=2, idempotency_key="live_key"))
        assert replay.status_code == 201
        assert replay.json()["usage"] == first.json()["usage"]  # still deduplicated after the pruning
    assert fake.usage_of(USER, QUOTA) == 5


# -- in-process transport -------------------------------------------------------------------------------


async def test_a_delay_longer_than_the_read_timeout_times_out_in_process_and_is_not_processed(
    fake: FakeBillingOS,
) -> None:
    fake.inject(TRACK, Fault.delay(5))
    async with fake.client(max_retries=0) as billing:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as caught:
            await billing.usage.track(USER, QUOTA, timeout=0.05)
        assert time.monotonic() - started < 2
    assert caught.value.code == "timeout"
    assert fake.usage_of(USER, QUOTA) == 0  # unlike a real server, the timed-out request never ran


# -- serving ---------------------------------------------------------------------------------------------


# uvicorn ends its thread with SystemExit when the app cannot be loaded: that thread's death is the point.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_serve_asgi_raises_when_the_server_cannot_start_instead_of_waiting_forever() -> None:
    started = time.monotonic()
    ran = False
    with pytest.raises(RuntimeError, match="did not start"), serve_asgi("no_such_module_for_billingos:app"):
        ran = True
    assert not ran
    assert time.monotonic() - started < 5
