"""The OpenAPI 3.1 document of what the gateway implements, served at `/v1/openapi.json`.

Every schema is generated: request bodies from the models in `params.py` (the ones the
gateway validates with), response bodies from those in `views.py` (the ones it answers
with), into one shared `components.schemas`. Only the routes and their parameters are
written here.
"""

from __future__ import annotations

from functools import cache
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from paddock.gateway import views
from paddock.gateway.params import (
    REQUEST_BODIES,
    AgentCreateParams,
    AgentUpdateParams,
    CredentialCreateParams,
    CredentialUpdateParams,
    EnvironmentCreateParams,
    EnvironmentUpdateParams,
    ResourceAddParams,
    ResourceUpdateParams,
    SendEventsParams,
    SessionCreateParams,
    SessionUpdateParams,
    VaultCreateParams,
    VaultUpdateParams,
)

_REF = "#/components/schemas/{model}"
_STRING = {"type": "string"}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 100})
_PAGE = _query("page", _STRING, "Cursor from `next_page` (or `prev_page`).")
_ARCHIVED = _query("include_archived", {"type": "boolean"})


def _operation(
    operation_id: str,
    summary: str,
    result: type[BaseModel] | None,
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
    form: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    error = {
        "description": "Error envelope",
        "content": {"application/json": {"schema": _ref(views.ErrorResponse)}},
    }
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters or [],
        "responses": {
            "200": {
                "description": "OK",
                "content": {content_type: {"schema": _ref(result) if result else {}}},
            },
            "4XX": error,
            "5XX": error,
        },
    }
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if form:
        operation["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": form}},
        }
    return operation


_UPLOAD = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "expires_in_seconds": {"type": "integer", "minimum": 3600, "maximum": 7_776_000},
    },
}


def _file_paths() -> dict[str, Any]:
    file, session, resource = _path("file_id"), _path("session_id"), _path("resource_id")
    return {
        "/v1/files": {
            "post": _operation("uploadFile", "Upload a file", views.FileMetadata, form=_UPLOAD),
            "get": _operation(
                "listFiles",
                "List files, newest first",
                views.FilePage,
                parameters=[
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _PAGE,
                    _query("scope_id", _STRING, "Only the outputs of this session."),
                    _query("ids[]", {"type": "array", "items": _STRING, "maxItems": 100}),
                ],
            ),
        },
        "/v1/files/{file_id}": {
            "get": _operation(
                "getFileMetadata", "Get a file's metadata", views.FileMetadata, parameters=[file]
            ),
            "delete": _operation(
                "deleteFile", "Delete a file", views.FileDeleted, parameters=[file]
            ),
        },
        "/v1/files/{file_id}/content": {
            "get": _operation(
                "downloadFile",
                "Download a file's content",
                None,
                parameters=[file],
                content_type="*/*",  # the stored mime_type
            ),
        },
        "/v1/sessions/{session_id}/resources": {
            "post": _operation(
                "addSessionResource",
                "Mount a file or repository into a session",
                views.AnySessionResource,
                parameters=[session],
                body=ResourceAddParams,
            ),
            "get": _operation(
                "listSessionResources",
                "List a session's resources",
                views.SessionResourcePage,
                parameters=[
                    session,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _PAGE,
                ],
            ),
        },
        "/v1/sessions/{session_id}/resources/{resource_id}": {
            "get": _operation(
                "getSessionResource",
                "Get a session resource",
                views.AnySessionResource,
                parameters=[session, resource],
            ),
            "post": _operation(
                "updateSessionResource",
                "Rotate a repository's token (not supported by Paddock)",
                views.AnySessionResource,
                parameters=[session, resource],
                body=ResourceUpdateParams,
            ),
            "delete": _operation(
                "deleteSessionResource",
                "Remove a resource from a session",
                views.SessionResourceDeleted,
                parameters=[session, resource],
            ),
        },
    }


def _paths() -> dict[str, Any]:
    agent, environment, session = _path("agent_id"), _path("environment_id"), _path("session_id")
    return {
        "/v1/agents": {
            "post": _operation(
                "createAgent", "Create an agent", views.Agent, body=AgentCreateParams
            ),
            "get": _operation(
                "listAgents",
                "List agents, newest first",
                views.AgentPage,
                parameters=[
                    _LIMIT,
                    _PAGE,
                    _ARCHIVED,
                    _query("created_at[gte]", _STRING),
                    _query("created_at[lte]", _STRING),
                ],
            ),
        },
        "/v1/agents/{agent_id}": {
            "get": _operation(
                "getAgent",
                "Get an agent, or (`version`) one of its kept versions",
                views.Agent,
                parameters=[agent, _query("version", {"type": "integer", "minimum": 1})],
            ),
            "post": _operation(
                "updateAgent",
                "Update an agent; `version` guards against concurrent updates (409)",
                views.Agent,
                parameters=[agent],
                body=AgentUpdateParams,
            ),
        },
        "/v1/agents/{agent_id}/versions": {
            "get": _operation(
                "listAgentVersions",
                "List an agent's kept versions, newest first",
                views.AgentPage,
                parameters=[agent, _LIMIT, _PAGE],
            ),
        },
        "/v1/agents/{agent_id}/archive": {
            "post": _operation("archiveAgent", "Archive an agent", views.Agent, parameters=[agent]),
        },
        "/v1/environments": {
            "post": _operation(
                "createEnvironment",
                "Create an environment",
                views.Environment,
                body=EnvironmentCreateParams,
            ),
            "get": _operation(
                "listEnvironments",
                "List environments, newest first",
                views.EnvironmentPage,
                parameters=[_LIMIT, _PAGE, _ARCHIVED],
            ),
        },
        "/v1/environments/{environment_id}": {
            "get": _operation(
                "getEnvironment", "Get an environment", views.Environment, parameters=[environment]
            ),
            "post": _operation(
                "updateEnvironment",
                "Update an environment",
                views.Environment,
                parameters=[environment],
                body=EnvironmentUpdateParams,
            ),
            "delete": _operation(
                "deleteEnvironment",
                "Delete an environment",
                views.EnvironmentDeleted,
                parameters=[environment],
            ),
        },
        "/v1/environments/{environment_id}/archive": {
            "post": _operation(
                "archiveEnvironment",
                "Archive an environment",
                views.Environment,
                parameters=[environment],
            ),
        },
        "/v1/sessions": {
            "post": _operation(
                "createSession", "Create a session", views.Session, body=SessionCreateParams
            ),
            "get": _operation(
                "listSessions",
                "List sessions",
                views.SessionPage,
                parameters=[
                    _LIMIT,
                    _PAGE,
                    _ARCHIVED,
                    _query("order", {"enum": ["asc", "desc"]}),
                    _query("agent_id", _STRING),
                    _query("agent_version", {"type": "integer"}),
                    _query(
                        "statuses[]",
                        {
                            "type": "array",
                            "items": {"enum": list(get_args(views.SessionStatus))},
                        },
                    ),
                    *(_query(f"created_at[{op}]", _STRING) for op in ("gt", "gte", "lt", "lte")),
                ],
            ),
        },
        "/v1/sessions/{session_id}": {
            "get": _operation("getSession", "Get a session", views.Session, parameters=[session]),
            "post": _operation(
                "updateSession",
                "Update a session's title, metadata or budget",
                views.Session,
                parameters=[session],
                body=SessionUpdateParams,
            ),
            "delete": _operation(
                "deleteSession",
                "Delete a session and its events",
                views.SessionDeleted,
                parameters=[session],
            ),
        },
        "/v1/sessions/{session_id}/archive": {
            "post": _operation(
                "archiveSession",
                "Archive a session (it is terminated)",
                views.Session,
                parameters=[session],
            ),
        },
        "/v1/sessions/{session_id}/events": {
            "post": _operation(
                "sendEvents",
                "Send user events",
                views.SentEvents,
                parameters=[session],
                body=SendEventsParams,
            ),
            "get": _operation(
                "listEvents",
                "List a session's events",
                views.EventPage,
                parameters=[
                    session,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _PAGE,
                    _query("order", {"enum": ["asc", "desc"]}),
                    _query("types[]", {"type": "array", "items": _STRING}),
                ],
            ),
        },
        "/v1/sessions/{session_id}/events/stream": {
            "get": _operation(
                "streamEvents",
                "Stream a session's events (server-sent events, `event:` = type)",
                None,
                parameters=[
                    session,
                    _query(
                        "event_deltas[]",
                        {"type": "array", "items": {"enum": ["agent.message", "agent.thinking"]}},
                    ),
                ],
                content_type="text/event-stream",
            ),
        },
    }


def _vault_paths() -> dict[str, Any]:
    vault, credential = _path("vault_id"), _path("credential_id")
    both = [vault, credential]
    return {
        "/v1/vaults": {
            "post": _operation(
                "createVault", "Create a vault", views.Vault, body=VaultCreateParams
            ),
            "get": _operation(
                "listVaults",
                "List vaults, newest first",
                views.VaultPage,
                parameters=[_LIMIT, _PAGE, _ARCHIVED],
            ),
        },
        "/v1/vaults/{vault_id}": {
            "get": _operation("getVault", "Get a vault", views.Vault, parameters=[vault]),
            "post": _operation(
                "updateVault",
                "Update a vault",
                views.Vault,
                parameters=[vault],
                body=VaultUpdateParams,
            ),
            "delete": _operation(
                "deleteVault", "Delete a vault", views.VaultDeleted, parameters=[vault]
            ),
        },
        "/v1/vaults/{vault_id}/archive": {
            "post": _operation(
                "archiveVault",
                "Archive a vault and its credentials",
                views.Vault,
                parameters=[vault],
            ),
        },
        "/v1/vaults/{vault_id}/credentials": {
            "post": _operation(
                "createCredential",
                "Add a credential; its secret values are write-only",
                views.Credential,
                parameters=[vault],
                body=CredentialCreateParams,
            ),
            "get": _operation(
                "listCredentials",
                "List a vault's credentials, newest first",
                views.CredentialPage,
                parameters=[vault, _LIMIT, _PAGE, _ARCHIVED],
            ),
        },
        "/v1/vaults/{vault_id}/credentials/{credential_id}": {
            "get": _operation(
                "getCredential", "Get a credential", views.Credential, parameters=both
            ),
            "post": _operation(
                "updateCredential",
                "Update a credential (new secret values replace the stored ones)",
                views.Credential,
                parameters=both,
                body=CredentialUpdateParams,
            ),
            "delete": _operation(
                "deleteCredential",
                "Delete a credential and its Secret",
                views.CredentialDeleted,
                parameters=both,
            ),
        },
        "/v1/vaults/{vault_id}/credentials/{credential_id}/archive": {
            "post": _operation(
                "archiveCredential", "Archive a credential", views.Credential, parameters=both
            ),
        },
        "/v1/vaults/{vault_id}/credentials/{credential_id}/mcp_oauth_validate": {
            "post": _operation(
                "validateCredential",
                "Validate an mcp_oauth credential (Paddock answers `unknown`)",
                views.CredentialValidation,
                parameters=both,
            ),
        },
    }


def _console_paths() -> dict[str, Any]:
    """The console's read-only status (a Paddock extension, docs/console.md)."""
    return {
        f"/v1/console/{plural}": {
            "get": _operation(
                f"consoleList{plural.title()}",
                f"The operator's status of the namespace's {plural} (Paddock extension)",
                model,
            )
        }
        for plural, model in (
            ("agents", views.ConsoleAgentList),
            ("environments", views.ConsoleEnvironmentList),
            ("sessions", views.ConsoleSessionList),
        )
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once)."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in REQUEST_BODIES]
        + [(model, "serialization") for model in views.RESPONSE_BODIES],
        ref_template=_REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Paddock gateway",
            "version": "v1",
            "description": "The subset of the Claude Managed Agents API that Paddock implements "
            "(docs/gateway.md). Send `Authorization: Bearer <key or Kubernetes token>` or "
            "`x-api-key: <key>`; a Kubernetes identity names its namespace in "
            "`x-paddock-namespace`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {**_paths(), **_file_paths(), **_vault_paths(), **_console_paths()},
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
