"""Test support: the credential proxy as a real process, and real upstream servers on loopback.

Upstreams are small aiohttp applications served from a thread with its own event loop, so the
tests can drive the proxy with blocking clients (curl, httpx, raw sockets) while the upstreams
keep answering. Nothing is mocked: every request crosses real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from paddock.testing.ports import free_port

# Clients run with this environment only, so no proxy setting of the machine leaks in.
CLIENT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}


class ThreadedApp:
    """An aiohttp application on 127.0.0.1:<free port>, served from its own thread and loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
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
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Seen:
    """One request as an upstream received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes


class Upstream(ThreadedApp):
    """Stand-in for the Claude API and for "the internet": records what arrives.

    ``/sse`` sends one event, waits until the test sets ``release``, then sends another.
    Every other path answers ``{"ok": true}``; nothing received is echoed back.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.release = threading.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/sse", self._sse)
        app.router.add_route("*", "/{tail:.*}", self._any)
        super().__init__(app)

    async def _record(self, request: web.Request) -> None:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )

    async def _any(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"ok": True, "bytes": len(self.seen[-1].body)})

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: first\ndata: {}\n\n")
        released = await asyncio.to_thread(self.release.wait, 10)
        await response.write(b"event: second\ndata: {}\n\n" if released else b"event: timeout\n\n")
        await response.write_eof()
        return response


class GitServer(ThreadedApp):
    """A real git smart-HTTP server (``git http-backend``) that demands ``authorization``.

    Serves bare repositories under ``root``; requests without the expected ``Authorization``
    get 401, like a private repository on a git host.
    """

    def __init__(self, root: Path, authorization: str) -> None:
        self.root = root
        self.authorization = authorization
        self.authorized = 0
        self.refused = 0
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        super().__init__(app)

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

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self.authorization:
            self.refused += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        self.authorized += 1
        env = {
            **CLIENT_ENV,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
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


class RawServer:
    """A TCP server on 127.0.0.1 that answers every request head with ``reply``, verbatim."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := connection.recv(65536)):
                    data += chunk
                connection.sendall(self.reply)


def curl(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """curl with a clean environment; ``-w`` output ends up at the end of stdout."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), *args],
        env=CLIENT_ENV,
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )


def raw_exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` verbatim to 127.0.0.1:``port``; everything received until the proxy
    closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def proxy_authorization(session_id: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{session_id}:{token}".encode()).decode()
