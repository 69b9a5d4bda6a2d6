"""Leases: one holder at a time, growing fencing tokens, stale holders refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

import paddock.eventlog
from paddock.eventlog import (
    AgentMessageEvent,
    BeatThread,
    EventLog,
    Heartbeat,
    Lease,
    LeaseLost,
    SessionNotFound,
    TextBlock,
    UserMessageEvent,
    new_session_id,
    session_keys,
)
from paddock.testing.ports import wait_until_async
from paddock.testing.redis import RedisServer

TENANT = "default"

TTL_MS = 300


def reply(text: str) -> AgentMessageEvent:
    return AgentMessageEvent(content=[TextBlock(text=text)])


async def take_over(log: EventLog, session: str, holder: str) -> Lease:
    """Retry until the lease is free, as a worker that found it held would."""
    return await wait_until_async(
        lambda: log.acquire_lease(session, holder, ttl_ms=TTL_MS),
        timeout=5,
        what=f"{holder} to take the lease over",
        interval=0.02,
    )


async def test_two_workers_racing_for_a_session_get_one_lease(
    redis_url: str, log: EventLog
) -> None:
    # Each worker has its own connection, as two harness pods would.
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    workers = [EventLog(client, TENANT) for client in clients]
    try:
        for _ in range(50):
            session = new_session_id()
            await log.create_session(session, agent="default/coder")
            leases = await asyncio.gather(
                *(
                    w.acquire_lease(session, f"worker-{i}", ttl_ms=TTL_MS)
                    for i, w in enumerate(workers)
                )
            )
            winners = [lease for lease in leases if lease is not None]
            assert len(winners) == 1
            assert (await log.snapshot(session)).lease_holder == winners[0].holder
    finally:
        for client in clients:
            await client.aclose()


async def test_a_stalled_holder_is_taken_over_and_its_appends_refused(
    log: EventLog, session: str
) -> None:
    stale = await log.acquire_lease(session, "worker-a", ttl_ms=TTL_MS)
    assert stale is not None
    await log.append(session, [reply("a before the stall")], fence=stale)
    # worker-a stalls (no heartbeat); worker-b keeps trying and gets the lease once it expires.
    fresh = await take_over(log, session, "worker-b")
    assert fresh.token > stale.token
    with pytest.raises(LeaseLost) as lost:
        await log.append(session, [reply("a after the stall")], fence=stale)
    assert lost.value.holder == "worker-b"
    with pytest.raises(LeaseLost):
        await log.renew_lease(stale)
    with pytest.raises(LeaseLost):
        await log.release_lease(stale)
    await log.append(session, [reply("b")], fence=fresh)
    texts = [e.content[0].text for e in await log.replay(session)]  # type: ignore[union-attr]
    assert texts == ["a before the stall", "b"]


async def test_an_expired_lease_refuses_appends_even_before_a_takeover(
    log: EventLog, session: str
) -> None:
    lease = await log.acquire_lease(session, "worker-a", ttl_ms=50)
    assert lease is not None
    await asyncio.sleep(0.1)  # the TTL runs out: the passing of time is what is tested
    with pytest.raises(LeaseLost) as lost:
        await log.append(session, [reply("late")], fence=lease)
    assert lost.value.holder is None
    assert await log.replay(session) == []


# How a worker runs each fenced script; a script that starts checking the fence needs a
# line here, or the test below fails for it.
FENCED_WRITES: dict[str, Callable[[EventLog, Lease], Awaitable[object]]] = {
    "append": lambda log, lease: log.append(lease.session_id, [reply("stale")], fence=lease),
    "renew_lease": lambda log, lease: log.renew_lease(lease),
    "release_lease": lambda log, lease: log.release_lease(lease, handled_through=None),
}


def fenced_scripts() -> list[str]:
    """The scripts that run the prelude's fence check."""
    folder = Path(paddock.eventlog.__file__).parent
    return sorted(
        path.stem
        for path in folder.glob("*.lua")
        if path.stem != "prelude" and "fence_refusal(" in path.read_text()
    )


def test_the_fenced_scripts_are_the_worker_writes() -> None:
    assert fenced_scripts() == sorted(FENCED_WRITES)


@pytest.mark.parametrize("now", ["taken over", "free"])
@pytest.mark.parametrize("script", fenced_scripts())
async def test_every_fenced_script_refuses_a_stale_fencing_token(
    log: EventLog, redis: Redis, session: str, script: str, now: str
) -> None:
    stale = await log.acquire_lease(session, "stalled", ttl_ms=10_000)
    assert stale is not None
    await log.release_lease(stale)
    holder = None
    if now == "taken over":
        fresh = await log.acquire_lease(session, "fresh", ttl_ms=60_000)
        assert fresh is not None
        assert fresh.token > stale.token
        holder = fresh.holder
    before = await log.snapshot(session)
    with pytest.raises(LeaseLost) as refused:
        await FENCED_WRITES[script](log, stale)
    assert refused.value.holder == holder
    # Nothing written: no event, and the current lease neither released nor shortened.
    assert await log.snapshot(session) == before
    ttl_ms = await redis.pttl(session_keys(TENANT, session).lease)
    if holder is None:
        assert ttl_ms == -2  # still no lease
    else:
        assert ttl_ms > stale.ttl_ms


async def test_fencing_tokens_only_grow(log: EventLog, session: str) -> None:
    tokens = []
    for i in range(5):
        lease = await log.acquire_lease(session, f"worker-{i}", ttl_ms=TTL_MS)
        assert lease is not None
        assert await log.acquire_lease(session, "intruder", ttl_ms=TTL_MS) is None
        tokens.append(lease.token)
        await log.release_lease(lease)
    assert tokens == sorted(set(tokens))


async def test_a_heartbeat_keeps_the_lease_and_signals_its_loss(
    log: EventLog, session: str
) -> None:
    lease = await log.acquire_lease(session, "worker-a", ttl_ms=TTL_MS)
    assert lease is not None
    async with log.heartbeat(lease) as heartbeat:
        await asyncio.sleep(TTL_MS * 3 / 1000)  # three TTLs pass: the heartbeat is tested
        assert await log.acquire_lease(session, "worker-b", ttl_ms=TTL_MS) is None
        await log.append(session, [reply("still mine")], fence=lease)
        # The lease changes hands behind the heartbeat's back (an operator, a bug...).
        await log.release_lease(lease)
        assert await log.acquire_lease(session, "worker-b", ttl_ms=TTL_MS) is not None
        await asyncio.wait_for(heartbeat.lost.wait(), timeout=TTL_MS / 1000)
        assert isinstance(heartbeat.error, LeaseLost)


async def test_a_heartbeat_gives_up_when_redis_stays_away_past_the_ttl(
    redis_server: RedisServer, log: EventLog, session: str
) -> None:
    lease = await log.acquire_lease(session, "worker-a", ttl_ms=TTL_MS)
    assert lease is not None
    try:
        async with log.heartbeat(lease) as heartbeat:
            redis_server.stop()
            await asyncio.wait_for(heartbeat.lost.wait(), timeout=3 * TTL_MS / 1000)
            assert heartbeat.error is not None
    finally:
        redis_server.start()


async def test_release_checks_for_input_that_arrived_meanwhile(log: EventLog, session: str) -> None:
    first = await log.send(session, [UserMessageEvent(content=[TextBlock(text="1")])])
    lease = await log.acquire_lease(session, "worker-a", ttl_ms=TTL_MS)
    assert lease is not None
    answered = await log.append(session, [reply("answer to 1")], fence=lease)
    await log.send(session, [UserMessageEvent(content=[TextBlock(text="2")])])
    # The worker handled everything up to its answer: message 2 is still pending.
    assert await log.release_lease(lease, handled_through=answered[-1].id) is False
    snap = await log.snapshot(session)
    assert snap.lease_holder == "worker-a"
    assert snap.pending_input
    latest = (await log.replay(session))[-1].id
    assert await log.release_lease(lease, handled_through=latest) is True
    snap = await log.snapshot(session)
    assert snap.lease_holder is None
    assert not snap.pending_input
    # A position before the latest input is never enough, whoever holds the lease.
    again = await log.acquire_lease(session, "worker-b", ttl_ms=TTL_MS)
    assert again is not None
    assert first[0].id is not None
    assert await log.release_lease(again, handled_through=first[0].id) is False
    assert await log.release_lease(again) is True  # unconditionally: nothing recorded
    assert not (await log.snapshot(session)).pending_input
    # A deleted session hands out no lease (and no fencing token) again.
    await log.delete_session(session)
    with pytest.raises(SessionNotFound):
        await log.acquire_lease(session, "worker-c", ttl_ms=TTL_MS)


async def test_a_heartbeat_in_its_own_thread_beats_while_the_loop_is_blocked(
    redis_url: str, log: EventLog, session: str
) -> None:
    # A worker's loop busy with CPU-bound work (replaying logs it took over) must not lose
    # its leases: the beats run in a thread with its own client. A longer TTL than the
    # other tests', so that a busy machine does not delay a beat past it.
    ttl_ms = 1200
    beats = BeatThread(lambda: Redis.from_url(redis_url))
    try:
        beat_log = EventLog(beats.redis, TENANT)
        lease = await log.acquire_lease(session, "worker-a", ttl_ms=ttl_ms)
        assert lease is not None
        heartbeat = Heartbeat(lambda: beat_log.renew_lease(lease), ttl_ms=ttl_ms, thread=beats)
        async with heartbeat:
            time.sleep(3 * ttl_ms / 1000)  # noqa: ASYNC251 (the loop blocked: what is tested)
            assert not heartbeat.lost.is_set()
            await log.append(session, [reply("still mine")], fence=lease)
            await log.release_lease(lease)  # behind the heartbeat's back: its loss is seen
            await asyncio.wait_for(heartbeat.lost.wait(), timeout=ttl_ms / 1000)
            assert isinstance(heartbeat.error, LeaseLost)
    finally:
        await beats.close()
