"""Time to first token as a user sees it: the official SDK creates a session through the
gateway, opens the event stream with `event_deltas[]`, sends a `user.message`, and times
the first event of the model's reply (the first stored `agent.*` event) and the first
`event_delta` preview, from the moment it starts sending.

The whole stack runs as `make demo` runs it (`paddock.testing.stack.LocalStack`: real
apiserver, Redis, operator, gateway, harness and sandbox pods on the local pod runner, the
scripted model), or with `--node` as `make cluster` runs it: the one-node cluster
(`paddock.testing.node.LocalNode`: kubelet, containerd + runc, kube-proxy, kube-router) with
the Helm chart installed by `paddock.testing.cluster.install`, the scripted model deployed
in the cluster, and the gateway reached at its Service's ClusterIP. Both run the scripted
model's `e2e-ttft` script (`paddock.testing.fakemodel.e2e_ttft_script`).

Each round times one session on an Environment with a warm pool and one on an Environment
with `warmPool.size: 0` (a cold sandbox is started for it), in alternating order, each
after the previous session's pods are gone and the warm pool is full again, so both modes
see the same idle stack. The model's first reply is streamed text and a bash call, so the
turn (`turn_*`) also shows when the cold sandbox is paid for: at the tool call, not before
the first token. The baseline of the ratio is the warm mode.

Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic

from manifests import PADDOCK, warm_and_cold
from paddock.testing.controlplane import ControlPlane
from paddock.testing.fakemodel import SCRIPTS
from paddock.testing.ports import wait_until
from paddock.testing.stack import LocalStack
from stats import percentile

AGENT, WARM, COLD = "bench-e2e", "bench-warm", "bench-cold"
NAMESPACE = "default"
POOL = 2
SCRIPT = "e2e-ttft"
"""The scripted model's script (`paddock.testing.fakemodel.SCRIPTS`), on both targets."""


@dataclass
class Target:
    """Where the sessions run: the gateway the SDK talks to, the cluster's API (to wait for a
    quiet state) and what to print when a run fails."""

    mode: str
    control_plane: ControlPlane
    gateway_url: str
    api_key: str
    logs: Callable[[], str]


def manifests() -> list[dict[str, Any]]:
    return warm_and_cold(AGENT, WARM, COLD, POOL)


def quiet(target: Target) -> bool:
    """The warm pool is full and no sandbox is bound, starting or stopping: the state each
    timed session starts from."""
    environment = target.control_plane.read(PADDOCK, "Environment", NAMESPACE, WARM) or {}
    pool = (environment.get("status") or {}).get("warmPool") or {}
    sandboxes = [
        pod
        for pod in target.control_plane.read("v1", "Pod", NAMESPACE) or []
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


def measure(target: Target, rounds: int, out: Any = sys.stdout) -> dict[str, float]:
    target.control_plane.apply(*manifests(), namespace=NAMESPACE, manager="bench-e2e-ttft")
    client = anthropic.Anthropic(base_url=target.gateway_url, api_key=target.api_key)
    samples: dict[str, list[dict[str, float]]] = {"warm": [], "cold": []}
    try:
        # One untimed session per mode: the harness pod, the proxy and the first cold start
        # are ready, and the Python each of them imports is in the page cache.
        wait_until(lambda: quiet(target), timeout=300, what="the warm pool", interval=0.2)
        for mode in ("warm", "cold"):
            one_session(client, WARM if mode == "warm" else COLD, f"warmup-{mode}")
        for index in range(rounds):
            order = ("warm", "cold") if index % 2 == 0 else ("cold", "warm")
            for mode in order:
                wait_until(lambda: quiet(target), timeout=120, what="a quiet stack", interval=0.1)
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


@contextmanager
def local_stack() -> Iterator[Target]:
    # A bridge and addresses of its own, so `make demo` or tests/e2e may run alongside.
    with LocalStack(
        bridge="paddock-ettft", pod_cidr="10.247.0.0/16", script=SCRIPTS[SCRIPT]
    ) as stack:
        assert stack.control_plane is not None
        yield Target("local", stack.control_plane, stack.gateway_url, stack.api_key, stack.logs)


@contextmanager
def node() -> Iterator[Target]:
    """The chart on the one-node cluster, as `make cluster` installs it (run it under
    `flock /tmp/paddock-node.lock`: one node on the machine at a time)."""
    from paddock.testing.cluster import install, uninstall
    from paddock.testing.node import LocalNode, container_support

    reason = container_support()
    if reason:
        sys.exit(f"cannot run containers here: {reason}")
    started = time.monotonic()
    with LocalNode() as local_node:
        assert local_node.control_plane is not None
        installation = install(local_node, fakemodel_script=SCRIPT)
        sys.stderr.write(
            f"node and chart ready in {time.monotonic() - started:.0f} s "
            f"(node {local_node.timings}, chart {installation.timings})\n"
        )
        try:
            yield Target(
                "node",
                local_node.control_plane,
                installation.gateway_url,
                installation.gateway_key,
                lambda: installation.diagnose(NAMESPACE),
            )
        finally:
            uninstall(installation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed sessions per mode")
    parser.add_argument(
        "--node", action="store_true", help="on the one-node cluster with the Helm chart"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the local pod runner and the node need root")
    with node() if args.node else local_stack() as target:
        try:
            figures = measure(target, args.rounds)
        except BaseException:
            sys.stderr.write(target.logs() + "\n")
            raise
    print(f"mode={target.mode} " + " ".join(f"{key}={value:.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
