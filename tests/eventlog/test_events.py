"""Event models against the JSON of the Managed Agents reference and the official SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent
from pydantic import TypeAdapter, ValidationError

from paddock.eventlog import (
    EVENT_TYPES,
    AgentCustomToolUseEvent,
    AgentMcpToolResultEvent,
    AgentMcpToolUseEvent,
    AgentMessageEvent,
    AgentThinkingEvent,
    AgentThreadContextCompactedEvent,
    AgentThreadMessageReceivedEvent,
    AgentThreadMessageSentEvent,
    AgentToolResultEvent,
    AgentToolUseEvent,
    AnyEvent,
    AutoJudgement,
    ErrorDetail,
    Evaluation,
    ImageBlock,
    ModelUsage,
    RetryStatus,
    SessionDeletedEvent,
    SessionErrorEvent,
    SessionStatusIdleEvent,
    SessionStatusRescheduledEvent,
    SessionStatusRunningEvent,
    SessionStatusTerminatedEvent,
    SessionThreadCreatedEvent,
    SessionThreadStatusIdleEvent,
    SessionThreadStatusRunningEvent,
    SessionThreadStatusTerminatedEvent,
    SessionUsageEvent,
    SpanModelRequestEndEvent,
    SpanModelRequestStartEvent,
    SpanOutcomeEvaluationEndEvent,
    SpanOutcomeEvaluationOngoingEvent,
    SpanOutcomeEvaluationStartEvent,
    StopReason,
    TextBlock,
    TextRubric,
    UrlSource,
    UsageSnapshot,
    UserCustomToolResultEvent,
    UserDefineOutcomeEvent,
    UserInterruptEvent,
    UserMessageEvent,
    UserToolConfirmationEvent,
    UserToolResultEvent,
    parse_event,
    payload,
)

# Verbatim from reference/managed-agents-api.md §5.4 and §11.6 (stream frames) and §11.5
# (the echo of a sent message): the persisted shapes.
REFERENCE_EVENTS = [
    '{"type":"session.status_running","id":"sevt_01A","processed_at":"2026-04-08T12:00:01.120Z"}',
    '{"type":"agent.tool_use","id":"sevt_01B","name":"bash","input":{"command":"ls"},"evaluated_permission":"ask","evaluation":{"type":"always_ask"},"processed_at":"2026-04-08T12:00:03.002Z"}',
    '{"type":"session.status_idle","id":"sevt_01C","stop_reason":{"type":"requires_action","event_ids":["sevt_01B"]},"stop_details":null,"processed_at":"2026-04-08T12:00:03.010Z"}',
    '{"type":"user.message","id":"sevt_01A","content":[{"type":"text","text":"List the files in /workspace"}],"processed_at":"2026-04-08T12:00:06.001Z"}',
    '{"type":"session.status_running","id":"sevt_01B","processed_at":"2026-04-08T12:00:06.010Z"}',
    '{"type":"span.model_request_start","id":"sevt_01C","processed_at":"2026-04-08T12:00:06.020Z"}',
    '{"type":"agent.tool_use","id":"sevt_01D","name":"bash","input":{"command":"ls /workspace"},"evaluated_permission":"allow","evaluation":{"type":"always_allow"},"processed_at":"2026-04-08T12:00:07.500Z"}',
    '{"type":"span.model_request_end","id":"sevt_01E","model_request_start_id":"sevt_01C","is_error":false,"model_usage":{"input_tokens":3571,"output_tokens":72,"cache_creation_input_tokens":0,"cache_read_input_tokens":6656},"processed_at":"2026-04-08T12:00:07.510Z"}',
    '{"type":"agent.tool_result","id":"sevt_01F","tool_use_id":"sevt_01D","content":[{"type":"text","text":"README.md\\nsrc"}],"is_error":false,"processed_at":"2026-04-08T12:00:07.900Z"}',
    '{"type":"span.model_request_start","id":"sevt_01G","processed_at":"2026-04-08T12:00:07.910Z"}',
    '{"type":"agent.message","id":"sevt_01H","content":[{"type":"text","text":"The workspace contains README.md and src/."}],"processed_at":"2026-04-08T12:00:09.000Z"}',
    '{"type":"span.model_request_end","id":"sevt_01I","model_request_start_id":"sevt_01G","is_error":false,"model_usage":{"input_tokens":3700,"output_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":6656},"processed_at":"2026-04-08T12:00:09.010Z"}',
    '{"type":"session.status_idle","id":"sevt_01J","stop_reason":{"type":"end_turn"},"stop_details":null,"processed_at":"2026-04-08T12:00:09.020Z"}',
    '{"type": "user.message", "id": "sevt_01A…", "content": [{"type": "text", "text": "List the files in /workspace"}], "processed_at": null}',
]

# Verbatim from §11.5: what clients send (no id, no processed_at yet).
REFERENCE_SENT = [
    '{"type": "user.message", "content": [{"type": "text", "text": "List the files in /workspace"}]}',
    '{"type":"user.interrupt"}',
    '{"type":"user.tool_confirmation","tool_use_id":"sevt_…","result":"allow"}',
    '{"type":"user.tool_confirmation","tool_use_id":"sevt_…","result":"deny","deny_message":"…"}',
    '{"type":"user.custom_tool_result","custom_tool_use_id":"sevt_…","content":[{"type":"text","text":"…"}],"is_error":false}',
]

SDK_EVENT: TypeAdapter[Any] = TypeAdapter(BetaManagedAgentsSessionEvent)
ENVELOPE = {"id": "sevt_0VbZmM1Q000001abcd", "processed_at": "2026-04-08T12:00:09.020Z"}
USAGE = ModelUsage(
    input_tokens=10, output_tokens=2, cache_creation_input_tokens=0, cache_read_input_tokens=5
)

# One of every event type the log stores, with its optional fields set.
EXAMPLES: list[AnyEvent] = [
    UserMessageEvent(
        content=[TextBlock(text="hi"), ImageBlock(source=UrlSource(url="https://x/y.png"))]
    ),
    UserInterruptEvent(),
    UserToolConfirmationEvent(tool_use_id="sevt_1", result="deny", deny_message="no"),
    UserCustomToolResultEvent(custom_tool_use_id="sevt_2", content=[TextBlock(text="42")]),
    UserToolResultEvent(tool_use_id="sevt_3", content=[TextBlock(text="ok")], is_error=False),
    AgentMessageEvent(content=[TextBlock(text="hello")]),
    AgentThinkingEvent(),
    AgentToolUseEvent(
        name="bash",
        input={"command": "ls"},
        evaluated_permission="ask",
        evaluation=Evaluation(
            type="auto", evaluated_permission=AutoJudgement(type="ask", reason_code="indeterminate")
        ),
    ),
    AgentToolResultEvent(tool_use_id="sevt_4", content=[TextBlock(text="a\nb")], is_error=True),
    AgentCustomToolUseEvent(name="lookup", input={"q": "x"}),
    AgentMcpToolUseEvent(
        mcp_server_name="gh", name="search", input={}, evaluated_permission="allow"
    ),
    AgentMcpToolResultEvent(mcp_tool_use_id="sevt_5", content=[TextBlock(text="r")]),
    AgentThreadContextCompactedEvent(),
    SessionStatusRunningEvent(),
    SessionStatusIdleEvent(stop_reason=StopReason(type="requires_action", event_ids=["sevt_6"])),
    SessionStatusRescheduledEvent(),
    SessionStatusTerminatedEvent(),
    SessionErrorEvent(
        error=ErrorDetail.model_validate(
            {
                "type": "mcp_connection_failed_error",
                "message": "refused",
                "retry_status": {"type": "retrying"},
                "mcp_server_name": "gh",
            }
        )
    ),
    SessionUsageEvent(usage=UsageSnapshot(input_tokens=10, output_tokens=2, active_seconds=1.5)),
    SessionDeletedEvent(),
    SpanModelRequestStartEvent(),
    SpanModelRequestEndEvent(model_request_start_id="sevt_7", is_error=False, model_usage=USAGE),
    UserDefineOutcomeEvent(
        description="a poem",
        rubric=TextRubric(content="four lines"),
        max_iterations=2,
        outcome_id="outc_1",
    ),
    SpanOutcomeEvaluationStartEvent(outcome_id="outc_1", iteration=0),
    SpanOutcomeEvaluationOngoingEvent(outcome_id="outc_1", iteration=0),
    SpanOutcomeEvaluationEndEvent(
        outcome_evaluation_start_id="sevt_8",
        outcome_id="outc_1",
        iteration=0,
        result="needs_revision",
        explanation="add a line",
        usage=USAGE,
    ),
    SessionThreadCreatedEvent(session_thread_id="sthr_1", agent_name="alpha"),
    SessionThreadStatusRunningEvent(session_thread_id="sthr_1", agent_name="alpha"),
    AgentThreadMessageSentEvent(
        to_session_thread_id="sthr_1", to_agent_name="alpha", content=[TextBlock(text="go")]
    ),
    AgentThreadMessageReceivedEvent(
        from_session_thread_id="sthr_1",
        from_agent_name="alpha",
        content=[TextBlock(text="done")],
        usage=USAGE,
    ),
    SessionThreadStatusIdleEvent(
        session_thread_id="sthr_1", agent_name="alpha", stop_reason=StopReason(type="end_turn")
    ),
    SessionThreadStatusTerminatedEvent(session_thread_id="sthr_1", agent_name="alpha"),
]


@pytest.mark.parametrize("text", REFERENCE_EVENTS)
def test_reference_events_round_trip_exactly(text: str) -> None:
    event = parse_event(text)
    assert json.loads(event.model_dump_json()) == json.loads(text)
    assert event.model_dump(mode="json") == json.loads(text)
    assert type(event) is EVENT_TYPES[event.type]


@pytest.mark.parametrize("text", REFERENCE_SENT)
def test_sent_events_round_trip_without_the_envelope(text: str) -> None:
    event = parse_event(text)
    assert event.id is None
    assert event.processed_at is None
    assert json.loads(payload(event)) == json.loads(text)


def test_every_event_type_has_an_example() -> None:
    assert {event.type for event in EXAMPLES} == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 32


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda event: event.type)
def test_the_official_sdk_reads_what_we_write_and_we_read_what_it_writes(event: AnyEvent) -> None:
    ours = {**event.model_dump(mode="json"), **ENVELOPE}
    sdk = SDK_EVENT.validate_python(ours)
    assert sdk.type == event.type
    assert type(sdk).__name__.startswith("BetaManagedAgents")  # a typed variant, not a dict
    theirs = sdk.model_dump(mode="json", exclude_unset=True)
    assert parse_event(theirs) == parse_event(ours)
    assert json.loads(parse_event(theirs).model_dump_json()) == ours


def test_unknown_fields_are_ignored_except_in_open_ended_objects() -> None:
    newer = {"type": "agent.thinking", "id": "sevt_1", "processed_at": None, "future": [1]}
    assert parse_event(newer).model_dump(mode="json") == {
        key: value for key, value in newer.items() if key != "future"
    }
    error = {
        "type": "session.error",
        "id": "sevt_2",
        "processed_at": None,
        "error": {
            "type": "credential_host_unreachable_error",
            "message": "blocked",
            "retry_status": {"type": "exhausted"},
            "vault_id": "vlt_1",
            "credential_id": "vcrd_1",
        },
    }
    assert parse_event(error).model_dump(mode="json") == error
    usage = {
        "type": "session.usage",
        "id": "sevt_3",
        "processed_at": None,
        "usage": {"new_counter": 3},
    }
    assert parse_event(usage).model_dump(mode="json") == usage


def test_stop_reason_event_ids_go_with_requires_action_only() -> None:
    with pytest.raises(ValidationError, match="event_ids"):
        StopReason(type="requires_action")
    with pytest.raises(ValidationError, match="event_ids"):
        StopReason(type="end_turn", event_ids=[])


def test_unknown_or_malformed_events_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_event({"type": "user.define_outcome", "description": "x"})
    with pytest.raises(ValidationError):
        parse_event({"type": "user.message"})  # content missing
    with pytest.raises(ValidationError):
        parse_event({"type": "session.error", "error": {"type": "x", "message": "m"}})


def test_retry_status_and_timestamps_serialise_as_the_api_does() -> None:
    event = parse_event(
        {
            "type": "session.error",
            "id": "sevt_1",
            "processed_at": "2026-04-08T14:00:01.5+02:00",
            "error": {
                "type": "unknown_error",
                "message": "boom",
                "retry_status": {"type": "terminal"},
            },
        }
    )
    assert isinstance(event, SessionErrorEvent)
    assert event.error.retry_status == RetryStatus(type="terminal")
    assert event.model_dump(mode="json")["processed_at"] == "2026-04-08T12:00:01.500Z"
