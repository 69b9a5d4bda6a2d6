"""A Session's life: accepted (id, references, log, sandbox), cancelled, deleted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, NoReturn

from paddock.eventlog import (
    SessionNotFound,
    SessionStatusTerminatedEvent,
    SessionTerminated,
    UserInterruptEvent,
)
from paddock.eventlog.sessionstate import open_session
from paddock.models import Session
from paddock.operator import events
from paddock.operator import labels as L
from paddock.operator.identity import ensure_id
from paddock.operator.runtime import Runtime
from paddock.operator.sandboxes import Sandboxes, start_failure
from paddock.operator.status import condition, pod_dead, pod_ready

log = logging.getLogger(__name__)
SESSION_MANAGER = "paddock-session"
SANDBOX_MANAGER = "paddock-sandbox"


class Unresolved(Exception):
    """A reference does not resolve (yet): the status says so and the handler retries."""


def _ready(session: dict[str, Any], ok: bool, reason: str, message: str) -> dict[str, Any]:
    return condition(
        "Ready",
        ok,
        reason,
        message,
        generation=session["metadata"].get("generation"),
        previous=(session.get("status") or {}).get("conditions"),
        now=datetime.now(UTC),
    )


def _sandbox_condition(
    session: dict[str, Any], ok: bool, reason: str, message: str
) -> dict[str, Any]:
    return condition(
        "SandboxBound",
        ok,
        reason,
        message,
        generation=None,
        previous=(session.get("status") or {}).get("conditions"),
        now=datetime.now(UTC),
    )


async def _unresolved(
    rt: Runtime, session: dict[str, Any], sid: str, reason: str, message: str
) -> NoReturn:
    status = {
        "sessionId": sid,
        "phase": "Pending",
        "conditions": [_ready(session, False, reason, message)],
    }
    await rt.kube.apply_status(session, status, SESSION_MANAGER)
    raise Unresolved(message)


async def accept(
    rt: Runtime, sandboxes: Sandboxes, session: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Resolve references, open the session in the log, bind a sandbox. Returns (session id,
    agent, Environment or None). Raises `Unresolved` (after saying why in the status)."""
    kube, meta = rt.kube, session["metadata"]
    namespace = meta["namespace"]
    sid = await ensure_id(kube, session)
    agent_name = session["spec"]["agentRef"]["name"]
    agent = await rt.find("paddock.dev/v1alpha1", "Agent", namespace, agent_name)
    if agent is None:
        await _unresolved(
            rt,
            session,
            sid,
            "AgentNotFound",
            f'Agent "{agent_name}" not found in namespace "{namespace}"',
        )
    env_name = (
        (session["spec"].get("environmentRef") or agent["spec"].get("environmentRef")) or {}
    ).get("name")
    environment = None
    if env_name:
        environment = await rt.find("paddock.dev/v1alpha1", "Environment", namespace, env_name)
        if environment is None:
            message = f'Environment "{env_name}" not found in namespace "{namespace}"'
            await _unresolved(rt, session, sid, "EnvironmentNotFound", message)
    await open_session(rt.log, rt.state, sid, Session.model_validate(session), environment=env_name)
    ready = {
        "sessionId": sid,
        "observedGeneration": meta.get("generation"),
        "conditions": [_ready(session, True, "Accepted", f'run by Agent "{agent_name}"')],
    }
    if environment is None:
        # No binder will ever write this session's SandboxBound: one write says both.
        ready["conditions"].append(
            _sandbox_condition(
                session,
                False,
                "NoEnvironment",
                "neither the Session nor its Agent names an Environment",
            )
        )
        await _apply_status(rt, session, ready, SESSION_MANAGER)
    else:
        # The sandbox as soon as can be: a worker may already be waiting for it.
        await asyncio.gather(
            bind(rt, sandboxes, session, sid, environment),
            _apply_status(rt, session, ready, SESSION_MANAGER),
        )
    return sid, agent, environment


async def bind(
    rt: Runtime,
    sandboxes: Sandboxes,
    session: dict[str, Any],
    sid: str,
    environment: dict[str, Any],
) -> None:
    async with sandboxes.binding(sid):
        how = await sandboxes.bind(session, sid, environment)
        await report_binding(rt, session, sid, waiting=how == "waiting")


async def report_binding(
    rt: Runtime, session: dict[str, Any], sid: str, *, waiting: bool = False
) -> None:
    """The sandbox part of the status, from the binding in Redis; ``waiting``: the
    Environment's sandboxes fail to start and this one waits for the backoff."""
    binding = await rt.state.sandbox(sid)
    if binding is None:
        status: dict[str, Any] = {
            "conditions": [
                _sandbox_condition(
                    session,
                    False,
                    "Backoff" if waiting else "Starting",
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
                    session, True, "Bound", f"sandbox {binding.pod} ({binding.claim})"
                )
            ],
        }
    await _apply_status(rt, session, status, SANDBOX_MANAGER)


def says_already(session: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether the Session's status already says all that ``status`` would (a session
    resumed when the operator restarts): then the write is skipped."""
    current = session.get("status") or {}
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
    rt: Runtime, session: dict[str, Any], status: dict[str, Any], manager: str
) -> None:
    if not says_already(session, status):
        await rt.kube.apply_status(session, status, manager)


async def reconcile_sandbox(
    rt: Runtime, sandboxes: Sandboxes, namespace: str, session_id: str
) -> None:
    """A bound sandbox became ready (a cold start completes: record it) or died (bind
    another). Called by the `SandboxController` for every change of a session's pods."""
    async with sandboxes.binding(session_id):  # after a bind or release in progress
        binding = await rt.state.sandbox(session_id)
        pods = sandboxes.session_pods(namespace, session_id)
        for pod in pods:
            sandboxes.note_start(pod)
        live = [p for p in pods if not pod_dead(p)]
        if binding is None:
            ready = [p for p in live if pod_ready(p)]
            if ready:
                await sandboxes.record(session_id, ready[0])
                await report_binding(rt, _owner(ready[0]), session_id)
                return
            failed = [p for p in pods if start_failure(p) is not None]
            if not live and (failed or session_id in sandboxes.wanting):
                # A cold start failed, or waited for the Environment's backoff: again (the
                # backoff decides when). The failed pod goes; its error is in the status.
                for pod in failed:
                    await rt.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
                await _bind_again(rt, sandboxes, namespace, session_id, None)
            return
        if any(p["metadata"]["name"] == binding.pod for p in live):
            return
        # The bound pod died or is gone: unless the session is over, bind another.
        if not await rt.state.unbind_sandbox(session_id, binding.pod):
            return
        await _bind_again(rt, sandboxes, namespace, session_id, binding.pod)


async def _bind_again(
    rt: Runtime, sandboxes: Sandboxes, namespace: str, session_id: str, gone: str | None
) -> None:
    """Bind the session another sandbox, unless it is over; ``gone`` is the bound pod that
    died, if one did."""
    settings = await rt.state.settings(session_id)
    if settings is None:
        return
    session = await rt.kube.find("paddock.dev/v1alpha1", "Session", namespace, settings.name)
    if (
        session is None
        or session["metadata"].get("deletionTimestamp")
        or session["spec"].get("cancel")
    ):
        sandboxes.wanting.discard(session_id)
        return
    if gone is not None:
        await events.post(
            rt.kube, session, "SandboxReplaced", f"sandbox {gone} is gone; binding another"
        )
    environment = await rt.find(
        "paddock.dev/v1alpha1", "Environment", namespace, settings.environment or ""
    )
    if environment is not None:
        how = await sandboxes.bind(session, session_id, environment)
        await report_binding(rt, session, session_id, waiting=how == "waiting")


def _owner(pod: dict[str, Any]) -> dict[str, Any]:
    """The Session a bound pod belongs to, as much of it as a status write needs."""
    owner = pod["metadata"]["ownerReferences"][0]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "metadata": {"name": owner["name"], "namespace": pod["metadata"]["namespace"]},
    }


async def cancel(rt: Runtime, sandboxes: Sandboxes, session: dict[str, Any], sid: str) -> None:
    """Interrupt the running turn and terminate the session for good; free its sandbox."""
    with contextlib.suppress(SessionTerminated, SessionNotFound):  # already over
        await rt.log.send(sid, [UserInterruptEvent(), SessionStatusTerminatedEvent()])
    await sandboxes.release(session["metadata"]["namespace"], sid)


async def delete(rt: Runtime, sandboxes: Sandboxes, session: dict[str, Any]) -> None:
    """The finalizer's work: the session's sandboxes and every Redis key go."""
    sid = (session["metadata"].get("labels") or {}).get(L.SESSION_ID)
    if sid:
        await sandboxes.release(session["metadata"]["namespace"], sid)
        await rt.log.delete_session(sid)
