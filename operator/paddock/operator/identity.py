"""Managed Agents ids (`agent_…`, `env_…`, `sesn_…`) kept in labels, since Kubernetes names
cannot hold `_`. The gateway sets them on what it creates; the operator on the rest."""

from __future__ import annotations

from typing import Any

from paddock.eventlog.ids import new_id
from paddock.kube import KubeClient
from paddock.operator import labels as L

ID_LABELS = {
    "Agent": (L.AGENT_ID, "agent_"),
    "Environment": (L.ENVIRONMENT_ID, "env_"),
    "Session": (L.SESSION_ID, "sesn_"),
}


async def ensure_id(kube: KubeClient, resource: dict[str, Any]) -> str:
    """The resource's id, labelling it with a new one first if it has none."""
    label, prefix = ID_LABELS[resource["kind"]]
    meta = resource["metadata"]
    existing = (meta.get("labels") or {}).get(label)
    if existing:
        return str(existing)
    new = new_id(prefix)
    await kube.patch(
        resource["apiVersion"],
        resource["kind"],
        meta["namespace"],
        meta["name"],
        {"metadata": {"labels": {label: new}}},
    )
    return new
