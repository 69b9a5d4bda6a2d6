"""Tool calls keyed by call id: each id executes at most once, so harness retries are safe."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from paddock.sandbox.api import Stats, ToolResult
from paddock.sandbox.base import CallContext

log = logging.getLogger(__name__)

Execute = Callable[[str, dict[str, Any], CallContext], Awaitable[ToolResult]]

REMEMBERED = 1024
"""Finished calls whose results are kept for retries; the oldest are forgotten first."""


@dataclass(eq=False)  # identity semantics: calls live in sets
class _Call:
    result: asyncio.Future[ToolResult]
    ctx: CallContext = field(default_factory=CallContext)


class Calls:
    """Runs tool calls through `execute`, deduplicated by call id, cancellable by call id."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute
        self._by_id: OrderedDict[str, _Call] = OrderedDict()
        self._running: set[_Call] = set()
        self._executions: Counter[str] = Counter()

    async def call(self, tool: str, tool_input: dict[str, Any], call_id: str | None) -> ToolResult:
        """The result of the call. A call id seen before is not executed again: its recorded
        result is returned, after waiting for it if it is still running. The execution is
        not tied to the caller: if the caller goes away, the call finishes and is recorded."""
        known = self._by_id.get(call_id) if call_id else None
        if known is None:
            known = self._start(tool, tool_input, call_id)
        return await asyncio.shield(known.result)

    async def cancel(self, call_id: str) -> bool:
        """Stop call `call_id`: True if it was running and stopped (the tool killed its work),
        or had not arrived yet (it will not run; its result says it was cancelled)."""
        known = self._by_id.get(call_id)
        if known is None:
            tombstone = _Call(asyncio.get_running_loop().create_future())
            tombstone.result.set_result(
                ToolResult.of("cancelled before it started; nothing was executed", is_error=True)
            )
            self._remember(call_id, tombstone)
            return True
        if known.result.done():
            return False
        known.ctx.cancel_requested.set()
        await asyncio.shield(known.result)
        return known.ctx.cancelled

    async def cancel_all(self) -> None:
        """Cancel every running call and wait for them to end (at shutdown)."""
        running = list(self._running)
        for call in running:
            call.ctx.cancel_requested.set()
        await asyncio.gather(*(call.result for call in running), return_exceptions=True)

    def stats(self) -> Stats:
        return Stats(executions=dict(self._executions), total=sum(self._executions.values()))

    def _start(self, tool: str, tool_input: dict[str, Any], call_id: str | None) -> _Call:
        ctx = CallContext()
        call = _Call(asyncio.ensure_future(self._run(tool, tool_input, call_id, ctx)), ctx)
        self._executions[tool] += 1
        self._running.add(call)
        call.result.add_done_callback(lambda _: self._running.discard(call))
        if call_id:
            self._remember(call_id, call)
        return call

    async def _run(
        self, tool: str, tool_input: dict[str, Any], call_id: str | None, ctx: CallContext
    ) -> ToolResult:
        started = time.monotonic()
        result = await self._execute(tool, tool_input, ctx)
        log.info(
            "tool=%s call_id=%s seconds=%.3f is_error=%s cancelled=%s",
            tool,
            call_id,
            time.monotonic() - started,
            result.is_error,
            ctx.cancelled,
        )
        return result

    def _remember(self, call_id: str, call: _Call) -> None:
        self._by_id[call_id] = call
        if len(self._by_id) > REMEMBERED:
            for old_id in [i for i, c in self._by_id.items() if c.result.done()]:
                del self._by_id[old_id]
                if len(self._by_id) <= REMEMBERED:
                    break
