"""Appends: ids and times from the server, idempotency, one total order, the snapshot."""

from __future__ import annotations

import asyncio

import pytest

from paddock.eventlog import (
    AgentMessageEvent,
    AgentToolResultEvent,
    Event,
    EventLog,
    InvalidId,
    Lease,
    ModelUsage,
    SessionNotFound,
    SessionStatusIdleEvent,
    SessionStatusRunningEvent,
    SessionStatusTerminatedEvent,
    SessionTerminated,
    SpanModelRequestEndEvent,
    StopReason,
    TextBlock,
    UserMessageEvent,
    new_session_id,
)


def message(text: str) -> UserMessageEvent:
    return UserMessageEvent(content=[TextBlock(text=text)])


def text_of(event: object) -> str:
    assert isinstance(event, UserMessageEvent | AgentMessageEvent | AgentToolResultEvent)
    assert event.content
    block = event.content[0]
    assert isinstance(block, TextBlock)
    return block.text


async def lease_of(log: EventLog, session: str, holder: str = "worker-1") -> Lease:
    lease = await log.acquire_lease(session, holder, ttl_ms=10_000)
    assert lease is not None
    return lease


async def test_appended_events_get_sortable_ids_and_server_times(
    log: EventLog, session: str
) -> None:
    stored = await log.send(session, [message("one"), message("two")])
    stored += await log.send(session, [message("three")])
    assert [text_of(e) for e in stored] == ["one", "two", "three"]
    ids = [e.id for e in stored]
    assert all(i and i.startswith("sevt_") for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    times = [e.processed_at for e in stored]
    assert all(t is not None and t.tzinfo is not None for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    # What a reader gets is exactly what the append returned.
    assert await log.replay(session) == stored


async def test_a_retried_append_with_the_same_key_is_stored_once(
    log: EventLog, session: str
) -> None:
    lease = await lease_of(log, session)
    result = AgentToolResultEvent(tool_use_id="sevt_x", content=[TextBlock(text="done")])
    first = await log.append(session, [result], fence=lease, key="toolu_1")
    retried = await log.append(session, [result.model_copy()], fence=lease, key="toolu_1")
    assert retried == first
    other = await log.append(session, [result], fence=lease, key="toolu_2")
    assert other[0].id != first[0].id
    assert [e.id for e in await log.replay(session)] == [first[0].id, other[0].id]
    assert (await log.snapshot(session)).event_count == 2


async def test_concurrent_retries_of_one_keyed_batch_store_it_once(
    log: EventLog, session: str
) -> None:
    lease = await lease_of(log, session)
    batch = [AgentMessageEvent(content=[TextBlock(text=f"part {i}")]) for i in range(3)]
    results = await asyncio.gather(
        *(log.append(session, batch, fence=lease, key="turn-7") for _ in range(20))
    )
    assert all(r == results[0] for r in results)
    assert await log.replay(session) == results[0]
    # The unfenced path dedups the same way (a client retrying a send).
    sends = await asyncio.gather(
        *(log.send(session, [message("hi")], key="req-1") for _ in range(10))
    )
    assert all(s == sends[0] for s in sends)
    assert len(await log.replay(session)) == 4


async def test_concurrent_appenders_keep_one_total_order(log: EventLog, session: str) -> None:
    appenders, each = 8, 40
    lease = await lease_of(log, session)

    async def appender(n: int) -> list[Event]:
        stored: list[Event] = []
        for i in range(each):
            if n % 2:  # half the writers are clients, half fenced workers
                stored += await log.send(session, [message(f"{n}:{i}")])
            else:
                events = [AgentMessageEvent(content=[TextBlock(text=f"{n}:{i}")])]
                stored += await log.append(session, events, fence=lease)
        return stored

    per_appender = await asyncio.gather(*(appender(n) for n in range(appenders)))
    replayed = await log.replay(session)
    assert len(replayed) == appenders * each
    assert len({e.id for e in replayed}) == len(replayed)
    assert [e.id for e in replayed] == sorted(e.id for e in replayed)  # type: ignore[type-var]
    position = {e.id: index for index, e in enumerate(replayed)}
    for stored in per_appender:
        # Each writer's events are in the log in the order it appended them...
        assert [position[e.id] for e in stored] == sorted(position[e.id] for e in stored)
        # ...exactly as acknowledged.
        assert all(replayed[position[e.id]] == e for e in stored)
    # Every reader sees the same order.
    pages, cursor = [], None
    while True:
        page = await log.list_events(session, limit=37, cursor=cursor)
        pages += page.data
        if not (cursor := page.next_cursor):
            break
    assert pages == replayed
    assert (await log.snapshot(session)).event_count == len(replayed)


async def test_the_snapshot_follows_status_stop_reason_and_usage(
    log: EventLog, session: str
) -> None:
    snap = await log.snapshot(session)
    assert (snap.status, snap.stop_reason, snap.event_count, snap.last_event_id) == (
        "idle",
        None,
        0,
        None,
    )
    assert snap.usage.input_tokens == 0
    assert snap.updated_at == snap.created_at
    lease = await lease_of(log, session)
    usage = ModelUsage(
        input_tokens=100,
        output_tokens=20,
        cache_creation_input_tokens=3,
        cache_read_input_tokens=40,
    )
    await log.append(session, [SessionStatusRunningEvent()], fence=lease)
    assert (await log.snapshot(session)).status == "running"
    await asyncio.sleep(0.05)  # time running, for active_seconds to count
    stored = await log.append(
        session,
        [
            SpanModelRequestEndEvent(model_request_start_id="sevt_a", model_usage=usage),
            SpanModelRequestEndEvent(model_request_start_id="sevt_b", model_usage=usage),
            SessionStatusIdleEvent(
                stop_reason=StopReason(type="requires_action", event_ids=["sevt_c"])
            ),
        ],
        fence=lease,
    )
    snap = await log.snapshot(session)
    assert snap.status == "idle"
    assert snap.stop_reason == StopReason(type="requires_action", event_ids=["sevt_c"])
    assert (snap.usage.input_tokens, snap.usage.output_tokens) == (200, 40)
    assert (snap.usage.cache_creation_input_tokens, snap.usage.cache_read_input_tokens) == (6, 80)
    assert 0.05 <= snap.usage.active_seconds < 5
    assert snap.event_count == 4
    assert snap.last_event_id == stored[-1].id
    assert snap.updated_at == stored[-1].processed_at
    assert snap.lease_holder == "worker-1"


async def test_a_terminated_session_refuses_client_events(log: EventLog, session: str) -> None:
    lease = await lease_of(log, session)
    await log.append(session, [SessionStatusTerminatedEvent()], fence=lease)
    with pytest.raises(SessionTerminated):
        await log.send(session, [message("anyone there?")])
    assert (await log.snapshot(session)).status == "terminated"
    assert len(await log.replay(session)) == 1


async def test_missing_sessions_and_bad_arguments_are_refused(log: EventLog, session: str) -> None:
    ghost = new_session_id()
    with pytest.raises(SessionNotFound):
        await log.send(ghost, [message("hi")])
    with pytest.raises(SessionNotFound):
        await log.snapshot(ghost)
    with pytest.raises(SessionNotFound):
        await log.replay(ghost)
    with pytest.raises(SessionNotFound):
        await log.list_events(ghost)
    with pytest.raises(InvalidId):
        await log.send("sesn_{evil}", [message("hi")])
    with pytest.raises(ValueError, match="no events"):
        await log.send(session, [])
    with pytest.raises(ValueError, match="must not be empty"):
        await log.send(session, [message("hi")], key="")
    with pytest.raises(TypeError, match="not an event model"):
        await log.send(session, [Event(type="user.message")])
    lease = await lease_of(log, session)
    with pytest.raises(ValueError, match="lease of"):
        await log.append(ghost, [message("hi")], fence=lease)
    assert await log.create_session(session, agent="default/other") is False
    with pytest.raises(ValueError, match="not of tenant"):  # a session's Agent is of its tenant
        await log.create_session(ghost, agent="other/agent")
    assert (await log.snapshot(session)).agent == "default/coder"
    assert await log.replay(session) == []


def agent_text(text: str) -> AgentMessageEvent:
    return AgentMessageEvent(content=[TextBlock(text=text)])


async def test_reserved_ids_are_the_ids_appended_with(log: EventLog, session: str) -> None:
    """Previews announce an event's id before it is appended (docs/eventlog.md)."""
    lease = await lease_of(log, session)
    before = await log.send(session, [message("go")])
    reservation = await log.reserve(session)
    reserved = [reservation.id(0), reservation.id(1)]
    assert reserved == sorted(reserved)
    assert reserved[0] > str(before[0].id)
    stored = await log.append(
        session,
        [agent_text("a"), agent_text("b"), SessionStatusRunningEvent()],
        fence=lease,
        reserved=reserved,
    )
    assert [e.id for e in stored[:2]] == reserved
    assert str(stored[2].id) > reserved[1]
    replayed = await log.replay(session)
    assert [e.id for e in replayed] == [before[0].id, *[e.id for e in stored]]
    # And in the tail order a live reader sees.
    assert [e.id for e in await log.replay(session, after=before[0].id)] == [e.id for e in stored]


async def test_reserved_ids_overtaken_by_another_append_are_not_used(
    log: EventLog, session: str
) -> None:
    lease = await lease_of(log, session)
    reservation = await log.reserve(session)
    # User messages land while the model still streams, until one is appended at or after
    # the reserved id (within a millisecond): the reservation no longer holds.
    interleaved = await log.send(session, [message("meanwhile")])
    while str(interleaved[0].id) < reservation.id(0):
        interleaved = await log.send(session, [message("meanwhile")])
    stored = await log.append(session, [agent_text("a")], fence=lease, reserved=[reservation.id(0)])
    assert stored[0].id != reservation.id(0)
    assert str(stored[0].id) > str(interleaved[0].id)
    assert [e.type for e in await log.replay(session)][-1] == "agent.message"


async def test_an_append_names_the_event_it_follows(log: EventLog, session: str) -> None:
    lease = await lease_of(log, session)
    first = await log.append_after(session, [agent_text("a")], fence=lease)
    assert first.follows is None  # the log was empty
    (user,) = await log.send(session, [message("meanwhile")])
    second = await log.append_after(session, [agent_text("b"), agent_text("c")], fence=lease)
    # A worker that folded only its own first append sees that it missed the user's event.
    assert second.follows == user.id != first.events[-1].id
    third = await log.append_after(session, [agent_text("d")], fence=lease, key="k")
    assert third.follows == second.events[-1].id
    # A repeat stored nothing now: what it follows is not known.
    repeat = await log.append_after(session, [agent_text("d")], fence=lease, key="k")
    assert repeat.events == third.events
    assert repeat.follows is None
    assert [e.id for e in await log.replay(session)] == [
        first.events[0].id,
        user.id,
        *(e.id for e in second.events),
        third.events[0].id,
    ]
