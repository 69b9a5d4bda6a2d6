"""The event stream on the wire: SSE framing, resume with Last-Event-ID, keep-alives, the
end of a deleted or terminated session, and a disconnecting client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from paddock.eventlog import (
    EventLog,
    SessionStatusTerminatedEvent,
    TextBlock,
    UserMessageEvent,
)
from paddock.gateway import metrics
from paddock.testing.ports import wait_until_async

from .stack import Stack

pytestmark = pytest.mark.timeout(60)


async def make_session(stack: Stack) -> str:
    client = stack.client()
    environment = await client.beta.environments.create(name="stream-env")
    agent = await client.beta.agents.create(name="streamer", model="claude-sonnet-4-6")
    return (await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)).id


def message(text: str) -> UserMessageEvent:
    return UserMessageEvent(content=[TextBlock(text=text)])


async def frames(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """The next ``count`` SSE messages (comments included, as {"comment": ...})."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if current:
                found.append(current)
                current = {}
                if len(found) == count:
                    return found
            continue
        if line.startswith(":"):
            current["comment"] = line[1:].strip()
            continue
        field, _, value = line.partition(": ")
        assert field not in current, f"{field} twice in one message"
        current[field] = value
    return found


async def test_frames_name_the_type_and_carry_the_id(stack: Stack) -> None:
    session = await make_session(stack)
    log = EventLog(stack.redis, stack.a.namespace)
    async with (
        stack.http() as http,
        http.stream("GET", f"/v1/sessions/{session}/events/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["request-id"].startswith("req_")
        stored = await log.send(session, [message("one\ntwo"), message("three")])
        received = await frames(response, 2)
    for frame, event in zip(received, stored, strict=True):
        data = json.loads(frame["data"])
        assert frame["event"] == data["type"] == "user.message"
        assert frame["id"] == data["id"] == event.id
    assert json.loads(received[0]["data"])["content"][0]["text"] == "one\ntwo"


async def test_last_event_id_resumes_after_it(stack: Stack) -> None:
    session = await make_session(stack)
    stored = await EventLog(stack.redis, stack.a.namespace).send(
        session, [message("a"), message("b"), message("c")]
    )
    async with (
        stack.http() as http,
        http.stream(
            "GET",
            f"/v1/sessions/{session}/events/stream",
            headers={"Last-Event-ID": stored[0].id},
        ) as response,
    ):
        received = await frames(response, 2)
    assert [f["id"] for f in received] == [stored[1].id, stored[2].id]


async def test_keep_alive_pings(stack: Stack) -> None:
    session = await make_session(stack)
    stack.gateway.ping_interval_s = 0.2
    async with (
        stack.http() as http,
        http.stream("GET", f"/v1/sessions/{session}/events/stream") as response,
    ):
        received = await asyncio.wait_for(frames(response, 2), 5)
    assert received == [{"comment": "ping"}, {"comment": "ping"}]


async def test_the_stream_ends_when_the_session_is_deleted(stack: Stack) -> None:
    session = await make_session(stack)
    client = stack.client()
    streamed = []
    async with await client.beta.sessions.events.stream(session) as stream:
        await client.beta.sessions.delete(session)
        async for event in stream:
            streamed.append(event.type)
    assert streamed == ["session.deleted"]


async def test_the_stream_ends_after_termination(stack: Stack) -> None:
    session = await make_session(stack)
    client = stack.client()
    async with await client.beta.sessions.events.stream(session) as stream:
        await EventLog(stack.redis, stack.a.namespace).send(
            session, [SessionStatusTerminatedEvent()]
        )
        streamed = [event.type async for event in stream]
    assert streamed == ["session.status_terminated"]


async def test_a_client_that_leaves_frees_its_stream(stack: Stack) -> None:
    session = await make_session(stack)
    before = metrics.OPEN_STREAMS._value.get()
    async with (
        stack.http() as http,
        http.stream("GET", f"/v1/sessions/{session}/events/stream") as response,
    ):
        assert response.status_code == 200
        assert metrics.OPEN_STREAMS._value.get() == before + 1
    await wait_until_async(
        lambda: metrics.OPEN_STREAMS._value.get() == before,
        timeout=5,
        what="the stream to be closed",
    )
    assert not stack.gateway.streams
    assert not stack.gateway.fanout._hubs  # the session's shared tail is closed too


async def test_streams_of_one_session_share_a_tail_and_resume_without_gaps(stack: Stack) -> None:
    session = await make_session(stack)
    log = EventLog(stack.redis, stack.a.namespace)
    first = await log.send(session, [message("before")])
    path = f"/v1/sessions/{session}/events/stream"
    async with (
        stack.http() as http,
        http.stream("GET", path) as live,
        http.stream("GET", path, headers={"Last-Event-ID": first[0].id}) as resumed,
        http.stream(
            "GET", path, headers={"Last-Event-ID": "sevt_" + "0" * 14 + first[0].id[-4:]}
        ) as whole,
    ):
        assert len(stack.gateway.fanout._hubs) == 1
        stored = await log.send(session, [message("a"), message("b")])
        ids = [event.id for event in stored]
        assert [f["id"] for f in await frames(live, 2)] == ids
        assert [f["id"] for f in await frames(resumed, 2)] == ids
        assert [f["id"] for f in await frames(whole, 3)] == [first[0].id, *ids]


async def test_a_client_too_far_behind_is_told_to_resume(stack: Stack) -> None:
    session = await make_session(stack)
    stack.gateway.fanout.limit = 3
    path = f"/v1/sessions/{session}/events/stream"
    async with stack.http() as http, http.stream("GET", path) as response:
        # Nothing is read while ten events arrive: the gateway's queue for it overflows.
        await EventLog(stack.redis, stack.a.namespace).send(
            session, [message(str(n)) for n in range(10)]
        )
        received = await asyncio.wait_for(frames(response, 10), 10)
    assert received[-1]["event"] == "error"
    assert "Last-Event-ID" in json.loads(received[-1]["data"])["error"]["message"]
    assert len(received) < 10


async def test_a_send_retried_with_an_idempotency_key_is_stored_once(stack: Stack) -> None:
    session = await make_session(stack)
    body = {"events": [{"type": "user.message", "content": [{"type": "text", "text": "once"}]}]}
    async with stack.http() as http:
        path, key = f"/v1/sessions/{session}/events", {"Idempotency-Key": "k1"}
        first = await http.post(path, json=body, headers=key)
        second = await http.post(path, json=body, headers=key)
        listed = (await http.get(f"/v1/sessions/{session}/events")).json()["data"]
    assert first.json()["data"][0]["id"] == second.json()["data"][0]["id"]
    assert first.json()["data"][0]["processed_at"] is None
    assert [e["content"][0]["text"] for e in listed] == ["once"]
