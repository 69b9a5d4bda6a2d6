"""`python -m paddock.harness` forks its worker processes from one warm parent: a worker
that dies is replaced by a new fork while the others go on, SIGTERM stops them all, and no
worker outlives the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from redis.asyncio import Redis

from paddock.eventlog import EventLog, TextBlock, UserMessageEvent, new_session_id, session_keys
from paddock.models import Agent
from paddock.testing.fakemodel import FakeModelServer, Reply, Text
from paddock.testing.ports import wait_until, wait_until_async

from .conftest import AGENT, agent_spec


def harness(tmp: Path, redis_url: str, model_url: str) -> subprocess.Popen[bytes]:
    """A harness of two worker processes."""
    agent_file = tmp / "agent.yaml"
    agent = Agent(metadata={"name": "hello", "namespace": "default"}, spec=agent_spec())
    agent_file.write_text(yaml.safe_dump(agent.to_k8s()))
    env = {
        **os.environ,
        "PADDOCK_AGENT": AGENT,
        "PADDOCK_AGENT_FILE": str(agent_file),
        "PADDOCK_REDIS_URL": redis_url,
        "PADDOCK_MODEL_URL": model_url,
        "PADDOCK_METRICS_PORT": "0",
        "PADDOCK_LEASE_TTL_MS": "1500",
        "PADDOCK_WORKER_ID": "pod",
        "PADDOCK_WORKER_PROCESSES": "2",
    }
    with (tmp / "harness.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "paddock.harness"], env=env, stdout=out, stderr=out
        )


def workers(parent: int, *, without: int = 0) -> set[int] | None:
    """The parent's two worker processes once it has two, none of them ``without``."""
    path = Path(f"/proc/{parent}/task/{parent}/children")
    pids = {int(pid) for pid in path.read_text().split()}
    return pids if len(pids) == 2 and without not in pids else None


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_killed_worker_is_replaced_by_a_fork_and_its_session_handed_back(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    log = EventLog(redis, "default")
    session_id = new_session_id()
    lease_key = session_keys("default", session_id).lease

    async def holder(other_than: int = 0) -> int | None:
        """The pid of the worker process holding the session (its lease says pod-<pid>)."""
        lease = await redis.get(lease_key)
        pid = int(lease.decode().rsplit("-", 1)[1]) if lease else None
        return pid if pid != other_than else None

    # A long model call: the session is held while the test kills and waits.
    with FakeModelServer(lambda request: Reply([Text("done")], delay=5)) as model:
        parent = harness(tmp_path, redis_url, model.url)
        try:
            first = wait_until(lambda: workers(parent.pid), timeout=120, what="two workers")
            await log.create_session(session_id, agent=AGENT)
            await log.send(session_id, [UserMessageEvent(content=[TextBlock(text="hi")])])
            victim = await wait_until_async(holder, timeout=60, what="a worker to take it")
            assert victim in first
            os.kill(victim, signal.SIGKILL)
            now = wait_until(
                lambda: workers(parent.pid, without=victim), timeout=30, what="a replacement"
            )
            assert first - {victim} < now  # the other worker was left alone
            taker = await wait_until_async(
                lambda: holder(other_than=victim), timeout=30, what="the session taken over"
            )
            assert taker in now
            # Handed back by the parent, which reaped the victim: not left to its lease TTL.
            log_file = tmp_path / "harness.log"
            wait_until(
                lambda: (
                    f"handed back 1 sessions of dead worker pod-{victim}" in log_file.read_text()
                ),
                timeout=30,
                what="the parent's hand-back",
            )
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(30) == 0
            assert not any(running(pid) for pid in now)
        finally:
            parent.kill()
            parent.wait()


def test_no_worker_process_outlives_a_killed_parent(tmp_path: Path, redis_url: str) -> None:
    parent = harness(tmp_path, redis_url, "http://127.0.0.1:9")
    try:
        pids = wait_until(lambda: workers(parent.pid), timeout=120, what="two workers")
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: not any(map(running, pids)), timeout=10, what="the workers to die")
