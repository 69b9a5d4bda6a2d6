"""Every kind of answer the gateway gives, taken from a real run (real apiserver, Redis,
harness worker and sandbox), validated strictly against the official SDK's own response
types: each body parses with `strict=True`, and every field the SDK knows reads back as
sent. A field the SDK does not know must be one of Paddock's documented extensions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from anthropic.pagination import AsyncBidirectionalPageCursor, AsyncPageCursor
from anthropic.types import BetaErrorResponse
from anthropic.types.beta import (
    BetaEnvironment,
    BetaEnvironmentDeleteResponse,
    BetaManagedAgentsAgent,
    BetaManagedAgentsDeletedSession,
    BetaManagedAgentsSession,
)
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSendSessionEvents,
    BetaManagedAgentsSessionEvent,
    BetaManagedAgentsStreamSessionEvents,
)
from pydantic import BaseModel, TypeAdapter

from paddock.testing.fakemodel import Reply, Text, ToolUse, turns

from .stack import Stack
from .test_resources import MCP_AGENT

pytestmark = pytest.mark.timeout(90)

EXTENSIONS = {("BetaManagedAgentsSession", "status_message")}
"""(SDK type, field) pairs Paddock adds; docs/gateway.md describes them."""


def _same(sent: Any, parsed: Any, where: str, unknown: set[tuple[str, str]]) -> None:
    """``parsed`` (the SDK's reading of ``sent``) holds exactly what was sent."""
    if isinstance(parsed, BaseModel):
        assert isinstance(sent, dict), where
        fields = type(parsed).model_fields
        unknown.update((type(parsed).__name__, name) for name in sent if name not in fields)
        for name in fields:
            if name in sent:
                _same(sent[name], getattr(parsed, name), f"{where}.{name}", unknown)
            else:
                assert name not in parsed.model_fields_set, f"{where}.{name}"
    elif isinstance(parsed, list):
        assert isinstance(sent, list), where
        assert len(sent) == len(parsed), where
        for index, (one, other) in enumerate(zip(sent, parsed, strict=True)):
            _same(one, other, f"{where}[{index}]", unknown)
    elif isinstance(parsed, dict):
        assert isinstance(sent, dict), where
        assert sent.keys() == parsed.keys(), where
        for key in sent:
            _same(sent[key], parsed[key], f"{where}.{key}", unknown)
    elif isinstance(parsed, datetime):
        assert datetime.fromisoformat(sent) == parsed, where
    else:
        assert sent == parsed, where
        assert type(sent) in (type(parsed), int), where  # JSON has no 1.0: an int is a float


class Checker:
    """Validates bodies as the SDK types they are meant to be, and counts them by kind."""

    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.unknown: set[tuple[str, str]] = set()

    def check(self, kind: str, sdk_type: Any, body: str | bytes) -> Any:
        adapter: TypeAdapter[Any] = TypeAdapter(sdk_type)
        parsed = adapter.validate_json(body, strict=True)
        _same(json.loads(body), parsed, kind, self.unknown)
        self.kinds.add(kind)
        return parsed

    def response(
        self, kind: str, sdk_type: Any, response: httpx.Response, status: int = 200
    ) -> Any:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        return self.check(kind, sdk_type, response.content)


async def _sse_frames(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each server-sent event; comments (pings) skipped."""
    event, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            yield event, data
            event, data = "", ""


async def test_every_answer_validates_as_the_sdk_types(stack: Stack) -> None:
    c = Checker()
    Agent, Environment, Session = (
        BetaManagedAgentsAgent,
        BetaEnvironment,
        BetaManagedAgentsSession,
    )
    async with stack.http() as http:
        # Environments: create, retrieve, list, update, archive, delete.
        environment = c.response(
            "environment.create",
            Environment,
            await http.post(
                "/v1/environments",
                json={
                    "name": "sdk-types",
                    "description": "typed",
                    "metadata": {"k": "v"},
                    "config": {
                        "type": "cloud",
                        "networking": {
                            "type": "limited",
                            "allowed_hosts": ["pypi.org"],
                            "allow_package_managers": True,
                        },
                        "packages": {"pip": ["requests"]},
                    },
                },
            ),
        )
        c.response(
            "environment.retrieve",
            Environment,
            await http.get(f"/v1/environments/{environment.id}"),
        )
        c.response(
            "environment.update",
            Environment,
            await http.post(
                f"/v1/environments/{environment.id}",
                json={"config": {"type": "cloud", "networking": {"type": "unrestricted"}}},
            ),
        )
        doomed = c.response(
            "environment.create",
            Environment,
            await http.post("/v1/environments", json={"name": "sdk-types-doomed"}),
        )
        c.response(
            "environment.list",
            AsyncPageCursor[Environment],
            await http.get("/v1/environments", params={"limit": 1}),
        )

        # Agents: create (every kind of tool), retrieve, list, update, archive.
        agent = c.response("agent.create", Agent, await http.post("/v1/agents", json=MCP_AGENT))
        c.response("agent.retrieve", Agent, await http.get(f"/v1/agents/{agent.id}"))
        c.response(
            "agent.update",
            Agent,
            await http.post(f"/v1/agents/{agent.id}", json={"version": 1, "system": "Be brief."}),
        )
        worker_agent = c.response(
            "agent.create",
            Agent,
            await http.post(
                "/v1/agents",
                json={
                    "name": "sdk-types-worker",
                    "model": "claude-sonnet-4-6",
                    "tools": [{"type": "agent_toolset_20260401"}],
                },
            ),
        )
        c.response("agent.list", AsyncPageCursor[Agent], await http.get("/v1/agents"))

        # Sessions: create with a repository and a budget, retrieve, update, list.
        session = c.response(
            "session.create",
            Session,
            await http.post(
                "/v1/sessions",
                json={
                    "agent": worker_agent.id,
                    "environment_id": environment.id,
                    "title": "typed",
                    "metadata": {"k": "v"},
                    "resources": [
                        {
                            "type": "github_repository",
                            "url": "https://github.com/example/repo.git",
                            "checkout": {"type": "branch", "name": "main"},
                        }
                    ],
                    "budget": {
                        "type": "limit",
                        "max_list_cost": {"amount": "500", "currency": "USD"},
                    },
                },
            ),
        )
        c.response("session.retrieve", Session, await http.get(f"/v1/sessions/{session.id}"))
        c.response(
            "session.update",
            Session,
            await http.post(f"/v1/sessions/{session.id}", json={"title": "typed again"}),
        )

        # Events: a real turn (model, tool, sandbox), streamed, sent and listed.
        stack.start_worker(
            worker_agent.id,
            turns(
                Reply([Text("Checking."), ToolUse("bash", {"command": "echo typed"})]),
                Reply([Text("It says typed.")]),
            ),
        )
        streamed: list[str] = []
        async with http.stream("GET", f"/v1/sessions/{session.id}/events/stream") as stream:
            assert stream.status_code == 200
            c.response(
                "events.send",
                BetaManagedAgentsSendSessionEvents,
                await http.post(
                    f"/v1/sessions/{session.id}/events",
                    json={
                        "events": [
                            {"type": "user.message", "content": [{"type": "text", "text": "Go"}]}
                        ]
                    },
                ),
            )
            async for event, data in _sse_frames(stream):
                parsed = c.check("events.stream", BetaManagedAgentsStreamSessionEvents, data)
                assert parsed.type == event
                streamed.append(event)
                if event == "session.status_idle":
                    break
        assert {"agent.message", "agent.tool_use", "agent.tool_result"} <= set(streamed)
        listed = c.response(
            "events.list",
            AsyncPageCursor[BetaManagedAgentsSessionEvent],
            await http.get(f"/v1/sessions/{session.id}/events"),
        )
        assert [e.type for e in listed.data] == streamed
        c.response("session.retrieve", Session, await http.get(f"/v1/sessions/{session.id}"))
        c.response(
            "session.list", AsyncBidirectionalPageCursor[Session], await http.get("/v1/sessions")
        )

        # What a session shows once its Agent and Environment are gone.
        other = c.response(
            "session.create",
            Session,
            await http.post("/v1/sessions", json={"agent": agent.id, "environment_id": doomed.id}),
        )
        c.response(
            "environment.delete",
            BetaEnvironmentDeleteResponse,
            await http.delete(f"/v1/environments/{doomed.id}"),
        )
        with stack.kube() as kube:
            name = stack.agent_resource(agent.id)["metadata"]["name"]
            namespace = stack.a.namespace
            kube.delete(
                f"/apis/paddock.dev/v1alpha1/namespaces/{namespace}/agents/{name}"
            ).raise_for_status()
        orphan = c.response("session.retrieve", Session, await http.get(f"/v1/sessions/{other.id}"))
        assert orphan.agent.id == ""
        assert orphan.environment_id == ""

        # Archive and delete.
        c.response("agent.archive", Agent, await http.post(f"/v1/agents/{worker_agent.id}/archive"))
        c.response(
            "environment.archive",
            Environment,
            await http.post(f"/v1/environments/{environment.id}/archive"),
        )
        c.response(
            "session.archive", Session, await http.post(f"/v1/sessions/{session.id}/archive")
        )
        c.response(
            "session.delete",
            BetaManagedAgentsDeletedSession,
            await http.delete(f"/v1/sessions/{other.id}"),
        )

        # Error envelopes, one of each status the gateway answers with a client can cause.
        async with stack.http(auth=False) as anonymous:
            c.response("error.401", BetaErrorResponse, await anonymous.get("/v1/agents"), 401)
        c.response(
            "error.400", BetaErrorResponse, await http.post("/v1/agents", json={"name": 1}), 400
        )
        c.response("error.404", BetaErrorResponse, await http.get("/v1/agents/agent_missing"), 404)
        c.response("error.404", BetaErrorResponse, await http.get("/v1/nothing"), 404)
        c.response("error.405", BetaErrorResponse, await http.put("/v1/agents"), 405)
        c.response(
            "error.409",
            BetaErrorResponse,
            await http.post(f"/v1/agents/{worker_agent.id}", json={"system": "late"}),
            409,
        )
        too_large = await http.post("/v1/agents", content=b"{" + b" " * (1024 * 1024) + b"}")
        # 413 is `request_too_large` (reference §1.4, as the API sends it), a type the SDK's
        # error union lacks: everything else of the envelope must still be the SDK's shape.
        assert too_large.status_code == 413
        envelope = too_large.json()
        assert envelope["error"]["type"] == "request_too_large"
        envelope["error"]["type"] = "invalid_request_error"
        c.check("error.413", BetaErrorResponse, json.dumps(envelope))

    assert c.unknown <= EXTENSIONS, c.unknown
    assert c.kinds == {
        *(f"environment.{verb}" for verb in ("create", "retrieve", "update", "list")),
        *(f"environment.{verb}" for verb in ("archive", "delete")),
        *(f"agent.{verb}" for verb in ("create", "retrieve", "update", "list", "archive")),
        *(f"session.{verb}" for verb in ("create", "retrieve", "update", "list", "archive")),
        "session.delete",
        *(f"events.{verb}" for verb in ("send", "list", "stream")),
        *(f"error.{status}" for status in (400, 401, 404, 405, 409, 413)),
    }
