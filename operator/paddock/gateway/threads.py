"""`/v1/sessions/{id}/threads`: a session's threads (paddock.harness.threads), their events
and streams. The primary thread is the session's own log (its `sthr_` id has the session
id's body); each child thread is a log of its own, listed in the session's threads record.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from paddock.eventlog import (
    InvalidId,
    SessionNotFound,
    SessionSnapshot,
    session_of_thread,
    thread_id,
)
from paddock.gateway.common import gateway, namespace, objects, tenant_log
from paddock.gateway.convert.agents import session_agent_view
from paddock.gateway.convert.meta import rfc3339
from paddock.gateway.errors import not_found
from paddock.gateway.events import list_log_events, session_of, stream_log_events
from paddock.gateway.objects import AGENTS
from paddock.gateway.pages import list_param
from paddock.gateway.views import SessionAgent, SessionStats, SessionUsage, Timestamp, View, respond

routes = web.RouteTableDef()


class SessionThread(View):
    type: Literal["session_thread"] = "session_thread"
    id: str
    session_id: str
    parent_thread_id: str | None
    agent: SessionAgent
    status: str
    stats: SessionStats
    usage: SessionUsage
    created_at: Timestamp
    updated_at: Timestamp
    archived_at: Timestamp | None


class SessionThreadPage(View):
    data: list[SessionThread]
    next_page: str | None = None


async def _records(request: web.Request, session_id: str) -> dict[str, dict[str, Any]]:
    state = gateway(request).state.tenant(namespace(request))
    return {tid: json.loads(raw) for tid, raw in (await state.threads(session_id)).items()}


async def _view(
    request: web.Request,
    session_id: str,
    sthr: str,
    snapshot: SessionSnapshot,
    record: dict[str, Any] | None,
) -> SessionThread:
    agent_name = snapshot.agent.partition("/")[2]
    agent = session_agent_view(await objects(request).get(AGENTS, agent_name), agent_name)
    usage = snapshot.usage
    archived = (record or {}).get("archived_at")
    end = snapshot.updated_at if snapshot.status == "terminated" else datetime.now(UTC)
    return SessionThread(
        id=sthr,
        session_id=session_id,
        parent_thread_id=None if record is None else thread_id(session_id),
        agent=agent,
        status=snapshot.status,
        stats=SessionStats(
            active_seconds=usage.active_seconds,
            duration_seconds=round(max((end - snapshot.created_at).total_seconds(), 0.0), 3),
        ),
        usage=SessionUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            active_seconds=usage.active_seconds,
        ),
        created_at=rfc3339(snapshot.created_at),
        updated_at=rfc3339(snapshot.updated_at),
        archived_at=archived,
    )


async def _thread(request: web.Request) -> tuple[str, str, dict[str, Any] | None]:
    """(session id, the thread's log, its record: None for the primary thread) of the
    thread in the path; 404 unless it is one of the session's."""
    session_id, _ = await session_of(request)
    sthr = request.match_info["thread_id"]
    if sthr == thread_id(session_id):
        return session_id, session_id, None
    record = (await _records(request, session_id)).get(sthr)
    if record is None:
        raise not_found(f"thread {sthr} not found")
    try:
        return session_id, session_of_thread(sthr), record
    except InvalidId:
        raise not_found(f"thread {sthr} not found") from None


async def _snapshot(request: web.Request, log_id: str) -> SessionSnapshot:
    try:
        return await tenant_log(request).snapshot(log_id)
    except SessionNotFound:
        raise not_found(f"thread of {log_id} not found") from None


@routes.get("/v1/sessions/{session_id}/threads")
async def list_threads(request: web.Request) -> web.Response:
    session_id, snapshot = await session_of(request)
    statuses = set(list_param(request.query, "statuses"))
    records = await _records(request, session_id)
    snapshots = await tenant_log(request).snapshots([session_of_thread(t) for t in records])
    threads = [await _view(request, session_id, thread_id(session_id), snapshot, None)]
    for sthr, record in sorted(records.items(), key=lambda item: item[1]["created_at"]):
        found = snapshots.get(session_of_thread(sthr))
        if found is not None:
            threads.append(await _view(request, session_id, sthr, found, record))
    data = [t for t in threads if not statuses or t.status in statuses]
    return respond(SessionThreadPage(data=data))


@routes.get("/v1/sessions/{session_id}/threads/{thread_id}")
async def retrieve_thread(request: web.Request) -> web.Response:
    session_id, log_id, record = await _thread(request)
    sthr = request.match_info["thread_id"]
    return respond(await _view(request, session_id, sthr, await _snapshot(request, log_id), record))


@routes.post("/v1/sessions/{session_id}/threads/{thread_id}/archive")
async def archive_thread(request: web.Request) -> web.Response:
    """Archive a child thread: stamped in the session's threads record (the thread's log
    stays readable, as an archived session's does)."""
    session_id, log_id, record = await _thread(request)
    sthr = request.match_info["thread_id"]
    if record is None:
        raise not_found(f"thread {sthr} is the primary thread: archive the session instead")
    if not record.get("archived_at"):
        record["archived_at"] = rfc3339(datetime.now(UTC))
        state = gateway(request).state.tenant(namespace(request))
        await state.add_thread(session_id, sthr, json.dumps(record))
    return respond(await _view(request, session_id, sthr, await _snapshot(request, log_id), record))


@routes.get("/v1/sessions/{session_id}/threads/{thread_id}/events")
async def list_thread_events(request: web.Request) -> web.Response:
    _, log_id, _ = await _thread(request)
    return await list_log_events(request, log_id)


@routes.get("/v1/sessions/{session_id}/threads/{thread_id}/stream")
async def stream_thread_events(request: web.Request) -> web.StreamResponse:
    _, log_id, _ = await _thread(request)
    return await stream_log_events(request, log_id)
