"""How an event is stored in a stream entry, and how entries become events again.

An entry holds two fields: ``t``, the event type (for filtering without decoding), and
``e``, the event's JSON without ``id`` and ``processed_at``. Both come from the entry id:
the id encodes it, and its millisecond part is the server time of the append.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

from paddock.eventlog.events import EVENT_LIST_ADAPTER, AnyEvent, Event
from paddock.eventlog.ids import event_ids

_ENVELOPE: set[str] = {"id", "processed_at"}

Row = tuple[bytes, bytes]
"""A stream entry id and the payload stored in it."""


def payload(event: Event) -> str:
    """The JSON stored for ``event``: everything but the fields the append assigns."""
    return event.model_dump_json(exclude=_ENVELOPE)


@lru_cache(maxsize=256)
def from_millis(millis: int) -> datetime:
    """The UTC time ``millis`` milliseconds after the Unix epoch, exactly (cached: every
    append builds the times of its events, and concurrent ones share milliseconds)."""
    return datetime.fromtimestamp(millis // 1000, UTC).replace(microsecond=millis % 1000 * 1000)


def entry_time(stream_id: bytes | str) -> datetime:
    """The server time at which the entry ``stream_id`` ("<ms>-<seq>") was added."""
    if isinstance(stream_id, bytes):
        stream_id = stream_id.decode()
    return from_millis(int(stream_id.partition("-")[0]))


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Every model built while decoding stays alive until returned, so the cyclic GC passes
    # that thousands of new objects trigger find nothing to free; they only cost time
    # (they tripled the time to decode a 10,000-event replay, and made it erratic).
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def decode(rows: Sequence[Row], tag: str) -> list[AnyEvent]:
    """Events from stored entries of the session with event-id ``tag``, in the given order.

    The id and the time are spliced into each payload and the whole batch is validated
    in one call, which keeps a 10,000-event replay far below 100 ms.
    """
    ids = event_ids((stream_id for stream_id, _ in rows), tag)
    # pydantic reads an integer above 2e10 as Unix time in milliseconds.
    parts = [
        b'{"id":"%s","processed_at":%s,%s'
        % (eid.encode(), stream_id.partition(b"-")[0], stored[1:])
        for eid, (stream_id, stored) in zip(ids, rows, strict=True)
    ]
    with _gc_paused():
        return EVENT_LIST_ADAPTER.validate_json(b"[%s]" % b",".join(parts))


def decode_lines(lines: bytes) -> list[AnyEvent]:
    """Events from the JSON objects, one a line, that ``read.lua`` returns (envelope
    included), validated in one call."""
    if not lines:
        return []
    with _gc_paused():
        # A payload is JSON from model_dump_json: no raw newline inside it.
        return EVENT_LIST_ADAPTER.validate_json(b"[%s]" % lines.replace(b"\n", b","))


def stream_entries(reply: object) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a one-stream XREAD / XREADGROUP reply, in whichever shape the client's
    protocol (RESP2 / RESP3) and ``legacy_responses`` setting give it."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
    else:
        ((_, entries),) = cast("list[tuple[bytes, Any]]", reply)  # RESP2: [[stream, entries]]
    if entries and isinstance(entries[0], list):
        (entries,) = entries  # RESP3 legacy shape: one more level of nesting
    return list(entries)
