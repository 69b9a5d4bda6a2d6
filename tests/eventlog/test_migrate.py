"""The move from the layout before tenant prefixes: every old key lands in its tenant's
prefix, the session and its queue work on after it, and a second run changes nothing."""

from __future__ import annotations

from redis.asyncio import Redis

from paddock.eventlog import (
    EventLog,
    SessionState,
    TextBlock,
    UserMessageEvent,
    WorkQueue,
    migrate_layout,
    new_session_id,
    old_keys,
)


async def test_old_keys_move_into_their_tenant_and_the_session_goes_on(redis: Redis) -> None:
    session_id = new_session_id()
    old = f"paddock:{{{session_id}}}"
    # What the previous layout wrote for a session of team-a with input queued.
    await redis.hset(
        f"{old}:meta",
        mapping={"agent": "team-a/coder", "status": "idle", "event_count": 1, "created_at": 1},
    )
    entry = await redis.xadd(
        f"{old}:events",
        {
            "t": "user.message",
            "e": '{"type":"user.message","content":[{"type":"text","text":"hi"}]}',
        },
    )
    await redis.hset(f"{old}:meta", mapping={"last_event": entry, "last_input": entry})
    await redis.set(f"{old}:settings", '{"namespace":"team-a","name":"fix"}')
    queue = "paddock:agent:{team-a/coder}:work"
    await redis.xgroup_create(queue, "workers", id="0", mkstream=True)
    await redis.xadd(queue, {"session": session_id})
    await redis.xadd("paddock:sandbox-requests", {"session": session_id, "reason": "needed"})

    # meta, events, settings and the work stream move; the shared request stream goes.
    assert await migrate_layout(redis) == 5
    assert await old_keys(redis) == []
    assert await migrate_layout(redis) == 0

    log = EventLog(redis, "team-a")
    assert [e.type for e in await log.replay(session_id)] == ["user.message"]
    assert (await SessionState(redis, "team-a").settings(session_id)).name == "fix"
    claim = await WorkQueue(log, "team-a/coder").claim("w", block_ms=500)
    assert claim is not None
    assert claim.session_id == session_id
    await log.append(
        session_id, [UserMessageEvent(content=[TextBlock(text="x")])], fence=claim.lease
    )
    assert await EventLog(redis, "team-b").snapshots([session_id]) == {}


async def test_a_key_whose_tenant_cannot_be_told_is_left_and_reported(redis: Redis) -> None:
    session_id = new_session_id()
    await redis.hset(f"paddock:{{{session_id}}}:meta", "agent", "not an agent")
    assert await migrate_layout(redis) == 0
    assert await old_keys(redis) == [f"paddock:{{{session_id}}}:meta"]
