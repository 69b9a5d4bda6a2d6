"""`paddock agents|environments|sessions …`, `interrupt`, `result` and `logs --type` against
the gateway stack: each command as a table for people and as `-o json` for scripts."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.gateway.stack import Stack

from paddock.testing.fakemodel import Reply, Text, ToolUse, turns
from paddock.testing.ports import wait_until_async

from .conftest import Result, paddock
from .test_cli import agent_with_worker, logs_showing, session_of

pytestmark = pytest.mark.timeout(90)

AGENT_BODY = {
    "name": "Reviewer",
    "model": "claude-sonnet-4-6",
    "system": "You review code.",
    "tools": [{"type": "agent_toolset_20260401"}],
}
DEPLOY = {
    "type": "custom",
    "name": "deploy",
    "description": "Deploy a build",
    "input_schema": {"type": "object", "properties": {"env": {"type": "string"}}},
}


async def ok(stack: Stack, *args: str) -> Result:
    result = await paddock(stack, *args)
    assert result.code == 0, f"{args}: {result.out}{result.err}"
    return result


async def json_of(stack: Stack, *args: str) -> Any:
    return json.loads((await ok(stack, *args, "-o", "json")).out)


def rows(result: Result) -> list[list[str]]:
    """The table's header and rows, cells split on the two-space column gaps."""
    return [re.split(r"\s{2,}", line) for line in result.out.splitlines()]


def created_id(result: Result, kind: str) -> str:
    match = re.fullmatch(rf"{kind} (\S+) created.*\n", result.out)
    assert match, result.out
    return match.group(1)


async def test_agents_create_get_update_archive(stack: Stack, tmp_path: Path) -> None:
    manifest = tmp_path / "agent.yaml"
    manifest.write_text(yaml.safe_dump(AGENT_BODY))
    created = await ok(stack, "agents", "create", "-f", str(manifest))
    agent = created_id(created, "agent")
    assert created.out == f"agent {agent} created (version 1)\n"
    # JSON files and flags too; flags win over the file.
    as_json = tmp_path / "agent.json"
    as_json.write_text(json.dumps(AGENT_BODY))
    other = await json_of(stack, "agents", "create", "-f", str(as_json), "--name", "Other")
    assert (other["type"], other["name"], other["version"]) == ("agent", "Other", 1)
    assert other["system"] == "You review code."

    table = rows(await ok(stack, "agents", "get", agent))
    assert table[0] == ["ID", "NAME", "MODEL", "VERSION", "AGE"]
    assert table[1][:4] == [agent, "Reviewer", "claude-sonnet-4-6", "1"]
    assert len(table) == 2
    got = await json_of(stack, "agents", "get", agent)
    assert (got["id"], got["system"], got["model"]["id"]) == (
        agent,
        "You review code.",
        "claude-sonnet-4-6",
    )
    listed = await json_of(stack, "agents")
    assert isinstance(listed, list)
    assert {agent, other["id"]} <= {a["id"] for a in listed}
    assert [agent] == [
        r[0] for r in rows(await ok(stack, "agents", "list"))[1:] if r[1] == "Reviewer"
    ]
    assert yaml.safe_load((await ok(stack, "agents", "get", agent, "-o", "yaml")).out) == got

    updated = await ok(stack, "agents", "update", agent, "--system", "You review Python.")
    assert updated.out == f"agent {agent} updated: version 1 → 2\n"
    same = await ok(stack, "agents", "update", agent, "--system", "You review Python.")
    assert same.out == f"agent {agent} unchanged (version 2)\n"
    stale = await paddock(
        stack, "agents", "update", agent, "--model", "claude-opus-4-5", "--version", "1"
    )
    assert stale.code == 1
    assert stale.err == f"paddock: 409 agent {agent} is at version 2, not 1\n"
    # `get -o yaml`, edited, is a body for `update -f` (its version makes the update
    # conditional).
    edited = yaml.safe_load((await ok(stack, "agents", "get", agent, "-o", "yaml")).out)
    edited["system"] = "You review Go."
    manifest.write_text(yaml.safe_dump(edited))
    moved = await json_of(stack, "agents", "update", agent, "-f", str(manifest))
    assert (moved["version"], moved["system"]) == (3, "You review Go.")

    archived = await ok(stack, "agents", "archive", agent)
    assert archived.out == f"agent {agent} archived\n"
    assert agent not in (await ok(stack, "agents")).out
    assert agent in (await ok(stack, "agents", "--archived")).out
    again = await json_of(stack, "agents", "archive", other["id"])
    assert again["id"] == other["id"]
    assert again["archived_at"]


async def test_agent_files_that_are_not_api_bodies(stack: Stack, tmp_path: Path) -> None:
    crd = tmp_path / "agent-cr.yaml"
    crd.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "paddock.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "coder"},
                "spec": {"model": "claude-sonnet-4-6"},
            }
        )
    )
    refused = await paddock(stack, "agents", "create", "-f", str(crd))
    assert refused.code == 2
    assert "is a Kubernetes manifest (kind Agent): apply it with `kubectl apply -f" in refused.err
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**AGENT_BODY, "sytem": "x"}))
    unknown = await paddock(stack, "agents", "create", "-f", str(typo))
    assert (unknown.code, unknown.err) == (2, f"paddock: {typo}: unknown field sytem\n")
    missing = await paddock(stack, "agents", "create", "-f", str(tmp_path / "none.yaml"))
    assert missing.code == 2
    assert "cannot read" in missing.err
    nothing = await paddock(stack, "agents", "update", "agent_x")
    assert nothing.code == 2
    no_model = await paddock(stack, "agents", "create", "--name", "no-model")
    assert (no_model.code, no_model.err) == (2, "paddock: flags: missing field model\n")


async def test_agent_versions(stack: Stack) -> None:
    agent = created_id(
        await ok(stack, "agents", "create", "--name", "Versioned", "--model", "claude-sonnet-4-6"),
        "agent",
    )
    await ok(stack, "agents", "update", agent, "--system", "Second.")
    table = rows(await ok(stack, "agents", "versions", agent))
    assert table[0] == ["VERSION", "NAME", "MODEL", "SYSTEM", "AGE"]
    assert sorted(r[0] for r in table[1:]) == ["1", "2"]
    assert any(r[:4] == ["2", "Versioned", "claude-sonnet-4-6", "Second."] for r in table[1:])
    versions = await json_of(stack, "agents", "versions", agent)
    assert sorted(v["version"] for v in versions) == [1, 2]
    assert {v["id"] for v in versions} == {agent}


async def test_environments(stack: Stack, tmp_path: Path) -> None:
    created = await ok(stack, "environments", "create", "--name", "py", "--description", "Python")
    environment = created_id(created, "environment")
    body = tmp_path / "env.yaml"
    body.write_text(
        yaml.safe_dump(
            {"name": "locked", "config": {"type": "cloud", "networking": {"type": "limited"}}}
        )
    )
    locked = await json_of(stack, "envs", "create", "-f", str(body))
    assert (locked["type"], locked["name"]) == ("environment", "locked")
    assert locked["config"]["networking"]["type"] == "limited"

    table = rows(await ok(stack, "environments", "get", locked["id"]))
    assert table[0] == ["ID", "NAME", "NETWORKING", "AGE"]
    assert table[1][:3] == [locked["id"], "locked", "limited"]
    got = await json_of(stack, "env", "get", environment)
    assert (got["id"], got["name"], got["description"]) == (environment, "py", "Python")
    listed = await json_of(stack, "environments", "list")
    assert {environment, locked["id"]} <= {e["id"] for e in listed}
    names = [r[1] for r in rows(await ok(stack, "environments"))[1:]]
    assert {"py", "locked"} <= set(names)

    archived = await ok(stack, "environments", "archive", environment)
    assert archived.out == f"environment {environment} archived\n"
    assert environment not in (await ok(stack, "environments")).out
    assert environment in (await ok(stack, "environments", "list", "--archived")).out
    deleted = await ok(stack, "environments", "delete", environment)
    assert deleted.out == f"environment {environment} deleted\n"
    gone = await paddock(stack, "environments", "get", environment)
    assert gone.code == 1
    assert gone.err.startswith("paddock: 404 ")
    answer = await json_of(stack, "environments", "delete", locked["id"])
    assert answer["id"] == locked["id"]


async def test_sessions_get_archive_delete(stack: Stack) -> None:
    client = stack.client()
    environment = await client.beta.environments.create(name="sessions-env")
    agent = await client.beta.agents.create(name="Idle", model="claude-sonnet-4-6")
    first, second = [
        (
            await client.beta.sessions.create(
                agent=agent.id, environment_id=environment.id, title=title
            )
        ).id
        for title in ("first", "second")
    ]
    table = rows(await ok(stack, "sessions", "get", first))
    assert table[0] == ["ID", "STATUS", "AGENT", "TITLE", "AGE"]
    assert [table[1][0], table[1][2], table[1][3]] == [first, "Idle", "first"]
    got = await json_of(stack, "sessions", "get", first)
    assert (got["id"], got["title"], got["agent"]["id"]) == (first, "first", agent.id)
    listed = await json_of(stack, "sessions", "list", "--limit", "5")
    assert {s["id"] for s in listed} == {first, second}

    archived = await ok(stack, "sessions", "archive", first)
    assert archived.out == f"session {first} archived\n"
    assert first not in (await ok(stack, "sessions")).out
    assert first in (await ok(stack, "sessions", "--archived")).out
    deleted = await ok(stack, "sessions", "delete", first)
    assert deleted.out == f"session {first} deleted\n"
    answer = await json_of(stack, "sessions", "delete", second)
    assert answer == {"id": second, "type": "session_deleted"}
    assert (await paddock(stack, "sessions", "get", second)).code == 1


async def test_interrupt_stops_the_turn(stack: Stack, sandbox) -> None:
    script = turns(
        Reply([ToolUse("bash", {"command": "sleep 60"})]),
        lambda r: Reply([Text("after the interrupt")]),
    )
    agent = await agent_with_worker(stack, script)
    client = stack.client()
    session = (
        await client.beta.sessions.create(agent=agent["id"], environment_id=agent["environment"])
    ).id
    await ok(stack, "send", session, "wait a minute")
    await logs_showing(stack, session, "● bash(sleep 60)")
    stopped = await ok(stack, "interrupt", session)
    assert re.fullmatch(rf"interrupted {session} \(sevt_\w+\)\n", stopped.out), stopped.out
    ended = await asyncio.wait_for(paddock(stack, "logs", session, "-f", "--until-idle"), 30)
    assert ended.code == 0, ended.out + ended.err
    assert "⏹ interrupted" in ended.out
    # Interrupting an idle session changes nothing; scripts get the event appended.
    (event,) = await json_of(stack, "interrupt", session)
    assert event["type"] == "user.interrupt"
    assert event["id"].startswith("sevt_")


async def test_result_answers_a_custom_tool(stack: Stack) -> None:
    def said(request: Any) -> Reply:
        result = request.tool_results[0]
        return Reply(
            [Text(f"got {request.tool_result_text()!r} error={bool(result.get('is_error'))}")]
        )

    script = turns(
        Reply([ToolUse("deploy", {"env": "staging"})]),
        said,
        Reply([ToolUse("deploy", {"env": "prod"})]),
        said,
    )
    agent = await agent_with_worker(stack, script, tools=[DEPLOY])
    first = await paddock(stack, "run", agent["id"], "deploy to staging")
    assert first.code == 3, first.out + first.err
    session = session_of(first)
    hint = re.search(rf'waits for its result: paddock result {session} (sevt_\w+) "…"', first.out)
    assert hint, first.out
    sent = await ok(stack, "result", session, hint.group(1), "deployed")
    assert re.fullmatch(rf"result sent for {hint.group(1)} \(sevt_\w+\)\n", sent.out)
    await logs_showing(stack, session, "got 'deployed' error=False")

    await ok(stack, "send", session, "now prod")

    async def waiting_again() -> list[str] | None:
        logs = await paddock(stack, "logs", session, "--type", "session.status_idle")
        found = re.findall(r"— idle: requires_action \((sevt_\w+)\)", logs.out)
        return found if len(found) == 2 else None

    pending = (await wait_until_async(waiting_again, timeout=30, what="the second call"))[1]
    (event,) = await json_of(stack, "result", session, pending, "quota exceeded", "--error")
    assert (event["type"], event["custom_tool_use_id"], event["is_error"]) == (
        "user.custom_tool_result",
        pending,
        True,
    )
    await logs_showing(stack, session, "got 'quota exceeded' error=True")


async def test_logs_filter_by_type(stack: Stack) -> None:
    agent = await agent_with_worker(
        stack, lambda request: Reply([Text(f"echo: {request.last_user_text}")])
    )
    session = session_of(await paddock(stack, "run", agent["id"], "hello"))
    messages = await ok(stack, "logs", session, "--type", "agent.message")
    assert messages.out == "echo: hello\n"
    two = await ok(
        stack, "logs", session, "--type", "user.message", "--type", "session.status_idle"
    )
    assert two.out == "> hello\n— idle: end_turn\n"
    lines = (await ok(stack, "logs", session, "--type", "agent.message", "-o", "json")).out
    (event,) = [json.loads(line) for line in lines.splitlines()]
    assert event["type"] == "agent.message"
    assert event["content"] == [{"type": "text", "text": "echo: hello"}]

    # Followed, the filter applies to the live events too, and the idle that ends the turn
    # still ends --until-idle although it is not shown.
    await ok(stack, "send", session, "again")
    followed = await asyncio.wait_for(
        paddock(stack, "logs", session, "-f", "--until-idle", "--type", "agent.message"), 30
    )
    assert followed.code == 0, followed.err
    assert followed.out == "echo: hello\necho: again\n"
