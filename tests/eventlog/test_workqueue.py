"""The per-Agent work queue: dedup, claims with leases, reclaim, and no lost input."""

from __future__ import annotations

import asyncio
import random

import pytest
from redis.asyncio import Redis

from paddock.eventlog import (
    AgentMessageEvent,
    AnyEvent,
    Claim,
    EventLog,
    LeaseLost,
    TextBlock,
    UserMessageEvent,
    WorkQueue,
    new_session_id,
    session_keys,
    work_keys,
)
from paddock.eventlog.keys import WORK_GROUP

TENANT = "default"
AGENT = "default/coder"
TTL_MS = 300


def message(text: str) -> UserMessageEvent:
    return UserMessageEvent(content=[TextBlock(text=text)])


def answer(text: str) -> AgentMessageEvent:
    return AgentMessageEvent(content=[TextBlock(text=f"re: {text}")])


@pytest.fixture
def queue(log: EventLog) -> WorkQueue:
    return WorkQueue(log, AGENT, lease_ttl_ms=TTL_MS)


async def claimed(queue: WorkQueue, consumer: str, *, block_ms: int = 1000) -> Claim:
    claim = await queue.claim(consumer, block_ms=block_ms)
    assert claim is not None
    return claim


async def last_id(log: EventLog, session: str) -> str:
    last = (await log.list_events(session, limit=1, order="desc")).data[0].id
    assert last is not None
    return last


async def test_a_session_is_queued_once_until_a_worker_takes_it(
    log: EventLog, queue: WorkQueue, session: str
) -> None:
    for text in ("a", "b", "c"):
        await log.send(session, [message(text)])
    assert await queue.depth() == 1
    assert await queue.enqueue(session) is False
    claim = await claimed(queue, "worker-1")
    assert (claim.session_id, claim.reclaimed) == (session, False)
    assert claim.lease.holder == "worker-1"
    # Input while the session is being worked on queues it again.
    await log.send(session, [message("d")])
    assert await queue.depth() == 2
    assert await queue.finish(claim, handled_through=await last_id(log, session))
    assert (await log.snapshot(session)).lease_holder is None


async def test_only_new_user_events_wake_a_worker(
    log: EventLog, queue: WorkQueue, session: str
) -> None:
    assert await queue.claim("worker-1", block_ms=50) is None
    assert await queue.enqueue(session)  # queued without input: dropped by the claim
    assert await queue.claim("worker-1", block_ms=50) is None
    assert await queue.depth() == 0
    await log.send(session, [message("hi")])
    claim = await claimed(queue, "worker-1")
    await log.append(session, [answer("hi")], fence=claim.lease)
    assert await queue.finish(claim, handled_through=await last_id(log, session))
    assert await queue.depth() == 0
    snap = await log.snapshot(session)
    assert snap.lease_holder is None
    assert not snap.pending_input


async def test_finish_refuses_while_input_is_unhandled(
    log: EventLog, queue: WorkQueue, session: str
) -> None:
    await log.send(session, [message("first")])
    claim = await claimed(queue, "worker-1")
    handled = await last_id(log, session)
    await log.send(session, [message("second")])  # arrives during the turn
    # Another worker finds the session leased and leaves it to its holder.
    assert await queue.claim("worker-2", block_ms=50) is None
    assert await queue.finish(claim, handled_through=handled) is False
    assert (await log.snapshot(session)).lease_holder == "worker-1"
    await log.append(session, [answer("second")], fence=claim.lease)
    assert await queue.finish(claim, handled_through=await last_id(log, session)) is True
    # The entry worker-2 left behind is reclaimed after the TTL and dropped: nothing to do.
    await asyncio.sleep(TTL_MS / 1000)  # the entry's idle time passes the TTL, on purpose
    assert await queue.claim("worker-2", block_ms=50) is None
    assert await queue.depth() == 0


async def test_a_stalled_worker_is_taken_over_and_fenced_out(
    redis_url: str, log: EventLog, queue: WorkQueue, session: str
) -> None:
    await log.send(session, [message("work")])
    stale = await claimed(queue, "worker-1")
    await log.append(session, [answer("partial")], fence=stale.lease)
    # worker-1 stalls: no heartbeat. worker-2 (own connection) polls and takes over.
    other = Redis.from_url(redis_url)
    try:
        queue2 = WorkQueue(EventLog(other, TENANT), AGENT, lease_ttl_ms=TTL_MS)
        assert await queue2.claim("worker-2", block_ms=TTL_MS // 2) is None
        fresh = await claimed(queue2, "worker-2", block_ms=3 * TTL_MS)
        assert (fresh.session_id, fresh.entry_id, fresh.reclaimed) == (
            session,
            stale.entry_id,
            True,
        )
        assert fresh.lease.token > stale.lease.token
        # How long the entry went without a heartbeat: at least the TTL.
        assert fresh.idle_s is not None
        assert fresh.idle_s >= TTL_MS / 1000
        assert stale.idle_s is None
        with pytest.raises(LeaseLost):
            await log.append(session, [answer("late")], fence=stale.lease)
        with pytest.raises(LeaseLost):
            await queue.finish(stale, handled_through=await last_id(log, session))
        await queue2.log.append(session, [answer("work")], fence=fresh.lease)
        assert await queue2.finish(fresh, handled_through=await last_id(log, session))
    finally:
        await other.aclose()
    texts = [e.content[0].text for e in await log.replay(session)]  # type: ignore[union-attr]
    assert texts == ["work", "re: partial", "re: work"]
    assert await queue.depth() == 0


async def test_a_heartbeat_keeps_the_claim(log: EventLog, session: str) -> None:
    # A longer TTL than the other tests': beats every ttl/3 must not miss one because the
    # machine is busy (a 300 ms TTL failed at load average 13-18), which is not what is tested.
    ttl_ms = 1200
    queue = WorkQueue(log, AGENT, lease_ttl_ms=ttl_ms)
    await log.send(session, [message("long turn")])
    claim = await claimed(queue, "worker-1")
    async with queue.heartbeat(claim) as heartbeat:
        await asyncio.sleep(3 * ttl_ms / 1000)  # three TTLs pass: the heartbeat is tested
        assert await queue.claim("worker-2", block_ms=ttl_ms) is None
        assert not heartbeat.lost.is_set()
        await log.append(session, [answer("long turn")], fence=claim.lease)
        assert await queue.finish(claim, handled_through=await last_id(log, session))


async def test_hand_back_lets_another_worker_resume_at_once(
    log: EventLog, queue: WorkQueue, session: str
) -> None:
    await log.send(session, [message("hi")])
    claim = await claimed(queue, "worker-1")
    await queue.hand_back(claim)
    resumed = await claimed(queue, "worker-2", block_ms=100)  # well before any TTL
    assert (resumed.session_id, resumed.reclaimed) == (session, False)
    assert await queue.depth() == 1
    assert await queue.finish(resumed, handled_through=await last_id(log, session))
    assert await queue.depth() == 0
    with pytest.raises(LeaseLost):
        await queue.hand_back(claim)


async def test_a_dead_workers_sessions_are_handed_back_at_once_and_fenced(
    log: EventLog, queue: WorkQueue, session: str
) -> None:
    await log.send(session, [message("work")])
    dead = await claimed(queue, "worker-1")
    await log.append(session, [answer("partial")], fence=dead.lease)
    # Another session, leased to worker-2: left alone.
    other = new_session_id()
    await log.create_session(other, agent=AGENT)
    await log.send(other, [message("other")])
    kept = await claimed(queue, "worker-2")
    assert await queue.hand_back_dead("worker-2-never-ran") == 0
    assert await queue.hand_back_dead("worker-1") == 1
    resumed = await claimed(queue, "worker-3", block_ms=100)  # well before the TTL
    assert (resumed.session_id, resumed.reclaimed) == (session, False)
    assert resumed.lease.token > dead.lease.token
    with pytest.raises(LeaseLost):
        await log.append(session, [answer("late")], fence=dead.lease)
    assert (await log.snapshot(other)).lease_holder == "worker-2"
    assert await queue.hand_back_dead("worker-1") == 0  # its lease is worker-3's now
    await log.append(session, [answer("work")], fence=resumed.lease)
    assert await queue.finish(resumed, handled_through=await last_id(log, session))
    await log.append(other, [answer("other")], fence=kept.lease)
    assert await queue.finish(kept, handled_through=await last_id(log, other))
    texts = [e.content[0].text for e in await log.replay(session)]  # type: ignore[union-attr]
    assert texts == ["work", "re: partial", "re: work"]
    assert await queue.depth() == 0


async def test_no_input_is_lost_with_many_workers_and_senders(
    redis_url: str, log: EventLog
) -> None:
    """Senders write to sessions at random moments while workers claim, answer and finish,
    some dying mid-turn. In the end every message has one answer and the queue is empty."""
    sessions = [new_session_id() for _ in range(4)]
    for session in sessions:
        await log.create_session(session, agent=AGENT)
    rng = random.Random(11)
    sent_all = asyncio.Event()
    deaths_left = 3
    reclaims = 0

    def texts(events: list[AnyEvent], kind: type) -> list[str]:
        return [e.content[0].text for e in events if isinstance(e, kind)]  # type: ignore[attr-defined]

    async def sender(client: Redis, n: int) -> None:
        writer = EventLog(client, TENANT)
        for i in range(15):
            await writer.send(rng.choice(sessions), [message(f"{n}.{i}")])
            await asyncio.sleep(rng.random() * 0.02)

    async def worker(client: Redis, name: str) -> None:
        nonlocal deaths_left, reclaims
        queue = WorkQueue(EventLog(client, TENANT), AGENT, lease_ttl_ms=TTL_MS)
        while not (sent_all.is_set() and await queue.depth() == 0):
            claim = await queue.claim(name, block_ms=50)
            if claim is None:
                continue
            reclaims += claim.reclaimed
            async with queue.heartbeat(claim):
                while True:
                    events = await queue.log.replay(claim.session_id)
                    answered = set(texts(events, AgentMessageEvent))
                    todo = [
                        t for t in texts(events, UserMessageEvent) if f"re: {t}" not in answered
                    ]
                    if todo and deaths_left:
                        deaths_left -= 1
                        return  # dies mid-turn, lease held: its claim must be reclaimed
                    if todo:
                        await queue.log.append(
                            claim.session_id, [answer(t) for t in todo], fence=claim.lease
                        )
                    # Handled through what it read, as the harness does: input sent after
                    # the replay (before or after the answers) is still to do.
                    read_through = events[-1].id
                    assert read_through is not None
                    if await queue.finish(claim, handled_through=read_through):
                        break

    async def senders(clients: list[Redis]) -> None:
        await asyncio.gather(*(sender(c, n) for n, c in enumerate(clients)))
        sent_all.set()

    async def workers(clients: list[Redis]) -> None:
        # A worker that dies is replaced, as by its Deployment.
        async def replaced(client: Redis, i: int) -> None:
            generation = 0
            while not (sent_all.is_set() and await WorkQueue(log, AGENT).depth() == 0):
                await worker(client, f"worker-{i}-{generation}")
                generation += 1

        await asyncio.gather(*(replaced(c, i) for i, c in enumerate(clients)))

    clients = [Redis.from_url(redis_url) for _ in range(6)]
    try:
        await asyncio.wait_for(asyncio.gather(senders(clients[:3]), workers(clients[3:])), 60)
    finally:
        for client in clients:
            await client.aclose()

    total = 0
    for session in sessions:
        events = await log.replay(session)
        asked = texts(events, UserMessageEvent)
        # Every message answered exactly once: fencing kept dying workers from doubling up.
        assert sorted(texts(events, AgentMessageEvent)) == sorted(f"re: {t}" for t in asked)
        snap = await log.snapshot(session)
        assert not snap.pending_input
        assert snap.lease_holder is None
        total += len(asked)
    assert total == 3 * 15
    assert deaths_left == 0
    assert reclaims >= 1
    keys = work_keys(AGENT)
    assert await log.redis.xlen(keys.stream) == 0
    assert await log.redis.hlen(keys.queued) == 0


@pytest.mark.parametrize("protocol", [2, 3])
async def test_the_log_and_queue_work_over_either_redis_protocol(
    redis_url: str, protocol: int
) -> None:
    """Reply shapes differ between RESP2 and RESP3 (redis-py 8 defaults to RESP3)."""
    client = Redis.from_url(redis_url, protocol=protocol)
    try:
        log = EventLog(client, TENANT)
        queue = WorkQueue(log, AGENT, lease_ttl_ms=TTL_MS)
        session = new_session_id()
        await log.create_session(session, agent=AGENT)
        async with log.tail(session) as tail:
            sent = await log.send(session, [message("hi")])
            assert await anext(tail) == sent[0]
        claim = await claimed(queue, "worker-1")
        await log.append(session, [answer("hi")], fence=claim.lease)
        assert (await log.snapshot(session)).event_count == 2
        assert await queue.finish(claim, handled_through=await last_id(log, session))
        assert [e.type for e in await log.replay(session)] == ["user.message", "agent.message"]
    finally:
        await client.aclose()


async def test_a_session_found_leased_elsewhere_is_taken_when_that_lease_runs_out(
    log: EventLog, session: str
) -> None:
    # A worker that dies just after taking a lease, before its first heartbeat, leaves an
    # entry that went idle before the lease was taken. Another worker that looks in between
    # finds the lease still held; it must take the session when the lease runs out, not a
    # whole TTL after it looked (taking the entry resets the entry's idle time).
    ttl_ms = 10_000
    queue = WorkQueue(log, AGENT, lease_ttl_ms=ttl_ms)
    await log.send(session, [message("work")])
    dead = await claimed(queue, "worker-1")
    # Its entry idle for a TTL, its lease (taken later) running for 0.3 s more.
    await log.redis.xclaim(
        work_keys(AGENT).stream, WORK_GROUP, "worker-1", 0, [dead.entry_id], idle=ttl_ms
    )
    await log.redis.pexpire(session_keys(TENANT, session).lease, 300)
    assert await queue.claim("worker-2", block_ms=1) is None  # the lease is still held
    taken = await claimed(queue, "worker-2", block_ms=ttl_ms // 2)
    assert (taken.session_id, taken.entry_id, taken.reclaimed) == (session, dead.entry_id, True)
    assert taken.lease.token > dead.lease.token
