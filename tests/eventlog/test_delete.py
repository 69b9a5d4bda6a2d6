"""Deleting a session removes every key it had and the work queued for it."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from paddock.eventlog import (
    AgentToolResultEvent,
    EventLog,
    LeaseLost,
    SessionNotFound,
    TextBlock,
    UserMessageEvent,
    WorkQueue,
    companion_keys,
    new_session_id,
    thread_id,
    thread_session_id,
    work_keys,
)

TENANT = "default"
AGENT = "default/coder"


def message(text: str) -> UserMessageEvent:
    return UserMessageEvent(content=[TextBlock(text=text)])


async def keys_mentioning(redis: Redis, text: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"*{text}*")]


async def test_deleting_a_session_leaves_no_key_behind(log: EventLog, redis: Redis) -> None:
    queue = WorkQueue(log, AGENT)
    doomed, kept = new_session_id(), new_session_id()
    for session in (doomed, kept):
        await log.create_session(session, agent=AGENT)
        await log.send(session, [message("hi")], key="request-1")
    # Use every kind of key: stream, meta, idempotency keys, lease and fencing counter.
    claim = await queue.claim("worker-1", block_ms=1000)
    assert claim is not None
    result = AgentToolResultEvent(tool_use_id="sevt_x", content=[TextBlock(text="ok")])
    await log.append(claim.session_id, [result], fence=claim.lease, key="toolu_1")
    assert len(await keys_mentioning(redis, claim.session_id)) == 5
    await log.send(doomed, [message("and again")])  # queued a second time
    thread = thread_session_id(doomed, "toolu_2")  # a thread its coordinator started
    await log.create_session(thread, agent=AGENT)
    for key in companion_keys(TENANT, doomed):  # what the harness and operator keep beside the log
        if key.endswith(":threads"):
            await redis.hset(key, thread_id(thread), "{}")
        else:
            await redis.set(key, "x")

    assert await log.delete_session(doomed)

    assert await keys_mentioning(redis, doomed) == []
    assert await keys_mentioning(redis, thread) == []
    stream, queued = work_keys(AGENT)
    entries = await redis.xrange(stream)
    assert all(fields[b"session"] != doomed.encode() for _, fields in entries)
    assert not await redis.hexists(queued, doomed)
    # The other session is untouched.
    assert len(await keys_mentioning(redis, kept)) >= 3
    assert [e.type for e in await log.replay(kept)] == ["user.message"]
    # Deleting is idempotent, and nothing brings the keys back.
    assert not await log.delete_session(doomed)
    with pytest.raises(SessionNotFound):
        await log.acquire_lease(doomed, "worker-2", ttl_ms=1000)
    with pytest.raises(SessionNotFound):
        await log.send(doomed, [message("hello?")])
    with pytest.raises(SessionNotFound):
        await log.replay(doomed)
    with pytest.raises(SessionNotFound):
        await log.list_events(doomed)
    assert await keys_mentioning(redis, doomed) == []


async def test_a_worker_on_a_deleted_session_is_stopped_and_its_entry_dropped(
    log: EventLog, redis: Redis, session: str
) -> None:
    queue = WorkQueue(log, AGENT)
    sent = await log.send(session, [message("hi")])
    claim = await queue.claim("worker-1", block_ms=1000)
    assert claim is not None
    assert sent[0].id is not None
    await log.delete_session(session)
    with pytest.raises(SessionNotFound):
        await log.append(session, [message("x")], fence=claim.lease)
    with pytest.raises(LeaseLost):
        await log.renew_lease(claim.lease)
    assert await queue.finish(claim, handled_through=sent[0].id)  # counts as finished
    assert await queue.depth() == 0
    assert await keys_mentioning(redis, session) == []
