"""The HTTP surface: probes, authentication, error envelopes, input validation, the client's
error types, and refusing to start without a token."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from paddock.sandbox import SandboxClient, SandboxError, SandboxUnavailable
from paddock.testing.ports import free_port
from paddock.testing.sandbox import RunningSandbox


async def test_probes_answer_without_a_token(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200


async def test_readiness_follows_the_workdir(
    start_sandbox: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    workdir = tmp_path / "not-yet"
    server = start_sandbox(workdir=workdir)
    async with server.client() as client:
        assert await client.ready() is False
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/readyz")
        assert response.status_code == 503
        assert "does not exist" in response.json()["reason"]
        workdir.mkdir()
        assert await client.ready() is True


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic d3Jvbmc6dG9rZW4="},
        {"Authorization": "Bearer"},
    ],
    ids=["no-token", "wrong-token", "wrong-scheme", "empty-token"],
)
async def test_requests_without_the_right_token_are_refused(
    sandbox: RunningSandbox, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url, headers=headers) as http:
        before = (await sandbox_stats(sandbox))["total"]
        for method, path, body in [
            ("POST", "/v1/tools/bash", {"input": {"command": "echo ran"}}),
            ("POST", "/v1/bind", {}),
            ("POST", "/v1/calls/toolu_x/cancel", None),
            ("GET", "/v1/stats", None),
        ]:
            response = await http.request(method, path, json=body)
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["type"] == "error"
            assert response.json()["error"]["type"] == "authentication_error"
    assert (await sandbox_stats(sandbox))["total"] == before


async def test_errors_are_json_envelopes(sandbox: RunningSandbox) -> None:
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    async with httpx.AsyncClient(base_url=sandbox.url, headers=headers) as http:
        unknown_tool = await http.post("/v1/tools/browser", json={"input": {}})
        unknown_route = await http.get("/v1/nothing-here")
        not_json = await http.post("/v1/tools/bash", content=b"{not json")
        no_input = await http.post("/v1/tools/bash", json={"call_id": "toolu_1"})
        bad_bind = await http.post("/v1/bind", json={"session_id": "nope"})
    assert unknown_tool.status_code == 404
    assert unknown_tool.json()["error"]["type"] == "not_found_error"
    assert "'browser'" in unknown_tool.json()["error"]["message"]
    assert unknown_route.status_code == 404
    assert unknown_route.json()["error"]["type"] == "not_found_error"
    for response in (not_json, no_input, bad_bind):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "input" in no_input.json()["error"]["message"]


@pytest.mark.parametrize(
    ("tool", "tool_input", "message"),
    [
        ("read", {}, "file_path: Field required"),
        ("read", {"file_path": "x", "view_range": "1-3"}, "view_range"),
        ("write", {"file_path": "x"}, "content: Field required"),
        ("edit", {"file_path": "x", "old_string": "a"}, "new_string: Field required"),
        ("bash", {}, "command is required"),
        ("bash", {"command": "true", "timeout_ms": 600_001}, "timeout_ms"),
        ("glob", {"pattern": ""}, "pattern"),
        ("grep", {"pattern": 42}, "pattern"),
    ],
)
async def test_malformed_input_is_an_error_result(
    client: SandboxClient, tool: str, tool_input: dict[str, object], message: str
) -> None:
    result = await client.call(tool, tool_input)
    assert result.is_error
    assert result.text.startswith(f"{tool}: invalid input")
    assert message in result.text


async def test_concurrent_calls_of_every_tool(client: SandboxClient, space: Path) -> None:
    calls = []
    for i in range(8):
        path = str(space / f"f{i}.txt")
        calls += [
            client.call("bash", {"command": f"sleep 0.{i}; echo {i} > {path}.sh"}),
            client.call("write", {"file_path": path, "content": f"line {i}\n"}),
            client.call("read", {"file_path": str(space / "missing")}),
            client.call("glob", {"pattern": "*.txt", "path": str(space)}),
            client.call("grep", {"pattern": "line", "path": str(space)}),
        ]
    results = await asyncio.gather(*calls)
    assert [r.is_error for r in results] == [False, False, True, False, False] * 8
    assert await client.ready()
    listing = await client.call("glob", {"pattern": "f*", "path": str(space)})
    assert sorted(listing.text.splitlines()) == sorted(
        [f"{space}/f{i}.txt" for i in range(8)] + [f"{space}/f{i}.txt.sh" for i in range(8)]
    )


async def test_client_error_types(sandbox: RunningSandbox) -> None:
    async with sandbox.client(token="wrong") as client:
        with pytest.raises(SandboxError) as refused:
            await client.call("bash", {"command": "true"})
    assert (refused.value.status, refused.value.kind) == (401, "authentication_error")
    async with sandbox.client() as client:
        with pytest.raises(SandboxError) as unknown:
            await client.call("browser", {})
    assert unknown.value.status == 404

    async with SandboxClient(f"http://127.0.0.1:{free_port()}", "token") as dead:
        assert await dead.ready() is False
        with pytest.raises(SandboxUnavailable):
            await dead.call("bash", {"command": "true"}, call_id="toolu_dead")


@pytest.mark.parametrize("token", [None, ""], ids=["no-token-file", "empty-token-file"])
def test_the_server_refuses_to_start_without_a_token(tmp_path: Path, token: str | None) -> None:
    args = [sys.executable, "-m", "paddock.sandbox", "--port", str(free_port())]
    if token is not None:
        (tmp_path / "token").write_text(token)
        args += ["--token-file", str(tmp_path / "token")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert "token" in done.stderr


async def sandbox_stats(sandbox: RunningSandbox) -> dict[str, object]:
    async with sandbox.client() as client:
        return (await client.stats()).model_dump()
