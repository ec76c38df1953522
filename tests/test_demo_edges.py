"""``python -m billingos demo``, in-process: how ``main`` reports, and how the tour reacts to a server that
does not behave (a quota it does not enforce, a revoked token it still accepts).

``main`` is tested with a stand-in ``run`` (its reporting does not depend on the tour); the tour itself runs
for real against the embedded server through ``_demo.run``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from billingos import _demo
from billingos.testing import FakeBillingOS, Plan


def _one_step(report: _demo.Report) -> None:
    with report.step("server", "Start the embedded server on loopback") as r:
        r.update(url="http://127.0.0.1:1")
        report.say("served")


def test_main_prints_one_json_document_on_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "run", _one_step)
    out, err = io.StringIO(), io.StringIO()

    assert _demo.main(as_json=True, out=out, err=err) == 0

    assert err.getvalue() == ""
    doc = json.loads(out.getvalue())  # the whole of stdout: nothing printed along the way
    assert (doc["ok"], doc["error"]) == (True, None)
    assert doc["seconds"] >= 0
    assert doc["steps"] == [
        {
            "step": 1,
            "name": "server",
            "title": "Start the embedded server on loopback",
            "result": {"url": "http://127.0.0.1:1"},
        }
    ]


def test_main_in_text_mode_ends_with_the_step_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "run", _one_step)
    out, err = io.StringIO(), io.StringIO()

    assert _demo.main(out=out, err=err) == 0

    assert err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["", " 1. Start the embedded server on loopback", "    served"]
    assert lines[-1].startswith("Done: 1 steps in ")
    assert lines[-1].endswith(" s.")


@pytest.mark.parametrize("missing", ["starlette", "uvicorn.config"])
def test_main_names_the_testing_extra_when_the_server_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    def run(report: _demo.Report) -> None:
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(_demo, "run", run)
    out, err = io.StringIO(), io.StringIO()

    assert _demo.main(as_json=True, out=out, err=err) == 1

    top = missing.split(".")[0]
    expected = f"the demo needs the testing extra ({top} is missing): pip install 'billingos[testing]'"
    assert err.getvalue() == f"billingos demo: error: {expected}\n"
    assert json.loads(out.getvalue())["error"] == expected


def test_main_does_not_blame_the_extra_for_another_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(report: _demo.Report) -> None:
        raise ModuleNotFoundError("No module named 'h11'", name="h11")

    monkeypatch.setattr(_demo, "run", run)
    err = io.StringIO()

    assert _demo.main(out=io.StringIO(), err=err) == 1

    assert err.getvalue() == "billingos demo: error: setup: ModuleNotFoundError: No module named 'h11'\n"


# -- the tour against a server that misbehaves ------------------------------------------------------


def _seed_with_a_larger_quota(fake: FakeBillingOS) -> Plan:
    fake.add_feature(_demo.QUOTA, "usage_quota")
    fake.add_feature(_demo.FLAG, "boolean_flag")
    plan = fake.add_product("Pro", features={_demo.QUOTA: _demo.LIMIT + 1, _demo.FLAG: True})
    fake.add_customer("user_7", email="grace@example.com")
    fake.subscribe("user_7", plan.price_id)
    return plan


def test_the_tour_fails_when_tracking_over_the_quota_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "seed", _seed_with_a_larger_quota)
    out, err = io.StringIO(), io.StringIO()

    assert _demo.main(as_json=True, out=out, err=err) == 1

    message = "step 6 (quota): RuntimeError: usage.track over the quota did not raise QuotaExceededError"
    assert err.getvalue() == f"billingos demo: error: {message}\n"
    doc = json.loads(out.getvalue())
    assert doc["ok"] is False
    assert [s["name"] for s in doc["steps"]][-1] == "quota"
    assert doc["steps"][-1]["result"] == {"has_access": True, "reason": None}


def test_the_tour_reports_a_revoked_token_the_server_still_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    def accepts_anything(self: FakeBillingOS, token: str) -> dict[str, Any]:
        return {"jti": "tok_still_valid"}

    monkeypatch.setattr(FakeBillingOS, "verify_session_token", accepts_anything)
    out = io.StringIO()
    report = _demo.Report(out)

    _demo.run(report)

    steps = {s["name"]: s["result"] for s in report.steps}
    assert steps["revoke_token"]["server_accepts"] is True
    assert "session_tokens.revoke -> done; the server now refuses the token (still valid)" in out.getvalue()
    assert steps["blocking_client"] == {"has_access": False, "reason": "quota_exceeded"}  # it carried on


def test_counts_are_written_without_a_pointless_fraction() -> None:
    assert [_demo._n(v) for v in (None, 5.0, 2.5, 0)] == ["-", "5", "2.5", "0"]
    assert _demo._day(None) == "?"
