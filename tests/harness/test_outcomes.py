"""Outcomes: a grader judges the agent's work against a rubric after each turn, and sends
its feedback back into the loop until the work passes or the iterations run out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from paddock.eventlog import (
    SessionSettings,
    TextRubric,
    UserDefineOutcomeEvent,
    UserInterruptEvent,
    new_id,
    new_session_id,
)
from paddock.harness.outcomes import GRADER_SYSTEM
from paddock.testing.fakemodel import ModelRequest, Reply, Text
from paddock.testing.ports import wait_until_async

from .conftest import AGENT, Harness, types

RUBRIC = "The poem has a title line and exactly four lines after it."


def verdict(result: str, explanation: str, **reply: Any) -> Reply:
    return Reply([Text(json.dumps({"result": result, "explanation": explanation}))], **reply)


def graded(agent: Callable[[ModelRequest], Reply], grader: Callable[[ModelRequest], Reply]):
    """A script that answers grader requests (told apart by their system prompt) with
    ``grader`` and the agent's with ``agent``."""

    def script(request: ModelRequest) -> Reply:
        return grader(request) if request.system_text == GRADER_SYSTEM else agent(request)

    return script


def grader_requests(harness: Harness) -> list[ModelRequest]:
    return [r for r in harness.model.requests if r.system_text == GRADER_SYSTEM]


def agent_requests(harness: Harness) -> list[ModelRequest]:
    return [r for r in harness.model.requests if r.system_text != GRADER_SYSTEM]


async def define_outcome(harness: Harness, *, max_iterations: int | None = None) -> tuple[str, str]:
    """A new session whose only input is a `user.define_outcome`; (session id, outcome id)."""
    session_id = new_session_id()
    await harness.log.create_session(session_id, agent=AGENT)
    await harness.state.put_settings(
        session_id, SessionSettings(namespace="default", name=session_id.lower())
    )
    await harness.bind(session_id)
    outcome_id = new_id("outc_")
    event = UserDefineOutcomeEvent(
        description="Write a short poem about Redis.",
        rubric=TextRubric(content=RUBRIC),
        max_iterations=max_iterations,
        outcome_id=outcome_id,
    )
    await harness.send(session_id, event)
    return session_id, outcome_id


def ends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "span.outcome_evaluation_end"]


async def test_an_outcome_that_needs_one_revision_then_passes(make_harness) -> None:
    def agent(request: ModelRequest) -> Reply:
        if "needs revision" in request.last_user_text:
            return Reply(
                [Text("Streams\nlogs that flow\nin order kept\nfenced and sound\nnever lost")]
            )
        return Reply([Text("logs that flow\nin order kept")])

    def grader(request: ModelRequest) -> Reply:
        if "Streams\nlogs" in request.last_user_text:
            return verdict("satisfied", "Title and four lines.")
        return verdict("needs_revision", "Add a title line and two more lines.")

    harness = make_harness(graded(agent, grader))
    session, outcome = await define_outcome(harness)
    events = await harness.wait_idle(session)
    # Heartbeats: one before each grader call, more if a grader is slow (10 s apart).
    beats = [t for t in types(events) if t != "span.outcome_evaluation_ongoing"]
    assert beats == [
        "user.define_outcome",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "span.outcome_evaluation_start",
        "span.outcome_evaluation_end",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "span.outcome_evaluation_start",
        "span.outcome_evaluation_end",
        "session.status_idle",
    ]
    for start in [i for i, e in enumerate(events) if e["type"] == "span.outcome_evaluation_start"]:
        assert events[start + 1]["type"] == "span.outcome_evaluation_ongoing"
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    first, second = ends(events)
    starts = [e for e in events if e["type"] == "span.outcome_evaluation_start"]
    assert [(e["iteration"], e["result"]) for e in (first, second)] == [
        (0, "needs_revision"),
        (1, "satisfied"),
    ]
    assert [e["outcome_evaluation_start_id"] for e in (first, second)] == [s["id"] for s in starts]
    assert {e["outcome_id"] for e in (first, second)} == {outcome}
    assert second["explanation"] == "Title and four lines."
    # The agent saw the task with the rubric, and then the grader's feedback.
    first_request, revision = agent_requests(harness)
    assert "Write a short poem about Redis." in first_request.last_user_text
    assert RUBRIC in first_request.last_user_text
    assert "Add a title line and two more lines." in revision.last_user_text
    # The grader works in its own context: no tools, the rubric and the record of the work.
    graders = grader_requests(harness)
    assert len(graders) == 2
    assert all("tools" not in r.body for r in graders)
    assert RUBRIC in graders[0].last_user_text
    assert "logs that flow" in graders[0].last_user_text
    # The grader's tokens count into the session's usage.
    grader_input = sum(e["usage"]["input_tokens"] for e in (first, second))
    agent_input = sum(
        e["model_usage"]["input_tokens"] for e in events if e["type"] == "span.model_request_end"
    )
    assert grader_input > 0
    snapshot = await harness.log.snapshot(session)
    assert snapshot.usage.input_tokens == grader_input + agent_input
    assert snapshot.status == "idle"


async def test_an_outcome_that_hits_max_iterations(make_harness) -> None:
    def agent(request: ModelRequest) -> Reply:
        if "No further evaluation follows" in request.last_user_text:
            return Reply([Text("I could not meet the rubric: the title is missing.")])
        return Reply([Text(f"attempt {len(request.messages)}")])

    harness = make_harness(
        graded(agent, lambda r: verdict("needs_revision", "Still no title line."))
    )
    session, _ = await define_outcome(harness, max_iterations=2)
    events = await harness.wait_idle(session)
    assert [(e["iteration"], e["result"]) for e in ends(events)] == [
        (0, "needs_revision"),
        (1, "max_iterations_reached"),
    ]
    # One final acknowledgement turn, not graded, then idle.
    assert len(grader_requests(harness)) == 2
    assert len(agent_requests(harness)) == 3
    assert types(events)[-4:] == [
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert events[-3]["content"][0]["text"].startswith("I could not meet the rubric")
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert len([e for e in events if e["type"] == "session.status_idle"]) == 1


async def test_an_interrupt_during_evaluation_ends_it_interrupted(make_harness) -> None:
    harness = make_harness(
        graded(
            lambda r: Reply([Text("done")]), lambda r: verdict("satisfied", "ok", chunk_delay=0.5)
        )
    )
    session, _ = await define_outcome(harness)
    await wait_until_async(
        lambda: grader_requests(harness), timeout=20, what="the grader's request"
    )
    await harness.send(session, UserInterruptEvent())
    events = await harness.wait_idle(session, within=10)
    (end,) = ends(events)
    assert end["result"] == "interrupted"
    assert events[-1]["stop_reason"] == {"type": "end_turn"}


async def test_a_grader_without_a_valid_verdict_fails_the_outcome_after_retries(
    make_harness,
) -> None:
    harness = make_harness(
        graded(lambda r: Reply([Text("done")]), lambda r: Reply([Text("looks fine to me")]))
    )
    session, _ = await define_outcome(harness)
    events = await harness.wait_idle(session)
    (end,) = ends(events)
    assert end["result"] == "failed"
    errors = [e["error"] for e in events if e["type"] == "session.error"]
    assert [e["retry_status"]["type"] for e in errors] == ["retrying", "retrying", "exhausted"]
    assert "not JSON" in errors[0]["message"]
    assert len(grader_requests(harness)) == 3  # the test policy's attempts
    assert events[-1]["stop_reason"] == {"type": "retries_exhausted"}


async def test_a_worker_lost_mid_evaluation_is_redone_once_by_the_next(make_harness) -> None:
    calls = {"grader": 0}

    def grader(request: ModelRequest) -> Reply:
        calls["grader"] += 1
        # The first grader hangs until its worker is gone.
        return verdict("satisfied", "fine", chunk_delay=0.5 if calls["grader"] == 1 else 0)

    harness = make_harness(graded(lambda r: Reply([Text("done")]), grader))
    session, _ = await define_outcome(harness)
    await wait_until_async(
        lambda: grader_requests(harness), timeout=20, what="the grader's request"
    )
    _, _, task = harness.workers[0]
    task.cancel()  # the worker dies mid-evaluation
    harness.start_worker()
    events = await harness.wait_idle(session, within=20)
    starts = [e for e in events if e["type"] == "span.outcome_evaluation_start"]
    (end,) = ends(events)
    assert len(starts) == 1
    assert end["outcome_evaluation_start_id"] == starts[0]["id"]
    assert end["result"] == "satisfied"
    assert len(grader_requests(harness)) == 2
    assert len(agent_requests(harness)) == 1  # the agent's work was not redone
