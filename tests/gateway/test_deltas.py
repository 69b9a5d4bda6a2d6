"""Previews on the event stream (`event_deltas[]`): the official SDK against a running
gateway, a real harness worker and the scripted model, which streams its replies in chunks.
"""

from __future__ import annotations

from typing import Any

import pytest

from paddock.testing.fakemodel import Reply, Text, Thinking, turns

from .stack import Stack, turn

pytestmark = pytest.mark.timeout(60)

LONG = "Here is a long answer that the scripted model streams in many small chunks. " * 8


async def _session(stack: Stack, script: Any) -> tuple[Any, str]:
    client = stack.client()
    environment = await client.beta.environments.create(name="deltas-env")
    agent = await client.beta.agents.create(name="previewer", model="claude-sonnet-4-6")
    stack.start_worker(agent.id, script)
    session = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    return client, session.id


async def test_message_deltas_concatenate_to_the_message(stack: Stack) -> None:
    client, session = await _session(
        stack, turns(Reply([Text(LONG)], chunk_delay=0.002), Reply([Text("Second.")]))
    )
    seen = await turn(client, session, "Go", event_deltas=["agent.message"])
    types = [event.type for event in seen]
    (start,) = [event for event in seen if event.type == "event_start"]
    (message,) = [event for event in seen if event.type == "agent.message"]
    assert start.event.type == "agent.message"
    assert start.event.id == message.id  # the preview names the event it becomes
    deltas = [event for event in seen if event.type == "event_delta"]
    assert deltas
    assert all(delta.event_id == message.id for delta in deltas)
    assert all(delta.delta.index == 0 for delta in deltas)
    assert "".join(delta.delta.content.text for delta in deltas) == LONG
    assert message.content[0].text == LONG
    # The reference's order: span start, event_start, deltas, the message, span end.
    span_start = types.index("span.model_request_start")
    first_delta = types.index("event_delta")
    last_delta = len(types) - 1 - types[::-1].index("event_delta")
    assert span_start < types.index("event_start") < first_delta
    assert last_delta < types.index("agent.message") < types.index("span.model_request_end")
    # Coalesced: fewer frames than the model's chunks (16 characters each).
    assert len(deltas) < len(LONG) / 16

    # Previews are never stored: the log shows the events only.
    listed = [event.type async for event in client.beta.sessions.events.list(session)]
    assert "agent.message" in listed
    assert not {"event_start", "event_delta"} & set(listed)

    # A stream that did not ask gets none.
    plain = await turn(client, session, "Again")
    assert [e.content[0].text for e in plain if e.type == "agent.message"] == ["Second."]
    assert not {"event_start", "event_delta"} & {event.type for event in plain}


async def test_thinking_previews_start_only(stack: Stack) -> None:
    client, session = await _session(
        stack, turns(Reply([Thinking("Let me think about it."), Text("Done thinking.")]))
    )
    seen = await turn(client, session, "Think", event_deltas=["agent.thinking"])
    (start,) = [event for event in seen if event.type == "event_start"]
    (thinking,) = [event for event in seen if event.type == "agent.thinking"]
    assert start.event.type == "agent.thinking"
    assert start.event.id == thinking.id
    types = [event.type for event in seen]
    assert types.index("event_start") < types.index("agent.thinking")
    # agent.thinking is start-only, and agent.message was not asked for.
    assert "event_delta" not in types
    assert [e.content[0].text for e in seen if e.type == "agent.message"] == ["Done thinking."]


async def test_both_types_preview_each_event_with_its_id(stack: Stack) -> None:
    client, session = await _session(stack, turns(Reply([Thinking("Hmm."), Text("Answer.")])))
    seen = await turn(client, session, "Both", event_deltas=["agent.message", "agent.thinking"])
    starts = {event.event.type: event.event.id for event in seen if event.type == "event_start"}
    durable = {event.type: event.id for event in seen if event.type.startswith("agent.")}
    assert starts == durable
    text = "".join(e.delta.content.text for e in seen if e.type == "event_delta")
    assert text == "Answer."


async def test_last_event_id_resume_replays_no_previews(stack: Stack) -> None:
    client, session = await _session(stack, turns(Reply([Text(LONG)])))
    seen = await turn(client, session, "Go", event_deltas=["agent.message"])
    first = next(event for event in seen if event.type == "span.model_request_start")
    async with stack.http() as http:
        # The replayed part ends at idle; close once it is read.
        body = b""
        async with http.stream(
            "GET",
            f"/v1/sessions/{session}/events/stream",
            params={"event_deltas[]": "agent.message"},
            headers={"Last-Event-ID": first.id},
        ) as response:
            async for chunk in response.aiter_bytes():
                body += chunk
                if b"session.status_idle" in body:
                    break
    assert b"event: agent.message" in body
    assert b"event_start" not in body
    assert b"event_delta" not in body


async def test_a_slow_stream_sheds_previews_as_a_prefix_never_events() -> None:
    """The fan-out's per-stream buffer: previews beyond `delta_limit` are shed (and the rest
    of that preview with them), events are all delivered, in order."""
    from paddock.gateway.fanout import Frame, Subscription

    def preview(kind: str, event_id: str, text: str = "") -> Frame:
        return Frame(event_id, kind, text.encode(), preview="agent.message")

    subscription = Subscription(limit=100, deltas=frozenset({"agent.message"}), delta_limit=3)
    subscription.push_preview(preview("event_start", "sevt_2"))
    for text in "abcde":  # nobody reads: two fit, the rest is shed
        subscription.push_preview(preview("event_delta", "sevt_2", text))
    subscription.push(Frame("sevt_2", "agent.message", b"message"))
    subscription.push_preview(preview("event_delta", "sevt_2", "late"))  # stale: dropped
    subscription.push(Frame("sevt_3", "span.model_request_end", b"end"))
    subscription.close()
    received = []
    while (item := await subscription.next()) is not None:
        received.append((item.type, item.data.decode()))
    assert received == [
        ("event_start", ""),
        ("event_delta", "a"),
        ("event_delta", "b"),
        ("agent.message", "message"),
        ("span.model_request_end", "end"),
    ]


async def test_a_message_sent_mid_stream_gives_the_event_a_new_id(stack: Stack) -> None:
    """The reserved id holds only if nothing is appended while the model streams: a user
    message that lands first makes the response take new ids, and the preview stays
    unmatched (closed by span.model_request_end, as the SDK documents)."""
    client, session = await _session(
        stack, turns(Reply([Text(LONG)], chunk_delay=0.005), Reply([Text("Next.")]))
    )
    seen: list[Any] = []
    async with await client.beta.sessions.events.stream(
        session, event_deltas=["agent.message"]
    ) as stream:
        await client.beta.sessions.events.send(
            session, events=[{"type": "user.message", "content": [{"type": "text", "text": "Go"}]}]
        )
        interjected = False
        async for event in stream:
            seen.append(event)
            if event.type == "event_delta" and not interjected:
                interjected = True  # the response's ids were reserved before its event_start
                await client.beta.sessions.events.send(
                    session,
                    events=[
                        {"type": "user.message", "content": [{"type": "text", "text": "Also"}]}
                    ],
                )
            if event.type == "session.status_idle":
                break
    starts = [event for event in seen if event.type == "event_start"]
    messages = [event for event in seen if event.type == "agent.message"]
    assert messages[0].content[0].text == LONG
    assert starts[0].event.id != messages[0].id
    types = [event.type for event in seen]
    assert types.index("span.model_request_end") > types.index("agent.message")
    stored = [e async for e in client.beta.sessions.events.list(session)]
    assert messages[0].id in [e.id for e in stored]
