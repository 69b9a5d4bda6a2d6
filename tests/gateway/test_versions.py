"""Agent versions through the official SDK: a session runs, to its end, the Agent version it
was created with (its system prompt and tools, as the scripted model sees them), whatever
the Agent becomes meanwhile; a session can be started on an older version; the versions
list is complete, newest first (docs/api-design.md, "Decision: agent versions")."""

from __future__ import annotations

from typing import Any

import pytest

from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse
from paddock.testing.ports import wait_until_async
from paddock.testing.sandbox import RunningSandbox

from .stack import Stack

pytestmark = pytest.mark.timeout(90)

BASH_ONLY = {
    "type": "agent_toolset_20260401",
    "default_config": {"enabled": False},
    "configs": [{"name": "bash", "enabled": True}],
}
LOOKUP = {
    "type": "custom",
    "name": "lookup",
    "description": "Look a word up.",
    "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
}


def system_of(request: ModelRequest) -> str:
    return "".join(block["text"] for block in request.body["system"])


def tools_of(request: ModelRequest) -> list[str]:
    return [tool["name"] for tool in request.body.get("tools", [])]


def for_task(model_requests: list[ModelRequest], task: str) -> list[ModelRequest]:
    return [r for r in model_requests if r.first_user_text == task]


async def until_answered(client: Any, session_id: str) -> Any:
    """The session once its turn ended with the model's answer (a session starts idle)."""

    async def answered() -> Any:
        page = await client.beta.sessions.events.list(session_id, types=["agent.message"])
        session = await client.beta.sessions.retrieve(session_id)
        return session if page.data and session.status == "idle" else None

    return await wait_until_async(answered, timeout=30, what=f"session {session_id} answered")


def message(text: str) -> list[dict[str, Any]]:
    return [{"type": "user.message", "content": [{"type": "text", "text": text}]}]


async def test_a_session_finishes_on_its_version_while_the_agent_changes_mid_turn(
    stack: Stack, sandbox: RunningSandbox
) -> None:
    client = stack.client()
    environment = await client.beta.environments.create(name="versions-env")
    agent = await client.beta.agents.create(
        name="versioned",
        model="claude-sonnet-4-6",
        system="You are version one.",
        tools=[BASH_ONLY],
    )
    started, go = sandbox.workdir / "started", sandbox.workdir / "go"
    go.unlink(missing_ok=True)
    started.unlink(missing_ok=True)
    # The first session's tool call runs until the test lets it finish.
    wait = f"touch {started} && while [ ! -f {go} ]; do sleep 0.05; done && echo finished"

    def script(request: ModelRequest) -> Reply:
        if request.first_user_text == "long task" and request.assistant_turns == 0:
            return Reply([ToolUse("bash", {"command": wait})])
        return Reply([Text(f"done: {request.first_user_text}")])

    # The worker's pod runs version 1 throughout, as a pod not rolled yet would.
    model = stack.start_worker(agent.id, script)
    first = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    assert first.agent.version == 1
    await client.beta.sessions.events.send(first.id, events=message("long task"))
    await wait_until_async(started.exists, timeout=30, what="the tool call running")

    updated = await client.beta.agents.update(
        agent.id, version=1, system="You are version two.", tools=[BASH_ONLY, LOOKUP]
    )
    assert updated.version == 2
    second = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    assert (second.agent.version, second.agent.system) == (2, "You are version two.")
    # Mid-turn, the first session still reports the version it runs.
    retrieved = await client.beta.sessions.retrieve(first.id)
    assert (retrieved.agent.version, retrieved.agent.system) == (1, "You are version one.")

    go.touch()
    await until_answered(client, first.id)
    await client.beta.sessions.events.send(second.id, events=message("new task"))
    await until_answered(client, second.id)

    long_requests = for_task(model.requests, "long task")
    assert len(long_requests) == 2  # before the tool call, and after its result
    for request in long_requests:
        assert system_of(request) == "You are version one."
        assert tools_of(request) == ["bash"]
    assert long_requests[1].tool_result_text().startswith("finished")
    (new_request,) = for_task(model.requests, "new task")
    assert system_of(new_request) == "You are version two."
    assert tools_of(new_request) == ["bash", "lookup"]

    after = await client.beta.sessions.retrieve(first.id)
    assert (after.agent.version, after.agent.system) == (1, "You are version one.")
    assert [t.type for t in after.agent.tools] == ["agent_toolset_20260401"]
    on_one = await client.beta.sessions.list(agent_id=agent.id, agent_version=1)
    assert [s.id for s in on_one.data] == [first.id]
    on_two = await client.beta.sessions.list(agent_id=agent.id, agent_version=2)
    assert [s.id for s in on_two.data] == [second.id]


async def test_a_session_created_on_an_older_version_runs_it(stack: Stack) -> None:
    client = stack.client()
    environment = await client.beta.environments.create(name="older-env")
    agent = await client.beta.agents.create(
        name="older", model="claude-sonnet-4-6", system="Prompt one."
    )
    await client.beta.agents.update(agent.id, version=1, system="Prompt two.")
    model = stack.start_worker(agent.id, lambda r: Reply([Text("ok")]))

    old = await client.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1}, environment_id=environment.id
    )
    assert (old.agent.version, old.agent.system) == (1, "Prompt one.")
    await client.beta.sessions.events.send(old.id, events=message("on one"))
    await until_answered(client, old.id)
    (request,) = for_task(model.requests, "on one")
    assert system_of(request) == "Prompt one."
    assert (await client.beta.sessions.retrieve(old.id)).agent.version == 1

    latest = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    assert (latest.agent.version, latest.agent.system) == (2, "Prompt two.")

    async with stack.http() as http:
        for version in (3, 0):
            answer = await http.post(
                "/v1/sessions",
                json={
                    "agent": {"type": "agent", "id": agent.id, "version": version},
                    "environment_id": environment.id,
                },
            )
            assert answer.status_code == (404 if version == 3 else 400), answer.text
            assert answer.json()["type"] == "error"


async def test_the_versions_list_is_complete_newest_first(stack: Stack) -> None:
    client = stack.client()
    agent = await client.beta.agents.create(name="listed", model="claude-sonnet-4-6", system="s1")
    for n in (2, 3, 4):
        assert (await client.beta.agents.update(agent.id, system=f"s{n}")).version == n
    # A no-op update makes no version.
    assert (await client.beta.agents.update(agent.id, system="s4")).version == 4

    versions = [v async for v in client.beta.agents.versions.list(agent.id)]
    assert [(v.version, v.system) for v in versions] == [(4, "s4"), (3, "s3"), (2, "s2"), (1, "s1")]
    assert {v.id for v in versions} == {agent.id}
    first_page = await client.beta.agents.versions.list(agent.id, limit=3)
    assert [v.version for v in first_page.data] == [4, 3, 2]
    assert first_page.next_page
    rest = await client.beta.agents.versions.list(agent.id, limit=3, page=first_page.next_page)
    assert [v.version for v in rest.data] == [1]
    assert rest.next_page is None

    old = await client.beta.agents.retrieve(agent.id, version=2)
    assert (old.version, old.system, old.name) == (2, "s2", "listed")
    assert (await client.beta.agents.retrieve(agent.id)).version == 4
    async with stack.http() as http:
        future = await http.get(f"/v1/agents/{agent.id}", params={"version": 5})
        assert future.status_code == 404
        assert future.json()["error"]["type"] == "not_found_error"
        missing = await http.get("/v1/agents/agent_nope/versions")
        assert missing.status_code == 404
