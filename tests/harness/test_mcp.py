"""MCP tools in sessions: a real MCP server process (bearer-protected) reached through a real
credential proxy, which adds the vault's token; the scripted model calls the tools."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from paddock.eventlog import UserInterruptEvent, UserToolConfirmationEvent
from paddock.harness.mcp import OUTCOME_UNKNOWN
from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse, turns
from paddock.testing.mcpserver import McpServerProcess
from paddock.testing.ports import free_port, wait_until_async
from paddock.testing.proxy import ProxyProcess, Secrets

from .conftest import Harness, types

VAULT = "vlt_docs"


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServerProcess]:
    server = McpServerProcess(tmp_path_factory.mktemp("mcp")).start()
    yield server
    server.stop()


def authority(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


@pytest.fixture
def with_proxy(
    tmp_path: Path, mcp_server: McpServerProcess
) -> Iterator[Callable[..., ProxyProcess]]:
    """`with_proxy(harness, server_url=..., token=...)`: a credential proxy in front of the
    harness's scripted model with the MCP server `docs` and a vault credential for it; then a
    worker that uses it."""
    started: list[ProxyProcess] = []

    def start(
        harness: Harness,
        server_url: str | None = None,
        token: str | None = None,
        more_servers: tuple[dict[str, str], ...] = (),
    ) -> ProxyProcess:
        url = server_url or mcp_server.url
        token_file = tmp_path / "vault-token"
        token_file.write_text((token or mcp_server.token) + "\n")
        proxy = ProxyProcess(
            tmp_path,
            Secrets(tmp_path / "secrets"),
            upstream=harness.model.url,
            # The test servers are on loopback, which MCP server URLs may not reach otherwise.
            address_exceptions=sorted(
                {authority(url), *(authority(server["url"]) for server in more_servers)}
            ),
            mcp_servers=[{"name": "docs", "url": url}, *more_servers],
            vault_credentials=[
                {
                    "vault_id": VAULT,
                    "credential_id": "vcrd_docs",
                    "mcp_server_url": url,
                    "type": "static_bearer",
                    "token_file": str(token_file),
                }
            ],
        ).start()
        started.append(proxy)
        harness.start_worker(model_base_url=proxy.api_url, mcp_timeout=5.0)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def mcp_spec(url: str, **toolset: Any) -> dict[str, Any]:
    return {
        "mcpServers": [{"name": "docs", "url": url}],
        "tools": {"mcp": [{"serverName": "docs", **toolset}]},
    }


def offered(request: ModelRequest) -> list[str]:
    return [tool["name"] for tool in request.body.get("tools", [])]


async def redis_values(redis: Redis) -> bytes:
    """Every value of every key, read by type: what a grep of Redis would see."""
    out: list[bytes] = []
    async for key in redis.scan_iter():
        kind = (await redis.type(key)).decode()
        if kind == "string":
            out.append(await redis.get(key) or b"")
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                out += [field, value]
        elif kind == "list":
            out += await redis.lrange(key, 0, -1)
        elif kind == "set":
            out += list(await redis.smembers(key))
        elif kind == "zset":
            out += await redis.zrange(key, 0, -1)
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                for field, value in fields.items():
                    out += [field, value]
        out.append(key)
    return b"\n".join(out)


async def test_mcp_tools_are_offered_asked_for_and_run_or_denied(
    make_harness, with_proxy, mcp_server: McpServerProcess, redis: Redis
) -> None:
    script = turns(
        Reply(
            [
                ToolUse("mcp__docs__echo", {"text": "hello"}),
                ToolUse("mcp__docs__note", {"text": "remember this"}),
            ]
        ),
        lambda r: Reply([Text(f"saw {r.tool_result_text(0)} | {r.tool_result_text(1)}")]),
    )
    harness = make_harness(
        script, workers=0, **mcp_spec(mcp_server.url, configs=[{"name": "slow", "enabled": False}])
    )
    proxy = with_proxy(harness)
    session = await harness.start_session("use the docs server", vault_ids=[VAULT])
    events = await harness.wait_idle(session)

    # The model was offered the server's tools under prefixed names; `slow` is disabled.
    assert offered(harness.model.requests[0]) == [
        "bash", "read", "write", "edit", "glob", "grep",
        "mcp__docs__echo", "mcp__docs__add", "mcp__docs__note",
    ]  # fmt: skip
    tool = next(t for t in harness.model.requests[0].body["tools"] if t["name"] == "mcp__docs__add")
    assert tool["input_schema"]["required"] == ["a", "b"]
    uses = [e for e in events if e["type"] == "agent.mcp_tool_use"]
    assert [(u["mcp_server_name"], u["name"], u["input"]) for u in uses] == [
        ("docs", "echo", {"text": "hello"}),
        ("docs", "note", {"text": "remember this"}),
    ]
    assert {u["evaluated_permission"] for u in uses} == {"ask"}  # always_ask: the default
    assert uses[0]["evaluation"] == {"type": "always_ask"}
    assert events[-1]["stop_reason"] == {
        "type": "requires_action",
        "event_ids": [u["id"] for u in uses],
    }

    echo, note = uses
    await harness.send(
        session,
        UserToolConfirmationEvent(tool_use_id=echo["id"], result="allow"),
        UserToolConfirmationEvent(
            tool_use_id=note["id"], result="deny", deny_message="not in the notes"
        ),
    )
    events = await harness.wait_idle(session, count=2)
    results = {e["mcp_tool_use_id"]: e for e in events if e["type"] == "agent.mcp_tool_result"}
    assert results[echo["id"]]["content"] == [{"type": "text", "text": "echo: hello"}]
    assert not results[echo["id"]].get("is_error")
    assert results[note["id"]]["is_error"] is True
    assert "not in the notes" in results[note["id"]]["content"][0]["text"]
    assert mcp_server.notes() == []  # the denied call never reached the server
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert "echo: hello" in events[-3]["content"][0]["text"]
    assert "agent.tool_result" not in types(events)
    # The model saw the calls under the names it used, paired with their results.
    last = harness.model.requests[-1]
    assert [b["name"] for b in last.messages[-2]["content"] if b["type"] == "tool_use"] == [
        "mcp__docs__echo",
        "mcp__docs__note",
    ]

    # The token is the proxy's alone: in no event, no Redis value, not in the environment of
    # the process the workers run in; the proxy's audit names the server, not the token.
    token = mcp_server.token
    assert token not in json.dumps(await harness.events(session))
    assert token.encode() not in await redis_values(redis)
    assert all(token not in value for value in os.environ.values())
    assert token not in proxy.logs()
    assert proxy.last_entry(rule="mcp:docs")["injected"] == "vault"


async def test_always_allow_runs_at_once_and_a_started_call_is_never_run_again(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    script = turns(
        Reply([ToolUse("mcp__docs__add", {"a": 2, "b": 3})]),
        Reply([ToolUse("mcp__docs__note", {"text": "once"})]),
        lambda r: Reply([Text("result: " + r.tool_result_text())]),
    )
    harness = make_harness(
        script,
        workers=0,
        **mcp_spec(
            mcp_server.url,
            permissionPolicy="always_allow",
            configs=[{"name": "note", "permissionPolicy": "always_ask"}],
        ),
    )
    with_proxy(harness)
    session = await harness.start_session("add", vault_ids=[VAULT])
    events = await harness.wait_idle(session)
    add_result = next(e for e in events if e["type"] == "agent.mcp_tool_result")
    assert add_result["content"][0]["text"] == "5"
    (_, note) = [e for e in events if e["type"] == "agent.mcp_tool_use"]
    assert note["evaluated_permission"] == "ask"  # the per-tool policy wins

    # A worker that started this call crashed before recording its result: the call's
    # outcome is unknown, so it is not sent again.
    await harness.state.mark_started(session, note["id"], "mcp:docs")
    await harness.send(session, UserToolConfirmationEvent(tool_use_id=note["id"], result="allow"))
    events = await harness.wait_idle(session, count=2)
    result = [e for e in events if e["type"] == "agent.mcp_tool_result"][-1]
    assert result["is_error"] is True
    assert result["content"][0]["text"] == OUTCOME_UNKNOWN
    assert mcp_server.notes() == []


async def test_a_wrong_token_is_an_authentication_error_and_the_session_goes_on(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    harness = make_harness(
        turns(Reply([Text("fine without it")])), workers=0, **mcp_spec(mcp_server.url)
    )
    with_proxy(harness, token="not-the-token")
    session = await harness.start_session("hi", vault_ids=[VAULT])
    events = await harness.wait_idle(session)
    (error,) = [e for e in events if e["type"] == "session.error"]
    assert error["error"]["type"] == "mcp_authentication_failed_error"
    assert error["error"]["mcp_server_name"] == "docs"
    assert error["error"]["retry_status"] == {"type": "retrying"}
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert not [n for n in offered(harness.model.requests[0]) if n.startswith("mcp__")]


async def test_a_session_without_the_vault_gets_no_credential(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    harness = make_harness(turns(Reply([Text("ok")])), workers=0, **mcp_spec(mcp_server.url))
    with_proxy(harness)
    session = await harness.start_session("hi")  # no vault_ids
    events = await harness.wait_idle(session)
    (error,) = [e for e in events if e["type"] == "session.error"]
    assert error["error"]["type"] == "mcp_authentication_failed_error"


async def test_a_server_that_is_down_is_a_connection_error_and_the_session_goes_on(
    make_harness, with_proxy
) -> None:
    down = f"http://127.0.0.1:{free_port()}/mcp"
    harness = make_harness(turns(Reply([Text("still here")])), workers=0, **mcp_spec(down))
    with_proxy(harness, server_url=down)
    session = await harness.start_session("hi", vault_ids=[VAULT])
    events = await harness.wait_idle(session)
    (error,) = [e for e in events if e["type"] == "session.error"]
    assert error["error"]["type"] == "mcp_connection_failed_error"
    assert error["error"]["mcp_server_name"] == "docs"
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert [e["content"][0]["text"] for e in events if e["type"] == "agent.message"] == [
        "still here"
    ]


async def test_a_call_that_outlasts_the_tool_timeout_is_an_error_result(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    script = turns(
        Reply([ToolUse("mcp__docs__slow", {"seconds": 10})]),
        lambda r: Reply([Text("gave up: " + r.tool_result_text())]),
    )
    harness = make_harness(
        script,
        workers=0,
        limits={"toolTimeout": "1s"},
        **mcp_spec(mcp_server.url, permissionPolicy="always_allow"),
    )
    with_proxy(harness)
    session = await harness.start_session("wait", vault_ids=[VAULT])
    events = await harness.wait_idle(session)
    (result,) = [e for e in events if e["type"] == "agent.mcp_tool_result"]
    assert result["is_error"] is True
    (error,) = [e for e in events if e["type"] == "session.error"]
    assert error["error"]["type"] == "mcp_connection_failed_error"
    assert events[-1]["stop_reason"] == {"type": "end_turn"}


async def test_a_worker_that_dies_mid_call_is_not_followed_by_a_second_call(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    script = turns(
        Reply([ToolUse("mcp__docs__note", {"text": "exactly once", "delay": 2})]),
        lambda r: Reply([Text("saw: " + r.tool_result_text())]),
    )
    harness = make_harness(
        script, workers=0, **mcp_spec(mcp_server.url, permissionPolicy="always_allow")
    )
    with_proxy(harness)
    session = await harness.start_session("note it", vault_ids=[VAULT])

    async def started() -> str | None:
        uses = [e for e in await harness.events(session) if e["type"] == "agent.mcp_tool_use"]
        if uses and await harness.state.started_in(session, uses[0]["id"]):
            return str(uses[0]["id"])
        return None

    call_id = await wait_until_async(started, timeout=20, what="the MCP call to start")
    _, stop, task = harness.workers[0]
    stop.set()  # the worker goes away mid-call; another one takes the session over
    await task
    harness.start_worker(model_base_url=harness.workers[0][0].settings.model_base_url)
    events = await harness.wait_idle(session)
    (result,) = [e for e in events if e["type"] == "agent.mcp_tool_result"]
    assert result["mcp_tool_use_id"] == call_id
    assert result["is_error"] is True
    assert result["content"][0]["text"] == OUTCOME_UNKNOWN
    assert mcp_server.notes().count("exactly once") <= 1  # never sent a second time


async def test_an_interrupt_stops_a_running_mcp_call(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    script = turns(Reply([ToolUse("mcp__docs__slow", {"seconds": 30})]))
    harness = make_harness(
        script, workers=0, **mcp_spec(mcp_server.url, permissionPolicy="always_allow")
    )
    with_proxy(harness)
    session = await harness.start_session("wait", vault_ids=[VAULT])

    async def calling() -> bool:
        return "agent.mcp_tool_use" in types(await harness.events(session))

    await wait_until_async(calling, timeout=20, what="the MCP call")
    began = time.monotonic()
    await harness.send(session, UserInterruptEvent())
    events = await harness.wait_idle(session)
    assert time.monotonic() - began < 10
    (result,) = [e for e in events if e["type"] == "agent.mcp_tool_result"]
    assert result["is_error"] is True
    assert "Interrupted" in result["content"][0]["text"]
    assert events[-1]["stop_reason"] == {"type": "end_turn"}


async def test_a_tool_error_is_an_error_result_not_a_session_error(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    script = turns(
        Reply([ToolUse("mcp__docs__add", {"a": "not a number"})]),
        lambda r: Reply([Text("saw: " + r.tool_result_text())]),
    )
    harness = make_harness(
        script, workers=0, **mcp_spec(mcp_server.url, permissionPolicy="always_allow")
    )
    with_proxy(harness)
    session = await harness.start_session("add", vault_ids=[VAULT])
    events = await harness.wait_idle(session)
    (result,) = [e for e in events if e["type"] == "agent.mcp_tool_result"]
    assert result["is_error"] is True
    assert "validation error" in result["content"][0]["text"]
    assert "session.error" not in types(events)
    assert events[-1]["stop_reason"] == {"type": "end_turn"}


async def test_a_server_that_is_down_does_not_keep_the_others_tools_away(
    make_harness, with_proxy, mcp_server: McpServerProcess
) -> None:
    gone = {"name": "gone", "url": f"http://127.0.0.1:{free_port()}/mcp"}
    spec = mcp_spec(mcp_server.url)
    spec["mcpServers"].append(gone)
    spec["tools"]["mcp"].append({"serverName": "gone"})
    harness = make_harness(turns(Reply([Text("ok")])), workers=0, **spec)
    with_proxy(harness, more_servers=(gone,))
    session = await harness.start_session("hi", vault_ids=[VAULT])
    events = await harness.wait_idle(session)
    errors = [e["error"] for e in events if e["type"] == "session.error"]
    assert [(e["type"], e["mcp_server_name"]) for e in errors] == [
        ("mcp_connection_failed_error", "gone")
    ]
    assert "mcp__docs__echo" in offered(harness.model.requests[0])
