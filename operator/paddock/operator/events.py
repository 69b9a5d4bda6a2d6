"""Kubernetes Events on Paddock's resources, for `kubectl describe`."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from paddock.kube import ApiError, KubeClient
from paddock.models import (
    Agent,
    AgentReason,
    Environment,
    EventReason,
    ObjectStub,
    Session,
    SessionPhase,
)

log = logging.getLogger(__name__)

Regarding = Agent | Environment | Session | ObjectStub
"""What an Event can be about: a resource, or the stub of one (enough to name it)."""


async def post(
    kube: KubeClient,
    resource: Regarding,
    reason: EventReason | AgentReason | SessionPhase,
    message: str,
    *,
    warning: bool = False,
) -> None:
    """Post an Event about ``resource``; failures are logged, never raised (an Event is
    information, not part of the reconcile). ``reason``: one of `EventReason`, an Agent's
    new `Ready` reason, or a Session's new phase."""
    meta = resource.metadata
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.name}.{secrets.token_hex(8)}",
            "namespace": meta.namespace,
        },
        "involvedObject": {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
        },
        "reason": str(reason),
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "paddock-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await kube.create(event)
    except ApiError as exc:
        log.warning("could not post event %s on %s: %s", reason, meta.name, exc)
