"""A plain-HTTP relay from the local pod network to an HTTPS upstream (the Claude API).

The local pod network has no NAT, so a proxy sidecar in a pod cannot reach the Internet; it
reaches this relay on the host's bridge address instead, which forwards requests and streams
replies as they are. It adds nothing: the API key is still added by the proxy sidecar.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import ClientSession, ClientTimeout, web

# Hop-by-hop, or recomputed for the other side of the relay.
_DROPPED = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


class Relay:
    def __init__(self, upstream: str, *, host: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._session: ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Relay:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            started.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="relay", daemon=True).start()
        if not started.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    async def _start(self) -> None:
        # Bodies pass through as they are (compressed or not); streams are not timed out.
        self._session = ClientSession(auto_decompress=False, timeout=ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as upstream:
            reply = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED},
            )
            await reply.prepare(request)
            async for chunk in upstream.content.iter_any():
                await reply.write(chunk)
            await reply.write_eof()
            return reply

    def stop(self) -> None:
        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
