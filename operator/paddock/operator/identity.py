"""Managed Agents ids (`agent_…`, `env_…`, `sesn_…`, `vlt_…`) kept in labels, since Kubernetes names
cannot hold `_`. The gateway sets them on what it creates; the operator on the rest."""

from __future__ import annotations

from paddock.eventlog import new_id
from paddock.kube import KubeClient
from paddock.models import Agent, Environment, Session, Vault
from paddock.operator import labels as L

ID_LABELS = {
    "Agent": (L.AGENT_ID, "agent_"),
    "Environment": (L.ENVIRONMENT_ID, "env_"),
    "Session": (L.SESSION_ID, "sesn_"),
    "Vault": (L.VAULT_ID, "vlt_"),
}


async def ensure_id(kube: KubeClient, resource: Agent | Environment | Session | Vault) -> str:
    """The resource's id, labelling it with a new one first if it has none."""
    label, prefix = ID_LABELS[resource.kind]
    meta = resource.metadata
    existing = (meta.labels or {}).get(label)
    if existing:
        return existing
    if not meta.namespace or not meta.name:
        raise ValueError(f"{resource.kind} has no name or namespace: it was not read from the API")
    new = new_id(prefix)
    await kube.patch(
        resource.api_version,
        resource.kind,
        meta.namespace,
        meta.name,
        {"metadata": {"labels": {label: new}}},
    )
    return new
