"""Kubernetes Events on Paddock's resources, for `kubectl describe`."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from paddock.kube import ApiError, KubeClient

log = logging.getLogger(__name__)


async def post(
    kube: KubeClient, resource: dict[str, Any], reason: str, message: str, *, warning: bool = False
) -> None:
    """Post an Event about ``resource``; failures are logged, never raised (an Event is
    information, not part of the reconcile)."""
    meta = resource["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": resource["apiVersion"],
            "kind": resource["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
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
        log.warning("could not post event %s on %s: %s", reason, meta["name"], exc)
