"""A thread's sandbox: its own, from the parent Session's Environment, owned by the parent
Session, at most `PADDOCK_THREAD_SANDBOXES` per session, released with the parent. The test
plays kubelet and the coordinator's harness (which starts threads in Redis)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kopf.testing import KopfRunner
from redis.asyncio import Redis

from paddock.eventlog import (
    EventLog,
    SessionState,
    sandbox_requests,
    thread_id,
    thread_session_id,
)
from paddock.operator import labels as L

from .conftest import Cluster
from .test_sandboxes import agent_with_pool, fill_pool, session_ready, state_of

LIMIT = 2


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"PADDOCK_THREAD_SANDBOXES": str(LIMIT)}


def start_thread(
    redis_url: str, namespace: str, parent: str, call: str, record: bool = True
) -> str:
    """What a coordinator's `send_to_agent` does before the thread's first tool call (as
    `paddock.harness.threads` does), then the thread's worker asks for a sandbox."""

    async def go() -> str:
        redis = Redis.from_url(redis_url)
        try:
            log, state = EventLog(redis, namespace), SessionState(redis, namespace)
            thread = thread_session_id(parent, call)
            await log.create_session(thread, agent=f"{namespace}/helper")
            settings = await state.settings(parent)
            assert settings is not None
            await state.put_settings(
                thread, settings.model_copy(update={"parent_session_id": parent, "agent": None})
            )
            if record:
                entry = {"agent_name": "helper", "call_id": call}
                await state.add_thread(parent, thread_id(thread), json.dumps(entry))
            await state.request_sandbox(thread)
            return thread
        finally:
            await redis.aclose()

    return asyncio.run(go())


def requests_handled(redis_url: str, namespace: str) -> bool:
    async def go() -> bool:
        redis = Redis.from_url(redis_url)
        try:
            groups = await redis.xinfo_groups(sandbox_requests(namespace))
        finally:
            await redis.aclose()
        return bool(groups) and all(g["pending"] == 0 and g["lag"] == 0 for g in groups)

    return asyncio.run(go())


def bound_thread(
    cluster: Cluster, redis_url: str, namespace: str, thread: str, not_in: set[str] = frozenset()
) -> dict[str, Any]:
    """The thread's pod once its binding is in Redis (a cold pod is run first), other than
    the pods ``not_in``."""

    def bound() -> Any:
        pods = cluster.sandboxes(namespace, **{L.SESSION_ID: thread})
        for pod in pods:
            if not (pod.get("status") or {}).get("podIP"):
                cluster.run_pod(namespace, pod["metadata"]["name"], ip="10.1.9.9")
        binding = state_of(redis_url, namespace, thread)
        return (
            binding
            and binding.pod not in not_in
            and [p for p in pods if p["metadata"]["name"] == binding.pod]
        )

    (pod,) = cluster.wait(f"a sandbox for {thread}", bound)
    return pod


def test_each_thread_gets_its_own_sandbox_owned_by_the_parent_session_and_at_most_the_limit(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    agent_with_pool(cluster, namespace, 1)
    cluster.create("Session", namespace, "s1", {"agentRef": {"name": "coder"}})
    session = session_ready(cluster, namespace, "s1")
    parent, parent_pod = session["metadata"]["labels"][L.SESSION_ID], session["status"]["sandbox"]
    fill_pool(cluster, namespace, 1)

    first = start_thread(redis_url, namespace, parent, "sevt_call1")
    second = start_thread(redis_url, namespace, parent, "sevt_call2")
    pods = [bound_thread(cluster, redis_url, namespace, t) for t in (first, second)]
    names = {p["metadata"]["name"] for p in pods}
    assert len(names) == 2
    assert parent_pod["podName"] not in names
    for pod, thread in zip(pods, (first, second), strict=True):
        labels = pod["metadata"]["labels"]
        # Reached by the harness of the Agent that runs the thread (its access policy
        # selects the label), found by the parent's id, and deleted with the parent Session.
        assert labels[L.SESSION_ID] == thread
        assert labels[L.AGENT] == "helper"
        assert labels[L.PARENT_SESSION_ID] == parent
        assert labels[L.ENVIRONMENT] == "python"
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Session",
            "s1",
            session["metadata"]["uid"],
        )
    # The Session's status is about its own sandbox.
    status = cluster.get("Session", namespace, "s1")["status"]
    assert status["sandbox"]["podName"] == parent_pod["podName"]

    # Over the limit, and a thread no coordinator recorded: no sandbox, and the limit is said.
    third = start_thread(redis_url, namespace, parent, "sevt_call3")
    forged = start_thread(redis_url, namespace, parent, "sevt_call4", record=False)
    cluster.wait("the requests handled", lambda: requests_handled(redis_url, namespace))
    for thread in (third, forged):
        assert state_of(redis_url, namespace, thread) is None
        assert not cluster.sandboxes(namespace, **{L.SESSION_ID: thread})
    warned = cluster.wait(
        "the limit's Event",
        lambda: [
            e
            for e in cluster.list("Event", namespace)
            if e["reason"] == "ThreadSandboxLimit" and e["involvedObject"]["name"] == "s1"
        ],
    )
    assert thread_id(third) in warned[0]["message"]
    assert len(cluster.sandboxes(namespace, **{L.PARENT_SESSION_ID: parent})) == LIMIT

    # A thread's sandbox that dies is replaced by another of its own.
    cluster.fail_pod(namespace, pods[0]["metadata"]["name"])
    replacement = bound_thread(cluster, redis_url, namespace, first, not_in=names)
    assert replacement["metadata"]["labels"][L.PARENT_SESSION_ID] == parent

    # Archiving (cancel) the parent releases the whole tree: bindings and pods.
    cluster.patch("Session", namespace, "s1", {"spec": {"cancel": True}})
    cluster.wait(
        "the tree's sandboxes released",
        lambda: (
            not cluster.sandboxes(namespace, **{L.PARENT_SESSION_ID: parent})
            and not cluster.sandboxes(namespace, **{L.SESSION_ID: parent})
        ),
    )
    for thread in (first, second):
        assert state_of(redis_url, namespace, thread) is None


def test_deleting_the_parent_session_deletes_its_threads_sandboxes(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    agent_with_pool(cluster, namespace, 1)
    cluster.create("Session", namespace, "s1", {"agentRef": {"name": "coder"}})
    session = session_ready(cluster, namespace, "s1")
    parent = session["metadata"]["labels"][L.SESSION_ID]
    thread = start_thread(redis_url, namespace, parent, "sevt_call1")
    bound_thread(cluster, redis_url, namespace, thread)
    cluster.delete("Session", namespace, "s1")
    cluster.wait(
        "the Session gone with its thread's sandbox",
        lambda: (
            cluster.get("Session", namespace, "s1") is None
            and not cluster.sandboxes(namespace, **{L.PARENT_SESSION_ID: parent})
        ),
    )
    assert state_of(redis_url, namespace, thread) is None
