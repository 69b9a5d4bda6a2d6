"""A harness worker drives sessions against the real log, sandbox and SDK."""

from __future__ import annotations

import os
import threading
import time

from prometheus_client import REGISTRY

from paddock.eventlog import (
    SandboxBinding,
    TextBlock,
    UserCustomToolResultEvent,
    UserInterruptEvent,
    UserMessageEvent,
    UserToolConfirmationEvent,
    WorkQueue,
    sandbox_requests,
)
from paddock.harness.modelstep import ModelStep
from paddock.testing.fakemodel import Fail, ModelRequest, Reply, Text, ToolUse, turns
from paddock.testing.ports import wait_until_async

from .conftest import AGENT, types


async def test_multi_turn_tool_session_reaches_end_turn(make_harness, sandbox) -> None:
    script = turns(
        Reply(
            [
                Text("I'll write it."),
                ToolUse("write", {"file_path": "hello.txt", "content": "hi there\n"}),
            ]
        ),
        Reply([ToolUse("bash", {"command": "wc -c hello.txt"})]),
        lambda r: Reply([Text(f"wc says: {r.tool_result_text().strip()}")]),
    )
    harness = make_harness(script)
    session = await harness.start_session("write a file and count it")
    events = await harness.wait_idle(session)
    assert types(events) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "agent.tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "span.model_request_start",
        "agent.tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    idle = events[-1]
    assert idle["stop_reason"] == {"type": "end_turn"}
    write, bash = [e for e in events if e["type"] == "agent.tool_use"]
    results = [e for e in events if e["type"] == "agent.tool_result"]
    assert [r["tool_use_id"] for r in results] == [write["id"], bash["id"]]
    assert write["evaluated_permission"] == "allow"
    assert (sandbox.workdir / "hello.txt").read_text() == "hi there\n"
    assert events[-2]["type"] == "span.model_request_end"
    assert "9 hello.txt" in events[-3]["content"][0]["text"]
    # The model saw each result paired with its call, under the call's event id.
    last_request = harness.model.requests[-1]
    assert last_request.messages[-1]["content"][0]["tool_use_id"] == bash["id"]
    snapshot = await harness.log.snapshot(session)
    assert snapshot.status == "idle"


async def test_first_model_call_does_not_wait_for_a_sandbox(make_harness) -> None:
    harness = make_harness(turns(Reply([Text("Hello!")])))
    began = time.monotonic()
    session = await harness.start_session("hi", bind=False)
    events = await harness.wait_idle(session)
    assert time.monotonic() - began < 5
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert [e["content"][0]["text"] for e in events if e["type"] == "agent.message"] == ["Hello!"]


async def test_a_session_whose_worker_died_is_taken_over_and_the_delay_measured(
    make_harness,
) -> None:
    harness = make_harness(turns(Reply([Text("Taken over.")])), workers=0)
    session = await harness.start_session("hi")
    # A worker claims the session and dies at once: no heartbeat, no hand back.
    dead = await WorkQueue(harness.log, AGENT, lease_ttl_ms=500).claim("dead-worker")
    assert dead is not None
    assert dead.session_id == session
    count = REGISTRY.get_sample_value("paddock_harness_takeover_seconds_count") or 0
    total = REGISTRY.get_sample_value("paddock_harness_takeover_seconds_sum") or 0
    harness.start_worker(lease_ttl_ms=500)
    events = await harness.wait_idle(session)
    assert [e["content"][0]["text"] for e in events if e["type"] == "agent.message"] == [
        "Taken over."
    ]
    assert REGISTRY.get_sample_value("paddock_harness_takeover_seconds_count") == count + 1
    delay = REGISTRY.get_sample_value("paddock_harness_takeover_seconds_sum") - total
    assert 0.5 <= delay < 10  # at least the lease TTL: the dead worker's last sign of life


async def test_always_ask_waits_for_confirmation_then_runs_on_allow(make_harness, sandbox) -> None:
    script = turns(
        Reply([ToolUse("write", {"file_path": "asked.txt", "content": "x"})]),
        lambda r: Reply([Text("result: " + r.tool_result_text())]),
    )
    harness = make_harness(script, tools={"builtin": {"permissionPolicy": "always_ask"}})
    session = await harness.start_session("write")
    events = await harness.wait_idle(session)
    (use,) = [e for e in events if e["type"] == "agent.tool_use"]
    assert use["evaluated_permission"] == "ask"
    assert use["evaluation"] == {"type": "always_ask"}
    assert events[-1]["stop_reason"] == {"type": "requires_action", "event_ids": [use["id"]]}
    assert not (sandbox.workdir / "asked.txt").exists()

    await harness.send(session, UserToolConfirmationEvent(tool_use_id=use["id"], result="allow"))
    events = await harness.wait_idle(session, count=2)
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert (sandbox.workdir / "asked.txt").read_text() == "x"
    assert (
        types(events)[types(events).index("user.tool_confirmation") + 1] == "session.status_running"
    )


async def test_always_ask_deny_tells_the_model_why(make_harness, sandbox) -> None:
    script = turns(
        Reply([ToolUse("bash", {"command": "touch denied.txt"})]),
        lambda r: Reply([Text("model saw: " + r.tool_result_text())]),
    )
    harness = make_harness(script, tools={"builtin": {"permissionPolicy": "always_ask"}})
    session = await harness.start_session("touch")
    events = await harness.wait_idle(session)
    (use,) = [e for e in events if e["type"] == "agent.tool_use"]
    await harness.send(
        session,
        UserToolConfirmationEvent(
            tool_use_id=use["id"], result="deny", deny_message="not on my machine"
        ),
    )
    events = await harness.wait_idle(session, count=2)
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert result["is_error"] is True
    assert "not on my machine" in result["content"][0]["text"]
    assert "not on my machine" in events[-3]["content"][0]["text"]
    assert not (sandbox.workdir / "denied.txt").exists()


async def test_custom_tool_round_trip(make_harness) -> None:
    script = turns(
        Reply([ToolUse("lookup_order", {"order": 42})]),
        lambda r: Reply([Text("the order is " + r.tool_result_text())]),
    )
    custom = {
        "name": "lookup_order",
        "description": "Find an order",
        "inputSchema": {"type": "object", "properties": {"order": {"type": "integer"}}},
    }
    harness = make_harness(script, tools={"custom": [custom]})
    session = await harness.start_session("where is my order?")
    events = await harness.wait_idle(session)
    (use,) = [e for e in events if e["type"] == "agent.custom_tool_use"]
    assert (use["name"], use["input"]) == ("lookup_order", {"order": 42})
    assert events[-1]["stop_reason"] == {"type": "requires_action", "event_ids": [use["id"]]}
    tools = harness.model.requests[0].body["tools"]
    assert any(t["name"] == "lookup_order" for t in tools)

    await harness.send(
        session,
        UserCustomToolResultEvent(
            custom_tool_use_id=use["id"], content=[TextBlock(text="shipped")]
        ),
    )
    events = await harness.wait_idle(session, count=2)
    assert events[-3]["content"][0]["text"] == "the order is shipped"
    assert events[-1]["stop_reason"] == {"type": "end_turn"}


async def test_interrupt_stops_a_long_bash_call_promptly(make_harness, sandbox) -> None:
    # The command's process group (bash and its `sleep`), as the command itself sees it.
    pgid_file = sandbox.workdir / f"interrupted-{id(make_harness)}.pgid"
    script = turns(
        Reply(
            [
                ToolUse(
                    "bash",
                    {
                        "command": f"cut -d' ' -f5 /proc/$$/stat > {pgid_file.name}; sleep 60; touch finished.txt"
                    },
                )
            ]
        )
    )
    harness = make_harness(script)
    session = await harness.start_session("wait a minute")
    pgid = await wait_until_async(
        lambda: pgid_file.exists() and int(pgid_file.read_text()),
        timeout=20,
        what="the command to start in the sandbox",
    )
    os.killpg(pgid, 0)  # the group is alive before the interrupt
    began = time.monotonic()
    await harness.send(session, UserInterruptEvent())
    events = await harness.wait_idle(session, within=10)
    assert time.monotonic() - began < 5
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert result["is_error"] is True
    assert "Interrupted" in result["content"][0]["text"]
    await wait_until_async(
        lambda: not group_alive(pgid), timeout=5, what=f"process group {pgid} to be gone"
    )
    assert not (sandbox.workdir / "finished.txt").exists()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_message_sent_during_a_tool_call_reaches_the_next_model_request(
    make_harness, sandbox
) -> None:
    # The worker folds its own appends without reading them back when nothing landed in
    # between: a user event that did land in between must still be folded.
    started, go = f"started-{id(make_harness)}", f"go-{id(make_harness)}"
    script = turns(
        Reply(
            [
                ToolUse(
                    "bash", {"command": f"touch {started}; until [ -e {go} ]; do sleep 0.02; done"}
                )
            ]
        ),
        Reply([Text("Done, and noted.")]),
    )
    harness = make_harness(script)
    session = await harness.start_session("run it")
    await wait_until_async(
        lambda: (sandbox.workdir / started).exists(), timeout=20, what="the command to start"
    )
    await harness.send(session, UserMessageEvent(content=[TextBlock(text="also say hi")]))
    (sandbox.workdir / go).touch()
    await harness.wait_idle(session)
    assert "also say hi" in str(harness.model.requests[-1].messages)


async def test_a_message_sent_while_the_model_answers_is_answered_after_it(make_harness) -> None:
    """Sent while the model streams its last answer, the message lands before the turn's
    idle: it is answered by a request of its own, after that answer, never dropped."""
    asked, go = threading.Event(), threading.Event()

    def script(request: ModelRequest) -> Reply:
        if request.assistant_turns == 0:
            asked.set()
            go.wait(30)  # the scripted model is still answering while the user writes
            return Reply([Text("hello")])
        return Reply([Text(f"you also said: {request.messages[-1]['content'][-1]['text']}")])

    harness = make_harness(script)
    session = await harness.start_session("hi")
    await wait_until_async(asked.is_set, timeout=20, what="the model to be asked")
    await harness.send(session, UserMessageEvent(content=[TextBlock(text="also this")]))
    go.set()
    events = await harness.wait_idle(session, count=2, within=30)
    replies = [e["content"][0]["text"] for e in events if e["type"] == "agent.message"]
    assert replies == ["hello", "you also said: also this"]
    assert [m["role"] for m in harness.model.requests[-1].messages] == ["user", "assistant", "user"]


async def test_budget_stops_the_session(make_harness) -> None:
    script = turns(*[Reply([ToolUse("bash", {"command": "true"})], output_tokens=500)] * 10)
    harness = make_harness(script)
    session = await harness.start_session("loop", budget={"maxTokens": 1000})
    events = await harness.wait_idle(session)
    assert events[-1]["stop_reason"] == {"type": "budget_reached"}
    assert events[-2]["type"] == "session.usage"
    # 500 output tokens a request: the second request crosses 1000, the third never happens.
    assert len(harness.model.requests) == 2
    assert events[-2]["usage"]["output_tokens"] == 1000


async def test_529_then_success_retries(make_harness) -> None:
    calls: list[ModelRequest] = []

    def script(request: ModelRequest):
        calls.append(request)
        return Fail(529, retry_after=0.05) if len(calls) == 1 else Reply([Text("made it")])

    harness = make_harness(script)
    session = await harness.start_session("hi")
    events = await harness.wait_idle(session)
    (error,) = [e for e in events if e["type"] == "session.error"]
    assert error["error"]["type"] == "model_overloaded_error"
    assert error["error"]["retry_status"] == {"type": "retrying"}
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert len(calls) == 2


async def test_529_forever_exhausts_retries(make_harness) -> None:
    harness = make_harness(lambda r: Fail(529, retry_after=0.01))
    session = await harness.start_session("hi")
    events = await harness.wait_idle(session)
    errors = [e["error"] for e in events if e["type"] == "session.error"]
    assert [e["retry_status"]["type"] for e in errors] == ["retrying", "retrying", "exhausted"]
    assert events[-1]["stop_reason"] == {"type": "retries_exhausted"}
    assert events[-2]["type"] == "span.model_request_end"
    assert events[-2]["is_error"] is True


async def test_max_turns_limit(make_harness) -> None:
    harness = make_harness(
        lambda r: Reply([ToolUse("read", {"file_path": "nothing"})]), limits={"maxTurns": 3}
    )
    session = await harness.start_session("loop forever")
    events = await harness.wait_idle(session)
    assert types(events).count("span.model_request_start") == 3
    assert events[-2]["error"]["type"] == "tool_use_limit_reached_error"
    assert events[-1]["stop_reason"] == {"type": "retries_exhausted"}


async def test_dead_sandbox_becomes_an_error_result_and_a_replacement_request(make_harness) -> None:
    script = turns(
        Reply([ToolUse("bash", {"command": "echo hi"})]),
        lambda r: Reply([Text("saw: " + r.tool_result_text())]),
    )
    harness = make_harness(script)
    session = await harness.start_session("hi", bind=False)

    await harness.state.bind_sandbox(
        session, SandboxBinding(url="http://127.0.0.1:9", token="t", pod="dead-pod")
    )
    events = await harness.wait_idle(session)
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert result["is_error"] is True
    assert "fresh sandbox" in result["content"][0]["text"]
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert await harness.state.sandbox(session) is None
    requests = await harness.redis.xrange(sandbox_requests("default"))
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in requests]
    assert {"session": session, "reason": "dead", "pod": "dead-pod"} in fields


async def test_one_dead_sandbox_is_one_replacement_request(make_harness) -> None:
    """The model calls a tool again after the failure: that call waits for the replacement
    already asked for instead of asking a second time (the operator would get `dead` and
    `needed` for one failure)."""
    script = turns(
        Reply([ToolUse("bash", {"command": "echo first"})]),
        Reply([ToolUse("bash", {"command": "echo second"})]),
        lambda r: Reply([Text("saw: " + r.tool_result_text())]),
    )
    harness = make_harness(script)
    session = await harness.start_session("hi", bind=False)
    await harness.state.bind_sandbox(
        session, SandboxBinding(url="http://127.0.0.1:9", token="t", pod="dead-pod")
    )

    async def requests() -> list[dict[str, str]]:
        entries = await harness.redis.xrange(sandbox_requests("default"))
        fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
        return [f for f in fields if f["session"] == session]

    await wait_until_async(requests, timeout=20, what="the replacement request")
    await harness.bind(session)  # the operator's replacement
    events = await harness.wait_idle(session)
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert [e for e in events if e["type"] == "agent.message"][-1]["content"][0]["text"].startswith(
        "saw: second"
    )
    assert await requests() == [{"session": session, "reason": "dead", "pod": "dead-pod"}]


async def test_compaction_replaces_long_history_with_a_summary(make_harness) -> None:
    def script(request: ModelRequest):
        if "Write a summary" in request.last_user_text:
            return Reply([Text("SUMMARY: user asked three things")])
        return Reply([Text("ok " * 50)])

    harness = make_harness(script)
    harness.workers[0][1].set()
    harness.start_worker(context_window_tokens=400)
    session = await harness.start_session("first " * 100)
    await harness.wait_idle(session)
    for n in range(2):
        await harness.send(session, UserMessageEvent(content=[TextBlock(text=f"more {n} " * 100)]))
        events = await harness.wait_idle(session, count=n + 2)
    assert "agent.thread_context_compacted" in types(events)
    after = harness.model.requests[-1]
    assert "SUMMARY: user asked three things" in after.messages[0]["content"][0]["text"]


async def test_a_failure_the_turn_loop_does_not_handle_is_reported_and_retried_boundedly(
    make_harness, monkeypatch
) -> None:
    """Whatever fails inside a run (here a harness bug, injected), the session is not handed
    back and re-claimed in a hot loop: each failure is a `session.error`, retried after a
    backoff wait, and once the retries are exhausted the turn ends with `retries_exhausted`;
    the next message is served as usual."""
    calls: list[float] = []
    original = ModelStep.run

    async def broken(self: ModelStep) -> None:
        calls.append(time.monotonic())
        raise RuntimeError("a bug")

    monkeypatch.setattr(ModelStep, "run", broken)
    harness = make_harness(turns(Reply([Text("Fine now.")])))
    session = await harness.start_session("hello")
    events = await harness.wait_idle(session, within=10)
    errors = [e["error"] for e in events if e["type"] == "session.error"]
    # The conftest's policy: three attempts.
    assert [e["retry_status"]["type"] for e in errors] == ["retrying", "retrying", "exhausted"]
    assert {e["type"] for e in errors} == {"unknown_error"}
    assert "RuntimeError('a bug')" in errors[0]["message"]
    assert events[-1]["stop_reason"] == {"type": "retries_exhausted"}
    assert len(calls) == 3

    monkeypatch.setattr(ModelStep, "run", original)
    await harness.send(session, UserMessageEvent(content=[TextBlock(text="again")]))
    events = await harness.wait_idle(session, count=2)
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert len(calls) == 3
