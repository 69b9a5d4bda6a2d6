"""Session state shared by the operator and the harness, next to the event log:

- the session's settings (budget, environment, resources to mount), written once by
  whoever creates the session (the operator or the gateway) and read by harness workers,
  which never talk to the Kubernetes API;
- the sandbox bound to the session (written by the operator, read by harness workers) and
  requests for a sandbox or a replacement (written by harness workers, read by the operator);
- the tool-call journal: which calls a worker started, so that a worker resuming after a
  crash never re-runs a side-effecting call blindly.

Keys share the session's hash tag, like the log itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from paddock.eventlog.errors import SessionNotFound
from paddock.eventlog.events import TextBlock, UserMessageEvent
from paddock.eventlog.keys import COMPANION_SUFFIXES, PREFIX, companion_keys, session_keys
from paddock.eventlog.log import EventLog
from paddock.eventlog.scripts import source
from paddock.models.session import Budget, FileResource, GitRepository, Session

SANDBOX_BOUND = f"{PREFIX}:sandbox-bound"
"""Channel on which every binding is announced (message: the session id)."""
SANDBOX_REQUESTS = f"{PREFIX}:sandbox-requests"
"""Stream the operator reads: fields ``session``, ``reason`` (``needed`` or ``dead``) and
``pod`` (the dead sandbox, if any)."""
_REQUESTS_MAXLEN = 100_000


class SessionSettings(BaseModel):
    """What a harness worker needs to know of the Session resource."""

    namespace: str
    name: str
    environment: str | None = None
    budget: Budget | None = None
    repositories: list[GitRepository] = Field(default_factory=list)
    files: list[FileResource] = Field(default_factory=list)


class SandboxBinding(BaseModel):
    """How to reach the sandbox bound to a session."""

    url: str
    token: str
    pod: str
    claim: str = "warm"
    """`warm` (from the pool) or `cold` (created on demand)."""
    bound_at: float = Field(default_factory=time.time)


def _key(session_id: str, suffix: str) -> str:
    return companion_keys(session_id)[COMPANION_SUFFIXES.index(suffix)]


class SessionState:
    """Reads and writes of the shared session state; every call is one Redis round trip.
    Writes raise ``SessionNotFound`` once the session is deleted (nothing is recreated)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._put = redis.register_script(source("put_state"))

    async def _write(self, session_id: str, suffix: str, *args: str) -> None:
        keys = [session_keys(session_id).meta, _key(session_id, suffix)]
        if not await self._put(keys=keys, args=list(args)):
            raise SessionNotFound(session_id)

    async def put_settings(self, session_id: str, settings: SessionSettings) -> None:
        await self._write(session_id, "settings", "set", settings.model_dump_json())

    async def settings(self, session_id: str) -> SessionSettings | None:
        raw = await self.redis.get(_key(session_id, "settings"))
        return SessionSettings.model_validate_json(raw) if raw else None

    async def bind_sandbox(self, session_id: str, binding: SandboxBinding) -> None:
        """Record the binding, then announce it to workers waiting in `SandboxWaiter`."""
        await self._write(session_id, "sandbox", "set", binding.model_dump_json())
        await self.redis.publish(SANDBOX_BOUND, session_id)

    async def sandbox(self, session_id: str) -> SandboxBinding | None:
        raw = await self.redis.get(_key(session_id, "sandbox"))
        return SandboxBinding.model_validate_json(raw) if raw else None

    async def unbind_sandbox(self, session_id: str, pod: str | None = None) -> bool:
        """Forget the binding (only if it still names ``pod``, when given)."""
        key = _key(session_id, "sandbox")
        if pod is None:
            return bool(await self.redis.delete(key))
        current = await self.sandbox(session_id)
        if current is None or current.pod != pod:
            return False
        return bool(await self.redis.delete(key))

    async def request_sandbox(self, session_id: str, *, dead_pod: str | None = None) -> None:
        """Ask the operator for a sandbox; with ``dead_pod``, for a replacement of that one
        (whose binding is dropped first so no worker uses it again)."""
        if dead_pod is not None:
            await self.unbind_sandbox(session_id, dead_pod)
        fields: dict[FieldT, EncodableT] = {
            "session": session_id,
            "reason": "dead" if dead_pod else "needed",
        }
        if dead_pod:
            fields["pod"] = dead_pod
        await self.redis.xadd(SANDBOX_REQUESTS, fields, maxlen=_REQUESTS_MAXLEN, approximate=True)

    async def mark_started(self, session_id: str, call_id: str, pod: str) -> None:
        """Record that ``call_id`` is about to run in sandbox ``pod``."""
        await self._write(session_id, "calls", "hset", call_id, pod)

    async def started_in(self, session_id: str, call_id: str) -> str | None:
        """The sandbox a call was started in, or None if no worker ever started it."""
        # The client returns bytes (decode_responses=False, as for every client here).
        raw = cast("bytes | None", await self.redis.hget(_key(session_id, "calls"), call_id))
        return raw.decode() if raw else None


class SandboxWaiter:
    """Waits for sandbox bindings without polling: one subscription per process, however
    many sessions wait (a session waiting for its sandbox must cost its worker nothing, or
    the wait would slow the model calls of every other session)."""

    def __init__(self, state: SessionState, *, recheck_s: float = 2.0) -> None:
        self.state = state
        self.recheck_s = recheck_s
        self._waiting: dict[str, asyncio.Event] = {}
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
                # Subscribed before this read: a binding made after it is announced to us.
                binding = await self.state.sandbox(session_id)
                remaining = deadline - loop.time()
                if binding is not None or remaining <= 0:
                    return binding
                event.clear()
                # The re-check covers a lost connection (announcements are not replayed).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, self.recheck_s))
        finally:
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
                    await pubsub.subscribe(SANDBOX_BOUND)
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


def settings_for(session: Session, environment: str | None) -> SessionSettings:
    """What the harness needs of a Session resource; ``environment`` is the resolved one
    (the Session's own, else its Agent's)."""
    repositories = [r.git_repository for r in session.spec.resources if r.git_repository]
    files = [r.file for r in session.spec.resources if r.file]
    return SessionSettings(
        namespace=session.metadata.namespace or "default",
        name=session.metadata.name or "",
        environment=environment,
        budget=session.spec.budget,
        repositories=repositories,
        files=files,
    )


async def open_session(
    log: EventLog,
    state: SessionState,
    session_id: str,
    session: Session,
    *,
    environment: str | None,
) -> bool:
    """Start the session of a Session resource in Redis: create its log, record its settings
    and send its initial events (which queue it for the Agent's workers). Idempotent: the
    gateway (which creates sessions through the API) and the operator (which sees every
    Session) may both call it; the initial events are sent once. Returns whether this call
    created the log."""
    agent = f"{session.metadata.namespace or 'default'}/{session.spec.agent_ref.name}"
    created = await log.create_session(session_id, agent=agent)
    await state.put_settings(session_id, settings_for(session, environment))
    if session.spec.initial_events:
        events = [
            UserMessageEvent(content=[TextBlock(text=block.text) for block in event.content])
            for event in session.spec.initial_events
        ]
        await log.send(session_id, events, key="initial-events")
    return created
