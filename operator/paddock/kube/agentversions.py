"""Agent versions (docs/api-design.md, "Decision: agent versions"): version N of an Agent is
its spec at `metadata.generation` N, kept as the ControllerRevision `<agent>-vN` (data: the
spec). The apiserver bumps the generation atomically on every change of the spec and on
nothing else, so a re-apply of the same manifest makes no version. The operator records
each generation it sees and prunes; the gateway records the one it pins a session to, so a
session created right after an update never waits for the operator."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from paddock.kube.client import KubeClient
from paddock.kube.revisions import (
    controller_revision,
    find_revision,
    list_revisions,
    record_revision,
)

AGENT_LABEL = "paddock.dev/agent"
"""The Agent's name, on its revisions (as on its harness pods)."""
UPDATED_AT_ANNOTATION = "paddock.dev/updated-at"
"""When the version was made, as the gateway stamps it on the Agent it changes."""


@dataclass(frozen=True)
class AgentVersion:
    version: int
    spec: dict[str, Any]
    """The Agent's spec at this version, as the apiserver stored it (camelCase)."""
    made_at: str | None
    """When the version was made, if known: the gateway's stamp, else (a version 1) the
    Agent's creation, else when the operator recorded it (soon after it saw the change)."""


def generation(agent: dict[str, Any]) -> int:
    return int(agent["metadata"].get("generation") or 1)


def _made_at(agent: dict[str, Any]) -> str | None:
    meta = agent["metadata"]
    stamp = (meta.get("annotations") or {}).get(UPDATED_AT_ANNOTATION)
    return stamp or (meta.get("creationTimestamp") if generation(agent) == 1 else None)


def agent_revision(agent: dict[str, Any]) -> dict[str, Any]:
    """The ControllerRevision of the Agent's current version."""
    body = controller_revision(
        agent, generation(agent), agent["spec"], {AGENT_LABEL: agent["metadata"]["name"]}
    )
    made_at = _made_at(agent)
    if made_at:
        body["metadata"]["annotations"] = {UPDATED_AT_ANNOTATION: made_at}
    return body


async def record_current(kube: KubeClient, agent: dict[str, Any]) -> None:
    """Record the Agent's current version, unless it is recorded."""
    await record_revision(kube, agent_revision(agent), agent)


def _version(revision: dict[str, Any]) -> AgentVersion:
    meta = revision["metadata"]
    made_at = (meta.get("annotations") or {}).get(UPDATED_AT_ANNOTATION)
    return AgentVersion(
        int(revision["revision"]), revision["data"], made_at or meta.get("creationTimestamp")
    )


async def find_version(
    kube: KubeClient, agent: dict[str, Any], version: int
) -> AgentVersion | None:
    """Version ``version`` of the Agent: the current one from the Agent itself, an older one
    from its revision; None if it was pruned or is not made yet."""
    if version == generation(agent):
        return AgentVersion(version, agent["spec"], _made_at(agent))
    if version > generation(agent):
        return None
    found = await find_revision(kube, agent, version)
    return _version(found) if found is not None else None


async def pin_version(
    kube: KubeClient, agent: dict[str, Any], version: int | None
) -> AgentVersion | None:
    """The version a new session runs to its end: ``version``, else the current one, which
    is recorded now so that it outlives later changes of the Agent and the session never
    waits for the operator to have seen it. None if that version was pruned or is not made."""
    wanted = version or generation(agent)
    found = await find_version(kube, agent, wanted)
    if found is not None and wanted == generation(agent):
        await record_current(kube, agent)
    return found


async def list_versions(kube: KubeClient, agent: dict[str, Any]) -> list[AgentVersion]:
    """Every kept version of the Agent, oldest first; the current one even before any writer
    recorded it."""
    labels = {AGENT_LABEL: agent["metadata"]["name"]}
    current = generation(agent)
    versions = [
        _version(r)
        for r in await list_revisions(kube, agent, labels)
        if int(r["revision"]) < current
    ]
    return [*versions, AgentVersion(current, agent["spec"], _made_at(agent))]


def versions_in_use(sessions: Iterable[dict[str, Any]], agent_name: str) -> set[int]:
    """The versions the live (not terminated, not being deleted) Sessions of an Agent run:
    each Session's `spec.agentRef.version`, else its pinned `status.agentVersion`."""
    used = set()
    for session in sessions:
        spec, status = session.get("spec") or {}, session.get("status") or {}
        ref = spec.get("agentRef") or {}
        if ref.get("name") != agent_name or session["metadata"].get("deletionTimestamp"):
            continue
        if status.get("phase") == "Terminated":
            continue
        version = ref.get("version") or status.get("agentVersion")
        if version:
            used.add(int(version))
    return used
