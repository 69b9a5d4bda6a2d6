"""A harness under test: real Redis, a real sandbox server process, the scripted model,
and harness workers running in the test's event loop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from paddock.eventlog import (
    AnyEvent,
    EventLog,
    SandboxBinding,
    SessionSettings,
    SessionState,
    TextBlock,
    UserMessageEvent,
    connect,
    new_session_id,
)
from paddock.harness import RetryPolicy, Worker, WorkerSettings
from paddock.models import AgentSpec
from paddock.testing.fakemodel import FakeModelServer, Script
from paddock.testing.ports import wait_until_async
from paddock.testing.redis import RedisServer
from paddock.testing.sandbox import RunningSandbox

AGENT = "default/hello"
_pods = itertools.count(1)


def agent_spec(**overrides: Any) -> AgentSpec:
    return AgentSpec.model_validate(
        {
            "model": "claude-sonnet-4-6",
            "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
            **overrides,
        }
    )


@dataclass
class Harness:
    redis: Redis
    """The operator's client: the test plays the operator and the gateway."""
    worker_redis: Redis
    """The tenant's harness user (`RedisServer.tenant_url`): workers run under the ACL."""
    model: FakeModelServer
    sandbox: RunningSandbox
    spec: AgentSpec
    log: EventLog = field(init=False)
    state: SessionState = field(init=False)
    workers: list[tuple[Worker, asyncio.Event, asyncio.Task[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = EventLog(self.redis, "default")
        self.state = SessionState(self.redis, "default")

    def start_worker(self, **overrides: Any) -> Worker:
        defaults: dict[str, Any] = {
            "agent": AGENT,
            "spec": self.spec,
            "worker_id": f"worker-{len(self.workers)}",
            "model_base_url": self.model.url,
            "lease_ttl_ms": 3000,
            "retry": RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.2),
        }
        settings = WorkerSettings(**{**defaults, **overrides})
        worker = Worker(settings, self.worker_redis)
        stop = asyncio.Event()
        self.workers.append((worker, stop, asyncio.create_task(worker.run(stop))))
        return worker

    async def bind(self, session_id: str, sandbox: RunningSandbox | None = None) -> SandboxBinding:
        sandbox = sandbox or self.sandbox
        binding = SandboxBinding(url=sandbox.url, token=sandbox.token, pod=f"sandbox-{next(_pods)}")
        await self.state.bind_sandbox(session_id, binding)
        return binding

    async def start_session(self, text: str, *, bind: bool = True, **settings: Any) -> str:
        session_id = new_session_id()
        await self.log.create_session(session_id, agent=AGENT)
        await self.state.put_settings(
            session_id, SessionSettings(namespace="default", name=session_id.lower(), **settings)
        )
        if bind:
            await self.bind(session_id)
        await self.send(session_id, UserMessageEvent(content=[TextBlock(text=text)]))
        return session_id

    async def send(self, session_id: str, *events: AnyEvent) -> list[AnyEvent]:
        return await self.log.send(session_id, events)

    async def wait_idle(
        self, session_id: str, *, count: int = 1, within: float = 20
    ) -> list[dict[str, Any]]:
        """Wait until the session has `count` `session.status_idle` events; return every
        event as JSON."""
        seen: list[dict[str, Any]] = []

        async def idle() -> list[dict[str, Any]] | None:
            seen[:] = await self.events(session_id)
            idles = [e for e in seen if e["type"] == "session.status_idle"]
            return seen if len(idles) >= count else None

        try:
            return await wait_until_async(idle, timeout=within, what=f"{count} idle(s)")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; events: {types(seen)}") from None

    async def events(self, session_id: str) -> list[dict[str, Any]]:
        return [
            e.model_dump(mode="json", exclude_none=True) for e in await self.log.replay(session_id)
        ]

    async def close(self) -> None:
        for _, stop, _ in self.workers:
            stop.set()
        await asyncio.gather(*(task for *_, task in self.workers), return_exceptions=True)


@pytest.fixture
async def make_harness(
    redis: Redis, redis_server: RedisServer, sandbox: RunningSandbox
) -> AsyncIterator[Callable[..., Harness]]:
    """`make_harness(script, **agent_spec_fields)` with one worker started."""
    made: list[Harness] = []
    # As workers connect (`connect`: a read timeout longer than a tail's blocking read; with
    # redis-py's 5 s, equal to it, an idle tail failed now and then on a loaded machine).
    tenant = connect(redis_server.tenant_url(AGENT.partition("/")[0]))

    def make(script: Script, workers: int = 1, **spec: Any) -> Harness:
        model = FakeModelServer(script).start()
        harness = Harness(redis, tenant, model, sandbox, agent_spec(**spec))
        made.append(harness)
        for _ in range(workers):
            harness.start_worker()
        return harness

    yield make
    for harness in made:
        await harness.close()
        harness.model.stop()
    await tenant.aclose()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]
