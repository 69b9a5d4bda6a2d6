"""Leases (who may append as a session's worker) and the heartbeat that keeps one alive."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from paddock.eventlog.errors import LeaseLost, SessionNotFound


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to append to a session as its worker, until it expires or is released.

    ``token`` is the fencing token: it grows with every acquisition of the session's lease,
    and appends fenced with an older token are refused.
    """

    session_id: str
    holder: str
    token: int
    ttl_ms: int


def parse_lease(session_id: str, value: bytes | str | None, *, ttl_ms: int) -> Lease | None:
    """The lease stored as ``value`` ("<token>:<holder>", see prelude.lua), if any."""
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    token, _, holder = text.partition(":")
    return Lease(session_id, holder, int(token), ttl_ms)


class BeatThread:
    """An event loop in a thread of its own, with its own Redis client, for heartbeats.

    A worker's main loop can be busy for a while (replaying logs it took over, decoding
    model streams for many sessions) or have a long queue of ready tasks on a loaded
    machine; a heartbeat timer there fires late, and a live worker loses its sessions to
    the others, each of which then has to be taken over again. Here a beat waits only for
    the GIL (a thread gets it within the 5 ms switch interval), not for the main loop.
    A process that gets no CPU at all still misses beats: that is what a lease is for.
    """

    def __init__(self, connect: Callable[[], Redis]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="paddock-heartbeats", daemon=True
        )
        self._thread.start()
        self.redis: Redis = self.submit(_made(connect)).result()

    def submit(self, coroutine: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(_awaited(coroutine), self.loop)

    async def close(self) -> None:
        await asyncio.wrap_future(self.submit(self.redis.aclose()))
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join)
        self.loop.close()


T = TypeVar("T")


async def _made(connect: Callable[[], Redis]) -> Redis:
    return connect()  # inside the thread's loop, which its connections belong to


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Heartbeat:
    """Keeps a lease alive from a background task while the ``async with`` block runs.

    It beats once on entry and then every ``ttl/3``. ``lost`` is set, and the task stops,
    when a beat finds the lease gone (``LeaseLost``, ``SessionNotFound``) or when beats keep
    failing (Redis unreachable) until the lease would have expired; ``error`` says why.
    The holder must then stop working on the session: its appends are refused anyway.

    With ``thread``, the task runs in that ``BeatThread`` (``beat`` must then use its Redis
    client); ``lost`` is still an event of the caller's loop.
    """

    def __init__(
        self,
        beat: Callable[[], Awaitable[None]],
        *,
        ttl_ms: int,
        thread: BeatThread | None = None,
    ) -> None:
        self._beat = beat
        self._ttl = ttl_ms / 1000
        self._thread = thread
        self._task: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self.lost = asyncio.Event()
        self.error: BaseException | None = None
        self._home: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Heartbeat:
        self._home = asyncio.get_running_loop()
        if self._thread is None:
            self._task = asyncio.create_task(self._run(), name="paddock-lease-heartbeat")
        else:
            self._task = asyncio.wrap_future(self._thread.submit(self._run()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        # The flag ends the loop even if the cancel is lost on the way: redis-py 8.1 was
        # seen to swallow a cancellation that lands in a command now and then.
        if self._thread is None:
            self._stop.set()
        else:
            self._thread.loop.call_soon_threadsafe(self._stop.set)
        self._task.cancel()  # wrap_future passes a cancel on to the thread's task
        try:
            await self._task
        except asyncio.CancelledError:
            # Our own cancel; re-raise only if the caller's task is being cancelled too.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # Until a beat succeeds, assume the lease was taken just now; afterwards the lease is
        # known to last at least ttl from the moment its last successful renewal was sent.
        valid_until = loop.time() + self._ttl
        delay = 0.0
        while not await self._stopped_within(delay):
            sent = loop.time()
            try:
                # A beat that hangs must not outlive the lease it is trying to keep.
                async with asyncio.timeout(max(valid_until - sent, 0)):
                    await self._beat()
            except (LeaseLost, SessionNotFound) as exc:
                self._lose(exc)
                return
            except (RedisError, OSError, TimeoutError) as exc:
                if loop.time() >= valid_until:
                    self._lose(exc)
                    return
                delay = min(self._ttl / 10, 0.5)  # retry soon, the lease is running out
                continue
            valid_until = sent + self._ttl
            delay = self._ttl / 3

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _lose(self, exc: BaseException) -> None:
        self.error = exc
        assert self._home is not None
        if self._thread is None:
            self.lost.set()
        else:
            self._home.call_soon_threadsafe(self.lost.set)
