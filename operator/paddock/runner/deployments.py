"""The Deployment controller's job, reduced to what Paddock's harness Deployments need:
pods straight from the template (no ReplicaSets), new pods before old ones go, and the
status the operator reads. Pure functions; the runner applies the plan."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

HASH_LABEL = "pod-template-hash"


def template_hash(deployment: dict[str, Any]) -> str:
    template = json.dumps(deployment["spec"]["template"], sort_keys=True)
    return hashlib.sha256(template.encode()).hexdigest()[:10]


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _alive(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def plan(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> Plan:
    """What to create and delete so that `replicas` pods of the current template run; pods
    of an older template go once as many current ones are ready; dead pods are replaced."""
    wanted = deployment["spec"].get("replicas", 1)
    current_hash = template_hash(deployment)
    owned = [p for p in pods if owned_by(p, deployment)]
    result = Plan(delete=[p["metadata"]["name"] for p in owned if not _alive(p)])
    alive = [p for p in owned if _alive(p)]
    current = [p for p in alive if p["metadata"].get("labels", {}).get(HASH_LABEL) == current_hash]
    old = [p for p in alive if p not in current]
    result.create = [new_pod(deployment, current_hash) for _ in range(wanted - len(current))]
    result.delete += [p["metadata"]["name"] for p in current[wanted:]]
    if sum(_ready(p) for p in current) >= wanted:
        result.delete += [p["metadata"]["name"] for p in old]
    return result


def new_pod(deployment: dict[str, Any], hash_: str) -> dict[str, Any]:
    meta = deployment["metadata"]
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{hash_}-{secrets.token_hex(3)}",
            "namespace": meta["namespace"],
            "labels": {**(template["metadata"].get("labels") or {}), HASH_LABEL: hash_},
            "annotations": dict(template["metadata"].get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }


def status(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    current_hash = template_hash(deployment)
    alive = [p for p in pods if owned_by(p, deployment) and _alive(p)]
    updated = [p for p in alive if p["metadata"].get("labels", {}).get(HASH_LABEL) == current_hash]
    ready = sum(_ready(p) for p in alive)
    wanted = deployment["spec"].get("replicas", 1)
    available = ready >= wanted
    return {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(alive),
        "updatedReplicas": len(updated),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(wanted - ready, 0),
        "conditions": [
            {
                "type": "Available",
                "status": str(available),
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            }
        ],
    }
