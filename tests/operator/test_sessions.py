"""A Session's life at the API level, driven by its event log."""

from __future__ import annotations

import asyncio
from typing import Any

from kopf.testing import KopfRunner
from redis.asyncio import Redis

from paddock.eventlog import (
    AgentMessageEvent,
    EventLog,
    ModelUsage,
    SessionStatusIdleEvent,
    SessionStatusRunningEvent,
    SpanModelRequestEndEvent,
    SpanModelRequestStartEvent,
    StopReason,
    TextBlock,
)
from paddock.operator import labels as L

from .conftest import Cluster, agent_spec
from .test_sandboxes import agent_with_pool, session_ready


def act_as_worker(redis_url: str, namespace: str, session_id: str, *events: Any) -> None:
    """Append events as a harness worker does: under the session's lease."""

    async def go() -> None:
        redis = Redis.from_url(redis_url)
        log = EventLog(redis, namespace)
        lease = await log.acquire_lease(session_id, "test-worker", ttl_ms=5000)
        assert lease is not None
        stored = await log.append(session_id, list(events), fence=lease)
        await log.release_lease(lease, handled_through=stored[-1].id)
        await redis.aclose()

    asyncio.run(go())


def redis_keys(redis_url: str, session_id: str) -> list[bytes]:
    async def go() -> list[bytes]:
        redis = Redis.from_url(redis_url)
        keys = [k async for k in redis.scan_iter(f"*{session_id}*")]
        await redis.aclose()
        return keys

    return asyncio.run(go())


def phase(cluster: Cluster, namespace: str, name: str, expected: str) -> dict[str, Any]:
    return cluster.wait(
        f"phase {expected}",
        lambda: (
            (s := cluster.get("Session", namespace, name))
            and (s.get("status") or {}).get("phase") == expected
            and s
        ),
    )


def test_a_sessions_life(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    agent_with_pool(cluster, namespace, 1)
    cluster.create(
        "Session",
        namespace,
        "life",
        {
            "agentRef": {"name": "coder"},
            "initialEvents": [{"content": [{"text": "count the primes"}]}],
        },
    )
    session = session_ready(cluster, namespace, "life")
    session_id = session["metadata"]["labels"][L.SESSION_ID]
    pending = phase(cluster, namespace, "life", "Pending")  # the task waits for a worker
    assert pending["status"]["eventCount"] == 1
    # No worker is ready (nothing runs the harness pods here): the status says why.
    scheduled = cluster.wait(
        "the reason the session waits",
        lambda: (
            (c := cluster.condition("Session", namespace, "life", "Scheduled"))
            and "HarnessNotReady" in c["message"]
            and c
        ),
    )
    assert (scheduled["status"], scheduled["reason"]) == ("False", "WaitingForWorker")
    assert scheduled["message"].startswith("waiting for a harness worker: HarnessNotReady: ")

    act_as_worker(
        redis_url, namespace, session_id, SessionStatusRunningEvent(), SpanModelRequestStartEvent()
    )
    running = phase(cluster, namespace, "life", "Running")
    assert running["status"]["eventCount"] == 3

    usage = ModelUsage(
        input_tokens=1_000_000,
        output_tokens=100_000,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
    )
    act_as_worker(
        redis_url,
        namespace,
        session_id,
        AgentMessageEvent(content=[TextBlock(text="25")]),
        SpanModelRequestEndEvent(model_request_start_id="x", model_usage=usage),
        SessionStatusIdleEvent(stop_reason=StopReason(type="end_turn")),
    )
    idle = phase(cluster, namespace, "life", "Idle")
    status = idle["status"]
    assert status["stopReason"] == "end_turn"
    assert status["eventCount"] == 6
    assert status["usage"]["inputTokens"] == 1_000_000
    assert status["usage"]["listCost"] == {"amount": "450", "currency": "USD"}  # $3 + $1.50
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "SandboxBound": "True",
        "Scheduled": "True",
    }
    # Each phase change is also an Event, posted right after the status.
    cluster.wait(
        "Running and Idle events",
        lambda: (
            {"Running", "Idle"}
            <= {
                e["reason"]
                for e in cluster.list("Event", namespace)
                if e["involvedObject"]["name"] == "life"
            }
        ),
    )

    pod = status["sandbox"]["podName"]
    cluster.delete("Session", namespace, "life")
    cluster.wait("session gone", lambda: cluster.get("Session", namespace, "life") is None)
    assert not cluster.sandboxes(namespace, **{L.SESSION_ID: session_id})
    gone = cluster.get("Pod", namespace, pod)
    assert gone is None or gone["metadata"].get("deletionTimestamp")
    assert redis_keys(redis_url, session_id) == []


def test_a_new_session_gets_its_first_phase_with_its_acceptance(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    """One status write accepts a Session and says what its log says (phase, events,
    `Scheduled`): the log sync writes it only once the log moves on."""
    cluster.create("Agent", namespace, "coder", agent_spec())
    # The Agent's readiness is part of `Scheduled`'s message: known before the Session is.
    cluster.wait(
        "the Agent's Ready", lambda: cluster.condition("Agent", namespace, "coder", "Ready")
    )
    cluster.create(
        "Session",
        namespace,
        "one",
        {"agentRef": {"name": "coder"}, "initialEvents": [{"content": [{"text": "hello"}]}]},
    )
    session = phase(cluster, namespace, "one", "Pending")  # its task waits for a worker
    status = session["status"]
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {
        "Ready": "Accepted",
        "SandboxBound": "NoEnvironment",
        "Scheduled": "WaitingForWorker",
    }
    assert status["eventCount"] == 1
    status_writers = {
        field["manager"]
        for field in session["metadata"]["managedFields"]
        if field.get("subresource") == "status"
    }
    assert status_writers == {"paddock-session"}


def test_missing_agent_is_a_condition_and_resolves_when_it_appears(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    cluster.create("Session", namespace, "early", {"agentRef": {"name": "later"}})
    ready = cluster.wait(
        "AgentNotFound", lambda: cluster.condition("Session", namespace, "early", "Ready")
    )
    assert (ready["status"], ready["reason"]) == ("False", "AgentNotFound")
    assert ready["message"] == f'Agent "later" not found in namespace "{namespace}"'
    assert cluster.get("Session", namespace, "early")["status"]["phase"] == "Pending"
    cluster.wait(
        "Unresolved event",
        lambda: "Unresolved" in {e["reason"] for e in cluster.list("Event", namespace)},
    )
    cluster.create("Agent", namespace, "later", agent_spec())
    cluster.wait(
        "accepted",
        lambda: (
            (c := cluster.condition("Session", namespace, "early", "Ready"))
            and c["status"] == "True"
        ),
        timeout=40,
    )
    bound = cluster.condition("Session", namespace, "early", "SandboxBound")
    assert (bound["status"], bound["reason"]) == ("False", "NoEnvironment")


def test_missing_environment_is_a_condition(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    cluster.create("Agent", namespace, "coder", agent_spec())
    cluster.create(
        "Session",
        namespace,
        "s",
        {"agentRef": {"name": "coder"}, "environmentRef": {"name": "gpu"}},
    )
    ready = cluster.wait(
        "EnvironmentNotFound", lambda: cluster.condition("Session", namespace, "s", "Ready")
    )
    assert ready["reason"] == "EnvironmentNotFound"
    assert ready["message"] == f'Environment "gpu" not found in namespace "{namespace}"'


def test_cancel_terminates_and_frees_the_sandbox(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    agent_with_pool(cluster, namespace, 1)
    cluster.create(
        "Session",
        namespace,
        "c",
        {"agentRef": {"name": "coder"}, "initialEvents": [{"content": [{"text": "work"}]}]},
    )
    session_id = session_ready(cluster, namespace, "c")["metadata"]["labels"][L.SESSION_ID]
    cluster.patch("Session", namespace, "c", {"spec": {"cancel": True}})
    phase(cluster, namespace, "c", "Terminated")
    cluster.wait(
        "sandbox freed", lambda: not cluster.sandboxes(namespace, **{L.SESSION_ID: session_id})
    )


def test_ttl_deletes_a_resting_session(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_url: str
) -> None:
    cluster.create("Agent", namespace, "coder", agent_spec())
    cluster.create("Session", namespace, "brief", {"agentRef": {"name": "coder"}, "ttl": "2s"})
    cluster.wait("expired", lambda: cluster.get("Session", namespace, "brief") is None, timeout=30)
    assert "Expired" in {e["reason"] for e in cluster.list("Event", namespace)}
