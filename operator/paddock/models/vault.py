"""Vault: credentials for the MCP servers of a namespace's Agents, by reference to Secrets.

A Vault holds no secret value: each credential names the Secret keys that hold its token
(or OAuth tokens and client secret). Only the credential proxy mounts those Secrets; a
session uses the vaults its `vaultIds` name (docs/api-design.md, "Vaults").
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from paddock.models.common import (
    Condition,
    Model,
    ObjectMeta,
    SecretKeyReference,
    cel_rule,
    map_list,
)

CREDENTIAL_ID_PATTERN = r"^vcrd_[0-9A-Za-z]{1,56}$"
VAULT_ID_PATTERN = r"^vlt_[0-9A-Za-z]{1,56}$"
CredentialId = Annotated[str, Field(pattern=CREDENTIAL_ID_PATTERN, max_length=61)]
VaultId = Annotated[str, Field(pattern=VAULT_ID_PATTERN, max_length=60)]
CredentialType = Literal["static_bearer", "mcp_oauth"]
# Where a token goes (an MCP server, a token endpoint): an http(s) URL without userinfo or
# fragment (the proxy compares URLs).
ServerUrl = Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s@#]+$")]
Metadata = Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)]


class TokenEndpointAuth(Model):
    """How the proxy authenticates to the token endpoint when it refreshes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.type == 'none' ? !has(self.clientSecretRef) : has(self.clientSecretRef)",
                    "clientSecretRef is required for client_secret_basic and client_secret_post, "
                    "and not allowed for none",
                )
            ]
        }
    }

    type: Literal["none", "client_secret_basic", "client_secret_post"] = "none"
    """`none`: a public client; `client_secret_basic`: HTTP Basic; `client_secret_post`: the
    secret in the form body."""
    client_secret_ref: SecretKeyReference | None = None
    """The Secret key holding the client secret."""


class OAuthRefresh(Model):
    """The `refresh_token` grant the proxy uses before the access token expires."""

    token_endpoint: ServerUrl
    """The authorization server's token endpoint: the only URL the proxy refreshes at."""
    client_id: Annotated[str, Field(min_length=1, max_length=512)]
    """The OAuth client id."""
    refresh_token_ref: SecretKeyReference
    """The Secret key holding the refresh token."""
    token_endpoint_auth: TokenEndpointAuth = TokenEndpointAuth()
    """Client authentication at the token endpoint."""
    scope: Annotated[str, Field(max_length=2048)] | None = None
    """`scope` of the refresh request."""
    resource: Annotated[str, Field(max_length=2048)] | None = None
    """RFC 8707 `resource` of the refresh request."""


class VaultCredential(Model):
    """One credential: a token for the MCP server at `mcpServerUrl`."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.type == 'static_bearer' ? has(self.tokenRef) && !has(self.accessTokenRef)"
                    " && !has(self.refresh) && !has(self.expiresAt) : has(self.accessTokenRef)"
                    " && !has(self.tokenRef)",
                    "static_bearer credentials take tokenRef; mcp_oauth ones accessTokenRef, "
                    "expiresAt and refresh",
                )
            ]
        }
    }

    id: CredentialId
    """The API id (`vcrd_…`); unique in the namespace. Choose one for a credential you write."""
    type: CredentialType
    """`static_bearer`: a fixed token; `mcp_oauth`: an OAuth access token, refreshed by the
    proxy when `refresh` is set."""
    mcp_server_url: ServerUrl
    """The MCP server the credential is for, as the Agent's `mcpServers[].url` names it."""
    display_name: Annotated[str, Field(max_length=255)] | None = None
    """Human-readable name."""
    metadata: Metadata = Field(default_factory=dict)
    """The API's key-value metadata."""
    token_ref: SecretKeyReference | None = None
    """`static_bearer`: the Secret key holding the token."""
    access_token_ref: SecretKeyReference | None = None
    """`mcp_oauth`: the Secret key holding the access token."""
    expires_at: Annotated[str, Field(max_length=64)] | None = None
    """`mcp_oauth`: when the access token expires (RFC 3339); unknown if unset."""
    refresh: OAuthRefresh | None = None
    """`mcp_oauth`: how to get a new access token."""
    archived_at: Annotated[str, Field(max_length=64)] | None = None
    """Set when archived: the credential stays listed but no proxy uses it."""
    created_at: Annotated[str, Field(max_length=64)] | None = None
    """When it was added (set by the gateway; unset: the Vault's creation)."""
    updated_at: Annotated[str, Field(max_length=64)] | None = None
    """When it last changed (set by the gateway)."""


class VaultSpec(Model):
    """Desired state of a Vault."""

    credentials: Annotated[
        list[VaultCredential], Field(max_length=100, json_schema_extra=map_list("id"))
    ] = Field(default_factory=list)
    """The vault's credentials."""


class VaultStatus(Model):
    """Observed state of a Vault."""

    observed_generation: int | None = None
    """The `metadata.generation` this status describes."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=map_list("type"))] = Field(
        default_factory=list
    )
    """`Ready`: every referenced Secret key exists."""


class Vault(Model):
    """Credentials for MCP servers, as references to Secrets; sessions choose vaults by id."""

    api_version: Literal["paddock.dev/v1alpha1"] = "paddock.dev/v1alpha1"
    kind: Literal["Vault"] = "Vault"
    metadata: ObjectMeta = ObjectMeta()
    spec: VaultSpec = VaultSpec()
    status: VaultStatus | None = None


def secret_refs(credential: VaultCredential) -> dict[str, SecretKeyReference]:
    """The Secret keys ``credential`` references, by what they hold (`token`,
    `access_token`, `refresh_token`, `client_secret`)."""
    refs: dict[str, SecretKeyReference] = {}
    if credential.token_ref is not None:
        refs["token"] = credential.token_ref
    if credential.access_token_ref is not None:
        refs["access_token"] = credential.access_token_ref
    if credential.refresh is not None:
        refs["refresh_token"] = credential.refresh.refresh_token_ref
        client_secret = credential.refresh.token_endpoint_auth.client_secret_ref
        if client_secret is not None:
            refs["client_secret"] = client_secret
    return refs
