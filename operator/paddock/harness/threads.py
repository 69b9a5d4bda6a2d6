"""Multi-agent threads: a coordinator's delegation tools (`list_agents`, `send_to_agent`).

A `send_to_agent` call runs a thread: a session of its own (own log, lease, fence and
idempotency keys, so the log's fencing and the work queue work for it unchanged), run by
the callee Agent's harness workers from the callee's work queue, with the coordinator's
session as its parent (`SessionSettings.parent_session_id`: tools run in a sandbox of the
thread's own, from the parent's Environment). The call waits for the thread's turn to end and returns its last message.

Nothing is lost or duplicated by a crash on either side: the thread's session id is derived
from the parent and the call id, its input is sent with an idempotency key, and every event
the parent gets is keyed by the call id; a worker resuming the parent re-runs the call,
finds the same thread (finished or still running on the callee's workers, which resume it
like any session) and reads its result from the thread's log. See docs/harness.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from paddock.eventlog import (
    USAGE_FIELDS,
    AgentThreadMessageReceivedEvent,
    AgentThreadMessageSentEvent,
    EventLog,
    ModelUsage,
    SessionSettings,
    SessionState,
    SessionThreadCreatedEvent,
    SessionThreadStatusIdleEvent,
    SessionThreadStatusRunningEvent,
    SessionThreadStatusTerminatedEvent,
    SpanModelRequestEndEvent,
    SpanOutcomeEvaluationEndEvent,
    StopReason,
    TextBlock,
    UserInterruptEvent,
    UserMessageEvent,
    session_of_thread,
    thread_id,
    thread_session_id,
)
from paddock.harness.interrupts import Interrupted, Interrupts
from paddock.harness.sessionlog import SessionLog
from paddock.harness.transcript import ToolCall
from paddock.models import Multiagent


@dataclass(frozen=True)
class Reply:
    """A thread's answer to one message."""

    text: str
    end: StopReason | None
    usage: ModelUsage


class Threads:
    """The delegation tools of one coordinator session during one worker's run of it."""

    def __init__(
        self,
        roster: Multiagent,
        log: EventLog,
        state: SessionState,
        session: SessionLog,
        settings: SessionSettings | None,
        interrupts: Interrupts,
    ) -> None:
        self.agents = [ref.name for ref in roster.agents]
        self.log = log
        self.state = state
        self.session = session
        self.settings = settings
        self.interrupts = interrupts

    async def execute(self, call: ToolCall) -> tuple[str, bool]:
        """(result text, is_error) of a delegation call."""
        if call.name == "list_agents":
            return json.dumps({"agents": [{"name": name} for name in self.agents]}), False
        agent, message = call.input.get("agent"), call.input.get("message")
        if agent not in self.agents:
            return f"Unknown agent {agent!r}; you may call: {', '.join(self.agents)}.", True
        if not isinstance(message, str) or not message:
            return "send_to_agent needs a non-empty message.", True
        thread_session = await self._thread(call, agent)
        if thread_session is None:
            return f"No thread {call.input.get('session_thread_id')!r} of {agent}.", True
        sthr = thread_id(thread_session)
        (sent,) = await self.log.send(
            thread_session,
            [UserMessageEvent(content=[TextBlock(text=message)])],
            key=f"from:{call.id}",
        )
        await self.session.emit(
            SessionThreadStatusRunningEvent(session_thread_id=sthr, agent_name=agent),
            AgentThreadMessageSentEvent(
                to_session_thread_id=sthr, to_agent_name=agent, content=[TextBlock(text=message)]
            ),
            key=f"thread-sent:{call.id}",
        )
        assert sent.id is not None
        try:
            answer = await self.interrupts.interruptible(self._reply(thread_session, sent.id))
        except Interrupted:
            # The user's interrupt reaches the thread too; a lost lease is no reason to stop
            # it: the worker resuming this session waits for the same thread.
            if not self.interrupts.lease_lost.is_set():
                await self.log.send(thread_session, [UserInterruptEvent()])
            raise
        reply, end = answer.text, answer.end
        status: Any
        if end is None:
            status = SessionThreadStatusTerminatedEvent(session_thread_id=sthr, agent_name=agent)
        else:
            status = SessionThreadStatusIdleEvent(
                session_thread_id=sthr, agent_name=agent, stop_reason=end
            )
        received = AgentThreadMessageReceivedEvent(
            from_session_thread_id=sthr,
            from_agent_name=agent,
            content=[TextBlock(text=reply)],
            usage=answer.usage,
        )
        await self.session.emit(received, status, key=f"thread-received:{call.id}")
        result = json.dumps({"session_thread_id": sthr, "reply": reply})
        return result, end is None or end.type != "end_turn"

    async def _thread(self, call: ToolCall, agent: str) -> str | None:
        """The session of the call's thread, created (once) if the call starts one."""
        parent = self.session.session_id
        named = call.input.get("session_thread_id")
        if isinstance(named, str) and named:
            record = (await self.state.threads(parent)).get(named)
            if record is None or json.loads(record).get("agent_name") != agent:
                return None
            return session_of_thread(named)
        thread_session = thread_session_id(parent, call.id)
        namespace = self.state.own()
        if await self.log.create_session(thread_session, agent=f"{namespace}/{agent}"):
            base = self.settings or SessionSettings(namespace=namespace, name=parent.lower())
            # The callee runs its own Agent's spec, so no version pin is carried over.
            settings = base.model_copy(update={"parent_session_id": parent, "agent": None})
            await self.state.put_settings(thread_session, settings)
        sthr = thread_id(thread_session)
        entry = {"agent_name": agent, "call_id": call.id, "created_at": time.time()}
        await self.state.add_thread(parent, sthr, json.dumps(entry))
        await self.session.emit(
            SessionThreadCreatedEvent(session_thread_id=sthr, agent_name=agent),
            key=f"thread-created:{call.id}",
        )
        return thread_session

    async def _reply(self, thread_session: str, after: str) -> Reply:
        """The thread's last message after event ``after``, the stop reason of the turn that
        answered it (None if the thread was terminated or deleted) and its usage."""
        text = ""
        usage = dict.fromkeys(USAGE_FIELDS, 0)
        async with self.log.tail(thread_session, after=after) as tail:
            async for event in tail:
                if isinstance(event, SpanModelRequestEndEvent | SpanOutcomeEvaluationEndEvent):
                    spent = (
                        event.model_usage if event.type == "span.model_request_end" else event.usage
                    )
                    for field in USAGE_FIELDS:
                        usage[field] += getattr(spent, field)
                if event.type == "agent.message":
                    text = "".join(b.text for b in event.content if isinstance(b, TextBlock))
                elif event.type == "session.status_idle" and (
                    event.stop_reason.type != "requires_action"
                ):
                    return Reply(text, event.stop_reason, ModelUsage.model_validate(usage))
                elif event.type == "session.status_terminated":
                    break
        return Reply(text, None, ModelUsage.model_validate(usage))

    async def run_all(
        self, calls: list[ToolCall], answer: Callable[[ToolCall, str, bool], Awaitable[None]]
    ) -> bool:
        """Run delegation calls in parallel, each answered as it ends; False if an interrupt
        (or the lease's loss) stopped them."""

        async def one(call: ToolCall) -> None:
            text, is_error = await self.execute(call)
            await answer(call, text, is_error)

        interrupted = False
        try:
            async with asyncio.TaskGroup() as group:
                for call in calls:
                    group.create_task(one(call))
        except* Interrupted:
            interrupted = True
        return not interrupted
