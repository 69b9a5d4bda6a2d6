"""Vaults: a Vault resource as the API's `vault`, its `spec.credentials` items as
`vault_credential`s, and API `auth` objects as credential entries plus the Secret values
they bring. Views carry no secret: a credential entry holds only Secret references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paddock.gateway import views
from paddock.gateway.convert.meta import (
    VAULT_ID_LABEL,
    api_metadata,
    archived_at,
    created_at,
    display_name,
    labels,
    now,
    parse_time,
    rfc3339,
    updated_at,
)
from paddock.gateway.errors import invalid, unsupported
from paddock.gateway.params import (
    CredentialAuthParam,
    McpOAuthParam,
    McpOAuthUpdateParam,
    StaticBearerParam,
    StaticBearerUpdateParam,
)
from paddock.models import VaultCredential

SECRET_PREFIX = "paddock-vault-"


def vault_id_of(obj: dict[str, Any]) -> str:
    return labels(obj)[VAULT_ID_LABEL]


def secret_name(credential_id: str) -> str:
    """The Secret the gateway keeps a credential's values in: one per credential, so that
    deleting the credential deletes exactly its values."""
    return SECRET_PREFIX + credential_id.lower().replace("_", "-")


def vault_view(obj: dict[str, Any]) -> views.Vault:
    return views.Vault(
        id=vault_id_of(obj),
        display_name=display_name(obj),
        metadata=api_metadata(obj),
        created_at=created_at(obj),
        updated_at=updated_at(obj),
        archived_at=archived_at(obj),
    )


def credentials_of(obj: dict[str, Any]) -> list[VaultCredential]:
    return [
        VaultCredential.model_validate(item)
        for item in (obj.get("spec") or {}).get("credentials") or []
    ]


def credential_view(vault: dict[str, Any], credential: VaultCredential) -> views.Credential:
    auth: views.StaticBearerAuth | views.McpOAuthAuth
    if credential.type == "static_bearer":
        auth = views.StaticBearerAuth(mcp_server_url=credential.mcp_server_url)
    else:
        refresh = None
        if credential.refresh is not None:
            r = credential.refresh
            refresh = views.OAuthRefresh(
                client_id=r.client_id,
                token_endpoint=r.token_endpoint,
                token_endpoint_auth=views.TokenEndpointAuth(type=r.token_endpoint_auth.type),
                resource=r.resource,
                scope=r.scope,
            )
        auth = views.McpOAuthAuth(
            mcp_server_url=credential.mcp_server_url,
            expires_at=credential.expires_at,
            refresh=refresh,
        )
    made = credential.created_at or created_at(vault)
    return views.Credential(
        id=credential.id,
        vault_id=vault_id_of(vault),
        display_name=credential.display_name,
        metadata=dict(credential.metadata),
        auth=auth,
        created_at=made,
        updated_at=credential.updated_at or made,
        archived_at=credential.archived_at,
    )


def _future(text: str, field: str) -> str:
    try:
        moment = parse_time(text)
    except ValueError:
        raise invalid(f"{field}: not an RFC 3339 timestamp") from None
    if moment <= now():
        raise invalid(f"{field}: must be in the future")
    return rfc3339(moment)


def _ref(name: str, key: str) -> dict[str, str]:
    return {"name": name, "key": key}


@dataclass
class NewCredential:
    entry: dict[str, Any]
    """The `spec.credentials` item (camelCase), referencing `values` in Secret `secret`."""
    values: dict[str, str]
    """The Secret's keys: what the API caller sent, to be written and never read back."""


def new_credential(credential_id: str, auth: CredentialAuthParam) -> NewCredential:
    """The entry and Secret values of a credential created with ``auth``."""
    name = secret_name(credential_id)
    if isinstance(auth, StaticBearerParam):
        return NewCredential(
            entry={
                "type": "static_bearer",
                "mcpServerUrl": auth.mcp_server_url,
                "tokenRef": _ref(name, "token"),
            },
            values={"token": auth.token},
        )
    if not isinstance(auth, McpOAuthParam):
        raise unsupported(
            f"credentials of type {auth.type}",
            "only static_bearer and mcp_oauth (MCP servers); give sandboxes tokens with the "
            "Agent's credentials.hosts",
        )
    entry: dict[str, Any] = {
        "type": "mcp_oauth",
        "mcpServerUrl": auth.mcp_server_url,
        "accessTokenRef": _ref(name, "access_token"),
    }
    values = {"access_token": auth.access_token}
    if auth.expires_at is not None:
        entry["expiresAt"] = _future(auth.expires_at, "auth.expires_at")
    if auth.refresh is not None:
        r = auth.refresh
        endpoint_auth: dict[str, Any] = {"type": r.token_endpoint_auth.type}
        if r.token_endpoint_auth.type == "none":
            if r.token_endpoint_auth.client_secret is not None:
                raise invalid("auth.refresh.token_endpoint_auth: none takes no client_secret")
        else:
            if not r.token_endpoint_auth.client_secret:
                raise invalid(
                    f"auth.refresh.token_endpoint_auth: {r.token_endpoint_auth.type} needs "
                    "client_secret"
                )
            endpoint_auth["clientSecretRef"] = _ref(name, "client_secret")
            values["client_secret"] = r.token_endpoint_auth.client_secret
        entry["refresh"] = {
            "tokenEndpoint": r.token_endpoint,
            "clientId": r.client_id,
            "refreshTokenRef": _ref(name, "refresh_token"),
            "tokenEndpointAuth": endpoint_auth,
            **({"scope": r.scope} if r.scope else {}),
            **({"resource": r.resource} if r.resource else {}),
        }
        values["refresh_token"] = r.refresh_token
    return NewCredential(entry=entry, values=values)


def updated_credential(
    entry: dict[str, Any], auth: StaticBearerUpdateParam | McpOAuthUpdateParam
) -> NewCredential:
    """``entry`` (camelCase) with an update's ``auth`` applied, and the Secret values it
    replaces. Values go to the credential's own Secret only."""
    if auth.type != entry["type"]:
        raise invalid(f"auth.type: the credential is {entry['type']}; the type cannot change")
    name = secret_name(entry["id"])
    values: dict[str, str] = {}
    new = dict(entry)

    def own(ref: dict[str, str], what: str) -> None:
        # A credential written with kubectl references Secrets the gateway does not manage.
        if ref["name"] != name:
            raise invalid(
                f"{what} of credential {entry['id']} is in Secret {ref['name']}, which the "
                "API does not manage: change that Secret instead"
            )

    if isinstance(auth, StaticBearerUpdateParam):
        if auth.token is not None:
            own(entry["tokenRef"], "the token")
            values["token"] = auth.token
        return NewCredential(new, values)
    if auth.access_token is not None:
        own(entry["accessTokenRef"], "the access token")
        values["access_token"] = auth.access_token
    if auth.expires_at is not None:
        new["expiresAt"] = _future(auth.expires_at, "auth.expires_at")
    if auth.refresh is not None:
        if "refresh" not in entry:
            raise invalid("auth.refresh: the credential was created without refresh")
        refresh = dict(entry["refresh"])
        if auth.refresh.refresh_token is not None:
            own(refresh["refreshTokenRef"], "the refresh token")
            values["refresh_token"] = auth.refresh.refresh_token
        if auth.refresh.scope is not None:
            if auth.refresh.scope:
                refresh["scope"] = auth.refresh.scope
            else:
                refresh.pop("scope", None)
        endpoint_auth = auth.refresh.token_endpoint_auth
        if endpoint_auth is not None:
            current = refresh.get("tokenEndpointAuth", {"type": "none"})
            if current["type"] == "none" or endpoint_auth.type == "none":
                raise invalid(
                    "auth.refresh.token_endpoint_auth: only the client_secret of a "
                    "credential using client_secret_basic or client_secret_post can change"
                )
            if endpoint_auth.client_secret is not None:
                own(current["clientSecretRef"], "the client secret")
                values["client_secret"] = endpoint_auth.client_secret
        new["refresh"] = refresh
    return NewCredential(new, values)
