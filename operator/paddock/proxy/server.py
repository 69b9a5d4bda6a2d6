"""The proxy process: three listeners on one event loop, and the config file watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import web

from paddock.proxy.admin import Admin
from paddock.proxy.api import ApiProxy
from paddock.proxy.audit import Audit
from paddock.proxy.config import ConfigError, Listener, parse_config
from paddock.proxy.egress import EgressProxy
from paddock.proxy.files import WatchedFile
from paddock.proxy.http1 import MAX_HEAD_BYTES
from paddock.proxy.runtime import Runtime

log = logging.getLogger("paddock.proxy")
CONFIG_POLL_SECONDS = 1.0


class ProxyServer:
    """The credential proxy. ``await start()`` binds all listeners or raises; ``stop()`` closes
    them. The config file is re-read when it changes; an invalid new config is logged and the
    last good one stays in force."""

    def __init__(self, config_path: Path) -> None:
        self._config_file = WatchedFile(config_path)
        self._audit = Audit()
        self._runtime: Runtime | None = None
        self._runners: list[web.AppRunner] = []
        self._egress: asyncio.Server | None = None
        self._watch: asyncio.Task[None] | None = None
        self._api: ApiProxy | None = None

    async def start(self) -> None:
        """Load the config and bind the listeners. Raises `ConfigError` or OSError."""
        try:
            text = self._config_file.read()
        except OSError as exc:
            raise ConfigError(f"{self._config_file.path}: cannot read: {exc.strerror}") from None
        config = parse_config(text, str(self._config_file.path))
        runtime = self._runtime = Runtime(config)
        self._api = ApiProxy(runtime, self._audit)
        await self._api.start()
        await self._serve_app(self._api.app(), config.listeners.api)
        await self._serve_app(Admin(runtime, self._audit).app(), config.listeners.admin)
        egress = EgressProxy(runtime, self._audit)
        self._egress = await asyncio.start_server(
            egress.handle,
            config.listeners.egress.host,
            config.listeners.egress.port,
            limit=MAX_HEAD_BYTES,
        )
        self._watch = asyncio.create_task(self._watch_config())
        log.info(
            "listening: api %s, egress %s, admin %s",
            *(
                f"{x.host}:{x.port}"
                for x in (config.listeners.api, config.listeners.egress, config.listeners.admin)
            ),
        )

    async def _serve_app(self, app: web.Application, listener: Listener) -> None:
        # No access log: the audit line is the one record per request, and it holds no secrets.
        # A request whose client hung up (an interrupted tool or model call) is cancelled, so
        # its upstream call stops too; at SIGTERM in-flight requests get 5 s (the gateway's
        # figures), not aiohttp's 60, which outlived the pod's grace period.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, listener.host, listener.port).start()

    async def stop(self) -> None:
        """Close the listeners and the upstream pool. Open tunnels are cut."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._egress is not None:
            self._egress.close()
        for runner in self._runners:
            await runner.cleanup()
        if self._api is not None:
            await self._api.close()
        if self._runtime is not None:
            await self._runtime.vaults().close()

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            self._reload()

    def _reload(self) -> None:
        """Apply the config file if it changed and is valid."""
        assert self._runtime is not None
        try:
            text = self._config_file.poll()
            if text is None:
                return
            config = parse_config(text, str(self._config_file.path))
        except (OSError, ConfigError) as exc:
            log.error("config not reloaded, keeping the previous one: %s", exc)
            return
        if config.listeners != self._runtime.config.listeners:
            # The old ports stay bound and must stay blocked for egress: refuse the whole file.
            log.error("config not reloaded: listeners changed; restart the proxy to apply them")
            return
        self._runtime.config = config
        log.info("config reloaded")
