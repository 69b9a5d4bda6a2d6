"""The API listener: the Claude API reverse proxy for the harness in the same pod, and its
route to the Agent's MCP servers.

Every request goes to the configured upstream with ``x-api-key`` set from the mounted Secret;
whatever credentials the caller sent are dropped. ``/mcp/<server>[/subpath][?query]`` goes to
that MCP server's URL instead, with the `Authorization` of the session's vault credential for
it (the vaults are named by ``X-Paddock-Vault-Ids``, which is not forwarded). Responses stream
through chunk by chunk as they arrive, so server-sent events reach the harness without delay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from paddock.proxy.audit import Audit, Entry
from paddock.proxy.files import SecretUnavailable
from paddock.proxy.http1 import HOP_BY_HOP
from paddock.proxy.policy import check_destination
from paddock.proxy.runtime import Runtime
from paddock.proxy.vaults import VAULT_IDS_HEADER, CredentialError

MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Caller credentials and framing the client library recomputes.
_DROP_REQUEST = HOP_BY_HOP | {
    "host",
    "content-length",
    "transfer-encoding",
    "x-api-key",
    "authorization",
    VAULT_IDS_HEADER.lower(),
}
_DROP_RESPONSE = HOP_BY_HOP | {"content-length", "transfer-encoding"}
# Methods that get the key. TRACE (an upstream that echoes the request would return the
# key), OPTIONS, CONNECT and anything else are answered here and never forwarded.
API_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


def _error(
    status: int, message: str, kind: str = "api_error", headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the Claude API's envelope, so the SDK reports (and retries) it normally."""
    body = {
        "type": "error",
        "error": {"type": kind, "message": f"credential proxy: {message}"},
    }
    return web.json_response(body, status=status, headers=headers)


class ApiProxy:
    """The API listener's application. `start` before serving, `close` after."""

    def __init__(self, runtime: Runtime, audit: Audit) -> None:
        self._runtime = runtime
        self._audit = audit
        self._client: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        """An application that forwards every path and method."""
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/mcp/{server:[^/]+}{rest:(/.*)?}", self.handle_mcp)
        # `/mcp` itself is the MCP route too (with no server): it never reaches the Claude API.
        app.router.add_route("*", "/mcp{rest:/?}", self.handle_mcp)
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    async def start(self) -> None:
        """Open the upstream connection pool."""
        self._client = aiohttp.ClientSession(
            # Bytes pass through untouched (gzip stays gzip); streams may be long and quiet.
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
        )

    async def close(self) -> None:
        """Close the upstream connection pool."""
        if self._client is not None:
            await self._client.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Forward ``request`` upstream with the API key; stream the response back."""
        assert self._client is not None, "ApiProxy.start() was not called"
        upstream = self._runtime.config.upstream.rstrip("/")
        parts = urlsplit(upstream)
        entry = Entry("api", method=request.method, host=parts.hostname, rule="api")
        entry.port = parts.port or (443 if parts.scheme == "https" else 80)
        if request.method not in API_METHODS:
            entry.rule, entry.status = "api-method", 405
            self._audit.record(entry)
            allow = {"Allow": ", ".join(sorted(API_METHODS))}
            message = f"method {request.method} is not forwarded"
            return _error(405, message, "invalid_request_error", allow)
        try:
            api_key = self._runtime.api_key()
        except SecretUnavailable:
            entry.rule, entry.status = "api-key-unavailable", 503
            self._audit.record(entry)
            return _error(503, "the API key is unavailable")
        entry.decision = "allow"
        return await self._forward(
            request, upstream + request.raw_path, [("x-api-key", api_key)], entry
        )

    async def handle_mcp(self, request: web.Request) -> web.StreamResponse:
        """Forward ``request`` to the MCP server it names, with the session's vault credential
        for that server's URL; stream the response back."""
        name = request.match_info.get("server", "")
        entry = Entry("api", method=request.method, rule=f"mcp:{name}")
        server = next((s for s in self._runtime.config.mcp_servers if s.name == name), None)
        if server is None:
            entry.rule, entry.status = "mcp-unknown-server", 404
            self._audit.record(entry)
            return _error(404, f"no MCP server named {name!r}", "not_found_error")
        parts = urlsplit(server.url)
        entry.host = parts.hostname
        entry.port = parts.port or (443 if parts.scheme == "https" else 80)
        if request.method not in API_METHODS:
            entry.status = 405
            self._audit.record(entry)
            return _error(405, f"method {request.method} is not forwarded", "invalid_request_error")
        # Whoever may write an Agent chooses this URL: the address rules of egress apply, so a
        # server URL cannot make the proxy reach the metadata service or cluster internals.
        destination = await check_destination(
            self._runtime.config, parts.hostname or "", entry.port
        )
        if not destination.allowed:
            status = 502 if destination.rule == "dns" else 403
            entry.rule, entry.status = f"mcp:{name}:{destination.rule}", status
            self._audit.record(entry)
            kind = "api_error" if status == 502 else "permission_error"
            return _error(status, f"MCP server {name}: {destination.message}", kind)
        vault_ids: Sequence[str] = [
            v.strip() for v in request.headers.get(VAULT_IDS_HEADER, "").split(",") if v.strip()
        ]
        vaults = self._runtime.vaults()
        try:
            authorization = await vaults.authorization(server.url, vault_ids)
        except CredentialError as exc:
            # 401, as the server would answer: the harness reports an authentication failure.
            entry.rule, entry.status = f"mcp:{name}:{exc.reason}", 401
            self._audit.record(entry)
            return _error(401, str(exc), "authentication_error")
        extra: list[tuple[str, str]] = []
        if authorization is not None:
            extra.append(("Authorization", authorization))
            entry.injected = "vault"
        entry.decision = "allow"
        target = server.url.rstrip("/") + request.match_info["rest"]
        if request.query_string:
            target += "?" + request.query_string

        async def reauthorize() -> str | None:
            """After a 401: a refreshed OAuth token to send once more, or None."""
            if authorization is None:
                return None
            try:
                return await vaults.unauthorized(server.url, vault_ids, authorization)
            except CredentialError as exc:
                entry.rule = f"mcp:{name}:{exc.reason}"
                return None

        return await self._forward(request, target, extra, entry, reauthorize)

    async def _forward(
        self,
        request: web.Request,
        url: str,
        extra: list[tuple[str, str]],
        entry: Entry,
        reauthorize: Callable[[], Awaitable[str | None]] | None = None,
    ) -> web.StreamResponse:
        """Send ``request`` to ``url`` with the caller's headers (minus credentials and
        framing) and ``extra``; stream the reply back; audit ``entry`` at the end. A 401 is
        sent once more with the `Authorization` that ``reauthorize`` gives, if it gives one."""
        client = self._client
        assert client is not None, "ApiProxy.start() was not called"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        body = await request.read() if request.body_exists else None
        entry.bytes_up = len(body or b"")
        response: web.StreamResponse | None = None

        async def send(added: list[tuple[str, str]]) -> aiohttp.ClientResponse:
            return await client.request(
                request.method, url, headers=headers + added, data=body, allow_redirects=False
            )

        try:
            reply = await send(extra)
            if reply.status == 401 and reauthorize is not None:
                retried = await reauthorize()
                if retried is not None:
                    reply.release()
                    others = [(k, v) for k, v in extra if k.lower() != "authorization"]
                    reply = await send([*others, ("Authorization", retried)])
            async with reply:
                response = web.StreamResponse(status=reply.status, reason=reply.reason)
                for name, value in reply.headers.items():
                    if name.lower() not in _DROP_RESPONSE:
                        response.headers.add(name, value)
                if reply.content_length is not None and "transfer-encoding" not in reply.headers:
                    response.content_length = reply.content_length
                entry.status = reply.status
                await response.prepare(request)
                async for chunk in reply.content.iter_any():
                    await response.write(chunk)
                    entry.bytes_down += len(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            if response is not None and response.prepared:
                raise  # mid-stream: dropping the connection is the only honest signal left
            entry.status = 502
            return _error(502, f"upstream unreachable ({type(exc).__name__})")
        finally:
            self._audit.record(entry)
