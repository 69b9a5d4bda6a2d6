"""Start-up figures of the one-node cluster (paddock.testing.node).

- cold start: the node's and the control plane's binaries dropped from the page cache first
  (posix_fadvise DONTNEED on those files only), then `LocalNode` from nothing to node Ready
  and to CoreDNS Ready (a new containerd root each time, images imported each time);
- warm start: the same again right after, binaries in the page cache;
- pod start: a busybox pod created -> Ready (readiness probe on its port), p50/p95 over
  ``--pods`` pods, one after another;
- stop: `LocalNode.close()` with its pods, until every change to the host is undone;
- with Paddock (unless ``--no-paddock``), on the warm node: the image build (hack/build-images.sh
  timed, a cache hit unless a source changed; and the slowest build whose build.json is still
  in the image cache: a cold build only while its entry is kept), the chart installed
  (paddock.testing.cluster.install) until its rollouts finish; a cold sandbox start (a pod
  the operator's own renderer makes from examples/'s Environment, real sandbox image,
  created -> Ready) p50/p95; the warm claim (a Session created -> its sandbox bound from the
  warm pool) p50/p95; the time from a Session's creation to its first model request
  (`span.model_request_start` in its log) with a warm pool and with an empty pool.

Binaries are built first if needed (not timed). Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from paddock.models import Environment
from paddock.operator.render import sandbox_pod
from paddock.testing.cluster import Installation, install
from paddock.testing.controlplane import REPO_ROOT, control_plane_binaries
from paddock.testing.node import LocalNode, node_binaries
from paddock.testing.ociimage import BUSYBOX_IMAGE


def _drop_page_cache(*directories: Path) -> None:
    for directory in directories:
        for path in directory.rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def _pod_ready_seconds(node: LocalNode, index: int) -> float:
    name = f"bench-{index}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "exec httpd -f -p 8080 -h /tmp"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    started = time.monotonic()
    node.apply(pod)
    with node.client() as client:
        while True:
            status = client.get(f"/api/v1/namespaces/default/pods/{name}").json()["status"]
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            ):
                return time.monotonic() - started
            if time.monotonic() - started > 120:
                raise TimeoutError(f"pod {name} not Ready after 120s")
            time.sleep(0.05)


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _wait(what: str, probe: Any, timeout: float = 180, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(what)


def _examples() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    documents = list(yaml.safe_load_all((REPO_ROOT / "examples/hello-agent.yaml").read_text()))
    environment = next(d for d in documents if d["kind"] == "Environment")
    return environment, documents


def _cold_sandboxes(inst: Installation, namespace: str, count: int) -> list[float]:
    environment, _ = _examples()
    environment = {**environment, "metadata": {**environment["metadata"], "namespace": namespace}}
    environment["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
    samples = []
    for index in range(count):
        pod = sandbox_pod(
            Environment.model_validate(environment), f"bench-sandbox-{index}", f"token-{index}"
        )
        pod["metadata"].pop("ownerReferences", None)
        # Not one of the operator's: its pool must neither count nor reap it.
        pod["metadata"]["labels"] = {"app": "bench-sandbox"}
        pod["metadata"]["namespace"] = namespace
        started = time.monotonic()
        inst.node.apply(pod)
        path = f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}"
        with inst.node.client() as client:
            _wait(f"sandbox {index} Ready", lambda c=client, p=path: _ready(c.get(p).json()))
        samples.append(time.monotonic() - started)
        inst.kubectl("-n", namespace, "delete", "pod", pod["metadata"]["name"], "--wait=false")
    return samples


def _warm_pods(inst: Installation, namespace: str) -> int:
    pods = inst.json(
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        "paddock.dev/component=sandbox,paddock.dev/sandbox-state=warm",
    )["items"]
    return sum(1 for p in pods if _ready(p))


def _session(inst: Installation, namespace: str, name: str) -> tuple[float, float, str]:
    """A Session created from examples/hello-session.yaml: (seconds to its sandbox bound,
    seconds to its first model request, the claim)."""
    session = yaml.safe_load((REPO_ROOT / "examples/hello-session.yaml").read_text())
    session = copy.deepcopy(session)
    session["metadata"] = {"name": name, "namespace": namespace}
    wall, started = time.time(), time.monotonic()
    inst.kubectl("apply", "-f", "-", input=json.dumps(session))
    path = f"/apis/paddock.dev/v1alpha1/namespaces/{namespace}/sessions/{name}"

    def bound() -> dict[str, Any] | None:
        with inst.node.client() as client:
            status = client.get(path).json().get("status") or {}
        sandbox = status.get("sandbox") or {}
        return status if sandbox.get("claim") else None

    status = _wait(f"session {name} bound", bound, timeout=300)
    bound_s = time.monotonic() - started
    headers = {"x-api-key": inst.gateway_key}
    url = f"{inst.gateway_url}/v1/sessions/{status['sessionId']}/events"

    def model_requests() -> list[dict[str, Any]]:
        response = httpx.get(url, headers=headers, params={"limit": "1000"})
        response.raise_for_status()
        events = response.json()["data"]
        # Its span when the log has spans, else the first event of the model's reply.
        return [e for e in events if e["type"] == "span.model_request_start"] or [
            e for e in events if e["type"].startswith("agent.")
        ]

    # The operator binds the sandbox when the Session is created, before the first request.
    starts = _wait(f"session {name}'s first model request", model_requests, 120, 0.2)
    first = datetime.fromisoformat(starts[0]["processed_at"].replace("Z", "+00:00"))
    # Its sandbox goes with it: two cores hold few 250m sandboxes.
    inst.kubectl("-n", namespace, "delete", "session", name, "--wait=false")
    return bound_s, first.timestamp() - wall, status["sandbox"]["claim"]


def _paddock_figures(inst: Installation, count: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    namespace = "bench-paddock"
    inst.kubectl("create", "namespace", namespace)
    cold = _cold_sandboxes(inst, namespace, count)
    figures["sandbox_cold_ready_p50_s"] = _p(cold, 0.5)
    figures["sandbox_cold_ready_p95_s"] = _p(cold, 0.95)
    # The examples in the user namespace the installer prepared (Secret, egress to the model).
    user = inst.user_namespace
    inst.kubectl("-n", user, "apply", "-f", str(REPO_ROOT / "examples/hello-agent.yaml"))
    claims, first_warm = [], []
    for index in range(count):
        _wait("a warm pool of 2", lambda: _warm_pods(inst, user) >= 2, timeout=300, interval=0.5)
        bound_s, first_s, claim = _session(inst, user, f"bench-warm-{index}")
        if claim == "warm":
            claims.append(bound_s)
        first_warm.append(first_s)
    figures["warm_claims"] = len(claims)
    if claims:
        figures["warm_claim_p50_s"] = _p(claims, 0.5)
        figures["warm_claim_p95_s"] = _p(claims, 0.95)
    figures["first_model_request_warm_p50_s"] = _p(first_warm, 0.5)
    patch = json.dumps({"spec": {"warmPool": {"size": 0}}})
    inst.kubectl("-n", user, "patch", "environment", "python", "--type=merge", "-p", patch)
    _wait("an empty pool", lambda: _warm_pods(inst, user) == 0, timeout=120, interval=0.5)
    first_empty, cold_claims = [], []
    for index in range(count):
        bound_s, first_s, _claim = _session(inst, user, f"bench-empty-{index}")
        first_empty.append(first_s)
        cold_claims.append(bound_s)
    figures["first_model_request_empty_p50_s"] = _p(first_empty, 0.5)
    figures["cold_claim_p50_s"] = _p(cold_claims, 0.5)
    return figures


def _slowest_recorded_build() -> float | None:
    cache = Path(os.environ.get("PADDOCK_CACHE", Path.home() / ".cache/paddock")) / "images"
    totals = []
    for build in cache.glob("*/build.json"):
        try:
            totals.append(float(json.loads(build.read_text())["seconds"]["total"]))
        except (ValueError, KeyError, TypeError):
            continue
    return max(totals) if totals else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5, help="pods started for pod_ready_*")
    parser.add_argument("--sessions", type=int, default=3, help="samples of each Paddock figure")
    parser.add_argument("--no-paddock", action="store_true", help="the node's figures only")
    args = parser.parse_args()
    binaries, plane = node_binaries(), control_plane_binaries()
    figures: dict[str, float] = {}
    for kind in ("cold", "warm"):
        if kind == "cold":
            _drop_page_cache(binaries, plane)
        started = time.monotonic()
        node = LocalNode(binaries=binaries).start()
        figures[f"node_{kind}_ready_s"] = node.timings["node_ready"]
        figures[f"node_{kind}_dns_ready_s"] = round(time.monotonic() - started, 2)
        if kind == "warm":
            samples = sorted(_pod_ready_seconds(node, i) for i in range(args.pods))
            figures["pod_ready_p50_s"] = round(statistics.median(samples), 2)
            figures["pod_ready_p95_s"] = round(
                samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2
            )
            if not args.no_paddock:
                try:
                    inst = install(node)
                    figures["image_build_cached_s"] = inst.timings["image_build_s"]
                    slowest = _slowest_recorded_build()
                    if slowest is not None:
                        figures["image_build_recorded_max_s"] = slowest
                    figures["chart_ready_s"] = inst.timings["chart_ready_s"]
                    figures.update(_paddock_figures(inst, args.sessions))
                except BaseException:
                    node.close()
                    raise
        stopping = time.monotonic()
        node.close()
        figures[f"node_{kind}_stop_s"] = round(time.monotonic() - stopping, 2)
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
