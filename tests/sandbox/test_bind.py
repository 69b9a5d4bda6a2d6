"""Binding: the proxy environment of commands, one session per sandbox, files, and git wired
through the credential proxy (seen from a fake proxy that records every request head)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from paddock.models import FileResource, GitRepository
from paddock.sandbox import SandboxAlreadyBound, SandboxClient, SandboxError, SandboxUnreachable
from paddock.testing.ports import free_port
from paddock.testing.sandbox import RunningSandbox, launch

TOKEN = "pdk1.eyJzaWQiOiJ4In0.c2lnbmF0dXJl"


@dataclass
class FakeProxy:
    """Records the head of every request. CONNECT gets 403; `/git/<host>/<path>` is served
    from `root/<host>/<path>` (git's dumb HTTP protocol needs nothing more); with `hang` it
    never answers at all."""

    root: Path | None = None
    hang: bool = False
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
        except asyncio.IncompleteReadError:
            writer.close()
            return
        line, *header_lines = head.strip().split("\r\n")
        headers = dict(h.split(": ", 1) for h in header_lines)
        self.seen.append((line, {k.lower(): v for k, v in headers.items()}))
        if self.hang:
            await reader.read()  # until the client gives up
            writer.close()
            return
        method, target, _ = line.split(" ")
        body, status = b"", "404 Not Found"
        if method == "CONNECT":
            status = "403 Forbidden"
        elif self.root and target.startswith("/git/"):
            path = self.root / target.removeprefix("/git/").split("?")[0]
            if path.is_file():
                body, status = path.read_bytes(), "200 OK"
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    def requests(self, prefix: str) -> list[dict[str, str]]:
        return [headers for line, headers in self.seen if line.startswith(prefix)]


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., FakeProxy]]:
    servers: list[asyncio.Server] = []
    proxies: list[FakeProxy] = []

    async def start(**kwargs: object) -> FakeProxy:
        proxy = FakeProxy(**kwargs)  # type: ignore[arg-type]
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        servers.append(server)
        proxies.append(proxy)
        return proxy

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def git(*args: str, cwd: Path) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"}
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def published_repository(root: Path) -> str:
    """A bare repository served as https://git.example.com/org/repo.git: `main` with one
    commit, `feature` with a second. Returns the first commit."""
    work = root.parent / "source"
    work.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    (work / "README.md").write_text("first\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "first", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "--quiet", "-b", "feature", cwd=work)
    (work / "feature.txt").write_text("feature\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "feature", cwd=work)
    git("checkout", "--quiet", "main", cwd=work)
    bare = root / "git.example.com" / "org" / "repo.git"
    bare.parent.mkdir(parents=True)
    git("clone", "--quiet", "--bare", str(work), str(bare), cwd=root)
    git("update-server-info", cwd=bare)
    return first


def basic(session_id: str) -> str:
    return "Basic " + base64.b64encode(f"{session_id}:{TOKEN}".encode()).decode()


async def bash(server: RunningSandbox, command: str) -> str:
    async with server.client() as client:
        return (await client.call("bash", {"command": command})).text


async def test_bind_sets_the_proxy_environment_and_writes_files(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox()
    assert "PROXY" not in await bash(server, "env")

    notes = server.workdir / "notes" / "task.md"
    async with server.client() as client:
        result = await client.bind(
            "sesn_env1",
            "http://10.0.0.7:3128",
            TOKEN,
            files=[FileResource(path=str(notes), content="fix the bug\n")],
        )
    assert result.session_id == "sesn_env1"
    assert [(f.path, f.ok) for f in result.files] == [(str(notes), True)]
    assert notes.read_text() == "fix the bug\n"

    env = dict(line.split("=", 1) for line in (await bash(server, "env")).splitlines()[:-1])
    proxy = f"http://sesn_env1:{TOKEN}@10.0.0.7:3128"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == proxy
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
    assert set(env) == {
        *("PATH", "HOME", "LANG", "TERM", "PWD", "SHLVL", "_"),
        *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"),
    }
    assert server.canary not in str(env)


async def test_a_sandbox_serves_one_session_only(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox()
    async with server.client() as client:
        first = await client.bind("sesn_first", "http://10.0.0.7:3128", TOKEN)
        again = await client.bind("sesn_first", "http://10.0.0.7:3128", TOKEN)
        assert again == first
        with pytest.raises(SandboxAlreadyBound) as refused:
            await client.bind("sesn_second", "http://10.0.0.8:3128", "other-token")
    assert refused.value.status == 409
    assert refused.value.kind == "conflict_error"

    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/bind",
            headers={"Authorization": f"Bearer {server.token}"},
            json={"session_id": "sesn_third", "proxy_url": "http://10.0.0.9:1", "proxy_token": "t"},
        )
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict_error"
    assert "sesn_first" in await bash(server, "echo $HTTP_PROXY")


async def test_a_bind_waits_for_a_sandbox_that_refuses_connections_at_first(
    tmp_path: Path,
) -> None:
    """As a claimed sandbox does until the policy engine admits its Agent's harness (which
    refuses connections meanwhile): the bind is tried again and succeeds once it can."""
    port, token = free_port(), secrets.token_urlsafe(16)
    async with SandboxClient(f"http://127.0.0.1:{port}", token) as client:
        bind = asyncio.create_task(client.bind("sesn_late", "http://10.0.0.7:3128", TOKEN))
        # Nothing listens on the port until the server is up: the first attempts are refused.
        server = await asyncio.to_thread(launch, tmp_path / "late", port=port, token=token)
        try:
            result = await bind
            assert result.session_id == "sesn_late"
            assert "sesn_late" in await bash(server, "echo $HTTP_PROXY")
        finally:
            server.stop()


async def test_a_sandbox_that_never_accepts_is_unreachable_after_the_reach_timeout() -> None:
    async with SandboxClient(f"http://127.0.0.1:{free_port()}", "t") as client:
        started = time.monotonic()
        with pytest.raises(SandboxUnreachable):
            await client.bind("sesn_x", "http://10.0.0.7:3128", TOKEN, reach_timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5


async def test_invalid_binds_are_refused_and_bind_nothing(sandbox: RunningSandbox) -> None:
    good = {"session_id": "sesn_ok", "proxy_url": "http://10.0.0.7:3128", "proxy_token": "t"}
    changes = [
        {"session_id": "session-1"},
        {"proxy_url": "ftp://10.0.0.7"},
        {"proxy_url": "http://user:pw@10.0.0.7:3128"},
        {"proxy_url": "http://10.0.0.7:3128/path"},
        {"proxy_token": ""},
        {"git_credential_hosts": ["github.com/evil"]},
        {"repositories": [{"url": "file:///srv/repo.git"}]},
        {"files": [{"path": "relative.txt", "content": "x"}]},
    ]
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    async with httpx.AsyncClient(base_url=sandbox.url, headers=headers) as http:
        for change in changes:
            response = await http.post("/v1/bind", json={**good, **change})
            assert response.status_code == 400, change
            assert response.json()["error"]["type"] == "invalid_request_error"
    # The shared sandbox is still unbound.
    async with sandbox.client() as client:
        assert "PROXY" not in (await client.call("bash", {"command": "env"})).text


async def test_git_clones_through_the_proxy(
    start_sandbox: Callable[..., RunningSandbox],
    start_proxy: Callable[..., FakeProxy],
    tmp_path: Path,
) -> None:
    (tmp_path / "served").mkdir()
    first = published_repository(tmp_path / "served")
    proxy = await start_proxy(root=tmp_path / "served")
    server = start_sandbox()
    workdir = server.workdir
    async with server.client() as client:
        result = await client.bind(
            "sesn_git1",
            proxy.url,
            TOKEN,
            git_credential_hosts=["git.example.com"],
            repositories=[
                GitRepository(url="https://git.example.com/org/repo.git", branch="feature"),
                GitRepository(
                    url="https://git.example.com/org/repo.git",
                    commit=first[:12],
                    mount_path=str(workdir / "pinned"),
                ),
                GitRepository(url="https://other.example/lib.git"),
            ],
        )
    repo, pinned, lib = result.repositories
    assert (repo.mount_path, repo.ok, repo.error) == (str(workdir / "repo"), True, None)
    assert (workdir / "repo" / "feature.txt").read_text() == "feature\n"
    assert (pinned.ok, git("rev-parse", "HEAD", cwd=workdir / "pinned")) == (True, first)
    assert (lib.mount_path, lib.ok) == (str(workdir / "lib"), False)
    assert lib.error
    assert "403" in lib.error
    assert TOKEN not in lib.error

    # Credential hosts: the proxy's /git/ route, in origin form, with the session's
    # Proxy-Authorization; the upstream token is the proxy's business.
    routed = proxy.requests(
        "GET /git/git.example.com/org/repo.git/info/refs?service=git-upload-pack"
    )
    assert routed
    assert all(headers["proxy-authorization"] == basic("sesn_git1") for headers in routed)
    # Other hosts: tunnelled through the proxy, authenticated the same way.
    (tunnel,) = proxy.requests("CONNECT other.example:443 ")
    assert tunnel["proxy-authorization"] == basic("sesn_git1")

    config = await bash(server, "git config --global --get-regexp '^url\\.'")
    assert f"url.{proxy.url}/git/git.example.com/.insteadof https://git.example.com/" in config


async def test_a_hanging_clone_times_out_and_never_fails_the_bind(
    start_sandbox: Callable[..., RunningSandbox], start_proxy: Callable[..., FakeProxy]
) -> None:
    proxy = await start_proxy(hang=True)
    server = start_sandbox("--clone-timeout", "2")
    started = time.monotonic()
    async with server.client() as client:
        result = await client.bind(
            "sesn_hang1",
            proxy.url,
            TOKEN,
            git_credential_hosts=["git.example.com"],
            repositories=[
                GitRepository(url="https://git.example.com/org/repo.git"),
                GitRepository(url="https://other.example/lib.git"),
            ],
        )
    assert time.monotonic() - started < 10
    for status in result.repositories:
        assert not status.ok
        assert status.error
        assert status.error.startswith("timed out after 2 s")
    assert len(proxy.seen) == 2


async def test_an_unreachable_proxy_fails_the_clone_quickly(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox()
    started = time.monotonic()
    async with server.client() as client:
        result = await client.bind(
            "sesn_down1",
            f"http://127.0.0.1:{free_port()}",
            TOKEN,
            repositories=[GitRepository(url="https://unreachable.example/org/repo.git")],
        )
    assert time.monotonic() - started < 10
    (status,) = result.repositories
    assert not status.ok
    assert status.error
    assert "unable to access" in status.error


async def test_a_repository_added_later_is_cloned_into_a_bound_sandbox_only(
    start_sandbox: Callable[..., RunningSandbox],
    start_proxy: Callable[..., FakeProxy],
    tmp_path: Path,
) -> None:
    (tmp_path / "served").mkdir()
    published_repository(tmp_path / "served")
    proxy = await start_proxy(root=tmp_path / "served")
    server = start_sandbox()
    repository = GitRepository(url="https://git.example.com/org/repo.git", branch="feature")
    async with server.client() as client:
        with pytest.raises(SandboxError) as unbound:
            await client.mount_repository("repository:x", repository)
        assert unbound.value.status == 409
        await client.bind("sesn_later1", proxy.url, TOKEN, git_credential_hosts=["git.example.com"])
        cloned = await client.mount_repository("repository:x", repository)
        assert (cloned.ok, cloned.mount_path) == (True, str(server.workdir / "repo"))
        assert (server.workdir / "repo" / "feature.txt").read_text() == "feature\n"
        again = await client.mount_repository("repository:x", repository)
        assert again.skipped


async def test_commits_get_a_default_identity_unless_the_image_sets_one(
    start_sandbox: Callable[..., RunningSandbox], start_proxy: Callable[..., FakeProxy]
) -> None:
    """A pod's user and host names give git no identity it accepts, so bind sets one; an
    identity the image configured (here in HOME's .gitconfig) is kept."""
    proxy = await start_proxy()
    plain, configured = start_sandbox(), start_sandbox()
    (configured.home / ".gitconfig").write_text(
        "[user]\n\tname = Image\n\temail = ci@example.com\n"
    )
    show = "git config user.name; git config user.email"
    for server, session in ((plain, "sesn_who1"), (configured, "sesn_who2")):
        async with server.client() as client:
            await client.bind(session, proxy.url, TOKEN)
    assert (await bash(plain, show)).splitlines()[:2] == [
        "Paddock agent",
        "sesn_who1@paddock.invalid",
    ]
    assert (await bash(configured, show)).splitlines()[:2] == ["Image", "ci@example.com"]
