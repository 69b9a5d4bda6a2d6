"""A Session's life: accepted (id, references, log, sandbox), cancelled, deleted.

One writer starts a session's log (`open_session`): the gateway, for a session created
through the API, before the Session resource exists (so the resource never exists without
its log); the operator, for a Session applied with kubectl or by GitOps, when it accepts
it and finds no log. The writers never overlap in time, and the Environment is resolved
once, by the writer, and read from the session's settings ever after.

`SessionReconciler.reconcile` is the Session's handler on the `Controller`'s work queue;
the rest are the steps it and the sandbox handlers take."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

from paddock.eventlog import (
    AgentPin,
    SessionNotFound,
    SessionSettings,
    SessionStatusTerminatedEvent,
    SessionTerminated,
    UserInterruptEvent,
    new_id,
    open_session,
    thread_id,
)
from paddock.kube import JSON_PATCH, Conflict, NotFound, generation, pin_version
from paddock.models import (
    API_VERSION,
    AgentSpec,
    Condition,
    ConditionType,
    Environment,
    EventReason,
    ObjectMeta,
    ObjectStub,
    SandboxReason,
    Session,
    SessionReason,
    environment_name,
)
from paddock.operator import events
from paddock.operator import labels as L
from paddock.operator.runtime import Runtime
from paddock.operator.sandboxes import Sandboxes, SandboxFor, start_failure
from paddock.operator.status import ConditionBody, condition, pod_dead, pod_ready

log = logging.getLogger(__name__)
SESSION_MANAGER = "paddock-session"
SANDBOX_MANAGER = "paddock-sandbox"
FINALIZER = "paddock.dev/cleanup"
"""Held by every accepted Session until its sandboxes and Redis keys are gone."""


SessionLike = Session | ObjectStub
"""A Session, or only its identity (a bound pod's owner): enough to write its status."""


class Unresolved(Exception):
    """A reference does not resolve (yet): the status says so and the handler retries."""


async def _write_status(
    rt: Runtime, session: SessionLike, status: dict[str, Any], manager: str
) -> None:
    meta = session.metadata
    await rt.kube.apply_status(
        API_VERSION, "Session", meta.namespace or "", meta.name or "", status, manager
    )


def _conditions(session: SessionLike) -> list[Condition] | None:
    status = session.status if isinstance(session, Session) else None
    return status.conditions if status is not None else None


def _ready(session: Session, ok: bool, reason: SessionReason, message: str) -> ConditionBody:
    return condition(
        ConditionType.READY,
        ok,
        reason,
        message,
        generation=session.metadata.generation,
        previous=_conditions(session),
        now=datetime.now(UTC),
    )


def _sandbox_condition(
    session: SessionLike, ok: bool, reason: SandboxReason, message: str
) -> ConditionBody:
    return condition(
        ConditionType.SANDBOX_BOUND,
        ok,
        reason,
        message,
        generation=None,
        previous=_conditions(session),
        now=datetime.now(UTC),
    )


async def _unresolved(
    rt: Runtime, session: Session, sid: str, reason: SessionReason, message: str
) -> NoReturn:
    status = {
        "sessionId": sid,
        "phase": "Pending",
        "conditions": [_ready(session, False, reason, message)],
    }
    await _write_status(rt, session, status, SESSION_MANAGER)
    raise Unresolved(message)


FirstStatus = Callable[[Session, str], Awaitable[dict[str, Any] | None]]
"""The status the log sync would write for a Session being accepted (`StatusSync.first_status`)."""


async def accept(
    rt: Runtime, sandboxes: Sandboxes, session: Session, first_status: FirstStatus
) -> str:
    """Resolve references, open the session in the log (unless the gateway did), bind a
    sandbox; returns the session id. ``session`` is the whole Session, with its id label
    (`_take`). Raises `Unresolved` (after saying why in the status)."""
    namespace = session.metadata.namespace or ""
    sid = (session.metadata.labels or {})[L.SESSION_ID]
    agent_name = session.spec.agent_ref.name
    agent = await rt.find(API_VERSION, "Agent", namespace, agent_name)
    if agent is None:
        await _unresolved(
            rt,
            session,
            sid,
            SessionReason.AGENT_NOT_FOUND,
            f'Agent "{agent_name}" not found in namespace "{namespace}"',
        )
    settings = await rt.state.tenant(namespace).settings(sid)
    pin: AgentPin | None
    if settings is None:  # not started: a Session applied with kubectl or by GitOps
        pin = await _pin(rt, session, sid, agent)
        env_name = environment_name(session.spec, pin.spec)
    else:  # started by the gateway before the resource existed (or here, before a restart)
        pin, env_name = settings.agent, settings.environment
    environment = None
    if env_name:
        found = await rt.find(API_VERSION, "Environment", namespace, env_name)
        if found is None:
            message = f'Environment "{env_name}" not found in namespace "{namespace}"'
            await _unresolved(rt, session, sid, SessionReason.ENVIRONMENT_NOT_FOUND, message)
        environment = Environment.model_validate(found)
    if settings is None:
        await open_session(rt.log, rt.state, sid, session, environment=env_name, agent=pin)
    # The first acceptance says the log sync's part too (phase, usage, `Scheduled`): the sync
    # then has nothing to write until the log moves on. Later ones (a new leader resuming the
    # Session) leave those fields to the sync.
    log_status = None if _was_accepted(session) else await first_status(session, sid)
    ready: dict[str, Any] = {
        **(log_status or {}),
        "sessionId": sid,
        **({"agentVersion": pin.version} if pin is not None else {}),
        "observedGeneration": session.metadata.generation,
        "conditions": [
            _ready(session, True, SessionReason.ACCEPTED, f'run by Agent "{agent_name}"'),
            *(log_status or {}).get("conditions", []),
        ],
    }
    if environment is None:
        # No binder will ever write this session's SandboxBound: one write says both.
        ready["conditions"].append(
            _sandbox_condition(
                session,
                False,
                SandboxReason.NO_ENVIRONMENT,
                "neither the Session nor its Agent names an Environment",
            )
        )
        await _apply_status(rt, session, ready, SESSION_MANAGER)
    else:
        # The sandbox first, as soon as can be (a worker may already be waiting for its
        # binding, in Redis); then one status write says both the acceptance and the binding.
        await provide_sandbox(rt, sandboxes, session, sid, environment, accepted=ready)
    return sid


def _was_accepted(session: Session) -> bool:
    return any(
        c.type == ConditionType.READY and c.reason == SessionReason.ACCEPTED
        for c in _conditions(session) or []
    )


async def _pin(rt: Runtime, session: Session, sid: str, agent: dict[str, Any]) -> AgentPin:
    """The Agent version a Session applied with kubectl runs: the one it names, else the
    Agent's current one (recorded, so that it outlives later changes of the Agent)."""
    name, current = session.spec.agent_ref.name, generation(agent)
    wanted = session.spec.agent_ref.version or current
    found = await pin_version(rt.kube, agent, wanted)
    if found is None:
        message = (
            f'Agent "{name}" has no version {wanted}: it is at version {current}, and versions '
            "beyond its revisionHistoryLimit that no live Session runs are pruned"
        )
        await _unresolved(rt, session, sid, SessionReason.AGENT_VERSION_NOT_FOUND, message)
    return AgentPin(version=wanted, spec=AgentSpec.model_validate(found.spec))


async def provide_sandbox(
    rt: Runtime,
    sandboxes: Sandboxes,
    session: Session,
    sid: str,
    environment: Environment,
    *,
    accepted: dict[str, Any] | None = None,
    dead: str | None = None,
    thread: SandboxFor | None = None,
) -> None:
    """Bind a sandbox and say so in the status (with ``accepted``, the acceptance's status,
    in the same write). ``thread``: the sandbox is for a thread of the Session's coordinator;
    the Session's status is about its own sandbox, so it says nothing of it."""
    async with sandboxes.one_change(sid):
        how = await sandboxes.provide(session, sid, environment, dead=dead, thread=thread)
        if thread is None:
            await report_binding(rt, session, sid, waiting=how == "waiting", accepted=accepted)


async def thread_target(
    rt: Runtime, sandboxes: Sandboxes, session: Session, session_id: str, settings: SessionSettings
) -> SandboxFor | None:
    """For a thread's session (its settings name a parent), whom its sandbox serves; None
    when it gets none. Only a thread of this Session's session that its coordinator recorded
    (the tenant's harness writes the settings; the record names the Agent that runs the
    thread, whose harness must reach the sandbox), and only while the session's threads hold
    fewer than `thread_sandboxes` sandboxes (a warning Event on the Session says when not)."""
    parent = settings.parent_session_id
    namespace = session.metadata.namespace or ""
    if parent is None or (session.metadata.labels or {}).get(L.SESSION_ID) != parent:
        return None
    raw = (await rt.state.tenant(namespace).threads(parent)).get(thread_id(session_id))
    record = json.loads(raw) if raw else {}
    agent = record.get("agent_name")
    if not isinstance(agent, str) or not agent or record.get("archived_at"):
        return None  # not a thread of this session, or archived (read-only)
    holding = {
        p["metadata"]["labels"][L.SESSION_ID]
        for p in sandboxes.tree_pods(namespace, parent)
        if not pod_dead(p)
    }
    limit = rt.settings.thread_sandboxes
    if session_id not in holding and len(holding) >= limit:
        await events.post(
            rt.kube,
            session,
            EventReason.THREAD_SANDBOX_LIMIT,
            f"thread {thread_id(session_id)} gets no sandbox: the session's threads hold "
            f"{len(holding)}, the most allowed ({limit})",
            warning=True,
        )
        return None
    return SandboxFor(session_id, agent, parent)


async def report_binding(
    rt: Runtime,
    session: SessionLike,
    sid: str,
    *,
    waiting: bool = False,
    accepted: dict[str, Any] | None = None,
) -> None:
    """The sandbox part of the status, from the binding in Redis; ``waiting``: the
    Environment's sandboxes fail to start and this one waits for the backoff. With
    ``accepted`` (the status `accept` writes), one write says both, as the accepting
    manager: every status write of a new Session costs the apiserver a write."""
    binding = await rt.state.tenant(session.metadata.namespace or "").sandbox(sid)
    status: dict[str, Any]
    if binding is None:
        status = {
            "conditions": [
                _sandbox_condition(
                    session,
                    False,
                    SandboxReason.BACKOFF if waiting else SandboxReason.STARTING,
                    "the Environment's sandbox pods fail to start (see its status): "
                    "retrying with backoff"
                    if waiting
                    else "no warm sandbox was free: starting one for this session",
                )
            ]
        }
    else:
        status = {
            "sandbox": {
                "podName": binding.pod,
                "claim": binding.claim,
                "boundAt": datetime.fromtimestamp(binding.bound_at, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            },
            "conditions": [
                _sandbox_condition(
                    session, True, SandboxReason.BOUND, f"sandbox {binding.pod} ({binding.claim})"
                )
            ],
        }
    if accepted is None:
        await _apply_status(rt, session, status, SANDBOX_MANAGER)
        return
    both = {
        **accepted,
        **status,
        "conditions": [*accepted["conditions"], *status["conditions"]],
    }
    await _apply_status(rt, session, both, SESSION_MANAGER)


def says_already(session: SessionLike, status: dict[str, Any]) -> bool:
    """Whether the Session's status already says all that ``status`` would (a session
    resumed when the operator restarts): then the write is skipped."""
    known = session.status if isinstance(session, Session) else None
    current = known.to_k8s() if known is not None else {}
    for key, value in status.items():
        if key != "conditions":
            if current.get(key) != value:
                return False
            continue
        have = {c.get("type"): c for c in current.get("conditions") or []}
        for new in value:
            old = have.get(new["type"])
            if old is None or any(
                old.get(k) != new.get(k)
                for k in ("status", "reason", "message", "observedGeneration")
            ):
                return False
    return True


async def _apply_status(
    rt: Runtime, session: SessionLike, status: dict[str, Any], manager: str
) -> None:
    if not says_already(session, status):
        await _write_status(rt, session, status, manager)


async def reconcile_sandbox(
    rt: Runtime, sandboxes: Sandboxes, namespace: str, session_id: str
) -> None:
    """A bound sandbox became ready (a cold start completes: record it) or died (bind
    another). Called by the `Controller` for every change of a session's pods."""
    async with sandboxes.one_change(session_id):  # after a bind or release in progress
        state = rt.state.tenant(namespace)
        binding = await state.sandbox(session_id)
        pods = sandboxes.session_pods(namespace, session_id)
        for pod in pods:
            sandboxes.note_start(pod)
        live = [p for p in pods if not pod_dead(p)]
        if binding is None:
            ready = [p for p in live if pod_ready(p)]
            if ready:
                await sandboxes.record(session_id, ready[0])
                if L.PARENT_SESSION_ID not in (ready[0]["metadata"].get("labels") or {}):
                    await report_binding(rt, _owner(ready[0]), session_id)
                return
            failed = [p for p in pods if start_failure(p) is not None]
            if not live and (failed or session_id in sandboxes.wanting):
                # A cold start failed, or waited for the Environment's backoff: again (the
                # backoff decides when). The failed pod goes; its error is in the status.
                # Or a worker dropped the binding of a sandbox that died.
                if any(sandboxes.served(pod) for pod in failed):
                    sandboxes.lost(session_id, time.time())
                for pod in failed:
                    await rt.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
                await _provide_again(rt, sandboxes, namespace, session_id, None)
            return
        if any(p["metadata"]["name"] == binding.pod for p in live):
            return
        # The bound pod died or is gone: unless the session is over, bind another.
        if not await state.unbind_sandbox(session_id, binding.pod):
            return
        sandboxes.lost(session_id, time.time())
        await _provide_again(rt, sandboxes, namespace, session_id, binding.pod)


async def _provide_again(
    rt: Runtime, sandboxes: Sandboxes, namespace: str, session_id: str, gone: str | None
) -> None:
    """Bind the session another sandbox, unless it is over; ``gone`` is the bound pod that
    died, if one did."""
    settings = await rt.state.tenant(namespace).settings(session_id)
    if settings is None:
        return
    found = await rt.kube.find(API_VERSION, "Session", namespace, settings.name)
    session = Session.model_validate(found) if found is not None else None
    if session is None or session.metadata.deletion_timestamp or session.spec.cancel:
        sandboxes.wanting.discard(session_id)
        return
    if gone is not None:
        await events.post(
            rt.kube,
            session,
            EventReason.SANDBOX_REPLACED,
            f"sandbox {gone} is gone; binding another",
        )
    thread = None
    if settings.parent_session_id is not None:
        thread = await thread_target(rt, sandboxes, session, session_id, settings)
        if thread is None:
            sandboxes.wanting.discard(session_id)
            return
    environment = await rt.find(API_VERSION, "Environment", namespace, settings.environment or "")
    if environment is not None:
        how = await sandboxes.provide(
            session, session_id, Environment.model_validate(environment), thread=thread
        )
        if thread is None:
            await report_binding(rt, session, session_id, waiting=how == "waiting")


def _owner(pod: dict[str, Any]) -> ObjectStub:
    """The Session a bound pod belongs to, as much of it as a status write needs."""
    owner = pod["metadata"]["ownerReferences"][0]
    return ObjectStub(
        kind=owner["kind"],
        metadata=ObjectMeta(name=owner["name"], namespace=pod["metadata"]["namespace"]),
    )


async def cancel(rt: Runtime, sandboxes: Sandboxes, session: SessionLike, sid: str) -> None:
    """Interrupt the running turn and terminate the session for good, and so every thread
    its coordinator started; free its sandbox."""
    log = rt.log.tenant(session.metadata.namespace or "")
    for target in [sid, *await log.threads_of(sid)]:
        with contextlib.suppress(SessionTerminated, SessionNotFound):  # already over
            await log.send(target, [UserInterruptEvent(), SessionStatusTerminatedEvent()])
    await sandboxes.release(session.metadata.namespace or "", sid)


async def delete(rt: Runtime, sandboxes: Sandboxes, session: SessionLike) -> None:
    """The finalizer's work: the session's sandboxes and every Redis key go."""
    sid = (session.metadata.labels or {}).get(L.SESSION_ID)
    if sid:
        await sandboxes.release(session.metadata.namespace or "", sid)
        await rt.log.tenant(session.metadata.namespace or "").delete_session(sid)


def _precondition(meta: ObjectMeta) -> dict[str, Any]:
    """A JSON patch `test` that keeps another writer's finalizer from being lost (a
    conflict is retried by the work queue with a fresh copy)."""
    if meta.finalizers:
        return {"op": "test", "path": "/metadata/finalizers", "value": meta.finalizers}
    return {"op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version}


async def _patch_session(rt: Runtime, meta: ObjectMeta, patch: list[dict[str, Any]]) -> None:
    await rt.kube.patch(
        API_VERSION,
        "Session",
        meta.namespace or "",
        meta.name or "",
        patch,
        content_type=JSON_PATCH,
    )


async def _take(rt: Runtime, slim: Session) -> Session | None:
    """The whole Session, with its id label (the gateway sets it on the Sessions it
    creates) and the finalizer: one merge patch adds what is missing and answers the whole
    object, so no read of its own is needed; None if the Session is gone. The patch names
    the informer's `resourceVersion`: a Session changed since is read and patched again."""
    meta = slim.metadata
    for _ in range(2):
        labels, finalizers = meta.labels or {}, meta.finalizers or []
        missing: dict[str, Any] = {}
        if FINALIZER not in finalizers:
            missing["finalizers"] = [*finalizers, FINALIZER]
        if L.SESSION_ID not in labels:
            missing["labels"] = {L.SESSION_ID: new_id("sesn_")}
        found: dict[str, Any] | None
        if not missing:
            found = await rt.kube.find(
                API_VERSION, "Session", meta.namespace or "", meta.name or ""
            )
            return Session.model_validate(found) if found is not None else None
        try:
            found = await rt.kube.patch(
                API_VERSION,
                "Session",
                meta.namespace or "",
                meta.name or "",
                {"metadata": {"resourceVersion": meta.resource_version, **missing}},
            )
            return Session.model_validate(found)
        except NotFound:
            return None
        except Conflict:
            pass
        # Changed since the informer's copy (finalizers are replaced whole: another writer's
        # must not be lost): once more with a fresh copy.
        found = await rt.kube.find(API_VERSION, "Session", meta.namespace or "", meta.name or "")
        if found is None:
            return None
        meta = Session.model_validate(found).metadata
    raise Conflict(409, "the Session kept changing while it was being accepted")


class SessionReconciler:
    """Accepts, cancels and finalizes Sessions. What a Session needs is read from it (it
    is new to this replica, `spec.cancel` is set, it is being deleted); what this replica
    has done since it became the leader is remembered, so each step runs once per
    leadership, as a resumed kopf handler would, and writes nothing the status already
    says."""

    def __init__(self, rt: Runtime, sandboxes: Sandboxes, first_status: FirstStatus) -> None:
        self.rt, self.sandboxes, self.first_status = rt, sandboxes, first_status
        self._accepted: set[str] = set()  # uids
        self._cancelled: set[str] = set()
        self.unresolved: dict[str, set[str]] = {}
        """Namespace → Sessions waiting for an Agent or Environment to appear."""

    def wants(self, slim: dict[str, Any]) -> bool:
        """Whether the informer's copy of a Session has work for `reconcile`. Read raw: it is
        asked on every Session event (10,000 Sessions, a status write each), and only the
        Sessions it answers yes for are validated."""
        meta, uid = slim["metadata"], slim["metadata"].get("uid", "")
        if meta.get("deletionTimestamp"):
            return FINALIZER in (meta.get("finalizers") or [])
        cancel = bool((slim.get("spec") or {}).get("cancel"))
        return uid not in self._accepted or (cancel and uid not in self._cancelled)

    def forget_accepted(self) -> None:
        """A new leadership: every Session is resumed once."""
        self._accepted.clear()
        self._cancelled.clear()

    async def reconcile(self, slim: Session) -> None:
        """``slim`` is the informer's copy; the whole Session is read when it is accepted."""
        meta, rt = slim.metadata, self.rt
        namespace, name, uid = meta.namespace or "", meta.name or "", meta.uid or ""
        if meta.deletion_timestamp:
            if FINALIZER in (meta.finalizers or []):
                await delete(rt, self.sandboxes, slim)
                found = await rt.kube.find(API_VERSION, "Session", namespace, name)
                if found is not None:
                    current = Session.model_validate(found).metadata
                    rest = [f for f in current.finalizers or [] if f != FINALIZER]
                    remove = {"op": "add", "path": "/metadata/finalizers", "value": rest}
                    await _patch_session(rt, current, [_precondition(current), remove])
            self._accepted.discard(uid)
            self._cancelled.discard(uid)
            return
        session_id = (meta.labels or {}).get(L.SESSION_ID)
        if uid not in self._accepted:
            session = await _take(rt, slim)
            if session is None:
                return
            try:
                session_id = await accept(rt, self.sandboxes, session, self.first_status)
            except Unresolved as exc:
                self.unresolved.setdefault(namespace, set()).add(name)
                await events.post(rt.kube, session, EventReason.UNRESOLVED, str(exc), warning=True)
                raise
            self._accepted.add(uid)
            self.unresolved.get(namespace, set()).discard(name)
        if slim.spec.cancel and uid not in self._cancelled and session_id:
            await cancel(rt, self.sandboxes, slim, session_id)
            await events.post(
                rt.kube,
                slim,
                EventReason.CANCELLED,
                "spec.cancel is set: the session is terminated",
            )
            self._cancelled.add(uid)
