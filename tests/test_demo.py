"""``python -m billingos demo``: the real command in a subprocess, text and ``--json``, and its failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from billingos import __main__ as cli
from billingos import _demo

STEPS = [
    "server",
    "create_customer",
    "session_token",
    "check_entitlements",
    "track_usage",
    "quota",
    "metrics",
    "list_customers",
    "cancel_reactivate",
    "sell_plan",
    "free_plan",
    "revoke_token",
    "retry",
    "blocking_client",
]


Run = tuple[subprocess.CompletedProcess[str], float]


def run_demo(*args: str) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "billingos", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def text_run() -> Run:
    """One run of the text demo, shared by the tests that read it."""
    return run_demo()


def test_demo_walks_the_integration_and_exits_0(text_run: Run) -> None:
    proc, _seconds = text_run

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    for n in range(1, len(STEPS) + 1):
        assert f"\n{n:>2}. " in out
    assert "FakeBillingOS(rate_limits=None).serve() -> http://127.0.0.1:" in out
    assert "token id  tok_" in out
    assert "api_calls  has_access=True, 5 of 5 left" in out
    assert "the server counted 5" in out
    assert "has_access=False, reason=quota_exceeded" in out
    assert "usage.track        -> QuotaExceededError (400 quota_exceeded)" in out
    assert "ada@example.com" in out
    assert "grace@example.com" in out
    assert "cancel_at_period_end=True" in out
    assert "cancel_at_period_end=False" in out
    assert "the server now refuses the token (Token not found or revoked)" in out
    assert "checkout.status    -> subscription active" in out
    assert "entitlements.check -> sso has_access=True" in out
    assert "1 session token minted for all of user_43's calls" in out
    assert "checkout.confirm_free -> sub_" in out
    assert "entitlements.check    -> api_calls has_access=True, limit 2" in out
    assert "the server saw 2 requests (503 then 200)" in out
    assert out.rstrip().splitlines()[-1].startswith(f"Done: {len(STEPS)} steps in ")
    assert max(len(line) for line in out.splitlines()) <= 100


def test_demo_prints_the_usage_metrics_as_an_aligned_table(
    text_run: Run,
) -> None:
    out = text_run[0].stdout
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("feature"))
    table = lines[header : header + 2]

    assert table[0].split() == ["feature", "used", "limit", "left", "used", "%", "resets", "in"]
    assert table[1].split() == ["api_calls", "5", "5", "0", "100%", "30", "days"]
    assert len(table[0]) == len(table[1])  # right-aligned columns end together


def test_demo_json_is_one_document_of_steps() -> None:
    proc, _ = run_demo("--json")

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # nothing else on stdout
    assert doc["ok"] is True
    assert doc["error"] is None
    assert [s["name"] for s in doc["steps"]] == STEPS
    assert [s["step"] for s in doc["steps"]] == list(range(1, len(STEPS) + 1))
    steps: dict[str, Any] = {s["name"]: s["result"] for s in doc["steps"]}

    assert steps["server"]["url"].startswith("http://127.0.0.1:")
    assert steps["session_token"]["token_id"].startswith("tok_")
    assert steps["session_token"]["expires_at"].endswith("+00:00")
    assert steps["check_entitlements"]["sso"]["has_access"] is True
    assert steps["check_entitlements"]["api_calls"] == {"has_access": True, "limit": 5.0, "remaining": 5.0}
    assert steps["track_usage"] == {"calls": 5, "remaining": 0.0, "server_count": 5.0}
    assert steps["quota"] == {
        "has_access": False,
        "reason": "quota_exceeded",
        "track_error": "QuotaExceededError",
        "status_code": 400,
    }
    assert steps["metrics"]["metrics"] == [
        {"feature_key": "api_calls", "consumed": 5.0, "limit": 5.0, "remaining": 0.0}
    ]
    assert {c["external_id"] for c in steps["list_customers"]["customers"]} == {"user_42", "user_7"}
    assert steps["cancel_reactivate"] == {
        "cancel": {"status": "active", "cancel_at_period_end": True},
        "reactivate": {"status": "active", "cancel_at_period_end": False},
    }
    sell = steps["sell_plan"]
    assert sell["products"] == ["Pro", "Free"]
    assert (sell["amount"], sell["subscription_status"], sell["has_access"]) == (2900, "active", True)
    assert sell["portal_id"]
    assert sell["tokens_minted"] == 1  # five calls with a token, one mint
    assert steps["free_plan"] == {
        "free": True,
        "subscription_status": "active",
        "has_access": True,
        "limit": 2.0,
    }
    assert steps["revoke_token"]["server_accepts"] is False
    retry = steps["retry"]
    assert retry["has_access"] is True
    assert retry["server_requests"] == 2
    assert retry["statuses"] == [503, 200]
    assert retry["request_id"]
    assert steps["blocking_client"] == {"has_access": False, "reason": "quota_exceeded"}


def _seed_without_quota(fake: Any) -> Any:
    """A plan that forgets api_calls: the demo's first track gets 404 from the server."""
    fake.add_feature(_demo.FLAG, "boolean_flag")
    fake.add_feature(_demo.QUOTA, "usage_quota")
    return fake.add_product("Pro", features={_demo.FLAG: True})


@pytest.mark.parametrize("as_json", [False, True])
def test_demo_failure_exits_1_with_a_one_line_error(monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    monkeypatch.setattr(_demo, "seed", _seed_without_quota)
    out, err = io.StringIO(), io.StringIO()

    status = _demo.main(as_json=as_json, out=out, err=err)

    assert status == 1
    assert err.getvalue().count("\n") == 1
    assert err.getvalue().startswith(
        "billingos demo: error: step 5 (track_usage): [404 RES_NOT_FOUND] No active"
    )
    if as_json:
        doc = json.loads(out.getvalue())
        assert doc["ok"] is False
        assert doc["error"].startswith("step 5 (track_usage): [404 RES_NOT_FOUND]")
        assert [s["name"] for s in doc["steps"]] == STEPS[:5]
    else:
        assert "\n 4. Check entitlements" in out.getvalue()
        assert "Done" not in out.getvalue()


def test_demo_without_the_testing_extra_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; from billingos.__main__ import main; sys.exit(main())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "demo"], capture_output=True, text=True, timeout=60, check=False
    )

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "pip install 'billingos[testing]'" in proc.stderr


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0  # the click CLI returns its status (argparse used to exit)
    assert capsys.readouterr().out.startswith("billingos ")
