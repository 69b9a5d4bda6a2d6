"""Snapshots of many sessions in one round trip, as the operator's status sync reads them."""

from __future__ import annotations

from paddock.eventlog import EventLog, TextBlock, UserMessageEvent, new_session_id

from .conftest import AGENT


async def test_batched_snapshots_equal_single_reads_and_skip_missing_sessions(
    log: EventLog,
) -> None:
    sessions = [new_session_id() for _ in range(5)]
    for n, session_id in enumerate(sessions):
        await log.create_session(session_id, agent=AGENT)
        for _ in range(n):
            await log.send(session_id, [UserMessageEvent(content=[TextBlock(text="hi")])])
    missing = new_session_id()
    batch = await log.snapshots([*sessions, missing])
    assert sorted(batch) == sorted(sessions)
    for n, session_id in enumerate(sessions):
        single = await log.snapshot(session_id)
        assert batch[session_id].event_count == n == single.event_count
        assert batch[session_id].pending_input == single.pending_input == (n > 0)
        assert batch[session_id].last_event_id == single.last_event_id
    assert await log.snapshots([]) == {}


async def test_the_sync_reads_many_tenants_and_a_tenant_sees_only_its_own(log: EventLog) -> None:
    other = log.tenant("team-b")
    mine, theirs = new_session_id(), new_session_id()
    await log.create_session(mine, agent=AGENT)
    await other.create_session(theirs, agent="team-b/coder")
    root = EventLog(log.redis)
    tenants = {mine: log.namespace or "", theirs: "team-b"}
    assert sorted(await root.snapshots([mine, theirs], tenants=tenants)) == sorted([mine, theirs])
    # The same id under another tenant is another (absent) session.
    assert await log.snapshots([theirs]) == {}
    assert await other.snapshots([mine]) == {}
