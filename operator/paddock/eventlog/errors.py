"""Exceptions of the event log. Connection problems surface as ``redis.RedisError``."""

from __future__ import annotations


class EventLogError(Exception):
    """Base of every error the event log raises on purpose."""


class SessionNotFound(EventLogError):
    """The session does not exist (never created, or deleted)."""


class SessionTerminated(EventLogError):
    """The session is terminated: it accepts no more client events."""


class LeaseLost(EventLogError):
    """The caller no longer holds the session's lease: it expired or another worker took it.

    Nothing was written. ``holder`` is the current holder, if any.
    """

    def __init__(self, session_id: str, holder: str | None) -> None:
        super().__init__(f"lease of {session_id} lost (now held by {holder or 'nobody'})")
        self.session_id = session_id
        self.holder = holder


class InvalidId(EventLogError, ValueError):
    """A malformed session id, event id or cursor, or an event id of another session."""
