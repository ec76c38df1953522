"""Session tokens: short-lived credentials your front end uses on behalf of one user (camelCase wire)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .. import _validate as check
from .._http import route
from .._models import TOKEN_PREFIX, SessionToken, decode_session_token
from .._tracing import traced
from ._base import RequestOptions, Resource, Unpack
from ._raw import RawMethod, RawProxy


def _from_response(data: Any) -> SessionToken:
    # The response's expiresAt is broken on the wire ({}), so every claim comes from the token.
    token = data.get("sessionToken") if isinstance(data, dict) else None
    if not isinstance(token, str):
        raise ValueError("expected a sessionToken string")
    decoded = decode_session_token(token)
    operations = data.get("allowedOperations")
    if not decoded.allowed_operations and isinstance(operations, list):
        return attrs.evolve(decoded, allowed_operations=tuple(o for o in operations if isinstance(o, str)))
    return decoded


class AsyncSessionTokens(Resource):
    """``billing.session_tokens``: mint and revoke session tokens."""

    __slots__ = ()

    @property
    def with_raw_response(self) -> AsyncSessionTokensWithRawResponse:
        """The same methods, each returning a :class:`RawResponse` (status, headers, rate limit) around
        its result.

        Example::

            raw = await billing.session_tokens.with_raw_response.create("user_42")
            print(raw.status_code, raw.request_id, raw.rate_limit)
            result = raw.parse()
        """
        return AsyncSessionTokensWithRawResponse(self)

    @traced("session_tokens.create")
    async def create(
        self,
        external_user_id: str,
        *,
        external_organization_id: str | None = None,
        expires_in: int | None = None,
        allowed_operations: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> SessionToken:
        """Mint a session token for one of your users.

        Args:
            external_user_id: your own id of the user (at most 255 characters).
            external_organization_id: your id of the user's organization, if any.
            expires_in: lifetime in seconds, 60 to 86400 (server default 3600).
            allowed_operations: restrict what the token may do.
            metadata: free-form JSON object stored with the token.

        Not retried once the request may have reached the server: a retry would mint a second token.

        Example::

            token = await billing.session_tokens.create("user_42", expires_in=900)
            token.session_token, token.token_id, token.expires_at
        """
        body = {
            "externalUserId": check.text("external_user_id", external_user_id, max_length=255),
            "externalOrganizationId": check.optional_text(
                "external_organization_id", external_organization_id, max_length=255
            ),
            "expiresIn": None
            if expires_in is None
            else check.integer("expires_in", expires_in, low=60, high=86400),
            "allowedOperations": check.string_list("allowed_operations", allowed_operations),
            "metadata": check.metadata("metadata", metadata),
        }
        return await self._requester.request(
            "POST", "/v1/session-tokens", body=body, decode=_from_response, options=options
        )

    @traced("session_tokens.revoke")
    async def revoke(self, token_or_id: str, **options: Unpack[RequestOptions]) -> None:
        """Revoke a token, given the whole ``bos_session_…`` string or its id (``tok_…``).

        Raises ``NotFoundError`` when the token is unknown or already revoked; a 404 on a *retry*
        (after the first attempt's response was lost) counts as success, since the first attempt
        revoked it.
        """
        if isinstance(token_or_id, str) and token_or_id.startswith(TOKEN_PREFIX):
            token_id = decode_session_token(token_or_id).token_id
        else:
            token_id = check.text("token_or_id", token_or_id, max_length=255)
        # A whole token is a credential: keep it out of this frame's locals, which tracebacks rendered
        # with locals (Sentry, rich, pytest -l) would show if the request fails.
        del token_or_id
        await self._requester.request(
            "DELETE",
            route("/v1/session-tokens/{token_id}", token_id=token_id),
            decode=_ignore,
            options=options,
            ok_on_retry=frozenset({404}),
        )


class AsyncSessionTokensWithRawResponse(RawProxy):
    """``billing.session_tokens.with_raw_response``: the methods of :class:`AsyncSessionTokens`,
    each returning a :class:`RawResponse`."""

    __slots__ = ()
    create = RawMethod(AsyncSessionTokens.create)
    revoke = RawMethod(AsyncSessionTokens.revoke)


def _ignore(_: Any) -> None:
    return None
