"""``billingos products``, ``checkout``, ``portal`` and ``state``: acting as a customer (``as_customer``)
against the served sandbox, text and ``--json``, and their failures."""

from __future__ import annotations

import re

import pytest

from billingos.testing import FakeBillingOS

from .conftest import Sandbox, error_line

FREE = "price_cli_free"


@pytest.fixture(scope="module", autouse=True)
def free_plan(sandbox: Sandbox) -> None:
    sandbox.fake.add_product("Hobby", features={"api_calls": 5}, price_id=FREE, highlighted=True)


def test_products_lists_the_pricing_page(sandbox: Sandbox) -> None:
    text, marked, doc = sandbox.run_all(
        ["products"], ["products", "--user", "user_1"], ["products", "--plan", "prod_pro", "--json"]
    )

    assert text.status == 0, text.err
    lines = text.out.splitlines()
    assert lines[0].split() == ["product", "price", "id", "amount", "every", "features"]
    assert re.match(r"Pro\s+price_pro\s+29\.00 USD\s+month\s+api_calls, seats, sso$", lines[2])
    assert any(
        re.match(r"Hobby\s+price_cli_free\s+free\s+month\s+api_calls\s+highlighted$", x) for x in lines
    )
    assert lines[-1] == "current plan: none"
    assert marked.status == 0
    assert re.search(r"^Pro .* current$", marked.out, re.MULTILINE)
    assert re.search(r"^current plan: Pro \(price price_pro\), active, until \S+$", marked.out, re.MULTILINE)
    catalog = doc.json()
    assert [p["name"] for p in catalog["products"]] == ["Pro"]
    assert catalog["products"][0]["prices"][0]["amount"] == 2900
    assert catalog["current_subscription"] is None


def test_checkout_of_a_free_plan_with_confirm_free_subscribes(sandbox: Sandbox) -> None:
    done = sandbox.run("checkout", "cli_free", FREE, "--email", "Free@Example.com", "--confirm-free")
    state = sandbox.run("state", "cli_free")
    check = sandbox.run("check", "cli_free", "api_calls")

    assert done.status == 0, done.err
    assert re.search(r"^subscription\s+sub_\S+: active$", done.out, re.MULTILINE)
    assert re.search(r"^amount\s+free$", done.out, re.MULTILINE)
    assert state.status == 0
    assert re.search(r"^email\s+free@example.com$", state.out, re.MULTILINE)
    assert re.search(r"^api_calls\s+API calls\s+\S+$", state.out, re.MULTILINE)
    assert check.status == 0


def test_checkout_of_a_free_plan_without_confirm_says_how(sandbox: Sandbox) -> None:
    pending = sandbox.run("checkout", "cli_pending", FREE, "--email", "pending@example.com", "--json")

    assert pending.status == 0
    doc = pending.json()
    assert doc["checkout"]["client_secret"] == ""
    assert doc["subscription"] is None
    assert sandbox.run("check", "cli_pending", "api_calls").status == 1


def test_checkout_of_a_paid_plan_prints_the_client_secret(sandbox: Sandbox) -> None:
    paid = sandbox.run("checkout", "cli_paid", "price_pro", "--email", "paid@example.com", "--confirm-free")

    assert paid.status == 0, paid.err
    assert re.search(r"^client secret\s+pi_\w+_secret_\w+$", paid.out, re.MULTILINE)
    assert re.search(r"^amount\s+29\.00 USD$", paid.out, re.MULTILINE)
    assert paid.err == "note: --confirm-free ignored: the price is not free\n"
    session_id = re.search(r"^checkout id\s+(\S+)$", paid.out, re.MULTILINE)
    assert session_id is not None
    sandbox.fake.complete_checkout(session_id.group(1))
    assert sandbox.run("check", "cli_paid", "sso").status == 0


def test_portal_of_a_customer_and_of_nobody(sandbox: Sandbox) -> None:
    opened, doc, nobody = sandbox.run_all(
        ["portal", "user_1"], ["portal", "user_2", "--json"], ["portal", "cli_nobody"]
    )

    assert opened.status == 0, opened.err
    assert re.search(r"^portal session\s+[0-9a-f-]{36}$", opened.out, re.MULTILINE)
    assert re.search(r"^expires\s+\S+\+00:00$", opened.out, re.MULTILINE)
    assert doc.json()["id"]
    assert nobody.status == 3
    assert "NotFoundError: [404 RES_NOT_FOUND] Customer not found. Customer must complete checkout" in (
        error_line(nobody)
    )


def test_state_json_and_an_unknown_user(sandbox: Sandbox) -> None:
    doc, unknown = sandbox.run_all(["state", "user_1", "--json"], ["state", "cli_unknown"])

    assert doc.status == 0
    state = doc.json()
    assert state["customer"]["external_id"] == "user_1"
    assert state["active_subscriptions"] == []  # as on the public backend
    assert unknown.status == 3
    assert error_line(unknown).startswith("error: NotFoundError: [404 RES_NOT_FOUND] Customer not found")


def test_checkout_errors(sandbox: Sandbox) -> None:
    unknown, bad_email = sandbox.run_all(
        ["checkout", "cli_err", "price_nope"], ["checkout", "cli_err", FREE, "--email", "not-an-email"]
    )

    assert unknown.status == 3
    assert "Price not found or not available" in error_line(unknown)
    assert bad_email.status == 2  # refused by the SDK before sending
    assert "customer_email" in error_line(bad_email)


def test_checkout_without_a_stripe_account_exits_3() -> None:
    fake = FakeBillingOS(rate_limits=None, stripe_connected=False)
    fake.add_product("Free", features={}, price_id="price_f")
    with fake.serve() as url:
        result = Sandbox(fake, url).run("checkout", "u", "price_f")
    assert result.status == 3
    assert "Organization does not have a Stripe Connect account" in error_line(result)
