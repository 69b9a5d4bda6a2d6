"""Outcomes in the API (reference §8.3): `user.define_outcome` as the log stores it, and
a session's `outcome_evaluations[]` folded from its log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from paddock.eventlog import (
    AnyEvent,
    EventLog,
    SpanOutcomeEvaluationEndEvent,
    SpanOutcomeEvaluationStartEvent,
    TextRubric,
    UserDefineOutcomeEvent,
    new_id,
)
from paddock.gateway import views
from paddock.gateway.common import Gateway
from paddock.gateway.convert.meta import rfc3339
from paddock.gateway.errors import invalid
from paddock.gateway.files import file_store, find_file
from paddock.gateway.params import DefineOutcomeParam, TextRubricParam

RUBRIC_LIMIT_BYTES = 100_000
"""The largest rubric file: the grader reads it whole in every evaluation."""
OUTCOME_TYPES = (
    "user.define_outcome",
    "span.outcome_evaluation_start",
    "span.outcome_evaluation_end",
    "session.status_running",
    "session.status_idle",
)
"""What `outcome_evaluations` reads of a log: the statuses tell when the agent works."""


async def with_text_rubric(
    gw: Gateway, tenant: str, param: DefineOutcomeParam
) -> DefineOutcomeParam:
    """``param`` with a file rubric replaced by the file's text (as the API resolves file
    rubrics), so the harness never reads files for it. 404 for a file that is not the
    tenant's; 400 for one too large or not UTF-8 text."""
    if isinstance(param.rubric, TextRubricParam):
        return param
    stored = await find_file(gw, tenant, param.rubric.file_id)
    if stored.size_bytes > RUBRIC_LIMIT_BYTES:
        raise invalid(f"rubric: the file is larger than {RUBRIC_LIMIT_BYTES} bytes")
    path = file_store(gw).content_path(tenant, stored.id)
    try:
        text = (await asyncio.to_thread(path.read_bytes)).decode()
    except UnicodeDecodeError:
        raise invalid("rubric: the file is not UTF-8 text") from None
    if not text.strip():
        raise invalid("rubric: the file is empty")
    rubric = TextRubricParam(type="text", content=text)
    return param.model_copy(update={"rubric": rubric})


def outcome_event(param: DefineOutcomeParam) -> UserDefineOutcomeEvent:
    """The log event of a define_outcome whose rubric is text, with a new `outc_` id."""
    assert isinstance(param.rubric, TextRubricParam)
    return UserDefineOutcomeEvent(
        description=param.description,
        rubric=TextRubric(content=param.rubric.content),
        max_iterations=param.max_iterations,
        outcome_id=new_id("outc_"),
    )


def outcome_evaluations(events: Sequence[AnyEvent]) -> list[views.OutcomeEvaluation]:
    """Each outcome's state as the log tells it: `pending` until the agent works on it,
    `running` while it works or revises, `evaluating` between an evaluation's start and
    end, then the terminal result of the last end."""
    found: dict[str, views.OutcomeEvaluation] = {}
    running = False
    for event in events:
        if isinstance(event, UserDefineOutcomeEvent):
            found[event.outcome_id] = views.OutcomeEvaluation(
                outcome_id=event.outcome_id,
                description=event.description,
                iteration=0,
                result="running" if running else "pending",
            )
        elif event.type == "session.status_idle":
            running = False
        elif event.type == "session.status_running":
            running = True
            for outcome in found.values():
                if outcome.result == "pending":
                    outcome.result = "running"
        elif isinstance(event, SpanOutcomeEvaluationStartEvent) and event.outcome_id in found:
            outcome = found[event.outcome_id]
            outcome.result, outcome.iteration = "evaluating", event.iteration
        elif isinstance(event, SpanOutcomeEvaluationEndEvent) and event.outcome_id in found:
            outcome = found[event.outcome_id]
            outcome.explanation = event.explanation
            if event.result == "needs_revision":
                outcome.result, outcome.iteration = "running", event.iteration + 1
            else:
                outcome.result, outcome.iteration = event.result, event.iteration
                outcome.completed_at = rfc3339(event.processed_at) if event.processed_at else None
    return list(found.values())


async def session_outcomes(log: EventLog, session_id: str) -> list[views.OutcomeEvaluation]:
    """The session's `outcome_evaluations[]`: one filtered scan of its log (the outcome
    events, and the first sign of the agent's work)."""
    events: list[AnyEvent] = []
    cursor = None
    while True:
        page = await log.list_events(
            session_id, limit=1000, cursor=cursor, order="asc", types=OUTCOME_TYPES
        )
        events.extend(page.data)
        if page.next_cursor is None or not page.data:
            break
        cursor = page.next_cursor
    return outcome_evaluations(events)


OPEN_RESULTS = frozenset({"pending", "running", "evaluating"})


def check_one_outcome(count: int) -> None:
    """400 for more than one outcome in a request: a session works toward one at a time."""
    if count > 1:
        raise invalid("user.define_outcome: one outcome at a time; send the next one later")


async def check_no_open_outcome(log: EventLog, session_id: str, count: int) -> None:
    """400 unless ``count`` is one and the session has no outcome still open."""
    check_one_outcome(count)
    for outcome in await session_outcomes(log, session_id):
        if outcome.result in OPEN_RESULTS:
            raise invalid(
                f"user.define_outcome: outcome {outcome.outcome_id} is still open "
                "(one outcome at a time: wait for its verdict)"
            )
