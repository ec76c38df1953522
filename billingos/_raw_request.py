"""``billing.request(method, path, ...)``: any route, through the one request path.

The escape hatch for a route the SDK does not wrap yet. It only checks and shapes what the caller gave
(method, a path under ``api_url``, query parameters, a JSON body) and hands it to
:meth:`Requester.request` with a pass-through decoder, inside a capture: authentication, request ids,
retries, deadlines, error mapping, logging and the response-size limit are the same as every other
call's, because they are the same code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote

from ._errors import ValidationError
from ._http import Method, Requester, RequestOptions, encode_json, opaque_route
from ._response import RawResponse, call_raw

__all__ = ["send"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SAFE_METHODS = ("GET", "DELETE")
"""Retried after a request may have reached the server without being told so (as the resources do)."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/": kept as written (existing %XX escapes too)


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_argument")


def check_method(method: object) -> str:
    """The method in upper case; one of GET, POST, PUT, PATCH, DELETE."""
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _invalid(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    return method.upper()


def check_path(path: object) -> str:
    """A path under ``api_url``: starts with ``/``, no scheme or host, no CR/LF, no dot segments.

    Characters outside RFC 3986 (spaces, non-ASCII) are percent-encoded; ``%XX`` escapes are kept.
    """
    if not isinstance(path, str):
        raise _invalid(f"path must be a string such as '/v1/usage/check', got {type(path).__name__}.")
    if any(c in path for c in "\r\n\0"):
        raise _invalid("path must not contain CR, LF or NUL characters.")
    if _SCHEME.match(path) or path.startswith("//") or "\\" in path:
        raise _invalid(
            f"path must be a path under api_url such as '/v1/usage/check', not a URL ({path[:80]!r}); "
            "requests only go to the client's api_url, with its secret key."
        )
    if not path.startswith("/"):
        raise _invalid(f"path must start with '/', got {path[:80]!r}.")
    if "?" in path or "#" in path:
        raise _invalid("path must not contain '?' or '#': pass the query as params={...}.")
    segments = path.split("/")
    if any(s in (".", "..") or s.lower() in ("%2e", "%2e%2e", ".%2e", "%2e.") for s in segments):
        raise _invalid(f"path must not contain '.' or '..' segments, got {path[:80]!r}.")
    try:
        return quote(path, safe=_PATH_SAFE)
    except UnicodeEncodeError:
        raise _invalid("path must be valid Unicode text: it contains a lone surrogate.") from None


def check_params(params: object) -> dict[str, str | int] | None:
    """Query parameters as the request path encodes them: ``None`` values dropped, booleans as
    ``true``/``false``, numbers as written."""
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise _invalid(f"params must be a mapping of names to values, got {type(params).__name__}.")
    result: dict[str, str | int] = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise _invalid(f"params names must be strings, got {name!r}.")
        if value is None:
            continue
        if isinstance(value, bool):
            result[name] = "true" if value else "false"
        elif isinstance(value, (str, int)):
            result[name] = value
        elif isinstance(value, float) and value == value and abs(value) != float("inf"):
            result[name] = repr(value)
        else:
            kind = type(value).__name__
            raise _invalid(f"params[{name!r}] must be a string, number or boolean, got {kind}.")
    return result


def _identity(data: Any) -> Any:
    return data


async def send(
    requester: Requester,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None,
    json: Any,
    idempotent: bool,
    options: RequestOptions,
) -> RawResponse[Any]:
    """Check the arguments, send through ``requester`` and return the final response with its JSON."""
    verb = check_method(method)
    url_path = opaque_route(check_path(path))
    query = check_params(params)
    if idempotent is not True and idempotent is not False:
        raise _invalid(f"idempotent must be True or False, got {idempotent!r}.")
    content = None if json is None else encode_json(json)
    kwargs: dict[str, Any] = {
        "decode": _identity,
        "options": options,
        "params": query,
        "content": content,
        "retry_safe": verb in SAFE_METHODS or idempotent,
    }
    return await call_raw(requester.request, (cast("Method", verb), url_path), kwargs)
