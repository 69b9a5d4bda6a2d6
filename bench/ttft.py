"""Time to first token as the platform adds it: from a `user.message` appended to the log to
the first model request arriving at the (scripted) model, decoupled against coupled.

Decoupled is Paddock's design: the harness calls the model at once and waits for the
session's sandbox only when the model asks for a tool. Coupled is the design before it: the
harness waits for the sandbox before the first model request. Both run in one go, their
sessions interleaved (even sessions one mode, odd the other) at the same rate on the same
workers, each with a cold sandbox: the pool is empty, so every session's binding arrives
one sandbox start-up after the session was created. That start-up is measured here by
starting real sandbox servers, unless `--cold-start-s` gives one (a pod start, say).

Coupled is emulated by the bench, not the product: the harness workers run through this
file (`--worker`), which makes a coupled session's run wait for its binding before the
turn loop starts. The first reply is a tool call, so every session uses its sandbox.
Workers are real processes (`python -m paddock.harness` underneath); the bench measures
only after every worker is consuming the work queue and a warm-up round has gone through.

Ends with one line of key=value figures. Targets on loopback: decoupled p50 <= 20 ms,
p95 <= 50 ms.
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
from paddock.testing.sandbox import RunningSandbox, launch
from stats import percentile

AGENT = "bench/ttft"
MODES = ("decoupled", "coupled")


def coupled_worker() -> None:
    """A harness worker in which sessions named `bench-coupled-*` wait for their sandbox
    before their first model request: the pre-decoupling design, as a baseline."""
    from paddock.harness import __main__ as harness
    from paddock.harness.worker import SessionRun

    decoupled_run = SessionRun.run

    async def run(self: SessionRun) -> None:
        settings = self.sandbox.session_settings
        if settings is not None and settings.name.startswith("bench-coupled-"):
            await self.worker.sandboxes.wait(self.claim.session_id, timeout_s=60)
        await decoupled_run(self)

    SessionRun.run = run  # type: ignore[method-assign]
    harness.main()


class FirstRequests:
    """The scripted model: records when each session's first request arrived, and when
    its turn ended (its second request)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.finished: set[str] = set()

    def __call__(self, request: ModelRequest) -> Reply:
        matched = re.search(r"bench-\S+", request.first_user_text)
        assert matched, "every bench task names its session"
        label = matched.group(0)
        self.arrived.setdefault(label, request.received_at)
        if request.assistant_turns == 0:
            return Reply([ToolUse("bash", {"command": "true"})])
        self.finished.add(label)
        return Reply([Text("done")])


class Bench:
    """Redis, the scripted model, one sandbox server and the harness workers."""

    def __init__(self, stack: ExitStack, tmp: Path, workers: int, redis_url: str | None) -> None:
        self.tmp = tmp
        self.redis_url = redis_url or stack.enter_context(RedisServer()).url
        self.script = FirstRequests()
        self.model_url = stack.enter_context(FakeModelServer(self.script)).url
        self.sandbox = launch(tmp / "sandbox")
        stack.callback(self.sandbox.stop)
        self.worker_ids = [f"w{i}" for i in range(workers)]
        agent = Agent.model_validate(
            {
                "metadata": {"name": "ttft", "namespace": "bench"},
                "spec": {
                    "model": "claude-sonnet-4-6",
                    "credentials": {"anthropicApiKey": {"name": "k", "key": "k"}},
                    # Sessions waiting for a cold sandbox hold a worker slot: room for all.
                    "harness": {"concurrency": 256},
                },
            }
        )
        agent_file = tmp / "agent.yaml"
        agent_file.write_text(yaml.safe_dump(agent.to_k8s()))
        env = {
            **os.environ,
            "PADDOCK_AGENT": AGENT,
            "PADDOCK_AGENT_FILE": str(agent_file),
            "PADDOCK_REDIS_URL": self.redis_url,
            "PADDOCK_MODEL_URL": self.model_url,
            "PADDOCK_METRICS_PORT": "0",
        }
        self.workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker"],
                env={**env, "PADDOCK_WORKER_ID": worker_id},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for worker_id in self.worker_ids
        ]
        for worker in self.workers:
            stack.callback(worker.wait)
            stack.callback(worker.terminate)
        self.count = 0

    async def ready(self) -> None:
        """Wait until every worker blocks reading the work queue, then run one warm-up round (the
        first request of a process imports and connects what later ones reuse)."""
        redis = Redis.from_url(self.redis_url)
        began = time.monotonic()
        deadline = began + 600
        while time.monotonic() < deadline:
            for worker in self.workers:
                if worker.poll() is not None:
                    raise SystemExit(f"a harness worker exited with {worker.returncode}")
            # A worker waiting for work is blocked in XREADGROUP on the queue.
            blocked = [
                c
                for c in await redis.client_list()
                if c["cmd"] == "xreadgroup" and "b" in c["flags"]
            ]
            if len(blocked) >= len(self.workers):
                print(
                    f"workers reading the queue after {time.monotonic() - began:.1f} s", flush=True
                )
                break
            await asyncio.sleep(0.1)  # another process: nothing to await
        else:
            raise SystemExit("the harness workers did not start reading the work queue")
        await redis.aclose()
        await self.round(rate=50, sessions=10 * len(self.workers), cold_start_s=0, label="warmup")

    async def round(
        self,
        *,
        rate: float,
        sessions: int,
        cold_start_s: float,
        label: str,
        modes: tuple[str, ...] = ("decoupled",),
    ) -> dict[str, list[float]]:
        """Start ``sessions`` sessions at ``rate`` a second, modes interleaved, each bound
        ``cold_start_s`` after it was created; the TTFT of each, in ms, by mode, once every
        turn has ended."""
        redis = Redis.from_url(self.redis_url)
        log, state = EventLog(redis, "bench"), SessionState(redis, "bench")
        binding = SandboxBinding(url=self.sandbox.url, token=self.sandbox.token, pod="bench")
        sent: dict[str, tuple[str, float]] = {}
        binds: list[asyncio.Task[None]] = []

        async def bind_later(session_id: str) -> None:
            await asyncio.sleep(cold_start_s)
            await state.bind_sandbox(session_id, binding)

        began = time.monotonic()
        for n in range(sessions):
            mode = modes[n % len(modes)]
            self.count += 1
            session_id, name = new_session_id(), f"bench-{mode}-{label}-{self.count}"
            await log.create_session(session_id, agent=AGENT)
            await state.put_settings(session_id, SessionSettings(namespace="bench", name=name))
            if cold_start_s:
                binds.append(asyncio.create_task(bind_later(session_id)))
            else:
                await state.bind_sandbox(session_id, binding)
            sent[name] = (mode, time.time())
            await log.send(session_id, [UserMessageEvent(content=[TextBlock(text=f"task {name}")])])
            # Open loop: session n starts at n / rate whatever the platform's pace.
            await asyncio.sleep(max(0.0, began + (n + 1) / rate - time.monotonic()))
        deadline = time.monotonic() + 60 + cold_start_s
        # The scripted model records from its own thread: poll for the turns' ends.
        while not self.script.finished >= sent.keys() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.gather(*binds)
        await redis.aclose()
        missing = [k for k in sent if k not in self.script.finished]
        if missing:
            raise SystemExit(f"{len(missing)} sessions did not finish their turn")
        ttft: dict[str, list[float]] = {mode: [] for mode in modes}
        for name, (mode, at) in sent.items():
            ttft[mode].append((self.script.arrived[name] - at) * 1000)
        return ttft


@contextmanager
def bench(workers: int, redis_url: str | None) -> Iterator[Bench]:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="paddock-ttft-") as tmp:
        yield Bench(stack, Path(tmp), workers, redis_url)


def cold_start_s(base: Path, times: int = 3) -> float:
    """The median time to start a sandbox server and have it answer."""
    took: list[float] = []
    for n in range(times):
        began = time.monotonic()
        sandbox: RunningSandbox = launch(base / f"cold-{n}")
        took.append(time.monotonic() - began)
        sandbox.stop()
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200, help="sessions per mode")
    parser.add_argument("--rate", type=float, default=20, help="new sessions a second")
    parser.add_argument(
        "--cold-start-s", type=float, help="sandbox start-up (default: measured here)"
    )
    parser.add_argument("--workers", type=int, default=2, help="harness worker processes")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    args = parser.parse_args()

    with bench(args.workers, args.redis_url) as b:
        cold = args.cold_start_s if args.cold_start_s is not None else cold_start_s(b.tmp)
        asyncio.run(b.ready())
        ttft = asyncio.run(
            b.round(
                rate=args.rate,
                sessions=2 * args.sessions,
                cold_start_s=cold,
                label="m",
                modes=MODES,
            )
        )

    figures: dict[str, float | int] = {"sessions": args.sessions, "rate": args.rate}
    figures["cold_start_ms"] = cold * 1000
    for mode in MODES:
        figures[f"ttft_{mode}_p50_ms"] = statistics.median(ttft[mode])
        figures[f"ttft_{mode}_p95_ms"] = percentile(ttft[mode], 95)
        print(
            f"{mode}: p50 {figures[f'ttft_{mode}_p50_ms']:.1f} ms, "
            f"p95 {figures[f'ttft_{mode}_p95_ms']:.1f} ms"
        )
    for q in ("p50", "p95"):
        figures[f"ratio_{q}"] = figures[f"ttft_decoupled_{q}_ms"] / figures[f"ttft_coupled_{q}_ms"]
    print(f"cold sandbox start-up {cold * 1000:.0f} ms; decoupled/coupled ratios below")
    print(
        " ".join(
            f"{k}={v:.3f}"
            if k.startswith("ratio")
            else f"{k}={v:.2f}"
            if isinstance(v, float)
            else f"{k}={v}"
            for k, v in figures.items()
        )
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        coupled_worker()
    else:
        main()
