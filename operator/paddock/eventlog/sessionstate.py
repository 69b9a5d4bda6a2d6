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

import secrets
from typing import Literal, cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from paddock.eventlog.errors import SessionNotFound
from paddock.eventlog.events import (
    AnyEvent,
    TextBlock,
    TextRubric,
    UserDefineOutcomeEvent,
    UserMessageEvent,
)
from paddock.eventlog.ids import new_id
from paddock.eventlog.keys import (
    COMPANION_SUFFIXES,
    TenantViews,
    check_tenant,
    companion_keys,
    sandbox_bound,
    session_keys,
)
from paddock.eventlog.log import EventLog
from paddock.eventlog.sandboxes import SandboxBinding, SandboxRequest, request_sandbox
from paddock.eventlog.scripts import source
from paddock.models import AgentSpec, Budget, FileResource, GitRepository, Session


class AgentPin(BaseModel):
    """The Agent version a session runs to its end, and that version's spec (so a worker
    whose pod runs another version still runs this one). Written once: the first writer's
    pin stays (docs/api-design.md, "Decision: agent versions")."""

    version: int
    spec: AgentSpec


class SessionSettings(BaseModel):
    """What a harness worker needs to know of the Session resource."""

    namespace: str
    name: str
    environment: str | None = None
    budget: Budget | None = None
    repositories: list[GitRepository] = Field(default_factory=list)
    files: list[FileResource] = Field(default_factory=list)
    agent: AgentPin | None = None
    """None for a session opened before versions were pinned: it runs its worker's spec."""
    vault_ids: list[str] = Field(default_factory=list)
    """The session's vaults, in order: the credential proxy adds the first credential of
    these whose `mcp_server_url` is an MCP server's URL to the harness's requests to it."""
    parent_session_id: str | None = None
    """For a thread (paddock.harness.threads): the session whose coordinator started it. A
    thread runs its tools in a sandbox of its own, which that session's Session resource
    owns (docs/harness.md, "Threads")."""
    gateway_token: str | None = None
    """The harness's credential at the gateway's internal file routes for this session
    (mounting its Files API files, uploading its outputs); random, made by `open_session`."""


class SessionState(TenantViews):
    """Reads and writes of the shared session state; every call is one Redis round trip.
    Writes raise ``SessionNotFound`` once the session is deleted (nothing is recreated).

    Like ``EventLog``, the view of one tenant; ``SessionState(redis)`` is the root of the
    operator and the gateway, ``tenant(namespace)`` the view of one."""

    def __init__(self, redis: Redis, tenant: str | None = None) -> None:
        self.redis = redis
        self._put = redis.register_script(source("put_state"))
        self.namespace = None if tenant is None else check_tenant(tenant)
        self._views: dict[str, SessionState] = {}

    def own(self) -> str:
        """This view's tenant."""
        if self.namespace is None:
            raise ValueError("session state needs its tenant: use SessionState.tenant(namespace)")
        return self.namespace

    def _key(self, session_id: str, suffix: str) -> str:
        return companion_keys(self.own(), session_id)[COMPANION_SUFFIXES.index(suffix)]

    async def _write(
        self, session_id: str, suffix: str, *args: str, pinned: tuple[str, str] | None = None
    ) -> None:
        keys = [session_keys(self.own(), session_id).meta, self._key(session_id, suffix)]
        values = list(args)
        if pinned is not None:
            keys.append(self._key(session_id, pinned[0]))
            values.append(pinned[1])
        if not await self._put(keys=keys, args=values):
            raise SessionNotFound(session_id)

    async def put_settings(self, session_id: str, settings: SessionSettings) -> None:
        """Write the settings; their `agent` pin only if the session has none yet (it is kept
        apart, so a later write, a budget change, cannot move the session's version)."""
        pin = ("agent", settings.agent.model_dump_json()) if settings.agent else None
        body = settings.model_dump_json(exclude={"agent"})
        await self._write(session_id, "settings", "set", body, pinned=pin)

    async def settings(self, session_id: str) -> SessionSettings | None:
        # One round trip (a pipeline: MGET is not among the tenants' commands).
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._key(session_id, "settings"))
            pipe.get(self._key(session_id, "agent"))
            raw, pin = await pipe.execute()
        if not raw:
            return None
        settings = SessionSettings.model_validate_json(raw)
        if pin:
            settings.agent = AgentPin.model_validate_json(pin)
        return settings

    async def bind_sandbox(self, session_id: str, binding: SandboxBinding) -> None:
        """Record the binding, then announce it to workers waiting in `SandboxWaiter`."""
        await self._write(session_id, "sandbox", "set", binding.model_dump_json())
        await self.redis.publish(sandbox_bound(self.own()), session_id)

    async def sandbox(self, session_id: str) -> SandboxBinding | None:
        raw = await self.redis.get(self._key(session_id, "sandbox"))
        return SandboxBinding.model_validate_json(raw) if raw else None

    async def unbind_sandbox(self, session_id: str, pod: str | None = None) -> bool:
        """Forget the binding (only if it still names ``pod``, when given)."""
        key = self._key(session_id, "sandbox")
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
        reason: Literal["needed", "dead"] = "dead" if dead_pod else "needed"
        request = SandboxRequest(session_id=session_id, reason=reason, dead_pod=dead_pod)
        await request_sandbox(self.redis, self.own(), request)

    async def add_thread(self, session_id: str, thread_id: str, record: str) -> None:
        """Record thread ``thread_id`` of the session (``record``: its JSON description)."""
        await self._write(session_id, "threads", "hset", thread_id, record)

    async def threads(self, session_id: str) -> dict[str, str]:
        """The session's threads: thread id -> the record ``add_thread`` wrote."""
        raw = await self.redis.hgetall(self._key(session_id, "threads"))
        return {
            key.decode(): value.decode() for key, value in cast(dict[bytes, bytes], raw).items()
        }

    async def mark_started(self, session_id: str, call_id: str, pod: str) -> None:
        """Record that ``call_id`` is about to run in sandbox ``pod``."""
        await self._write(session_id, "calls", "hset", call_id, pod)

    async def started_in(self, session_id: str, call_id: str) -> str | None:
        """The sandbox a call was started in, or None if no worker ever started it."""
        # The client returns bytes (decode_responses=False, as for every client here).
        raw = cast("bytes | None", await self.redis.hget(self._key(session_id, "calls"), call_id))
        return raw.decode() if raw else None


def settings_for(
    session: Session, environment: str | None, agent: AgentPin | None = None
) -> SessionSettings:
    """What the harness needs of a Session resource; ``environment`` is the resolved one
    (the Session's own, else its Agent's), ``agent`` the version it is pinned to."""
    repositories = [r.git_repository for r in session.spec.resources if r.git_repository]
    files = [r.file for r in session.spec.resources if r.file]
    return SessionSettings(
        namespace=session.metadata.namespace or "default",
        name=session.metadata.name or "",
        environment=environment,
        budget=session.spec.budget,
        repositories=repositories,
        files=files,
        agent=agent,
        vault_ids=list(session.spec.vault_ids),
    )


async def open_session(
    log: EventLog,
    state: SessionState,
    session_id: str,
    session: Session,
    *,
    environment: str | None,
    agent: AgentPin | None = None,
) -> bool:
    """Start the session of a Session resource in Redis: create its log, record its settings
    and send its initial events (which queue it for the Agent's workers). Idempotent: the
    gateway (which creates sessions through the API) and the operator (which sees every
    Session) may both call it; the initial events are sent once. Returns whether this call
    created the log. ``agent``: the Agent version to pin (set once: the first call's stays)."""
    namespace = session.metadata.namespace or "default"
    log, state = log.tenant(namespace), state.tenant(namespace)
    agent_key = f"{namespace}/{session.spec.agent_ref.name}"
    created = await log.create_session(session_id, agent=agent_key)
    previous = await state.settings(session_id)
    # A second call keeps the first one's token: a worker may be using it already.
    token = previous.gateway_token if previous and previous.gateway_token else None
    settings = settings_for(session, environment, agent)
    settings.gateway_token = token or secrets.token_urlsafe(32)
    await state.put_settings(session_id, settings)
    if session.spec.initial_events:
        events: list[AnyEvent] = []
        for event in session.spec.initial_events:
            if event.type == "user.define_outcome":
                assert event.description is not None
                assert event.rubric is not None
                # A second call makes another id, but the send is stored once (its key).
                events.append(
                    UserDefineOutcomeEvent(
                        description=event.description,
                        rubric=TextRubric(content=event.rubric.content),
                        max_iterations=event.max_iterations,
                        outcome_id=new_id("outc_"),
                    )
                )
            else:
                blocks = event.content or []
                events.append(UserMessageEvent(content=[TextBlock(text=b.text) for b in blocks]))
        await log.send(session_id, events, key="initial-events")
    return created
