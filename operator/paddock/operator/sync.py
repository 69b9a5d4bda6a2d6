"""Background work of the operator that no single watch event drives:

- the status sync: one loop reads the snapshots of all sessions from Redis in batches and
  server-side applies the statuses that changed (not one task per session); it also frees
  sandboxes of sessions idle past their Environment's idle timeout and deletes sessions
  past their `ttl`;
- the sandbox requests of harness workers (a sandbox is needed, or one died).

Both run in the replica holding the leader lease (`leases.py`) only. Sessions are known
from the Session informer, which every replica keeps, so a new leader knows them all. The
requests are a consumer group: those a previous leader read and never handled are
claimed again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from paddock.eventlog import SandboxRequest, SandboxRequestReader, SessionSnapshot
from paddock.kube import ApiError
from paddock.models import (
    API_VERSION,
    ConditionType,
    Environment,
    EventReason,
    ObjectStub,
    SandboxReason,
    SchedulingReason,
    Session,
    parse_duration,
)
from paddock.operator import events, metrics
from paddock.operator import labels as L
from paddock.operator.leases import Leadership
from paddock.operator.runtime import Runtime
from paddock.operator.sandboxes import Sandboxes
from paddock.operator.sessions import provide_sandbox, thread_target
from paddock.operator.status import ConditionBody, condition, session_log_status

log = logging.getLogger(__name__)
SYNC_MANAGER = "paddock-sync"
ACTIVE_PHASES = frozenset({"Pending", "Running", "Rescheduling"})


@dataclass
class Tracked:
    """What the sync needs to know of a Session besides its log."""

    resource: dict[str, Any]
    """Only what a status write needs (`stub`): ten thousand whole Sessions would weigh."""
    agent: str
    """namespace/name"""
    environment: str | None
    """The Session's own `environmentRef` (else the Agent's counts)."""
    ttl_s: float | None
    deleting: bool = False
    accepted: bool = False
    """The acceptance wrote its status (`status.sessionId`): with it the first `phase`, so
    the sync writes nothing before."""
    synced: tuple[str | None, str, str] | None = None
    phase: str | None = None
    stop_reason: str | None = None
    sandbox_reclaimed: bool = False
    expired: bool = False
    scheduled: dict[str, Any] | None = None
    """The `Scheduled` condition last written."""


def _address(resource: dict[str, Any]) -> tuple[str, str, str, str]:
    """api version, kind, namespace and name: where a status write goes."""
    meta = resource["metadata"]
    return resource["apiVersion"], resource["kind"], meta["namespace"], meta["name"]


def stub(resource: dict[str, Any]) -> dict[str, Any]:
    """The identity of ``resource``: enough to write its status or post an Event on it."""
    meta = resource["metadata"]
    return {
        "apiVersion": resource["apiVersion"],
        "kind": resource["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
    }


def slim_session(session: dict[str, Any]) -> dict[str, Any]:
    """What the Session informer keeps of a Session: what the sync and the handlers read."""
    meta, spec = session["metadata"], session.get("spec") or {}
    status = session.get("status") or {}
    slim_meta = {
        k: meta[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "generation", "deletionTimestamp")
        if k in meta
    }
    session_id = (meta.get("labels") or {}).get(L.SESSION_ID)
    if session_id:
        slim_meta["labels"] = {L.SESSION_ID: session_id}
    if meta.get("finalizers"):
        slim_meta["finalizers"] = meta["finalizers"]
    return {
        "apiVersion": session.get("apiVersion", "paddock.dev/v1alpha1"),
        "kind": session.get("kind", "Session"),
        "metadata": slim_meta,
        "spec": {k: spec[k] for k in ("agentRef", "environmentRef", "ttl", "cancel") if k in spec},
        "status": {
            **{
                k: status[k]
                for k in ("sessionId", "phase", "stopReason", "lastEventId", "agentVersion")
                if k in status
            },
            "conditions": [
                c
                for c in status.get("conditions") or []
                if c.get("type") == ConditionType.SCHEDULED
            ],
        },
    }


def _tracked(session: dict[str, Any]) -> Tracked:
    """A Session the sync starts tracking (its ttl is read on every change)."""
    meta, spec = session["metadata"], session.get("spec") or {}
    return Tracked(
        resource=stub(session),
        agent=f"{meta['namespace']}/{(spec.get('agentRef') or {}).get('name', '')}",
        environment=(spec.get("environmentRef") or {}).get("name"),
        ttl_s=None,
    )


def _synced_key(status: Mapping[str, Any]) -> tuple[str | None, str, str]:
    """What decides whether a session's status needs writing again: its last event, phase
    and `Scheduled` message (the rest changes only with them)."""
    return (status.get("lastEventId"), status["phase"], status["conditions"][0]["message"])


@functools.lru_cache(maxsize=256)
def _seconds(duration: str) -> float:
    return parse_duration(duration)


class StatusSync:
    """Tracks every Session through the Session informer (`session_changed`), so any
    replica can run the sync: the one holding its lease does."""

    def __init__(self, rt: Runtime, sandboxes: Sandboxes, lease: Leadership) -> None:
        self.rt, self.sandboxes, self.lease = rt, sandboxes, lease
        self.tracked: dict[str, Tracked] = {}
        self._patches = asyncio.Semaphore(16)
        """Writes (and sandbox reclaims, expiries) at once: sessions created together come
        to rest together, and 1,000 reclaims at once took all 64 Redis connections, the
        lease's renewal waited behind them, and the replica lost its lease."""

    def session_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            session_id = (old or {}).get("metadata", {}).get("labels", {}).get(L.SESSION_ID)
            if session_id:
                self.tracked.pop(session_id, None)
            return
        meta, spec = new["metadata"], new.get("spec") or {}
        session_id = (meta.get("labels") or {}).get(L.SESSION_ID)
        if not session_id:
            return  # not accepted yet
        status = new.get("status") or {}
        tracked = self.tracked.get(session_id)
        # What the status says was synced, wherever (by the acceptance, another replica,
        # before a restart); once this replica's sync wrote it, its own record is newer than
        # any echo of its writes.
        adopt = tracked is None or tracked.synced is None or not self.lease.held()
        if tracked is None:
            tracked = self.tracked[session_id] = _tracked(new)
        tracked.ttl_s = _seconds(spec["ttl"]) if spec.get("ttl") else None
        tracked.deleting = bool(meta.get("deletionTimestamp"))
        tracked.accepted = bool(status.get("sessionId"))
        if not status.get("phase"):
            # Server-side apply drops the fields a manager stops sending (an acceptance
            # written again without them): the next pass writes them again.
            tracked.synced = None
        elif adopt:
            tracked.phase, tracked.stop_reason = status["phase"], status.get("stopReason")
            scheduled = next(
                (
                    c
                    for c in status.get("conditions") or []
                    if c.get("type") == ConditionType.SCHEDULED
                ),
                None,
            )
            tracked.scheduled = scheduled
            tracked.synced = (
                status.get("lastEventId"),
                status["phase"],
                (scheduled or {}).get("message", ""),
            )

    def _model_and_idle_timeout(self, tracked: Tracked) -> tuple[str | None, float | None]:
        namespace, _, agent_name = tracked.agent.partition("/")
        agents = self.rt.informers.get("Agent")
        agent = agents.get(namespace, agent_name) if agents else None
        spec = (agent or {}).get("spec") or {}
        environment_name = tracked.environment or (spec.get("environmentRef") or {}).get("name")
        environments = self.rt.informers.get("Environment")
        environment = (
            environments.get(namespace, environment_name)
            if environments and environment_name
            else None
        )
        idle = None
        if environment is not None:
            idle = _seconds((environment.get("spec") or {}).get("idleTimeout", "15m"))
        return spec.get("model"), idle

    def _agent_not_ready(self, tracked: Tracked) -> str:
        """Why the session's Agent has no worker ready ("" when it has, or is unknown)."""
        namespace, _, name = tracked.agent.partition("/")
        agents = self.rt.informers.get("Agent")
        agent = agents.get(namespace, name) if agents else None
        for found in ((agent or {}).get("status") or {}).get("conditions") or []:
            if found.get("type") == ConditionType.READY and found.get("status") == "False":
                return f"{found.get('reason')}: {found.get('message')}"
        return ""

    def _scheduled(self, tracked: Tracked, phase: str) -> ConditionBody:
        """Whether a harness worker took the session's input, and if not, why not."""
        if phase == "Pending":
            why = self._agent_not_ready(tracked)
            ok, reason = False, SchedulingReason.WAITING_FOR_WORKER
            message = "waiting for a harness worker" + (f": {why}" if why else "")
        else:
            ok, reason, message = True, SchedulingReason.WORKER_ASSIGNED, "a harness worker took it"
        return condition(
            ConditionType.SCHEDULED,
            ok,
            reason,
            message,
            generation=None,
            previous=[tracked.scheduled] if tracked.scheduled else None,
            now=datetime.now(UTC),
        )

    def _log_status(self, tracked: Tracked, snapshot: SessionSnapshot) -> dict[str, Any]:
        """The status the sync writes: the log's part and the `Scheduled` condition."""
        model, _ = self._model_and_idle_timeout(tracked)
        status: dict[str, Any] = dict(session_log_status(snapshot, model))
        status["conditions"] = [self._scheduled(tracked, status["phase"])]
        return status

    async def first_status(self, session: Session, session_id: str) -> dict[str, Any] | None:
        """What the sync would write for a Session being accepted (None without a log): the
        acceptance writes it too, so a new Session's first `phase` costs no write of its own."""
        namespace = session.metadata.namespace or ""
        snapshots = await self.rt.log.snapshots([session_id], tenants={session_id: namespace})
        if session_id not in snapshots:
            return None
        tracked = self.tracked.get(session_id) or _tracked(session.to_k8s())
        return self._log_status(tracked, snapshots[session_id])

    def active_sessions(self, agent: str) -> int:
        """Sessions of ``agent`` that are working or waiting on the user to act."""
        return sum(
            1
            for t in self.tracked.values()
            if t.agent == agent and (t.phase in ACTIVE_PHASES or t.stop_reason == "requires_action")
        )

    async def run(self) -> None:
        while True:
            try:
                if self.lease.held():
                    await self.sync_once()
            except Exception:  # a dead sync task would leave every status behind
                log.exception("status sync pass failed; retrying")
            await asyncio.sleep(self.rt.settings.sync_interval_s)

    async def sync_once(self) -> None:
        ids = list(self.tracked)
        # A batch at a time, read and written: 10,000 snapshots (and their statuses) held at
        # once, every second, would set the process's peak memory, which it keeps.
        for start in range(0, len(ids), 1000):
            batch = ids[start : start + 1000]
            tenants = {
                i: self.tracked[i].agent.partition("/")[0] for i in batch if i in self.tracked
            }
            await self._sync_batch(await self.rt.log.snapshots(list(tenants), tenants=tenants))
        counts: dict[str, int] = {}
        for tracked in self.tracked.values():
            counts[tracked.phase or "Pending"] = counts.get(tracked.phase or "Pending", 0) + 1
        for phase in ("Pending", "Running", "Idle", "Rescheduling", "Terminated"):
            metrics.SESSIONS.labels(phase).set(counts.get(phase, 0))

    async def _sync_batch(self, snapshots: Mapping[str, Any]) -> None:
        now = time.time()
        work = []
        for session_id, snapshot in snapshots.items():
            tracked = self.tracked.get(session_id)
            if tracked is None or tracked.deleting:
                continue
            _, idle_timeout_s = self._model_and_idle_timeout(tracked)
            status = self._log_status(tracked, snapshot)
            key = _synced_key(status)
            if tracked.accepted and key != tracked.synced:
                work.append(self._patch(tracked, status, key))
            resting = status["phase"] in ("Idle", "Terminated")
            quiet_for = now - snapshot.updated_at.timestamp()
            if (
                resting
                and tracked.ttl_s is not None
                and quiet_for > tracked.ttl_s
                and not tracked.expired
            ):
                tracked.expired = True
                work.append(self._expire(tracked))
            elif resting and idle_timeout_s is not None and quiet_for > idle_timeout_s:
                if not tracked.sandbox_reclaimed:
                    tracked.sandbox_reclaimed = True
                    work.append(self._reclaim_sandbox(session_id, tracked))
            elif not resting:
                tracked.sandbox_reclaimed = False
        await asyncio.gather(*work)

    async def _patch(
        self, tracked: Tracked, status: Mapping[str, Any], key: tuple[str | None, str, str]
    ) -> None:
        async with self._patches:
            try:
                await self.rt.kube.apply_status(*_address(tracked.resource), status, SYNC_MANAGER)
            except ApiError as exc:
                log.warning(
                    "status of %s not synced: %s", tracked.resource["metadata"]["name"], exc
                )
                return
        # An Event for each change of phase; not for the first phase a session gets (it
        # was just created: 10,000 new sessions would be 10,000 Events saying so).
        changed = tracked.phase is not None and (status["phase"], status.get("stopReason")) != (
            tracked.phase,
            tracked.stop_reason,
        )
        tracked.synced, tracked.phase, tracked.stop_reason = (
            key,
            status["phase"],
            status.get("stopReason"),
        )
        tracked.scheduled = status["conditions"][0]
        if changed:
            stop = (
                f" ({status['stopReason']})"
                if status["phase"] == "Idle" and status.get("stopReason")
                else ""
            )
            await events.post(
                self.rt.kube,
                ObjectStub.model_validate(tracked.resource),
                status["phase"],
                f"session is {status['phase'].lower()}{stop}",
            )

    async def _expire(self, tracked: Tracked) -> None:
        meta = tracked.resource["metadata"]
        async with self._patches:
            await events.post(
                self.rt.kube,
                ObjectStub.model_validate(tracked.resource),
                EventReason.EXPIRED,
                "the session's ttl ran out: deleting it",
            )
            await self.rt.kube.delete(
                "paddock.dev/v1alpha1", "Session", meta["namespace"], meta["name"]
            )

    async def _reclaim_sandbox(self, session_id: str, tracked: Tracked) -> None:
        namespace = tracked.resource["metadata"]["namespace"]
        async with self._patches:
            if await self.rt.state.tenant(namespace).sandbox(
                session_id
            ) is None and not self.sandboxes.tree_pods(namespace, session_id):
                return  # neither the session nor a thread of it holds a sandbox
            await self.sandboxes.release(namespace, session_id)
            await self.rt.kube.apply_status(
                *_address(tracked.resource),
                {
                    "conditions": [
                        condition(
                            ConditionType.SANDBOX_BOUND,
                            False,
                            SandboxReason.IDLE_RECLAIMED,
                            "idle past the Environment's idleTimeout: the next tool call gets a fresh sandbox",
                            generation=None,
                            previous=None,
                            now=datetime.now(UTC),
                        )
                    ]
                },
                "paddock-sandbox",
            )


class SandboxRequests:
    """Serves the harness workers' sandbox requests (step 1 of the sandbox protocol,
    `paddock.eventlog.sandboxes`) while this replica leads."""

    def __init__(self, rt: Runtime, sandboxes: Sandboxes, lease: Leadership) -> None:
        self.rt, self.sandboxes, self.lease = rt, sandboxes, lease
        self.reader = SandboxRequestReader(rt.redis, rt.settings.identity)

    async def run(self) -> None:
        while True:
            try:
                while self.lease.held():
                    for tenant, entry_id, request in await self.reader.read(self.tenants()):
                        await self.handle(tenant, request, entry_id)
                        await self.reader.done(tenant, entry_id)
            except (RedisError, ApiError, OSError):
                log.exception("sandbox requests: retrying")
            await asyncio.sleep(0.5)  # after a failure, or while another replica leads

    def tenants(self) -> set[str]:
        """The namespaces whose harness workers may ask: those with an Agent."""
        agents = self.rt.informers.get("Agent")
        return {a["metadata"]["namespace"] for a in agents.values()} if agents else set()

    async def handle(self, tenant: str, request: SandboxRequest, entry_id: bytes) -> None:
        session_id = request.session_id
        settings = await self.rt.state.tenant(tenant).settings(session_id)
        # The tenant's harness can write its own session state: what it names is believed
        # only inside its own namespace.
        if settings is None or settings.environment is None or settings.namespace != tenant:
            return
        kube = self.rt.kube
        found = await kube.find(API_VERSION, "Session", settings.namespace, settings.name)
        session = Session.model_validate(found) if found is not None else None
        if session is None or session.metadata.deletion_timestamp or session.spec.cancel:
            return
        own_pods = {p["metadata"]["name"] for p in self.sandboxes.session_pods(tenant, session_id)}
        dead = request.dead_pod if request.reason == "dead" else None
        if dead is not None and dead in own_pods:
            # Unless its pod's death was seen and it was replaced already, the replacement
            # is measured from the report (a stream id starts with Redis' time in ms).
            async with self.sandboxes.one_change(session_id):
                if await self.rt.state.tenant(tenant).sandbox(session_id) is None:
                    self.sandboxes.lost(session_id, int(entry_id.split(b"-")[0]) / 1000)
            await kube.delete("v1", "Pod", tenant, dead)
            await events.post(
                kube,
                session,
                EventReason.SANDBOX_REPLACED,
                f"sandbox {dead} failed; binding another",
            )
        thread = None
        if settings.parent_session_id is not None:  # a thread's own sandbox (docs/harness.md)
            thread = await thread_target(self.rt, self.sandboxes, session, session_id, settings)
            if thread is None:
                return
        environment = await kube.find(
            API_VERSION, "Environment", settings.namespace, settings.environment
        )
        if environment is not None:
            environment_model = Environment.model_validate(environment)
            # The harness may see a pod fail before the informer does: the stale entry must
            # not count as the session's sandbox, or the dead pod is bound again and the
            # replacement waits for the informer (docs/operator.md).
            await provide_sandbox(
                self.rt,
                self.sandboxes,
                session,
                session_id,
                environment_model,
                dead=dead,
                thread=thread,
            )
