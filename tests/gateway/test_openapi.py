"""The served OpenAPI document is generated from the models the gateway validates and
answers with, and describes every route it serves (the fuzzing in test_fuzz.py checks
real answers against it)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from paddock.gateway import (
    agents,
    console,
    environments,
    events,
    files,
    sessionresources,
    sessions,
    vaults,
    views,
)
from paddock.gateway.openapi import document
from paddock.gateway.params import REQUEST_BODIES

_PREFIX = "#/components/schemas/"


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if "$ref" in value else []
        return found + [ref for child in value.values() for ref in _refs(child)]
    if isinstance(value, list):
        return [ref for child in value for ref in _refs(child)]
    return []


def test_every_route_is_described() -> None:
    served = {
        (route.path, route.method.lower())
        for module in (
            agents,
            environments,
            sessions,
            events,
            files,
            sessionresources,
            vaults,
            console,
        )
        for route in module.routes
        # The harness's routes and the console's static files are no part of the API.
        if isinstance(route, web.RouteDef)
        and not route.path.startswith((files.INTERNAL_PREFIX, "/console"))
    }
    described = {
        (path, method) for path, operations in document()["paths"].items() for method in operations
    }
    assert described == served


def test_bodies_reference_the_models() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith(_PREFIX), ref
        assert ref.removeprefix(_PREFIX) in schemas, ref
    answers, bodies = set(), set()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("4XX", "5XX"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": _PREFIX + "ErrorResponse"}
            content = responses["200"]["content"]
            if path.endswith("/stream"):
                assert list(content) == ["text/event-stream"]
                continue
            if path.endswith("/content"):
                assert list(content) == ["*/*"]
                continue
            if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
                answers.add(content["application/json"]["schema"]["$ref"].removeprefix(_PREFIX))
                continue
            answers.add(content["application/json"]["schema"]["$ref"].removeprefix(_PREFIX))
            if "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                bodies.add(schema["$ref"].removeprefix(_PREFIX))
            else:
                assert method in ("get", "delete") or path.endswith(
                    ("/archive", "/mcp_oauth_validate")
                ), (path, method)
    assert answers | {"ErrorResponse"} == {model.__name__ for model in views.RESPONSE_BODIES}
    assert bodies == {model.__name__ for model in REQUEST_BODIES}


def test_response_schemas_say_which_fields_are_always_there() -> None:
    schemas = document()["components"]["schemas"]
    session = schemas["Session"]
    # Nullable fields are still always sent; `usage.list_cost` only once priced.
    assert {"title", "archived_at", "budget", "environment_id"} <= set(session["required"])
    assert "list_cost" not in schemas["SessionUsage"]["required"]
    assert "details" not in schemas["ErrorObject"]["required"]
    assert schemas["Agent"]["properties"]["created_at"]["format"] == "date-time"
