"""The session snapshot: status, stop reason and usage, kept current by every append."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from paddock.eventlog.events import (
    INPUT_PREFIX,
    AnyEvent,
    SessionStatusIdleEvent,
    SpanModelRequestEndEvent,
    StopReason,
)
from paddock.eventlog.ids import event_id, session_tag
from paddock.eventlog.storage import entry_time, from_millis

SessionStatus = Literal["idle", "running", "rescheduling", "terminated"]

_STATUS_OF: dict[str, SessionStatus] = {
    "session.status_running": "running",
    "session.status_idle": "idle",
    "session.status_rescheduled": "rescheduling",
    "session.status_terminated": "terminated",
}
_CHANGE_OF: dict[str, str] = {
    **dict.fromkeys(_STATUS_OF, "status"),
    "span.model_request_end": "usage",
    "span.outcome_evaluation_end": "usage",
    "agent.thread_message_received": "usage",
    "user.define_outcome": "outcome",
}
"""What an event of each type changes in the snapshot besides the counters (see
``changes``; every ``user.*`` event is input too): one dict lookup for most events."""
USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class Usage(BaseModel):
    """Cumulative usage: the sum of every ``span.model_request_end.model_usage`` and
    ``span.outcome_evaluation_end.usage`` (the grader's)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    active_seconds: float = 0
    """Time spent in status ``running``, up to the moment the snapshot was read."""


class SessionSnapshot(BaseModel):
    """A session's state as of its last append, read in one atomic step."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    agent: str
    """``<namespace>/<name>`` of the Agent whose work queue the session is on."""
    status: SessionStatus
    """From the last ``session.status_*`` event; ``idle`` before any."""
    stop_reason: StopReason | None
    """From the last ``session.status_idle`` event."""
    usage: Usage
    event_count: int
    last_event_id: str | None
    created_at: datetime
    updated_at: datetime
    """Time of the last event (creation time before any)."""
    lease_holder: str | None
    """The worker holding the session's lease, if any."""
    pending_input: bool
    """True if a ``user.*`` event arrived after the input a worker last finished handling."""
    has_outcome: bool = False
    """True once a ``user.define_outcome`` is in the log: only then is there anything to
    fold into `outcome_evaluations`."""


def changes(events: Sequence[AnyEvent]) -> dict[str, object]:
    """What appending ``events`` changes in the snapshot, as ``append.lua`` takes it: only
    the keys that change (status, stop_reason, usage to add, last input position, whether
    an outcome was defined)."""
    change: dict[str, object] = {}
    usage = [0, 0, 0, 0]
    for position, event in enumerate(events, 1):
        if event.type.startswith(INPUT_PREFIX):
            change["input"] = position
        kind = _CHANGE_OF.get(event.type)
        if kind is None:  # most events change nothing but the counters
            continue
        if kind == "outcome":
            change["outcome"] = True
        elif kind == "usage":
            # A grader's tokens, and a thread's, are the session's too.
            added = (
                event.model_usage
                if isinstance(event, SpanModelRequestEndEvent)
                else getattr(event, "usage", None)
            )
            if added is not None:
                for index, field in enumerate(USAGE_FIELDS):
                    usage[index] += getattr(added, field)
                change["usage"] = usage
        else:
            change["status"] = _STATUS_OF[event.type]
            if isinstance(event, SessionStatusIdleEvent):
                change["stop_reason"] = event.stop_reason.model_dump_json()
    return change


def _stream_position(stream_id: str) -> tuple[int, int]:
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq)


def from_meta(
    session_id: str, meta: Mapping[str, str], lease: str | None, now_ms: int
) -> SessionSnapshot:
    """The snapshot described by a session's meta hash and lease value, read at ``now_ms``
    (server time)."""
    active_ms = int(meta.get("active_ms", 0))
    if meta["status"] == "running" and "running_since" in meta:
        active_ms += max(now_ms - int(meta["running_since"]), 0)
    created_at = from_millis(int(meta["created_at"]))
    last_event = meta.get("last_event")
    last_input = meta.get("last_input")
    handled = meta.get("handled_input")
    return SessionSnapshot(
        session_id=session_id,
        agent=meta["agent"],
        status=meta["status"],  # type: ignore[arg-type]  # validated by pydantic
        stop_reason=StopReason.model_validate_json(meta["stop_reason"])
        if "stop_reason" in meta
        else None,
        usage=Usage(
            **{field: int(meta.get(field, 0)) for field in USAGE_FIELDS},
            active_seconds=active_ms / 1000,
        ),
        event_count=int(meta["event_count"]),
        last_event_id=event_id(last_event, session_tag(session_id)) if last_event else None,
        created_at=created_at,
        updated_at=entry_time(last_event) if last_event else created_at,
        lease_holder=lease.partition(":")[2] if lease else None,
        pending_input=last_input is not None
        and (handled is None or _stream_position(last_input) > _stream_position(handled)),
        has_outcome=meta.get("has_outcome") == "1",
    )
