"""Vault credentials for MCP servers: the Authorization header for a request to an MCP server
URL, from the first credential (of the vaults a session names, in their order) whose
`mcp_server_url` equals it. The harness sends the session's vault ids in
`X-Paddock-Vault-Ids`; values come from the mounted Secret files (`static_bearer`) or an
`OAuthToken` (`mcp_oauth`, refreshed in memory).

Each outcome that matters for a credential's status (a refresh, a failure) is an audit line
and a metric (docs/proxy.md "mcp_oauth"): the Vault's status is the operator's and the proxy
has no Kubernetes access, so this is where a failed refresh shows, besides the session's
`session.error`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aiohttp

from paddock.proxy.audit import write_line
from paddock.proxy.config import McpOAuthCredential, ProxyConfig, StaticBearerCredential
from paddock.proxy.files import SecretFiles, SecretUnavailable
from paddock.proxy.oauth import CredentialError, CredentialFailure, OAuthToken

VAULT_IDS_HEADER = "X-Paddock-Vault-Ids"

__all__ = ["VAULT_IDS_HEADER", "CredentialError", "CredentialFailure", "VaultCredentials"]


def _audit(
    credential: StaticBearerCredential | McpOAuthCredential, result: str, reason: str
) -> None:
    write_line(
        {
            "event": "vault_credential",
            "vault_id": credential.vault_id,
            "credential_id": credential.credential_id,
            "result": result,
            "reason": reason,
        }
    )


class VaultCredentials:
    """The proxy's vault credentials, built from its config (rebuilt when it changes; OAuth
    state of a credential whose config is unchanged is kept by the caller passing
    ``previous``)."""

    def __init__(
        self,
        config: ProxyConfig,
        files: SecretFiles,
        *,
        previous: VaultCredentials | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config, self.files = config, files
        self._http: aiohttp.ClientSession | None = previous._http if previous else None
        self._oauth: dict[tuple[str, str], OAuthToken] = {}
        for credential in config.vault_credentials:
            if isinstance(credential, McpOAuthCredential):
                key = (credential.vault_id, credential.credential_id)
                kept = previous._oauth.get(key) if previous else None
                if kept is not None and kept.credential == credential:
                    kept.config = config
                    self._oauth[key] = kept
                else:
                    options = {"clock": clock} if clock else {}
                    self._oauth[key] = OAuthToken(
                        credential, config, files, self._session, **options
                    )

    def _session(self) -> aiohttp.ClientSession:
        # Made at the first refresh, inside the running loop; shared with later configs.
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def find(
        self, url: str, vault_ids: Sequence[str]
    ) -> StaticBearerCredential | McpOAuthCredential | None:
        """The credential for ``url`` of the first of ``vault_ids`` that has one."""
        for vault_id in vault_ids:
            for credential in self.config.vault_credentials:
                if credential.vault_id == vault_id and credential.mcp_server_url == url:
                    return credential
        return None

    async def authorization(self, url: str, vault_ids: Sequence[str]) -> str | None:
        """The Authorization header value for a request to ``url``; None if no vault of
        the session has a credential for it. Raises `CredentialError`."""
        credential = self.find(url, vault_ids)
        if credential is None:
            return None
        if isinstance(credential, StaticBearerCredential):
            try:
                return f"Bearer {self.files.header_value(credential.token_file)}"
            except SecretUnavailable as exc:
                _audit(credential, "failed", CredentialFailure.SECRET_UNAVAILABLE)
                raise CredentialError(
                    CredentialFailure.SECRET_UNAVAILABLE,
                    f"credential {credential.credential_id}: {exc}",
                ) from None
        return await self._oauth_call(credential, None)

    async def unauthorized(self, url: str, vault_ids: Sequence[str], sent: str) -> str:
        """The server answered 401 to ``sent``: a header to retry with once (a refreshed
        OAuth token). Raises `CredentialError` when there is none."""
        credential = self.find(url, vault_ids)
        if not isinstance(credential, McpOAuthCredential):
            raise CredentialError(
                CredentialFailure.UNAUTHORIZED, "the MCP server refused the credential"
            )
        return await self._oauth_call(credential, sent)

    async def _oauth_call(self, credential: McpOAuthCredential, sent: str | None) -> str:
        token = self._oauth[(credential.vault_id, credential.credential_id)]
        before = token.refreshes
        try:
            header = await (token.authorization() if sent is None else token.unauthorized(sent))
        except CredentialError as exc:
            _audit(credential, "failed", exc.reason)
            raise
        if token.refreshes != before:
            _audit(credential, "refreshed", "")
        return header

    def metrics(self) -> str:
        """Per OAuth credential: refreshes done and whether the last one failed."""
        lines = [
            "# HELP paddock_proxy_vault_refreshes_total OAuth refreshes by this proxy replica.",
            "# TYPE paddock_proxy_vault_refreshes_total counter",
        ]
        failing = [
            "# HELP paddock_proxy_vault_credential_failing 1 while a credential's last refresh "
            "failed (label reason).",
            "# TYPE paddock_proxy_vault_credential_failing gauge",
        ]
        for (vault_id, credential_id), token in sorted(self._oauth.items()):
            labels = f'vault_id="{vault_id}",credential_id="{credential_id}"'
            lines.append(f"paddock_proxy_vault_refreshes_total{{{labels}}} {token.refreshes}")
            reason = token.failure or ""
            failing.append(
                f'paddock_proxy_vault_credential_failing{{{labels},reason="{reason}"}} '
                f"{1 if token.failure else 0}"
            )
        return "\n".join(lines + failing) + "\n"
