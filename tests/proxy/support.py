"""Test support: real upstream servers on loopback for the credential proxy.

Upstreams are small aiohttp applications served from a thread with its own event loop
(`paddock.testing.gitserver.ThreadedApp`, which also serves the git host), so the tests can
drive the proxy with blocking clients (curl, httpx, raw sockets) while the upstreams keep
answering. Nothing is mocked: every request crosses real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import threading
from dataclasses import dataclass

from aiohttp import web

from paddock.testing.gitserver import CLIENT_ENV, ThreadedApp


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
