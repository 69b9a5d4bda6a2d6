"""Vault credentials for MCP servers: which `Authorization` the API listener's `/mcp/<name>`
route adds for the vaults a session names.

A session names its vaults (in order) in the request header `X-Paddock-Vault-Ids`; the first
credential of those vaults whose `mcp_server_url` equals the server's URL is used. Tokens live
in mounted Secret files read through `SecretFiles` (re-read on rotation) and are never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from paddock.proxy.config import ProxyConfig, StaticBearerCredential, VaultCredential
from paddock.proxy.files import SecretFiles, SecretUnavailable

CredentialErrorReason = Literal["credential-unavailable"]


class CredentialError(Exception):
    """A matching credential exists but cannot be used. ``reason`` is stable (it becomes the
    audit rule); the message names the credential, never its secret."""

    def __init__(self, reason: CredentialErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason: CredentialErrorReason = reason


class VaultCredentials:
    """The credentials of one config, looked up by server URL within a session's vaults."""

    def __init__(self, config: ProxyConfig, secrets: SecretFiles) -> None:
        self._credentials: list[VaultCredential] = list(config.vault_credentials)
        self._secrets = secrets

    def find(self, url: str, vault_ids: Sequence[str]) -> VaultCredential | None:
        """The first credential of ``vault_ids`` (in that order) for the server at ``url``."""
        for vault_id in vault_ids:
            for credential in self._credentials:
                if credential.vault_id == vault_id and credential.mcp_server_url == url:
                    return credential
        return None

    async def authorization(self, url: str, vault_ids: Sequence[str]) -> str | None:
        """The `Authorization` value for the server at ``url``, or None when none of the
        vaults has a credential for it. Raises `CredentialError`."""
        credential = self.find(url, vault_ids)
        if credential is None:
            return None
        return f"Bearer {self._bearer(credential)}"

    def _bearer(self, credential: StaticBearerCredential) -> str:
        try:
            value = self._secrets.get(credential.token_file)
        except SecretUnavailable as exc:
            raise CredentialError(
                "credential-unavailable", f"credential {credential.credential_id}: {exc}"
            ) from None
        # It goes into a header: a newline inside would let the file add headers of its own.
        if not all(0x21 <= byte <= 0x7E for byte in value):
            raise CredentialError(
                "credential-unavailable",
                f"credential {credential.credential_id}: not a single token of visible ASCII",
            )
        return value.decode("ascii")
