"""Chaos: harness workers are SIGKILLed at random while 20 sessions run. Every session
still ends, no event is lost or duplicated, and no side-effecting call runs twice."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from redis.asyncio import Redis

from paddock.eventlog import (
    EventLog,
    SandboxBinding,
    SessionSettings,
    SessionState,
    TextBlock,
    UserMessageEvent,
    new_session_id,
)
from paddock.models import Agent
from paddock.testing.fakemodel import FakeModelServer, ModelRequest, Reply, Text, ToolUse
from paddock.testing.ports import wait_until_async
from paddock.testing.sandbox import RunningSandbox

from .conftest import AGENT, agent_spec

SESSIONS = 20
STEPS = 8
KILLS = 50
MIN_ALIVE = 2
WORKERS = 5


def script(request: ModelRequest) -> Reply:
    """Each step appends one line to the session's own file: a side effect that shows
    whether any call ran twice (or never)."""
    label = re.search(r"session-\d+", request.first_user_text).group(0)
    step = request.assistant_turns
    if step < STEPS:
        command = f"sleep 0.6; echo {label} step {step} >> {label}.log"
        return Reply([ToolUse("bash", {"command": command})], delay=0.05)
    return Reply([Text(f"{label} done")])


class Workers:
    def __init__(self, tmp: Path, redis_url: str, model_url: str) -> None:
        agent_file = tmp / "agent.yaml"
        agent = Agent(metadata={"name": "hello", "namespace": "default"}, spec=agent_spec())
        agent_file.write_text(yaml.safe_dump(agent.to_k8s()))
        self.env = {
            **os.environ,
            "PADDOCK_AGENT": AGENT,
            "PADDOCK_AGENT_FILE": str(agent_file),
            "PADDOCK_REDIS_URL": redis_url,
            "PADDOCK_MODEL_URL": model_url,
            "PADDOCK_METRICS_PORT": "0",
            "PADDOCK_LEASE_TTL_MS": "1500",
        }
        self.logs = tmp
        self.alive: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> None:
        self.started += 1
        name = f"worker-{self.started}"
        with (self.logs / f"{name}.log").open("wb") as out:
            self.alive.append(
                subprocess.Popen(
                    [sys.executable, "-m", "paddock.harness"],
                    env={**self.env, "PADDOCK_WORKER_ID": name},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    def kill_one(self, rng: random.Random) -> None:
        victim = self.alive.pop(rng.randrange(len(self.alive)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()

    def stop(self) -> None:
        for process in self.alive:
            process.terminate()
        for process in self.alive:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_sigkilled_workers_lose_nothing(
    redis_url: str, redis: Redis, tmp_path: Path, sandbox: RunningSandbox
) -> None:
    rng = random.Random(7)
    log, state = EventLog(redis, "default"), SessionState(redis, "default")
    before = (await sandbox.client().stats()).executions.get("bash", 0)
    with FakeModelServer(script) as model:
        workers = Workers(tmp_path, redis_url, model.url)
        for _ in range(WORKERS):
            workers.start()
        try:
            sessions: dict[str, str] = {}
            for n in range(SESSIONS):
                session_id, label = new_session_id(), f"session-{n:02d}"
                sessions[session_id] = label
                await log.create_session(session_id, agent=AGENT)
                await state.put_settings(
                    session_id, SessionSettings(namespace="default", name=label)
                )
                await state.bind_sandbox(
                    session_id,
                    SandboxBinding(url=sandbox.url, token=sandbox.token, pod="shared-sandbox"),
                )
                await log.send(
                    session_id, [UserMessageEvent(content=[TextBlock(text=f"work as {label}")])]
                )

            async def unfinished() -> int:
                snapshots = [await log.snapshot(s) for s in sessions]
                return sum(
                    not (s.stop_reason and s.stop_reason.type == "end_turn") for s in snapshots
                )

            # Kill no faster than a worker starts, so that victims were doing real work.
            kills_during_work = 0
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.2, 0.8))
                kills_during_work += await unfinished() > 0
                workers.kill_one(rng)
                assert len(workers.alive) >= MIN_ALIVE
                workers.start()
            assert kills_during_work >= KILLS // 2, "the chaos did not overlap the sessions' work"

            async def all_finished() -> bool:
                return await unfinished() == 0

            await wait_until_async(
                all_finished, timeout=120, what="every session to end its turn", interval=0.1
            )
        finally:
            workers.stop()

    for session_id, label in sessions.items():
        events = [
            e.model_dump(mode="json", exclude_none=True) for e in await log.replay(session_id)
        ]
        kinds = [e["type"] for e in events]
        assert kinds.count("user.message") == 1, label
        assert kinds[-1] == "session.status_idle", (label, kinds[-8:])
        assert events[-1]["stop_reason"] == {"type": "end_turn"}, label
        assert kinds.count("session.status_idle") == 1, label
        uses = [e["id"] for e in events if e["type"] == "agent.tool_use"]
        results = [e["tool_use_id"] for e in events if e["type"] == "agent.tool_result"]
        assert len(uses) == STEPS, label
        assert sorted(results) == sorted(uses), label
        assert [e for e in events if e["type"] == "agent.message"][-1]["content"][0][
            "text"
        ] == f"{label} done"
        assert len({e["id"] for e in events}) == len(events)
        lines = (sandbox.workdir / f"{label}.log").read_text().splitlines()
        assert lines == [f"{label} step {n}" for n in range(STEPS)], label
    executions = (await sandbox.client().stats()).executions.get("bash", 0) - before
    assert executions == SESSIONS * STEPS
