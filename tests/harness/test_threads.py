"""Multi-agent threads: a coordinator delegates to the Agents it names, each thread run by
its callee's harness workers in a sandbox of its own, results back in the coordinator's
session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from paddock.eventlog import (
    SandboxBinding,
    SandboxRequestReader,
    SessionState,
    UserInterruptEvent,
    session_keys,
    session_of_thread,
)
from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse
from paddock.testing.ports import wait_until_async
from paddock.testing.sandbox import RunningSandbox, launch

from .conftest import agent_spec, types

ROSTER = {"type": "coordinator", "agents": [{"name": "alpha"}, {"name": "beta"}]}


@pytest.fixture
async def own_sandboxes(redis: Redis, tmp_path: Path) -> AsyncIterator[dict[str, RunningSandbox]]:
    """The operator's part of the sandbox protocol, played for every session that asks (the
    threads; the coordinator's session is bound by `start_session`): a real sandbox server
    of its own each, by session id."""
    reader = SandboxRequestReader(redis, "test-operator")
    state = SessionState(redis, "default")
    bound: dict[str, RunningSandbox] = {}
    # Started before the workers, as a warm pool is: a server starting while the workers
    # run took more than its 20 s on a loaded machine.
    warm = [await asyncio.to_thread(launch, tmp_path / f"sandbox-{number}") for number in range(2)]

    async def serve() -> None:
        while True:
            for tenant, entry_id, request in await reader.read({"default"}, block_ms=200):
                if request.session_id not in bound:
                    sandbox = (
                        warm.pop()
                        if warm
                        else await asyncio.to_thread(launch, tmp_path / f"sandbox-{len(bound) + 2}")
                    )
                    bound[request.session_id] = sandbox
                    binding = SandboxBinding(
                        url=sandbox.url, token=sandbox.token, pod=f"pod-{len(bound)}"
                    )
                    await state.bind_sandbox(request.session_id, binding)
                await reader.done(tenant, entry_id)

    task = asyncio.create_task(serve())
    yield bound
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for sandbox in [*bound.values(), *warm]:
        sandbox.stop()


def script(token: str, rendezvous: Path) -> Any:
    """Coordinator: one turn with two `send_to_agent` calls, then a summary of both replies.
    Each thread writes a file into its own workdir; alpha's command waits (bounded) for a
    file beta's leaves in ``rendezvous`` (a host directory, outside every sandbox's
    workdir), so it only succeeds when both threads run at once."""
    meet = rendezvous / f"beta-{token}"
    commands = {
        "alpha": f"for i in $(seq 100); do [ -f {meet} ] && break; sleep 0.1; done; "
        f"echo alpha saw $(cat {meet}); echo run >> alpha-runs-{token}; "
        f"echo alpha > mine-{token}",
        "beta": f"echo b$((40+2)) > {meet}; echo beta wrote $(cat {meet}); "
        f"echo beta > mine-{token}",
    }

    def reply(request: ModelRequest) -> Reply:
        role = request.system_text
        if role == "coordinator":
            if request.assistant_turns == 0:
                return Reply(
                    [
                        ToolUse("send_to_agent", {"agent": name, "message": f"do {name}"})
                        for name in commands
                    ]
                )
            replies = sorted(
                json.loads(request.tool_result_text(i))["reply"]
                for i in range(len(request.tool_results))
            )
            return Reply([Text("combined: " + " | ".join(replies))])
        if request.assistant_turns == 0:
            return Reply([ToolUse("bash", {"command": commands[role]})])
        return Reply([Text(f"{role}: {request.tool_result_text().strip()}")])

    return reply


def start_callees(harness: Any, workers_per_agent: int = 1, **overrides: Any) -> None:
    for name in ("alpha", "beta"):
        for _ in range(workers_per_agent):
            harness.start_worker(
                agent=f"default/{name}",
                spec=agent_spec(system=name),
                worker_id=f"{name}-{len(harness.workers)}",
                **overrides,
            )


def check_combined(events: list[dict[str, Any]]) -> None:
    final = events[-3]
    assert final["type"] == "agent.message", types(events)
    assert final["content"][0]["text"] == (
        "combined: alpha: alpha saw b42\n[exit code 0] | beta: beta wrote b42\n[exit code 0]"
    )


async def test_coordinator_runs_two_threads_in_parallel_each_in_its_own_sandbox(
    make_harness, sandbox, own_sandboxes, tmp_path
) -> None:
    token = secrets.token_hex(4)
    harness = make_harness(script(token, tmp_path), system="coordinator", multiagent=ROSTER)
    start_callees(harness)
    session = await harness.start_session("ask both")
    events = await harness.wait_idle(session, within=40)
    check_combined(events)
    created = [e for e in events if e["type"] == "session.thread_created"]
    assert sorted(e["agent_name"] for e in created) == ["alpha", "beta"]
    received = [e for e in events if e["type"] == "agent.thread_message_received"]
    assert {e["from_session_thread_id"] for e in received} == {
        e["session_thread_id"] for e in created
    }
    idles = [e for e in events if e["type"] == "session.thread_status_idle"]
    assert [e["stop_reason"] for e in idles] == [{"type": "end_turn"}] * 2
    # Each thread is a fenced log of its own, run by its callee's worker, tools in a sandbox
    # of its own: neither the coordinator's nor the other thread's.
    workdirs = set()
    for thread in created:
        thread_session = session_of_thread(thread["session_thread_id"])
        thread_events = await harness.events(thread_session)
        assert "agent.tool_result" in types(thread_events)
        assert thread_events[-1]["type"] == "session.status_idle"
        own = own_sandboxes[thread_session]
        assert (own.workdir / f"mine-{token}").read_text() == f"{thread['agent_name']}\n"
        workdirs.add(own.workdir)
    assert sorted(own_sandboxes) == sorted(
        session_of_thread(e["session_thread_id"]) for e in created
    )
    assert len(workdirs) == 2
    assert sandbox.workdir not in workdirs
    assert not (sandbox.workdir / f"mine-{token}").exists()
    threads = await harness.state.threads(session)
    assert sorted(threads) == sorted(e["session_thread_id"] for e in created)
    # Each thread's tokens are its own and count into the coordinator's session.
    for thread in created:
        own = (await harness.log.snapshot(session_of_thread(thread["session_thread_id"]))).usage
        (got,) = [r for r in received if r["from_session_thread_id"] == thread["session_thread_id"]]
        assert got["usage"]["output_tokens"] == own.output_tokens > 0
    spans = [e for e in events if e["type"] == "span.model_request_end"]
    tree = sum(e["model_usage"]["output_tokens"] for e in spans) + sum(
        r["usage"]["output_tokens"] for r in received
    )
    assert (await harness.log.snapshot(session)).usage.output_tokens == tree


async def test_a_thread_worker_that_loses_its_lease_mid_thread_loses_and_duplicates_nothing(
    make_harness, own_sandboxes, tmp_path
) -> None:
    """alpha's worker stalls past its lease while its tool call runs: the second alpha
    worker resumes the thread in the thread's own sandbox, the command runs once, the
    coordinator gets one reply."""
    token = secrets.token_hex(4)
    harness = make_harness(script(token, tmp_path), system="coordinator", multiagent=ROSTER)
    marker = tmp_path / f"beta-{token}"
    start_callees(harness, workers_per_agent=2, lease_ttl_ms=900)
    # beta's thread is held back (no beta file yet) so alpha's call is running when its
    # lease is stolen: take beta's workers away until then.
    for worker, stop, _ in harness.workers:
        if worker.settings.agent == "default/beta":
            stop.set()
    session = await harness.start_session("ask both")

    async def alpha_thread() -> str | None:
        found = await harness.state.threads(session)
        names = {json.loads(r)["agent_name"]: t for t, r in found.items()}
        return names.get("alpha")

    alpha = await wait_until_async(alpha_thread, timeout=20, what="alpha's thread")
    alpha_session = session_of_thread(alpha)

    async def running_tool() -> bool:
        return "agent.tool_use" in types(await harness.events(alpha_session))

    await wait_until_async(running_tool, timeout=20, what="alpha's tool call")
    # What a worker stalled past its TTL finds: someone else holds the lease.
    await harness.redis.set(session_keys("default", alpha_session).lease, "999999:thief", px=900)
    assert not marker.exists()
    harness.start_worker(agent="default/beta", spec=agent_spec(system="beta"), worker_id="late")
    events = await harness.wait_idle(session, within=60)
    check_combined(events)
    alpha_sandbox = own_sandboxes[alpha_session]
    assert (alpha_sandbox.workdir / f"alpha-runs-{token}").read_text() == "run\n"
    client = alpha_sandbox.client()
    try:
        assert (await client.stats()).executions == {"bash": 1}
    finally:
        await client.aclose()
    for kind in ("session.thread_created", "agent.thread_message_received", "agent.tool_result"):
        assert len([e for e in events if e["type"] == kind]) == 2, (kind, types(events))
    alpha_events = await harness.events(alpha_session)
    assert len([e for e in alpha_events if e["type"] == "agent.tool_result"]) == 1
    assert len([e for e in alpha_events if e["type"] == "user.message"]) == 1


async def test_an_interrupt_of_the_coordinator_reaches_its_threads(
    make_harness, own_sandboxes
) -> None:
    def reply(request: ModelRequest) -> Reply:
        if request.system_text == "coordinator":
            if request.assistant_turns == 0:
                return Reply([ToolUse("send_to_agent", {"agent": "alpha", "message": "wait"})])
            return Reply([Text("stopped")])
        if request.assistant_turns == 0:
            return Reply([ToolUse("bash", {"command": "sleep 60"})])
        return Reply([Text("slept")])

    harness = make_harness(reply, system="coordinator", multiagent=ROSTER)
    start_callees(harness)
    session = await harness.start_session("ask alpha")

    async def alpha_running() -> str | None:
        for sthr in await harness.state.threads(session):
            thread = session_of_thread(sthr)
            if "agent.tool_use" in types(await harness.events(thread)):
                return thread
        return None

    thread = await wait_until_async(alpha_running, timeout=20, what="alpha's tool call")
    await harness.send(session, UserInterruptEvent())
    events = await harness.wait_idle(session, within=30)
    assert "agent.thread_message_received" not in types(events)
    thread_events = await harness.wait_idle(thread, within=30)
    assert "user.interrupt" in types(thread_events)
    assert thread_events[-1]["stop_reason"] == {"type": "end_turn"}
