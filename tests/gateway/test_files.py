"""The Files API and session resources through the official SDK: upload, mount into a
session (read by the model through the sandbox), outputs listed and downloaded after the
turn, delete, 413 for an oversize upload, tenants apart; `sessions.resources` on a running
session."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from paddock.testing.fakemodel import Reply, Text, ToolUse, turns
from paddock.testing.ports import wait_until_async
from paddock.testing.sandbox import RunningSandbox

from .stack import Stack, turn

pytestmark = pytest.mark.timeout(60)

TOOLSET = [{"type": "agent_toolset_20260401"}]


async def _agent_and_environment(client: anthropic.AsyncAnthropic) -> tuple[str, str]:
    environment = await client.beta.environments.create(
        name=f"files-{secrets.token_hex(3)}", config={"type": "cloud"}
    )
    agent = await client.beta.agents.create(
        name="Files",
        model="claude-sonnet-4-6",
        tools=TOOLSET,  # type: ignore[list-item]
    )
    return agent.id, environment.id


async def test_upload_list_retrieve_download_delete(stack: Stack) -> None:
    client = stack.client()
    content = "line one\nline two ✓\n".encode()
    uploaded = await client.beta.files.upload(file=("notes.txt", content, "text/plain"))
    assert uploaded.id.startswith("file_")
    assert (uploaded.type, uploaded.filename, uploaded.mime_type) == (
        "file",
        "notes.txt",
        "text/plain",
    )
    assert uploaded.size_bytes == len(content)
    assert uploaded.scope is None
    assert uploaded.downloadable is True

    assert (await client.beta.files.retrieve_metadata(uploaded.id)) == uploaded
    assert uploaded.id in [f.id async for f in client.beta.files.list()]
    only = await client.beta.files.list(ids=[uploaded.id, "file_doesnotexist"])
    assert [f.id for f in only.data] == [uploaded.id]
    assert only.next_page is None
    downloaded = await client.beta.files.download(uploaded.id)
    assert await downloaded.read() == content
    assert downloaded.headers["content-type"].startswith("text/plain")

    # A path in the part's filename is dropped; an unnamed file is named after its type.
    renamed = await client.beta.files.upload(file=("../dir/x.json", b"{}", "application/json"))
    assert renamed.filename == "x.json"
    async with stack.http() as http:
        form = {"file": ("", b"raw", "text/plain")}
        unnamed = (await http.post("/v1/files", files=form)).json()
        assert unnamed["filename"] == "unnamed.txt"

    deleted = await client.beta.files.delete(uploaded.id)
    assert (deleted.id, deleted.type) == (uploaded.id, "file_deleted")
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.beta.files.retrieve_metadata(uploaded.id)
    assert missing.value.body["error"]["details"] == {"error_code": "file_not_found"}  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.files.download(uploaded.id)
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.files.delete(uploaded.id)
    assert uploaded.id not in [f.id async for f in client.beta.files.list()]


async def test_pages_and_bad_uploads(stack: Stack) -> None:
    client = stack.client()
    ids = [(await client.beta.files.upload(file=(f"{i}.txt", b"x"))).id for i in range(3)]
    first = await client.beta.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2]  # newest first
    assert [f.id async for f in await client.beta.files.list(limit=2)] == ids[::-1]
    async with stack.http() as http:
        answer = await http.post("/v1/files", json={"file": "no"})
        assert answer.status_code == 400
        assert "multipart/form-data" in answer.json()["error"]["message"]
        answer = await http.post("/v1/files", files={"other": ("a", b"b")})
        assert answer.status_code == 400
        answer = await http.post(
            "/v1/files", data={"expires_in_seconds": "5"}, files={"file": ("a", b"b")}
        )
        assert answer.status_code == 400
        assert "expires_in_seconds" in answer.json()["error"]["message"]
        answer = await http.get("/v1/files", params={"ids[]": ids[0], "limit": "1"})
        assert answer.status_code == 400
    expiring = await client.beta.files.upload(file=("e.txt", b"e"), expires_in_seconds=3600)
    assert expiring.expires_at is not None
    assert 3599 <= (expiring.expires_at - expiring.created_at).total_seconds() <= 3601


async def test_an_oversize_upload_is_413_and_leaves_nothing(stack: Stack) -> None:
    assert stack.gateway is not None
    assert stack.files_dir is not None
    stack.gateway.config = dataclasses.replace(stack.gateway.config, files_max_bytes=1024)
    client = stack.client()
    with pytest.raises(anthropic.APIStatusError) as refused:
        await client.beta.files.upload(file=("big.bin", b"x" * 4096))
    assert refused.value.status_code == 413
    assert refused.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert "1024 bytes" in refused.value.body["error"]["message"]  # type: ignore[index]

    # Without a Content-Length (chunked), the stream is cut off at the limit.
    async def chunks() -> Any:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(64):
            yield b"x" * 1024
        yield b"\r\n--b--\r\n"

    async with stack.http() as http:
        answer = await http.post(
            "/v1/files",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "request_too_large"
    assert [f async for f in client.beta.files.list()] == []
    left = [p.name for p in stack.files_dir.rglob("*") if p.is_file()]
    assert left == []
    small = await client.beta.files.upload(file=("ok.bin", b"x" * 1024))
    assert small.size_bytes == 1024


async def test_another_tenant_cannot_see_a_file(stack: Stack) -> None:
    mine, theirs = stack.client(stack.a), stack.client(stack.b)
    uploaded = await mine.beta.files.upload(file=("secret.txt", b"for a only"))
    with pytest.raises(anthropic.NotFoundError):
        await theirs.beta.files.retrieve_metadata(uploaded.id)
    with pytest.raises(anthropic.NotFoundError):
        await theirs.beta.files.download(uploaded.id)
    with pytest.raises(anthropic.NotFoundError):
        await theirs.beta.files.delete(uploaded.id)
    assert [f.id async for f in theirs.beta.files.list()] == []
    agent_id, environment_id = await _agent_and_environment(theirs)
    with pytest.raises(anthropic.NotFoundError):
        await theirs.beta.sessions.create(
            agent=agent_id,
            environment_id=environment_id,
            resources=[{"type": "file", "file_id": uploaded.id}],
        )
    assert (await mine.beta.files.retrieve_metadata(uploaded.id)).id == uploaded.id


async def test_a_mounted_file_is_read_and_an_output_downloaded(
    stack: Stack, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    client = stack.client()
    content = "the answer is 42\n"
    uploaded = await client.beta.files.upload(file=("notes.md", content.encode(), "text/markdown"))
    agent_id, environment_id = await _agent_and_environment(client)
    mount = str(tmp_path / "mnt" / "notes.md")
    report = f"report-{secrets.token_hex(3)}.txt"
    output = "résumé: 42\n" * 3
    model = stack.start_worker(
        agent_id,
        turns(
            Reply([ToolUse("read", {"file_path": mount})]),
            Reply(
                [ToolUse("write", {"file_path": str(sandbox.outputs / report), "content": output})]
            ),
            Reply([Text("Written.")]),
        ),
    )
    default = await client.beta.sessions.create(
        agent=agent_id,
        environment_id=environment_id,
        resources=[{"type": "file", "file_id": uploaded.id}],
    )
    assert default.resources[0].mount_path == f"/mnt/session/uploads/{uploaded.id}"

    session = await client.beta.sessions.create(
        agent=agent_id,
        environment_id=environment_id,
        resources=[{"type": "file", "file_id": uploaded.id, "mount_path": mount}],
    )
    (resource,) = session.resources
    assert resource.type == "file"
    assert (resource.file_id, resource.mount_path) == (uploaded.id, mount)
    events = await turn(client, session.id, "Read the notes, then write a report")
    assert events[-1].stop_reason.type == "end_turn"

    # The model saw the file's content as the read call's result.
    read_result = model.requests[1].tool_result_text()
    assert "the answer is 42" in read_result
    assert not model.requests[1].tool_results[0].get("is_error")

    async def listed() -> Any:
        files = [f async for f in client.beta.files.list(scope_id=session.id)]
        return next((f for f in files if f.filename == report), None)

    found = await wait_until_async(listed, timeout=10, what="the output file")
    assert found.scope is not None
    assert (found.scope.type, found.scope.id) == ("session", session.id)
    assert found.size_bytes == len(output.encode())
    assert found.mime_type == "text/plain"
    assert await (await client.beta.files.download(found.id)).read() == output.encode()
    # Uploads are not the session's outputs.
    assert uploaded.id not in [f.id async for f in client.beta.files.list(scope_id=session.id)]
    # The output is the tenant's file like any other, and goes like one.
    await client.beta.files.delete(found.id)
    assert await listed() is None


async def test_session_resources_on_a_running_session(stack: Stack, tmp_path: Path) -> None:
    client = stack.client()
    agent_id, environment_id = await _agent_and_environment(client)
    mount = str(tmp_path / "added.txt")
    model = stack.start_worker(
        agent_id,
        turns(
            Reply([ToolUse("bash", {"command": "echo first"})]),
            Reply([Text("First done.")]),
            Reply([ToolUse("read", {"file_path": mount})]),
            Reply([Text("Second done.")]),
        ),
    )
    session = await client.beta.sessions.create(agent=agent_id, environment_id=environment_id)
    assert session.resources == []
    await turn(client, session.id, "First")
    assert (await client.beta.sessions.resources.list(session.id)).data == []

    uploaded = await client.beta.files.upload(file=("added.txt", b"added while running\n"))
    added = await client.beta.sessions.resources.add(
        session.id, type="file", file_id=uploaded.id, mount_path=mount
    )
    assert added.id.startswith("sres_")
    assert (added.type, added.file_id, added.mount_path) == ("file", uploaded.id, mount)
    assert await client.beta.sessions.resources.retrieve(added.id, session_id=session.id) == added
    with pytest.raises(anthropic.APIStatusError) as taken:
        await client.beta.sessions.resources.add(
            session.id, type="file", file_id=uploaded.id, mount_path=mount
        )
    assert taken.value.status_code == 409
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.resources.add(session.id, type="file", file_id="file_nope")

    # The file added to the running session is in the sandbox for the next tool call.
    await turn(client, session.id, "Second")
    assert "added while running" in model.requests[-1].tool_result_text()

    async with stack.http() as http:
        repository = await http.post(
            f"/v1/sessions/{session.id}/resources",
            json={
                "type": "github_repository",
                "url": "https://github.com/octo/tools",
                "checkout": {"type": "branch", "name": "main"},
            },
        )
        assert repository.status_code == 200, repository.text
    repo = repository.json()
    assert (repo["type"], repo["mount_path"]) == ("github_repository", "/workspace/tools")
    listed = await client.beta.sessions.resources.list(session.id)
    assert [r.id for r in listed.data] == [added.id, repo["id"]]
    assert (await client.beta.sessions.retrieve(session.id)).resources == listed.data
    page = await client.beta.sessions.resources.list(session.id, limit=1)
    assert [r.id for r in page.data] == [added.id]
    assert page.next_page

    # Only a repository has a token to rotate, and Paddock's come from the Agent's Secrets.
    with pytest.raises(anthropic.BadRequestError) as file_token:
        await client.beta.sessions.resources.update(
            added.id, session_id=session.id, authorization_token="ghp_x"
        )
    assert "only github_repository" in file_token.value.message
    with pytest.raises(anthropic.BadRequestError) as repo_token:
        await client.beta.sessions.resources.update(
            repo["id"], session_id=session.id, authorization_token="ghp_x"
        )
    assert "not supported by Paddock" in repo_token.value.message

    deleted = await client.beta.sessions.resources.delete(added.id, session_id=session.id)
    assert (deleted.id, deleted.type) == (added.id, "session_resource_deleted")
    with pytest.raises(anthropic.NotFoundError) as gone:
        await client.beta.sessions.resources.retrieve(added.id, session_id=session.id)
    assert gone.value.body["error"]["details"] == {  # type: ignore[index]
        "error_code": "session_resource_not_found"
    }
    assert [r.id for r in (await client.beta.sessions.resources.list(session.id)).data] == [
        repo["id"]
    ]
    # Ids are made from mount paths: the one left keeps its id.
    assert (await client.beta.sessions.resources.retrieve(repo["id"], session_id=session.id)).id

    # The harness's routes take the session's token only.
    async with httpx.AsyncClient(base_url=stack.url) as http:
        answer = await http.get(
            f"/internal/v1/sessions/{session.id}/files/{uploaded.id}",
            headers={
                "Authorization": f"Bearer {stack.a.key}",
                "x-paddock-namespace": stack.a.namespace,
            },
        )
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
