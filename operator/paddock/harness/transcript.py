"""The conversation rebuilt from a session's event log, and what the harness must do next.

A pure fold over event dicts (the Managed Agents JSON shapes), so that any worker can pick
a session up from its log alone. Tool calls are identified by the id of their
`agent.tool_use` / `agent.custom_tool_use` event, which is also the `tool_use` id the model
sees, so results recorded under that id always pair with their call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from paddock.harness.tools import mcp_tool_name

USER_INPUT_TYPES = frozenset({"user.message"})
TOOL_USE_TYPES = frozenset({"agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"})
TOOL_RESULT_TYPES = frozenset({"agent.tool_result", "user.tool_result", "agent.mcp_tool_result"})
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
class Idle:
    """Nothing to do until the user sends something."""


Step = CallModel | RunTools | AwaitUser | EndInterrupted | Idle


@dataclass
class Transcript:
    """The state of a session as its event log tells it."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    open_calls: dict[str, ToolCall] = field(default_factory=dict)
    turn_open: bool = False
    """A user message started a turn that has not ended with an idle (other than
    `requires_action`)."""
    interrupted: bool = False
    model_calls_this_turn: int = 0
    last_event_id: str | None = None
    status: str = "idle"
    stop_reason: str | None = None
    waiting_on: list[str] = field(default_factory=list)
    """Event ids the last `requires_action` idle listed."""
    usage: dict[str, int] = field(default_factory=dict)

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
        if self.turn_open and self.messages and self.messages[-1]["role"] == "user":
            return CallModel()
        return Idle()


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
    if kind in USER_INPUT_TYPES:
        _append(t.messages, "user", _text_blocks(event.get("content")))
        if not t.turn_open:
            t.model_calls_this_turn = 0
        t.turn_open = True
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
    elif kind == "user.tool_confirmation":
        call = t.open_calls.get(event.get("tool_use_id", ""))
        if call is not None and call.ask and call.decision is None:
            call.decision = event.get("result")
            call.deny_message = event.get("deny_message") or event.get("message")
    elif kind == "user.interrupt":
        t.interrupted = t.turn_open
    elif kind == "span.model_request_start":
        t.model_calls_this_turn += 1
    elif kind == "span.model_request_end":
        for key, value in (event.get("model_usage") or {}).items():
            if isinstance(value, int):
                t.usage[key] = t.usage.get(key, 0) + value
    elif kind == "agent.thread_context_compacted":
        # Everything before is replaced by the summary the compacting worker recorded.
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
        if t.stop_reason != "requires_action":
            t.turn_open = t.interrupted = False
    elif kind == "session.status_terminated":
        t.status, t.turn_open, t.interrupted = "terminated", False, False
    elif kind == "session.status_rescheduled":
        t.status = "rescheduling"
