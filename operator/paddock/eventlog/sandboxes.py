"""The sandbox protocol: how a session gets its hands, in four steps with one name each.

1. **request** — a harness worker asks for a sandbox (`SandboxRequest`, on its tenant's
   stream `keys.sandbox_requests(namespace)`): one is `needed`, or the bound one is `dead`
   (its binding is dropped first, so no worker uses it again). The operator reads the
   streams of the tenants it serves with `SandboxRequestReader`; a request is about a
   session of the stream's tenant, and of no other (a tenant can write only its own). (It also provides one unasked: when it accepts a Session, and
   when a bound pod dies.)
2. **claim** — the operator takes a warm pod for the session (a JSON patch tested on the
   pod's resourceVersion) or starts a cold one: `paddock.operator.sandboxes`, not here.
3. **binding** — the operator records which sandbox serves the session (`SandboxBinding`,
   in the session's state: `SessionState.bind_sandbox`) and announces it on the tenant's
   channel `keys.sandbox_bound(namespace)`; workers wait for it with `SandboxWaiter`.
4. **bind call** — before its first tool call a worker tells the sandbox whose it is now
   (`POST /v1/bind`, `paddock.sandbox.api.BindRequest`); a sandbox takes one session only.

The sequence diagram is in docs/architecture.md ("The sandbox protocol").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from paddock.eventlog.keys import sandbox_bound, sandbox_requests
from paddock.eventlog.storage import stream_entries

if TYPE_CHECKING:
    from paddock.eventlog.sessionstate import SessionState

_REQUESTS_MAXLEN = 100_000
_RECLAIM_IDLE_MS = 30_000
"""A request read but not acknowledged this long ago (its reader died) is read again."""


class SandboxRequest(BaseModel):
    """Step 1: a worker asks for a sandbox, or for a replacement of a dead one."""

    session_id: str
    reason: Literal["needed", "dead"] = "needed"
    dead_pod: str | None = None
    """The bound sandbox that failed (with reason `dead`): the operator deletes it."""

    def fields(self) -> dict[str, str]:
        """The stream entry (flat strings, as Redis stores them)."""
        entry = {"session": self.session_id, "reason": self.reason}
        if self.dead_pod:
            entry["pod"] = self.dead_pod
        return entry

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> SandboxRequest:
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        reason: Literal["needed", "dead"] = "dead" if entry.get("reason") == "dead" else "needed"
        return cls(session_id=entry["session"], reason=reason, dead_pod=entry.get("pod"))


async def request_sandbox(redis: Redis, tenant: str, request: SandboxRequest) -> None:
    fields = cast(dict[FieldT, EncodableT], request.fields())  # redis-py's dict is invariant
    await redis.xadd(sandbox_requests(tenant), fields, maxlen=_REQUESTS_MAXLEN, approximate=True)


class SandboxRequestReader:
    """The operator's side of step 1: a consumer group on each tenant's request stream, so
    a request a previous reader took and never acknowledged (it died) is read again.

    The streams are per tenant, not one shared stream: Redis does not record who wrote an
    entry, so on a shared stream a tenant could ask for (or report dead) the sandbox of
    another tenant's session; on its own stream it can name only its own sessions."""

    GROUP = "operators"

    def __init__(self, redis: Redis, consumer: str) -> None:
        self.redis, self.consumer = redis, consumer

    async def read(
        self, tenants: Collection[str], *, count: int = 50, block_ms: int = 1000
    ) -> list[tuple[str, bytes, SandboxRequest]]:
        """Requests of ``tenants`` to handle (then `done`), as (tenant, entry id, request):
        abandoned ones first, then new ones, waiting up to ``block_ms`` for one. Makes the
        streams and their groups if they are gone (a new tenant, a new Redis, data loss)."""
        streams = {tenant: sandbox_requests(tenant) for tenant in sorted(tenants)}
        if not streams:
            await asyncio.sleep(block_ms / 1000)
            return []
        by_stream = {stream: tenant for tenant, stream in streams.items()}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in streams.values():
                    pipe.xautoclaim(
                        stream, self.GROUP, self.consumer, _RECLAIM_IDLE_MS, count=count
                    )
                reclaimed = await pipe.execute()
            fresh = await self.redis.xreadgroup(
                self.GROUP,
                self.consumer,
                {stream: ">" for stream in streams.values()},
                count=count,
                block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for stream in streams.values():
                with contextlib.suppress(ResponseError):  # it exists (BUSYGROUP)
                    await self.redis.xgroup_create(stream, self.GROUP, id="0", mkstream=True)
            return []
        found = [
            (tenant, entry_id, fields)
            for tenant, reply in zip(streams, reclaimed, strict=True)
            for entry_id, fields in reply[1]
        ]
        for stream, entries in _by_stream(fresh):
            found += [(by_stream[stream], entry_id, fields) for entry_id, fields in entries]
        return [(t, entry_id, SandboxRequest.from_fields(f)) for t, entry_id, f in found]

    async def done(self, tenant: str, entry_id: bytes) -> None:
        await self.redis.xack(sandbox_requests(tenant), self.GROUP, entry_id)


def _by_stream(reply: object) -> list[tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]]:
    """The entries of a many-stream XREADGROUP reply, by stream, in whichever shape the
    client's protocol gives it (a dict in RESP3, a list of pairs in RESP2)."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else cast("list[Any]", reply)
    found = []
    for stream, entries in pairs:
        name = stream.decode() if isinstance(stream, bytes) else str(stream)
        found.append((name, stream_entries({stream: entries})))
    return found


class SandboxBinding(BaseModel):
    """Step 3: how to reach the sandbox bound to a session."""

    url: str
    token: str
    pod: str
    claim: str = "warm"
    """`warm` (from the pool) or `cold` (created on demand)."""
    bound_at: float = Field(default_factory=time.time)


class SandboxWaiter:
    """Step 3, the worker's side: waits for sandbox bindings without polling, with one
    subscription per process however many sessions wait (a session waiting for its sandbox
    must cost its worker nothing, or the wait would slow the model calls of every other
    session)."""

    def __init__(self, state: SessionState, *, recheck_s: float = 2.0) -> None:
        self.state = state
        self.recheck_s = recheck_s
        self._waiting: dict[str, asyncio.Event] = {}
        self.parked: set[str] = set()
        """Sessions whose binding was not there when last read: only an announcement (or
        the re-check) wakes them."""
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def wait(self, session_id: str, timeout_s: float) -> SandboxBinding | None:
        """The session's binding, waiting up to ``timeout_s`` for one."""
        await self._listen()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        event = self._waiting.setdefault(session_id, asyncio.Event())
        try:
            while True:
                # Subscribed, and the event cleared, before this read: a binding made after
                # it is announced to us and sets the event.
                event.clear()
                binding = await self.state.sandbox(session_id)
                remaining = deadline - loop.time()
                if binding is not None or remaining <= 0:
                    return binding
                # The re-check covers a lost connection (announcements are not replayed).
                self.parked.add(session_id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, self.recheck_s))
                self.parked.discard(session_id)
        finally:
            self.parked.discard(session_id)
            self._waiting.pop(session_id, None)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    async def _listen(self) -> None:
        if self._listener is None:
            self._listener = asyncio.ensure_future(self._run())
        await self._subscribed.wait()

    async def _run(self) -> None:
        while True:
            try:
                async with self.state.redis.pubsub() as pubsub:
                    await pubsub.subscribe(sandbox_bound(self.state.own()))
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        event = self._waiting.get(message["data"].decode())
                        if event is not None:
                            event.set()
            except RedisError:
                # Waiters fall back to their periodic re-check until we are back.
                self._subscribed.set()
                await asyncio.sleep(1)
