"""Answers sent to a session for its threads' requests.

A thread that waits on the client has its `agent.tool_use` / `agent.mcp_tool_use` /
`agent.custom_tool_use` cross-posted into its session's log (paddock.harness.threads) with
`session_thread_id` and the thread's own event id (`session_thread_event_id`). A
`user.tool_confirmation` or `user.custom_tool_result` sent to the session that names such a
cross-post, or an event of one of its threads (read from the thread's events), goes to that
thread's log under the thread's event id; the session's log keeps the echo, with
`session_thread_id` set to the thread it was routed to. `session_thread_id` sent by the
client is optional (the SDK routes by id alone) and, when sent, checked.

A `user.interrupt` with `session_thread_id` interrupts that thread alone: it goes to the
thread's log, and the session's log keeps the echo, which the coordinator ignores (it keeps
waiting for the thread's reply). Naming the primary thread is a plain interrupt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from paddock.eventlog import (
    TOOL_USE_TYPES,
    AnyEvent,
    EventLog,
    InvalidId,
    SessionNotFound,
    SessionState,
    UserCustomToolResultEvent,
    UserInterruptEvent,
    UserToolConfirmationEvent,
    session_of_thread,
    session_tag,
    stream_id,
    thread_id,
)
from paddock.gateway.errors import invalid, not_found

Answer = UserToolConfirmationEvent | UserCustomToolResultEvent


@dataclass(frozen=True)
class Route:
    """Where an answer goes: the thread and the id of its request in the thread's log."""

    thread: str
    """The `sthr_` id."""
    event_id: str

    @property
    def session(self) -> str:
        """The session that runs the thread."""
        return session_of_thread(self.thread)


def answered(event: Answer) -> str:
    """The id of the request ``event`` answers."""
    if isinstance(event, UserToolConfirmationEvent):
        return event.tool_use_id
    return event.custom_tool_use_id


def _in_session(event_id: str, session_id: str) -> bool:
    try:
        stream_id(event_id, session_tag(session_id))
    except InvalidId:
        return False
    return True


async def _route(
    log: EventLog, session_id: str, event_id: str, threads: dict[str, str]
) -> Route | None:
    """The thread ``event_id`` is a request of; None for the session's own (primary)
    requests and for ids of nothing (the primary thread's check then refuses them)."""
    if _in_session(event_id, session_id):
        found = await log.event(session_id, event_id)
        if found is None or found.type not in TOOL_USE_TYPES:
            return None
        thread = getattr(found, "session_thread_id", None)
        origin = getattr(found, "session_thread_event_id", None)
        if thread in threads and origin:
            return Route(thread, origin)
        return None
    for thread in threads:
        try:
            if _in_session(event_id, session_of_thread(thread)):
                return Route(thread, event_id)
        except InvalidId:
            continue
    return None


async def _check_pending(log: EventLog, route: Route) -> None:
    """The thread must be waiting for this answer (its last idle lists the request)."""
    try:
        snapshot = await log.snapshot(route.session)
    except SessionNotFound:
        raise not_found(f"thread {route.thread} not found") from None
    stop = snapshot.stop_reason
    pending = set(stop.event_ids or ()) if snapshot.status == "idle" and stop else set()
    if route.event_id not in pending:
        raise invalid(
            f"{route.event_id} of thread {route.thread} is not awaiting a confirmation or result"
        )


async def route_answers(
    log: EventLog, state: SessionState, session_id: str, events: list[AnyEvent]
) -> dict[int, Route]:
    """The routes of the answers in ``events`` (by index) that go to a thread; 404 for a
    `session_thread_id` that is no thread of the session, 400 for an id that is not a
    pending request of the thread named."""
    answers = [
        (index, event)
        for index, event in enumerate(events)
        if isinstance(event, UserToolConfirmationEvent | UserCustomToolResultEvent)
    ]
    if not answers:
        return {}
    threads = await state.threads(session_id)
    if not threads and all(event.session_thread_id is None for _, event in answers):
        return {}  # no threads: every answer is the session's own (no event read needed)
    routes: dict[int, Route] = {}
    for index, event in answers:
        named = event.session_thread_id
        if named is not None and named not in threads:
            raise not_found(f"thread {named} not found in session {session_id}")
        route = await _route(log, session_id, answered(event), threads)
        if named is not None and (route is None or route.thread != named):
            raise invalid(f"{answered(event)} is not a request of thread {named}")
        if route is not None:
            await _check_pending(log, route)
            routes[index] = route
    return routes


def for_thread(event: Answer, route: Route) -> Answer:
    """The answer as the thread's log stores it: naming the thread's own request."""
    if isinstance(event, UserToolConfirmationEvent):
        return event.model_copy(update={"tool_use_id": route.event_id, "session_thread_id": None})
    return event.model_copy(
        update={"custom_tool_use_id": route.event_id, "session_thread_id": None}
    )


def echo(event: Answer, route: Route) -> Answer:
    """The answer as the session's log keeps it: with the thread it was routed to."""
    return event.model_copy(update={"session_thread_id": route.thread})


async def route_interrupts(
    log: EventLog, state: SessionState, session_id: str, events: list[AnyEvent]
) -> dict[int, str]:
    """The `sthr_` ids (by index) of the interrupts in ``events`` that name a child thread;
    an interrupt naming the primary thread becomes a plain one (in place). 404 for no thread
    of the session, 400 for an archived or terminated thread."""
    named = {
        index: event.session_thread_id
        for index, event in enumerate(events)
        if isinstance(event, UserInterruptEvent) and event.session_thread_id is not None
    }
    if not named:
        return {}
    threads = await state.threads(session_id)
    routes: dict[int, str] = {}
    for index, sthr in named.items():
        if sthr == thread_id(session_id):
            events[index] = UserInterruptEvent()
            continue
        record = threads.get(sthr)
        if record is None:
            raise not_found(f"thread {sthr} not found in session {session_id}")
        if json.loads(record).get("archived_at"):
            raise invalid(f"thread {sthr} is archived")
        try:
            snapshot = await log.snapshot(session_of_thread(sthr))
        except SessionNotFound:
            raise not_found(f"thread {sthr} not found in session {session_id}") from None
        if snapshot.status == "terminated":
            raise invalid(f"thread {sthr} is terminated")
        routes[index] = sthr
    return routes


async def interrupt_key(log: EventLog, sthr: str) -> str | None:
    """The idempotency key of an interrupt of thread ``sthr``: one per turn of the thread
    (its latest `user.message`), so a retried interrupt is stored once."""
    page = await log.list_events(
        session_of_thread(sthr), limit=1, cursor=None, order="desc", types=["user.message"]
    )
    return f"interrupt:{page.data[0].id}" if page.data else None
