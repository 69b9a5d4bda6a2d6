"""A small async Kubernetes API client shared by the operator and the local pod runner."""

from paddock.kube.client import (
    APPLY,
    JSON_PATCH,
    MERGE,
    ApiError,
    Conflict,
    Credentials,
    KubeClient,
    NotFound,
    path,
    raise_for_status,
)

__all__ = [
    "APPLY",
    "JSON_PATCH",
    "MERGE",
    "ApiError",
    "Conflict",
    "Credentials",
    "KubeClient",
    "NotFound",
    "path",
    "raise_for_status",
]
