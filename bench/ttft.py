"""Platform overhead before the first token: from a `user.message` appended to the log to
the first model request arriving at the (scripted) model, over many sessions.

Runs twice in one go: with each session's sandbox bound at once, and with binding delayed
by 5 s. The first reply is a tool call, so delayed sessions do wait for their sandbox, but
only after their first model request: the two distributions must agree within noise (the
brain does not wait for the hands). Harness workers run as real processes
(`python -m paddock.harness`); Redis is started here unless `--redis-url` is given.

Ends with one line of key=value figures. Targets on loopback: p50 <= 20 ms, p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
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
from paddock.testing.redis import RedisServer
from paddock.testing.sandbox import launch

AGENT = "bench/ttft"


class FirstRequests:
    """The scripted model: records when each session's first request arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}

    def __call__(self, request: ModelRequest) -> Reply:
        matched = re.search(r"bench-\S+", request.first_user_text)
        assert matched, "every bench task names its session"
        label = matched.group(0)
        self.arrived.setdefault(label, request.received_at)
        if request.assistant_turns == 0:
            return Reply([ToolUse("bash", {"command": "true"})])
        return Reply([Text("done")])


def percentile(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


async def run(
    args: argparse.Namespace,
    redis_url: str,
    model: FakeModelServer,
    script: FirstRequests,
    sandbox_url: str,
    sandbox_token: str,
    delay: float,
) -> list[float]:
    redis = Redis.from_url(redis_url)
    log, state = EventLog(redis, "bench"), SessionState(redis, "bench")
    sent: dict[str, float] = {}
    binds: list[asyncio.Task[None]] = []

    async def bind_later(session_id: str) -> None:
        await asyncio.sleep(delay)
        await state.bind_sandbox(
            session_id, SandboxBinding(url=sandbox_url, token=sandbox_token, pod="bench")
        )

    for n in range(args.sessions):
        session_id, label = new_session_id(), f"bench-{delay:g}-{n}"
        await log.create_session(session_id, agent=AGENT)
        await state.put_settings(session_id, SessionSettings(namespace="bench", name=label))
        if delay:
            binds.append(asyncio.create_task(bind_later(session_id)))
        else:
            await state.bind_sandbox(
                session_id, SandboxBinding(url=sandbox_url, token=sandbox_token, pod="bench")
            )
        sent[label] = time.time()
        await log.send(session_id, [UserMessageEvent(content=[TextBlock(text=f"task {label}")])])
        await asyncio.sleep(args.gap_ms / 1000)
    deadline = time.time() + 30
    # The scripted model records arrivals from its own thread: poll for them.
    while len([k for k in sent if k in script.arrived]) < len(sent) and time.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.gather(*binds)
    await redis.aclose()
    missing = [k for k in sent if k not in script.arrived]
    if missing:
        raise SystemExit(f"{len(missing)} sessions never reached the model")
    return [(script.arrived[k] - sent[k]) * 1000 for k in sent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200, help="sessions per mode")
    parser.add_argument("--gap-ms", type=float, default=20, help="time between session starts")
    parser.add_argument(
        "--delay-s", type=float, default=5, help="sandbox binding delay of the second mode"
    )
    parser.add_argument("--workers", type=int, default=2, help="harness worker processes")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="paddock-ttft-") as tmp:
        redis_url = args.redis_url or stack.enter_context(RedisServer()).url
        script = FirstRequests()
        model = stack.enter_context(FakeModelServer(script))
        sandbox = launch(Path(tmp) / "sandbox")
        stack.callback(sandbox.stop)
        agent = Agent.model_validate(
            {
                "metadata": {"name": "ttft", "namespace": "bench"},
                "spec": {
                    "model": "claude-sonnet-4-6",
                    "credentials": {"anthropicApiKey": {"name": "k", "key": "k"}},
                    # Sessions waiting for a delayed sandbox hold a worker slot: room for all.
                    "harness": {"concurrency": 256},
                },
            }
        )
        agent_file = Path(tmp) / "agent.yaml"
        agent_file.write_text(yaml.safe_dump(agent.to_k8s()))
        env = {
            **os.environ,
            "PADDOCK_AGENT": AGENT,
            "PADDOCK_AGENT_FILE": str(agent_file),
            "PADDOCK_REDIS_URL": redis_url,
            "PADDOCK_MODEL_URL": model.url,
            "PADDOCK_METRICS_PORT": "0",
        }
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "paddock.harness"],
                env={**env, "PADDOCK_WORKER_ID": f"w{i}"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(args.workers)
        ]
        for worker in workers:
            stack.callback(worker.wait)
            stack.callback(worker.terminate)
        time.sleep(3)  # let the workers import and start claiming
        instant = asyncio.run(run(args, redis_url, model, script, sandbox.url, sandbox.token, 0))
        delayed = asyncio.run(
            run(args, redis_url, model, script, sandbox.url, sandbox.token, args.delay_s)
        )

    figures = {
        "sessions": args.sessions,
        "ttft_p50_ms": statistics.median(instant),
        "ttft_p95_ms": percentile(instant, 95),
        "ttft_delayed_p50_ms": statistics.median(delayed),
        "ttft_delayed_p95_ms": percentile(delayed, 95),
    }
    figures["delayed_ratio_p50"] = figures["ttft_delayed_p50_ms"] / figures["ttft_p50_ms"]
    print(
        f"instant binding: p50 {figures['ttft_p50_ms']:.1f} ms, p95 {figures['ttft_p95_ms']:.1f} ms"
    )
    print(
        f"binding delayed {args.delay_s:g} s: p50 {figures['ttft_delayed_p50_ms']:.1f} ms, "
        f"p95 {figures['ttft_delayed_p95_ms']:.1f} ms"
    )
    print(
        " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    )


if __name__ == "__main__":
    main()
