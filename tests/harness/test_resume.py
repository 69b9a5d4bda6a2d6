"""Resuming a session whose worker died: what was recorded stands, what was in flight is
handled without running a side effect twice."""

from __future__ import annotations

from paddock.eventlog import (
    AgentToolUseEvent,
    Evaluation,
    ModelUsage,
    SessionStatusRunningEvent,
    SpanModelRequestEndEvent,
    SpanModelRequestStartEvent,
    session_keys,
)
from paddock.testing.fakemodel import Reply, Text, ToolUse, turns
from paddock.testing.ports import wait_until_async

from .conftest import types


async def crashed_mid_tool_call(
    harness, tool: str, tool_input: dict, *, started_in: str | None
) -> str:
    """A session whose previous worker appended a tool call, maybe started it, and died."""
    session = await harness.start_session("do it", bind=False)
    lease = await harness.log.acquire_lease(session, "dead-worker", ttl_ms=300)
    assert lease is not None
    await harness.log.append(
        session,
        [
            SessionStatusRunningEvent(),
            SpanModelRequestStartEvent(),
            AgentToolUseEvent(
                name=tool,
                input=tool_input,
                evaluated_permission="allow",
                evaluation=Evaluation(type="always_allow"),
            ),
            SpanModelRequestEndEvent(
                model_request_start_id="x",
                model_usage=ModelUsage(
                    input_tokens=1,
                    output_tokens=1,
                    cache_creation_input_tokens=0,
                    cache_read_input_tokens=0,
                ),
            ),
        ],
        fence=lease,
    )
    events = await harness.events(session)
    call_id = events[-2]["id"]
    if started_in:
        await harness.state.mark_started(session, call_id, started_in)
    await harness.bind(session)  # a fresh sandbox: the old one died with the worker
    return session


async def lease_expired(harness, session: str) -> None:
    """Until the dead worker's lease (300 ms) has run out in Redis."""

    async def gone() -> bool:
        return await harness.redis.exists(session_keys("default", session).lease) == 0

    await wait_until_async(gone, timeout=5, what="the dead worker's lease to expire")


async def test_side_effecting_call_of_a_dead_sandbox_is_reported_not_rerun(
    make_harness, sandbox
) -> None:
    harness = make_harness(lambda r: Reply([Text("model saw: " + r.tool_result_text())]), workers=0)
    session = await crashed_mid_tool_call(
        harness, "bash", {"command": "touch twice.txt"}, started_in="old-pod"
    )
    await lease_expired(harness, session)
    harness.start_worker()
    events = await harness.wait_idle(session)
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert result["is_error"] is True
    assert "outcome is unknown" in result["content"][0]["text"]
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert "outcome is unknown" in events[-3]["content"][0]["text"]
    assert not (sandbox.workdir / "twice.txt").exists()


async def test_read_only_call_of_a_dead_sandbox_is_rerun(make_harness, sandbox) -> None:
    (sandbox.workdir / "notes.txt").write_text("remember me\n")
    harness = make_harness(lambda r: Reply([Text("read: " + r.tool_result_text())]), workers=0)
    session = await crashed_mid_tool_call(
        harness, "read", {"file_path": "notes.txt"}, started_in="old-pod"
    )
    await lease_expired(harness, session)
    harness.start_worker()
    events = await harness.wait_idle(session)
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert not result.get("is_error")
    assert "remember me" in result["content"][0]["text"]


async def test_call_that_never_started_runs_on_resume(make_harness, sandbox) -> None:
    harness = make_harness(lambda r: Reply([Text("done")]), workers=0)
    session = await crashed_mid_tool_call(
        harness, "bash", {"command": "echo once >> once.txt"}, started_in=None
    )
    await lease_expired(harness, session)
    harness.start_worker()
    events = await harness.wait_idle(session)
    assert types(events).count("agent.tool_result") == 1
    assert (sandbox.workdir / "once.txt").read_text() == "once\n"


async def test_a_call_outlives_the_lease_of_the_worker_that_started_it(
    make_harness, sandbox
) -> None:
    """A worker that stalls past its lease gives the session up, but leaves its tool call
    running: the next worker resumes that very call id in the same sandbox and takes its
    result, so the command runs once and to the end (cancelling it would lose it)."""
    marker = sandbox.workdir / f"lease-{id(sandbox)}.txt"
    started = marker.with_suffix(".started")
    marker.unlink(missing_ok=True)
    started.unlink(missing_ok=True)
    command = f"touch {started.name}; sleep 1.5; echo finished > {marker.name}"
    script = turns(
        Reply([ToolUse("bash", {"command": command})]),
        lambda r: Reply([Text("result: " + r.tool_result_text())]),
    )
    harness = make_harness(script, workers=0)
    harness.start_worker(lease_ttl_ms=900)
    session = await harness.start_session("go")
    await wait_until_async(started.exists, timeout=20, what="the call to run in the sandbox")
    # What a worker stalled past its TTL finds: someone else holds the lease.
    await harness.redis.set(session_keys("default", session).lease, "999999:thief", px=900)
    events = await harness.wait_idle(session, within=30)
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert result.get("is_error", False) is False, result
    assert marker.read_text() == "finished\n"
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
