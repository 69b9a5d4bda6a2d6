"""MCP servers from the harness's side: their tools offered to the model and their calls run,
with the official `mcp` SDK over streamable HTTP, always through the credential proxy's API
listener (`<api>/mcp/<server>`), which adds the session's vault credential. The harness never
holds an MCP credential: it only names the session's vaults (`X-Paddock-Vault-Ids`).

A server that cannot be reached, answers too slowly or refuses the credential is an
`McpFailure`; the session reports it as a `session.error` (`mcp_connection_failed_error` or
`mcp_authentication_failed_error`, with `mcp_server_name`) and goes on: without the server's
tools when listing failed, with an error result when a call did.

Caching: tool lists are kept per worker for `LIST_TTL` seconds (keyed by server, URL and the
session's vaults, since a credential may decide what a server lists), failures for
`FAILURE_TTL`, so a model step neither reconnects nor waits for a dead server each time. Each
call opens its own client: the 2026-07-28 protocol is stateless per request, and a client
tied to one session's task cannot be shared across the worker's sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from paddock.eventlog import (
    ErrorDetail,
    RetryStatus,
    SessionErrorEvent,
    SessionSettings,
    SessionState,
)
from paddock.harness.interrupts import Interrupts
from paddock.harness.sessionlog import SessionLog
from paddock.harness.tools import Toolbox
from paddock.harness.transcript import ToolCall
from paddock.models import AgentSpec, McpServer

log = logging.getLogger(__name__)
T = TypeVar("T")

VAULT_IDS_HEADER = "X-Paddock-Vault-Ids"
LIST_TTL = 300.0
FAILURE_TTL = 10.0
McpErrorType = Literal["mcp_connection_failed_error", "mcp_authentication_failed_error"]
OUTCOME_UNKNOWN = (
    "This call was interrupted by an infrastructure failure and its outcome is unknown: it "
    "may or may not have taken effect. Check the state before running it again."
)


class McpFailure(Exception):
    """An MCP server could not be used: unreachable, too slow, or it refused the credential."""

    def __init__(self, error_type: McpErrorType, server: str, message: str) -> None:
        super().__init__(message)
        self.error_type: McpErrorType = error_type
        self.server = server
        self.message = message

    def event(self) -> SessionErrorEvent:
        """The `session.error` that reports it. `retrying`: the session goes on, and the
        server is tried again at a later step."""
        detail = ErrorDetail.model_validate(
            {
                "type": self.error_type,
                "message": self.message,
                "retry_status": RetryStatus(type="retrying"),
                "mcp_server_name": self.server,
            }
        )
        return SessionErrorEvent(error=detail)


@dataclass
class _Listed:
    tools: list[dict[str, Any]] | None
    failure: McpFailure | None
    at: float


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the SDK's task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class McpClients:
    """A worker's way to its Agent's MCP servers through the proxy, with the tool-list cache."""

    def __init__(self, proxy_url: str, timeout: float) -> None:
        self.proxy_url = proxy_url.rstrip("/")
        self.timeout = timeout
        """Longest connecting and listing may take."""
        self._listed: dict[tuple[str, str, tuple[str, ...]], _Listed] = {}

    def url(self, server: str) -> str:
        return f"{self.proxy_url}/mcp/{quote(server, safe='')}"

    async def _use(
        self,
        server: str,
        vault_ids: Sequence[str],
        timeout: float,  # noqa: ASYNC109 (a per-use deadline, as the SDK's own calls take)
        use: Callable[[Client], Awaitable[T]],
    ) -> T:
        """Connect to ``server`` and run ``use`` within ``timeout``; `McpFailure` otherwise."""
        statuses: list[int] = []

        async def record(response: httpx2.Response) -> None:
            statuses.append(response.status_code)

        headers = {VAULT_IDS_HEADER: ",".join(vault_ids)} if vault_ids else {}
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(timeout),
            event_hooks={"response": [record]},
        )
        try:
            async with asyncio.timeout(timeout):
                async with Client(
                    streamable_http_client(self.url(server), http_client=http),
                    read_timeout_seconds=timeout,
                    cache=None,
                ) as client:
                    return await use(client)
        except TimeoutError:
            raise McpFailure(
                "mcp_connection_failed_error",
                server,
                f"the MCP server {server!r} did not answer within {timeout:g}s",
            ) from None
        except Exception as exc:
            refused = [s for s in statuses if s in (401, 403)]
            if refused:
                raise McpFailure(
                    "mcp_authentication_failed_error",
                    server,
                    f"the MCP server {server!r} refused the credential (HTTP {refused[-1]})",
                ) from None
            failed = [s for s in statuses if s >= 400]
            detail = f"HTTP {failed[-1]}" if failed else repr(_leaf(exc))
            raise McpFailure(
                "mcp_connection_failed_error",
                server,
                f"cannot connect to the MCP server {server!r} ({detail})",
            ) from None
        finally:
            await http.aclose()

    async def list_tools(
        self, server: str, url: str, vault_ids: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The server's tools (``name``, ``description``, ``input_schema``), cached; raises
        `McpFailure` (also cached, for `FAILURE_TTL`)."""
        key = (server, url, tuple(vault_ids))
        now = time.monotonic()
        cached = self._listed.get(key)
        if cached is not None:
            ttl = FAILURE_TTL if cached.failure is not None else LIST_TTL
            if now - cached.at < ttl:
                if cached.failure is not None:
                    raise cached.failure
                assert cached.tools is not None
                return cached.tools

        async def listing(client: Client) -> list[dict[str, Any]]:
            tools: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor)
                tools += [
                    {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                    for t in page.tools
                ]
                cursor = page.next_cursor
                if not cursor:
                    return tools

        try:
            tools = await self._use(server, vault_ids, self.timeout, listing)
        except McpFailure as failure:
            self._listed[key] = _Listed(None, failure, now)
            raise
        self._listed[key] = _Listed(tools, None, now)
        return tools

    async def call(
        self,
        server: str,
        vault_ids: Sequence[str],
        tool: str,
        arguments: dict[str, Any],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[str, bool]:
        """Run one tool call: (result text, is_error). Raises `McpFailure`."""

        async def calling(client: Client) -> tuple[str, bool]:
            try:
                result = await client.call_tool(tool, arguments)
            except MCPError as exc:
                # The server answered, with a protocol error: the call failed, not the server.
                return f"The MCP server answered with an error: {exc.error.message}", True
            parts: list[str] = []
            for block in result.content:
                text = getattr(block, "text", None)
                parts.append(text if isinstance(text, str) else f"[{block.type} content omitted]")
            return "\n".join(parts), bool(result.is_error)

        return await self._use(server, vault_ids, timeout, calling)


class McpSession:
    """The MCP servers of one session during one worker's run of it."""

    def __init__(
        self,
        clients: McpClients,
        spec: AgentSpec,
        base: Toolbox,
        session: SessionLog,
        state: SessionState,
        settings: SessionSettings | None,
        interrupts: Interrupts,
        call_timeout: float,
    ) -> None:
        self.clients = clients
        self.spec = spec
        self.base = base
        self.session = session
        self.state = state
        self.vault_ids = list(settings.vault_ids) if settings is not None else []
        self.interrupts = interrupts
        self.call_timeout = call_timeout
        self.servers = {server.name: server for server in spec.mcp_servers}
        self._reported: set[str] = set()
        """Servers whose listing failure this run already reported (once is enough)."""

    async def toolbox(self) -> Toolbox:
        """The Agent's tools with those of every MCP toolset whose server answers now. The
        servers are listed at once, so a slow one delays the request by its own timeout only."""
        toolsets = [t for t in self.spec.tools.mcp if t.server_name in self.servers]

        async def list_all() -> list[list[dict[str, Any]] | BaseException]:
            return await asyncio.gather(
                *(self._list(self.servers[t.server_name]) for t in toolsets),
                return_exceptions=True,
            )

        listed = await self.interrupts.interruptible(list_all())
        box = self.base
        for toolset, tools in zip(toolsets, listed, strict=True):
            name = toolset.server_name
            if isinstance(tools, McpFailure):
                if name not in self._reported:
                    self._reported.add(name)
                    await self.session.emit(tools.event())
                continue
            if isinstance(tools, BaseException):
                raise tools
            self._reported.discard(name)
            box = box.with_mcp(toolset, tools)
        for skipped in box.skipped:
            log.warning("MCP tool %s not offered: its name is too long or taken", skipped)
        return box

    async def _list(self, server: McpServer) -> list[dict[str, Any]]:
        return await self.clients.list_tools(server.name, server.url, self.vault_ids)

    async def execute(self, call: ToolCall) -> tuple[str, bool]:
        """Run an MCP call: (result text, is_error). A call a worker already started (it
        crashed or lost its lease meanwhile) is never sent again: its outcome is unknown."""
        server = self.servers.get(call.mcp_server or "")
        if server is None:
            return f"The Agent has no MCP server {call.mcp_server!r}.", True
        session_id = self.session.session_id
        if await self.state.started_in(session_id, call.id) is not None:
            return OUTCOME_UNKNOWN, True
        await self.state.mark_started(session_id, call.id, f"mcp:{server.name}")
        try:
            return await self.interrupts.interruptible(
                self.clients.call(
                    server.name, self.vault_ids, call.name, call.input, self.call_timeout
                )
            )
        except McpFailure as failure:
            await self.session.emit(failure.event())
            return f"The MCP call failed: {failure.message}", True
