"""The operator's in-memory pieces, without a cluster: the informer's copy and indexes, the
work queue, and the check that skips status writes a resumed session does not need."""

from __future__ import annotations

import asyncio
from typing import Any

from paddock.models import Session
from paddock.operator import labels as L
from paddock.operator.controller import WorkQueue
from paddock.operator.informer import Informer
from paddock.operator.sandboxes import pool_index, session_index
from paddock.operator.sessions import says_already
from paddock.operator.sync import slim_session


def pod(name: str, version: int, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(version),
            "labels": {L.COMPONENT: "sandbox", **labels},
            "managedFields": [{"manager": "someone"}],
        }
    }


def pods(changes: list[tuple[Any, Any]]) -> Informer:
    return Informer(
        None,  # type: ignore[arg-type]  # no list or watch in these tests
        "v1",
        "Pod",
        indexes={"pool": pool_index, "session": session_index},
        on_change=lambda old, new: changes.append((old, new)),
    )


def test_the_informer_keeps_the_newest_version_and_its_indexes() -> None:
    changes: list[tuple[Any, Any]] = []
    informer = pods(changes)
    informer.store(pod("a", 5, **{L.ENVIRONMENT: "python", L.SANDBOX_STATE: "warm"}))
    assert [p["metadata"]["name"] for p in informer.by("pool", ("ns", "python", "warm"))] == ["a"]
    assert "managedFields" not in informer.get("ns", "a")["metadata"]

    # A claim's reply is stored at once; the watch event of an older version is ignored.
    claimed = pod(
        "a", 7, **{L.ENVIRONMENT: "python", L.SANDBOX_STATE: "bound", L.SESSION_ID: "sesn_1"}
    )
    informer.store(claimed)
    informer.store(pod("a", 6, **{L.ENVIRONMENT: "python", L.SANDBOX_STATE: "warm"}))
    assert informer.by("pool", ("ns", "python", "warm")) == []
    assert informer.by("session", ("ns", "sesn_1")) == [claimed]
    assert len(changes) == 2

    informer.forget(claimed)
    assert informer.get("ns", "a") is None
    assert informer.by("session", ("ns", "sesn_1")) == []
    assert changes[-1] == (claimed, None)


def test_the_work_queue_holds_a_key_once_and_never_hands_it_out_twice_at_once() -> None:
    async def go() -> list[str]:
        queue = WorkQueue()
        queue.add("pool")
        queue.add("pool")
        queue.add("sandbox")
        first = await queue.get()
        queue.add(first)  # changed while being handled: handled again, afterwards
        second = await queue.get()
        assert len(queue) == 0
        queue.done(first)
        assert len(queue) == 1
        third = await queue.get()
        queue.done(second)
        queue.done(third)
        assert len(queue) == 0
        return [first, second, third]

    assert asyncio.run(go()) == ["pool", "sandbox", "pool"]


def test_a_resumed_session_whose_status_says_it_all_is_not_written_again() -> None:
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Accepted",
        "message": 'run by Agent "coder"',
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    spec = {"agentRef": {"name": "coder"}}
    session = Session.model_validate(
        {"spec": spec, "status": {"sessionId": "sesn_1", "conditions": [ready]}}
    )
    later = {**ready, "lastTransitionTime": "2026-01-02T00:00:00Z"}
    assert says_already(session, {"sessionId": "sesn_1", "conditions": [later]})
    assert not says_already(session, {"sessionId": "sesn_2", "conditions": [later]})
    assert not says_already(session, {"conditions": [{**later, "observedGeneration": 2}]})
    assert not says_already(session, {"conditions": [{**later, "type": "SandboxBound"}]})
    assert not says_already(Session.model_validate({"spec": spec}), {"sessionId": "sesn_1"})


def test_the_session_informer_keeps_what_is_read_of_a_session() -> None:
    session = {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": "Session",
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "3",
            "labels": {L.SESSION_ID: "sesn_1", "team": "a"},
            "annotations": {"big": "x" * 1000},
        },
        "spec": {"agentRef": {"name": "coder"}, "ttl": "1h", "initialEvents": [{"x": 1}]},
        "status": {
            "phase": "Idle",
            "usage": {"inputTokens": 5},
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Scheduled", "status": "True"},
            ],
        },
    }
    assert slim_session(session) == {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": "Session",
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "3",
            "labels": {L.SESSION_ID: "sesn_1"},
        },
        "spec": {"agentRef": {"name": "coder"}, "ttl": "1h"},
        "status": {"phase": "Idle", "conditions": [{"type": "Scheduled", "status": "True"}]},
    }
