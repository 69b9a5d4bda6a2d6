"""Typed read-only views of the core objects the operator observes (pods, Deployments).

Paddock's own resources are validated models (`paddock.models`); core objects come from
the informers and the API as JSON. These views wrap that JSON without copying it (a pool
reconcile or a pod event reads a few fields of many pods) and are the one place that
knows where the fields are and what their defaults mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Terminated:
    """A container's `terminated` state."""

    exit_code: int
    message: str
    started_at: str = ""
    finished_at: str = ""


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """One entry of a pod's `status.containerStatuses`."""

    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def restart_count(self) -> int:
        return int(self.raw.get("restartCount", 0))

    @property
    def waiting_reason(self) -> str:
        return str(self._waiting.get("reason") or "")

    @property
    def waiting_message(self) -> str:
        return str(self._waiting.get("message") or "")

    @property
    def terminated(self) -> Terminated | None:
        """The state it ended in, now or (while in `CrashLoopBackOff`) the last time."""
        state = self.raw.get("state") or {}
        ended = state.get("terminated") or {}
        if self.waiting_reason == "CrashLoopBackOff":
            ended = (self.raw.get("lastState") or {}).get("terminated") or {}
        if not ended:
            return None
        return Terminated(
            int(ended.get("exitCode") or 0),
            str(ended.get("message") or ""),
            str(ended.get("startedAt") or ""),
            str(ended.get("finishedAt") or ""),
        )

    @property
    def started_at(self) -> str:
        """When the running container started (RFC 3339), or ""."""
        running = (self.raw.get("state") or {}).get("running") or {}
        return str(running.get("startedAt") or "")

    @property
    def _waiting(self) -> dict[str, Any]:
        waiting: dict[str, Any] = (self.raw.get("state") or {}).get("waiting") or {}
        return waiting


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod as the API returned it."""

    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["metadata"]["name"])

    @property
    def deleting(self) -> bool:
        return bool(self.raw["metadata"].get("deletionTimestamp"))

    @property
    def phase(self) -> str:
        return str(self._status.get("phase") or "")

    @property
    def message(self) -> str:
        """The kubelet's message about the whole pod (eviction, a failed start)."""
        return str(self._status.get("message") or "")

    @property
    def ready(self) -> bool:
        """Serving: not being deleted, has an address, and its `Ready` condition is True."""
        if self.deleting or not self._status.get("podIP"):
            return False
        return any(
            c["type"] == "Ready" and c["status"] == "True"  # the kubelet's, not a Paddock type
            for c in self._status.get("conditions", [])
        )

    @property
    def dead(self) -> bool:
        """Being deleted or ended: it will never serve (again)."""
        return self.deleting or self.phase in ("Failed", "Succeeded")

    @property
    def containers(self) -> list[ContainerStatus]:
        return [ContainerStatus(c) for c in self._status.get("containerStatuses") or []]

    @property
    def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.raw.get("status") or {}
        return status


@dataclass(frozen=True, slots=True)
class Deployment:
    """A Deployment as the API returned it."""

    raw: dict[str, Any]

    @property
    def desired(self) -> int:
        """`spec.replicas`; the API's default is 1."""
        return int(self.raw.get("spec", {}).get("replicas", 1))

    @property
    def replicas(self) -> int:
        return int(self.raw.get("status", {}).get("replicas", 0) or 0)

    @property
    def ready_replicas(self) -> int:
        return int(self.raw.get("status", {}).get("readyReplicas", 0) or 0)
