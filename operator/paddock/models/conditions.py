"""The reasons of the conditions the operator writes: stable, CamelCase, documented in
docs/operator.md. Scripts and alerts may match on them."""

from __future__ import annotations

from enum import StrEnum


class AgentReason(StrEnum):
    """Reasons of an Agent's `Ready` condition."""

    READY = "Ready"
    SCALED_TO_ZERO = "ScaledToZero"
    SECRET_NOT_FOUND = "SecretNotFound"
    ENVIRONMENT_NOT_FOUND = "EnvironmentNotFound"
    HARNESS_NOT_CREATED = "HarnessNotCreated"
    HARNESS_NOT_READY = "HarnessNotReady"
    HARNESS_CRASH_LOOPING = "HarnessCrashLooping"
    """A harness pod's container keeps exiting; the message has its last log line."""
    HARNESS_CANNOT_START = "HarnessCannotStart"
    """A harness container cannot be created (image, configuration); the kubelet's words."""


class EnvironmentReason(StrEnum):
    """Reasons of an Environment's `Ready` condition."""

    POOL_READY = "PoolReady"
    POOL_FILLING = "PoolFilling"
    SANDBOX_FAILING = "SandboxFailing"
    """Sandbox pods fail to start: new ones are made with exponential backoff."""


class SessionReason(StrEnum):
    """Reasons of a Session's `Scheduled` condition (whether a harness worker runs it)."""

    WORKER_ASSIGNED = "WorkerAssigned"
    WAITING_FOR_WORKER = "WaitingForWorker"
    """Input is waiting and no worker of the Agent can take it; the message says why."""
