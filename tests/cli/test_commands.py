"""Each command's text and ``--json`` output, with values that come from the server."""

from __future__ import annotations

import re

from .conftest import TINY, Sandbox, error_line


def test_check_a_granted_feature_exits_0(sandbox: Sandbox) -> None:
    text, doc = sandbox.run_all(["check", "user_1", "api_calls"], ["check", "user_1", "api_calls", "--json"])

    assert text.status == 0, text.err
    assert text.out.startswith("granted: user_1 has api_calls (usage_quota: 0 of 10000 used, 10000 left, ")
    assert text.err == ""
    assert doc.status == 0
    ent = doc.json()
    assert ent["has_access"] is True
    assert ent["reason"] is None
    assert (ent["limit"], ent["usage"], ent["remaining"]) == (10000, 0, 10000)
    assert ent["feature_type"] == "usage_quota"
    assert ent["resets_at"].endswith("+00:00")


def test_check_a_denied_feature_exits_1(sandbox: Sandbox) -> None:
    text, doc = sandbox.run_all(
        ["check", "user_2", "sso"], ["check", "nobody", "sso", "--json"]
    )  # Starter: no SSO

    assert text.status == 1
    assert text.out == "denied: user_2 does not have sso (no_active_subscription)\n"
    assert text.err == ""
    assert doc.status == 1
    assert doc.json()["has_access"] is False
    assert doc.json()["reason"] == "customer_not_found"  # not an error: a user who never subscribed


def test_track_counts_and_metrics_show_it(sandbox: Sandbox) -> None:
    sandbox.fake.add_customer("cli_track")
    sandbox.fake.subscribe("cli_track", "price_pro")

    first = sandbox.run("track", "cli_track", "api_calls", "7", "--idempotency-key", "k1", "--json")
    replay = sandbox.run("track", "cli_track", "api_calls", "7", "--idempotency-key", "k1", "--json")
    text = sandbox.run("track", "cli_track", "api_calls", "2.5")
    metrics, table = sandbox.run_all(
        ["metrics", "cli_track", "--json"], ["metrics", "cli_track", "--feature", "api_calls"]
    )

    assert first.status == 0, first.err
    record = first.json()
    assert (record["feature_key"], record["quantity"], record["idempotency_key"]) == ("api_calls", 7, "k1")
    assert record["usage"]["consumed_units"] == 7
    assert record["usage"]["remaining_units"] == 9993
    assert replay.json()["usage"]["consumed_units"] == 7  # the same key is counted once
    assert text.status == 0
    assert re.fullmatch(
        r"tracked 2\.5 api_calls for cli_track: 9\.5 of 10000 used, 9990\.5 left, resets \S+ "
        r"\(idempotency key [0-9a-f-]{36}\)\n",
        text.out,
    )
    assert sandbox.fake.usage_of("cli_track", "api_calls") == 9.5
    assert metrics.status == 0
    assert metrics.json()["customer_id"] == "cli_track"
    [metric] = metrics.json()["metrics"]
    assert (metric["feature_key"], metric["consumed"], metric["limit"]) == ("api_calls", 9.5, 10000)
    assert metric["product_name"] == "Pro"
    header, row = table.out.splitlines()
    assert header.split() == ["feature", "used", "limit", "left", "used", "%", "resets", "in", "plan"]
    assert row.split() == ["api_calls", "9.5", "10000", "9990.5", "0%", "30", "days", "Pro"]


def test_track_over_the_quota_exits_1(sandbox: Sandbox) -> None:
    sandbox.fake.add_customer("cli_quota")
    sandbox.fake.subscribe("cli_quota", TINY)

    result = sandbox.run("track", "cli_quota", "api_calls", "6")

    assert result.status == 1
    line = error_line(result)
    assert line.startswith(
        "error: QuotaExceededError: [400 VAL_INVALID_INPUT] quota_exceeded (request_id=req_"
    )
    assert sandbox.fake.usage_of("cli_quota", "api_calls") == 0


def test_metrics_without_a_quota_says_so(sandbox: Sandbox) -> None:
    sandbox.fake.add_customer("cli_free")

    result = sandbox.run("metrics", "cli_free")

    assert result.status == 0
    assert result.out.startswith("no metered features for cli_free")


def test_token_create_then_decode(sandbox: Sandbox) -> None:
    created = sandbox.run(
        "token", "create", "user_1", "--org", "acme", "--expires-in", "900", "--operation", "read", "--json"
    )
    assert created.status == 0, created.err
    token = created.json()
    claims = sandbox.fake.verify_session_token(token["session_token"])  # the server minted it

    decoded, human = sandbox.run_all(
        ["token", "decode", token["session_token"], "--json"], ["token", "create", "user_2"]
    )
    text = sandbox.run("token", "decode", "-", connect=False, stdin=token["session_token"] + "\n")

    assert token["token_id"] == claims["jti"]
    assert decoded.status == 0, decoded.err
    doc = decoded.json()
    assert doc["token_id"] == token["token_id"]
    assert doc["external_user_id"] == "user_1"
    assert doc["external_organization_id"] == "acme"
    assert doc["allowed_operations"] == ["read"]
    assert doc["merchant_id"] == sandbox.fake.merchant_id
    assert doc["expires_at"] == token["expires_at"]
    assert claims["exp"] - claims["iat"] == 900
    assert doc["expired"] is False
    assert text.status == 0
    lines = dict(line.split(maxsplit=1) for line in text.out.replace("token id", "token_id").splitlines())
    assert lines["token_id"] == token["token_id"]
    assert lines["user"] == "user_1"
    assert lines["organization"] == "acme"
    assert lines["expires"].endswith("(in 15 min)")
    assert lines["signature"] == "not verified (only BillingOS can)"
    assert human.status == 0
    assert re.match(
        r"session token  bos_session_\S+\.[0-9a-f]{64}\ntoken id       tok_[0-9a-f]{32}\n", human.out
    )
    assert "user           user_2\n" in human.out


def test_token_decode_of_a_malformed_token_is_a_usage_error(sandbox: Sandbox) -> None:
    result = sandbox.run("token", "decode", "bos_session_nope", connect=False)

    assert result.status == 2
    assert error_line(result) == (
        "error: ValidationError: [invalid_argument] Malformed session token: "
        "expected <payload>.<signature> after the prefix."
    )


def test_customers_list(sandbox: Sandbox) -> None:
    text, one, limited = sandbox.run_all(
        ["customers", "list"],
        ["customers", "list", "--email", "ada@example.com", "--json"],
        ["customers", "list", "--limit", "1", "--json"],
    )

    assert text.status == 0, text.err
    assert text.out.splitlines()[0].split() == ["id", "external_id", "email", "name", "created"]
    assert re.search(r"\n\S+ +user_1 +ada@example\.com +Ada Lovelace +\d{4}-\d\d-\d\d\n", text.out)
    assert "grace@example.com" in text.out
    assert re.search(r"\n(\d+) of \1 customers\n$", text.out)
    assert one.status == 0
    [ada] = one.json()["customers"]
    assert (ada["external_id"], ada["name"]) == ("user_1", "Ada Lovelace")
    assert ada["id"] == sandbox.fake.customer("user_1").id  # type: ignore[union-attr]
    assert one.json()["total"] == 1
    assert len(limited.json()["customers"]) == 1
    assert limited.json()["total"] >= 2
