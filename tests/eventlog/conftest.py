"""Fixtures of the event log tests: the log on the shared Redis client, and a session."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from paddock.eventlog import EventLog, new_session_id

TENANT = "default"
AGENT = f"{TENANT}/coder"


@pytest.fixture
def log(redis: Redis) -> EventLog:
    return EventLog(redis, TENANT)


@pytest.fixture
async def session(log: EventLog) -> str:
    """A new, empty session of AGENT."""
    session_id = new_session_id()
    assert await log.create_session(session_id, agent=AGENT)
    return session_id
