"""Session state shared by the operator and the harness: settings, the bound sandbox,
sandbox requests and the tool-call journal."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from paddock.eventlog import (
    AgentPin,
    EventLog,
    SandboxBinding,
    SandboxWaiter,
    SessionNotFound,
    SessionSettings,
    SessionState,
    new_session_id,
    open_session,
    sandbox_requests,
)
from paddock.models import AgentSpec, Budget, GitRepository, Session
from paddock.testing.ports import wait_until_async


@pytest.fixture
def state(redis: Redis) -> SessionState:
    return SessionState(redis, "default")


async def requests(redis: Redis) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in await redis.xrange(sandbox_requests("default"))
    ]


async def test_settings_round_trip(state: SessionState, session: str) -> None:
    assert await state.settings(session) is None
    settings = SessionSettings(
        namespace="team-a",
        name="fix-bug",
        environment="python",
        budget=Budget(max_tokens=5000),
        repositories=[GitRepository(url="https://git.example/app.git", branch="main")],
    )
    await state.put_settings(session, settings)
    assert await state.settings(session) == settings


def pin(version: int) -> AgentPin:
    spec = AgentSpec.model_validate(
        {
            "model": "claude-sonnet-4-6",
            "system": f"version {version}",
            "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
        }
    )
    return AgentPin(version=version, spec=spec)


async def test_the_agent_version_is_pinned_once_by_the_first_writer(
    state: SessionState, session: str
) -> None:
    first = SessionSettings(namespace="team-a", name="s", agent=pin(1))
    await state.put_settings(session, first)
    # The other writer (the operator's accept, the gateway) opens it at another version.
    await state.put_settings(session, first.model_copy(update={"agent": pin(2)}))
    assert await state.settings(session) == first
    # A later write without a pin (a budget update) changes the settings, not the version.
    budget = SessionSettings(namespace="team-a", name="s", budget=Budget(max_tokens=7))
    await state.put_settings(session, budget)
    stored = await state.settings(session)
    assert stored is not None
    assert stored.budget == Budget(max_tokens=7)
    assert stored.agent == pin(1)


async def test_a_dead_sandbox_is_unbound_and_replaced_only_once(
    state: SessionState, session: str, redis: Redis
) -> None:
    await state.bind_sandbox(
        session, SandboxBinding(url="http://10.0.0.5:8080", token="t", pod="sbx-new")
    )
    # A report about an older sandbox does not drop the newer binding.
    assert await state.unbind_sandbox(session, "sbx-old") is False
    assert (await state.sandbox(session)).pod == "sbx-new"
    await state.request_sandbox(session, dead_pod="sbx-new")
    assert await state.sandbox(session) is None
    await state.request_sandbox(session)
    assert await requests(redis) == [
        {"session": session, "reason": "dead", "pod": "sbx-new"},
        {"session": session, "reason": "needed"},
    ]


async def test_the_journal_says_where_a_call_started(state: SessionState, session: str) -> None:
    assert await state.started_in(session, "sevt_call") is None
    await state.mark_started(session, "sevt_call", "sbx-1")
    assert await state.started_in(session, "sevt_call") == "sbx-1"


async def test_nothing_outlives_or_comes_back_after_delete(
    state: SessionState, log: EventLog, session: str, redis: Redis
) -> None:
    await state.put_settings(session, SessionSettings(namespace="a", name="b"))
    await state.bind_sandbox(session, SandboxBinding(url="http://x", token="t", pod="p"))
    await state.mark_started(session, "sevt_call", "p")
    await log.delete_session(session)
    assert [key async for key in redis.scan_iter(f"*{session}*")] == []
    with pytest.raises(SessionNotFound):
        await state.mark_started(session, "sevt_late", "p")
    with pytest.raises(SessionNotFound):
        await state.bind_sandbox(session, SandboxBinding(url="http://x", token="t", pod="p"))
    assert [key async for key in redis.scan_iter(f"*{session}*")] == []


async def test_a_waiter_wakes_when_the_sandbox_is_bound(state: SessionState, session: str) -> None:
    waiter = SandboxWaiter(
        state, recheck_s=60
    )  # a long re-check: only the announcement can wake it
    try:
        waiting = asyncio.create_task(waiter.wait(session, timeout_s=30))
        await wait_until_async(lambda: session in waiter.parked, timeout=10, what="parked")
        await state.bind_sandbox(session, SandboxBinding(url="http://x", token="t", pod="p"))
        # Within the 30 s only the announcement can wake it (the re-check is 60 s away).
        binding = await asyncio.wait_for(waiting, 20)
        assert binding is not None
        assert binding.pod == "p"
        assert (await waiter.wait(session, timeout_s=0)).pod == "p"  # already bound: no wait
    finally:
        await waiter.close()


async def test_a_waiter_gives_up_at_its_timeout(state: SessionState, session: str) -> None:
    waiter = SandboxWaiter(state)
    try:
        began = time.monotonic()
        assert await waiter.wait(session, timeout_s=0.3) is None
        assert 0.3 <= time.monotonic() - began < 2
    finally:
        await waiter.close()


async def test_opening_a_session_twice_sends_its_task_once(
    state: SessionState, log: EventLog, redis: Redis
) -> None:
    resource = Session.model_validate(
        {
            "metadata": {"name": "fix-bug", "namespace": "team-a"},
            "spec": {
                "agentRef": {"name": "coder"},
                "budget": {"maxTokens": 100},
                "initialEvents": [{"content": [{"text": "fix the bug"}]}],
                "resources": [
                    {"gitRepository": {"url": "https://git.example/app.git"}},
                    {"file": {"path": "/workspace/notes.md", "content": "hi"}},
                ],
            },
        }
    )
    session_id = new_session_id()
    assert await open_session(log, state, session_id, resource, environment="python") is True
    assert await open_session(log, state, session_id, resource, environment="python") is False
    # The session is of its namespace's tenant, wherever the views came from.
    log, state = log.tenant("team-a"), state.tenant("team-a")
    events = await log.replay(session_id)
    assert [e.type for e in events] == ["user.message"]
    assert events[0].content[0].text == "fix the bug"
    settings = await state.settings(session_id)
    assert (settings.namespace, settings.name, settings.environment) == (
        "team-a",
        "fix-bug",
        "python",
    )
    assert settings.budget.max_tokens == 100
    assert [r.url for r in settings.repositories] == ["https://git.example/app.git"]
    assert [f.path for f in settings.files] == ["/workspace/notes.md"]
    assert (await log.snapshot(session_id)).pending_input
