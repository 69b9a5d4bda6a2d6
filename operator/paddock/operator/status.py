"""Status of the three resources, derived by pure functions from what was observed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from paddock.eventlog import SessionSnapshot
from paddock.models import AgentReason, EnvironmentReason
from paddock.models.pricing import list_cost_cents


def condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    *,
    generation: int | None,
    previous: list[dict[str, Any]] | None,
    now: datetime,
) -> dict[str, Any]:
    """A condition; its `lastTransitionTime` moves only when its status changes."""
    status = "True" if ok else "False"
    since = now
    for old in previous or []:
        if (
            old.get("type") == kind
            and old.get("status") == status
            and old.get("lastTransitionTime")
        ):
            since = datetime.fromisoformat(old["lastTransitionTime"].replace("Z", "+00:00"))
    result: dict[str, Any] = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": _time(since),
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


START_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Waiting reasons of a container that cannot be started (as a kubelet reports them)."""


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def pod_failure(pod: dict[str, Any]) -> tuple[str, str] | None:
    """("crash", message) when a container of ``pod`` keeps exiting or exited in error,
    ("start", message) when one cannot be started, else None. The message names the
    container and carries the last line of its termination message (the log's tail)."""
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        ended = state.get("terminated") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            ended = (container.get("lastState") or {}).get("terminated") or {}
        if ended.get("exitCode"):
            line = _last_line(ended.get("message"))
            restarts = container.get("restartCount", 0)
            return "crash", (
                f"container {container['name']} of pod {name} exited with {ended['exitCode']}"
                + (f" ({restarts} restarts)" if restarts else "")
                + (f": {line}" if line else "")
            )
        if waiting.get("reason") in START_ERRORS:
            detail = waiting.get("message") or status.get("message") or ""
            return "start", (
                f"container {container['name']} of pod {name}: {waiting['reason']}"
                + (f": {_last_line(detail)}" if detail else "")
            )
    return None


def agent_ready(
    *,
    missing_secrets: list[str],
    missing_environment: str | None,
    deployment: dict[str, Any] | None,
    harness_pods: list[dict[str, Any]],
) -> tuple[bool, AgentReason, str]:
    """(ready, reason, message) of an Agent: references first, then its workers; with no
    worker ready, why the harness pods fail, if they do."""
    if missing_secrets:
        return (
            False,
            AgentReason.SECRET_NOT_FOUND,
            "Secret not found: " + ", ".join(missing_secrets),
        )
    if missing_environment:
        return (
            False,
            AgentReason.ENVIRONMENT_NOT_FOUND,
            f'Environment "{missing_environment}" not found',
        )
    if deployment is None:
        return False, AgentReason.HARNESS_NOT_CREATED, "the harness Deployment does not exist yet"
    desired = deployment.get("spec", {}).get("replicas", 1)
    ready = deployment.get("status", {}).get("readyReplicas", 0) or 0
    if desired == 0:
        return (
            True,
            AgentReason.SCALED_TO_ZERO,
            "harness scaled to 0 workers: sessions wait until it is scaled up",
        )
    if ready < 1:
        for pod in harness_pods:
            failure = pod_failure(pod)
            if failure is not None:
                kind, message = failure
                reason = (
                    AgentReason.HARNESS_CRASH_LOOPING
                    if kind == "crash"
                    else AgentReason.HARNESS_CANNOT_START
                )
                return False, reason, message
        return False, AgentReason.HARNESS_NOT_READY, f"0 of {desired} harness workers ready"
    return True, AgentReason.READY, f"{ready} of {desired} harness workers ready"


def agent_status(
    agent: dict[str, Any],
    *,
    missing_secrets: list[str],
    missing_environment: str | None,
    deployment: dict[str, Any] | None,
    harness_pods: list[dict[str, Any]],
    active_sessions: int,
    now: datetime,
) -> dict[str, Any]:
    generation = agent["metadata"].get("generation")
    ok, reason, message = agent_ready(
        missing_secrets=missing_secrets,
        missing_environment=missing_environment,
        deployment=deployment,
        harness_pods=harness_pods,
    )
    previous = (agent.get("status") or {}).get("conditions")
    deployment_status = (deployment or {}).get("status", {})
    return {
        "observedGeneration": generation,
        "conditions": [
            condition(
                "Ready", ok, reason, message, generation=generation, previous=previous, now=now
            )
        ],
        "replicas": deployment_status.get("replicas", 0) or 0,
        "readyReplicas": deployment_status.get("readyReplicas", 0) or 0,
        "activeSessions": active_sessions,
    }


def pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp") or not pod.get("status", {}).get("podIP"):
        return False
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_dead(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp")) or pod.get("status", {}).get("phase") in (
        "Failed",
        "Succeeded",
    )


def environment_status(
    environment: dict[str, Any],
    *,
    warm: list[dict[str, Any]],
    bound: int,
    template_hash: str,
    failures: tuple[int, str] | None = None,
    now: datetime,
) -> dict[str, Any]:
    """``failures``: (how many sandbox pods failed to start in a row, the last's error)."""
    generation = environment["metadata"].get("generation")
    desired = environment.get("spec", {}).get("warmPool", {}).get("size", 0)
    ready = sum(1 for pod in warm if pod_ready(pod))
    ok = ready >= desired
    reason = EnvironmentReason.POOL_READY if ok else EnvironmentReason.POOL_FILLING
    message = f"{ready} of {desired} warm sandboxes ready"
    if failures is not None and failures[0]:
        ok, reason = False, EnvironmentReason.SANDBOX_FAILING
        message = (
            f"{failures[0]} sandbox pods in a row failed to start (new ones are started with "
            f"exponential backoff): {failures[1]}"
        )
    previous = (environment.get("status") or {}).get("conditions")
    return {
        "observedGeneration": generation,
        "conditions": [
            condition(
                "Ready",
                ok,
                reason,
                message,
                generation=generation,
                previous=previous,
                now=now,
            )
        ],
        "warmPool": {"desired": desired, "ready": ready, "bound": bound},
        "templateHash": template_hash,
    }


def session_phase(snapshot: SessionSnapshot) -> str:
    """Pending (waiting for a worker), Running, Idle, Rescheduling or Terminated."""
    if snapshot.status == "terminated":
        return "Terminated"
    if snapshot.status == "running":
        return "Running"
    if snapshot.status == "rescheduling":
        return "Rescheduling"
    return "Pending" if snapshot.pending_input and snapshot.lease_holder is None else "Idle"


def session_log_status(snapshot: SessionSnapshot, model: str | None) -> dict[str, Any]:
    """The part of a Session's status that the event log decides."""
    usage = snapshot.usage
    summary: dict[str, Any] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "cacheReadInputTokens": usage.cache_read_input_tokens,
        "cacheCreationInputTokens": usage.cache_creation_input_tokens,
        "activeSeconds": round(usage.active_seconds, 3),
    }
    cents = list_cost_cents(model, usage.model_dump()) if model else None
    if cents is not None:
        summary["listCost"] = {"amount": str(cents), "currency": "USD"}
    status: dict[str, Any] = {
        "phase": session_phase(snapshot),
        "usage": summary,
        "eventCount": snapshot.event_count,
        "lastActiveTime": _time(snapshot.updated_at),
    }
    if snapshot.stop_reason is not None:
        status["stopReason"] = snapshot.stop_reason.type
    if snapshot.last_event_id:
        status["lastEventId"] = snapshot.last_event_id
    return status
