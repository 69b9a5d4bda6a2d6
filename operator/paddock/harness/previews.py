"""Previews of a model response while it streams: `event_start` for each agent.message and
agent.thinking the response will become, and `event_delta` text fragments of the messages,
published on the session's previews channel (Redis pub/sub, never stored) for gateways to
pass to streams that asked for `event_deltas[]`.

Each previewed event is named by the id it will be appended with: the first preview reserves
ids for the response's events (`EventLog.reserve`), and the model step appends with them.
Text fragments are coalesced: the first one after a quiet spell goes out at once, later ones
at most every ``interval_s``, so a long reply costs tens of messages a second, not one per
token. Publishing is best-effort: a failure drops previews, never the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from anthropic.types import RawMessageStreamEvent
from redis.exceptions import RedisError

from paddock.eventlog import AnyEvent, EventLog, IdReservation

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.02
"""Coalescing window (docs/harness.md, "Previews": measured with bench/gateway.py)."""

# Block types of the Messages API and the event each becomes in `ModelStep.response_events`:
# consecutive text blocks make one agent.message; other block types make no event.
_EVENT_OF_BLOCK = {
    "text": "agent.message",
    "thinking": "agent.thinking",
    "redacted_thinking": "agent.thinking",
    "tool_use": "agent.tool_use",
}
_PREVIEWED = frozenset({"agent.message", "agent.thinking"})


class Previews:
    """The previews of one model request attempt; ``feed`` it every stream event."""

    def __init__(
        self, log: EventLog, session_id: str, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self._log = log
        self._session_id = session_id
        self._interval_s = interval_s
        self._reservation: IdReservation | None = None
        self._off = False
        self._types: list[str] = []
        """The event type of each event of the response so far, by position."""
        self._previous_block = ""
        self._content_index = 0
        self._pending: list[dict[str, Any]] = []
        self._last_flush = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def feed(self, event: RawMessageStreamEvent) -> None:
        if event.type == "content_block_start":
            await self._block(event.content_block.type)
        elif (
            event.type == "content_block_delta"
            and event.delta.type == "text_delta"
            and not self._off
            and self._types
            and self._types[-1] == "agent.message"
            and event.delta.text
        ):
            self._text(event.delta.text)

    async def _block(self, block_type: str) -> None:
        kind = _EVENT_OF_BLOCK.get(block_type)
        if kind is None or self._off:
            return  # no event of its own (and text on either side stays one message)
        if kind == "agent.message" and self._previous_block == "text":
            self._content_index += 1
            self._previous_block = block_type
            return
        self._previous_block = block_type
        self._content_index = 0
        self._types.append(kind)
        if kind not in _PREVIEWED:
            return
        if self._reservation is None:
            try:
                self._reservation = await self._log.reserve(self._session_id)
            except RedisError as exc:
                log.warning("no previews for %s: %r", self._session_id, exc)
                self._off = True  # nothing more this attempt: ids cannot be known
                return
        event_id = self._reservation.id(len(self._types) - 1)
        self._pending.append({"type": "event_start", "event": {"type": kind, "id": event_id}})
        self._flush()

    def _text(self, text: str) -> None:
        assert self._reservation is not None
        event_id = self._reservation.id(len(self._types) - 1)
        last = self._pending[-1] if self._pending else None
        if (
            last is not None
            and last["type"] == "event_delta"
            and last["event_id"] == event_id
            and last["delta"]["index"] == self._content_index
        ):
            last["delta"]["content"]["text"] += text
        else:
            content = {"type": "text", "text": text}
            delta = {"type": "content_delta", "index": self._content_index, "content": content}
            self._pending.append({"type": "event_delta", "event_id": event_id, "delta": delta})
        wait = self._last_flush + self._interval_s - time.monotonic()
        if wait <= 0:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        self._outbox.put_nowait(json.dumps(self._pending).encode())
        self._pending = []
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        # One writer, so messages are published in the order they were made.
        while (message := await self._outbox.get()) is not None:
            try:
                await self._log.publish_previews(self._session_id, message)
            except RedisError as exc:
                log.warning("previews of %s dropped: %r", self._session_id, exc)

    async def close(self) -> None:
        """Publish what is pending; returns once every preview is published (before the
        events they preview are appended)."""
        self._flush()
        if self._writer is not None:
            self._outbox.put_nowait(None)
            await self._writer

    def abort(self) -> None:
        """Drop what is pending (the attempt failed or was interrupted)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._writer is not None:
            self._writer.cancel()

    def reserved(self, events: list[AnyEvent]) -> list[str]:
        """The reserved ids for the first of ``events`` (the response's events), up to the
        last previewed one; none if the response's events are not those previewed."""
        if self._reservation is None or self._off:
            return []
        if len(events) < len(self._types) or any(
            kind in _PREVIEWED and events[i].type != kind for i, kind in enumerate(self._types)
        ):
            return []
        last = max((i for i, kind in enumerate(self._types) if kind in _PREVIEWED), default=-1)
        return [self._reservation.id(i) for i in range(last + 1)]


@contextlib.asynccontextmanager
async def previewing(log: EventLog, session_id: str, interval_s: float) -> AsyncIterator[Previews]:
    """``Previews`` closed at the end of the block, or aborted if it raises."""
    previews = Previews(log, session_id, interval_s)
    try:
        yield previews
    except BaseException:
        previews.abort()
        raise
    await previews.close()
