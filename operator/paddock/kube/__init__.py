"""The one async Kubernetes API client of Paddock (operator, gateway, local pod runner), its
credential loader, the Retry-After reading every client of Paddock uses, and the Agent
versions (ControllerRevisions) the operator and the gateway both read and record."""

from paddock.kube.agentversions import (
    AGENT_LABEL,
    AgentVersion,
    agent_revision,
    find_version,
    generation,
    list_versions,
    pin_version,
    record_current,
    versions_in_use,
)
from paddock.kube.client import (
    APPLY,
    CONNECTIONS,
    JSON_PATCH,
    MERGE,
    PLURALS,
    Answer,
    ApiError,
    Conflict,
    KubeClient,
    NotFound,
    path,
    raise_for_status,
    retry_after,
)
from paddock.kube.credentials import Credentials
from paddock.kube.revisions import (
    controller_revision,
    delete_revision,
    find_revision,
    list_revisions,
    record_revision,
    revision_name,
    revisions_to_prune,
)

__all__ = [
    "AGENT_LABEL",
    "APPLY",
    "CONNECTIONS",
    "JSON_PATCH",
    "MERGE",
    "PLURALS",
    "AgentVersion",
    "Answer",
    "ApiError",
    "Conflict",
    "Credentials",
    "KubeClient",
    "NotFound",
    "agent_revision",
    "controller_revision",
    "delete_revision",
    "find_revision",
    "find_version",
    "generation",
    "list_revisions",
    "list_versions",
    "path",
    "pin_version",
    "raise_for_status",
    "record_current",
    "record_revision",
    "retry_after",
    "revision_name",
    "revisions_to_prune",
    "versions_in_use",
]
