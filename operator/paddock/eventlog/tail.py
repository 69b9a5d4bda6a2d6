"""Live tail of a session: blocking reads on a dedicated connection."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from types import TracebackType
from typing import TYPE_CHECKING

from paddock.eventlog.errors import SessionNotFound
from paddock.eventlog.events import AnyEvent
from paddock.eventlog.ids import event_id, session_tag, stream_id
from paddock.eventlog.storage import Row, decode, stream_entries

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from paddock.eventlog.log import EventLog

_READ_COUNT = 1000
_DELETED = b"session.deleted"


class Tail:
    """Events of one session in log order, from a position fixed when the tail is opened.

    Use as ``async with log.tail(session_id) as tail: async for event in tail: ...``.
    Opening checks that the session exists (``SessionNotFound``) and pins the start
    position, so events appended after ``__aenter__`` returns are delivered even if the
    caller lists history before iterating. Each event is delivered once, in stream order.
    Iteration ends after ``session.deleted`` or, within ``block_ms``, once the session
    is gone. Connection errors propagate; reopen with ``after=tail.position`` to resume.
    """

    def __init__(
        self,
        log: EventLog,
        session_id: str,
        *,
        after: str | None,
        block_ms: int,
        types: Collection[str] | None,
    ) -> None:
        if block_ms < 1:
            raise ValueError("block_ms must be at least 1 (0 would block forever)")
        self._log = log
        self._keys = log.keys(session_id)
        self._session_id = session_id
        self._tag = session_tag(session_id)
        self._after = after
        self._block_ms = block_ms
        self._types = {kind.encode() for kind in types} if types else None
        self._conn: Redis | None = None
        self._cursor: bytes | str = "0-0"
        self._ready: deque[AnyEvent] = deque()
        self._ended = False

    @property
    def position(self) -> str | None:
        """Id of the last event read (delivered or filtered out), or of the start position;
        None for the start of the log."""
        cursor = self._cursor.decode() if isinstance(self._cursor, bytes) else self._cursor
        return None if cursor == "0-0" else event_id(cursor, self._tag)

    async def __aenter__(self) -> Tail:
        # One reply says whether the session exists and which entry is last.
        last = await self._log.scripts.read(
            keys=[self._keys.events, self._keys.meta], args=["+", "desc", 1, self._tag]
        )
        if last is None:
            raise SessionNotFound(self._session_id)
        if self._after == "$":
            self._cursor = last[0] or "0-0"
        elif self._after is not None:
            self._cursor = stream_id(self._after, self._tag)
        # Blocking reads hold their connection for up to block_ms: give them their own.
        self._conn = self._log.redis.client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None

    def __aiter__(self) -> Tail:
        return self

    async def __anext__(self) -> AnyEvent:
        while not self._ready:
            if self._ended:
                raise StopAsyncIteration
            await self._read()
        return self._ready.popleft()

    async def _read(self) -> None:
        if self._conn is None:
            raise RuntimeError("iterate a Tail inside `async with`")
        reply = await self._conn.xread(
            {self._keys.events: self._cursor}, count=_READ_COUNT, block=self._block_ms
        )
        entries = stream_entries(reply)
        if not entries:
            # A deleted session's stream never grows again: notice that instead of waiting.
            self._ended = not await self._conn.exists(self._keys.meta)
            return
        rows: list[Row] = []
        for entry_id, fields in entries:
            self._cursor = entry_id
            kind = fields[b"t"]
            if self._types is None or kind in self._types:
                rows.append((entry_id, fields[b"e"]))
            if kind == _DELETED:
                self._ended = True
                break
        self._ready.extend(decode(rows, self._tag))
