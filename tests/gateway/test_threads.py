"""Multi-agent threads through the official SDK: a coordinator Agent's `multiagent` roster,
the thread events on the session's stream, and `sessions.threads` (list, retrieve, archive,
events, stream)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from paddock.eventlog import EventLog, session_of_thread
from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse

from .stack import Stack, turn

pytestmark = pytest.mark.timeout(90)


def script(request: ModelRequest) -> Reply:
    """The coordinator lists its agents, asks them all at once and joins their replies;
    each runs one command in the sandbox and reports its output."""
    role = request.system_text
    if role == "coordinator":
        if request.assistant_turns == 0:
            return Reply([ToolUse("list_agents", {})])
        if request.assistant_turns == 1:
            listed = json.loads(request.tool_result_text())["agents"]
            return Reply(
                [
                    ToolUse("send_to_agent", {"agent": agent["name"], "message": "go"})
                    for agent in listed
                ]
            )
        replies = [
            json.loads(request.tool_result_text(i))["reply"]
            for i in range(len(request.tool_results))
        ]
        return Reply([Text("joined: " + " + ".join(sorted(replies)))])
    if request.assistant_turns == 0:
        return Reply([ToolUse("bash", {"command": f"echo {role} $((6*7))"})])
    return Reply([Text(request.tool_result_text().splitlines()[0])])


async def _coordinator(stack: Stack) -> tuple[anthropic.AsyncAnthropic, Any, dict[str, Any]]:
    client = stack.client()
    callees = {}
    for name in ("alpha", "beta"):
        callees[name] = await client.beta.agents.create(
            name=name,
            model="claude-sonnet-4-6",
            system=name,
            tools=[{"type": "agent_toolset_20260401"}],
        )
    coordinator = await client.beta.agents.create(
        name="boss",
        model="claude-sonnet-4-6",
        system="coordinator",
        multiagent={"type": "coordinator", "agents": [callees["alpha"].id, callees["beta"].id]},
    )
    for agent in (coordinator, *callees.values()):
        stack.start_worker(agent.id, script)
    return client, coordinator, callees


async def test_sdk_coordinator_threads_list_retrieve_events_stream_archive(stack: Stack) -> None:
    client, coordinator, callees = await _coordinator(stack)
    assert coordinator.multiagent is not None
    assert coordinator.multiagent.type == "coordinator"
    assert [a.id for a in coordinator.multiagent.agents] == [
        callees["alpha"].id,
        callees["beta"].id,
    ]
    environment = await client.beta.environments.create(name="threads-env")
    session = await client.beta.sessions.create(agent=coordinator.id, environment_id=environment.id)
    seen = await turn(client, session.id, "ask them")
    kinds = [e.type for e in seen]
    assert kinds.count("session.thread_created") == 2
    assert kinds.count("agent.thread_message_received") == 2
    final = [e for e in seen if e.type == "agent.message"][-1]
    assert final.content[0].text == "joined: alpha 42 + beta 42"

    threads = [t async for t in client.beta.sessions.threads.list(session.id)]
    primary, *children = threads
    assert primary.parent_thread_id is None
    assert primary.agent.name == "boss"
    assert sorted(t.agent.name for t in children) == ["alpha", "beta"]
    for child in children:
        assert child.type == "session_thread"
        assert child.session_id == session.id
        assert child.parent_thread_id == primary.id
        assert child.status == "idle"
        assert child.usage is not None
        assert child.usage.output_tokens
        got = await client.beta.sessions.threads.retrieve(child.id, session_id=session.id)
        assert got.id == child.id
        events = [
            e
            async for e in client.beta.sessions.threads.events.list(child.id, session_id=session.id)
        ]
        assert [e.type for e in events if e.type.startswith(("user.", "agent."))] == [
            "user.message",
            "agent.tool_use",
            "agent.tool_result",
            "agent.message",
        ]
        # The thread's stream resumes after an event id like the session's.
        stream = await client.beta.sessions.threads.events.stream(
            child.id, session_id=session.id, extra_headers={"Last-Event-ID": events[0].id}
        )
        async with stream:
            replayed = []
            async for event in stream:
                replayed.append(event.id)
                if event.type == "session.status_idle":
                    break
        assert replayed == [e.id for e in events[1:]]

    archived = await client.beta.sessions.threads.archive(children[0].id, session_id=session.id)
    assert archived.archived_at is not None
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.threads.retrieve("sthr_nope", session_id=session.id)

    # Deleting the session deletes its threads' logs.
    await client.beta.sessions.delete(session.id)
    logs = EventLog(stack.redis).tenant(stack.a.namespace)
    assert await logs.snapshots([session_of_thread(t.id) for t in children]) == {}


async def test_rosters_are_checked(stack: Stack) -> None:
    client, coordinator, callees = await _coordinator(stack)
    for multiagent in (
        {"type": "coordinator", "agents": []},
        {"type": "coordinator", "agents": [coordinator.id]},  # depth 1
        {"type": "coordinator", "agents": ["agent_missing"]},
        {"type": "coordinator", "agents": [callees["alpha"].id] * 2},
    ):
        with pytest.raises(anthropic.BadRequestError):
            await client.beta.agents.create(
                name="bad", model="claude-sonnet-4-6", multiagent=multiagent
            )
