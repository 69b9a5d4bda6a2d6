"""The Redis key layout. Every key of a session shares the Redis Cluster hash tag
``{<session id>}`` and every key of an Agent's work queue the tag ``{<namespace>/<agent>}``,
so each Lua script touches keys of exactly one slot."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from paddock.eventlog.errors import InvalidId
from paddock.eventlog.ids import check_session_id

PREFIX = "paddock"
WORK_GROUP = "workers"
"""The consumer group of every work stream: all harness workers of an Agent."""

# namespace/name, both DNS-1123 labels/subdomains as Kubernetes allows them.
_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
AGENT_PATTERN = re.compile(rf"^{_NAME}/{_NAME}$")


class SessionKeys(NamedTuple):
    events: str
    """Stream: one entry per event, fields ``t`` (type) and ``e`` (JSON without id and time)."""
    meta: str
    """Hash: agent, status, stop_reason, usage counters, event_count, input markers, times."""
    lease: str
    """String ``<token>:<holder>`` with a TTL: who may append as the session's worker."""
    fence: str
    """Counter: the last fencing token handed out (INCR), so tokens only grow."""
    idem: str
    """Hash: caller key -> comma-separated stream ids of the events that append stored."""


# Per-session keys that live next to the log but are written elsewhere (the session state
# of paddock.eventlog.sessionstate: settings, sandbox binding, tool-call journal). They carry
# the session's hash tag too, and EventLog.delete_session removes them with the log's keys:
# a new per-session key must be listed here, or it outlives its session.
COMPANION_SUFFIXES = ("settings", "sandbox", "calls")


def companion_keys(session_id: str) -> list[str]:
    """The keys of ``COMPANION_SUFFIXES`` for a session."""
    base = f"{PREFIX}:{{{check_session_id(session_id)}}}"
    return [f"{base}:{suffix}" for suffix in COMPANION_SUFFIXES]


class WorkKeys(NamedTuple):
    stream: str
    """Stream with a consumer group: one entry (field ``session``) per piece of work."""
    queued: str
    """Hash: session id -> the entry that queues it and is not yet delivered (dedup)."""


@lru_cache(maxsize=4096)
def session_keys(session_id: str) -> SessionKeys:
    """The event log's keys of a session; ``InvalidId`` for a malformed id."""
    base = f"{PREFIX}:{{{check_session_id(session_id)}}}"
    return SessionKeys(
        f"{base}:events", f"{base}:meta", f"{base}:lease", f"{base}:fence", f"{base}:idem"
    )


def check_agent(agent: str) -> str:
    """Return ``agent`` if it is ``<namespace>/<name>``, else raise ``InvalidId``."""
    if not AGENT_PATTERN.match(agent):
        raise InvalidId(f"not an agent reference <namespace>/<name>: {agent!r}")
    return agent


def work_keys(agent: str) -> WorkKeys:
    """The keys of the work queue of ``agent`` (``<namespace>/<name>``)."""
    base = f"{PREFIX}:agent:{{{check_agent(agent)}}}"
    return WorkKeys(f"{base}:work", f"{base}:queued")
