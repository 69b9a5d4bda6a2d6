"""Status of the three resources, derived by pure functions from what was observed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from paddock.eventlog import SessionSnapshot
from paddock.models import (
    Agent,
    AgentReason,
    Condition,
    ConditionStatus,
    ConditionType,
    Environment,
    EnvironmentReason,
    PackagesReason,
    Reason,
    SessionPhase,
    list_cost_cents,
)
from paddock.operator.observed import Deployment, Pod
from paddock.operator.render import installs_packages


class ConditionBody(TypedDict):
    """A condition as the status subresource takes it."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: NotRequired[int]


class AgentStatusBody(TypedDict):
    observedGeneration: int | None
    conditions: list[ConditionBody]
    replicas: int
    readyReplicas: int
    activeSessions: int


class WarmPoolBody(TypedDict):
    desired: int
    ready: int
    bound: int


class EnvironmentStatusBody(TypedDict):
    observedGeneration: int | None
    conditions: list[ConditionBody]
    warmPool: WarmPoolBody
    templateHash: str


class MoneyBody(TypedDict):
    amount: str
    currency: str


class UsageBody(TypedDict):
    inputTokens: int
    outputTokens: int
    cacheReadInputTokens: int
    cacheCreationInputTokens: int
    activeSeconds: float
    listCost: NotRequired[MoneyBody]


class SessionLogStatus(TypedDict):
    """The part of a Session's status that the event log decides (the sync adds its
    `Scheduled` condition)."""

    phase: SessionPhase
    usage: UsageBody
    eventCount: int
    lastActiveTime: str
    stopReason: NotRequired[str]
    lastEventId: NotRequired[str]
    conditions: NotRequired[list[ConditionBody]]


def _transition(previous: Condition | Mapping[str, Any]) -> tuple[str, str, datetime | None]:
    if isinstance(previous, Condition):
        return previous.type, previous.status, previous.last_transition_time
    since = previous.get("lastTransitionTime")
    return (
        previous.get("type", ""),
        previous.get("status", ""),
        datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None,
    )


def condition(
    kind: ConditionType,
    ok: bool,
    reason: Reason,
    message: str,
    *,
    generation: int | None,
    previous: Sequence[Condition | Mapping[str, Any]] | None,
    now: datetime,
) -> ConditionBody:
    """A condition; its `lastTransitionTime` moves only when its status changes.
    ``previous``: the conditions the status has now (validated, or as the API sent them:
    the informers keep Sessions as slim JSON)."""
    status: ConditionStatus = "True" if ok else "False"
    since = now
    for old in previous or []:
        old_kind, old_status, old_since = _transition(old)
        if old_kind == kind and old_status == status and old_since is not None:
            since = old_since
    result = ConditionBody(
        type=str(kind),
        status=status,
        reason=str(reason),
        message=message,
        lastTransitionTime=_time(since),
    )
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


def pod_failure(pod: Pod) -> tuple[str, str] | None:
    """("crash", message) when a container of ``pod`` keeps exiting or exited in error,
    ("start", message) when one cannot be started, else None. The message names the
    container and carries the last line of its termination message (the log's tail)."""
    for container in pod.containers:
        ended = container.terminated
        if ended is not None and ended.exit_code:
            line = _last_line(ended.message)
            restarts = container.restart_count
            return "crash", (
                f"container {container.name} of pod {pod.name} exited with {ended.exit_code}"
                + (f" ({restarts} restarts)" if restarts else "")
                + (f": {line}" if line else "")
            )
        if container.waiting_reason in START_ERRORS:
            detail = container.waiting_message or pod.message
            return "start", (
                f"container {container.name} of pod {pod.name}: {container.waiting_reason}"
                + (f": {_last_line(detail)}" if detail else "")
            )
    return None


def agent_ready(
    *,
    missing_secrets: list[str],
    missing_environment: str | None,
    roster_problems: list[str],
    deployment: Deployment | None,
    harness_pods: Sequence[Pod],
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
    if roster_problems:
        return False, AgentReason.ROSTER_INVALID, "multiagent: " + "; ".join(roster_problems)
    if deployment is None:
        return False, AgentReason.HARNESS_NOT_CREATED, "the harness Deployment does not exist yet"
    desired, ready = deployment.desired, deployment.ready_replicas
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
    agent: Agent,
    *,
    missing_secrets: list[str],
    missing_environment: str | None,
    roster_problems: list[str],
    deployment: Deployment | None,
    harness_pods: Sequence[Pod],
    active_sessions: int,
    now: datetime,
) -> AgentStatusBody:
    generation = agent.metadata.generation
    ok, reason, message = agent_ready(
        missing_secrets=missing_secrets,
        missing_environment=missing_environment,
        roster_problems=roster_problems,
        deployment=deployment,
        harness_pods=harness_pods,
    )
    previous = agent.status.conditions if agent.status else None
    return AgentStatusBody(
        observedGeneration=generation,
        conditions=[
            condition(
                ConditionType.READY,
                ok,
                reason,
                message,
                generation=generation,
                previous=previous,
                now=now,
            )
        ],
        replicas=deployment.replicas if deployment else 0,
        readyReplicas=deployment.ready_replicas if deployment else 0,
        activeSessions=active_sessions,
    )


def pod_ready(pod: dict[str, Any]) -> bool:
    """Whether a pod from an informer serves (see `Pod.ready`)."""
    return Pod(pod).ready


def pod_dead(pod: dict[str, Any]) -> bool:
    """Whether a pod from an informer will never serve again (see `Pod.dead`)."""
    return Pod(pod).dead


def environment_status(
    environment: Environment,
    *,
    ready: int,
    bound: int,
    template_hash: str,
    failures: tuple[int, str, bool] | None = None,
    packages: tuple[bool, PackagesReason, str] | None = None,
    now: datetime,
) -> EnvironmentStatusBody:
    """``ready``: warm sandboxes that serve; ``failures``: (how many sandbox pods failed to
    start in a row, the last's error, whether the apiserver refused to create it);
    ``packages``: the `PackagesReady` condition (see `packages_condition`), if it has one."""
    generation = environment.metadata.generation
    desired = environment.spec.warm_pool.size
    ok = ready >= desired
    reason = EnvironmentReason.POOL_READY if ok else EnvironmentReason.POOL_FILLING
    message = f"{ready} of {desired} warm sandboxes ready"
    if failures is not None and failures[0] and failures[2]:
        ok, reason = False, EnvironmentReason.SANDBOX_REJECTED
        message = (
            f"the apiserver refused {failures[0]} sandbox pods in a row (tried again with "
            f"exponential backoff): {failures[1]}"
        )
    elif failures is not None and failures[0]:
        ok, reason = False, EnvironmentReason.SANDBOX_FAILING
        message = (
            f"{failures[0]} sandbox pods in a row failed to start (new ones are started with "
            f"exponential backoff): {failures[1]}"
        )
    previous = environment.status.conditions if environment.status else None
    conditions = [
        condition(
            ConditionType.READY,
            ok,
            reason,
            message,
            generation=generation,
            previous=previous,
            now=now,
        )
    ]
    if packages is not None:
        conditions.append(
            condition(
                ConditionType.PACKAGES_READY,
                *packages,
                generation=generation,
                previous=previous,
                now=now,
            )
        )
    return EnvironmentStatusBody(
        observedGeneration=generation,
        conditions=conditions,
        warmPool=WarmPoolBody(desired=desired, ready=ready, bound=bound),
        templateHash=template_hash,
    )


def packages_condition(
    environment: Environment,
    *,
    proxy_configured: bool,
    install_failed: str | None,
    ready: int,
) -> tuple[bool, PackagesReason, str] | None:
    """(ok, reason, message) of an Environment's `PackagesReady` condition; None without
    packages. ``install_failed``: the last failed install's message while installs fail."""
    if not installs_packages(environment):
        return None
    if not proxy_configured:
        return (
            False,
            PackagesReason.NO_PACKAGE_PROXY,
            "the operator has no package proxy (PADDOCK_PACKAGE_PROXY_URL and its token key): "
            "sandboxes start without their packages",
        )
    if install_failed is not None:
        return False, PackagesReason.INSTALL_FAILED, install_failed
    if ready or not environment.spec.warm_pool.size:
        return True, PackagesReason.INSTALLED, "packages installed in the warm sandboxes"
    return False, PackagesReason.INSTALLING, "warm sandboxes are installing the packages"


def session_phase(snapshot: SessionSnapshot) -> SessionPhase:
    """Pending (waiting for a worker), Running, Idle, Rescheduling or Terminated."""
    if snapshot.status == "terminated":
        return "Terminated"
    if snapshot.status == "running":
        return "Running"
    if snapshot.status == "rescheduling":
        return "Rescheduling"
    return "Pending" if snapshot.pending_input and snapshot.lease_holder is None else "Idle"


def session_log_status(snapshot: SessionSnapshot, model: str | None) -> SessionLogStatus:
    """The part of a Session's status that the event log decides."""
    usage = snapshot.usage
    summary = UsageBody(
        inputTokens=usage.input_tokens,
        outputTokens=usage.output_tokens,
        cacheReadInputTokens=usage.cache_read_input_tokens,
        cacheCreationInputTokens=usage.cache_creation_input_tokens,
        activeSeconds=round(usage.active_seconds, 3),
    )
    cents = list_cost_cents(model, usage.model_dump()) if model else None
    if cents is not None:
        summary["listCost"] = MoneyBody(amount=str(cents), currency="USD")
    status = SessionLogStatus(
        phase=session_phase(snapshot),
        usage=summary,
        eventCount=snapshot.event_count,
        lastActiveTime=_time(snapshot.updated_at),
    )
    if snapshot.stop_reason is not None:
        status["stopReason"] = snapshot.stop_reason.type
    if snapshot.last_event_id:
        status["lastEventId"] = snapshot.last_event_id
    return status
