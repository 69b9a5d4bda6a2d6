"""Takeover after a harness worker dies: from a SIGKILL to the next append to each of the
victim's sessions by another worker, over single kills and bursts that kill several
workers at once (each victim replaced at once: by default the harness forks the
replacement from its warm parent, as it does in a pod; with ``--replace exec`` a new
process imports the harness afresh, as a new pod would, and is still starting while the
next bursts come).

Sessions run for the whole bench (a tool call in a shared sandbox, then the next model
request, over and over), so every worker holds sessions when it is killed. The sessions
a victim held are read from their leases just before the kill; the time of their next
append comes from the stream entry id (Redis' clock, like the kill time), so a busy bench
process does not add to the figures. Single kills wait for the takeover before the next
one; bursts follow each other every 0.2-0.8 s, so they overlap with the replacements'
start-up. The baseline is the lease TTL (a takeover cannot beat it); the target is p95 at
most TTL + 0.5 s.

Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
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
    session_keys,
)
from paddock.models import Agent
from paddock.testing.fakemodel import FakeModelServer, ModelRequest, Reply, Text, ToolUse
from paddock.testing.redis import RedisServer
from paddock.testing.sandbox import RunningSandbox, launch
from stats import percentile

AGENT = "bench/takeover"
TENANT = "bench"
STEPS = 2000  # more than any run takes: sessions never go idle while killed
GIVE_UP_S = 120.0


def script(request: ModelRequest) -> Reply:
    if request.assistant_turns < STEPS:
        return Reply([ToolUse("bash", {"command": "true"})], delay=0.3)
    return Reply([Text("done")])


class Workers:
    """Harness worker processes, SIGKILLed by the bench and replaced at once.

    ``fork`` (how the harness runs): one ``python -m paddock.harness`` forks ``count``
    worker processes and forks a replacement for each that dies. ``exec`` (a pod dying):
    each worker is a ``python -m paddock.harness`` of its own, replaced by a new one that
    imports the harness afresh.
    """

    def __init__(self, env: dict[str, str], logs: Path, mode: str, count: int) -> None:
        self.env = env
        self.logs = logs
        self.mode = mode
        self.count = count
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        """exec: worker name -> process; fork: the one supervising process."""
        self.killed: set[int] = set()
        self.started = 0

    def start_all(self) -> None:
        if self.mode == "fork":
            self._start("harness", processes=self.count)
        else:
            for _ in range(self.count):
                self.replace()

    def alive(self) -> list[str]:
        """The names (lease holders) of the live workers, those still starting included."""
        if self.mode == "exec":
            return sorted(self.processes)
        (supervisor,) = self.processes.values()
        path = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
        pids = {int(pid) for pid in path.read_text().split()} - self.killed
        return sorted(f"harness-{pid}" for pid in pids)

    def kill(self, names: list[str]) -> None:
        if self.mode == "fork":
            # Not our children: the supervisor reaps them and forks the replacements.
            for name in names:
                pid = int(name.rsplit("-", 1)[1])
                self.killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            return
        victims = [self.processes.pop(name) for name in names]
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        for victim in victims:
            victim.wait()
        for _ in names:
            self.replace()

    def replace(self) -> None:
        self.started += 1
        self._start(f"worker-{self.started}", processes=1)

    def _start(self, name: str, *, processes: int) -> None:
        with (self.logs / f"{name}.log").open("wb") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "paddock.harness"],
                env={
                    **self.env,
                    "PADDOCK_WORKER_ID": name,
                    "PADDOCK_WORKER_PROCESSES": str(processes),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


class Bench:
    def __init__(
        self, redis: Redis, workers: Workers, sessions: list[str], *, trace: bool = False
    ) -> None:
        self.trace = trace
        self.redis = redis
        self.workers = workers
        self.sessions = sessions
        self.pending: dict[str, int] = {}
        """Session -> Redis time (ms) of the kill whose takeover is not seen yet."""
        self.single: list[float] = []
        self.burst: list[float] = []
        self._kind: dict[str, str] = {}
        # --trace: where a takeover's time goes, from the leases polled every observe().
        self.claims: dict[str, list[tuple[int, str]]] = {}
        """Pending session -> (first seen ms, lease token:holder) of each lease after the kill."""
        self.traced: list[tuple[str, int, list[tuple[int, str]], int]] = []
        """(kind, killed ms, claims, appended ms) of each takeover seen."""
        self.born: dict[str, int] = {}
        """Worker name -> ms it was first seen alive (fork mode)."""
        self.first_claim: dict[str, int] = {}
        """Worker name -> ms it was first seen holding a lease."""
        self.died: dict[str, int] = {}

    async def now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def holders(self) -> dict[str, str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for session in self.sessions:
                pipe.get(session_keys(TENANT, session).lease)
            values = await pipe.execute()
        held = {}
        for session, value in zip(self.sessions, values, strict=True):
            if value:
                held[session] = value.decode().split(":", 1)[1]
        return held

    async def kill(self, names: list[str], kind: str) -> int:
        held = await self.holders()
        self.workers.kill(names)
        killed_at = await self.now_ms()
        for name in names:
            self.died[name] = killed_at
        victims = [s for s, holder in held.items() if holder in names]
        for session in victims:
            # A session whose earlier takeover is still pending keeps its first kill time:
            # the user waits from then.
            if session not in self.pending:
                self.pending[session] = killed_at
                self._kind[session] = kind
                self.claims[session] = []
        return len(victims)

    async def watch_leases(self) -> None:
        """--trace: note new workers, each worker's first lease and each lease taken on a
        session whose takeover is pending."""
        now = await self.now_ms()
        for name in self.workers.alive():
            self.born.setdefault(name, now)
        async with self.redis.pipeline(transaction=False) as pipe:
            for session in self.sessions:
                pipe.get(session_keys(TENANT, session).lease)
            values = await pipe.execute()
        for session, value in zip(self.sessions, values, strict=True):
            if not value:
                continue
            lease = value.decode()
            self.first_claim.setdefault(lease.split(":", 1)[1], now)
            claims = self.claims.get(session)
            if claims is not None and (not claims or claims[-1][1] != lease):
                claims.append((now, lease))

    async def observe(self) -> None:
        """Record the takeovers that happened since the last call."""
        if self.trace:
            await self.watch_leases()
        if not self.pending:
            return
        sessions = list(self.pending)
        async with self.redis.pipeline(transaction=False) as pipe:
            for session in sessions:
                start = f"{self.pending[session] + 1}-0"
                pipe.xrange(session_keys(TENANT, session).events, min=start, count=1)
            replies = await pipe.execute()
        now = await self.now_ms()
        for session, entries in zip(sessions, replies, strict=True):
            killed_at = self.pending[session]
            if entries:
                appended = int(entries[0][0].decode().split("-")[0])
            elif now - killed_at > GIVE_UP_S * 1000:
                appended = now  # counted as taken over now: never hides a stuck session
            else:
                continue
            del self.pending[session]
            kind = self._kind.pop(session)
            self.traced.append((kind, killed_at, self.claims.pop(session), appended))
            (self.single if kind == "single" else self.burst).append((appended - killed_at) / 1000)

    async def settle(self) -> None:
        while self.pending:
            await self.observe()
            await asyncio.sleep(0.02)

    async def sleep_observing(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.observe()
            await asyncio.sleep(0.02)


async def run(
    args: argparse.Namespace, redis_url: str, workers: Workers, sandbox: RunningSandbox
) -> Bench:
    rng = random.Random(args.seed)
    redis = Redis.from_url(redis_url)
    log, state = EventLog(redis, TENANT), SessionState(redis, TENANT)
    sessions = []
    for n in range(args.sessions):
        session_id = new_session_id()
        sessions.append(session_id)
        await log.create_session(session_id, agent=AGENT)
        await state.put_settings(session_id, SessionSettings(namespace=TENANT, name=f"s{n}"))
        await state.bind_sandbox(
            session_id, SandboxBinding(url=sandbox.url, token=sandbox.token, pod="bench")
        )
        await log.send(session_id, [UserMessageEvent(content=[TextBlock(text=f"task {n}")])])
    bench = Bench(redis, workers, sessions, trace=args.trace)
    # Every session being worked on (workers ready) before the first kill; importing the
    # harness takes minutes of wall time on a loaded 2-core machine.
    deadline = time.monotonic() + 300
    while len(await bench.holders()) < len(sessions):
        if time.monotonic() > deadline:
            count = len(await bench.holders())
            raise SystemExit(f"only {count} of {len(sessions)} sessions were ever claimed at once")
        await asyncio.sleep(0.05)
    await bench.sleep_observing(2)

    for _ in range(args.single):
        held = await bench.holders()
        busy = sorted(set(held.values()) & set(workers.alive()))
        await bench.kill([rng.choice(busy)], "single")
        await bench.settle()
        await bench.sleep_observing(rng.uniform(0.5, 1.5))

    sizes = [int(s) for s in args.burst_sizes.split(",")]
    for n in range(args.bursts):
        alive = workers.alive()
        size = min(sizes[n % len(sizes)], len(alive))
        await bench.kill(rng.sample(alive, size), "burst")
        await bench.sleep_observing(rng.uniform(0.2, 0.8))
    await bench.settle()
    await redis.aclose()
    return bench


def print_trace(bench: Bench) -> None:
    """Per takeover: the leases taken after the kill (a lease whose worker died before the
    append cost the session that lease's expiry), kill -> first lease, last lease -> append;
    per worker: first seen alive -> first lease held."""
    print(
        "kind killed_ms total_s leases dead_leases kill_to_first_lease_s last_lease_to_append_s holders"
    )
    for kind, killed, claims, appended in sorted(bench.traced, key=lambda t: t[1]):
        holders = [lease.split(":", 1)[1] for _, lease in claims]
        dead = sum(1 for h in holders[:-1] if h in bench.died) if claims else 0
        first = (claims[0][0] - killed) / 1000 if claims else float("nan")
        last = (appended - claims[-1][0]) / 1000 if claims else float("nan")
        print(
            f"{kind} {killed} {(appended - killed) / 1000:.2f} {len(claims)} {dead} "
            f"{first:.2f} {last:.2f} {','.join(holders)}"
        )
    starts = [
        (bench.first_claim[name] - born) / 1000
        for name, born in bench.born.items()
        if name in bench.first_claim
    ]
    never = [n for n in bench.born if n not in bench.first_claim]
    lived = [(bench.died[n] - bench.born[n]) / 1000 for n in bench.died if n in bench.born]
    if starts:
        print(
            f"workers: {len(bench.born)} seen, first lease after p50 "
            f"{statistics.median(starts):.2f} s p95 {percentile(starts, 95):.2f} s "
            f"max {max(starts):.2f} s; {len(never)} never held one"
        )
    if lived:
        print(f"killed workers lived p50 {statistics.median(lived):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="harness worker processes")
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--ttl-ms", type=int, default=1500, help="session lease TTL")
    parser.add_argument("--single", type=int, default=10, help="single kills, one at a time")
    parser.add_argument("--bursts", type=int, default=40, help="kills under churn")
    parser.add_argument(
        "--burst-sizes", default="1,2,4", help="workers killed at once, in turn (4 = all)"
    )
    parser.add_argument(
        "--replace",
        choices=("fork", "exec"),
        default="fork",
        help="fork: worker processes of one harness, re-forked by it (a worker crash); "
        "exec: a harness process per worker, replaced by a new one (a pod dying)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--trace",
        action="store_true",
        help="poll the leases and print, per takeover, the leases it waited through",
    )
    parser.add_argument("--logs", help="keep the workers' logs in this directory")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="paddock-takeover-") as tmp:
        redis_url = stack.enter_context(RedisServer()).url
        model = stack.enter_context(FakeModelServer(script))
        sandbox = launch(Path(tmp) / "sandbox")
        stack.callback(sandbox.stop)
        agent = Agent.model_validate(
            {
                "metadata": {"name": "takeover", "namespace": TENANT},
                "spec": {
                    "model": "claude-sonnet-4-6",
                    "credentials": {"anthropicApiKey": {"name": "k", "key": "k"}},
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
            "PADDOCK_LEASE_TTL_MS": str(args.ttl_ms),
        }
        logs = Path(args.logs) if args.logs else Path(tmp)
        workers = Workers(env, logs, args.replace, args.workers)
        stack.callback(workers.stop)
        workers.start_all()
        bench = asyncio.run(run(args, redis_url, workers, sandbox))

    ttl = args.ttl_ms / 1000
    if args.trace:
        print_trace(bench)
    every = bench.single + bench.burst
    for name, values in (("single kills", bench.single), ("under churn", bench.burst)):
        if values:
            print(
                f"{name}: {len(values)} takeovers, p50 {statistics.median(values):.2f} s, "
                f"p95 {percentile(values, 95):.2f} s, max {max(values):.2f} s"
            )
    p95 = percentile(every, 95)
    figures = {
        "replace": args.replace,
        "takeovers": len(every),
        "lease_ttl_s": ttl,
        "takeover_single_p95_s": percentile(bench.single, 95) if bench.single else 0.0,
        "takeover_churn_p95_s": percentile(bench.burst, 95) if bench.burst else 0.0,
        "takeover_p50_s": statistics.median(every),
        "takeover_max_s": max(every),
        "takeover_p95_s": p95,
        "takeover_p95_ratio_to_ttl": p95 / ttl,
    }
    print(
        " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    )


if __name__ == "__main__":
    main()
