"""Session events in the shapes of the Managed Agents API (reference §5).

Every model serialises (``model_dump(mode="json")`` / ``model_dump_json()``) to the JSON
the API sends: snake_case names, optional fields left out when unset, ``id``,
``processed_at`` and ``session.status_idle.stop_details`` always present.

Unknown fields are ignored, so an older reader still reads what a newer writer wrote.
They are kept (``extra="allow"``) only where the reference has open-ended objects: the
variant fields of ``session.error.error`` and the usage snapshot of ``session.usage``.
Keeping them everywhere would cost half again the validation time of a replay.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, model_validator


def _rfc3339_millis(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The API writes timestamps as RFC 3339 in UTC with milliseconds: 2026-04-08T12:00:01.120Z.
Timestamp = Annotated[datetime, PlainSerializer(_rfc3339_millis, when_used="json")]


def _is_none(value: object) -> bool:
    return value is None


def optional() -> Any:
    """An optional field: None by default and left out of the JSON when None."""
    return Field(default=None, exclude_if=_is_none)


class Wire(BaseModel):
    """Base of every API object here: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


# Content blocks (§5.5).


class Base64Source(Wire):
    type: Literal["base64"] = "base64"
    media_type: str
    data: str


class UrlSource(Wire):
    type: Literal["url"] = "url"
    url: str


class FileSource(Wire):
    type: Literal["file"] = "file"
    file_id: str


class PlainTextSource(Wire):
    type: Literal["text"] = "text"
    media_type: Literal["text/plain"] = "text/plain"
    data: str


ImageSource = Annotated[Base64Source | UrlSource | FileSource, Field(discriminator="type")]
DocumentSource = Annotated[
    Base64Source | PlainTextSource | UrlSource | FileSource, Field(discriminator="type")
]


class TextBlock(Wire):
    type: Literal["text"] = "text"
    text: str


class ImageBlock(Wire):
    type: Literal["image"] = "image"
    source: ImageSource


class DocumentBlock(Wire):
    type: Literal["document"] = "document"
    source: DocumentSource
    title: str | None = optional()
    context: str | None = optional()


class SearchResultBlock(Wire):
    type: Literal["search_result"] = "search_result"
    source: str
    title: str
    content: list[TextBlock]
    citations: dict[str, Any] | None = optional()


class RedactedBlock(Wire):
    """Content withheld by policy."""

    type: Literal["redacted"] = "redacted"


UserContent = Annotated[
    TextBlock | ImageBlock | DocumentBlock | RedactedBlock, Field(discriminator="type")
]
AgentContent = Annotated[TextBlock | RedactedBlock, Field(discriminator="type")]
ToolResultContent = Annotated[
    TextBlock | ImageBlock | DocumentBlock | SearchResultBlock, Field(discriminator="type")
]


# Nested objects of agent and session events.


class AutoJudgement(Wire):
    """The server's judgement of one call under an ``auto`` permission policy."""

    type: Literal["allow", "ask", "deny"]
    reason_code: str | None = optional()


class Evaluation(Wire):
    """Which permission policy produced ``evaluated_permission``."""

    type: Literal["always_allow", "always_ask", "auto"]
    evaluated_permission: AutoJudgement | None = optional()


class StopReason(Wire):
    """Why a turn stopped (§5.3). ``event_ids`` only with ``requires_action``."""

    type: Literal["end_turn", "requires_action", "retries_exhausted", "budget_reached", "refusal"]
    event_ids: list[str] | None = optional()

    @model_validator(mode="after")
    def _event_ids_iff_requires_action(self) -> StopReason:
        if (self.type == "requires_action") != (self.event_ids is not None):
            raise ValueError("event_ids is required with requires_action and only there")
        return self


class StopDetails(Wire):
    type: Literal["refusal"] = "refusal"
    category: str | None = optional()
    explanation: str | None = optional()


class RetryStatus(Wire):
    type: Literal["retrying", "exhausted", "terminal"]


class ErrorDetail(Wire):
    """``session.error.error``; variant-specific fields (``mcp_server_name``, ...) are extra."""

    model_config = ConfigDict(extra="allow")

    type: str
    message: str
    retry_status: RetryStatus


class ModelUsage(Wire):
    """Tokens of one model request."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    speed: Literal["standard", "fast"] | None = optional()


class Money(Wire):
    amount: str
    """Minor units (cents) as an integer string."""
    currency: str


class UsageSnapshot(Wire):
    """Cumulative usage of a session, as ``session.usage`` reports it; new counters are kept."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int | None = optional()
    output_tokens: int | None = optional()
    cache_read_input_tokens: int | None = optional()
    cache_creation: dict[str, int] | None = optional()
    server_tool_use: dict[str, int] | None = optional()
    list_cost: Money | None = optional()
    active_seconds: float | None = optional()


# Events. `id` and `processed_at` are assigned by the log when the event is appended.


class Event(Wire):
    """Base of every session event."""

    type: str
    id: str | None = None
    """``sevt_`` id; None until the event is appended."""
    processed_at: Timestamp | None = None
    """When the log stored the event (server time); None until appended."""


class UserMessageEvent(Event):
    type: Literal["user.message"] = "user.message"
    content: list[UserContent]


class UserInterruptEvent(Event):
    type: Literal["user.interrupt"] = "user.interrupt"
    session_thread_id: str | None = optional()


class UserToolConfirmationEvent(Event):
    type: Literal["user.tool_confirmation"] = "user.tool_confirmation"
    tool_use_id: str
    result: Literal["allow", "deny"]
    deny_message: str | None = optional()
    session_thread_id: str | None = optional()


class UserCustomToolResultEvent(Event):
    type: Literal["user.custom_tool_result"] = "user.custom_tool_result"
    custom_tool_use_id: str
    content: list[ToolResultContent] | None = optional()
    is_error: bool | None = optional()
    session_thread_id: str | None = optional()


class UserToolResultEvent(Event):
    """A built-in tool's result posted by a self-hosted worker."""

    type: Literal["user.tool_result"] = "user.tool_result"
    tool_use_id: str
    content: list[ToolResultContent] | None = optional()
    is_error: bool | None = optional()
    session_thread_id: str | None = optional()


class AgentMessageEvent(Event):
    type: Literal["agent.message"] = "agent.message"
    content: list[AgentContent]


class AgentThinkingEvent(Event):
    """A progress signal; thinking text is not exposed."""

    type: Literal["agent.thinking"] = "agent.thinking"


class AgentToolUseEvent(Event):
    type: Literal["agent.tool_use"] = "agent.tool_use"
    name: str
    input: dict[str, Any]
    evaluated_permission: Literal["allow", "ask", "deny"] | None = optional()
    evaluation: Evaluation | None = optional()
    session_thread_id: str | None = optional()
    session_thread_event_id: str | None = optional()
    """Paddock extension, on a cross-post only: the id of the event in the thread's own log
    (the gateway routes the client's answer there)."""


class AgentToolResultEvent(Event):
    type: Literal["agent.tool_result"] = "agent.tool_result"
    tool_use_id: str
    content: list[ToolResultContent] | None = optional()
    is_error: bool | None = optional()


class AgentCustomToolUseEvent(Event):
    type: Literal["agent.custom_tool_use"] = "agent.custom_tool_use"
    name: str
    input: dict[str, Any]
    session_thread_id: str | None = optional()
    session_thread_event_id: str | None = optional()
    """Paddock extension, on a cross-post only: the id of the event in the thread's own log
    (the gateway routes the client's answer there)."""


class AgentMcpToolUseEvent(Event):
    type: Literal["agent.mcp_tool_use"] = "agent.mcp_tool_use"
    mcp_server_name: str
    name: str
    input: dict[str, Any]
    evaluated_permission: Literal["allow", "ask", "deny"] | None = optional()
    evaluation: Evaluation | None = optional()
    session_thread_id: str | None = optional()
    session_thread_event_id: str | None = optional()
    """Paddock extension, on a cross-post only: the id of the event in the thread's own log
    (the gateway routes the client's answer there)."""


class AgentMcpToolResultEvent(Event):
    type: Literal["agent.mcp_tool_result"] = "agent.mcp_tool_result"
    mcp_tool_use_id: str
    content: list[ToolResultContent] | None = optional()
    is_error: bool | None = optional()


class AgentThreadContextCompactedEvent(Event):
    type: Literal["agent.thread_context_compacted"] = "agent.thread_context_compacted"
    summary: str | None = optional()
    """Paddock extension: the summary that replaces the earlier turns. A worker resuming the
    session rebuilds the conversation from it. Clients that do not know it ignore it."""


class SessionStatusRunningEvent(Event):
    type: Literal["session.status_running"] = "session.status_running"


class SessionStatusIdleEvent(Event):
    type: Literal["session.status_idle"] = "session.status_idle"
    stop_reason: StopReason
    stop_details: StopDetails | None = None
    """Always written, as null when there is nothing to report (as the API does)."""


# Multi-agent threads (see paddock.harness.threads): written to the coordinator's log.


class ThreadEvent(Event):
    """An event about one thread, the Agent it runs named as the coordinator's roster does."""

    session_thread_id: str
    agent_name: str


class SessionThreadCreatedEvent(ThreadEvent):
    type: Literal["session.thread_created"] = "session.thread_created"


class AgentThreadMessageSentEvent(Event):
    type: Literal["agent.thread_message_sent"] = "agent.thread_message_sent"
    to_session_thread_id: str
    to_agent_name: str | None = optional()
    content: list[AgentContent]


class AgentThreadMessageReceivedEvent(Event):
    type: Literal["agent.thread_message_received"] = "agent.thread_message_received"
    from_session_thread_id: str
    from_agent_name: str | None = optional()
    content: list[AgentContent]
    usage: ModelUsage | None = optional()
    """Paddock extension: the tokens the thread spent on this reply, which count into the
    session's usage and budget (a budget covers the whole tree of threads)."""


class SessionThreadStatusRunningEvent(ThreadEvent):
    type: Literal["session.thread_status_running"] = "session.thread_status_running"


class SessionThreadStatusIdleEvent(ThreadEvent):
    type: Literal["session.thread_status_idle"] = "session.thread_status_idle"
    stop_reason: StopReason
    stop_details: StopDetails | None = None


class SessionThreadStatusTerminatedEvent(ThreadEvent):
    type: Literal["session.thread_status_terminated"] = "session.thread_status_terminated"


class SessionStatusRescheduledEvent(Event):
    type: Literal["session.status_rescheduled"] = "session.status_rescheduled"


class SessionStatusTerminatedEvent(Event):
    type: Literal["session.status_terminated"] = "session.status_terminated"


class SessionErrorEvent(Event):
    type: Literal["session.error"] = "session.error"
    error: ErrorDetail


class SessionUsageEvent(Event):
    type: Literal["session.usage"] = "session.usage"
    usage: UsageSnapshot
    budget: dict[str, Any] | None = optional()


class SessionDeletedEvent(Event):
    """The last event of a session: written by ``EventLog.delete_session`` to end tails."""

    type: Literal["session.deleted"] = "session.deleted"


class SpanModelRequestStartEvent(Event):
    type: Literal["span.model_request_start"] = "span.model_request_start"


class SpanModelRequestEndEvent(Event):
    type: Literal["span.model_request_end"] = "span.model_request_end"
    model_request_start_id: str
    is_error: bool | None = optional()
    model_usage: ModelUsage


class TextRubric(Wire):
    type: Literal["text"] = "text"
    content: str


class FileRubric(Wire):
    type: Literal["file"] = "file"
    file_id: str


Rubric = Annotated[TextRubric | FileRubric, Field(discriminator="type")]

OutcomeResult = Literal[
    "satisfied", "needs_revision", "max_iterations_reached", "failed", "interrupted"
]


class UserDefineOutcomeEvent(Event):
    """An outcome the agent works toward, graded against ``rubric`` after each turn (§8.3).
    ``outcome_id`` is assigned when the gateway accepts it."""

    type: Literal["user.define_outcome"] = "user.define_outcome"
    description: str
    rubric: Rubric
    max_iterations: int | None = optional()
    """Evaluate-then-revise cycles before giving up; unset means 3."""
    outcome_id: str


class SpanOutcomeEvaluationStartEvent(Event):
    type: Literal["span.outcome_evaluation_start"] = "span.outcome_evaluation_start"
    outcome_id: str
    iteration: int
    """0-based revision cycle."""


class SpanOutcomeEvaluationOngoingEvent(Event):
    """A heartbeat while the grader works."""

    type: Literal["span.outcome_evaluation_ongoing"] = "span.outcome_evaluation_ongoing"
    outcome_id: str
    iteration: int


class SpanOutcomeEvaluationEndEvent(Event):
    type: Literal["span.outcome_evaluation_end"] = "span.outcome_evaluation_end"
    outcome_evaluation_start_id: str
    outcome_id: str
    iteration: int
    result: OutcomeResult
    explanation: str
    usage: ModelUsage
    """The grader's tokens in this cycle (they count into the session's usage)."""


AnyEvent = Annotated[
    UserMessageEvent
    | UserInterruptEvent
    | UserToolConfirmationEvent
    | UserCustomToolResultEvent
    | UserToolResultEvent
    | AgentMessageEvent
    | AgentThinkingEvent
    | AgentToolUseEvent
    | AgentToolResultEvent
    | AgentCustomToolUseEvent
    | AgentMcpToolUseEvent
    | AgentMcpToolResultEvent
    | AgentThreadContextCompactedEvent
    | SessionStatusRunningEvent
    | SessionStatusIdleEvent
    | SessionStatusRescheduledEvent
    | SessionStatusTerminatedEvent
    | SessionErrorEvent
    | SessionUsageEvent
    | SessionDeletedEvent
    | SpanModelRequestStartEvent
    | SpanModelRequestEndEvent
    | UserDefineOutcomeEvent
    | SpanOutcomeEvaluationStartEvent
    | SpanOutcomeEvaluationOngoingEvent
    | SpanOutcomeEvaluationEndEvent
    | SessionThreadCreatedEvent
    | AgentThreadMessageSentEvent
    | AgentThreadMessageReceivedEvent
    | SessionThreadStatusRunningEvent
    | SessionThreadStatusIdleEvent
    | SessionThreadStatusTerminatedEvent,
    Field(discriminator="type"),
]
"""Any event the log stores, discriminated on ``type``."""

EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls for cls in get_args(get_args(AnyEvent)[0])
}
"""The model class of every event type the log stores, by ``type``."""

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
EVENT_LIST_ADAPTER: TypeAdapter[list[AnyEvent]] = TypeAdapter(list[AnyEvent])

# Event types that are input for the agent loop: appending one wakes the session's worker.
INPUT_PREFIX = "user."

TOOL_USE_TYPES = frozenset({"agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"})
"""The agent's tool calls: built-in, custom (answered by the client) and MCP."""


def parse_event(data: str | bytes | dict[str, Any]) -> AnyEvent:
    """Validate one event from JSON text or a decoded dict; ``ValidationError`` if invalid."""
    if isinstance(data, dict):
        return EVENT_ADAPTER.validate_python(data)
    return EVENT_ADAPTER.validate_json(data)
