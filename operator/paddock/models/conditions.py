"""The condition types, condition reasons and Event reasons the operator writes: stable,
CamelCase, listed in docs/resources.md (generated from the docstrings here: every member has
one, its meaning in a line). Scripts and alerts may match on them."""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    """The `type` of a condition in `status.conditions`."""

    READY = "Ready"
    """Agent: a harness worker is ready and every reference resolves. Environment: the warm
    pool is full. Session: its references resolve and it is open in the event log."""
    SANDBOX_BOUND = "SandboxBound"
    """Session: a sandbox pod is bound to it."""
    SCHEDULED = "Scheduled"
    """Session: a harness worker took its input."""
    PACKAGES_READY = "PackagesReady"
    """Environment (with `packages`): its sandboxes get every package before they are
    claimed."""


class AgentReason(StrEnum):
    """Reasons of an Agent's `Ready` condition."""

    READY = "Ready"
    """At least one harness worker is ready."""
    SCALED_TO_ZERO = "ScaledToZero"
    """`harness.replicas` is 0: sessions wait until it is scaled up."""
    SECRET_NOT_FOUND = "SecretNotFound"
    """A referenced Secret or key does not exist; the message names which."""
    ENVIRONMENT_NOT_FOUND = "EnvironmentNotFound"
    """The `environmentRef` names no Environment."""
    ROSTER_INVALID = "RosterInvalid"
    """A `multiagent` roster entry names no Agent, or an Agent that is a coordinator itself
    (threads are one level deep); the message names which."""
    HARNESS_NOT_CREATED = "HarnessNotCreated"
    """The harness Deployment does not exist yet."""
    HARNESS_NOT_READY = "HarnessNotReady"
    """No harness worker is ready yet."""
    HARNESS_CRASH_LOOPING = "HarnessCrashLooping"
    """No worker is ready and a harness pod's container keeps exiting; the message has its
    last log line."""
    HARNESS_CANNOT_START = "HarnessCannotStart"
    """No worker is ready and a harness container cannot be created (`ErrImagePull`,
    `CreateContainerConfigError`, …); the message has the kubelet's words."""


class EnvironmentReason(StrEnum):
    """Reasons of an Environment's `Ready` condition."""

    POOL_READY = "PoolReady"
    """The warm pool has as many ready sandboxes as `warmPool.size`."""
    POOL_FILLING = "PoolFilling"
    """The warm pool is filling."""
    SANDBOX_FAILING = "SandboxFailing"
    """Sandbox pods fail before they ever serve: new ones are made with exponential backoff;
    the message has how many failed in a row and the last one's error."""
    SANDBOX_REJECTED = "SandboxRejected"
    """The apiserver refuses the Environment's sandbox pods (an admission policy, a quota, a
    value the schema could not check); tried again with exponential backoff; the message has
    the apiserver's answer."""


class PackagesReason(StrEnum):
    """Reasons of an Environment's `PackagesReady` condition."""

    INSTALLED = "Installed"
    """Warm sandboxes have the Environment's apt, pip and npm packages installed."""
    INSTALLING = "Installing"
    """Sandboxes are installing the packages; none is ready yet."""
    INSTALL_FAILED = "InstallFailed"
    """A sandbox's install failed (a package not found, a registry refused): the pod is
    replaced with exponential backoff; the message has the tail of the installer's output."""
    NO_PACKAGE_PROXY = "NoPackageProxy"
    """The operator has no package proxy configured: no package is installed."""


class SessionReason(StrEnum):
    """Reasons of a Session's `Ready` condition."""

    ACCEPTED = "Accepted"
    """Its references resolve and the session is open in the event log."""
    AGENT_NOT_FOUND = "AgentNotFound"
    """The `agentRef` names no Agent; the operator retries."""
    AGENT_VERSION_NOT_FOUND = "AgentVersionNotFound"
    """`agentRef.version` names a version the Agent does not have (pruned, or not made yet);
    the operator retries (a version not made yet may still come)."""
    ENVIRONMENT_NOT_FOUND = "EnvironmentNotFound"
    """The Environment it (or its Agent) names does not exist; the operator retries."""


class SandboxReason(StrEnum):
    """Reasons of a Session's `SandboxBound` condition."""

    BOUND = "Bound"
    """A sandbox pod is bound; the message names it and how it was claimed (warm or cold)."""
    STARTING = "Starting"
    """No warm sandbox was free: one is starting for this session."""
    BACKOFF = "Backoff"
    """The Environment's sandbox pods fail to start: this one waits for the backoff."""
    NO_ENVIRONMENT = "NoEnvironment"
    """Neither the Session nor its Agent names an Environment: it never gets a sandbox."""
    IDLE_RECLAIMED = "IdleReclaimed"
    """Idle past the Environment's `idleTimeout`: the sandbox was freed and the next tool call
    gets a fresh one."""


class SchedulingReason(StrEnum):
    """Reasons of a Session's `Scheduled` condition (whether a harness worker runs it)."""

    WORKER_ASSIGNED = "WorkerAssigned"
    """A harness worker took its input."""
    WAITING_FOR_WORKER = "WaitingForWorker"
    """Input is waiting and no worker of the Agent can take it; the message says why (the
    gateway returns it as the session's `status_message`)."""


class VaultReason(StrEnum):
    """Reasons of a Vault's `Ready` condition."""

    READY = "Ready"
    """Every Secret key its credentials reference exists."""
    SECRET_NOT_FOUND = "SecretNotFound"
    """A referenced Secret or key does not exist; the message names which (never a value)."""


class EventReason(StrEnum):
    """Reasons of the Kubernetes Events the operator posts besides these: a change of an
    Agent's `Ready` reason is posted with that reason, a Session's change of phase with the
    new phase (`Running`, `Idle`, …)."""

    UNRESOLVED = "Unresolved"
    """A Session's reference does not resolve (yet); a warning."""
    CANCELLED = "Cancelled"
    """`spec.cancel` is set: the session is terminated."""
    SANDBOX_REPLACED = "SandboxReplaced"
    """A Session's sandbox died or is gone: another is bound."""
    EXPIRED = "Expired"
    """The Session's `ttl` ran out: it is deleted."""
    THREAD_SANDBOX_LIMIT = "ThreadSandboxLimit"
    """A thread of the Session's coordinator asked for a sandbox while the session's threads
    held the most the operator allows a session (`PADDOCK_THREAD_SANDBOXES`); a warning."""


CONDITIONS: dict[str, dict[ConditionType, type[StrEnum]]] = {
    "Agent": {ConditionType.READY: AgentReason},
    "Environment": {
        ConditionType.READY: EnvironmentReason,
        ConditionType.PACKAGES_READY: PackagesReason,
    },
    "Vault": {ConditionType.READY: VaultReason},
    "Session": {
        ConditionType.READY: SessionReason,
        ConditionType.SANDBOX_BOUND: SandboxReason,
        ConditionType.SCHEDULED: SchedulingReason,
    },
}
"""Each resource's condition types, and the reasons of each."""

Reason = (
    AgentReason
    | EnvironmentReason
    | PackagesReason
    | SessionReason
    | SandboxReason
    | SchedulingReason
    | VaultReason
)
"""Any condition's reason."""
