"""Multi-agent threads: a coordinator's delegation tools (`list_agents`, `send_to_agent`).

A `send_to_agent` call runs a thread: a session of its own (own log, lease, fence and
idempotency keys, so the log's fencing and the work queue work for it unchanged), run by
the callee Agent's harness workers from the callee's work queue, with the coordinator's
session as its parent (`SessionSettings.parent_session_id`: tools run in a sandbox of the
thread's own, from the parent's Environment). The call waits for the thread's turn to end
and returns its last message.

Nothing is lost or duplicated by a crash on either side: the thread's session id is derived
from the parent and the call id, its input is sent with an idempotency key, and every event
the parent gets is keyed by the call id; a worker resuming the parent re-runs the call,
finds the same thread (finished or still running on the callee's workers, which resume it
like any session) and reads its result from the thread's log. See docs/harness.md.

A thread that waits on the client (a tool confirmation, a custom tool's result) has its
requests cross-posted into the coordinator's log with `session_thread_id` set, and the
coordinator's status follows its threads (`parent_waits`); the gateway routes the client's
answers to the thread's log (paddock.gateway.routing).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paddock.eventlog import (
    TOOL_USE_TYPES,
    USAGE_FIELDS,
    AgentThreadMessageReceivedEvent,
    AgentThreadMessageSentEvent,
    AnyEvent,
    EventLog,
    ModelUsage,
    SessionSettings,
    SessionState,
    SessionStatusIdleEvent,
    SessionStatusRunningEvent,
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

MAX_CONCURRENT_THREADS = 25
"""Threads one coordinator runs at once (the Managed Agents limit): the delegation calls of
one turn beyond it are answered with an error the model reads."""


def parent_waits(threads: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The coordinator's status while it waits for ``threads`` (each in-flight call: the
    cross-posted events its thread waits on the client for, empty while it runs): None for
    `running`, which it is while any thread runs, else the event ids of its
    `requires_action` idle (every thread waits on the client)."""
    if not threads or any(not waits for waits in threads.values()):
        return None
    return [event_id for waits in threads.values() for event_id in waits]


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
        self.waits: dict[str, list[str]] = {}
        """In-flight call id -> the cross-posted events its thread waits on the client for."""
        self._settling = asyncio.Lock()

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
        self.waits[call.id] = []
        try:
            answer = await self.interrupts.interruptible(
                self._reply(call, agent, thread_session, sent.id)
            )
        except Interrupted:
            # The user's interrupt reaches the thread too; a lost lease is no reason to stop
            # it: the worker resuming this session waits for the same thread.
            if not self.interrupts.lease_lost.is_set():
                await self.log.send(thread_session, [UserInterruptEvent()])
            raise
        finally:
            self.waits.pop(call.id, None)
        await self._settle()  # the other threads may all wait on the client now
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

    async def _reply(self, call: ToolCall, agent: str, thread_session: str, after: str) -> Reply:
        """The thread's last message after event ``after``, the stop reason of the turn that
        answered it (None if the thread was terminated or deleted) and its usage. While the
        thread waits on the client its requests are cross-posted (`_ask`)."""
        text = ""
        usage = dict.fromkeys(USAGE_FIELDS, 0)
        uses: dict[str, AnyEvent] = {}
        sthr = thread_id(thread_session)
        async with self.log.tail(thread_session, after=after) as tail:
            async for event in tail:
                if isinstance(event, SpanModelRequestEndEvent | SpanOutcomeEvaluationEndEvent):
                    spent = (
                        event.model_usage if event.type == "span.model_request_end" else event.usage
                    )
                    for field in USAGE_FIELDS:
                        usage[field] += getattr(spent, field)
                if event.type in TOOL_USE_TYPES and event.id is not None:
                    uses[event.id] = event
                elif event.type == "agent.message":
                    text = "".join(b.text for b in event.content if isinstance(b, TextBlock))
                elif event.type == "session.status_running" and self.waits.get(call.id):
                    self.waits[call.id] = []
                    await self.session.emit(
                        SessionThreadStatusRunningEvent(session_thread_id=sthr, agent_name=agent),
                        key=f"thread-running:{event.id}",
                    )
                    await self._settle()
                elif event.type == "session.status_idle":
                    if event.stop_reason.type != "requires_action":
                        return Reply(text, event.stop_reason, ModelUsage.model_validate(usage))
                    await self._ask(call, agent, sthr, event, uses)
                elif event.type == "session.status_terminated":
                    break
        return Reply(text, None, ModelUsage.model_validate(usage))

    async def _ask(
        self,
        call: ToolCall,
        agent: str,
        sthr: str,
        idle: SessionStatusIdleEvent,
        uses: Mapping[str, AnyEvent],
    ) -> None:
        """The thread idled waiting on the client: cross-post each event it waits on into
        the coordinator's log (keyed by the thread's event id, so a re-run posts nothing
        twice and finds the same ids), then settle the coordinator's status."""
        posted = []
        for event_id in idle.stop_reason.event_ids or ():
            use = uses.get(event_id)
            if use is None:  # not of this turn: nothing the client can answer through us
                continue
            cross = use.model_copy(
                update={
                    "id": None,
                    "processed_at": None,
                    "session_thread_id": sthr,
                    "session_thread_event_id": event_id,
                }
            )
            (stored,) = await self.session.emit(cross, key=f"thread-ask:{event_id}")
            assert stored.id is not None
            posted.append(stored.id)
        await self.session.emit(
            SessionThreadStatusIdleEvent(
                session_thread_id=sthr, agent_name=agent, stop_reason=idle.stop_reason
            ),
            key=f"thread-idle:{idle.id}",
        )
        self.waits[call.id] = posted
        await self._settle()

    async def _settle(self) -> None:
        """Make the coordinator's status what its threads say (`parent_waits`)."""
        async with self._settling:
            waiting = parent_waits(self.waits)
            transcript = self.session.transcript
            if waiting is None:
                if transcript.status != "running":
                    await self.session.emit(SessionStatusRunningEvent())
            elif transcript.status != "idle" or transcript.waiting_on != waiting:
                await self.session.idle("requires_action", event_ids=waiting)

    async def run_all(
        self, calls: list[ToolCall], answer: Callable[[ToolCall, str, bool], Awaitable[None]]
    ) -> bool:
        """Run delegation calls in parallel, each answered as it ends; False if an interrupt
        (or the lease's loss) stopped them."""

        async def one(call: ToolCall) -> None:
            text, is_error = await self.execute(call)
            await answer(call, text, is_error)

        async def refuse(call: ToolCall) -> None:
            text = (
                f"Too many threads at once: at most {MAX_CONCURRENT_THREADS} run concurrently. "
                "Send this message again once some of them have replied."
            )
            await answer(call, text, True)

        interrupted = False
        started = 0
        try:
            async with asyncio.TaskGroup() as group:
                for call in calls:
                    starts = call.name == "send_to_agent"
                    refused = starts and started >= MAX_CONCURRENT_THREADS
                    started += starts
                    group.create_task(refuse(call) if refused else one(call))
        except* Interrupted:
            interrupted = True
        return not interrupted
