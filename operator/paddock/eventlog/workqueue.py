"""The work queue of an Agent: which sessions have input for a harness worker, and who
works on each. See docs/eventlog.md for why no input is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import ResponseError

from paddock.eventlog.errors import LeaseLost, SessionNotFound
from paddock.eventlog.keys import WORK_GROUP, tenant_of, work_keys
from paddock.eventlog.lease import BeatThread, Heartbeat, Lease, parse_lease
from paddock.eventlog.log import EventLog
from paddock.eventlog.storage import stream_entries

T = TypeVar("T")

PENDING_LOOKED_AT = 1000
"""Pending entries whose idle time says when ``claim`` next looks for abandoned work. An
Agent with more sessions in progress may wake a little late for the ones beyond (at most
one TTL: an entry is never idle longer unnoticed)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A session taken from the work queue, with the lease that fences its worker.

    Append with ``fence=claim.lease``, keep it alive with ``WorkQueue.heartbeat`` and end
    with ``WorkQueue.finish`` (or ``hand_back``).
    """

    session_id: str
    entry_id: str
    """The work stream entry; it stays pending until the work is finished."""
    lease: Lease
    reclaimed: bool
    """Taken over after ``lease_ttl_ms`` without a heartbeat: a worker may have died mid-turn."""
    idle_s: float | None = None
    """A reclaimed claim's time without a heartbeat before it was taken over."""


class WorkQueue:
    """The work queue of one Agent: a Redis stream read by one consumer group of workers.

    - ``enqueue`` queues a session at most once until a worker takes it (``EventLog.send``
      calls it for every batch with a ``user.*`` event).
    - ``claim`` returns a session only together with its lease, and only if it has input
      not yet handled, so at most one worker works on a session at a time.
    - The entry of a session being worked on is removed only by ``finish``, after its
      worker released the lease with no input left unhandled (or replaced by ``hand_back``).
      A worker that dies or stalls leaves it pending; once it has been idle (no heartbeat)
      for ``lease_ttl_ms``, the next ``claim`` of any worker takes it over, and with it the
      session, whose lease has expired by then.
    """

    def __init__(
        self,
        log: EventLog,
        agent: str,
        *,
        lease_ttl_ms: int = 30_000,
        beats: BeatThread | None = None,
    ) -> None:
        """``beats``: run heartbeats in that thread instead of the caller's loop."""
        if lease_ttl_ms < 1:
            raise ValueError("lease_ttl_ms must be at least 1")
        self.log = log.tenant(tenant_of(agent))  # an Agent's sessions are of its namespace
        self.lease_ttl_ms = lease_ttl_ms
        self._keys = work_keys(agent)
        self._beats = beats
        self._beat_log = self.log if beats is None else EventLog(beats.redis, tenant_of(agent))

    async def enqueue(self, session_id: str) -> bool:
        """Queue the session; False if an undelivered entry already queues it."""
        reply = await self.log.scripts.enqueue(keys=self._keys, args=[session_id, WORK_GROUP, ""])
        return reply is not None

    async def claim(self, consumer: str, *, block_ms: int = 5000) -> Claim | None:
        """The next session to work on, leased to ``consumer``; None after ``block_ms``.

        Abandoned entries (idle longer than the lease TTL) come first, then new ones; while
        blocking, it looks for abandoned entries again when the most idle pending entry
        becomes reclaimable.
        Entries of deleted sessions, or of sessions whose input was handled meanwhile, are
        removed on the way. An entry whose session is leased to another worker is left
        pending: that worker sees the input before it can release the lease, and if it
        dies this entry or its own is reclaimed later.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            taken, idle_s, wait_ms = await self._reclaim(consumer)
            reclaimed = taken is not None
            if taken is None:
                remaining_ms = int((deadline - loop.time()) * 1000)
                if remaining_ms < 1:
                    return None
                # Wake up when the next entry becomes reclaimable: time passing makes it so,
                # which no blocking read would notice. Waking at a fixed ttl/3 instead put up
                # to a third of the TTL on top of every takeover (docs/harness.md).
                taken = await self._next(consumer, min(remaining_ms, wait_ms))
                if taken is None:
                    continue
            entry_id, session_id = taken
            attempt = await self.log.try_acquire_lease(
                session_id, consumer, ttl_ms=self.lease_ttl_ms, only_with_input=True
            )
            if attempt.lease is not None:
                return Claim(session_id, entry_id, attempt.lease, reclaimed, idle_s)
            if attempt.outcome == "held":
                await self._reclaimable_after(entry_id, consumer, attempt.held_for_ms)
            else:
                await self._settle(session_id, entry_id)

    def heartbeat(self, claim: Claim) -> Heartbeat:
        """A ``Heartbeat`` that renews the claim's lease and keeps its entry from being
        reclaimed, every ttl/3 while its ``async with`` runs."""

        log = self._beat_log

        async def beat() -> None:
            await log.renew_lease(claim.lease)
            # Claiming the entry again resets its idle time, which is what reclaim() reads.
            await log.redis.xclaim(
                self._keys.stream, WORK_GROUP, claim.lease.holder, 0, [claim.entry_id], justid=True
            )

        return Heartbeat(beat, ttl_ms=claim.lease.ttl_ms, thread=self._beats)

    async def finish(self, claim: Claim, *, handled_through: str) -> bool:
        """Release the session and remove its entry, if no input arrived after event
        ``handled_through``. Otherwise return False: the lease is still held and the
        caller must handle the new input, then call ``finish`` again.

        ``LeaseLost`` if the lease was lost; the entry is then left to its new owner.
        A session deleted meanwhile counts as finished.
        """
        try:
            if not await self.log.release_lease(claim.lease, handled_through=handled_through):
                return False
        except SessionNotFound:
            pass
        await self._settle(claim.session_id, claim.entry_id)
        return True

    async def hand_back(self, claim: Claim) -> None:
        """Stop working on the session without finishing it (for example on shutdown):
        release the lease, then replace the entry by a new one in one step, so another
        worker resumes the session at once. ``LeaseLost`` if the lease was already lost."""
        try:
            await self.log.release_lease(claim.lease)
        except SessionNotFound:
            await self._settle(claim.session_id, claim.entry_id)
            return
        await self.log.scripts.enqueue(
            keys=self._keys, args=[claim.session_id, WORK_GROUP, claim.entry_id]
        )

    async def hand_back_dead(self, consumer: str) -> int:
        """Hand back the sessions leased to ``consumer``, a worker known to be dead (its
        process was reaped), so that others resume them at once instead of after the lease
        TTL; the number handed back.

        Only for a worker that can no longer run: each release is fenced by the token read
        from the lease, so a lease taken by anyone since is left alone, and a write the dead
        worker's socket still delivers is refused by the fence like any stale one.
        """
        pending = await self.log.redis.xpending_range(
            self._keys.stream, WORK_GROUP, min="-", max="+", count=PENDING_LOOKED_AT,
            consumername=consumer,
        )  # fmt: skip
        handed = 0
        for entry in pending:
            entry_id = _text(entry["message_id"])
            found = await self.log.redis.xrange(self._keys.stream, entry_id, entry_id)
            fields = found[0][1] if found else None
            if not fields:
                continue
            session_id = _text(fields[b"session"])
            value = await self.log.redis.get(self.log.keys(session_id).lease)
            lease = parse_lease(session_id, value, ttl_ms=self.lease_ttl_ms)
            if lease is None or lease.holder != consumer:
                continue  # expired, or read by the worker while leased to another
            try:
                await self.hand_back(Claim(session_id, entry_id, lease, reclaimed=False))
            except LeaseLost:
                continue
            handed += 1
        return handed

    async def depth(self) -> int:
        """Entries in the queue: sessions queued, being worked on, or waiting for a lease."""
        return int(await self.log.redis.xlen(self._keys.stream))

    async def _reclaim(self, consumer: str) -> tuple[tuple[str, str] | None, float | None, int]:
        """(entry id, session id) of an abandoned entry taken over and how long it had been
        idle; or None and the ms until the next pending entry becomes reclaimable."""
        reply = await self._with_group(
            lambda: self.log.scripts.reclaim(
                keys=self._keys,
                args=[WORK_GROUP, consumer, self.lease_ttl_ms, PENDING_LOOKED_AT],
            )
        )
        if len(reply) == 3:
            idle_ms = int(reply[2])
            taken = (reply[0].decode(), reply[1].decode())
            return taken, idle_ms / 1000 if idle_ms >= 0 else None, 0
        return None, None, int(reply[0])

    async def _reclaimable_after(self, entry_id: str, consumer: str, ms: int) -> None:
        """Make a pending entry reclaimable in ``ms`` (when the lease of its session's holder
        runs out). Taking it reset its idle time: left so, a holder that died just after
        taking the lease (before its first heartbeat) would be taken over a whole TTL late."""
        idle_ms = max(self.lease_ttl_ms - ms, 0)
        await self.log.redis.xclaim(
            self._keys.stream, WORK_GROUP, consumer, 0, [entry_id], idle=idle_ms, justid=True
        )

    async def _next(self, consumer: str, block_ms: int) -> tuple[str, str] | None:
        reply = await self._with_group(
            lambda: self.log.redis.xreadgroup(
                WORK_GROUP, consumer, {self._keys.stream: ">"}, count=1, block=block_ms
            )
        )
        entries = stream_entries(reply)
        if not entries:
            return None
        entry_id, fields = entries[0]
        session_id = fields[b"session"].decode()
        await self.log.scripts.unmark(keys=[self._keys.queued], args=[session_id, entry_id])
        return entry_id.decode(), session_id

    async def _settle(self, session_id: str, entry_id: str) -> None:
        await self.log.scripts.settle(keys=self._keys, args=[session_id, WORK_GROUP, entry_id])

    async def _with_group(self, call: Callable[[], Awaitable[T]]) -> T:
        # The group is created with the stream by the first enqueue; a worker that starts
        # before any enqueue (or after the stream was removed) creates it here.
        try:
            return await call()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        try:
            await self.log.redis.xgroup_create(self._keys.stream, WORK_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        return await call()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
