"""`/v1/sessions/{id}/events`: send, list and stream a session's events, straight from the
event log in Redis (no Kubernetes call when the session is named by its id).

A session belongs to the namespace of its Agent (`<namespace>/<agent>` in the log's
snapshot); a caller from another namespace gets 404, as for a session that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from redis.exceptions import RedisError

from paddock.eventlog import (
    AnyEvent,
    InvalidId,
    SessionNotFound,
    SessionSnapshot,
    SessionTerminated,
    UserCustomToolResultEvent,
    UserInterruptEvent,
    UserToolConfirmationEvent,
    session_of_thread,
)
from paddock.gateway import metrics
from paddock.gateway.common import (
    EVENT_BODY_LIMIT,
    REQUEST_ID,
    gateway,
    namespace,
    objects,
    read_body,
    tenant_log,
)
from paddock.gateway.convert import meta
from paddock.gateway.convert.events import sent_events_view, user_event
from paddock.gateway.errors import ApiError, conflict, invalid, not_found
from paddock.gateway.fanout import DELTA_TYPES, Subscription, TooSlow
from paddock.gateway.objects import SESSIONS
from paddock.gateway.outcomes import check_no_open_outcome, outcome_event, with_text_rubric
from paddock.gateway.pages import limit_param, list_param, order_param
from paddock.gateway.params import DefineOutcomeParam, SendEventsParams
from paddock.gateway.routing import (
    echo,
    for_thread,
    interrupt_key,
    route_answers,
    route_interrupts,
)
from paddock.gateway.views import EventPage, respond

routes = web.RouteTableDef()
log = logging.getLogger(__name__)

_LAST_EVENTS = frozenset({"session.status_terminated", "session.deleted"})
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx and friends: do not buffer the stream
}


async def session_of(request: web.Request) -> tuple[str, SessionSnapshot]:
    """The session named in the path (id, or Kubernetes name) and its snapshot; 404 unless
    it exists in the caller's namespace."""
    ref = request.match_info["session_id"]
    if SESSIONS.is_id(ref):
        session_id = ref
    else:
        obj = await objects(request).find(SESSIONS, ref)
        session_id = meta.labels(obj)[meta.SESSION_ID_LABEL]
    try:
        snapshot = await tenant_log(request).snapshot(session_id)
    except SessionNotFound:  # also a session of another tenant: its keys are elsewhere
        raise not_found(f"session {ref} not found") from None
    if snapshot.agent.partition("/")[0] != namespace(request):
        raise not_found(f"session {ref} not found")
    return session_id, snapshot


def _check_answers(events: list[AnyEvent], snapshot: SessionSnapshot) -> None:
    """Confirmations and custom tool results must answer the latest `requires_action`."""
    answered = [
        event.tool_use_id
        if isinstance(event, UserToolConfirmationEvent)
        else event.custom_tool_use_id
        for event in events
        if isinstance(event, UserToolConfirmationEvent | UserCustomToolResultEvent)
    ]
    if not answered:
        return
    stop = snapshot.stop_reason
    pending = set(stop.event_ids or ()) if snapshot.status == "idle" and stop else set()
    for event_id in answered:
        if event_id not in pending:
            raise invalid(f"{event_id} is not awaiting a confirmation or result")


@routes.post("/v1/sessions/{session_id}/events")
async def send_events(request: web.Request) -> web.Response:
    params = await read_body(request, SendEventsParams, limit=EVENT_BODY_LIMIT)
    session_id, snapshot = await session_of(request)
    if snapshot.status == "terminated":
        raise conflict(f"session {session_id} is terminated")
    outcomes = sum(isinstance(param, DefineOutcomeParam) for param in params.events)
    if outcomes:
        await check_no_open_outcome(tenant_log(request), session_id, outcomes)
    events = [
        outcome_event(await with_text_rubric(gateway(request), namespace(request), param))
        if isinstance(param, DefineOutcomeParam)
        else user_event(param)
        for param in params.events
    ]
    log, state = tenant_log(request), gateway(request).state.tenant(namespace(request))
    to_threads = await route_answers(log, state, session_id, events)
    interrupted = await route_interrupts(log, state, session_id, events)
    _check_answers([e for i, e in enumerate(events) if i not in to_threads], snapshot)
    # An Idempotency-Key makes a retried send store its events once.
    key = request.headers.get("Idempotency-Key")
    try:
        for index, route in to_threads.items():
            answer = events[index]
            assert isinstance(answer, UserToolConfirmationEvent | UserCustomToolResultEvent)
            # Keyed by the request: an answer reaches its thread once, also when retried.
            await log.send(
                route.session, [for_thread(answer, route)], key=f"answer:{route.event_id}"
            )
            events[index] = echo(answer, route)
        for sthr in set(interrupted.values()):
            # The session keeps the echo (with `session_thread_id`), which its worker ignores.
            once_per_turn = await interrupt_key(log, sthr)
            await log.send(session_of_thread(sthr), [UserInterruptEvent()], key=once_per_turn)
        stored = await log.send(session_id, events, key=f"api:{key[:200]}" if key else None)
    except SessionTerminated:
        raise conflict(f"session {session_id} is terminated") from None
    except SessionNotFound:
        raise not_found(f"session {session_id} not found") from None
    return respond(sent_events_view(stored))


@routes.get("/v1/sessions/{session_id}/events")
async def list_events(request: web.Request) -> web.Response:
    session_id, _ = await session_of(request)
    return await list_log_events(request, session_id)


async def list_log_events(request: web.Request, session_id: str) -> web.Response:
    """A page of the events of ``session_id`` (a session's log, or a thread's)."""
    query = request.query
    limit = limit_param(query, default=1000, maximum=1000)
    order = order_param(query, "asc")
    types = list_param(query, "types")
    if any(key.startswith("created_at[") for key in query):
        raise invalid("created_at filters are not supported on events; page with `page`")
    try:
        page = await tenant_log(request).list_events(
            session_id, limit=limit, cursor=query.get("page"), order=order, types=types
        )
    except InvalidId as exc:
        raise invalid(f"page: {exc}") from None
    except SessionNotFound:
        raise not_found(f"session {session_id} not found") from None
    return respond(EventPage(data=page.data, next_page=page.next_cursor))


@routes.get("/v1/sessions/{session_id}/events/stream")
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: live events only, from the moment the stream opened (or after
    `Last-Event-ID`), and with `event_deltas[]` previews of those event types while the
    model produces them (best-effort, never replayed; docs/gateway.md, "Deltas")."""
    session_id, _ = await session_of(request)
    return await stream_log_events(request, session_id)


async def stream_log_events(request: web.Request, session_id: str) -> web.StreamResponse:
    """The live events of ``session_id`` (a session's log, or a thread's) as SSE."""
    deltas = list_param(request.query, "event_deltas")
    for delta in deltas:
        if delta not in DELTA_TYPES:
            raise invalid(f"event_deltas: {delta!r} is not one of {', '.join(sorted(DELTA_TYPES))}")
    gw = gateway(request)
    async with contextlib.AsyncExitStack() as stack:
        # Subscribed before the response begins: a client that lists history after the
        # headers arrive misses nothing.
        try:
            subscription = await stack.enter_async_context(
                gw.fanout.subscribe(
                    namespace(request),
                    session_id,
                    request.headers.get("Last-Event-ID") or None,
                    frozenset(deltas),
                )
            )
        except InvalidId as exc:
            raise invalid(f"Last-Event-ID: {exc}") from None
        except SessionNotFound:
            raise not_found(f"session {session_id} not found") from None
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        metrics.OPEN_STREAMS.inc()
        stack.callback(metrics.OPEN_STREAMS.dec)
        task = asyncio.current_task()
        assert task is not None
        gw.streams.add(task)
        stack.callback(gw.streams.discard, task)
        await _pump(request, response, subscription, gw.ping_interval_s)
    return response


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    subscription: Subscription,
    ping_interval_s: float,
) -> None:
    lock = asyncio.Lock()
    handler = asyncio.current_task()

    async def write(data: bytes) -> None:
        async with lock:
            await response.write(data)

    async def ping() -> None:
        try:
            while True:
                await asyncio.sleep(ping_interval_s)
                await write(b": ping\n\n")
        except (ConnectionError, RuntimeError):
            # The client is gone while the handler waits for events.
            if handler is not None:
                handler.cancel()

    pinger = asyncio.create_task(ping())
    try:
        while (item := await subscription.next()) is not None:
            await write(item.data)
            if item.preview is None:
                metrics.STREAMED_EVENTS.inc()
            if item.type in _LAST_EVENTS:
                break
    except (ConnectionError, RuntimeError):
        pass  # the client went away
    except (RedisError, TooSlow) as exc:
        log.warning("event stream %s ended: %r", request.path, exc)
        error = ApiError(503, f"the event stream failed ({exc}); reconnect with Last-Event-ID")
        body = error.body(request[REQUEST_ID]).model_dump_json().encode()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await write(b"event: error\ndata: %s\n\n" % body)
    finally:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
