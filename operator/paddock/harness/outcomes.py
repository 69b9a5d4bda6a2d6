"""Outcomes (reference §8.3): when the agent ends its turn while an outcome is open, a
grader judges the work against the outcome's rubric in a model request of its own: its own
system prompt, no tools, and only the user-visible record of the work (never the agent's
context as such). Its verdict ends the outcome or sends feedback back into the loop.

The events are `span.outcome_evaluation_start`, `_ongoing` heartbeats while the grader
works, and `_end` with the verdict and the grader's tokens (which count into the session's
usage and budgets). An evaluation has no side effects, so a worker that resumes a session
whose evaluation has a start and no end redoes it under the same start; the end is keyed
by the start's id, so a retried append is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import anthropic
from anthropic.types import Message

from paddock.eventlog import (
    LeaseLost,
    ModelUsage,
    SpanOutcomeEvaluationEndEvent,
    SpanOutcomeEvaluationOngoingEvent,
    SpanOutcomeEvaluationStartEvent,
)
from paddock.harness.interrupts import Interrupted, Interrupts
from paddock.harness.model import classify, stream_message
from paddock.harness.retries import Failure, call_with_retries, session_error
from paddock.harness.sessionlog import SessionLog
from paddock.harness.settings import WorkerSettings
from paddock.harness.transcript import Outcome

log = logging.getLogger(__name__)

GRADER_SYSTEM = (
    "You are a strict grader. You judge whether an agent's work satisfies a rubric. You "
    "see the task, the rubric and a record of the work: the conversation's messages, the "
    "tool calls the agent made and their results. Judge only by that record. Reply with one "
    'JSON object and nothing else: {"result": "satisfied" | "needs_revision" | "failed", '
    '"explanation": "<why>"}. "satisfied": every criterion of the rubric is met. '
    '"needs_revision": some criterion is not met; the explanation says which and what to '
    'change, addressed to the agent. "failed": the rubric cannot apply to this task at all.'
)
"""Grader requests are told apart from the agent's by this system prompt (the scripted
model's scripts do so too)."""

WORK_LIMIT_CHARS = 400_000
"""The most of the work the grader is shown: about 100k tokens at four characters a token,
half the default context window, leaving room for the rubric and the verdict. Longer work
keeps its newest part."""
BLOCK_LIMIT_CHARS = 4_000
"""The most of one tool input or result the grader is shown."""
VERDICTS = frozenset({"satisfied", "needs_revision", "failed"})


class InvalidVerdict(Exception):
    """The grader's reply was no verdict."""


def _clip(text: str, limit: int = BLOCK_LIMIT_CHARS) -> str:
    return (
        text
        if len(text) <= limit
        else text[:limit] + f"\n[... {len(text) - limit} more characters]"
    )


def _block_text(block: dict[str, Any]) -> str | None:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_use":
        return f"[tool call {block.get('name')}] {_clip(json.dumps(block.get('input', {})))}"
    if kind == "tool_result":
        content = block.get("content") or []
        text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
        error = " (error)" if block.get("is_error") else ""
        return f"[tool result{error}] {_clip(text)}"
    return None


def work_record(messages: list[dict[str, Any]], limit: int = WORK_LIMIT_CHARS) -> str:
    """The agent's work as the grader reads it: each message's text, tool calls and tool
    results (each clipped), labelled by role; the newest ``limit`` characters of it."""
    parts: list[str] = []
    for message in messages:
        role = "Agent" if message["role"] == "assistant" else "User"
        texts = [t for b in message.get("content", []) if (t := _block_text(b))]
        if texts:
            parts.append(f"{role}:\n" + "\n".join(texts))
    record = "\n\n".join(parts)
    if len(record) > limit:
        record = "[... earlier work left out]\n" + record[-limit:]
    return record


def parse_verdict(message: Message) -> tuple[str, str]:
    """(result, explanation) from the grader's reply: one JSON object, optionally fenced."""
    text = "".join(b.text for b in message.content if b.type == "text").strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        verdict = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidVerdict(f"the grader's reply is not JSON: {_clip(text, 200)!r}") from None
    if not isinstance(verdict, dict) or verdict.get("result") not in VERDICTS:
        raise InvalidVerdict(f"the grader's reply names no verdict: {_clip(text, 200)!r}")
    explanation = verdict.get("explanation")
    return verdict["result"], explanation if isinstance(explanation, str) else ""


def _classify(exc: Exception) -> Failure | None:
    if isinstance(exc, InvalidVerdict):
        return Failure("unknown_error", str(exc), True)
    return classify(exc)


class Grader:
    """Evaluates the open outcome of one session during one worker's run of it."""

    def __init__(
        self,
        session: SessionLog,
        interrupts: Interrupts,
        model: anthropic.AsyncAnthropic,
        settings: WorkerSettings,
    ) -> None:
        self.session = session
        self.interrupts = interrupts
        self.model = model
        self.settings = settings

    def request(self, outcome: Outcome) -> dict[str, Any]:
        work = work_record(self.session.transcript.messages[outcome.since :])
        prompt = (
            f"<task>\n{outcome.description}\n</task>\n\n<rubric>\n{outcome.rubric}\n</rubric>"
            f"\n\n<work>\n{work}\n</work>\n\nGrade the work against the rubric."
        )
        return {
            "model": self.settings.spec.model,
            "max_tokens": min(self.settings.spec.limits.max_tokens, 4096),
            "system": GRADER_SYSTEM,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }

    async def evaluate(self, outcome: Outcome) -> None:
        """Run one evaluation cycle of ``outcome`` and append its end (with the idle that
        follows a terminal verdict)."""
        start_id = outcome.evaluating
        if start_id is None:
            start = SpanOutcomeEvaluationStartEvent(
                outcome_id=outcome.id, iteration=outcome.iteration
            )
            (stored,) = await self.session.emit(
                start, key=f"outcome:{outcome.id}:{outcome.iteration}"
            )
            assert stored.id is not None
            start_id = stored.id
        usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        request = self.request(outcome)

        async def attempt() -> tuple[str, str]:
            message = await stream_message(self.model, request)
            for key in usage:
                usage[key] += getattr(message.usage, key, 0) or 0
            return parse_verdict(message)

        async def on_failure(failure: Failure, will_retry: bool) -> None:
            await self.session.emit(session_error(failure, will_retry))

        await self.session.emit(
            SpanOutcomeEvaluationOngoingEvent(outcome_id=outcome.id, iteration=outcome.iteration)
        )
        heartbeat = asyncio.ensure_future(self._heartbeat(outcome))
        try:
            verdict = await self.interrupts.interruptible(
                call_with_retries(attempt, self.settings.retry, _classify, on_failure)
            )
        except Interrupted:
            verdict = ("interrupted", "The user interrupted the evaluation.")
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        stop = "end_turn"
        if verdict is None:
            result, explanation = (
                "failed",
                "The grader could not be reached or gave no valid verdict.",
            )
            stop = "retries_exhausted"
        else:
            result, explanation = verdict
        if result == "needs_revision" and outcome.iteration + 1 >= outcome.max_iterations:
            result = "max_iterations_reached"
        end = SpanOutcomeEvaluationEndEvent(
            outcome_evaluation_start_id=start_id,
            outcome_id=outcome.id,
            iteration=outcome.iteration,
            result=result,  # type: ignore[arg-type]  # one of OutcomeResult
            explanation=explanation,
            usage=ModelUsage.model_validate(usage),
        )
        key = f"outcome-end:{start_id}"
        if result in ("needs_revision", "max_iterations_reached"):
            # The loop goes on: the transcript gives the agent the grader's feedback.
            await self.session.emit(end, key=key)
        else:
            await self.session.idle(stop, end, key=key)

    async def _heartbeat(self, outcome: Outcome) -> None:
        """`span.outcome_evaluation_ongoing` every `outcome_heartbeat_s` while the grader
        works (the first is appended before the grader is called). Appended without folding
        (the transcript ignores them), so as not to race the evaluation's own appends."""
        event = SpanOutcomeEvaluationOngoingEvent(
            outcome_id=outcome.id, iteration=outcome.iteration
        )
        session = self.session
        with contextlib.suppress(LeaseLost):
            while True:
                await asyncio.sleep(self.settings.outcome_heartbeat_s)
                try:
                    await session.log.append(session.session_id, [event], fence=session.claim.lease)
                except LeaseLost:
                    raise
                except Exception:
                    log.warning(
                        "session %s: outcome heartbeat failed", session.session_id, exc_info=True
                    )
