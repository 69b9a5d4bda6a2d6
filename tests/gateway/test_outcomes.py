"""Outcomes through the official SDK: `user.define_outcome` sent and in `initial_events`,
the evaluation spans on the stream and in the list, and the session's
`outcome_evaluations[]`."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from paddock.harness.outcomes import GRADER_SYSTEM
from paddock.testing.fakemodel import ModelRequest, Reply, Text
from paddock.testing.ports import wait_until_async

from .stack import Stack

pytestmark = pytest.mark.timeout(60)

RUBRIC = "The answer names the number 42."


def verdict(result: str, explanation: str) -> Reply:
    return Reply([Text(json.dumps({"result": result, "explanation": explanation}))])


def script(request: ModelRequest) -> Reply:
    """The agent answers 41, then 42 once told to revise; the grader wants 42."""
    if request.system_text == GRADER_SYSTEM:
        if "The answer is 42" in request.last_user_text:
            return verdict("satisfied", "It names 42.")
        return verdict("needs_revision", "The rubric asks for 42.")
    if "needs revision" in request.last_user_text:
        return Reply([Text("The answer is 42.")])
    return Reply([Text("The answer is 41.")])


async def _until_idle(stream: Any, seen: list[Any]) -> Any:
    async for event in stream:
        seen.append(event)
        if event.type == "session.status_idle":
            return event
    raise AssertionError(f"stream ended after {[e.type for e in seen]}")


async def _session(stack: Stack, **create: Any) -> tuple[anthropic.AsyncAnthropic, Any, Any]:
    client = stack.client()
    environment = await client.beta.environments.create(name="outcomes-env")
    agent = await client.beta.agents.create(name="Grader test", model="claude-sonnet-4-6")
    model = stack.start_worker(agent.id, script)
    session = await client.beta.sessions.create(
        agent=agent.id, environment_id=environment.id, **create
    )
    return client, session, model


async def test_sdk_defines_an_outcome_streams_its_evaluations_and_reads_the_verdict(
    stack: Stack,
) -> None:
    client, session, model = await _session(stack)
    assert session.outcome_evaluations == []
    streamed: list[Any] = []
    async with await client.beta.sessions.events.stream(session.id) as stream:
        sent = await client.beta.sessions.events.send(
            session.id,
            events=[
                {
                    "type": "user.define_outcome",
                    "description": "Tell me the answer.",
                    "rubric": {"type": "text", "content": RUBRIC},
                    "max_iterations": 3,
                }
            ],
        )
        (echo,) = sent.data
        assert echo.type == "user.define_outcome"
        assert echo.outcome_id.startswith("outc_")
        assert echo.processed_at is not None  # processed on receipt
        assert echo.rubric.type == "text"
        assert echo.rubric.content == RUBRIC
        idle = await _until_idle(stream, streamed)
    assert idle.stop_reason.type == "end_turn"
    ends = [e for e in streamed if e.type == "span.outcome_evaluation_end"]
    assert [type(e).__name__ for e in ends] == [
        "BetaManagedAgentsSpanOutcomeEvaluationEndEvent"
    ] * 2
    assert [(e.iteration, e.result) for e in ends] == [(0, "needs_revision"), (1, "satisfied")]
    assert {e.outcome_id for e in ends} == {echo.outcome_id}
    assert ends[1].usage.input_tokens > 0
    starts = [e for e in streamed if e.type == "span.outcome_evaluation_start"]
    assert [e.outcome_evaluation_start_id for e in ends] == [s.id for s in starts]
    assert any(e.type == "span.outcome_evaluation_ongoing" for e in streamed)

    listed = await client.beta.sessions.events.list(
        session.id, types=["span.outcome_evaluation_end"]
    )
    assert [e.id for e in listed.data] == [e.id for e in ends]

    retrieved = await client.beta.sessions.retrieve(session.id)
    (evaluation,) = retrieved.outcome_evaluations
    assert evaluation.type == "outcome_evaluation"
    assert evaluation.outcome_id == echo.outcome_id
    assert evaluation.description == "Tell me the answer."
    assert (evaluation.iteration, evaluation.result) == (1, "satisfied")
    assert evaluation.explanation == "It names 42."
    assert evaluation.completed_at is not None
    assert len([r for r in model.requests if r.system_text == GRADER_SYSTEM]) == 2
    listed_sessions = [s async for s in client.beta.sessions.list()]
    (same,) = [s for s in listed_sessions if s.id == session.id]
    assert same.outcome_evaluations == retrieved.outcome_evaluations


async def test_an_outcome_in_initial_events_with_a_file_rubric(stack: Stack) -> None:
    client = stack.client()
    rubric = await client.beta.files.upload(file=("rubric.md", RUBRIC.encode(), "text/markdown"))
    client, session, model = await _session(
        stack,
        initial_events=[
            {
                "type": "user.define_outcome",
                "description": "Tell me the answer.",
                "rubric": {"type": "file", "file_id": rubric.id},
                "max_iterations": 1,
            }
        ],
    )

    async def finished() -> Any:
        retrieved = await client.beta.sessions.retrieve(session.id)
        done = retrieved.outcome_evaluations and retrieved.outcome_evaluations[0].completed_at
        return retrieved if done and retrieved.status == "idle" else None

    retrieved = await wait_until_async(finished, timeout=30, what="the outcome to end")
    assert [e.result for e in retrieved.outcome_evaluations] == ["max_iterations_reached"]
    events = [e async for e in client.beta.sessions.events.list(session.id)]
    (define,) = [e for e in events if e.type == "user.define_outcome"]
    # A file rubric is stored as its text (the SDK's echo documents both variants).
    assert define.rubric.type == "text"
    assert define.rubric.content == RUBRIC
    (end,) = [e for e in events if e.type == "span.outcome_evaluation_end"]
    assert end.result == "max_iterations_reached"
    graders = [r for r in model.requests if r.system_text == GRADER_SYSTEM]
    assert RUBRIC in graders[0].last_user_text


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (
            {"rubric": {"type": "text", "content": "x"}, "max_iterations": 21},
            anthropic.BadRequestError,
        ),
        (
            {"rubric": {"type": "text", "content": "x"}, "max_iterations": 0},
            anthropic.BadRequestError,
        ),
        ({}, anthropic.BadRequestError),
        ({"rubric": {"type": "file", "file_id": "file_doesnotexist"}}, anthropic.NotFoundError),
    ],
    ids=["too-many-iterations", "no-iterations", "no-rubric", "unknown-file"],
)
async def test_malformed_outcomes_are_refused(
    stack: Stack, outcome: dict[str, Any], error: type[Exception]
) -> None:
    client, session, _ = await _session(stack)
    with pytest.raises(error):
        await client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.define_outcome", "description": "d", **outcome}],  # type: ignore[list-item]
        )
    assert [e async for e in client.beta.sessions.events.list(session.id)] == []


async def test_one_outcome_at_a_time(stack: Stack) -> None:
    client, session, _ = await _session(stack)
    outcome = {
        "type": "user.define_outcome",
        "description": "Tell me the answer.",
        "rubric": {"type": "text", "content": RUBRIC},
    }
    with pytest.raises(anthropic.BadRequestError, match="one outcome at a time"):
        await client.beta.sessions.events.send(session.id, events=[outcome, outcome])
    await client.beta.sessions.events.send(session.id, events=[outcome])
    with pytest.raises(anthropic.BadRequestError, match="still open"):
        await client.beta.sessions.events.send(session.id, events=[outcome])

    async def ended() -> Any:
        retrieved = await client.beta.sessions.retrieve(session.id)
        return retrieved.status == "idle" and retrieved.outcome_evaluations[0].completed_at

    await wait_until_async(ended, timeout=30, what="the first outcome's verdict")
    await client.beta.sessions.events.send(session.id, events=[outcome])
    retrieved = await client.beta.sessions.retrieve(session.id)
    assert retrieved.outcome_evaluations[0].result == "satisfied"
    assert len(retrieved.outcome_evaluations) == 2
