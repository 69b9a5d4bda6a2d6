"""The OpenAPI 3.1 document of what the gateway implements, served at `/v1/openapi.json`.

Request bodies are generated from the models in `params.py` (the ones the gateway
validates with); response shapes are written here, loosely: required fields and their
types, as the official SDK reads them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from paddock.gateway.params import REQUEST_BODIES

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _object(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **optional},
    }


_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_TIMESTAMP = {"type": "string"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECTS = {"type": "array", "items": {"type": "object"}}

RESPONSES: dict[str, Any] = {
    "Error": _object(
        {
            "type": {"const": "error"},
            "error": _object({"type": _STRING, "message": _STRING}, details={"type": "object"}),
            "request_id": _STRING,
        }
    ),
    "Agent": _object(
        {
            "type": {"const": "agent"},
            "id": _STRING,
            "version": {"type": "integer"},
            "name": _STRING,
            "model": _object({"id": _STRING}),
            "tools": _OBJECTS,
            "mcp_servers": _OBJECTS,
            "skills": _OBJECTS,
            "metadata": _STRING_MAP,
            "execution_identity": {"type": "object"},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
        },
        description=_NULLABLE_STRING,
        system=_NULLABLE_STRING,
        archived_at=_NULLABLE_STRING,
    ),
    "Environment": _object(
        {
            "type": {"const": "environment"},
            "id": _STRING,
            "name": _STRING,
            "config": {"type": "object"},
            "metadata": _STRING_MAP,
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
        },
        description=_NULLABLE_STRING,
        scope=_STRING,
        archived_at=_NULLABLE_STRING,
    ),
    "Session": _object(
        {
            "type": {"const": "session"},
            "id": _STRING,
            "status": {"enum": ["idle", "running", "rescheduling", "terminated"]},
            "agent": {"type": "object"},
            "environment_id": _NULLABLE_STRING,
            "resources": _OBJECTS,
            "vault_ids": {"type": "array", "items": _STRING},
            "metadata": _STRING_MAP,
            "outcome_evaluations": _OBJECTS,
            "stats": {"type": "object"},
            "usage": {"type": "object"},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
        },
        title=_NULLABLE_STRING,
        budget={"type": ["object", "null"]},
        archived_at=_NULLABLE_STRING,
    ),
    "Event": _object(
        {"type": _STRING, "id": _STRING},
        processed_at=_NULLABLE_STRING,
    ),
    "Deleted": _object({"id": _STRING, "type": _STRING}),
}


def _page(item: str, *, prev: bool = False) -> dict[str, Any]:
    schema = _object({"data": {"type": "array", "items": _ref(item)}}, next_page=_NULLABLE_STRING)
    if prev:
        schema["properties"]["prev_page"] = _NULLABLE_STRING
    return schema


RESPONSES.update(
    {
        "AgentPage": _page("Agent"),
        "EnvironmentPage": _page("Environment"),
        "SessionPage": _page("Session", prev=True),
        "EventPage": _page("Event"),
        "SentEvents": _object({"data": {"type": "array", "items": _ref("Event")}}),
    }
)


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
    result: str,
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    error = {
        "description": "Error envelope",
        "content": {"application/json": {"schema": _ref("Error")}},
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
    return operation


def _paths() -> dict[str, Any]:
    agent, environment, session = _path("agent_id"), _path("environment_id"), _path("session_id")
    return {
        "/v1/agents": {
            "post": _operation("createAgent", "Create an agent", "Agent", body="AgentCreateParams"),
            "get": _operation(
                "listAgents",
                "List agents, newest first",
                "AgentPage",
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
                "Get an agent (`version` must be the current one)",
                "Agent",
                parameters=[agent, _query("version", {"type": "integer", "minimum": 1})],
            ),
            "post": _operation(
                "updateAgent",
                "Update an agent; `version` guards against concurrent updates (409)",
                "Agent",
                parameters=[agent],
                body="AgentUpdateParams",
            ),
        },
        "/v1/agents/{agent_id}/archive": {
            "post": _operation("archiveAgent", "Archive an agent", "Agent", parameters=[agent]),
        },
        "/v1/environments": {
            "post": _operation(
                "createEnvironment",
                "Create an environment",
                "Environment",
                body="EnvironmentCreateParams",
            ),
            "get": _operation(
                "listEnvironments",
                "List environments, newest first",
                "EnvironmentPage",
                parameters=[_LIMIT, _PAGE, _ARCHIVED],
            ),
        },
        "/v1/environments/{environment_id}": {
            "get": _operation(
                "getEnvironment", "Get an environment", "Environment", parameters=[environment]
            ),
            "post": _operation(
                "updateEnvironment",
                "Update an environment",
                "Environment",
                parameters=[environment],
                body="EnvironmentUpdateParams",
            ),
            "delete": _operation(
                "deleteEnvironment", "Delete an environment", "Deleted", parameters=[environment]
            ),
        },
        "/v1/environments/{environment_id}/archive": {
            "post": _operation(
                "archiveEnvironment",
                "Archive an environment",
                "Environment",
                parameters=[environment],
            ),
        },
        "/v1/sessions": {
            "post": _operation(
                "createSession", "Create a session", "Session", body="SessionCreateParams"
            ),
            "get": _operation(
                "listSessions",
                "List sessions",
                "SessionPage",
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
                            "items": {"enum": ["idle", "running", "rescheduling", "terminated"]},
                        },
                    ),
                    *(_query(f"created_at[{op}]", _STRING) for op in ("gt", "gte", "lt", "lte")),
                ],
            ),
        },
        "/v1/sessions/{session_id}": {
            "get": _operation("getSession", "Get a session", "Session", parameters=[session]),
            "post": _operation(
                "updateSession",
                "Update a session's title, metadata or budget",
                "Session",
                parameters=[session],
                body="SessionUpdateParams",
            ),
            "delete": _operation(
                "deleteSession", "Delete a session and its events", "Deleted", parameters=[session]
            ),
        },
        "/v1/sessions/{session_id}/archive": {
            "post": _operation(
                "archiveSession",
                "Archive a session (it is terminated)",
                "Session",
                parameters=[session],
            ),
        },
        "/v1/sessions/{session_id}/events": {
            "post": _operation(
                "sendEvents",
                "Send user events",
                "SentEvents",
                parameters=[session],
                body="SendEventsParams",
            ),
            "get": _operation(
                "listEvents",
                "List a session's events",
                "EventPage",
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
                "",
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


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once)."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in REQUEST_BODIES], ref_template=_REF
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Paddock gateway",
            "version": "v1",
            "description": "The subset of the Claude Managed Agents API that Paddock implements "
            "(docs/gateway.md). Send `Authorization: Bearer <key>` or `x-api-key: <key>`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": _paths(),
        "components": {
            "schemas": {**definitions.get("$defs", {}), **RESPONSES},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
