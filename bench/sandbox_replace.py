"""Sandbox replacement by the real operator: from a sandbox's death during a session to a
fresh sandbox bound to that session, and how many sandboxes each failure cost.

The whole stack runs as `make demo` runs it (`paddock.testing.stack.LocalStack`: real
apiserver and etcd, Redis, operator, gateway, harness and sandbox pods on the local pod
runner, the scripted model). A few sessions run tool calls in their sandboxes for the whole
bench. Each round SIGKILLs every process of one session's bound sandbox pod (what a crash or
an OOM kill does: the runner reports the pod `Failed` by the real path, and the harness sees
its call fail), then times the kill to the moment the operator records the fresh binding
(`SandboxBinding.bound_at`, the operator's clock; the kill time is this machine's clock too).
Every sandbox pod is followed with a watch on the apiserver: the pods bound to the session
after a kill are its replacements (exactly one per failure is the target).

The same-run baseline: between kills, at the same load, a new session on an Environment
without a warm pool is created through the gateway and timed from the request to its (cold)
sandbox's binding: what a session waits for a sandbox when none is ready.

Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx
from redis.asyncio import Redis

from manifests import warm_and_cold
from paddock.eventlog import SandboxBinding, SessionState, sandbox_requests, session_keys
from paddock.operator.status import pod_dead, pod_ready
from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse
from paddock.testing.ports import wait_until_async
from paddock.testing.stack import LocalStack
from stats import percentile

NAMESPACE = "default"
AGENT, WARM, COLD = "bench-replace", "bench-replace-warm", "bench-replace-cold"
SESSION_LABEL = "paddock.dev/session-id"
STEPS = 100_000  # more than any run takes: sessions keep calling tools while killed
GIVE_UP_S = 120.0
BRIDGE, POD_CIDR = "pdk-sbreplace", "10.219.0.0/16"


def script(request: ModelRequest) -> Reply:
    if request.assistant_turns < STEPS:
        return Reply([ToolUse("bash", {"command": "sleep 0.1"})], delay=0.05)
    return Reply([Text("done")])


def manifests(pool: int) -> list[dict[str, Any]]:
    return warm_and_cold(AGENT, WARM, COLD, pool)


@dataclass
class PodWatch:
    """Every sandbox pod as the apiserver shows it, with when (wall clock) this process saw
    it first bound to a session and first dead."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    bound: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Pod -> (session id, first seen bound to it)."""
    dead: dict[str, float] = field(default_factory=dict)
    created: dict[str, float] = field(default_factory=dict)

    def seen(self, kind: str, pod: dict[str, Any]) -> None:
        now, name = time.time(), pod["metadata"]["name"]
        self.created.setdefault(name, now)
        if kind == "DELETED":
            self.pods.pop(name, None)
            self.dead.setdefault(name, now)
            return
        self.pods[name] = pod
        session = (pod["metadata"].get("labels") or {}).get(SESSION_LABEL)
        if session:
            self.bound.setdefault(name, (session, now))
        if pod_dead(pod):
            self.dead.setdefault(name, now)

    async def run(self, stack: LocalStack) -> None:
        plane = stack.control_plane
        assert plane is not None
        version = ""
        async with httpx.AsyncClient(
            base_url=plane.url, verify=plane.ssl_context(), timeout=None
        ) as client:
            while True:  # the apiserver ends a watch now and then: go on from where it was
                params = {"watch": "true", "labelSelector": "paddock.dev/component=sandbox"}
                if version:
                    params["resourceVersion"] = version
                async with client.stream(
                    "GET", f"/api/v1/namespaces/{NAMESPACE}/pods", params=params
                ) as reply:
                    async for line in reply.aiter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            version = ""
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        self.seen(event["type"], event["object"])

    def quiet(self, pool: int) -> bool:
        """The warm pool is full and ready, and no sandbox pod is starting."""
        live = [p for p in self.pods.values() if not pod_dead(p)]
        warm = [
            p
            for p in live
            if (p["metadata"].get("labels") or {}).get("paddock.dev/sandbox-state") == "warm"
        ]
        return sum(1 for p in warm if pod_ready(p)) >= pool and all(
            pod_ready(p) or p["metadata"].get("deletionTimestamp") for p in live
        )


@dataclass
class Kill:
    session: str
    mode: str
    """`busy` (a tool call in flight or coming) or `idle` (no turn running)."""
    pod: str
    at: float
    bound_at: float = 0.0
    fresh: str = ""
    claim: str = ""
    replacements: int = 0
    requests: int = 0
    """Sandbox requests the harness sent for the session after the kill."""
    reported_at: float = 0.0
    """The harness's first request after the kill (Redis' clock), if it sent one."""


def kill_pod(stack: LocalStack, pod: dict[str, Any]) -> int:
    """SIGKILL every process of ``pod`` (its network namespace's); returns how many."""
    netns = f"{stack.bridge}-{pod['metadata']['uid'].replace('-', '')[:16]}"
    listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    killed = 0
    for pid in listed.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


async def measure(stack: LocalStack, args: argparse.Namespace) -> dict[str, float]:
    assert stack.redis is not None
    rng = random.Random(args.seed)
    redis = Redis.from_url(stack.redis.url)
    state = SessionState(redis).tenant(NAMESPACE)
    watch = PodWatch()
    watcher = asyncio.create_task(watch.run(stack))
    stack.apply(*manifests(args.pool))
    client = anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=stack.api_key)

    async def quiet() -> bool:
        return watch.quiet(args.pool)

    try:
        await wait_until_async(quiet, what="full warm pool", timeout=300, interval=0.1)
        busy, idle = [], []
        for n in range(args.sessions):
            opened = await client.beta.sessions.create(
                agent=AGENT, environment_id=WARM, title=f"busy-{n}"
            )
            await client.beta.sessions.events.send(
                opened.id,
                events=[{"type": "user.message", "content": [{"type": "text", "text": f"{n}"}]}],
            )
            busy.append(opened.id)
        for n in range(args.sessions):
            opened = await client.beta.sessions.create(
                agent=AGENT, environment_id=WARM, title=f"idle-{n}"
            )
            idle.append(opened.id)

        async def running() -> bool:
            # Each busy session has run tool calls in its sandbox (the harness pods are up),
            # and each idle one has its sandbox.
            lengths = [await redis.xlen(session_keys(NAMESPACE, s).events) for s in busy]
            bound = [await state.sandbox(s) for s in idle]
            return min(lengths) >= 8 and all(bound)

        await wait_until_async(running, what="sessions running", timeout=600, interval=0.2)
        await wait_until_async(quiet, what="quiet stack", timeout=GIVE_UP_S, interval=0.05)

        kills: list[Kill] = []
        cold: list[float] = []
        for index in range(args.kills):
            # In turn a session calling tools (the harness sees its call fail and reports
            # the sandbox dead) and an idle one (only the runner's pod status tells).
            mode = "busy" if index % 2 == 0 else "idle"
            group = busy if mode == "busy" else idle
            session = group[(index // 2) % len(group)]
            binding = await state.sandbox(session)
            assert binding is not None, f"session {session} has no sandbox"
            pod = watch.pods[binding.pod]
            if not kill_pod(stack, pod):
                raise RuntimeError(f"no process of pod {binding.pod} to kill")
            kill = Kill(session, mode, binding.pod, time.time())
            kills.append(kill)

            async def fresh(kill: Kill = kill) -> SandboxBinding | None:
                bound = await state.sandbox(kill.session)
                return bound if bound is not None and bound.pod != kill.pod else None

            bound = await wait_until_async(
                fresh, what=f"fresh sandbox for {session}", timeout=GIVE_UP_S, interval=0.01
            )
            assert bound is not None  # the wait returns only a true result
            kill.bound_at, kill.fresh, kill.claim = bound.bound_at, bound.pod, bound.claim
            seconds = kill.bound_at - kill.at
            dead_seen = watch.dead.get(kill.pod, 0.0) - kill.at
            print(
                f"kill {index} ({mode}): {kill.pod} -> {kill.fresh} ({kill.claim}) in {seconds:.3f} s "
                f"(pod seen dead after {dead_seen:.3f} s)",
                flush=True,
            )
            await wait_until_async(quiet, what="quiet stack", timeout=GIVE_UP_S, interval=0.05)

            # The baseline at the same load: a new session's cold sandbox.
            started = time.time()
            created = await client.beta.sessions.create(
                agent=AGENT, environment_id=COLD, title=f"cold-{index}"
            )

            async def bound_cold(sid: str = created.id) -> SandboxBinding | None:
                return await state.sandbox(sid)

            cold_binding = await wait_until_async(
                bound_cold, what="cold sandbox", timeout=GIVE_UP_S, interval=0.01
            )
            assert cold_binding is not None
            cold.append(cold_binding.bound_at - started)
            print(f"cold {index}: {cold[-1]:.3f} s", flush=True)
            await client.beta.sessions.delete(created.id)
            await wait_until_async(quiet, what="quiet stack", timeout=GIVE_UP_S, interval=0.05)
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # kills at varied points of a call
        # A second replacement, if any, would start after the first was bound: settle.
        await asyncio.sleep(3)
        await wait_until_async(quiet, what="quiet stack", timeout=GIVE_UP_S, interval=0.05)
        requests = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(sandbox_requests(NAMESPACE))
        )
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
        await redis.aclose()

    for kill in kills:
        later = [k.at for k in kills if k.session == kill.session and k.at > kill.at]
        until = min(later, default=float("inf"))
        kill.replacements = sum(
            1
            for pod, (session, seen) in watch.bound.items()
            if session == kill.session and kill.at <= seen < until and pod != kill.pod
        )
        for entry_id, entry in requests:
            at = int(entry_id.split(b"-")[0]) / 1000
            if entry[b"session"].decode() == kill.session and kill.at <= at < until:
                kill.requests += 1
                kill.reported_at = kill.reported_at or at
    # Where the time goes: to the first report of the death (the harness's request, or the
    # pod's status from the runner, as the watch saw it), then the operator's reaction.
    for index, kill in enumerate(kills):
        signals = [t for t in (kill.reported_at, watch.dead.get(kill.pod, 0.0)) if t]
        first = min(signals, default=kill.at)
        by = "harness" if kill.reported_at and first == kill.reported_at else "pod status"
        print(
            f"kill {index} ({kill.mode}): death known after {first - kill.at:.3f} s ({by}), "
            f"bound {kill.bound_at - first:.3f} s later; {kill.requests} request(s), "
            f"{kill.replacements} replacement(s)"
        )
    replace = [k.bound_at - k.at for k in kills]
    per_failure = [k.replacements for k in kills]
    print(f"replacements per failure: {per_failure}; claims: {sorted({k.claim for k in kills})}")
    for mode in ("busy", "idle"):
        values = [k.bound_at - k.at for k in kills if k.mode == mode]
        if values:
            print(
                f"{mode}: {len(values)} kills, p50 {percentile(values, 50):.3f} s, "
                f"p95 {percentile(values, 95):.3f} s, max {max(values):.3f} s"
            )
    print(
        f"cold bind baseline: {len(cold)} sessions, p50 {percentile(cold, 50):.3f} s, "
        f"p95 {percentile(cold, 95):.3f} s, max {max(cold):.3f} s"
    )
    p95 = percentile(replace, 95)
    cold_p95 = percentile(cold, 95)
    by_mode = {
        f"sandbox_replace_{mode}_p95_s": percentile(
            [k.bound_at - k.at for k in kills if k.mode == mode] or [0.0], 95
        )
        for mode in ("busy", "idle")
    }
    return {
        "kills": len(kills),
        **by_mode,
        "sandbox_replace_p50_s": percentile(replace, 50),
        "sandbox_replace_p95_s": p95,
        "sandbox_replace_max_s": max(replace),
        "replacements_per_failure": sum(per_failure) / len(per_failure),
        "replacements_per_failure_max": max(per_failure),
        "replacements_per_failure_min": min(per_failure),
        "requests_per_failure_max": max(k.requests for k in kills),
        "baseline_cold_bind_p50_s": percentile(cold, 50),
        "baseline_cold_bind_p95_s": cold_p95,
        "sandbox_replace_p95_ratio_to_cold_bind": p95 / cold_p95,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="sandboxes killed, one at a time")
    parser.add_argument(
        "--sessions", type=int, default=2, help="sessions calling tools, and as many idle ones"
    )
    parser.add_argument("--pool", type=int, default=2, help="warm pool size")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the local pod runner needs root")
    # A bridge and addresses of its own, so `make demo`, tests/e2e or other benches may run.
    with LocalStack(bridge=BRIDGE, pod_cidr=POD_CIDR, script=script) as stack:
        try:
            figures = asyncio.run(measure(stack, args))
        except BaseException:
            sys.stderr.write(stack.logs() + "\n")
            raise
    print(
        " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    )


if __name__ == "__main__":
    main()
