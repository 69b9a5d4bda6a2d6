"""A small OAuth 2.0 authorization server and an MCP-like resource server that checks its
tokens, both real HTTP servers on loopback (aiohttp, in the test's event loop).

The authorization server issues short-lived access tokens and refresh tokens (RFC 6749 §6
`refresh_token` grant, optionally rotating them), authenticates its client with
`client_secret_basic`, `client_secret_post` or not at all, and can revoke tokens. Its clock is
injectable, so a test lets a token expire by moving the clock, not by sleeping. Resource
servers check its tokens with RFC 7662 introspection (`POST /introspect`): the real MCP server
of `paddock.testing.mcpserver` does, with `--introspection-url`. A synchronous test (the
end-to-end ones) runs it on a thread of its own with `run_in_thread`.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from aiohttp import web

ClientAuth = Literal["none", "client_secret_basic", "client_secret_post"]


@dataclass
class Clock:
    """A clock tests move forward; starts at the real time."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = runner.addresses[0][1]
    return runner, int(port)


@dataclass
class AuthorizationServer:
    client_id: str = "paddock-test"
    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_hex(12))
    client_auth: ClientAuth = "client_secret_basic"
    access_ttl_s: float = 300.0
    rotate: bool = True
    """Answer each refresh with a new refresh token and revoke the used one."""
    clock: Callable[[], float] = time.time
    access: dict[str, float] = field(default_factory=dict)
    """Live access tokens and when they expire."""
    refresh: set[str] = field(default_factory=set)
    refreshes: list[dict[str, str]] = field(default_factory=list)
    """The form of every refresh request, as received."""
    issued: list[str] = field(default_factory=list)
    """Every access and refresh token it issued, revoked ones included (for leak checks)."""
    introspections: int = 0
    """How many introspection requests resource servers made."""
    host: str = "127.0.0.1"
    port: int = 0
    """0: any free port (known once started)."""
    _runner: web.AppRunner | None = None

    @property
    def token_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/introspect"

    async def start(self) -> AuthorizationServer:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/introspect", self._introspect)
        self._runner, self.port = await _serve(app, self.host, self.port)
        return self

    @contextmanager
    def run_in_thread(self) -> Iterator[AuthorizationServer]:
        """Serve from a thread's own event loop for the ``with`` block, so that a test whose
        own thread blocks (waiting on a session) is still answered."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="oauth-server", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def issue(self) -> tuple[str, str, float]:
        """A new (access token, refresh token, expiry), as after an authorization."""
        access, refresh = "at-" + secrets.token_hex(12), "rt-" + secrets.token_hex(12)
        expires = self.clock() + self.access_ttl_s
        self.access[access] = expires
        self.refresh.add(refresh)
        self.issued += [access, refresh]
        return access, refresh, expires

    def valid(self, access: str) -> bool:
        return self.access.get(access, 0.0) > self.clock()

    def revoke(self, token: str) -> None:
        self.access.pop(token, None)
        self.refresh.discard(token)

    def grants(self) -> list[str]:
        """The `grant_type` of every token request, in order."""
        return [form.get("grant_type", "") for form in self.refreshes]

    async def _introspect(self, request: web.Request) -> web.Response:
        # RFC 7662 §2: only `active` is required; the resource server needs no more.
        self.introspections += 1
        token = str((await request.post()).get("token", ""))
        if not self.valid(token):
            return web.json_response({"active": False})
        return web.json_response(
            {"active": True, "client_id": self.client_id, "exp": int(self.access[token])}
        )

    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        if self.client_auth == "client_secret_basic":
            header = request.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return (unquote(user), unquote(password)) == (self.client_id, self.client_secret)
        if form.get("client_id") != self.client_id:
            return False
        if self.client_auth == "client_secret_post":
            return form.get("client_secret") == self.client_secret
        return True

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.refreshes.append(form)
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        used = form.get("refresh_token", "")
        if used not in self.refresh:
            return web.json_response(
                {"error": "invalid_grant", "error_description": f"unknown token {used}"},
                status=400,
            )
        access, refresh, _ = self.issue()
        if self.rotate:
            self.refresh.discard(used)
        else:
            self.refresh.discard(refresh)
            refresh = used
        answer: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(self.access_ttl_s),
        }
        if self.rotate:
            answer["refresh_token"] = refresh
        return web.json_response(answer)


@dataclass
class ProtectedServer:
    """An MCP-like endpoint (`POST /mcp`): 200 for a bearer token ``valid`` accepts, 401
    otherwise; records the tokens it saw."""

    valid: Callable[[str], bool]
    seen: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> ProtectedServer:
        app = web.Application()
        app.router.add_post("/mcp", self._call)
        self._runner, self.port = await _serve(app)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _call(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        self.seen.append(token)
        if not header.startswith("Bearer ") or not self.valid(token):
            return web.json_response(
                {"error": "invalid_token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})
