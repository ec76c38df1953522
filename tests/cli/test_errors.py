"""Configuration, exit statuses and error lines: one line on stderr, no traceback, never the key."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from .conftest import BILLINGOS, Sandbox, error_line

OTHER_KEY = "sk_test_" + "0123456789abcdef" * 3
"""Well formed, but unknown to the sandbox."""


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_flags_override_the_environment(sandbox: Sandbox) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    by_flags, wrong_flag = sandbox.run_all(
        ["check", "user_1", "sso", "--secret-key", sandbox.key, "--api-url", sandbox.url, "--json"],
        ["check", "user_1", "sso", "--secret-key", OTHER_KEY, "--api-url", sandbox.url],
        env={"BILLINGOS_SECRET_KEY": OTHER_KEY, "BILLINGOS_API_URL": dead},
    )
    env_only = sandbox.run(
        "check", "user_1", "sso", "--json"
    )  # the sandbox's key and URL, from the environment

    assert by_flags.status == 0, by_flags.err
    assert by_flags.json()["has_access"] is True
    assert env_only.status == 0, env_only.err
    assert env_only.json() == by_flags.json()
    assert wrong_flag.status == 3
    assert error_line(wrong_flag).startswith("error: AuthenticationError: [401 AUTH_INVALID_TOKEN] ")


def test_no_key_is_a_configuration_error(sandbox: Sandbox) -> None:
    result = sandbox.run("check", "user_1", "sso", connect=False)

    assert result.status == 4
    assert error_line(result) == (
        "error: ValidationError: No secret key: pass --secret-key=... or set BILLINGOS_SECRET_KEY "
        "(it starts with sk_test_ or sk_live_)."
    )


def test_invalid_settings_are_configuration_errors(sandbox: Sandbox) -> None:
    cases = {
        "--secret-key=pk_test_0123456789abcdef0123": "Invalid secret key: it must start with sk_test_",
        "--api-url=ftp://example.com": "--api-url must be an http(s) URL with a host",
        "--max-retries=-1": "--max-retries must be an int >= 0 (0 disables retries), got -1.",
    }

    results = sandbox.run_all(*(["metrics", "user_1", option] for option in cases))

    for result, message in zip(results, cases.values(), strict=True):
        assert result.status == 4
        assert message in error_line(result)


def test_an_api_error_exits_3_with_its_request_id(sandbox: Sandbox) -> None:
    result = sandbox.run("metrics", "nobody", "--json")

    assert result.status == 3
    assert error_line(result).startswith(
        "error: NotFoundError: [404 RES_NOT_FOUND] Customer not found (request_id=req_"
    )


def test_a_server_that_is_down_exits_3(sandbox: Sandbox) -> None:
    url = f"http://127.0.0.1:{unused_port()}"

    result = sandbox.run("check", "user_1", "sso", "--api-url", url, "--max-retries", "0")

    assert result.status == 3
    assert error_line(result).startswith("error: NetworkError: ")


def test_an_argument_the_sdk_refuses_is_a_usage_error(sandbox: Sandbox) -> None:
    result = sandbox.run("track", "user_1", "api_calls", "0")

    assert result.status == 2
    assert error_line(result).startswith("error: ValidationError: [invalid_argument] quantity must be")


def test_a_bad_command_line_is_a_usage_error(sandbox: Sandbox) -> None:
    result = sandbox.run("check", "user_1")

    assert result.status == 2
    assert result.out == ""
    assert "Error: Missing argument 'FEATURE'." in result.err


def test_help_documents_the_exit_codes_and_hides_the_key(sandbox: Sandbox) -> None:
    top = sandbox.run("--help")
    check = sandbox.run("check", "--help")

    assert top.status == 0
    for command in (
        "check",
        "track",
        "metrics",
        "token",
        "customers",
        "products",
        "checkout",
        "portal",
        "state",
        "demo",
        "mock",
    ):
        assert f"\n  {command} " in top.out
    assert "Exit status:" in top.out
    for status in ("0", "1", "2", "3", "4", "130"):
        assert f"\n    {status} " in top.out
    assert "BILLINGOS_SECRET_KEY" in top.out
    assert check.status == 0
    assert "--secret-key KEY" in check.out
    assert "$BILLINGOS_SECRET_KEY" in check.out  # and, checked by run(), not its value


def test_ctrl_c_exits_130_without_a_traceback(sandbox: Sandbox) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(20)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(
            [str(BILLINGOS), "check", "user_1", "sso", "--api-url", url, "--secret-key", sandbox.key],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            conn, _ = silent.accept()  # the request is in flight
            with conn:
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert proc.returncode == 130
    assert out == ""
    assert err.strip() == ""
    assert sandbox.key not in out + err


def test_without_click_it_says_which_extra_to_install() -> None:
    # httpx imports click by itself when it is installed (its own CLI); blocking it shows that billingos,
    # python -m billingos and the console script's module import without it, and only main() needs it.
    code = (
        "import sys; sys.modules['click'] = None; import billingos, billingos.__main__; "
        "from billingos._cli import main; sys.exit(main())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "check", "user_1", "sso"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "billingos: the command line needs click: pip install 'billingos[cli]'\n"


def test_python_m_billingos_is_the_same_command(sandbox: Sandbox) -> None:
    result = sandbox.run("check", "user_2", "sso", "--json", command=(sys.executable, "-m", "billingos"))

    assert result.status == 1
    assert result.json()["reason"] == "no_active_subscription"
