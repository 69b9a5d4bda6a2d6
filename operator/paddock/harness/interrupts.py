"""User interrupts: a session's `user.interrupt` events, followed while a worker runs it,
cancel the model or tool call in progress; so does the loss of the session's lease."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError

from paddock.harness.sessionlog import SessionLog

log = logging.getLogger(__name__)
T = TypeVar("T")


class Interrupted(Exception):
    """The user interrupted, or the lease was lost, while a call was running."""


class Interrupts:
    """The interrupts of one session during one worker's run of it."""

    def __init__(self, session: SessionLog, lease_lost: asyncio.Event) -> None:
        self.session = session
        self.lease_lost = lease_lost
        self.latest = ""
        """The id of the newest `user.interrupt` seen ("" before any)."""
        self._seen = asyncio.Event()

    async def interruptible(self, call: Coroutine[Any, Any, T]) -> T:
        """Run ``call``, cancelling it when a `user.interrupt` newer than the log position at
        the start arrives, or when the lease is lost; then raise `Interrupted`."""
        start = self.session.position or ""
        task = asyncio.ensure_future(call)
        while not task.done():
            self._seen.clear()
            if self.latest > start or self.lease_lost.is_set():
                break
            waiters = {
                asyncio.ensure_future(self._seen.wait()),
                asyncio.ensure_future(self.lease_lost.wait()),
            }
            await asyncio.wait({task, *waiters}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise Interrupted

    async def watch(self) -> None:
        """Follow the log for `user.interrupt` events for as long as the run lasts (one
        blocking read per session, not one per call)."""
        session_id = self.session.session_id
        after = self.session.position or "$"
        while True:
            tail = self.session.log.tail(session_id, after=after, types=["user.interrupt"])
            try:
                async with tail:
                    async for event in tail:
                        assert event.id is not None
                        if getattr(event, "session_thread_id", None):
                            continue  # an interrupt of one thread: its own log has it
                        self.latest = max(self.latest, event.id)
                        self._seen.set()
                    return
            except RedisError as exc:
                log.warning("session %s: interrupt watch failed (%r); retrying", session_id, exc)
                after = tail.position or after
                await asyncio.sleep(0.5)
