"""Time to first token as a user sees it: the official SDK creates a session through the
gateway, opens the event stream with `event_deltas[]`, sends a `user.message`, and times
the first event of the model's reply (the first stored `agent.*` event) and the first
`event_delta` preview, from the moment it starts sending.

The whole stack runs as `make demo` runs it (`paddock.testing.stack.LocalStack`: real
apiserver, Redis, operator, gateway, harness and sandbox pods on the local pod runner, the
scripted model). Each round times one session on an Environment with a warm pool and one
on an Environment with `warmPool.size: 0` (a cold sandbox is started for it), in
alternating order, each after the previous session's pods are gone and the warm pool is
full again, so both modes see the same idle stack. The model's first reply is streamed
text and a bash call, so the turn (`turn_*`) also shows when the cold sandbox is paid for:
at the tool call, not before the first token. The baseline of the ratio is the warm mode.

Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import anthropic

from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse
from paddock.testing.ports import wait_until
from paddock.testing.stack import LocalStack
from stats import percentile

PADDOCK = "paddock.dev/v1alpha1"
AGENT, WARM, COLD = "bench-e2e", "bench-warm", "bench-cold"
POOL = 2
REPLY = "Let me look at the workspace first, then I will answer in full. " * 3
"""About 200 characters: 13 chunks of the scripted model's 16, one every `CHUNK_DELAY`."""
CHUNK_DELAY = 0.005


def script(request: ModelRequest) -> Reply:
    """Streamed text and a tool call, then a short answer: a first reply with deltas that
    needs the sandbox only after it has been streamed."""
    if request.assistant_turns == 0:
        return Reply([Text(REPLY), ToolUse("bash", {"command": "true"})], chunk_delay=CHUNK_DELAY)
    return Reply([Text("Done.")])


def manifests() -> list[dict[str, Any]]:
    def environment(name: str, size: int) -> dict[str, Any]:
        return {
            "apiVersion": PADDOCK,
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": {
                "image": "paddock/sandbox:0.1.0",
                "networking": {"mode": "none"},
                "warmPool": {"size": size},
            },
        }

    agent = {
        "apiVersion": PADDOCK,
        "kind": "Agent",
        "metadata": {"name": AGENT},
        "spec": {
            "model": "claude-sonnet-4-6",
            "environmentRef": {"name": WARM},
            "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
        },
    }
    return [environment(WARM, POOL), environment(COLD, 0), agent]


def quiet(stack: LocalStack) -> bool:
    """The warm pool is full and no sandbox is bound, starting or stopping: the state each
    timed session starts from."""
    environment = stack.get(PADDOCK, "Environment", "default", WARM) or {}
    pool = (environment.get("status") or {}).get("warmPool") or {}
    sandboxes = [
        pod
        for pod in stack.get("v1", "Pod", "default") or []
        if (pod["metadata"].get("labels") or {}).get("paddock.dev/component") == "sandbox"
    ]
    return (
        pool.get("ready") == POOL
        and len(sandboxes) == POOL
        and all(
            pod["metadata"].get("deletionTimestamp") is None
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
            for pod in sandboxes
        )
    )


def one_session(client: anthropic.Anthropic, environment: str, label: str) -> dict[str, float]:
    """One user turn through the gateway; seconds from the send to the first agent event,
    the first delta and the turn's idle."""
    session = client.beta.sessions.create(agent=AGENT, environment_id=environment, title=label)
    seen: dict[str, float] = {}
    try:
        with client.beta.sessions.events.stream(
            session.id, event_deltas=["agent.message"]
        ) as stream:
            started = time.perf_counter()
            client.beta.sessions.events.send(
                session.id,
                events=[{"type": "user.message", "content": [{"type": "text", "text": label}]}],
            )
            for event in stream:
                now = time.perf_counter() - started
                if event.type == "event_delta":
                    seen.setdefault("delta", now)
                elif event.type.startswith("agent."):
                    seen.setdefault("first", now)
                elif event.type == "session.status_idle":
                    if event.stop_reason.type != "end_turn":
                        raise RuntimeError(f"{label} stopped with {event.stop_reason.type}")
                    seen["turn"] = now
                    break
        missing = {"first", "delta", "turn"} - seen.keys()
        if missing:
            raise RuntimeError(f"{label}: the stream ended without {sorted(missing)}")
        return seen
    finally:
        client.beta.sessions.delete(session.id)


def measure(stack: LocalStack, rounds: int, out: Any = sys.stdout) -> dict[str, float]:
    stack.apply(*manifests())
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key)
    samples: dict[str, list[dict[str, float]]] = {"warm": [], "cold": []}
    try:
        # One untimed session per mode: the harness pod, the proxy and the first cold start
        # are ready, and the Python each of them imports is in the page cache.
        wait_until(lambda: quiet(stack), timeout=300, what="the warm pool", interval=0.2)
        for mode in ("warm", "cold"):
            one_session(client, WARM if mode == "warm" else COLD, f"warmup-{mode}")
        for index in range(rounds):
            order = ("warm", "cold") if index % 2 == 0 else ("cold", "warm")
            for mode in order:
                wait_until(lambda: quiet(stack), timeout=120, what="a quiet stack", interval=0.1)
                seen = one_session(client, WARM if mode == "warm" else COLD, f"{mode}-{index}")
                samples[mode].append(seen)
                out.write(
                    f"{mode} {index}: first {seen['first'] * 1000:.1f} ms, delta "
                    f"{seen['delta'] * 1000:.1f} ms, turn {seen['turn'] * 1000:.0f} ms\n"
                )
                out.flush()
    finally:
        client.close()
    figures: dict[str, float] = {}
    for mode, runs in samples.items():
        for what, key in (("first", "e2e_ttft"), ("delta", "e2e_delta"), ("turn", "e2e_turn")):
            values = [run[what] * 1000 for run in runs]
            figures[f"{key}_{mode}_p50_ms"] = percentile(values, 50)
            figures[f"{key}_{mode}_p95_ms"] = percentile(values, 95)
    for what in ("ttft", "delta", "turn"):
        for q in ("p50", "p95"):
            figures[f"e2e_{what}_cold_to_warm_{q}"] = (
                figures[f"e2e_{what}_cold_{q}_ms"] / figures[f"e2e_{what}_warm_{q}_ms"]
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed sessions per mode")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the local pod runner needs root")
    # A bridge and addresses of its own, so `make demo` or tests/e2e may run alongside.
    with LocalStack(bridge="paddock-ettft", pod_cidr="10.247.0.0/16", script=script) as stack:
        try:
            figures = measure(stack, args.rounds)
        except BaseException:
            sys.stderr.write(stack.logs() + "\n")
            raise
    print(" ".join(f"{key}={value:.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
