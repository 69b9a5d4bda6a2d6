"""Agent versions: the operator records each generation of an Agent as a ControllerRevision,
prunes those beyond `revisionHistoryLimit` that no live Session runs, and pins a Session
applied with kubectl to the version it names (or the current one)."""

from __future__ import annotations

import json
from typing import Any

import redis
from kopf.testing import KopfRunner

from paddock.eventlog import companion_keys
from paddock.kube import revisions_to_prune
from paddock.testing.redis import RedisServer

from .conftest import Cluster, agent_spec

REVISIONS = "/apis/apps/v1/namespaces/{namespace}/controllerrevisions"


def revisions(cluster: Cluster, namespace: str, agent: str) -> dict[int, dict[str, Any]]:
    answer = cluster.http.get(
        REVISIONS.format(namespace=namespace),
        params={"labelSelector": f"paddock.dev/agent={agent}"},
    )
    assert answer.status_code == 200, answer.text
    return {int(r["revision"]): r for r in answer.json()["items"]}


def server_side_apply(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> int:
    """Apply the manifest as Helm and GitOps tools do; the Agent's generation after it."""
    manifest = {"apiVersion": "paddock.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name}}
    answer = cluster.http.patch(
        cluster.url("Agent", namespace, name),
        content=json.dumps({**manifest, "spec": spec}),
        params={"fieldManager": "gitops", "force": "true"},
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert answer.status_code in (200, 201), answer.text
    return int(answer.json()["metadata"]["generation"])


def observed(cluster: Cluster, namespace: str, name: str, generation: int) -> bool:
    """The operator has reconciled ``generation`` (versions are recorded before the status)."""
    status = (cluster.get("Agent", namespace, name) or {}).get("status") or {}
    return bool(status.get("observedGeneration") == generation)


def test_prune_keeps_the_newest_and_those_in_use() -> None:
    assert revisions_to_prune([1, 2, 3, 4, 5], limit=2, in_use={2}) == [1, 3]
    assert revisions_to_prune([3, 1, 2], limit=10, in_use=set()) == []
    assert revisions_to_prune([1, 2], limit=1, in_use={1, 2}) == []
    assert revisions_to_prune([7], limit=1, in_use=set()) == []


def test_a_reapply_of_an_unchanged_agent_makes_no_version(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    spec = agent_spec(system="one")
    assert server_side_apply(cluster, namespace, "coder", spec) == 1
    cluster.wait("version 1 observed", lambda: observed(cluster, namespace, "coder", 1))
    assert server_side_apply(cluster, namespace, "coder", spec) == 1  # Helm upgrade, Argo sync
    assert server_side_apply(cluster, namespace, "coder", agent_spec(system="two")) == 2
    assert server_side_apply(cluster, namespace, "coder", agent_spec(system="two")) == 2
    cluster.wait("version 2 observed", lambda: observed(cluster, namespace, "coder", 2))
    kept = revisions(cluster, namespace, "coder")
    assert sorted(kept) == [1, 2]
    assert [kept[v]["data"]["system"] for v in (1, 2)] == ["one", "two"]
    owner = kept[1]["metadata"]["ownerReferences"][0]
    agent = cluster.get("Agent", namespace, "coder") or {}
    assert (owner["kind"], owner["uid"]) == ("Agent", agent["metadata"]["uid"])
    assert kept[2]["metadata"]["name"] == "coder-v2"


def test_versions_beyond_the_limit_are_pruned_except_those_sessions_run(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_server: RedisServer
) -> None:
    cluster.create("Agent", namespace, "coder", agent_spec(system="s1", revisionHistoryLimit=2))
    cluster.wait("version 1 observed", lambda: observed(cluster, namespace, "coder", 1))
    # Applied with kubectl, naming no version: pinned to the current one when accepted.
    cluster.create("Session", namespace, "on-one", {"agentRef": {"name": "coder"}})
    cluster.wait(
        "session pinned",
        lambda: (
            (cluster.get("Session", namespace, "on-one") or {})
            .get("status", {})
            .get("agentVersion")
            == 1
        ),
    )
    for n in (2, 3, 4):
        cluster.patch("Agent", namespace, "coder", {"spec": {"system": f"s{n}"}})
        cluster.wait(f"version {n} observed", lambda n=n: observed(cluster, namespace, "coder", n))
    # Two newest kept; version 1 too, since a live session runs it; version 2 pruned.
    assert sorted(revisions(cluster, namespace, "coder")) == [1, 3, 4]

    cluster.create("Session", namespace, "on-two", {"agentRef": {"name": "coder", "version": 2}})
    refused = cluster.wait(
        "version not found",
        lambda: (
            (c := cluster.condition("Session", namespace, "on-two", "Ready"))
            and c["status"] == "False"
            and c
        ),
    )
    assert refused["reason"] == "AgentVersionNotFound"
    assert "no version 2" in refused["message"]

    cluster.create("Session", namespace, "on-three", {"agentRef": {"name": "coder", "version": 3}})
    status = cluster.wait(
        "session on version 3 accepted",
        lambda: (
            (s := (cluster.get("Session", namespace, "on-three") or {}).get("status"))
            and s.get("agentVersion")
            and s
        ),
    )
    assert status["agentVersion"] == 3
    # The session's settings hold that version's spec: what its harness worker runs.
    client = redis.Redis.from_url(redis_server.url)
    try:
        pin = client.get(companion_keys(namespace, status["sessionId"])[3])
    finally:
        client.close()
    assert pin is not None
    assert json.loads(pin)["version"] == 3
    assert json.loads(pin)["spec"]["system"] == "s3"
