"""The conversation rebuilt from a session's event log, and what the harness must do next.

A pure fold over event dicts (the Managed Agents JSON shapes), so that any worker can pick
a session up from its log alone. Tool calls are identified by the id of their
`agent.tool_use` / `agent.custom_tool_use` event, which is also the `tool_use` id the model
sees, so results recorded under that id always pair with their call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from paddock.eventlog import TOOL_USE_TYPES
from paddock.harness.tools import mcp_tool_name

USER_INPUT_TYPES = frozenset({"user.message", "user.define_outcome"})
TOOL_RESULT_TYPES = frozenset({"agent.tool_result", "user.tool_result", "agent.mcp_tool_result"})
_ROUTABLE_TYPES = TOOL_USE_TYPES | {"user.tool_confirmation", "user.custom_tool_result"}
COMPACTION_PREFIX = "Summary of the conversation so far (earlier turns were compacted):\n\n"


@dataclass
class ToolCall:
    """A tool call of the model that has no recorded result yet."""

    id: str
    name: str
    input: dict[str, Any]
    custom: bool
    ask: bool
    """The call needs a `user.tool_confirmation` before it runs."""
    decision: Literal["allow", "deny"] | None = None
    deny_message: str | None = None
    mcp_server: str | None = None
    """For an `agent.mcp_tool_use`: the server; `name` is then the tool's name on it."""

    @property
    def waits_for_user(self) -> bool:
        return self.custom or (self.ask and self.decision is None)


@dataclass
class CallModel:
    """Send `messages` to the model."""


@dataclass
class RunTools:
    """Run the allowed built-in calls and record a denial result for the denied ones."""

    run: list[ToolCall]
    denied: list[ToolCall]


@dataclass
class AwaitUser:
    """Idle with `requires_action` until the user answers these calls."""

    event_ids: list[str]


@dataclass
class EndInterrupted:
    """A `user.interrupt` ends the turn: close open calls and idle with `end_turn`."""

    open_calls: list[ToolCall]


@dataclass
class Evaluate:
    """The agent's turn ended while an outcome is open: grade the work against its rubric."""

    outcome: Outcome


@dataclass
class Idle:
    """Nothing to do until the user sends something."""


Step = CallModel | RunTools | AwaitUser | EndInterrupted | Evaluate | Idle

DEFAULT_MAX_ITERATIONS = 3
TERMINAL_RESULTS = frozenset({"satisfied", "max_iterations_reached", "failed", "interrupted"})


@dataclass
class Outcome:
    """The open outcome of a session (`user.define_outcome`), as its log tells it."""

    id: str
    description: str
    rubric: str
    max_iterations: int
    iteration: int = 0
    """The 0-based evaluation cycle the outcome is on."""
    evaluating: str | None = None
    """The id of a `span.outcome_evaluation_start` that has no end yet (a worker that
    resumes redoes that evaluation under the same start)."""
    due: bool = False
    """The agent's last response ended its turn: the work awaits an evaluation."""
    since: int = 0
    """Index in `messages` of the message that holds the outcome's task: the grader sees
    the work from there on."""


def outcome_task(description: str, rubric: str) -> str:
    """What the agent reads of a `user.define_outcome`: the task, and the rubric its work
    is graded against."""
    return (
        f"{description}\n\nWhen you end your turn, a grader checks your work against this "
        f"rubric and may ask for revisions:\n\n<rubric>\n{rubric}\n</rubric>"
    )


def revision_request(explanation: str, iteration: int, max_iterations: int) -> str:
    """The grader's feedback on a `needs_revision` verdict, as the agent reads it."""
    return (
        f"A grader checked your work against the rubric (evaluation {iteration + 1} of "
        f"{max_iterations}) and it needs revision:\n\n{explanation}\n\nRevise the work so "
        "that it satisfies the rubric, then end your turn."
    )


def final_acknowledgement(explanation: str, max_iterations: int) -> str:
    """After the last allowed evaluation failed: one turn to tell the user where things
    stand, with no further evaluation."""
    return (
        f"A grader checked your work against the rubric and it still falls short after "
        f"{max_iterations} evaluations, the most allowed:\n\n{explanation}\n\nNo further "
        "evaluation follows. Briefly tell the user what was done and what remains unmet."
    )


@dataclass
class Transcript:
    """The state of a session as its event log tells it."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    open_calls: dict[str, ToolCall] = field(default_factory=dict)
    turn_open: bool = False
    """A user message started a turn that has not ended with an idle (other than
    `requires_action`)."""
    interrupted: bool = False
    unseen_input: bool = False
    """User input folded after the last model request began: no model call has seen it. An
    `end_turn` idle appended just after such input (the worker had not read it yet) leaves
    the turn open, so the input is answered rather than taken for handled."""
    model_answering: bool = False
    """A model request began and has not ended."""
    held: list[dict[str, Any]] = field(default_factory=list)
    """A user message's blocks that arrived while the model was answering or its tool calls
    were open: they join the conversation after the response and its tool results (the API
    wants tool results first, and the model did not see them before it answered)."""
    model_calls_this_turn: int = 0
    last_event_id: str | None = None
    status: str = "idle"
    stop_reason: str | None = None
    waiting_on: list[str] = field(default_factory=list)
    """Event ids the last `requires_action` idle listed."""
    usage: dict[str, int] = field(default_factory=dict)
    outcome: Outcome | None = None
    """The outcome the turn works toward until a terminal evaluation."""

    @property
    def grading(self) -> bool:
        """An end of turn now is followed by an evaluation, not by an idle."""
        return self.outcome is not None and self.turn_open

    def next_step(self) -> Step:
        """What the harness does next; a pure function of the log."""
        if self.interrupted:
            return EndInterrupted(list(self.open_calls.values()))
        calls = list(self.open_calls.values())
        if calls:
            denied = [c for c in calls if c.decision == "deny"]
            runnable = [c for c in calls if not c.custom and (not c.ask or c.decision == "allow")]
            if runnable or denied:
                return RunTools(runnable, denied)
            return AwaitUser([c.id for c in calls if c.waits_for_user])
        outcome = self.outcome
        if self.grading and outcome is not None and (outcome.due or outcome.evaluating):
            return Evaluate(outcome)
        if self.turn_open and self.messages and self.messages[-1]["role"] == "user":
            return CallModel()
        return Idle()


def _release_held(t: Transcript) -> None:
    """Held user input joins the conversation once no response or tool call is open."""
    if t.held and not t.model_answering and not t.open_calls:
        _append(t.messages, "user", t.held)
        # Unseen, unless an interrupt came after it: that ended the turn with it.
        t.held, t.unseen_input = [], t.unseen_input or not t.interrupted


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [dict(block) for block in content or []]


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add blocks, merging into the last message when it has the same role (the API wants
    alternating roles; tool results must directly follow their tool calls)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _result_block(tool_use_id: str, content: Any, is_error: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    blocks = _text_blocks(content)
    if blocks:
        block["content"] = blocks
    if is_error:
        block["is_error"] = True
    return block


def rebuild(events: list[dict[str, Any]]) -> Transcript:
    """Fold the session's events, oldest first, into a Transcript."""
    t = Transcript()
    for event in events:
        apply(t, event)
    return t


def apply(t: Transcript, event: dict[str, Any]) -> None:
    """Fold one event into ``t`` (the incremental form of `rebuild`)."""
    kind = event["type"]
    t.last_event_id = event.get("id", t.last_event_id)
    if kind in _ROUTABLE_TYPES and event.get("session_thread_id"):
        return  # a thread's request cross-posted here, or the answer routed to the thread
    if kind in USER_INPUT_TYPES:
        if kind == "user.define_outcome":
            rubric = event.get("rubric") or {}
            # The gateway stores a file rubric as its text; a file id is all there is else.
            text = rubric.get("content") or f"(the rubric is the file {rubric.get('file_id')})"
            t.outcome = Outcome(
                id=event["outcome_id"],
                description=event["description"],
                rubric=text,
                max_iterations=event.get("max_iterations") or DEFAULT_MAX_ITERATIONS,
                since=len(t.messages),
            )
            blocks = [{"type": "text", "text": outcome_task(event["description"], text)}]
            if t.messages and t.messages[-1]["role"] == "user":
                t.outcome.since -= 1  # merged into the last user message
            _append(t.messages, "user", blocks)
        else:
            t.held.extend(_text_blocks(event.get("content")))
            _release_held(t)
        if t.outcome is not None:
            t.outcome.due = False  # new input: the agent answers it before any evaluation
        if not t.turn_open:
            t.model_calls_this_turn = 0
        t.turn_open = t.unseen_input = True
    elif kind == "agent.message":
        _append(t.messages, "assistant", _text_blocks(event.get("content")))
    elif kind in TOOL_USE_TYPES:
        server = event.get("mcp_server_name") if kind == "agent.mcp_tool_use" else None
        # The model called an MCP tool by its prefixed name; the event names server and tool.
        model_name = event["name"] if server is None else mcp_tool_name(server, event["name"])
        _append(
            t.messages,
            "assistant",
            [
                {
                    "type": "tool_use",
                    "id": event["id"],
                    "name": model_name,
                    "input": event.get("input", {}),
                }
            ],
        )
        t.open_calls[event["id"]] = ToolCall(
            id=event["id"],
            name=event["name"],
            input=event.get("input", {}),
            custom=kind == "agent.custom_tool_use",
            ask=event.get("evaluated_permission") == "ask",
            mcp_server=server,
        )
    elif kind in TOOL_RESULT_TYPES or kind == "user.custom_tool_result":
        call_id = (
            event.get("tool_use_id")
            or event.get("custom_tool_use_id")
            or event.get("mcp_tool_use_id")
        )
        if call_id in t.open_calls:
            del t.open_calls[call_id]
            _append(
                t.messages,
                "user",
                [_result_block(call_id, event.get("content"), bool(event.get("is_error")))],
            )
            _release_held(t)
    elif kind == "user.tool_confirmation":
        call = t.open_calls.get(event.get("tool_use_id", ""))
        if call is not None and call.ask and call.decision is None:
            call.decision = event.get("result")
            call.deny_message = event.get("deny_message") or event.get("message")
    elif kind == "user.interrupt":
        # One with `session_thread_id` is the echo of an interrupt of one thread (delivered
        # to the thread's log by the gateway): the coordinator keeps running.
        if not event.get("session_thread_id"):
            t.interrupted = t.turn_open
            t.unseen_input = False  # the interrupt ends the turn with what came before it
    elif kind == "span.model_request_start":
        t.model_calls_this_turn += 1
        t.unseen_input, t.model_answering = False, True
    elif kind == "agent.thread_message_received":
        # A thread's tokens count into its coordinator's usage and budget.
        _add_usage(t, event.get("usage") or {})
    elif kind in ("span.model_request_end", "span.outcome_evaluation_end"):
        if kind == "span.model_request_end":
            t.model_answering = False
            _release_held(t)
        # The grader's tokens count into the session's usage and budgets.
        _add_usage(t, event.get("model_usage") or event.get("usage") or {})
        if kind == "span.outcome_evaluation_end":
            _evaluated(t, event)
        elif (
            t.outcome is not None
            and not t.open_calls
            and not event.get("is_error")
            and not t.unseen_input  # input held during the response is answered first
        ):
            # A response without tool calls ended the agent's turn (a failed or interrupted
            # request is an error span; a refusal or a limit idles the session).
            t.outcome.due = True
    elif kind == "span.outcome_evaluation_start":
        if t.outcome is not None and t.outcome.id == event.get("outcome_id"):
            t.outcome.evaluating, t.outcome.iteration = event["id"], event["iteration"]
    elif kind == "agent.thread_context_compacted":
        # Everything before is replaced by the summary the compacting worker recorded.
        if t.outcome is not None:
            t.outcome.since, t.outcome.due = 0, False
        t.messages = [
            {
                "role": "user",
                "content": [{"type": "text", "text": COMPACTION_PREFIX + event.get("summary", "")}],
            }
        ]
    elif kind == "session.status_running":
        t.status, t.waiting_on = "running", []
    elif kind == "session.status_idle":
        stop_reason = event.get("stop_reason") or {}
        t.status, t.stop_reason = "idle", stop_reason.get("type")
        t.waiting_on = list(stop_reason.get("event_ids") or [])
        # No request outlives its turn's idle (one a crashed worker began never ended).
        t.model_answering = False
        _release_held(t)
        if t.stop_reason == "end_turn" and t.unseen_input:
            # Input landed between the turn's last read and its idle: a new turn answers it.
            t.interrupted, t.model_calls_this_turn = False, 0
        elif t.stop_reason != "requires_action":
            t.turn_open = t.interrupted = t.unseen_input = False
            if t.outcome is not None:
                t.outcome.due = False
    elif kind == "session.status_terminated":
        t.status, t.turn_open, t.interrupted = "terminated", False, False
    elif kind == "session.status_rescheduled":
        t.status = "rescheduling"


def _evaluated(t: Transcript, event: dict[str, Any]) -> None:
    """Fold a `span.outcome_evaluation_end`: feedback for a revision, a last turn when the
    iterations ran out, or the outcome closed."""
    outcome = t.outcome
    if outcome is None or outcome.id != event.get("outcome_id"):
        return
    outcome.evaluating, outcome.due = None, False
    result, explanation = event.get("result"), event.get("explanation", "")
    if result == "needs_revision":
        text = revision_request(explanation, outcome.iteration, outcome.max_iterations)
        _append(t.messages, "user", [{"type": "text", "text": text}])
        outcome.iteration += 1
        return
    t.outcome = None
    if result == "max_iterations_reached":
        text = final_acknowledgement(explanation, outcome.max_iterations)
        _append(t.messages, "user", [{"type": "text", "text": text}])


def _add_usage(t: Transcript, usage: dict[str, Any]) -> None:
    for key, value in usage.items():
        if isinstance(value, int):
            t.usage[key] = t.usage.get(key, 0) + value
