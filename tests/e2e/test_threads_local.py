"""Threads end to end on one machine (issue 18's must-show): a coordinator applied with
kubectl calls two sub-agents at once, each thread runs its tools in a sandbox pod of its own
(claimed from the coordinator's Environment by the operator), the coordinator combines
their replies; the harness pod running a thread is deleted while the thread's tool call runs,
and nothing is lost or done twice. Real apiserver, operator, gateway, Redis and local pod
runner; only the model is scripted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse
from paddock.testing.stack import LocalStack

from .test_local import PADDOCK, _pods, _wait, _why_not

pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))

# alpha's command stops until the test lets it go (a file the test writes into its
# workspace), so its harness pod can be deleted while the call runs.
COMMANDS = {
    "alpha": "echo alpha > mine.txt; echo started >> started.txt; "
    "for i in $(seq 1200); do [ -f go ] && break; sleep 0.1; done; "
    "echo run >> runs.txt; echo alpha wrote $(cat mine.txt)",
    "beta": "echo beta > mine.txt; echo run >> runs.txt; echo beta wrote $(cat mine.txt)",
}


def script(request: ModelRequest) -> Reply:
    role = request.system_text
    if role == "coordinator":
        if request.assistant_turns == 0:
            return Reply(
                [
                    ToolUse("send_to_agent", {"agent": name, "message": f"do {name}"})
                    for name in COMMANDS
                ]
            )
        replies = sorted(
            json.loads(request.tool_result_text(i))["reply"]
            for i in range(len(request.tool_results))
        )
        return Reply([Text("combined: " + " | ".join(replies))])
    if request.assistant_turns == 0:
        return Reply([ToolUse("bash", {"command": COMMANDS[role]})])
    return Reply([Text(f"{role}: {request.tool_result_text().strip()}")])


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(bridge="paddock-e2e3", pod_cidr="10.247.0.0/16", script=script) as running:
        yield running


def _agent(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": PADDOCK,
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "model": "claude-sonnet-4-6",
            "system": name,
            "environmentRef": {"name": "python"},
            "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
            **spec,
        },
    }


def _workspace(stack: LocalStack, pod: str) -> Path:
    (found,) = (stack.dir / "runner" / "pods").glob(f"default_{pod}_*")
    return found / "volumes" / "workspace"


def test_a_coordinators_threads_run_at_once_each_in_its_own_sandbox_and_survive_a_dead_worker(
    stack: LocalStack,
) -> None:
    environment = {
        "apiVersion": PADDOCK,
        "kind": "Environment",
        "metadata": {"name": "python"},
        "spec": {"networking": {"mode": "limited"}, "warmPool": {"size": 2}},
    }
    roster = {"type": "coordinator", "agents": [{"name": "alpha"}, {"name": "beta"}]}
    stack.apply(
        environment, _agent("alpha"), _agent("beta"), _agent("coordinator", multiagent=roster)
    )
    session = {
        "apiVersion": PADDOCK,
        "kind": "Session",
        "metadata": {"name": "team"},
        "spec": {
            "agentRef": {"name": "coordinator"},
            "initialEvents": [
                {"type": "user.message", "content": [{"type": "text", "text": "ask both"}]}
            ],
        },
    }
    stack.apply(session)
    session_id = stack.session_id("team")

    def thread_pod(agent: str) -> dict[str, Any] | None:
        pods = _pods(
            stack, **{"paddock.dev/parent-session-id": session_id, "paddock.dev/agent": agent}
        )
        return pods[0] if len(pods) == 1 else None

    def alpha_started() -> Path | None:
        pod = thread_pod("alpha")
        if pod is None:
            return None
        workspace = _workspace(stack, pod["metadata"]["name"])
        return workspace if (workspace / "started.txt").exists() else None

    _wait(stack, "alpha's tool call running in its sandbox", alpha_started)
    alpha_workspace = alpha_started()
    assert alpha_workspace is not None
    # Kill the worker running alpha's thread: its harness pod goes (alpha has one replica,
    # so the Deployment's next pod takes the thread over once the lease runs out).
    (worker,) = _pods(stack, **{"paddock.dev/component": "harness", "paddock.dev/agent": "alpha"})
    stack.delete("v1", "Pod", "default", worker["metadata"]["name"])
    _wait(
        stack,
        "alpha's harness pod gone",
        lambda: (
            worker["metadata"]["name"]
            not in [p["metadata"]["name"] for p in _pods(stack, **{"paddock.dev/agent": "alpha"})]
        ),
    )
    (alpha_workspace / "go").write_text("")

    def finished() -> bool:
        status = stack.get(PADDOCK, "Session", "default", "team").get("status") or {}
        return status.get("phase") == "Idle" and status.get("stopReason") == "end_turn"

    _wait(stack, "the coordinator's end_turn", finished, timeout=180)

    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key)
    events = [e.to_dict() for e in client.beta.sessions.events.list(session_id)]
    final = [e for e in events if e["type"] == "agent.message"][-1]
    assert final["content"][0]["text"] == (
        "combined: alpha: alpha wrote alpha\n[exit code 0] | beta: beta wrote beta\n[exit code 0]"
    )
    for kind in ("session.thread_created", "agent.thread_message_received"):
        assert len([e for e in events if e["type"] == kind]) == 2, kind

    # Three sandboxes: the coordinator's own and one per thread, each thread's files in its own.
    own = stack.get(PADDOCK, "Session", "default", "team")["status"]["sandbox"]["podName"]
    found = {agent: thread_pod(agent) for agent in ("alpha", "beta")}
    pods = {agent: pod for agent, pod in found.items() if pod is not None}
    assert sorted(pods) == ["alpha", "beta"], found
    names = {agent: pod["metadata"]["name"] for agent, pod in pods.items()}
    assert len(set(names.values())) == 2, names
    assert own not in names.values(), (own, names)
    for agent, name in names.items():
        workspace = _workspace(stack, name)
        assert (workspace / "mine.txt").read_text() == f"{agent}\n"
        # The command ran once, though alpha's worker died during it.
        assert (workspace / "runs.txt").read_text() == "run\n"
        (owner,) = pods[agent]["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("Session", "team")
    assert not (_workspace(stack, own) / "mine.txt").exists()
    created = {
        e["agent_name"]: e["session_thread_id"]
        for e in events
        if e["type"] == "session.thread_created"
    }
    alpha_events = [
        e.to_dict()
        for e in client.beta.sessions.threads.events.list(created["alpha"], session_id=session_id)
    ]
    for kind in ("user.message", "agent.tool_use", "agent.tool_result"):
        assert len([e for e in alpha_events if e["type"] == kind]) == 1, kind

    # Deleting the coordinator's Session deletes every sandbox of the tree.
    stack.delete(PADDOCK, "Session", "default", "team")
    _wait(
        stack,
        "the tree's sandboxes gone",
        lambda: (
            not _pods(stack, **{"paddock.dev/parent-session-id": session_id})
            and not _pods(stack, **{"paddock.dev/session-id": session_id})
        ),
    )
