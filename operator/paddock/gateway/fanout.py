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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from paddock.eventlog import AnyEvent, EventLog, SessionNotFound


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, encoded once for every stream."""

    id: str
    type: str
    data: bytes


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
    """The frames one stream is to send, in log order."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._backlog: deque[Frame] = deque()
        self._after: str | None = None
        self._queue: asyncio.Queue[Frame | object | BaseException] = asyncio.Queue()
        self._closed = False

    def push(self, item: Frame) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self._limit:
            self.close(TooSlow(f"more than {self._limit} events behind"))
        else:
            self._queue.put_nowait(item)

    def close(self, error: BaseException | None = None) -> None:
        """No more frames: the stream ends (raising ``error`` if given) after the queued ones."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(error if error is not None else _END)

    def resume(self, after: str, frames: list[Frame]) -> None:
        """Send ``frames`` (the log after event ``after``) first, then only live frames
        that come later."""
        self._backlog.extend(frames)
        self._after = frames[-1].id if frames else after

    async def next(self) -> Frame | None:
        """The next frame; None at the end of the session's log."""
        if self._backlog:
            return self._backlog.popleft()
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is _END:
                return None
            assert isinstance(item, Frame)
            if self._after is None or item.id > self._after:
                return item


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
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        error: BaseException | None = None
        try:
            async with self.log.tail(self.session_id, block_ms=self.fanout.block_ms) as tail:
                self.ready.set()
                async for event in tail:
                    encoded = frame(event)
                    for subscriber in list(self.subscribers):
                        subscriber.push(encoded)
        except Exception as exc:
            error = self.error = exc
        finally:
            self.fanout.forget(self)
            self.ready.set()
            for subscriber in self.subscribers:
                subscriber.close(error)


class Fanout:
    """Hubs by session, made on a session's first stream and closed with its last."""

    def __init__(self, log: EventLog, *, block_ms: int = 5000, limit: int = 10_000) -> None:
        self.log = log
        self.block_ms = block_ms
        self.limit = limit
        self._hubs: dict[tuple[str, str], Hub] = {}

    @contextlib.asynccontextmanager
    async def subscribe(
        self, tenant: str, session_id: str, after: str | None
    ) -> AsyncIterator[Subscription]:
        """A subscription to the live events of a session of ``tenant`` (after event id
        ``after`` if given).

        Raises before yielding what the log raises: ``SessionNotFound``, ``InvalidId``.
        """
        hub = self._hubs.get((tenant, session_id))
        if hub is None:
            hub = self._hubs[(tenant, session_id)] = Hub(self, tenant, session_id)
        await hub.ready.wait()
        if hub.task.done():
            # The tail failed to open, or the session was deleted meanwhile.
            raise hub.error or SessionNotFound(session_id)
        subscription = Subscription(self.limit)
        hub.subscribers.add(subscription)
        try:
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
