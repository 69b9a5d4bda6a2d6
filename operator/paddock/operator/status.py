"""Status of the three resources, derived by pure functions from what was observed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from paddock.eventlog import SessionSnapshot
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


def agent_ready(
    *,
    missing_secrets: list[str],
    missing_environment: str | None,
    deployment: dict[str, Any] | None,
    generation: int | None,
) -> tuple[bool, str, str]:
    """(ready, reason, message) of an Agent: references first, then its workers."""
    if missing_secrets:
        return False, "SecretNotFound", "Secret not found: " + ", ".join(missing_secrets)
    if missing_environment:
        return False, "EnvironmentNotFound", f'Environment "{missing_environment}" not found'
    if deployment is None:
        return False, "HarnessNotCreated", "the harness Deployment does not exist yet"
    desired = deployment.get("spec", {}).get("replicas", 1)
    ready = deployment.get("status", {}).get("readyReplicas", 0) or 0
    if desired == 0:
        return (
            True,
            "ScaledToZero",
            "harness scaled to 0 workers: sessions wait until it is scaled up",
        )
    if ready < 1:
        return False, "HarnessNotReady", f"0 of {desired} harness workers ready"
    return True, "Ready", f"{ready} of {desired} harness workers ready"


def agent_status(
    agent: dict[str, Any],
    *,
    missing_secrets: list[str],
    missing_environment: str | None,
    deployment: dict[str, Any] | None,
    active_sessions: int,
    now: datetime,
) -> dict[str, Any]:
    generation = agent["metadata"].get("generation")
    ok, reason, message = agent_ready(
        missing_secrets=missing_secrets,
        missing_environment=missing_environment,
        deployment=deployment,
        generation=generation,
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
    now: datetime,
) -> dict[str, Any]:
    generation = environment["metadata"].get("generation")
    desired = environment.get("spec", {}).get("warmPool", {}).get("size", 0)
    ready = sum(1 for pod in warm if pod_ready(pod))
    ok = ready >= desired
    message = f"{ready} of {desired} warm sandboxes ready"
    previous = (environment.get("status") or {}).get("conditions")
    return {
        "observedGeneration": generation,
        "conditions": [
            condition(
                "Ready",
                ok,
                "PoolReady" if ok else "PoolFilling",
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
