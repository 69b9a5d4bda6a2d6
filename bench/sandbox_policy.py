"""Claim -> first connection, with the per-Agent sandbox policy and with the previous one, on the
one-node cluster (paddock.testing.node: kube-router enforcing NetworkPolicy).

Current: the Environment's policy lets nothing in; the claim labels the pod with its Agent, and
the Agent's `<agent>-sandbox-access` policy admits that Agent's harness pods, once kube-router
has programmed the label change. Previous (the policy as it was): every harness pod of the
namespace was admitted to every sandbox, warm or not, so the first connection never waited.

Each round: a sandbox pod rendered by the operator (busybox sleeping in place of the image),
the real sandbox server (`python -m paddock.sandbox`) run inside the pod's network namespace,
and a prober inside the network namespace of a pod labelled as the Agent's harness. The prober
first sees the warm pod's state (refused for current, open for previous), then the bench claims
the pod with the operator's patch (`paddock.operator.sandboxes.claim_patch`) and the prober,
at once, both connects in a tight loop (every 2 ms: when the policy admits it) and calls the
shipping `SandboxClient.bind` (with its retries: when a worker's bind succeeds). Times are from
the claim patch being sent, on CLOCK_MONOTONIC (the bench and the probers share it).

    sudo flock /tmp/paddock-node.lock env PYTHONPATH=operator .venv/bin/python bench/sandbox_policy.py

Ends with one line of key=value figures (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from paddock.models import Agent, Environment
from paddock.operator import labels as L
from paddock.operator import render
from paddock.operator.sandboxes import claim_patch
from paddock.testing.controlplane import REPO_ROOT
from paddock.testing.node import LocalNode, container_support
from paddock.testing.ociimage import BUSYBOX_IMAGE

NAMESPACE = "bench-sandbox-policy"
SETTINGS = render.RenderSettings()

PROBER = r"""
import asyncio, json, sys, time
from paddock.sandbox import SandboxClient

url, token, host, mode = sys.argv[1:5]

async def connects(timeout):
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, 8080), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True

async def main():
    # Made before the claim: making one builds an SSL context, tens of ms of blocked loop.
    client = SandboxClient(url, token)
    # The warm pod's state, once it holds for five attempts in a row.
    seen = []
    while len(seen) < 5 or len(set(seen[-5:])) != 1:
        seen.append(await connects(0.2))
        await asyncio.sleep(0.05)
    print("warm", "open" if seen[-1] else "refused", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def first_connect():
        while not await connects(0.05):
            await asyncio.sleep(0.002)
        return time.monotonic()

    async def bind():
        await client.bind("sesn_bench", "http://10.0.0.1:3128", "pdk1.bench")
        return time.monotonic()

    done = await (first_connect() if mode == "connect" else bind())
    await client.aclose()
    print(json.dumps({"done": done}), flush=True)

asyncio.run(main())
"""


def _resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
        "spec": spec,
    }


def _agent(name: str) -> Agent:
    credentials = {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}}
    spec = {"model": "claude-sonnet-4-6", "credentials": credentials}
    return Agent.model_validate(_resource("Agent", name, spec))


def _previous_sandbox_policy(environment: Environment) -> dict[str, Any]:
    """The Environment's sandbox policy before per-Agent policies: every harness pod in."""
    harness = [{"podSelector": {"matchLabels": {L.COMPONENT: "harness"}}}]
    dns = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "previous-sandboxes", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": render.sandbox_labels(environment)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": harness, "ports": [{"protocol": "TCP", "port": 8080}]}],
            "egress": [
                {"to": harness, "ports": [{"protocol": "TCP", "port": 3128}]},
                {"ports": dns},
            ],
        },
    }


def _previous_harness_policy(agent: Agent) -> dict[str, Any]:
    """The harness policy before: calls to every sandbox of the namespace."""
    policy = render.harness_network_policy(agent, SETTINGS)
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            if "podSelector" in peer:
                peer["podSelector"] = {"matchLabels": {L.COMPONENT: "sandbox"}}
    policy["metadata"].pop("ownerReferences")
    return policy


def _unowned(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"].pop("ownerReferences", None)
    return manifest


def _get(node: LocalNode, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = node.kubectl_json("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    return pod


def _wait(what: str, probe: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (httpx.HTTPError, RuntimeError):
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise TimeoutError(what)


def _task_pid(node: LocalNode, pod: dict[str, Any]) -> int:
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    listing = subprocess.run(
        ["ctr", "--address", str(node.socket), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container:
            return int(fields[1])
    raise RuntimeError(f"no task for {pod['metadata']['name']}")


def _running(node: LocalNode, name: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        pod = _get(node, name)
        statuses = pod.get("status", {}).get("containerStatuses", [])
        started = statuses and "running" in statuses[0].get("state", {})
        return pod if started and pod["status"].get("podIP") else None

    found: dict[str, Any] = _wait(f"pod {name} running", running)
    return found


def _sleeper(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    spec["terminationGracePeriodSeconds"] = 0
    (container,) = spec["containers"]
    container.pop("readinessProbe", None)
    container.update(
        image=BUSYBOX_IMAGE,
        imagePullPolicy="Never",
        command=["sleep", "100000"],
        resources={"requests": {"cpu": "5m", "memory": "8Mi"}},
    )
    return pod


def _harness(node: LocalNode, agent: Agent) -> int:
    name = f"harness-{render.name_of(agent)}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {**L.MANAGED_BY, **render.harness_labels(agent)},
        },
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "harness"}]},
    }
    node.apply(_sleeper(pod))
    return _task_pid(node, _running(node, name))


def _round(
    node: LocalNode, environment: Environment, agent: str, harness_pid: int, index: int, mode: str
) -> dict[str, float]:
    """One claim; ``mode``: `connect` (a tight loop of connects) or `bind` (the shipping
    client's bind). Not both at once: the loop's refused SYNs use up the kernel's ICMP rate
    limit, after which the REJECT drops silently and the bind's attempts time out instead."""
    name = f"sandbox-{agent}-{mode}-{index}"
    token = f"token-{index}-{os.urandom(8).hex()}"
    node.apply(_sleeper(_unowned(render.sandbox_pod(environment, name, token))))
    pod = _running(node, name)
    ip = pod["status"]["podIP"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator")}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as scratch:
        (Path(scratch) / "token").write_text(token)
        (Path(scratch) / "workspace").mkdir()
        server = subprocess.Popen(
            [
                *("nsenter", "-t", str(_task_pid(node, pod)), "-n", sys.executable, "-m"),
                *("paddock.sandbox", "--host", "0.0.0.0", "--port", "8080"),
                *("--workdir", f"{scratch}/workspace", "--token-file", f"{scratch}/token"),
            ],
            env={**env, "HOME": scratch},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        prober: subprocess.Popen[str] | None = None
        try:
            # The node reaches every pod (NetworkPolicy leaves node traffic alone).
            _wait("sandbox server", lambda: httpx.get(f"http://{ip}:8080/healthz").is_success)
            prober = subprocess.Popen(
                [
                    *("nsenter", "-t", str(harness_pid), "-n", sys.executable, "-c", PROBER),
                    *(f"http://{ip}:8080", token, ip, mode),
                ],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert prober.stdin is not None
            assert prober.stdout is not None
            warm = prober.stdout.readline().split()[-1]
            patch = json.dumps(claim_patch(_get(node, name), f"sesn_{index}", agent, []))
            with node.client() as client:
                sent = time.monotonic()
                client.patch(
                    f"/api/v1/namespaces/{NAMESPACE}/pods/{name}",
                    content=patch,
                    headers={"Content-Type": "application/json-patch+json"},
                ).raise_for_status()
                patched = time.monotonic()
            prober.stdin.write("go\n")
            prober.stdin.flush()
            result = json.loads(prober.stdout.readline())
        finally:
            for process in (prober, server):
                if process is not None:
                    process.kill()
                    process.wait()
    node.kubectl_json("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    return {
        "warm_open": float(warm == "open"),
        "patch": patched - sent,
        mode: result["done"] - sent,
    }


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="claims measured per variant")
    args = parser.parse_args()
    reason = container_support()
    if reason is not None:
        raise SystemExit(f"this kernel refuses containers: {reason}")
    with LocalNode() as node:
        node.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        _wait(
            "default ServiceAccount",
            lambda: node.kubectl_json(
                "GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"
            ),
        )
        current_env = Environment.model_validate(
            _resource("Environment", "current", {"networking": {"mode": "none"}})
        )
        previous_env = Environment.model_validate(
            _resource("Environment", "previous", {"networking": {"mode": "none"}})
        )
        alpha, legacy = _agent("alpha"), _agent("legacy")
        for manifest in (
            render.sandbox_network_policy(current_env),
            render.harness_network_policy(alpha, SETTINGS),
            render.sandbox_access_policy(alpha),
            _previous_sandbox_policy(previous_env),
            _previous_harness_policy(legacy),
        ):
            node.apply(_unowned(manifest))
        pids = {"alpha": _harness(node, alpha), "legacy": _harness(node, legacy)}
        samples: dict[str, list[dict[str, float]]] = {"current": [], "previous": []}
        for index in range(args.rounds):
            for mode in ("connect", "bind"):
                samples["current"].append(
                    _round(node, current_env, "alpha", pids["alpha"], index, mode)
                )
                samples["previous"].append(
                    _round(node, previous_env, "legacy", pids["legacy"], index, mode)
                )
    figures: dict[str, float] = {}
    for variant, rounds in samples.items():
        figures[f"{variant}_warm_open"] = sum(r["warm_open"] for r in rounds) / len(rounds)
        for key in ("patch", "connect", "bind"):
            values = [r[key] for r in rounds if key in r]
            figures[f"{variant}_{key}_p50_ms"] = _ms(values, 0.5)
            figures[f"{variant}_{key}_max_ms"] = _ms(values, 1.0)
    previous_bind = statistics.median(r["bind"] for r in samples["previous"] if "bind" in r)
    current_bind = statistics.median(r["bind"] for r in samples["current"] if "bind" in r)
    figures["bind_ratio_current_to_previous"] = round(current_bind / previous_bind, 2)
    figures["rounds"] = args.rounds
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
