"""Malformed and forbidden requests get the right status and the Managed Agents error
envelope, with a `request-id` header and a JSON content type; never a 5xx. Errors inside a
session reach the client as `session.error` events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from paddock.eventlog import EventLog, SessionStatusTerminatedEvent
from paddock.harness import RetryPolicy
from paddock.testing.fakemodel import Reply, ToolUse, turns
from paddock.testing.proxy import ProxyProcess, Secrets

from .stack import Stack, Tenant

pytestmark = pytest.mark.timeout(60)

UNKNOWN_SESSION = "sesn_0000000000000000000000"


def envelope(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    return body


async def make_session(stack: Stack, **agent: Any) -> str:
    async with stack.http() as http:
        environment = await http.post("/v1/environments", json={"name": "errors-env"})
        created = await http.post(
            "/v1/agents", json={"name": "errors", "model": "claude-sonnet-4-6", **agent}
        )
        session = await http.post(
            "/v1/sessions",
            json={"agent": created.json()["id"], "environment_id": environment.json()["id"]},
        )
    assert session.status_code == 200, session.text
    return str(session.json()["id"])


async def test_authentication(stack: Stack) -> None:
    async with stack.http(auth=False) as http:
        envelope(await http.get("/v1/agents"), 401, "authentication_error")
        envelope(
            await http.get("/v1/agents", headers={"x-api-key": "sk-wrong"}),
            401,
            "authentication_error",
        )
        envelope(
            await http.get("/v1/agents", headers={"Authorization": "Basic abc"}),
            401,
            "authentication_error",
        )
        for headers in (
            {"Authorization": f"Bearer {stack.a.key}"},
            {"x-api-key": stack.a.key, "anthropic-version": "2023-06-01"},
            {"x-api-key": stack.a.key, "anthropic-beta": "foo, managed-agents-2026-04-01"},
        ):
            response = await http.get("/v1/agents", headers=headers)
            assert response.status_code == 200
            assert response.headers["request-id"].startswith("req_")
        # The document is public; everything else needs a key.
        assert (await http.get("/v1/openapi.json")).status_code == 200


async def test_a_new_key_works_within_a_second(stack: Stack) -> None:
    tenant = stack.add_key(stack.b.namespace)
    async with stack.http(tenant) as http:
        assert (await http.get("/v1/agents")).status_code == 200


async def test_sdk_errors_carry_the_envelope(stack: Stack) -> None:
    client = stack.client()
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client.beta.agents.retrieve("agent_doesnotexist")
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert caught.value.request_id.startswith("req_")
    with pytest.raises(anthropic.AuthenticationError):
        await stack.client(Tenant(stack.a.namespace, "sk-nope")).beta.agents.list()


async def test_bad_bodies(stack: Stack) -> None:
    async with stack.http() as http:
        envelope(
            await http.post(
                "/v1/agents", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
            "invalid_request_error",
        )
        envelope(await http.post("/v1/agents", json=[1, 2]), 400, "invalid_request_error")
        body = envelope(
            await http.post("/v1/agents", json={"name": "x"}), 400, "invalid_request_error"
        )
        assert "model" in body["error"]["message"]
        body = envelope(
            await http.post(
                "/v1/agents", json={"name": "x", "model": "claude-sonnet-4-6", "colour": "red"}
            ),
            400,
            "invalid_request_error",
        )
        assert "colour" in body["error"]["message"]
        # A model id that is not Claude's is refused when the agent is made, not at its
        # session's first model call.
        body = envelope(
            await http.post("/v1/agents", json={"name": "x", "model": "gpt-4o"}),
            400,
            "invalid_request_error",
        )
        assert "model" in body["error"]["message"]
        deep: Any = []
        for _ in range(200):
            deep = [deep]
        envelope(
            await http.post(
                "/v1/agents", json={"name": "x", "model": "claude-sonnet-4-6", "metadata": deep}
            ),
            400,
            "invalid_request_error",
        )
        envelope(
            await http.post("/v1/agents", content=b"{" + b" " * (2 * 1024 * 1024) + b"}"),
            413,
            "request_too_large",
        )
        # A body that says it is gzip and is not: the client's mistake, not a server error.
        envelope(
            await http.post(
                "/v1/agents",
                content=b'{"name": "x", "model": "claude-sonnet-4-6"}',
                headers={"content-type": "application/json", "content-encoding": "gzip"},
            ),
            400,
            "invalid_request_error",
        )


async def test_unsupported_features_are_refused_by_name(stack: Stack) -> None:
    async with stack.http() as http:
        for path, body, word in [
            ("/v1/environments", {"name": "sh", "config": {"type": "self_hosted"}}, "self_hosted"),
            (
                "/v1/agents",
                {
                    "name": "a",
                    "model": "claude-sonnet-4-6",
                    "skills": [{"type": "anthropic", "skill_id": "xlsx"}],
                },
                "skills",
            ),
            (
                "/v1/agents",
                {"name": "a", "model": {"id": "claude-sonnet-4-6", "speed": "fast"}},
                "speed",
            ),
            (
                "/v1/agents",
                {
                    "name": "a",
                    "model": "claude-sonnet-4-6",
                    "tools": [
                        {
                            "type": "agent_toolset_20260401",
                            "default_config": {"permission_policy": {"type": "auto"}},
                        }
                    ],
                },
                "auto",
            ),
        ]:
            response = await http.post(path, json=body)
            message = envelope(response, 400, "invalid_request_error")["error"]["message"]
            assert word in message
            assert "not supported" in message


async def test_unknown_routes_methods_and_ids(stack: Stack) -> None:
    async with stack.http() as http:
        envelope(await http.get("/v1/nothing"), 404, "not_found_error")
        envelope(await http.put("/v1/agents"), 405, "invalid_request_error")
        envelope(await http.get("/v1/agents/agent_0123456789"), 404, "not_found_error")
        envelope(await http.get("/v1/agents/not_an_id!"), 404, "not_found_error")
        envelope(await http.get("/v1/environments/env_missing"), 404, "not_found_error")
        envelope(await http.get(f"/v1/sessions/{UNKNOWN_SESSION}"), 404, "not_found_error")
        envelope(await http.get(f"/v1/sessions/{UNKNOWN_SESSION}/events"), 404, "not_found_error")
        envelope(
            await http.get(f"/v1/sessions/{UNKNOWN_SESSION}/events/stream"), 404, "not_found_error"
        )
        envelope(
            await http.post(
                f"/v1/sessions/{UNKNOWN_SESSION}/events",
                json={"events": [{"type": "user.interrupt"}]},
            ),
            404,
            "not_found_error",
        )
        envelope(
            await http.post(
                "/v1/sessions", json={"agent": "agent_0123456789", "environment_id": "env_x"}
            ),
            404,
            "not_found_error",
        )


async def test_events_are_validated(stack: Stack) -> None:
    session = await make_session(stack)
    path = f"/v1/sessions/{session}/events"
    async with stack.http() as http:
        body = envelope(
            await http.post(path, json={"events": [{"type": "user.shout", "content": []}]}),
            400,
            "invalid_request_error",
        )
        assert "user.shout" in body["error"]["message"]
        envelope(await http.post(path, json={"events": []}), 400, "invalid_request_error")
        envelope(
            await http.post(path, json={"events": [{"type": "agent.message", "content": []}]}),
            400,
            "invalid_request_error",
        )
        # Nothing waits for a confirmation.
        body = envelope(
            await http.post(
                path,
                json={
                    "events": [
                        {
                            "type": "user.tool_confirmation",
                            "tool_use_id": "sevt_1",
                            "result": "allow",
                        }
                    ]
                },
            ),
            400,
            "invalid_request_error",
        )
        assert "sevt_1" in body["error"]["message"]
        envelope(await http.get(path, params={"page": "garbage"}), 400, "invalid_request_error")
        envelope(await http.get(path, params={"limit": "0"}), 400, "invalid_request_error")
        envelope(await http.get(path, params={"order": "sideways"}), 400, "invalid_request_error")
        envelope(
            await http.get(f"{path}/stream", params={"event_deltas[]": "agent.tool_use"}),
            400,
            "invalid_request_error",
        )
        envelope(
            await http.get(f"{path}/stream", headers={"Last-Event-ID": "sevt_bogus"}),
            400,
            "invalid_request_error",
        )
        # Nothing was stored by the refused requests.
        assert (await http.get(path)).json()["data"] == []


async def test_confirmations_must_name_the_pending_call(stack: Stack) -> None:
    session = await make_session(
        stack,
        tools=[
            {
                "type": "agent_toolset_20260401",
                "default_config": {"permission_policy": {"type": "always_ask"}},
            }
        ],
    )
    agent_id = (await stack.client().beta.sessions.retrieve(session)).agent.id
    stack.start_worker(agent_id, turns(Reply([ToolUse("bash", {"command": "true"})])))
    client = stack.client()
    async with await client.beta.sessions.events.stream(session) as stream:
        await client.beta.sessions.events.send(
            session, events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]
        )
        async for event in stream:
            if event.type == "session.status_idle":
                break
    (pending,) = event.stop_reason.event_ids
    async with stack.http() as http:
        wrong = {
            "type": "user.custom_tool_result",
            "custom_tool_use_id": "sevt_0000000000000000xxxx",
        }
        envelope(
            await http.post(f"/v1/sessions/{session}/events", json={"events": [wrong]}),
            400,
            "invalid_request_error",
        )
        right = {
            "type": "user.tool_confirmation",
            "tool_use_id": pending,
            "result": "deny",
            "deny_message": "no",
        }
        response = await http.post(f"/v1/sessions/{session}/events", json={"events": [right]})
        assert response.status_code == 200, response.text
        assert response.json()["data"][0]["deny_message"] == "no"


async def test_another_namespaces_session_is_not_found(stack: Stack) -> None:
    session = await make_session(stack)
    async with stack.http(stack.b) as other:
        for response in (
            await other.get(f"/v1/sessions/{session}"),
            await other.get(f"/v1/sessions/{session}/events"),
            await other.get(f"/v1/sessions/{session}/events/stream"),
            await other.post(f"/v1/sessions/{session}", json={"title": "mine"}),
            await other.delete(f"/v1/sessions/{session}"),
            await other.post(
                f"/v1/sessions/{session}/events", json={"events": [{"type": "user.interrupt"}]}
            ),
        ):
            envelope(response, 404, "not_found_error")
        assert (await other.get("/v1/sessions")).json()["data"] == []
    async with stack.http() as mine:
        assert (await mine.get(f"/v1/sessions/{session}")).status_code == 200


async def test_a_terminated_session_refuses_events_with_409(stack: Stack) -> None:
    session = await make_session(stack)
    # What the operator does when a session is cancelled.
    await EventLog(stack.redis, stack.a.namespace).send(session, [SessionStatusTerminatedEvent()])
    async with stack.http() as http:
        response = await http.post(
            f"/v1/sessions/{session}/events",
            json={
                "events": [{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]
            },
        )
        envelope(response, 409, "invalid_request_error")
        assert (await http.get(f"/v1/sessions/{session}")).json()["status"] == "terminated"


async def test_version_conflicts_are_not_retried(stack: Stack) -> None:
    client = stack.client()
    agent = await client.beta.agents.create(name="versioned", model="claude-sonnet-4-6")
    async with stack.http() as http:
        response = await http.post(f"/v1/agents/{agent.id}", json={"version": 7, "system": "x"})
    envelope(response, 409, "invalid_request_error")
    assert response.headers["x-should-retry"] == "false"
    with pytest.raises(anthropic.ConflictError):
        await stack.client(max_retries=2).beta.agents.update(agent.id, version=3, system="y")


async def test_a_proxy_refusing_the_sandbox_egress_ends_the_turn_the_client_sees(
    stack: Stack, tmp_path: Path
) -> None:
    """Issue 16's hang: an Environment created after its Agent, and a proxy whose config does
    not name it (yet). The client's stream shows each refused attempt as a `session.error`,
    then the turn's end with `retries_exhausted`, within seconds; the proxy counted a few
    token requests, not thousands."""
    proxy = ProxyProcess(
        tmp_path, Secrets(tmp_path / "secrets"), environments={"default": {"mode": "none"}}
    ).start()
    try:
        client = stack.client()
        agent = await client.beta.agents.create(
            name="late-env",
            model="claude-sonnet-4-6",
            tools=[{"type": "agent_toolset_20260401"}],
        )
        environment = await client.beta.environments.create(name="created-after")
        session = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
        stack.start_worker(
            agent.id,
            turns(Reply([ToolUse("bash", {"command": "echo hi"})])),
            proxy_admin_url=proxy.admin_url,
            proxy_egress_url=f"http://127.0.0.1:{proxy.egress_port}",
            bind_retry=RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0, jitter=0.5),
        )
        seen: list[Any] = []
        async with await client.beta.sessions.events.stream(session.id) as stream:
            began = time.monotonic()
            await client.beta.sessions.events.send(
                session.id,
                events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
            )
            async for event in stream:
                seen.append(event)
                if event.type == "session.status_idle":
                    break
        elapsed = time.monotonic() - began
        async with httpx.AsyncClient() as http:
            counters = (await http.get(f"{proxy.admin_url}/metrics")).text
    finally:
        proxy.stop()
    errors = [e.error for e in seen if e.type == "session.error"]
    assert [(e.type, e.retry_status.type) for e in errors] == [
        ("unknown_error", "retrying"),
        ("unknown_error", "retrying"),
        ("unknown_error", "exhausted"),
    ]
    assert "is not configured on this proxy" in errors[-1].message
    (result,) = [e for e in seen if e.type == "agent.tool_result"]
    assert result.is_error is True
    assert seen[-1].stop_reason.type == "retries_exhausted"
    assert elapsed < 10
    assert 'paddock_proxy_requests_total{listener="admin",decision="deny"} 3' in counters
    retrieved = await client.beta.sessions.retrieve(session.id)
    assert retrieved.status == "idle"
