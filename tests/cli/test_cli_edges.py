"""The ``billingos`` command line, in-process (``billingos._cli.main``): the answers and failures the
subprocess suite does not produce. Responses come from respx (an unlimited quota, a track without a usage
snapshot, no customers, a transport that breaks), tokens from ``tests._factories.make_token``; the
sandbox (``mock``) and the import guards are exercised with stand-ins, never a real server.
"""

from __future__ import annotations

import importlib.abc
import json
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import respx

import billingos.testing.__main__ as sandbox_main
from billingos import Entitlement, EntitlementReason, UsageRecord
from billingos._cli import INSTALL_HINT, main
from billingos._cli import _render as render
from billingos._cli._commands import EXIT_API, EXIT_FAILED, EXIT_OK

from .._factories import BASE_URL, SECRET, make_token, metrics_json, page_json, track_json

Run = tuple[int, str, str]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``run(*argv) -> (status, stdout, stderr)``, configured from the environment like a user's shell."""
    monkeypatch.setenv("BILLINGOS_SECRET_KEY", SECRET)
    monkeypatch.setenv("BILLINGOS_API_URL", BASE_URL)

    def run(*argv: str) -> Run:
        status = main(list(argv))
        out, err = capsys.readouterr()
        assert SECRET not in out + err
        assert "Traceback" not in err
        return status, out, err

    return run


# -- rendering of unusual answers -------------------------------------------------------------------


def test_track_of_a_feature_without_a_usage_snapshot_prints_the_count_and_key(
    run: Any, router: respx.MockRouter
) -> None:
    route = router.post("/v1/usage/track").respond(
        201, json=track_json(feature_key="exports", quantity=2, usage=None)
    )
    status, out, err = run("track", "user_1", "exports", "2", "--idempotency-key", "job-7")
    assert (status, err) == (EXIT_OK, "")
    assert out == "tracked 2 exports for user_1 (idempotency key job-7)\n"
    assert json.loads(route.calls.last.request.content)["idempotency_key"] == "job-7"


def test_a_usage_record_without_snapshot_or_key_is_one_short_line() -> None:
    assert render.usage_record("user_1", UsageRecord(feature_key="exports", quantity=1.5)) == (
        "tracked 1.5 exports for user_1"
    )


def test_metrics_of_an_unlimited_feature_show_dashes(run: Any, router: respx.MockRouter) -> None:
    unlimited = metrics_json()
    unlimited["metrics"][0].update(
        limit=None, remaining=None, percentage_used=None, resets_in_days=None, product_name="Pro"
    )
    router.get("/v1/usage/metrics").respond(200, json=unlimited)
    status, out, _ = run("metrics", "user_1")
    assert status == EXIT_OK
    header, row = out.splitlines()
    assert header.split() == ["feature", "used", "limit", "left", "used", "%", "resets", "in", "plan"]
    assert row.split() == ["api_calls", "250", "-", "-", "-", "-", "Pro"]


def test_customers_list_with_no_match_says_so(run: Any, router: respx.MockRouter) -> None:
    route = router.get("/customers").respond(200, json=page_json([], total=0, total_pages=0))
    status, out, _ = run("customers", "list", "--email", "nobody@example.com")
    assert (status, out) == (EXIT_OK, "no customers\n")
    assert route.calls.last.request.url.params["email"] == "nobody@example.com"

    status, out, _ = run("customers", "list", "--email", "nobody@example.com", "--json")
    assert (status, json.loads(out)) == (EXIT_OK, {"customers": [], "total": 0})


# -- token decode -----------------------------------------------------------------------------------


def _decode_lines(out: str) -> dict[str, str]:
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())  # type: ignore[misc]


def test_token_decode_shows_metadata_and_a_close_expiry_in_seconds(run: Any) -> None:
    token = make_token(exp=int(time.time()) + 90, metadata={"plan": "pro", "seat": 3})
    status, out, _ = run("token", "decode", token)
    assert status == EXIT_OK
    lines = _decode_lines(out)
    assert lines["metadata"] == '{"plan": "pro", "seat": 3}'
    assert re.fullmatch(r"\S+ \(in (8[5-9]|90) s\)", lines["expires"]), lines["expires"]
    assert "session token" not in lines  # decoding never echoes the token itself


def test_token_decode_of_an_expired_token_says_so(run: Any) -> None:
    now = int(time.time())
    token = make_token(iat=now - 7200, exp=now - 3600)
    status, out, _ = run("token", "decode", token)
    assert status == EXIT_OK  # decoding is not verifying: an expired token still decodes
    assert _decode_lines(out)["expires"].endswith("(expired)")
    status, out, _ = run("token", "decode", token, "--json")
    assert json.loads(out)["expired"] is True


# -- failures ---------------------------------------------------------------------------------------


def test_an_unexpected_exception_is_one_error_line_and_exit_3(run: Any, router: respx.MockRouter) -> None:
    router.get("/v1/usage/check").mock(side_effect=RuntimeError("transport bug"))
    status, out, err = run("check", "user_1", "api_calls")
    assert status == EXIT_API
    assert out == ""
    assert err == "error: unexpected RuntimeError: transport bug\n"


def test_to_json_writes_each_model_as_its_to_dict_and_refuses_what_json_cannot_carry() -> None:
    when = datetime(2026, 3, 1, 12, 0, 0, 500, tzinfo=UTC)
    ent = Entitlement("api_calls", False, reason=EntitlementReason.QUOTA_EXCEEDED, resets_at=when)
    doc = json.loads(render.to_json({"entitlement": ent, "when": when}))
    assert doc == {"entitlement": ent.to_dict(), "when": "2026-03-01T12:00:00.000500+00:00"}
    assert doc["entitlement"]["reason"] == "quota_exceeded"
    assert Entitlement.from_dict(doc["entitlement"]) == ent  # a script reads it back
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        render.to_json({"x": object()})


# -- mock -------------------------------------------------------------------------------------------


def test_mock_passes_its_options_to_the_sandbox(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Sequence[str]] = []

    def serve(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        return 0

    monkeypatch.setattr(sandbox_main, "main", serve)
    assert run("mock", "--port", "0", "--host", "::1", "--no-rate-limits")[0] == EXIT_OK
    assert run("mock", "--rate-limits")[0] == EXIT_OK
    assert run("mock")[0] == EXIT_OK
    assert calls == [["--port", "0", "--host", "::1", "--no-rate-limits"], ["--rate-limits"], []]


def test_mock_exits_with_the_sandboxs_status(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_main, "main", lambda argv: EXIT_FAILED)  # could not listen
    assert run("mock", "--port", "1")[0] == EXIT_FAILED


def test_mock_missing_another_module_is_not_blamed_on_the_testing_extra(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def serve(argv: Sequence[str]) -> int:
        raise ModuleNotFoundError("No module named 'h11'", name="h11")

    monkeypatch.setattr(sandbox_main, "main", serve)
    status, out, err = run("mock")
    assert status == EXIT_API  # a broken install: reported as unexpected, not as "pip install [testing]"
    assert out == ""
    assert err == "error: unexpected ModuleNotFoundError: No module named 'h11'\n"
    assert "billingos[testing]" not in err


# -- the import guards of main() --------------------------------------------------------------------


class _Refuse(importlib.abc.MetaPathFinder):
    """Makes importing ``name`` raise ``error``."""

    def __init__(self, name: str, error: BaseException) -> None:
        self.name = name
        self.error = error

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.name:
            raise self.error


def test_click_failing_on_a_missing_dependency_of_its_own_is_not_reported_as_missing_click(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "click")
    missing = ModuleNotFoundError("No module named 'colorama'", name="colorama")
    monkeypatch.setattr(sys, "meta_path", [_Refuse("click", missing), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError) as caught:
        main(["check", "user_1", "sso"])
    assert caught.value is missing
    assert INSTALL_HINT not in capsys.readouterr().err


def test_ctrl_c_while_the_commands_import_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "billingos._cli._commands")
    monkeypatch.setattr(
        sys, "meta_path", [_Refuse("billingos._cli._commands", KeyboardInterrupt()), *sys.meta_path]
    )
    assert main(["check", "user_1", "sso"]) == 130
    assert capsys.readouterr() == ("", "")
