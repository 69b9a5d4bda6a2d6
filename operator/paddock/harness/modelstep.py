"""The model step: one streamed, retried model request, and the events it becomes (agent
messages, thinking, tool uses, the request's span), or a compaction of the conversation."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
from anthropic.types import Message

from paddock.eventlog import (
    AgentCustomToolUseEvent,
    AgentMcpToolUseEvent,
    AgentMessageEvent,
    AgentThinkingEvent,
    AgentThreadContextCompactedEvent,
    AgentToolUseEvent,
    AnyEvent,
    Evaluation,
    ModelUsage,
    SessionSettings,
    SpanModelRequestEndEvent,
    SpanModelRequestStartEvent,
    StopDetails,
    TextBlock,
)
from paddock.harness import metrics
from paddock.harness.budget import limit_reached
from paddock.harness.interrupts import Interrupted, Interrupts
from paddock.harness.model import classify, stream_message
from paddock.harness.previews import Previews, previewing
from paddock.harness.retries import Failure, call_with_retries, session_error
from paddock.harness.sessionlog import SessionLog
from paddock.harness.settings import WorkerSettings
from paddock.harness.tools import Toolbox

DEFAULT_SYSTEM = "You are a helpful agent. Use the tools in your sandbox to do the task."
COMPACTION_REQUEST = (
    "The conversation is getting long. Write a summary that lets you continue the task "
    "without the earlier messages: the user's requests, what has been done and found, the "
    "state of files and commands, and what remains to do. Reply with the summary only."
)


class ModelStep:
    """Takes the model steps of one session during one worker's run of it."""

    def __init__(
        self,
        session: SessionLog,
        interrupts: Interrupts,
        model: anthropic.AsyncAnthropic,
        toolbox: Toolbox,
        settings: WorkerSettings,
        session_settings: SessionSettings | None,
        tools: Callable[[], Awaitable[Toolbox]] | None = None,
    ) -> None:
        self.session = session
        self.interrupts = interrupts
        self.model = model
        self.toolbox = toolbox
        self.tools = tools
        """The toolbox of the next request, MCP tools included (None: ``toolbox`` as is)."""
        self.settings = settings
        self.spec = settings.spec
        self.session_settings = session_settings
        self.previews: Previews | None = None

    async def run(self) -> None:
        """Call the model with the conversation and append its response; or end the turn at
        a limit, or compact the conversation when it grew too long."""
        limit = limit_reached(self.spec, self.session_settings, self.session.transcript)
        if limit is not None:
            await self.session.idle(limit.stop_reason, limit.event)
            return
        if self.tools is not None:
            try:
                self.toolbox = await self.tools()
            except Interrupted:
                return  # the turn loop sees the interrupt in the log and ends the turn
        if self.needs_compaction():
            await self.compact()
            return
        (start,) = await self.session.emit(SpanModelRequestStartEvent())
        began = time.monotonic()
        try:
            message = await self.interrupts.interruptible(self.call(self.request()))
        except Interrupted:
            await self.session.emit(span_end(start.id, None), key=f"response:{start.id}")
            return
        if message is None:
            await self.session.idle(
                "retries_exhausted", span_end(start.id, None), key=f"response:{start.id}"
            )
            return
        metrics.MODEL_LATENCY.observe(time.monotonic() - began)
        events, stop = self.response_events(message)
        # The ids the previews announced, if the previews match the response.
        reserved = self.previews.reserved(events) if self.previews else []
        events.append(span_end(start.id, message))
        key = f"response:{start.id}"
        if stop is None or (stop == "end_turn" and self.session.transcript.grading):
            # With an open outcome, the end of the turn is graded before the session idles.
            await self.session.emit(*events, key=key, reserved=reserved)
        elif stop == "refusal":
            await self.session.idle(
                "refusal", *events, details=StopDetails(), key=key, reserved=reserved
            )
        else:
            await self.session.idle(stop, *events, key=key, reserved=reserved)

    def request(self) -> dict[str, Any]:
        """The Messages API request for the conversation so far."""
        # The system prompt and the tools are the stable prefix: cache them.
        request: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": self.spec.limits.max_tokens,
            "system": [
                {
                    "type": "text",
                    "text": self.spec.system or DEFAULT_SYSTEM,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "messages": self.session.transcript.messages,
        }
        if self.toolbox.definitions:
            tools = [dict(d) for d in self.toolbox.definitions]
            tools[-1]["cache_control"] = {"type": "ephemeral"}
            request["tools"] = tools
        return request

    async def call(self, request: dict[str, Any], *, preview: bool = True) -> Message | None:
        """Stream ``request`` with retries, appending a `session.error` for each failure;
        None once the retries are exhausted. With ``preview``, each attempt publishes
        previews of its events (``self.previews``: those of the last attempt)."""
        began = time.monotonic()
        self.previews = None

        def first_token() -> None:
            metrics.TIME_TO_FIRST_TOKEN.observe(time.monotonic() - began)

        async def on_failure(failure: Failure, will_retry: bool) -> None:
            metrics.MODEL_ERRORS.labels(failure.error_type).inc()
            if will_retry:
                metrics.MODEL_RETRIES.labels(failure.error_type).inc()
            await self.session.emit(session_error(failure, will_retry))

        async def attempt() -> Message:
            if not preview:
                return await stream_message(self.model, request, first_token)
            log, session_id = self.session.log, self.session.session_id
            async with previewing(log, session_id, self.settings.preview_interval_s) as previews:
                self.previews = previews
                return await stream_message(self.model, request, first_token, previews.feed)

        return await call_with_retries(
            attempt,
            self.settings.retry,
            classify,
            on_failure,
        )

    def response_events(self, message: Message) -> tuple[list[AnyEvent], str | None]:
        """The events of one model response, and the stop reason if the turn ends with it."""
        events: list[AnyEvent] = []
        texts: list[TextBlock] = []

        def flush() -> None:
            if texts:
                events.append(AgentMessageEvent(content=list(texts)))
                texts.clear()

        calls = False
        for block in message.content:
            if block.type == "text":
                texts.append(TextBlock(text=block.text))
            elif block.type in ("thinking", "redacted_thinking"):
                flush()
                events.append(AgentThinkingEvent())
            elif block.type == "tool_use":
                flush()
                calls = True
                events.append(self.tool_use_event(block.name, dict(block.input)))
        flush()
        usage = message.usage
        metrics.TOKENS.labels("input").inc(usage.input_tokens)
        metrics.TOKENS.labels("output").inc(usage.output_tokens)
        if calls:
            return events, None
        return events, "refusal" if message.stop_reason == "refusal" else "end_turn"

    def tool_use_event(self, name: str, tool_input: dict[str, Any]) -> AnyEvent:
        policy = self.toolbox.policy(name)
        if policy is not None and policy.kind == "custom":
            return AgentCustomToolUseEvent(name=name, input=tool_input)
        ask = policy is not None and policy.permission == "ask"
        permission: dict[str, Any] = {
            "evaluated_permission": "ask" if ask else "allow",
            "evaluation": Evaluation(type="always_ask" if ask else "always_allow"),
        }
        if policy is not None and policy.kind == "mcp":
            assert policy.mcp_server is not None
            assert policy.mcp_tool is not None
            return AgentMcpToolUseEvent(
                mcp_server_name=policy.mcp_server,
                name=policy.mcp_tool,
                input=tool_input,
                **permission,
            )
        return AgentToolUseEvent(name=name, input=tool_input, **permission)

    # --- compaction ------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        """Whether the conversation, estimated at four characters a token, fills more than
        ``compact_at`` of the context window."""
        messages = self.session.transcript.messages
        size = len(str(messages)) // 4
        return (
            len(messages) > 2
            and size > self.settings.compact_at * self.settings.context_window_tokens
        )

    async def compact(self) -> None:
        """Ask the model for a summary that replaces the conversation so far."""
        request = self.request()
        messages = [dict(m, content=list(m["content"])) for m in self.session.transcript.messages]
        instruction = {"type": "text", "text": COMPACTION_REQUEST}
        if messages[-1]["role"] == "user":
            messages[-1]["content"].append(instruction)
        else:
            messages.append({"role": "user", "content": [instruction]})
        request["messages"] = messages
        (start,) = await self.session.emit(SpanModelRequestStartEvent())
        try:
            message = await self.interrupts.interruptible(self.call(request, preview=False))
        except Interrupted:
            await self.session.emit(span_end(start.id, None))
            return
        if message is None:
            await self.session.idle("retries_exhausted", span_end(start.id, None))
            return
        summary = "\n".join(b.text for b in message.content if b.type == "text")
        await self.session.emit(
            span_end(start.id, message),
            AgentThreadContextCompactedEvent(summary=summary),
            key=f"response:{start.id}",
        )


def span_end(start_id: str | None, message: Message | None) -> SpanModelRequestEndEvent:
    """The end of a model request's span: its usage, or an error span without a response."""
    usage = message.usage if message else None
    return SpanModelRequestEndEvent(
        model_request_start_id=start_id or "",
        is_error=message is None,
        model_usage=ModelUsage(
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cache_creation_input_tokens=(usage.cache_creation_input_tokens or 0) if usage else 0,
            cache_read_input_tokens=(usage.cache_read_input_tokens or 0) if usage else 0,
        ),
    )
