"""The official SDK (anthropic 2.11.0, unpatched) against a running gateway drives a real
session: scripted model, real harness worker, real sandbox, real apiserver and Redis."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from paddock.testing.fakemodel import Reply, Text, ToolUse, turns

from .stack import Stack

pytestmark = pytest.mark.timeout(60)


def test_the_sdk_is_the_pinned_one() -> None:
    assert anthropic.__version__ == "2.11.0"


async def _until_idle(stream: Any, seen: list[Any]) -> Any:
    async for event in stream:
        seen.append(event)
        if event.type == "session.status_idle":
            return event
    raise AssertionError(f"stream ended after {[e.type for e in seen]}")


async def test_sdk_runs_a_session_to_end_turn_through_a_tool_confirmation(
    stack: Stack, sandbox
) -> None:
    client = stack.client()
    environment = await client.beta.environments.create(
        name="quickstart-env", config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    assert environment.id.startswith("env_")
    assert environment.config.networking.type == "unrestricted"

    agent = await client.beta.agents.create(
        name="Coding Assistant",
        model="claude-sonnet-4-6",
        system="You are a helpful coding agent.",
        tools=[
            {
                "type": "agent_toolset_20260401",
                "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}],
            }
        ],
    )
    assert agent.id.startswith("agent_")
    assert agent.version == 1
    assert agent.model.id == "claude-sonnet-4-6"
    toolset = agent.tools[0]
    assert toolset.type == "agent_toolset_20260401"
    assert toolset.default_config.permission_policy.type == "always_allow"
    assert [(c.name, c.permission_policy.type) for c in toolset.configs] == [("bash", "always_ask")]
    assert (await client.beta.agents.retrieve(agent.id)).name == "Coding Assistant"
    assert agent.id in [a.id async for a in client.beta.agents.list()]

    model = stack.start_worker(
        agent.id,
        turns(
            Reply(
                [
                    Text("Let me check."),
                    ToolUse("bash", {"command": "echo conformant > out.txt && cat out.txt"}),
                ]
            ),
            lambda r: Reply([Text(f"The file says {r.tool_result_text().splitlines()[0]}.")]),
        ),
    )
    session = await client.beta.sessions.create(
        agent=agent.id, environment_id=environment.id, title="Conformance"
    )
    assert session.id.startswith("sesn_")
    assert session.status == "idle"
    assert session.agent.id == agent.id
    assert session.environment_id == environment.id

    streamed: list[Any] = []
    async with await client.beta.sessions.events.stream(session.id) as stream:
        sent = await client.beta.sessions.events.send(
            session.id,
            events=[
                {"type": "user.message", "content": [{"type": "text", "text": "Write a file"}]}
            ],
        )
        assert sent.data[0].type == "user.message"
        assert sent.data[0].id.startswith("sevt_")
        idle = await _until_idle(stream, streamed)
        assert idle.stop_reason.type == "requires_action"
        (tool_use,) = [e for e in streamed if e.type == "agent.tool_use"]
        assert idle.stop_reason.event_ids == [tool_use.id]
        assert tool_use.evaluated_permission == "ask"
        assert not (sandbox.workdir / "out.txt").exists()

        await client.beta.sessions.events.send(
            session.id,
            events=[
                {"type": "user.tool_confirmation", "tool_use_id": tool_use.id, "result": "allow"}
            ],
        )
        idle = await _until_idle(stream, streamed)
        assert idle.stop_reason.type == "end_turn"

    assert (sandbox.workdir / "out.txt").read_text() == "conformant\n"
    messages = [e for e in streamed if e.type == "agent.message"]
    assert messages[-1].content[0].text == "The file says conformant."
    (result,) = [e for e in streamed if e.type == "agent.tool_result"]
    assert result.tool_use_id == tool_use.id
    assert not result.is_error

    # The stream was open before the message was sent: it saw every event, in log order.
    listed = [e async for e in client.beta.sessions.events.list(session.id)]
    assert [e.id for e in listed] == [e.id for e in streamed]
    assert [e.type for e in listed][:2] == ["user.message", "session.status_running"]
    only = await client.beta.sessions.events.list(
        session.id, types=["session.status_idle"], order="desc", limit=1
    )
    assert [e.id for e in only.data] == [idle.id]

    retrieved = await client.beta.sessions.retrieve(session.id)
    assert retrieved.status == "idle"
    assert retrieved.usage.input_tokens > 0
    assert retrieved.usage.output_tokens > 0
    assert retrieved.title == "Conformance"
    assert session.id in [s.id async for s in client.beta.sessions.list()]
    assert len(model.requests) == 2
