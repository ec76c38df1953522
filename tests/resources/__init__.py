"""Helpers shared by the resource tests: what every request must carry, and hostile ids."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx2

from .._factories import SECRET, make_token

REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")

# id -> the single path segment it must reach the server as.
HOSTILE_IDS: list[tuple[str, str]] = [
    ("../admin", "..%2Fadmin"),
    ("a/b", "a%2Fb"),
    ("x?y", "x%3Fy"),
    ("#", "%23"),
    ("%2F", "%252F"),
    ("..", "%2E%2E"),
    (".", "%2E"),
    ("é", "%C3%A9"),
    ("a b", "a%20b"),
]

# ids refused before anything is sent.
REFUSED_IDS: list[str] = ["", "   ", "a\rb", "a\nb", "id\r\nX-Injected: 1"]


def assert_standard_headers(request: httpx2.Request, *, has_body: bool) -> None:
    """Auth, Accept, User-Agent, a well-formed request id, and Content-Type exactly when there is a body."""
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("billingos-python/")
    assert REQUEST_ID.match(request.headers["X-Request-Id"])
    if has_body:
        assert request.headers["Content-Type"] == "application/json"
    else:
        assert "Content-Type" not in request.headers
        assert request.content == b""


def body(request: httpx2.Request) -> Any:
    """The request's JSON body."""
    return json.loads(request.content)


# -- session tokens ----------------------------------------------------------------------------

JTI = "tok_" + "3f" * 16
EXP = 1772186400  # 2026-02-27T10:00:00Z


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(claims: object) -> str:
    return _b64(json.dumps(claims).encode())


_PAYLOAD, _SIGNATURE = make_token(JTI, exp=EXP)[len("bos_session_") :].rsplit(".", 1)

# (token, a regex its ValidationError message must match)
MALFORMED_TOKENS: list[tuple[str, str]] = [
    (f"bos_sess_{_PAYLOAD}.{_SIGNATURE}", "must start with 'bos_session_'"),
    (f"bos_session_{_PAYLOAD}{_SIGNATURE}", re.escape("<payload>.<signature>")),
    (f"bos_session_.{_SIGNATURE}", re.escape("<payload>.<signature>")),
    (f"bos_session_abcde.{_SIGNATURE}", "not base64url JSON"),
    (f"bos_session_{_b64(b'not json')}.{_SIGNATURE}", "not base64url JSON"),
    (f"bos_session_{_b64(bytes([0xFF, 0xFE, 0x00]))}.{_SIGNATURE}", "not base64url JSON"),
    (f"bos_session_{_claims(['jti', 'exp'])}.{_SIGNATURE}", "not a JSON object"),
    (f"bos_session_{_claims({'exp': EXP})}.{_SIGNATURE}", "jti"),
    (f"bos_session_{_claims({'jti': '', 'exp': EXP})}.{_SIGNATURE}", "jti"),
    (f"bos_session_{_claims({'jti': JTI})}.{_SIGNATURE}", "exp"),
    (f"bos_session_{_claims({'jti': JTI, 'exp': str(EXP)})}.{_SIGNATURE}", "exp"),
    (f"bos_session_{_claims({'jti': JTI, 'exp': True})}.{_SIGNATURE}", "exp"),
    (f"bos_session_{_PAYLOAD}.{'zz' * 32}", "64 hex"),
    (f"bos_session_{_PAYLOAD}.{_SIGNATURE[:10]}", "64 hex"),
]
