"""Reads: pagination, replay from any id, live tails, and persist-before-publish."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from paddock.eventlog import (
    AgentMessageEvent,
    AgentThinkingEvent,
    AnyEvent,
    EventLog,
    InvalidId,
    SessionDeletedEvent,
    SessionNotFound,
    TextBlock,
    UserMessageEvent,
    event_id,
    new_session_id,
    payload,
    session_keys,
    session_tag,
)
from paddock.testing.ports import wait_until_async

TENANT = "default"


def message(text: str) -> UserMessageEvent:
    return UserMessageEvent(content=[TextBlock(text=text)])


async def fill(log: EventLog, session: str, count: int, *, batch: int = 500) -> list[AnyEvent]:
    """``count`` events: user messages, every tenth an agent.thinking."""
    stored: list[AnyEvent] = []
    events: list[AnyEvent] = [
        AgentThinkingEvent() if i % 10 == 9 else message(str(i)) for i in range(count)
    ]
    for start in range(0, count, batch):
        stored += await log.send(session, events[start : start + batch])
    return stored


async def walk(log: EventLog, session: str, **options: object) -> list[list[AnyEvent]]:
    """Every page of a listing, following the cursors."""
    pages, cursor = [], None
    while True:
        page = await log.list_events(session, cursor=cursor, **options)  # type: ignore[arg-type]
        pages.append(page.data)
        if (cursor := page.next_cursor) is None:
            return pages


def flat(pages: list[list[AnyEvent]]) -> list[AnyEvent]:
    return [event for page in pages for event in page]


async def test_pages_walk_the_log_exactly_in_both_orders(log: EventLog, session: str) -> None:
    stored = await fill(log, session, 10)
    asc = await walk(log, session, limit=3)
    assert [len(p) for p in asc] == [3, 3, 3, 1]
    assert flat(asc) == stored
    desc = await walk(log, session, limit=5, order="desc")
    assert [len(p) for p in desc] == [5, 5]  # exact: no empty last page
    assert flat(desc) == stored[::-1]
    assert (await log.list_events(session)).data == stored  # default: up to 1000


async def test_type_filters_page_across_read_batches(log: EventLog, session: str) -> None:
    stored = await fill(log, session, 5000)
    thinking = [e for e in stored if e.type == "agent.thinking"]
    pages = await walk(log, session, limit=200, types=["agent.thinking"])
    assert flat(pages) == thinking
    assert [len(p) for p in pages] == [200, 200, 100]
    both = await walk(
        log, session, limit=999, order="desc", types={"agent.thinking", "user.message"}
    )
    assert flat(both) == stored[::-1]
    assert (await log.list_events(session, types=["agent.message"])).data == []


async def test_cursors_are_checked(log: EventLog, session: str) -> None:
    await fill(log, session, 3)
    cursor = (await log.list_events(session, limit=1)).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidId, match="order"):
        await log.list_events(session, cursor=cursor, order="desc")
    other = new_session_id()
    await log.create_session(other, agent="default/coder")
    with pytest.raises(InvalidId, match="another session"):
        await log.list_events(other, cursor=cursor)
    with pytest.raises(InvalidId):
        await log.list_events(session, cursor="garbage")
    with pytest.raises(ValueError, match="limit"):
        await log.list_events(session, limit=0)


async def test_replay_resumes_after_any_event(log: EventLog, session: str) -> None:
    stored = await fill(log, session, 4500)  # more than one read batch
    assert await log.replay(session) == stored
    # Replays read pages of 1000, list_events of 2000: resume on both sides of each edge.
    for index in (0, 998, 999, 1000, 1999, 2000, 4498, 4499):
        assert await log.replay(session, after=stored[index].id) == stored[index + 1 :]


async def test_one_event_by_id(log: EventLog, session: str) -> None:
    stored = await fill(log, session, 30)
    for event in (stored[0], stored[17], stored[-1]):
        assert event.id is not None
        assert await log.event(session, event.id) == event
    # An id of this session that names no entry, and one of another session.
    last = stored[-1].id
    assert last is not None
    assert await log.event(session, last[:-7] + "zzz" + last[-4:]) is None
    other = new_session_id()
    await log.create_session(other, agent=f"{TENANT}/coder")
    with pytest.raises(InvalidId):
        await log.event(other, last)


async def test_reads_give_every_stream_entry_its_event_id_and_time(
    log: EventLog, session: str, redis: Redis
) -> None:
    # The read script encodes ids itself: it must agree with ids.event_id on every width,
    # up to the largest time and sequence number an id holds (62**8 - 1, 62**6 - 1).
    entries = ["1-0", "61-61", "62-3843", "3844-3844", "1764780000000-0", "1764780000000-1"]
    entries += [f"{62**8 - 1}-{62**6 - 2}", f"{62**8 - 1}-{62**6 - 1}"]
    events = session_keys(TENANT, session).events
    for entry in entries:
        await redis.xadd(
            events, {"t": "agent.thinking", "e": payload(AgentThinkingEvent())}, id=entry
        )
    async with log.tail(session, after=None) as tail:  # decodes entries in Python
        expected = [((event := await anext(tail)).id, event.processed_at) for _ in entries]
    tag = session_tag(session)
    assert [id_ for id_, _ in expected] == [event_id(entry, tag) for entry in entries]
    replayed = await log.replay(session)
    assert [(event.id, event.processed_at) for event in replayed] == expected
    listed = flat(await walk(log, session, limit=3, order="desc"))
    assert [(event.id, event.processed_at) for event in listed] == expected[::-1]


async def test_tails_start_where_asked_and_filter(log: EventLog, session: str) -> None:
    history = await fill(log, session, 3)
    async with (
        log.tail(session) as live,
        log.tail(session, after=None) as everything,
        log.tail(session, after=history[0].id) as resumed,
        log.tail(session, after=None, types=["agent.message"]) as answers,
    ):
        assert live.position == history[-1].id
        assert everything.position is None
        new = await log.send(
            session, [message("new"), AgentMessageEvent(content=[TextBlock(text="a")])]
        )
        assert [await anext(live) for _ in range(2)] == new
        assert [await anext(everything) for _ in range(5)] == history + new
        assert [await anext(resumed) for _ in range(4)] == history[1:] + new
        assert await anext(answers) == new[1]
        assert live.position == new[-1].id
    with pytest.raises(SessionNotFound):
        async with log.tail(new_session_id()):
            pass


async def test_a_tail_ends_when_its_session_is_deleted(
    log: EventLog, redis: Redis, session: str
) -> None:
    async with log.tail(session, block_ms=100) as tail:
        deleter = asyncio.create_task(log.delete_session(session))
        seen = [event async for event in tail]
        await deleter
    assert [type(e) for e in seen] == [SessionDeletedEvent]
    # Also when the keys just vanish: the tail notices within block_ms.
    other = new_session_id()
    await log.create_session(other, agent="default/coder")
    async with log.tail(other, block_ms=100) as tail:
        await redis.delete(*session_keys(TENANT, other))
        assert [event async for event in tail] == []


async def test_a_subscriber_that_tails_before_listing_sees_every_event_once(
    redis_url: str, log: EventLog, session: str
) -> None:
    """The client pattern of the API: open the stream, list history, dedupe by id."""
    appenders, each = 4, 150
    total = appenders * each
    clients = [Redis.from_url(redis_url) for _ in range(appenders)]

    async def appender(client: Redis, n: int) -> None:
        writer = EventLog(client, TENANT)
        for i in range(each):
            await writer.send(session, [message(f"{n}:{i}")])

    async def subscriber(opens_after: int) -> tuple[list[AnyEvent], list[AnyEvent]]:
        async def reached() -> bool:
            return (await log.snapshot(session)).event_count >= opens_after

        await wait_until_async(
            reached, timeout=30, what=f"the log to hold {opens_after} events", interval=0.001
        )
        async with log.tail(session) as tail:
            history = flat(await walk(log, session, limit=50))
            seen = {e.id for e in history}
            live = []
            while len(seen) < total:
                event = await asyncio.wait_for(anext(tail), timeout=5)
                live.append(event)
                seen.add(event.id)
        return history, live

    try:
        # Subscribers open at different moments while the appenders run.
        results = await asyncio.gather(
            *(subscriber(k) for k in (0, 100, 250, 400, 550)),
            *(appender(c, n) for n, c in enumerate(clients)),
        )
    finally:
        for client in clients:
            await client.aclose()
    everything = await log.replay(session)
    assert len(everything) == total
    for history, live in results[:5]:
        # Nothing is missing, the tail delivers nothing twice, and history followed by the
        # tail's new events is the log's own order.
        assert len(live) == len({e.id for e in live})
        known = {e.id for e in history}
        assert history + [e for e in live if e.id not in known] == everything
    assert any(history and live for history, live in results[1:5])
