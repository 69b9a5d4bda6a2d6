"""`mcp_oauth` vault credentials: the access token the proxy adds to MCP requests, refreshed
with the `refresh_token` grant (RFC 6749 §6) before it expires and once after a 401.

The token endpoint is the one URL of the credential's config; nothing of a request decides
where a refresh goes, and the endpoint's addresses pass the egress address rules (no private
or metadata address unless excepted in the config). New tokens stay in this process's memory
(per proxy replica, docs/proxy.md "mcp_oauth"): the proxy has no Kubernetes credentials and
writes nothing back. A refreshed token, the refresh token and the client secret are in no log
line, metric or error message: failures name a reason (`CredentialFailure`) and at most the
token endpoint's OAuth `error` code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp

from paddock.proxy.config import McpOAuthCredential, ProxyConfig
from paddock.proxy.files import SecretFiles, SecretUnavailable, header_token
from paddock.proxy.policy import check_destination

REFRESH_AHEAD_S = 60.0
"""Refresh when the access token has less than this left: a request started just before
expiry must not reach the server with a dead token."""
_TIMEOUT = aiohttp.ClientTimeout(total=15)
_OAUTH_ERROR = re.compile(r"^[\x20-\x21\x23-\x5B\x5D-\x7E]{1,64}$")  # RFC 6749 §5.2 `error`


class CredentialFailure(StrEnum):
    """Why a vault credential gave no Authorization header: stable, for the harness (which
    makes each a `session.error` of type `mcp_authentication_failed_error`), metrics and
    audit lines (hyphenated, as the audit rules are; `credential-unavailable` is the static
    bearer's reason too)."""

    SECRET_UNAVAILABLE = "credential-unavailable"
    """A mounted Secret file is missing or not a token."""
    TOKEN_EXPIRED = "token-expired"
    """The access token expired and the credential has no refresh."""
    REFRESH_REJECTED = "refresh-rejected"
    """The token endpoint refused the refresh (a revoked or used refresh token:
    `invalid_grant`, a wrong client secret: `invalid_client`, ...)."""
    TOKEN_ENDPOINT_UNREACHABLE = "token-endpoint-unreachable"
    """The token endpoint did not answer, or not with a token."""
    TOKEN_ENDPOINT_FORBIDDEN = "token-endpoint-forbidden"
    """The token endpoint's address is one the egress rules refuse."""
    UNAUTHORIZED = "unauthorized"
    """The MCP server refused a fresh token (or one that cannot be refreshed)."""


class CredentialError(Exception):
    """No usable credential; ``reason`` is stable, the message names no secret."""

    def __init__(self, reason: CredentialFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _token(value: str, what: str) -> str:
    """A token from the token endpoint's answer, as a header value."""
    token = header_token(value.strip().encode())
    if token is None:
        raise CredentialError(CredentialFailure.SECRET_UNAVAILABLE, f"{what}: not a token")
    return token


class OAuthToken:
    """One `mcp_oauth` credential's current access token. Safe for concurrent requests: one
    refresh at a time, and requests waiting on it use its result."""

    def __init__(
        self,
        credential: McpOAuthCredential,
        config: ProxyConfig,
        files: SecretFiles,
        http: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credential, self.config, self.files, self.http = credential, config, files, http
        self.clock = clock
        self._lock = asyncio.Lock()
        self._access: str | None = None
        """A refreshed access token (None: the Secret's)."""
        self._expires: float | None = (
            credential.expires_at.timestamp() if credential.expires_at else None
        )
        self._refresh: str | None = None
        """A refresh token the endpoint rotated to (None: the Secret's)."""
        self._seen: dict[Path, str] = {}
        """The Secret values last read: a new one (an API update) replaces refreshed ones."""
        self._rejected: str | None = None
        """A refresh token the endpoint answered `invalid_grant` to: never sent again (each
        MCP request would otherwise ask once more); a new one in the Secret is tried."""
        self.failure: CredentialFailure | None = None
        """The last refresh's failure, None once one succeeds (for metrics)."""
        self.refreshes = 0

    def _secret(self, path: Path, what: str) -> tuple[str, bool]:
        """The file's token, and whether it changed since it was last read."""
        try:
            value = self.files.header_value(path)
        except SecretUnavailable as exc:
            raise CredentialError(CredentialFailure.SECRET_UNAVAILABLE, f"{what}: {exc}") from None
        changed = self._seen.get(path) not in (None, value)
        self._seen[path] = value
        return value, changed

    def _current(self) -> str:
        stored, changed = self._secret(self.credential.access_token_file, "access token")
        if changed:
            # Someone wrote a new access token (its expiry comes with the config).
            self._access, self._refresh = None, None
            expires = self.credential.expires_at
            self._expires = expires.timestamp() if expires else None
        return self._access or stored

    def _expiring(self) -> bool:
        return self._expires is not None and self._expires - REFRESH_AHEAD_S <= self.clock()

    async def authorization(self) -> str:
        """`Bearer <access token>`, refreshed first if it expires within `REFRESH_AHEAD_S`."""
        async with self._lock:
            token = self._current()
            if self._expiring():
                if self.credential.refresh is None:
                    if self._expires is not None and self._expires <= self.clock():
                        raise CredentialError(
                            CredentialFailure.TOKEN_EXPIRED,
                            "the access token expired and the credential has no refresh",
                        )
                else:
                    token = await self._refresh_now()
            return f"Bearer {token}"

    async def unauthorized(self, sent: str) -> str:
        """The MCP server answered 401 to ``sent`` (an `authorization()` value): a refreshed
        header to retry with, once. Raises `CredentialError` if there is no refresh."""
        async with self._lock:
            current = f"Bearer {self._current()}"
            if current != sent:
                return current  # another request refreshed meanwhile
            if self.credential.refresh is None:
                raise CredentialError(
                    CredentialFailure.UNAUTHORIZED,
                    "the MCP server refused the access token and the credential has no refresh",
                )
            return f"Bearer {await self._refresh_now()}"

    async def _refresh_now(self) -> str:
        try:
            token = await self._exchange()
        except CredentialError as exc:
            self.failure = exc.reason
            raise
        self.failure = None
        self.refreshes += 1
        return token

    async def _endpoint_allowed(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        decision = await check_destination(self.config, host, port)
        if decision.rule == "dns":
            raise CredentialError(
                CredentialFailure.TOKEN_ENDPOINT_UNREACHABLE,
                f'token endpoint host "{host}" does not resolve',
            )
        if not decision.allowed:
            raise CredentialError(
                CredentialFailure.TOKEN_ENDPOINT_FORBIDDEN, f"token endpoint: {decision.message}"
            )

    async def _exchange(self) -> str:
        refresh = self.credential.refresh
        assert refresh is not None
        stored, changed = self._secret(refresh.refresh_token_file, "refresh token")
        if changed:
            self._refresh = None
        sending = self._refresh or stored
        if sending == self._rejected:
            raise CredentialError(
                CredentialFailure.REFRESH_REJECTED,
                "the token endpoint refused this refresh token already: invalid_grant",
            )
        form = {
            "grant_type": "refresh_token",
            "refresh_token": sending,
            **({"scope": refresh.scope} if refresh.scope else {}),
            **({"resource": refresh.resource} if refresh.resource else {}),
        }
        headers = {"Accept": "application/json"}
        if refresh.token_endpoint_auth == "client_secret_basic":
            assert refresh.client_secret_file is not None
            secret, _ = self._secret(refresh.client_secret_file, "client secret")
            # RFC 6749 §2.3.1: both form-urlencoded before they are joined.
            pair = f"{quote(refresh.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form["client_id"] = refresh.client_id
            if refresh.token_endpoint_auth == "client_secret_post":
                assert refresh.client_secret_file is not None
                form["client_secret"], _ = self._secret(refresh.client_secret_file, "client secret")
        await self._endpoint_allowed(refresh.token_endpoint)
        started = self.clock()
        try:
            async with self.http().post(
                refresh.token_endpoint,
                data=form,
                headers=headers,
                timeout=_TIMEOUT,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CredentialError(
                CredentialFailure.TOKEN_ENDPOINT_UNREACHABLE,
                f"token endpoint unreachable: {type(exc).__name__}",
            ) from None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if status != 200 or not isinstance(answer.get("access_token"), str):
            error = answer.get("error")
            code = error if isinstance(error, str) and _OAUTH_ERROR.match(error) else None
            if 400 <= status < 500 and code:
                if code == "invalid_grant":
                    self._rejected = sending
                raise CredentialError(
                    CredentialFailure.REFRESH_REJECTED,
                    f"the token endpoint refused the refresh: {code} (HTTP {status})",
                )
            raise CredentialError(
                CredentialFailure.TOKEN_ENDPOINT_UNREACHABLE,
                f"the token endpoint answered HTTP {status} without a token",
            )
        access = _token(answer["access_token"], "refreshed access token")
        expires_in = answer.get("expires_in")
        self._expires = (
            started + float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None
        )
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            self._refresh = _token(rotated, "rotated refresh token")
        self._access = access
        return access
