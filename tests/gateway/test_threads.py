"""Multi-agent threads through the official SDK: a coordinator Agent's `multiagent` roster,
the thread events on the session's stream, and `sessions.threads` (list, retrieve, archive,
events, stream)."""

from __future__ import annotations

import functools
import json
from typing import Any

import anthropic
import pytest

from paddock.eventlog import EventLog, session_of_thread
from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse
from paddock.testing.ports import wait_until_async

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


LONG = "A thread's answer that the scripted model streams in many small chunks. " * 6


def asking(request: ModelRequest) -> Reply:
    """The coordinator asks alpha and reports its reply; alpha first calls a tool that waits
    on the client (an always_ask `bash` for "asker", the custom `lookup` for "looker")."""
    role = request.system_text
    if role == "coordinator":
        if request.assistant_turns == 0:
            return Reply([ToolUse("list_agents", {})])
        if request.assistant_turns == 1:
            (listed,) = json.loads(request.tool_result_text())["agents"]
            return Reply([ToolUse("send_to_agent", {"agent": listed["name"], "message": "go"})])
        return Reply([Text("alpha said: " + json.loads(request.tool_result_text())["reply"])])
    if request.assistant_turns == 0:
        if role == "asker":
            return Reply([ToolUse("bash", {"command": "echo approved"})])
        return Reply([ToolUse("lookup", {"q": "answer"})])
    if role == "asker":
        return Reply([Text(LONG)], chunk_delay=0.002)
    return Reply([Text(request.tool_result_text())])


async def _waiting(stack: Stack, role: str, tools: list[dict[str, Any]]) -> tuple[Any, str, Any]:
    """(client, session id, the cross-posted request) of a coordinator whose thread waits on
    the client."""
    client = stack.client()
    alpha = await client.beta.agents.create(
        name="alpha", model="claude-sonnet-4-6", system=role, tools=tools
    )
    boss = await client.beta.agents.create(
        name="boss",
        model="claude-sonnet-4-6",
        system="coordinator",
        multiagent={"type": "coordinator", "agents": [alpha.id]},
    )
    for agent in (boss, alpha):
        stack.start_worker(agent.id, asking)
    environment = await client.beta.environments.create(name="asking-env")
    session = await client.beta.sessions.create(agent=boss.id, environment_id=environment.id)
    seen = await turn(client, session.id, "ask alpha")
    (cross,) = [e for e in seen if e.type.endswith("tool_use") and e.session_thread_id]
    idle = seen[-1]
    assert idle.stop_reason.type == "requires_action"
    assert idle.stop_reason.event_ids == [cross.id]
    retrieved = await client.beta.sessions.retrieve(session.id)
    assert retrieved.status == "idle"
    return client, session.id, cross


async def test_sdk_thread_confirmation_through_the_session_and_thread_deltas(
    stack: Stack,
) -> None:
    toolset = {
        "type": "agent_toolset_20260401",
        "default_config": {"permission_policy": {"type": "always_ask"}},
    }
    client, session, cross = await _waiting(stack, "asker", [toolset])
    assert (cross.type, cross.name) == ("agent.tool_use", "bash")
    thread = cross.session_thread_id
    threads = client.beta.sessions.threads
    thread_stream = await threads.events.stream(
        thread, session_id=session, event_deltas=["agent.message"]
    )
    parent_stream = await client.beta.sessions.events.stream(
        session, event_deltas=["agent.message"]
    )
    async with thread_stream, parent_stream:
        # Sent back on the session, as the SDK does (session_thread_id is optional).
        sent = await client.beta.sessions.events.send(
            session,
            events=[{"type": "user.tool_confirmation", "tool_use_id": cross.id, "result": "allow"}],
        )
        (echo,) = sent.data
        assert echo.session_thread_id == thread
        in_thread = []
        async for event in thread_stream:
            in_thread.append(event)
            if event.type == "session.status_idle":
                break
        in_session = []
        async for event in parent_stream:
            in_session.append(event)
            if event.type == "session.status_idle":
                break
    (message,) = [e for e in in_thread if e.type == "agent.message"]
    assert message.content[0].text == LONG
    (start,) = [e for e in in_thread if e.type == "event_start"]
    assert start.event.id == message.id
    deltas = [e for e in in_thread if e.type == "event_delta"]
    assert "".join(d.delta.content.text for d in deltas) == LONG
    # Thread-scoped: the session's stream previews only its own messages.
    assert all(e.event_id != message.id for e in in_session if e.type == "event_delta")
    assert in_session[-1].stop_reason.type == "end_turn"
    final = [e for e in in_session if e.type == "agent.message"][-1]
    assert final.content[0].text == "alpha said: " + LONG
    # The thread's log has the confirmation under its own request's id.
    thread_events = [e async for e in threads.events.list(thread, session_id=session)]
    (use,) = [e for e in thread_events if e.type == "agent.tool_use"]
    (confirmation,) = [e for e in thread_events if e.type == "user.tool_confirmation"]
    assert confirmation.tool_use_id == use.id
    assert use.session_thread_id is None


async def test_sdk_thread_custom_tool_result_through_the_session(stack: Stack) -> None:
    lookup = {
        "type": "custom",
        "name": "lookup",
        "description": "Look it up",
        "input_schema": {"type": "object"},
    }
    client, session, cross = await _waiting(stack, "looker", [lookup])
    assert (cross.type, cross.name) == ("agent.custom_tool_use", "lookup")
    thread = cross.session_thread_id

    def answer(**fields: Any) -> dict[str, Any]:
        return {"events": [{"type": "user.custom_tool_result", "content": [], **fields}]}

    async with stack.http() as http:
        url = f"/v1/sessions/{session}/events"
        for fields, status, kind in (
            # No such thread of the session.
            (
                {"custom_tool_use_id": cross.id, "session_thread_id": "sthr_nope"},
                404,
                "not_found_error",
            ),
            # Not a request of the thread named.
            (
                {"custom_tool_use_id": "sevt_nope", "session_thread_id": thread},
                400,
                "invalid_request_error",
            ),
            ({"custom_tool_use_id": "sevt_nope"}, 400, "invalid_request_error"),
        ):
            response = await http.post(url, json=answer(**fields))
            assert response.status_code == status, response.text
            assert response.json()["error"]["type"] == kind

    async with await client.beta.sessions.events.stream(session) as stream:
        await client.beta.sessions.events.send(
            session,
            events=[
                {
                    "type": "user.custom_tool_result",
                    "custom_tool_use_id": cross.id,
                    "content": [{"type": "text", "text": "42"}],
                    "session_thread_id": thread,  # named, and checked
                }
            ],
        )
        async for event in stream:
            if event.type == "session.status_idle":
                break
    assert event.stop_reason.type == "end_turn"
    listed = [e async for e in client.beta.sessions.events.list(session)]
    assert [e.content[0].text for e in listed if e.type == "agent.message"] == ["alpha said: 42"]
    (echo,) = [e for e in listed if e.type == "user.custom_tool_result"]
    assert echo.session_thread_id == thread
    # Answered once: the same answer again is refused.
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.sessions.events.send(
            session,
            events=[
                {"type": "user.custom_tool_result", "custom_tool_use_id": cross.id, "content": []}
            ],
        )


def racing(request: ModelRequest) -> Reply:
    """The coordinator asks "slow" and "fast" at once and reports both replies; slow's
    command runs for a minute (the test interrupts it), fast's at once."""
    role = request.system_text
    if role == "coordinator":
        if request.assistant_turns == 0:
            return Reply([ToolUse("list_agents", {})])
        if request.assistant_turns == 1:
            listed = json.loads(request.tool_result_text())["agents"]
            return Reply(
                [ToolUse("send_to_agent", {"agent": a["name"], "message": "go"}) for a in listed]
            )
        replies = {
            json.loads(request.tool_result_text(i))["reply"]
            for i in range(len(request.tool_results))
        }
        return Reply([Text("replies: " + json.dumps(sorted(replies)))])
    if request.assistant_turns == 0:
        command = "sleep 60" if role == "slow" else "echo fast $((6*7))"
        return Reply([ToolUse("bash", {"command": command})])
    return Reply([Text(request.tool_result_text().splitlines()[0])])


async def test_sdk_interrupt_one_of_two_parallel_threads(stack: Stack) -> None:
    client = stack.client()
    toolset = [{"type": "agent_toolset_20260401"}]
    callees = [
        await client.beta.agents.create(
            name=name, model="claude-sonnet-4-6", system=name, tools=toolset
        )
        for name in ("slow", "fast")
    ]
    boss = await client.beta.agents.create(
        name="boss",
        model="claude-sonnet-4-6",
        system="coordinator",
        multiagent={"type": "coordinator", "agents": [a.id for a in callees]},
    )
    for agent in (boss, *callees):
        stack.start_worker(agent.id, racing)
    environment = await client.beta.environments.create(name="racing-env")
    session = await client.beta.sessions.create(agent=boss.id, environment_id=environment.id)
    threads = client.beta.sessions.threads

    async def running_tool(sthr: str) -> bool:
        events = [e async for e in threads.events.list(sthr, session_id=session.id)]
        return any(e.type == "agent.tool_use" for e in events)

    seen: list[Any] = []
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": "race"}]}],
        )
        async for event in stream:
            seen.append(event)
            if event.type == "session.thread_created" and event.agent_name.startswith("slow"):
                slow = event.session_thread_id
                await wait_until_async(
                    functools.partial(running_tool, slow),
                    timeout=30,
                    what="slow's command to start",
                )
                sent = await client.beta.sessions.events.send(
                    session.id, events=[{"type": "user.interrupt", "session_thread_id": slow}]
                )
                (echo,) = sent.data
                assert (echo.type, echo.session_thread_id) == ("user.interrupt", slow)
            if event.type == "session.status_idle":
                break
    # The coordinator was not interrupted: it got both replies and finished its turn.
    assert seen[-1].stop_reason.type == "end_turn"
    final = [e for e in seen if e.type == "agent.message"][-1]
    assert final.content[0].text == 'replies: ["", "fast 42"]'
    listed = [e async for e in client.beta.sessions.events.list(session.id)]
    results = [e for e in listed if e.type == "agent.tool_result"]
    assert len(results) == 3  # list_agents, then both send_to_agent calls
    assert not any(r.is_error for r in results)
    # In the slow thread, the command was cut short and the turn ended.
    slow_events = [e async for e in threads.events.list(slow, session_id=session.id)]
    (cut,) = [e for e in slow_events if e.type == "agent.tool_result"]
    assert cut.is_error
    assert [e.type for e in slow_events if e.type == "user.interrupt"] == ["user.interrupt"]
    assert slow_events[-1].type == "session.status_idle"
    assert slow_events[-1].stop_reason.type == "end_turn"

    # A retried interrupt of the same turn reaches the thread once.
    await client.beta.sessions.events.send(
        session.id, events=[{"type": "user.interrupt", "session_thread_id": slow}]
    )
    slow_events = [e async for e in threads.events.list(slow, session_id=session.id)]
    assert [e.type for e in slow_events].count("user.interrupt") == 1

    fast = next(
        e.session_thread_id for e in seen if getattr(e, "agent_name", "").startswith("fast")
    )
    await threads.archive(fast, session_id=session.id)
    async with stack.http() as http:
        url = f"/v1/sessions/{session.id}/events"
        for sthr, status, kind in (
            ("sthr_nope", 404, "not_found_error"),
            (fast, 400, "invalid_request_error"),  # archived
        ):
            body = {"events": [{"type": "user.interrupt", "session_thread_id": sthr}]}
            response = await http.post(url, json=body)
            assert response.status_code == status, response.text
            assert response.json()["error"]["type"] == kind
    # The primary thread's id is a plain interrupt (of an idle session here: a no-op).
    primary = (await threads.list(session.id)).data[0]
    sent = await client.beta.sessions.events.send(
        session.id, events=[{"type": "user.interrupt", "session_thread_id": primary.id}]
    )
    assert sent.data[0].session_thread_id is None
    # A send that interrupts a thread stores all its events under its own key: the thread's
    # once-per-turn interrupt key is not the send's (it once was, and this send came back as
    # the first interrupt's echo alone).
    sent = await client.beta.sessions.events.send(
        session.id,
        events=[{"type": "user.interrupt", "session_thread_id": slow}, {"type": "user.interrupt"}],
    )
    assert [e.session_thread_id for e in sent.data] == [slow, None]
