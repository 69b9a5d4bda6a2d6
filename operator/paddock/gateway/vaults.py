"""`/v1/vaults` and `/v1/vaults/{id}/credentials`: Vault resources as Managed Agents vaults.

A credential is an entry of the Vault's `spec.credentials` that references Secret keys; the
values an API caller sends go into one Secret per credential, owned by the Vault (so
deleting the Vault deletes them) and never read back: the gateway may create, patch and
delete Secrets, not get them, and its writes get metadata-only answers. No answer, status,
event or log line carries a value.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

from aiohttp import web

from paddock.eventlog import new_id
from paddock.gateway.common import checked, objects, read_body
from paddock.gateway.convert import meta
from paddock.gateway.convert.vaults import (
    credential_view,
    credentials_of,
    new_credential,
    secret_name,
    updated_credential,
    vault_id_of,
    vault_view,
)
from paddock.gateway.errors import ApiError, conflict, invalid, not_found, unsupported
from paddock.gateway.objects import VAULTS, Objects
from paddock.gateway.pages import bool_param, limit_param, paginate
from paddock.gateway.params import (
    CredentialCreateParams,
    CredentialUpdateParams,
    EnvironmentVariableParam,
    VaultCreateParams,
    VaultUpdateParams,
)
from paddock.gateway.views import (
    CredentialDeleted,
    CredentialPage,
    CredentialValidation,
    VaultDeleted,
    VaultPage,
    respond,
)
from paddock.models import VaultCredential, VaultSpec

routes = web.RouteTableDef()
log = logging.getLogger(__name__)

VALIDATION_UNKNOWN = (
    "the gateway never reads credential secrets, so it cannot probe the MCP server; the "
    "credential proxy uses the credential when a session calls the server"
)


def _annotated(params: VaultCreateParams) -> dict[str, str]:
    annotations = {meta.NAME_ANNOTATION: params.display_name}
    if params.metadata:
        annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(params.metadata)
    return annotations


@routes.post("/v1/vaults")
async def create_vault(request: web.Request) -> web.Response:
    params = await read_body(request, VaultCreateParams)
    created = await objects(request).create(
        VAULTS,
        meta.object_name(params.display_name, "vault"),
        new_id("vlt_"),
        {"credentials": []},
        _annotated(params),
    )
    return respond(vault_view(created))


@routes.get("/v1/vaults/{vault_id}")
async def retrieve_vault(request: web.Request) -> web.Response:
    return respond(vault_view(await objects(request).find(VAULTS, request.match_info["vault_id"])))


def _listed(query: Any, items: list[Any], key: Any) -> tuple[list[Any], str | None]:
    limit = limit_param(query, default=20, maximum=100)
    page = paginate(items, key, limit=limit, order="desc", page=query.get("page"))
    return page.data, page.next_page


@routes.get("/v1/vaults")
async def list_vaults(request: web.Request) -> web.Response:
    archived = bool_param(request.query, "include_archived")
    items = [
        obj for obj in await objects(request).list(VAULTS) if archived or not meta.archived_at(obj)
    ]
    data, next_page = _listed(
        request.query, items, lambda obj: (meta.created_at(obj), vault_id_of(obj))
    )
    return respond(VaultPage(data=[vault_view(obj) for obj in data], next_page=next_page))


@routes.post("/v1/vaults/{vault_id}")
async def update_vault(request: web.Request) -> web.Response:
    ref = request.match_info["vault_id"]
    params = await read_body(request, VaultUpdateParams)

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        if meta.archived_at(current):
            raise conflict(f"vault {ref} is archived")
        new = copy.deepcopy(current)
        annotations = new["metadata"].setdefault("annotations", {})
        if params.display_name is not None:
            annotations[meta.NAME_ANNOTATION] = params.display_name
        if params.metadata:
            metadata = meta.patched_metadata(meta.api_metadata(current), params.metadata)
            annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(metadata)
        if new == current:
            return None
        annotations[meta.UPDATED_AT_ANNOTATION] = meta.rfc3339(meta.now())
        return new

    return respond(vault_view(await objects(request).update(VAULTS, ref, change)))


@routes.delete("/v1/vaults/{vault_id}")
async def delete_vault(request: web.Request) -> web.Response:
    found = objects(request)
    obj = await found.find(VAULTS, request.match_info["vault_id"])
    # The credentials' Secrets are owned by the Vault: the garbage collector deletes them.
    await found.delete(VAULTS, obj)
    return respond(VaultDeleted(id=vault_id_of(obj)))


async def _drop_secrets(found: Objects, credentials: list[VaultCredential]) -> None:
    """Delete the gateway's Secrets of ``credentials`` (an archived credential keeps its
    entry, for the record, but no value)."""
    for credential in credentials:
        with contextlib.suppress(ApiError):
            await found.delete_secret(secret_name(credential.id))


def _archived_entries(spec: dict[str, Any], stamp: str, only: str | None = None) -> bool:
    """Mark the credentials of ``spec`` (or just ``only``) archived; whether any changed."""
    changed = False
    for entry in spec.get("credentials") or []:
        if (only is None or entry["id"] == only) and not entry.get("archivedAt"):
            entry["archivedAt"] = entry["updatedAt"] = stamp
            changed = True
    return changed


@routes.post("/v1/vaults/{vault_id}/archive")
async def archive_vault(request: web.Request) -> web.Response:
    found = objects(request)

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        new = meta.archived_copy(current)
        if new is None:
            return None
        # An archived vault's credentials are archived with it: no session may use them.
        _archived_entries(new["spec"], meta.archived_at(new) or "")
        return new

    archived = await found.update(VAULTS, request.match_info["vault_id"], change)
    await _drop_secrets(found, credentials_of(archived))
    return respond(vault_view(archived))


# Credentials.


def _credential(vault: dict[str, Any], credential_id: str) -> VaultCredential:
    for credential in credentials_of(vault):
        if credential.id == credential_id:
            return credential
    raise not_found(f"credential {credential_id} not found in vault {vault_id_of(vault)}")


def _owner(vault: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": vault["apiVersion"],
        "kind": "Vault",
        "name": vault["metadata"]["name"],
        "uid": vault["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


@routes.post("/v1/vaults/{vault_id}/credentials")
async def create_credential(request: web.Request) -> web.Response:
    ref = request.match_info["vault_id"]
    params = await read_body(request, CredentialCreateParams)
    found = objects(request)
    vault = await found.find(VAULTS, ref)
    if meta.archived_at(vault):
        raise conflict(f"vault {ref} is archived")
    credential_id = new_id("vcrd_")
    made = new_credential(credential_id, params.auth)
    stamp = meta.rfc3339(meta.now())
    entry = {
        "id": credential_id,
        **made.entry,
        "createdAt": stamp,
        "updatedAt": stamp,
    }
    if params.display_name:
        entry["displayName"] = params.display_name
    if params.metadata:
        entry["metadata"] = dict(params.metadata)
    checked(VaultCredential, entry)
    name = secret_name(credential_id)
    await found.create_secret(
        {
            "metadata": {
                "name": name,
                "namespace": found.namespace,
                "labels": {
                    meta.VAULT_ID_LABEL: vault_id_of(vault),
                    meta.CREDENTIAL_ID_LABEL: credential_id,
                    "app.kubernetes.io/managed-by": "paddock",
                },
                "ownerReferences": [_owner(vault)],
            },
            "type": "Opaque",
            "stringData": made.values,
        }
    )

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        if meta.archived_at(current):
            raise conflict(f"vault {ref} is archived")
        new = copy.deepcopy(current)
        credentials = new.setdefault("spec", {}).setdefault("credentials", [])
        # Credentials are matched to MCP servers by URL: one active credential per URL.
        for other in credentials:
            if other["mcpServerUrl"] == entry["mcpServerUrl"] and not other.get("archivedAt"):
                raise conflict(
                    f"vault {ref} has an active credential for {entry['mcpServerUrl']} already"
                )
        credentials.append(entry)
        checked(VaultSpec, new["spec"])
        return new

    try:
        updated = await found.update(VAULTS, ref, change)
    except BaseException:
        with contextlib.suppress(ApiError):
            await found.delete_secret(name)
        raise
    log.info("vault %s: credential %s created", vault_id_of(vault), credential_id)
    return respond(credential_view(updated, _credential(updated, credential_id)))


@routes.get("/v1/vaults/{vault_id}/credentials/{credential_id}")
async def retrieve_credential(request: web.Request) -> web.Response:
    vault = await objects(request).find(VAULTS, request.match_info["vault_id"])
    credential = _credential(vault, request.match_info["credential_id"])
    return respond(credential_view(vault, credential))


@routes.get("/v1/vaults/{vault_id}/credentials")
async def list_credentials(request: web.Request) -> web.Response:
    vault = await objects(request).find(VAULTS, request.match_info["vault_id"])
    archived = bool_param(request.query, "include_archived")
    items = [
        credential_view(vault, c) for c in credentials_of(vault) if archived or not c.archived_at
    ]
    data, next_page = _listed(request.query, items, lambda view: (view.created_at, view.id))
    return respond(CredentialPage(data=data, next_page=next_page))


@routes.post("/v1/vaults/{vault_id}/credentials/{credential_id}")
async def update_credential(request: web.Request) -> web.Response:
    ref, credential_id = request.match_info["vault_id"], request.match_info["credential_id"]
    params = await read_body(request, CredentialUpdateParams)
    if isinstance(params.auth, EnvironmentVariableParam):
        raise unsupported("credentials of type environment_variable")
    found = objects(request)
    values: dict[str, str] = {}

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal values
        if meta.archived_at(current):
            raise conflict(f"vault {ref} is archived")
        _credential(current, credential_id)
        new = copy.deepcopy(current)
        entries = new["spec"]["credentials"]
        index = next(i for i, e in enumerate(entries) if e["id"] == credential_id)
        entry = entries[index]
        if entry.get("archivedAt"):
            raise conflict(f"credential {credential_id} is archived")
        if params.auth is not None and not isinstance(params.auth, EnvironmentVariableParam):
            changed = updated_credential(entry, params.auth)
            entry, values = changed.entry, changed.values
        if params.display_name is not None:
            entry["displayName"] = params.display_name
        if params.metadata:
            entry["metadata"] = meta.patched_metadata(entry.get("metadata") or {}, params.metadata)
        entries[index] = entry
        if new == current and not values:
            return None
        entry["updatedAt"] = meta.rfc3339(meta.now())
        checked(VaultSpec, new["spec"])
        return new

    # The spec is checked (and written) first, so a refused update changes no value.
    updated = await found.update(VAULTS, ref, change)
    if values:
        await found.patch_secret(secret_name(credential_id), values)
        log.info("vault %s: credential %s: new %s", ref, credential_id, ", ".join(sorted(values)))
    return respond(credential_view(updated, _credential(updated, credential_id)))


@routes.delete("/v1/vaults/{vault_id}/credentials/{credential_id}")
async def delete_credential(request: web.Request) -> web.Response:
    ref, credential_id = request.match_info["vault_id"], request.match_info["credential_id"]
    found = objects(request)

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        _credential(current, credential_id)
        new = copy.deepcopy(current)
        new["spec"]["credentials"] = [
            e for e in new["spec"]["credentials"] if e["id"] != credential_id
        ]
        return new

    await found.update(VAULTS, ref, change)
    with contextlib.suppress(ApiError):
        await found.delete_secret(secret_name(credential_id))
    return respond(CredentialDeleted(id=credential_id))


@routes.post("/v1/vaults/{vault_id}/credentials/{credential_id}/archive")
async def archive_credential(request: web.Request) -> web.Response:
    ref, credential_id = request.match_info["vault_id"], request.match_info["credential_id"]
    found = objects(request)

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        _credential(current, credential_id)
        new = copy.deepcopy(current)
        if not _archived_entries(new["spec"], meta.rfc3339(meta.now()), credential_id):
            return None
        return new

    updated = await found.update(VAULTS, ref, change)
    credential = _credential(updated, credential_id)
    await _drop_secrets(found, [credential])
    return respond(credential_view(updated, credential))


@routes.post("/v1/vaults/{vault_id}/credentials/{credential_id}/mcp_oauth_validate")
async def validate_credential(request: web.Request) -> web.Response:
    vault = await objects(request).find(VAULTS, request.match_info["vault_id"])
    credential = _credential(vault, request.match_info["credential_id"])
    if credential.type != "mcp_oauth":
        raise invalid(f"credential {credential.id} is {credential.type}, not mcp_oauth")
    return respond(
        CredentialValidation(
            credential_id=credential.id,
            vault_id=vault_id_of(vault),
            has_refresh_token=credential.refresh is not None,
            status="unknown",
            validated_at=meta.rfc3339(meta.now()),
            status_message=VALIDATION_UNKNOWN,
        )
    )
