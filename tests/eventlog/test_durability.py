"""Redis killed (SIGKILL) and restarted mid-stream: acknowledged appends are all still there.

The fixture's redis-server runs with AOF and ``appendfsync always``.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from paddock.eventlog import (
    AgentMessageEvent,
    AnyEvent,
    EventLog,
    TextBlock,
    UserMessageEvent,
    WorkQueue,
)
from paddock.testing.redis import RedisServer


class Appender:
    """Appends numbered events until stopped; remembers what was acknowledged."""

    def __init__(self) -> None:
        self.acked: list[AnyEvent] = []
        self.failures = 0
        self.stop = asyncio.Event()
        self._progress = asyncio.Condition()

    async def acknowledged(self, events: list[AnyEvent]) -> None:
        async with self._progress:
            self.acked += events
            self._progress.notify_all()

    async def until(self, count: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: len(self.acked) >= count)


async def kill_and_restart(redis_server: RedisServer, appender: Appender) -> None:
    await appender.until(len(appender.acked) + 200)
    # In a thread, so that appends keep running while the server dies and comes back.
    await asyncio.to_thread(redis_server.restart, hard=True)
    await appender.until(len(appender.acked) + 200)
    appender.stop.set()


async def test_acknowledged_sends_survive_a_hard_restart(
    redis_server: RedisServer, log: EventLog, session: str
) -> None:
    appender = Appender()

    async def run() -> None:
        i = 0
        while not appender.stop.is_set():
            try:
                await appender.acknowledged(
                    await log.send(session, [UserMessageEvent(content=[TextBlock(text=str(i))])])
                )
            except (RedisError, OSError):
                appender.failures += 1
                await asyncio.sleep(0.01)
            i += 1

    await asyncio.gather(run(), kill_and_restart(redis_server, appender))
    assert appender.failures > 0  # the kill did land mid-stream
    replayed = await log.replay(session)
    position = {event.id: index for index, event in enumerate(replayed)}
    # Every acknowledged event is there, unchanged and in order. (An append that was
    # executed but whose reply was lost may be there too, and retried by the client.)
    assert all(replayed[position[e.id]] == e for e in appender.acked)
    assert [position[e.id] for e in appender.acked] == sorted(
        position[e.id] for e in appender.acked
    )
    assert (await log.snapshot(session)).event_count == len(replayed)


async def test_keyed_appends_and_claims_come_through_a_hard_restart_exactly_once(
    redis_server: RedisServer, log: EventLog, session: str
) -> None:
    await log.send(session, [UserMessageEvent(content=[TextBlock(text="go")])])
    queue = WorkQueue(log, "default/coder", lease_ttl_ms=60_000)
    claim = await queue.claim("worker-1", block_ms=1000)
    assert claim is not None
    appender = Appender()

    async def run() -> None:
        i = 0
        while not appender.stop.is_set():
            event = AgentMessageEvent(content=[TextBlock(text=str(i))])
            try:
                # Retried with the same key until acknowledged, as a worker retries a result.
                stored = await log.append(session, [event], fence=claim.lease, key=f"r{i}")
            except (RedisError, OSError):
                appender.failures += 1
                await asyncio.sleep(0.01)
                continue
            await appender.acknowledged(stored)
            i += 1

    await asyncio.gather(run(), kill_and_restart(redis_server, appender))
    assert appender.failures > 0
    replayed = await log.replay(session)
    assert replayed[1:] == appender.acked  # each event exactly once, despite the retries
    # The lease, the fencing counter and the consumer group's pending entry survived too.
    assert await queue.finish(claim, handled_through=appender.acked[-1].id)
    assert await queue.depth() == 0
    again = await log.acquire_lease(session, "worker-2", ttl_ms=1000)
    assert again is not None
    assert again.token > claim.lease.token
