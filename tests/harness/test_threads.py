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
    TextBlock,
    UserCustomToolResultEvent,
    UserInterruptEvent,
    UserToolConfirmationEvent,
    session_keys,
    session_of_thread,
)
from paddock.harness.threads import MAX_CONCURRENT_THREADS, parent_waits
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


def asking_script(request: ModelRequest) -> Reply:
    """The coordinator asks alpha once and reports its reply; alpha calls the tool its spec
    makes wait on the client (an always_ask `bash`, or the custom `lookup`), then says what
    it got."""
    if request.system_text == "coordinator":
        if request.assistant_turns == 0:
            return Reply([ToolUse("send_to_agent", {"agent": "alpha", "message": "go"})])
        return Reply([Text("alpha said: " + json.loads(request.tool_result_text())["reply"])])
    if request.assistant_turns == 0:
        if request.system_text == "asker":
            return Reply([ToolUse("bash", {"command": "echo approved"})])
        return Reply([ToolUse("lookup", {"q": "answer"})])
    return Reply([Text(request.tool_result_text().splitlines()[0])])


ASKER = {"system": "asker", "tools": {"builtin": {"permissionPolicy": "always_ask"}}}
LOOKUP = {"name": "lookup", "description": "Look it up", "inputSchema": {"type": "object"}}


async def waiting_on_client(harness: Any, session: str, count: int = 1) -> dict[str, Any]:
    """The coordinator's cross-post of alpha's request, once the coordinator idles
    `requires_action` on it (the ``count``-th idle)."""
    events = await harness.wait_idle(session, count=count, within=30)
    (cross,) = [e for e in events if e.get("session_thread_id") and e["type"].endswith("tool_use")]
    assert events[-1]["stop_reason"] == {"type": "requires_action", "event_ids": [cross["id"]]}
    return cross


async def test_a_thread_asking_a_confirmation_waits_on_the_coordinators_client(
    make_harness, own_sandboxes
) -> None:
    harness = make_harness(asking_script, system="coordinator", multiagent=ROSTER)
    harness.start_worker(agent="default/alpha", spec=agent_spec(**ASKER), worker_id="alpha")
    session = await harness.start_session("ask alpha")
    cross = await waiting_on_client(harness, session)
    # The cross-post is the thread's own request, named by the thread and its id there.
    thread = session_of_thread(cross["session_thread_id"])
    thread_events = await harness.events(thread)
    (use,) = [e for e in thread_events if e["type"] == "agent.tool_use"]
    assert cross["session_thread_event_id"] == use["id"]
    assert (cross["name"], cross["input"]) == ("bash", {"command": "echo approved"})
    assert thread_events[-1]["stop_reason"] == {"type": "requires_action", "event_ids": [use["id"]]}
    snapshot = await harness.log.snapshot(session)
    assert (snapshot.status, snapshot.stop_reason.type) == ("idle", "requires_action")
    parent = await harness.events(session)
    (thread_idle,) = [e for e in parent if e["type"] == "session.thread_status_idle"]
    assert thread_idle["stop_reason"]["type"] == "requires_action"

    # What the gateway does with the client's answer: the thread's log gets it.
    await harness.send(thread, UserToolConfirmationEvent(tool_use_id=use["id"], result="allow"))
    events = await harness.wait_idle(session, count=2, within=30)
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert events[-3]["content"][0]["text"] == "alpha said: approved"
    # The thread runs again, and so does its parent.
    after = types(events[events.index(parent[-1]) + 1 :])
    assert after[:2] == ["session.thread_status_running", "session.status_running"]
    # The coordinator's own model never saw the cross-post as a call of its own.
    assert len([e for e in events if e["type"] == "agent.tool_result"]) == 1


async def test_a_coordinator_worker_lost_while_its_thread_waits_posts_nothing_twice(
    make_harness, own_sandboxes
) -> None:
    harness = make_harness(asking_script, workers=0, system="coordinator", multiagent=ROSTER)
    for index in range(2):
        harness.start_worker(worker_id=f"coordinator-{index}", lease_ttl_ms=900)
    harness.start_worker(agent="default/alpha", spec=agent_spec(**ASKER), worker_id="alpha")
    session = await harness.start_session("ask alpha")
    cross = await waiting_on_client(harness, session)
    # What a worker stalled past its TTL finds: someone else holds the lease. The worker
    # that resumes the coordinator re-runs the call and idles again on the same request.
    await harness.redis.set(session_keys("default", session).lease, "999999:thief", px=900)
    again = await waiting_on_client(harness, session, count=2)
    assert again["id"] == cross["id"]  # the same cross-post, listed again
    thread = session_of_thread(cross["session_thread_id"])
    await harness.send(
        thread,
        UserToolConfirmationEvent(tool_use_id=cross["session_thread_event_id"], result="allow"),
    )
    events = await harness.wait_idle(session, count=3, within=30)
    assert events[-3]["content"][0]["text"] == "alpha said: approved"
    for kind in (
        "session.thread_created",
        "agent.thread_message_sent",
        "session.thread_status_idle",
    ):
        assert len([e for e in events if e["type"] == kind]) == (2 if kind.endswith("idle") else 1)
    thread_events = await harness.events(thread)
    assert len([e for e in thread_events if e["type"] == "agent.tool_result"]) == 1


async def test_a_thread_custom_tool_is_answered_through_the_coordinator(make_harness) -> None:
    harness = make_harness(asking_script, system="coordinator", multiagent=ROSTER)
    spec = agent_spec(system="looker", tools={"custom": [LOOKUP]})
    harness.start_worker(agent="default/alpha", spec=spec, worker_id="alpha")
    session = await harness.start_session("ask alpha")
    cross = await waiting_on_client(harness, session)
    assert (cross["type"], cross["name"]) == ("agent.custom_tool_use", "lookup")
    await harness.send(
        session_of_thread(cross["session_thread_id"]),
        UserCustomToolResultEvent(
            custom_tool_use_id=cross["session_thread_event_id"], content=[TextBlock(text="42")]
        ),
    )
    events = await harness.wait_idle(session, count=2, within=30)
    assert events[-3]["content"][0]["text"] == "alpha said: 42"


async def test_delegation_calls_beyond_the_thread_cap_get_an_error_result(make_harness) -> None:
    calls = MAX_CONCURRENT_THREADS + 1

    def reply(request: ModelRequest) -> Reply:
        if request.system_text == "coordinator":
            if request.assistant_turns == 0:
                return Reply(
                    [
                        ToolUse("send_to_agent", {"agent": "alpha", "message": f"n{i}"})
                        for i in range(calls)
                    ]
                )
            return Reply([Text("done")])
        return Reply([Text("ok")])

    harness = make_harness(reply, system="coordinator", multiagent=ROSTER)
    start_callees(harness)
    session = await harness.start_session("ask many")
    events = await harness.wait_idle(session, within=90)
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert len([e for e in events if e["type"] == "session.thread_created"]) == calls - 1
    results = [e for e in events if e["type"] == "agent.tool_result"]
    refused = [r for r in results if r.get("is_error")]
    assert len(results) == calls
    assert len(refused) == 1
    assert "Too many threads at once" in refused[0]["content"][0]["text"]
    assert len(await harness.state.threads(session)) == calls - 1


def test_the_coordinator_runs_while_any_thread_runs_and_waits_when_all_wait() -> None:
    assert parent_waits({}) is None
    assert parent_waits({"call-a": [], "call-b": ["sevt_1"]}) is None
    assert parent_waits({"call-a": ["sevt_1"]}) == ["sevt_1"]
    assert parent_waits({"call-a": ["sevt_1", "sevt_2"], "call-b": ["sevt_3"]}) == [
        "sevt_1",
        "sevt_2",
        "sevt_3",
    ]


async def test_an_interrupt_of_a_coordinator_whose_thread_waits_on_the_client_ends_both(
    make_harness, own_sandboxes
) -> None:
    harness = make_harness(asking_script, system="coordinator", multiagent=ROSTER)
    harness.start_worker(agent="default/alpha", spec=agent_spec(**ASKER), worker_id="alpha")
    session = await harness.start_session("ask alpha")
    cross = await waiting_on_client(harness, session)
    await harness.send(session, UserInterruptEvent())
    events = await harness.wait_idle(session, count=2, within=30)
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    thread = session_of_thread(cross["session_thread_id"])
    thread_events = await harness.wait_idle(thread, count=2, within=30)
    assert thread_events[-1]["stop_reason"] == {"type": "end_turn"}
    (result,) = [e for e in thread_events if e["type"] == "agent.tool_result"]
    assert result["is_error"]
    assert "Interrupted" in result["content"][0]["text"]
    assert "agent.thread_message_received" not in types(events)  # the command never ran
