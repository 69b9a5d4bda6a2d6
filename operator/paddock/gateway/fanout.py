"""One tail of the event log per session, shared by every event stream of that session in
this gateway process.

A hundred clients watching one session cost one blocking Redis read and one connection,
and each event is decoded and encoded as an SSE frame once, then written to each client.
What a stream sees is what its own `EventLog.tail` would show:

- live events: the hub's tail is pinned before any client is told it is subscribed, and a
  client registers with the hub before its response starts, so every event appended after
  the client got its headers reaches it (a few earlier ones may too; clients dedupe by id);
- with `Last-Event-ID`: the events after that id are read from the log after registering,
  so the replay and the live part overlap instead of leaving a gap; the overlap is skipped
  by id (event ids of a session sort like their positions in the log).

A client that falls `limit` frames behind is dropped with an error and resumes with
`Last-Event-ID`, so one slow reader never holds memory or the others back.

Previews (`event_start`/`event_delta`, for streams that asked for `event_deltas[]`) come
from the session's previews channel, which the hub subscribes to while such a stream is
open. They are best-effort: a preview of an event the hub has already seen in the log is
dropped (previews only ever precede their event), and a stream more than `delta_limit`
previews behind sheds them, never events: the rest of a shed preview is dropped too, so
what a client sees of a message is always a prefix of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from paddock.eventlog import AnyEvent, EventLog, SessionNotFound

log = logging.getLogger(__name__)

DELTA_TYPES = frozenset({"agent.message", "agent.thinking"})
"""The event types a stream may ask previews of (`event_deltas[]`)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, encoded once for every stream; or a preview of one (``preview`` is then
    the previewed event's type, and ``id`` its id)."""

    id: str
    type: str
    data: bytes
    preview: str | None = None


def frame(event: AnyEvent) -> Frame:
    event_id = event.id or ""
    data = b"event: %s\nid: %s\ndata: %s\n\n" % (
        event.type.encode(),
        event_id.encode(),
        event.model_dump_json().encode(),
    )
    return Frame(event_id, event.type, data)


class TooSlow(Exception):
    """The client fell too far behind the session's events."""


_END = object()


class Subscription:
    """The frames one stream is to send, in log order, previews of ``deltas`` interleaved."""

    def __init__(
        self, limit: int, deltas: frozenset[str] = frozenset(), delta_limit: int = 1000
    ) -> None:
        self._limit = limit
        self.deltas = deltas
        self._delta_limit = delta_limit
        self._backlog: deque[Frame] = deque()
        self._after: str | None = None
        self._items: deque[Frame] = deque()
        self._events = 0
        self._previews = 0
        self._started: set[str] = set()
        self._shed: set[str] = set()
        self._sent = ""
        """The id of the last event sent: previews of it and earlier ones are stale."""
        self._wake = asyncio.Event()
        self._end: BaseException | object | None = None

    def push(self, item: Frame) -> None:
        if self._end is not None:
            return
        if self._events >= self._limit:
            self.close(TooSlow(f"more than {self._limit} events behind"))
        else:
            self._items.append(item)
            self._events += 1
            self._wake.set()

    def push_preview(self, item: Frame) -> None:
        """Queue a preview if this stream asked for its type; shed it when too far behind."""
        if self._end is not None or item.preview not in self.deltas:
            return
        if item.type == "event_start":
            if item.id in self._started or item.id in self._shed:
                return  # at most one event_start per event
        elif item.id not in self._started or item.id in self._shed:
            return
        if self._previews >= self._delta_limit:
            self._shed.add(item.id)
            return
        self._started.add(item.id)
        self._items.append(item)
        self._previews += 1
        self._wake.set()

    def close(self, error: BaseException | None = None) -> None:
        """No more frames: the stream ends (raising ``error`` if given) after the queued ones."""
        if self._end is None:
            self._end = error if error is not None else _END
            self._wake.set()

    def resume(self, after: str, frames: list[Frame]) -> None:
        """Send ``frames`` (the log after event ``after``) first, then only live frames
        that come later."""
        self._backlog.extend(frames)
        self._after = frames[-1].id if frames else after
        self._sent = self._after

    async def next(self) -> Frame | None:
        """The next frame; None at the end of the session's log."""
        if self._backlog:
            return self._backlog.popleft()
        while True:
            while self._items:
                item = self._items.popleft()
                if item.preview is not None:
                    self._previews -= 1
                    if item.id <= self._sent:
                        continue  # its event was sent already (a resume's replay)
                    return item
                self._events -= 1
                if self._after is None or item.id > self._after:
                    self._sent = item.id
                    # Previews of this event and earlier ones are over.
                    self._started = {i for i in self._started if i > item.id}
                    self._shed = {i for i in self._shed if i > item.id}
                    return item
            if isinstance(self._end, BaseException):
                raise self._end
            if self._end is _END:
                return None
            self._wake.clear()
            await self._wake.wait()


def preview_frames(message: bytes, previewing: dict[str, str], seen: str) -> list[Frame]:
    """The frames of one message of a previews channel (a JSON list of `event_start` and
    `event_delta`), re-encoded from the fields the API defines (the harness that publishes
    is the tenant's, so nothing else passes). ``previewing``: the type of each previewed
    event by id, kept across messages; ``seen``: the last event id in the log, whose
    previews and earlier ones are stale."""
    frames = []
    try:
        items = json.loads(message)
        for item in items if isinstance(items, list) else ():
            data: dict[str, Any]
            if item.get("type") == "event_start":
                kind, event_id = str(item["event"]["type"]), str(item["event"]["id"])
                if kind not in DELTA_TYPES:
                    continue
                previewing[event_id] = kind
                data = {"type": "event_start", "event": {"type": kind, "id": event_id}}
            elif item.get("type") == "event_delta":
                event_id = str(item["event_id"])
                kind = previewing.get(event_id, "")
                delta = item["delta"]
                text = delta["content"]["text"]
                if not kind or not isinstance(text, str):
                    continue
                content = {"type": "text", "text": text}
                data = {
                    "type": "event_delta",
                    "event_id": event_id,
                    "delta": {
                        "type": "content_delta",
                        "index": int(delta["index"]),
                        "content": content,
                    },
                }
            else:
                continue
            if event_id <= seen:
                continue
            encoded = b"event: %s\ndata: %s\n\n" % (
                data["type"].encode(),
                json.dumps(data, separators=(",", ":")).encode(),
            )
            frames.append(Frame(event_id, data["type"], encoded, preview=kind))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("malformed previews dropped: %r", exc)
    return frames


class Hub:
    """The shared tail of one session."""

    def __init__(self, fanout: Fanout, tenant: str, session_id: str) -> None:
        self.fanout = fanout
        self.log = fanout.log.tenant(tenant)
        self.key = (tenant, session_id)
        self.session_id = session_id
        self.subscribers: set[Subscription] = set()
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.seen = ""
        """The id of the last event read from the log."""
        self.previewing: dict[str, str] = {}
        self.previews: asyncio.Task[None] | None = None
        self.previews_ready = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def watch_previews(self) -> None:
        """Subscribe to the session's previews (once); returns when subscribed."""
        if self.previews is None:
            self.previews = asyncio.ensure_future(self._previews())
        await self.previews_ready.wait()

    async def _previews(self) -> None:
        try:
            async with self.log.previews(self.session_id) as messages:
                self.previews_ready.set()
                async for message in messages:
                    for item in preview_frames(message, self.previewing, self.seen):
                        for subscriber in list(self.subscribers):
                            subscriber.push_preview(item)
        except Exception as exc:  # previews are best-effort: events still flow
            log.warning("previews of %s stopped: %r", self.session_id, exc)
        finally:
            self.previews_ready.set()

    async def _run(self) -> None:
        error: BaseException | None = None
        try:
            async with self.log.tail(self.session_id, block_ms=self.fanout.block_ms) as tail:
                self.ready.set()
                async for event in tail:
                    encoded = frame(event)
                    self.seen = encoded.id
                    if self.previewing:
                        self.previewing = {
                            i: kind for i, kind in self.previewing.items() if i > self.seen
                        }
                    for subscriber in list(self.subscribers):
                        subscriber.push(encoded)
        except Exception as exc:
            error = self.error = exc
        finally:
            if self.previews is not None:
                self.previews.cancel()
            self.fanout.forget(self)
            self.ready.set()
            for subscriber in self.subscribers:
                subscriber.close(error)


class Fanout:
    """Hubs by session, made on a session's first stream and closed with its last."""

    def __init__(
        self, log: EventLog, *, block_ms: int = 5000, limit: int = 10_000, delta_limit: int = 1000
    ) -> None:
        self.log = log
        self.block_ms = block_ms
        self.limit = limit
        self.delta_limit = delta_limit
        self._hubs: dict[tuple[str, str], Hub] = {}

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        tenant: str,
        session_id: str,
        after: str | None,
        deltas: frozenset[str] = frozenset(),
    ) -> AsyncIterator[Subscription]:
        """A subscription to the live events of a session of ``tenant`` (after event id
        ``after`` if given), with previews of the event types ``deltas``.

        Raises before yielding what the log raises: ``SessionNotFound``, ``InvalidId``.
        """
        hub = self._hubs.get((tenant, session_id))
        if hub is None:
            hub = self._hubs[(tenant, session_id)] = Hub(self, tenant, session_id)
        await hub.ready.wait()
        if hub.task.done():
            # The tail failed to open, or the session was deleted meanwhile.
            raise hub.error or SessionNotFound(session_id)
        subscription = Subscription(self.limit, deltas, self.delta_limit)
        hub.subscribers.add(subscription)
        try:
            if deltas:
                await hub.watch_previews()
            if after is not None:
                replayed = await hub.log.replay(session_id, after=after)
                subscription.resume(after, [frame(event) for event in replayed])
            yield subscription
        finally:
            hub.subscribers.discard(subscription)
            if not hub.subscribers:
                self.forget(hub)
                hub.task.cancel()

    def forget(self, hub: Hub) -> None:
        if self._hubs.get(hub.key) is hub:
            del self._hubs[hub.key]

    async def close(self) -> None:
        hubs = list(self._hubs.values())
        for hub in hubs:
            hub.task.cancel()
        await asyncio.gather(*(hub.task for hub in hubs), return_exceptions=True)
