"""Warm pools and sandbox binding, with the test playing kubelet."""

from __future__ import annotations

import asyncio
from typing import Any

from kopf.testing import KopfRunner
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from paddock.eventlog import SandboxBinding, SessionState, sandbox_requests
from paddock.operator import labels as L

from .conftest import Cluster, agent_spec, api_key_secret


def state_of(redis_url: str, namespace: str, session_id: str, read: str = "sandbox") -> Any:
    async def go() -> Any:
        redis = Redis.from_url(redis_url)
        try:
            return await getattr(SessionState(redis, namespace), read)(session_id)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def fill_pool(cluster: Cluster, namespace: str, size: int) -> list[str]:
    """Wait for `size` pooled pods, and make them run."""
    pods = cluster.wait(
        f"{size} warm pods",
        lambda: len(p := cluster.sandboxes(namespace, **{L.SANDBOX_STATE: "warm"})) == size and p,
    )
    names = [p["metadata"]["name"] for p in pods]
    for number, name in enumerate(names, 1):
        cluster.run_pod(namespace, name, ip=f"10.1.0.{number}")
    return names


def agent_with_pool(cluster: Cluster, namespace: str, size: int) -> list[str]:
    """An Agent `coder` whose Environment `python` has a filled warm pool of `size`."""
    api_key_secret(cluster, namespace)
    cluster.create("Environment", namespace, "python", {"warmPool": {"size": size}})
    cluster.create("Agent", namespace, "coder", agent_spec(environmentRef={"name": "python"}))
    return fill_pool(cluster, namespace, size)


def session_ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.wait(
        "sandbox bound",
        lambda: (
            (c := cluster.condition("Session", namespace, name, "SandboxBound"))
            and c["status"] == "True"
            and cluster.get("Session", namespace, name)
        ),
    )


def bound_with_a_warm_spare(cluster: Cluster, namespace: str) -> tuple[str, str]:
    """Session `s1` bound to a warm sandbox, and another warm one ready: (session id, pod)."""
    agent_with_pool(cluster, namespace, 1)
    cluster.create("Session", namespace, "s1", {"agentRef": {"name": "coder"}})
    session = session_ready(cluster, namespace, "s1")
    fill_pool(cluster, namespace, 1)
    return session["metadata"]["labels"][L.SESSION_ID], session["status"]["sandbox"]["podName"]


def test_warm_pool_fills_binds_refills_and_replaces(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    warm = agent_with_pool(cluster, namespace, 2)
    cluster.wait(
        "pool ready",
        lambda: (
            (c := cluster.condition("Environment", namespace, "python", "Ready"))
            and c["status"] == "True"
        ),
    )
    pod = cluster.get("Pod", namespace, warm[0])
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Environment"
    # No Agent's policy selects a warm pod: no harness reaches it, it reaches no proxy.
    assert L.AGENT not in pod["metadata"]["labels"]

    # A claim binds at once from the pool.
    cluster.create("Session", namespace, "s1", {"agentRef": {"name": "coder"}})
    session = session_ready(cluster, namespace, "s1")
    sandbox = session["status"]["sandbox"]
    assert sandbox["claim"] == "warm"
    assert sandbox["podName"] in warm
    session_id = session["metadata"]["labels"][L.SESSION_ID]
    assert session["status"]["sessionId"] == session_id
    binding = state_of(redis_url, namespace, session_id)
    assert binding.pod == sandbox["podName"]
    assert binding.url.startswith("http://10.1.0.")
    bound = cluster.get("Pod", namespace, sandbox["podName"])
    assert bound["metadata"]["labels"][L.SANDBOX_STATE] == "bound"
    assert bound["metadata"]["labels"][L.AGENT] == "coder"  # `coder-sandbox-access` selects it
    assert bound["metadata"]["ownerReferences"][0]["kind"] == "Session"
    assert binding.token == bound["metadata"]["annotations"][L.SANDBOX_TOKEN]

    # The pool refills to two warm pods.
    cluster.wait(
        "refill", lambda: len(cluster.sandboxes(namespace, **{L.SANDBOX_STATE: "warm"})) == 2
    )
    fill_pool(cluster, namespace, 2)

    # The bound pod dies: the session gets another one, and the replacement is measured
    # though no harness worker reported it.
    measured = REGISTRY.get_sample_value("paddock_operator_sandbox_replace_seconds_count") or 0
    cluster.delete("Pod", namespace, sandbox["podName"])
    replaced = cluster.wait(
        "replacement",
        lambda: (
            (s := cluster.get("Session", namespace, "s1"))
            and s["status"].get("sandbox", {}).get("podName") not in (None, sandbox["podName"])
            and s
        ),
    )
    new_pod = replaced["status"]["sandbox"]["podName"]
    assert state_of(redis_url, namespace, session_id).pod == new_pod
    assert "SandboxReplaced" in {e["reason"] for e in cluster.list("Event", namespace)}
    cluster.wait(
        "the replacement measured",
        lambda: (
            REGISTRY.get_sample_value("paddock_operator_sandbox_replace_seconds_count")
            == measured + 1
        ),
    )


def test_empty_pool_starts_a_cold_sandbox_for_the_session(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    api_key_secret(cluster, namespace)
    cluster.create("Environment", namespace, "python", {"warmPool": {"size": 0}})
    cluster.create("Agent", namespace, "coder", agent_spec())
    cluster.create(
        "Session",
        namespace,
        "s1",
        {"agentRef": {"name": "coder"}, "environmentRef": {"name": "python"}},
    )
    starting = cluster.wait(
        "starting",
        lambda: (
            (c := cluster.condition("Session", namespace, "s1", "SandboxBound"))
            and c["reason"] == "Starting"
            and c
        ),
    )
    assert starting["status"] == "False"
    (pod,) = cluster.sandboxes(namespace, **{L.SANDBOX_STATE: "bound"})
    assert pod["metadata"]["annotations"][L.CLAIM] == "cold"
    assert pod["metadata"]["labels"][L.AGENT] == "coder"
    cluster.run_pod(namespace, pod["metadata"]["name"], ip="10.2.0.9")
    session = session_ready(cluster, namespace, "s1")
    assert session["status"]["sandbox"] == {
        **session["status"]["sandbox"],
        "claim": "cold",
        "podName": pod["metadata"]["name"],
    }


def test_changed_template_replaces_pooled_pods(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    cluster.create("Environment", namespace, "python", {"warmPool": {"size": 1}})
    (old,) = fill_pool(cluster, namespace, 1)
    cluster.patch("Environment", namespace, "python", {"spec": {"image": "paddock/sandbox:0.2.0"}})
    new = cluster.wait(
        "new pod", lambda: [p for p in cluster.sandboxes(namespace) if p["metadata"]["name"] != old]
    )
    assert new[0]["spec"]["containers"][0]["image"] == "paddock/sandbox:0.2.0"
    cluster.wait(
        "old pod gone",
        lambda: (
            not cluster.get("Pod", namespace, old)
            or cluster.get("Pod", namespace, old)["metadata"].get("deletionTimestamp")
        ),
    )


def test_a_harness_request_for_a_dead_sandbox_binds_another(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    session_id, first = bound_with_a_warm_spare(cluster, namespace)
    replaced = REGISTRY.get_sample_value("paddock_operator_sandbox_replace_seconds_count") or 0

    async def report_dead() -> None:
        redis = Redis.from_url(redis_url)
        await SessionState(redis, namespace).request_sandbox(session_id, dead_pod=first)
        await redis.aclose()

    asyncio.run(report_dead())
    cluster.wait(
        "another sandbox",
        lambda: (b := state_of(redis_url, namespace, session_id)) and b.pod != first,
    )
    cluster.wait(
        "dead pod deleted",
        lambda: (
            not cluster.get("Pod", namespace, first)
            or cluster.get("Pod", namespace, first)["metadata"].get("deletionTimestamp")
        ),
    )
    assert isinstance(state_of(redis_url, namespace, session_id), SandboxBinding)
    # The operator (in this process) measured the replacement.
    cluster.wait(
        "the replacement measured",
        lambda: (
            REGISTRY.get_sample_value("paddock_operator_sandbox_replace_seconds_count")
            == replaced + 1
        ),
    )


def test_a_dead_sandbox_is_replaced_once(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    """The harness reports the failure before the kubelet does, twice (two workers, or a
    `dead` and a `needed`), then the pod fails: one sandbox replaces it, never the dead one."""
    session_id, first = bound_with_a_warm_spare(cluster, namespace)

    async def report_dead() -> None:
        redis = Redis.from_url(redis_url)
        state = SessionState(redis, namespace)
        await state.request_sandbox(session_id, dead_pod=first)
        await state.request_sandbox(session_id, dead_pod=first)
        await state.request_sandbox(session_id)
        await redis.aclose()

    async def requests_handled() -> bool:
        redis = Redis.from_url(redis_url)
        try:
            groups = await redis.xinfo_groups(sandbox_requests(namespace))
        finally:
            await redis.aclose()
        return bool(groups) and all(g["pending"] == 0 and g["lag"] == 0 for g in groups)

    asyncio.run(report_dead())
    cluster.fail_pod(namespace, first)
    binding = cluster.wait(
        "another sandbox",
        lambda: (b := state_of(redis_url, namespace, session_id)) and b.pod != first and b,
    )
    cluster.wait("the requests handled", lambda: asyncio.run(requests_handled()))
    cluster.wait(
        "the dead pod deleted and the status updated",
        lambda: (
            first not in [p["metadata"]["name"] for p in cluster.sandboxes(namespace)]
            and cluster.get("Session", namespace, "s1")["status"]["sandbox"]["podName"]
            == binding.pod
        ),
    )
    own = [
        p["metadata"]["name"] for p in cluster.sandboxes(namespace, **{L.SESSION_ID: session_id})
    ]
    assert own == [binding.pod]
    assert state_of(redis_url, namespace, session_id) == binding


def test_sandbox_pods_the_apiserver_refuses_are_reported_and_retried_with_backoff(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    """An extended resource requested below its limit passes the CRD schema (which refuses a
    request above its limit) but not the pod's validation, which wants the two equal: the
    Environment says so, and the operator tries again (after its backoff)."""
    resources = {"requests": {"example.com/gpu": 1}, "limits": {"example.com/gpu": 2}}
    cluster.create(
        "Environment", namespace, "python", {"warmPool": {"size": 1}, "resources": resources}
    )
    ready = cluster.wait(
        "the refusal in the status",
        lambda: (
            (c := cluster.condition("Environment", namespace, "python", "Ready"))
            and c["reason"] == "SandboxRejected"
            and c
        ),
    )
    assert ready["status"] == "False"
    assert "must be equal to example.com/gpu limit" in ready["message"], ready
    cluster.wait(
        "a second try",
        lambda: (
            "refused 2 sandbox pods in a row"
            in (cluster.condition("Environment", namespace, "python", "Ready") or {}).get(
                "message", ""
            )
        ),
    )
    # Fixed: a pod is made at once, not after the broken spec's backoff.
    fixed = {"requests": {"example.com/gpu": 2}}
    cluster.patch("Environment", namespace, "python", {"spec": {"resources": fixed}})
    cluster.wait("a pool pod", lambda: cluster.sandboxes(namespace), timeout=10)
