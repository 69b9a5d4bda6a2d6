"""The Claude API reverse proxy for the harness in the same pod.

Every request goes to the configured upstream with ``x-api-key`` set from the mounted Secret;
whatever credentials the caller sent are dropped. Responses stream through chunk by chunk as
they arrive, so server-sent events reach the harness without delay.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from paddock.proxy.audit import Audit, Entry
from paddock.proxy.files import SecretUnavailable
from paddock.proxy.http1 import HOP_BY_HOP
from paddock.proxy.runtime import Runtime

MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Caller credentials and framing the client library recomputes.
_DROP_REQUEST = HOP_BY_HOP | {
    "host",
    "content-length",
    "transfer-encoding",
    "x-api-key",
    "authorization",
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
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        headers.append(("x-api-key", api_key))
        body = await request.read() if request.body_exists else None
        entry.bytes_up = len(body or b"")
        response: web.StreamResponse | None = None
        try:
            async with self._client.request(
                request.method,
                upstream + request.raw_path,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as reply:
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
