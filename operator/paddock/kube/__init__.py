"""The one async Kubernetes API client of Paddock (operator, gateway, local pod runner), its
credential loader, and the Retry-After reading every client of Paddock uses."""

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

__all__ = [
    "APPLY",
    "CONNECTIONS",
    "JSON_PATCH",
    "MERGE",
    "PLURALS",
    "Answer",
    "ApiError",
    "Conflict",
    "Credentials",
    "KubeClient",
    "NotFound",
    "path",
    "raise_for_status",
    "retry_after",
]
