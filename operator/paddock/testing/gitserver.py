"""A real git host for tests: `git http-backend` (smart HTTP: clone, fetch, push) behind a
small aiohttp server on loopback that demands a token, like a private repository.

`ThreadedApp` serves an aiohttp application from a thread with its own event loop, so tests
can drive it with blocking clients (git, curl, raw sockets) while it keeps answering.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from paddock.testing.ports import free_port

CLIENT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}
"""The environment git runs with here, so no setting of the machine leaks in."""


class ThreadedApp:
    """An aiohttp application on 127.0.0.1:<free port>, served from its own thread and loop;
    ``extra_sites`` are further (host, port) pairs it listens on."""

    def __init__(self, app: web.Application, extra_sites: tuple[tuple[str, int], ...] = ()) -> None:
        self.app = app
        self.port = free_port()
        self.extra_sites = extra_sites
        self.loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        for host, port in (("127.0.0.1", self.port), *self.extra_sites):
            await web.TCPSite(self._runner, host, port).start()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass(frozen=True)
class GitRequest:
    """One request as the git host received it."""

    method: str
    path: str
    query: str
    authorized: bool
    """It carried the expected ``Authorization``."""


def _standard_port_address(port: int) -> str | None:
    """A loopback address of its own where ``port`` is free (root only: it is privileged)."""
    if os.geteuid() != 0:
        return None
    for _ in range(20):
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
        return address
    return None


class GitServer(ThreadedApp):
    """A real git smart-HTTP server (``git http-backend``) that demands ``authorization``.

    Serves bare repositories under ``root`` (push included); requests without the expected
    ``Authorization`` get 401, like a private repository on a git host. It listens on
    127.0.0.1:`port` and, run as root, also on port 80 of a loopback address of its own
    (`standard_address`), for URLs that cannot name a port (a credential host is a bare name).
    """

    def __init__(self, root: Path, authorization: str) -> None:
        self.root = root
        self.authorization = authorization
        self.requests: list[GitRequest] = []
        self.standard_address = _standard_port_address(80)
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        sites = ((self.standard_address, 80),) if self.standard_address else ()
        super().__init__(app, sites)

    @property
    def authorized(self) -> int:
        return sum(r.authorized for r in self.requests)

    @property
    def refused(self) -> int:
        return sum(not r.authorized for r in self.requests)

    def create_repo(self, name: str) -> None:
        """A bare repository with one commit holding README."""
        work = self.root / f"{name}-work"
        env = {**CLIENT_ENV, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
        (work / "README").write_text("hello from the git host\n")
        subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=env)
        subprocess.run(["git", "-C", str(work), "commit", "-qm", "init"], check=True, env=env)
        bare = self.root / f"{name}.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, env=env)

    def git(self, repo: str, *args: str) -> str:
        """Run git in the bare repository ``repo`` (as created), for example to read a pushed
        commit; its stdout."""
        return subprocess.run(
            ["git", "--git-dir", str(self.root / f"{repo}.git"), *args],
            env=CLIENT_ENV, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        authorized = request.headers.get("Authorization") == self.authorization
        self.requests.append(
            GitRequest(request.method, request.path, request.query_string, authorized)
        )
        if not authorized:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        env = {
            **CLIENT_ENV,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
            # A REMOTE_USER is what lets http-backend accept pushes (receive-pack).
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
        }
        process = await asyncio.create_subprocess_exec(
            "git", "http-backend", env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        output, _ = await process.communicate(await request.read())
        head, _, body = output.partition(b"\r\n\r\n")
        response = web.Response(body=body)
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                response.set_status(int(value.split()[0]))
            else:
                response.headers[name] = value
        return response
