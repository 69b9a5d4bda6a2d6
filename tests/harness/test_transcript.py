"""Rebuilding the conversation from the log, and choosing the next step: pure logic."""

from __future__ import annotations

import itertools
from typing import Any

from paddock.harness import (
    COMPACTION_PREFIX,
    AwaitUser,
    CallModel,
    EndInterrupted,
    Evaluate,
    Idle,
    RunTools,
    rebuild,
)

_ids = itertools.count(1)


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"sevt_{next(_ids):04d}", "type": kind, "processed_at": None, **fields}


def user(text: str) -> dict[str, Any]:
    return ev("user.message", content=[{"type": "text", "text": text}])


def idle(reason: str, **extra: Any) -> dict[str, Any]:
    return ev("session.status_idle", stop_reason={"type": reason, **extra})


def test_new_session_waits_and_a_message_calls_the_model() -> None:
    assert isinstance(rebuild([]).next_step(), Idle)
    t = rebuild([user("hi")])
    assert isinstance(t.next_step(), CallModel)
    assert t.messages == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_tool_round_trip_pairs_results_with_calls_by_event_id() -> None:
    call = ev("agent.tool_use", name="bash", input={"command": "ls"}, evaluated_permission="allow")
    events = [
        user("list"),
        ev("session.status_running"),
        ev("span.model_request_start"),
        ev("agent.message", content=[{"type": "text", "text": "Looking."}]),
        call,
        ev("span.model_request_end", model_usage={"input_tokens": 10, "output_tokens": 5}),
    ]
    t = rebuild(events)
    step = t.next_step()
    assert isinstance(step, RunTools)
    assert [c.id for c in step.run] == [call["id"]]
    assert t.messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": call["id"], "name": "bash", "input": {"command": "ls"}},
        ],
    }
    t = rebuild(
        [
            *events,
            ev(
                "agent.tool_result",
                tool_use_id=call["id"],
                content=[{"type": "text", "text": "a.txt"}],
            ),
        ]
    )
    assert isinstance(t.next_step(), CallModel)
    assert t.messages[-1] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": call["id"],
                "content": [{"type": "text", "text": "a.txt"}],
            }
        ],
    }
    assert t.usage == {"input_tokens": 10, "output_tokens": 5}


def test_end_turn_idles_until_the_next_message() -> None:
    events = [
        user("hi"),
        ev("span.model_request_start"),
        ev("agent.message", content=[{"type": "text", "text": "hello"}]),
        idle("end_turn"),
    ]
    assert isinstance(rebuild(events).next_step(), Idle)
    t = rebuild([*events, user("again")])
    assert isinstance(t.next_step(), CallModel)
    assert [m["role"] for m in t.messages] == ["user", "assistant", "user"]


def test_always_ask_waits_then_runs_on_allow_or_records_denial() -> None:
    call = ev("agent.tool_use", name="write", input={}, evaluated_permission="ask")
    events = [user("go"), call, idle("requires_action", event_ids=[call["id"]])]
    step = rebuild(events).next_step()
    assert step == AwaitUser([call["id"]])
    allowed = rebuild(
        [*events, ev("user.tool_confirmation", tool_use_id=call["id"], result="allow")]
    )
    assert [c.id for c in allowed.next_step().run] == [call["id"]]
    denied = rebuild(
        [
            *events,
            ev(
                "user.tool_confirmation",
                tool_use_id=call["id"],
                result="deny",
                deny_message="not there",
            ),
        ]
    ).next_step()
    assert isinstance(denied, RunTools)
    assert denied.run == []
    assert denied.denied[0].deny_message == "not there"


def test_confirmation_for_an_unknown_call_is_ignored() -> None:
    call = ev("agent.tool_use", name="write", input={}, evaluated_permission="ask")
    t = rebuild(
        [user("go"), call, ev("user.tool_confirmation", tool_use_id="sevt_nope", result="allow")]
    )
    assert t.next_step() == AwaitUser([call["id"]])


def test_custom_tool_waits_for_its_result() -> None:
    call = ev("agent.custom_tool_use", name="lookup", input={"q": 1})
    events = [user("go"), call, idle("requires_action", event_ids=[call["id"]])]
    assert rebuild(events).next_step() == AwaitUser([call["id"]])
    t = rebuild(
        [
            *events,
            ev(
                "user.custom_tool_result",
                custom_tool_use_id=call["id"],
                content=[{"type": "text", "text": "42"}],
            ),
        ]
    )
    assert isinstance(t.next_step(), CallModel)


def test_interrupt_ends_the_turn_and_closes_open_calls() -> None:
    call = ev(
        "agent.tool_use", name="bash", input={"command": "sleep 100"}, evaluated_permission="allow"
    )
    t = rebuild([user("go"), call, ev("user.interrupt")])
    step = t.next_step()
    assert isinstance(step, EndInterrupted)
    assert [c.id for c in step.open_calls] == [call["id"]]
    closed = rebuild(
        [
            user("go"),
            call,
            ev("user.interrupt"),
            ev("agent.tool_result", tool_use_id=call["id"], is_error=True, content="interrupted"),
            idle("end_turn"),
        ]
    )
    assert isinstance(closed.next_step(), Idle)


def test_interrupt_of_one_thread_leaves_the_coordinators_turn_running() -> None:
    """The echo of an interrupt the gateway delivered to a thread's log: the coordinator
    keeps waiting for the thread's reply."""
    call = ev("agent.tool_use", name="send_to_agent", input={"agent": "a", "message": "go"})
    t = rebuild([user("go"), call, ev("user.interrupt", session_thread_id="sthr_x")])
    assert not t.interrupted
    assert isinstance(t.next_step(), RunTools)


def test_interrupt_of_an_idle_session_is_a_no_op() -> None:
    events = [
        user("hi"),
        ev("span.model_request_start"),
        ev("agent.message", content="hello"),
        idle("end_turn"),
        ev("user.interrupt"),
    ]
    assert isinstance(rebuild(events).next_step(), Idle)


def test_messages_after_a_failed_turn_merge_into_one_user_message() -> None:
    t = rebuild([user("one"), idle("retries_exhausted"), user("two")])
    assert isinstance(t.next_step(), CallModel)
    assert t.messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        }
    ]


def test_compaction_replaces_history_with_the_summary() -> None:
    t = rebuild(
        [
            user("a"),
            ev("agent.message", content="b"),
            idle("end_turn"),
            user("c"),
            ev("agent.thread_context_compacted", summary="talked about a, b, c"),
        ]
    )
    assert t.messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": COMPACTION_PREFIX + "talked about a, b, c"}],
        }
    ]
    assert isinstance(t.next_step(), CallModel)


def test_model_calls_are_counted_per_turn() -> None:
    t = rebuild(
        [
            user("a"),
            ev("span.model_request_start"),
            ev("span.model_request_start"),
            idle("end_turn"),
        ]
    )
    assert t.model_calls_this_turn == 2
    t = rebuild([user("a"), ev("span.model_request_start"), idle("end_turn"), user("b")])
    assert t.model_calls_this_turn == 0


def test_mcp_calls_fold_under_the_name_the_model_used_and_pair_with_their_results() -> None:
    use = ev(
        "agent.mcp_tool_use",
        mcp_server_name="my docs",
        name="search",
        input={"q": "x"},
        evaluated_permission="ask",
    )
    t = rebuild([user("find"), use])
    assert t.messages[-1]["content"] == [
        {"type": "tool_use", "id": use["id"], "name": "mcp__my_docs__search", "input": {"q": "x"}}
    ]
    assert t.next_step() == AwaitUser([use["id"]])
    t = rebuild(
        [user("find"), use, ev("user.tool_confirmation", tool_use_id=use["id"], result="allow")]
    )
    step = t.next_step()
    assert isinstance(step, RunTools)
    (call,) = step.run
    assert (call.mcp_server, call.name) == ("my docs", "search")
    result = ev(
        "agent.mcp_tool_result",
        mcp_tool_use_id=use["id"],
        content=[{"type": "text", "text": "hit"}],
    )
    t = rebuild([user("find"), use, result])
    assert t.open_calls == {}
    assert t.messages[-1]["content"][0]["tool_use_id"] == use["id"]
    assert isinstance(t.next_step(), CallModel)


def _outcome(**fields: Any) -> dict[str, Any]:
    return ev(
        "user.define_outcome",
        description="a poem",
        rubric={"type": "text", "content": "four lines"},
        outcome_id="outc_1",
        **fields,
    )


def _span_end(**fields: Any) -> dict[str, Any]:
    usage = {"input_tokens": 3, "output_tokens": 1}
    return ev(
        "span.model_request_end", model_request_start_id="sevt_x", model_usage=usage, **fields
    )


def test_an_outcome_is_evaluated_when_a_response_ends_the_turn() -> None:
    define = _outcome(max_iterations=2)
    t = rebuild([define])
    assert isinstance(t.next_step(), CallModel)
    assert "four lines" in t.messages[0]["content"][0]["text"]
    # A response with no text at all (thinking only) still ends the turn: it is graded.
    t = rebuild([define, ev("span.model_request_start"), ev("agent.thinking"), _span_end()])
    step = t.next_step()
    assert isinstance(step, Evaluate)
    assert (step.outcome.id, step.outcome.iteration) == ("outc_1", 0)
    # A failed (or interrupted) request ends no turn.
    assert not isinstance(rebuild([define, _span_end(is_error=True)]).next_step(), Evaluate)
    start = ev("span.outcome_evaluation_start", outcome_id="outc_1", iteration=0)
    # Resumed mid-evaluation: the same start is evaluated again.
    t = rebuild([define, ev("span.model_request_start"), _span_end(), start])
    step = t.next_step()
    assert isinstance(step, Evaluate)
    assert step.outcome.evaluating == start["id"]
    end = ev(
        "span.outcome_evaluation_end",
        outcome_evaluation_start_id=start["id"],
        outcome_id="outc_1",
        iteration=0,
        result="needs_revision",
        explanation="add a title",
        usage={"input_tokens": 10, "output_tokens": 2},
    )
    t = rebuild([define, ev("span.model_request_start"), _span_end(), start, end])
    assert isinstance(t.next_step(), CallModel)
    assert "add a title" in t.messages[-1]["content"][-1]["text"]
    assert t.outcome is not None
    assert t.outcome.iteration == 1
    assert t.usage["input_tokens"] == 13  # the grader's tokens count


def test_an_interrupt_while_the_agent_works_leaves_the_outcome_open() -> None:
    t = rebuild([_outcome(), ev("user.interrupt"), idle("end_turn")])
    assert isinstance(t.next_step(), Idle)
    assert t.outcome is not None
    t = rebuild(
        [
            _outcome(),
            ev("user.interrupt"),
            idle("end_turn"),
            user("go on"),
            ev("span.model_request_start"),
            _span_end(),
        ]
    )
    assert isinstance(t.next_step(), Evaluate)


def test_a_message_that_lands_just_before_the_turns_idle_is_answered_not_dropped() -> None:
    """The worker appends its `end_turn` idle after a user message it had not read yet: the
    idle follows the message in the log, but no model call saw it, so a new turn answers it."""
    answered = [user("hi"), ev("span.model_request_start"), ev("agent.message", content="hello")]
    t = rebuild([*answered, user("one more thing"), idle("end_turn")])
    assert isinstance(t.next_step(), CallModel)
    assert t.messages[-1] == {
        "role": "user",
        "content": [{"type": "text", "text": "one more thing"}],
    }
    assert t.model_calls_this_turn == 0
    # Once a model call has seen it, the next end_turn closes the turn as usual.
    t = rebuild(
        [
            *answered,
            user("one more"),
            idle("end_turn"),
            ev("span.model_request_start"),
            idle("end_turn"),
        ]
    )
    assert isinstance(t.next_step(), Idle)
    # Input an interrupt came after is not answered: the interrupt ended that turn.
    t = rebuild([*answered, user("wait"), ev("user.interrupt"), idle("end_turn")])
    assert isinstance(t.next_step(), Idle)
    # A message sent after an interrupt is the next turn's.
    t = rebuild([*answered, ev("user.interrupt"), user("do this instead"), idle("end_turn")])
    assert isinstance(t.next_step(), CallModel)


def test_a_message_sent_while_the_model_answers_follows_the_answer_and_is_answered() -> None:
    t = rebuild(
        [
            user("hi"),
            ev("span.model_request_start"),
            user("also this"),
            ev("agent.message", content="hello"),
            ev("span.model_request_end"),
            idle("end_turn"),
        ]
    )
    assert [(m["role"], m["content"][0]["text"]) for m in t.messages] == [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "also this"),
    ]
    assert isinstance(t.next_step(), CallModel)


def test_a_message_sent_during_a_tool_call_comes_after_its_result() -> None:
    call = ev("agent.tool_use", name="bash", input={"command": "ls"}, evaluated_permission="allow")
    t = rebuild(
        [
            user("hi"),
            ev("span.model_request_start"),
            call,
            ev("span.model_request_end"),
            user("and then stop"),
            ev("agent.tool_result", tool_use_id=call["id"], content="a.txt"),
        ]
    )
    # The API wants a call's results first in the message after it, any text after them.
    assert [b["type"] for b in t.messages[-1]["content"]] == ["tool_result", "text"]
    assert t.messages[-1]["content"][1]["text"] == "and then stop"
    assert isinstance(t.next_step(), CallModel)


def test_held_input_is_not_lost_when_a_request_never_ended() -> None:
    """A worker that crashed mid-request left a start without an end: the turn's idle
    releases what was held, and the next turn's request carries it."""
    t = rebuild(
        [user("hi"), ev("span.model_request_start"), user("more"), idle("retries_exhausted")]
    )
    assert isinstance(t.next_step(), Idle)
    t = rebuild(
        [
            user("hi"),
            ev("span.model_request_start"),
            user("more"),
            idle("retries_exhausted"),
            user("again"),
        ]
    )
    assert isinstance(t.next_step(), CallModel)
    assert [b["text"] for b in t.messages[-1]["content"]] == ["hi", "more", "again"]
