"""The operator at scale, against a real kube-apiserver and Redis on this machine.

- `sessions_1k_s`: 1,000 Sessions created at once; seconds until every one has a status
  from the log sync (`status.phase`).
- `claim_p50_ms`, `claim_p95_ms`: warm claims, one session at a time with a filled pool:
  from the Session's creation to its sandbox binding being readable in Redis (what a
  harness worker waits on).
- `rss_1k_mb`, `rss_10k_mb`: the operator process's resident memory with 1,000 and then
  10,000 Sessions (the extra ones, created 1,000 at a time, name an Agent without an
  Environment, so no pods are made for them).
- `writes_per_session`: the apiserver's writes (create, update, patch, apply, delete; by its
  own `apiserver_request_total`) during the 1,000-Session burst, less the bench's own (the
  Session creations and the kubelet's pod status patches), per Session. A breakdown by verb
  and resource is printed.
- `raw_1k_s`, `sessions_1k_ratio`: the baseline, measured in the same run against the same
  apiserver: 1,000 ConfigMaps created the same way (the floor any controller of 1,000 new
  objects stands on), and sessions_1k_s over it.

The operator runs as its own process (`python -m paddock.operator`); a thread plays
kubelet: it watches sandbox pods and marks each new one running and ready. Ends with one
line of key=value figures.
Targets: claim p50 <= 50 ms, p95 <= 100 ms; writes_per_session <= 4, sessions_1k_s < 10,
rss_10k_mb < 250.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from paddock.eventlog import SessionState
from paddock.testing.controlplane import ControlPlane
from paddock.testing.redis import RedisServer

NAMESPACE = "bench"
API = f"/apis/paddock.dev/v1alpha1/namespaces/{NAMESPACE}"


def play_kubelet(plane: ControlPlane, stop: threading.Event) -> None:
    """Mark every sandbox pod running and ready, as kubelets would once they started it:
    watch the pods (as a kubelet does) and patch each new one's status, 4 at a time."""
    url = f"/api/v1/namespaces/{NAMESPACE}/pods"
    selector = "paddock.dev/component=sandbox"
    numbers = itertools.count(1)
    started: set[str] = set()

    def start(http: httpx.Client, name: str) -> None:
        number = next(numbers)
        http.patch(
            f"{url}/{name}/status",
            json={
                "status": {
                    "phase": "Running",
                    "podIP": f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )

    def seen(pod: dict[str, Any]) -> bool:
        """Whether the pod needs starting (once)."""
        meta = pod["metadata"]
        if pod.get("status", {}).get("podIP") or meta.get("deletionTimestamp"):
            return False
        if meta["name"] in started:
            return False
        started.add(meta["name"])
        return True

    with plane.client() as http, ThreadPoolExecutor(4) as kubelets:
        version = None
        while not stop.is_set():
            if version is None:  # at first, and when the watch's history expired
                listed = http.get(url, params={"labelSelector": selector}).json()
                for pod in listed["items"]:
                    if seen(pod):
                        kubelets.submit(start, http, pod["metadata"]["name"])
                version = listed["metadata"]["resourceVersion"]
            params = {
                "labelSelector": selector,
                "watch": "1",
                "resourceVersion": version,
                "timeoutSeconds": "2",
            }
            with http.stream("GET", url, params=params, timeout=None) as reply:
                for line in reply.iter_lines():
                    event = json.loads(line) if line else {}
                    if event.get("type") == "ERROR":
                        version = None
                        break
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        pod = event["object"]
                        version = pod["metadata"]["resourceVersion"]
                        if seen(pod):
                            kubelets.submit(start, http, pod["metadata"]["name"])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not ended soon: a bench must never hang on exit."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})


def write_counts(http: httpx.Client) -> dict[tuple[str, str, str], float]:
    """The apiserver's writes so far, by (verb, resource[/subresource], code)."""
    counts: dict[tuple[str, str, str], float] = {}
    for line in http.get("/metrics").text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
        labels = dict(
            part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part
        )
        if labels.get("verb") not in WRITE_VERBS:
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = (labels["verb"], resource, labels.get("code", ""))
        counts[key] = counts.get(key, 0) + float(value)
    return counts


def operator_writes(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[tuple[str, str, str], float]:
    """The writes between two counts that the bench did not make itself."""
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    # The bench's own (creating the Sessions, playing kubelet) and the apiserver's own
    # bookkeeping (its identity lease, the `kubernetes` Service's endpoints).
    theirs = {
        ("POST", "sessions"),
        ("PATCH", "pods/status"),
        ("PUT", "leases"),
        ("POST", "endpoints"),
    }
    for key in list(diff):
        if key[:2] in theirs:
            del diff[key]
    return diff


async def create_objects(
    plane: ControlPlane, names: list[str], body: Any, path: str, concurrency: int = 32
) -> None:
    """Create an object per name (``body(name)``) at ``path``, ``concurrency`` at once."""
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=plane.url, verify=plane.ssl_context(), limits=limits, timeout=60
    ) as http:
        slots = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with slots:
                response = await http.post(path, json=body(name))
                response.raise_for_status()

        await asyncio.gather(*(one(name) for name in names))


async def create_sessions(plane: ControlPlane, names: list[str], spec: dict[str, Any]) -> None:
    await create_objects(
        plane,
        names,
        lambda name: {
            "apiVersion": "paddock.dev/v1alpha1",
            "kind": "Session",
            "metadata": {"name": name},
            "spec": spec,
        },
        f"{API}/sessions",
    )


def raw_creates(plane: ControlPlane, count: int) -> float:
    """Seconds to create ``count`` ConfigMaps as the Sessions are created: the baseline."""
    started = time.monotonic()
    asyncio.run(
        create_objects(
            plane,
            [f"raw-{n}" for n in range(count)],
            lambda name: {"metadata": {"name": name}, "data": {"k": "v"}},
            f"/api/v1/namespaces/{NAMESPACE}/configmaps",
        )
    )
    return time.monotonic() - started


def count_with_phase(http: httpx.Client) -> int:
    """Sessions with a phase, from the table `kubectl get` shows (not the whole objects)."""
    table = http.get(
        f"{API}/sessions",
        params={"includeObject": "None"},
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    ).json()
    column = [c["name"] for c in table["columnDefinitions"]].index("Phase")
    return sum(1 for row in table["rows"] if row["cells"][column])


async def claim_latencies(plane: ControlPlane, redis_url: str, count: int) -> list[float]:
    redis = Redis.from_url(redis_url)
    state = SessionState(redis, NAMESPACE)
    latencies = []
    async with httpx.AsyncClient(
        base_url=plane.url, verify=plane.ssl_context(), timeout=30
    ) as http:
        for n in range(count):
            # One at a time, paced: this measures a claim, not a queue (that is sessions_1k_s).
            await asyncio.sleep(0.2)
            await wait_for_pool(http, 5)
            name = f"claim-{n}"
            body = {
                "apiVersion": "paddock.dev/v1alpha1",
                "kind": "Session",
                "metadata": {"name": name},
                "spec": {"agentRef": {"name": "bench"}, "environmentRef": {"name": "pool"}},
            }
            started = time.monotonic()
            await http.post(f"{API}/sessions", json=body)
            session_id = None
            while True:
                if session_id is None:
                    labels = (
                        (await http.get(f"{API}/sessions/{name}"))
                        .json()["metadata"]
                        .get("labels", {})
                    )
                    session_id = labels.get("paddock.dev/session-id")
                if session_id and await state.sandbox(session_id) is not None:
                    break
                await asyncio.sleep(0.001)
            latencies.append((time.monotonic() - started) * 1000)
    await redis.aclose()
    return latencies


async def wait_for_pool(http: httpx.AsyncClient, ready: int) -> None:
    while True:
        pods = (
            await http.get(
                f"/api/v1/namespaces/{NAMESPACE}/pods",
                params={
                    "labelSelector": "paddock.dev/component=sandbox,paddock.dev/sandbox-state=warm"
                },
            )
        ).json()["items"]
        if sum(1 for p in pods if p.get("status", {}).get("podIP")) >= ready:
            return
        await asyncio.sleep(0.01)


def wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(1)  # a list of all sessions is not cheap: do not hammer the apiserver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000, help="sessions created at once")
    parser.add_argument(
        "--memory-sessions", type=int, default=10_000, help="sessions for the second RSS figure"
    )
    parser.add_argument(
        "--claims", type=int, default=100, help="warm claims measured one at a time"
    )
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="paddock-operator-bench-") as tmp:
        tmp = os.environ.get("PADDOCK_BENCH_LOGS", tmp)
        plane = stack.enter_context(ControlPlane())
        plane.apply_crds()
        redis = stack.enter_context(RedisServer(appendfsync="everysec"))
        http = stack.enter_context(plane.client())
        http.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}).raise_for_status()
        http.post(
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            json={"metadata": {"name": "anthropic"}, "stringData": {"api-key": "unused"}},
        ).raise_for_status()
        for kind, name, spec in [
            ("environments", "pool", {"warmPool": {"size": 20}}),
            (
                "agents",
                "bench",
                {
                    "model": "claude-sonnet-4-6",
                    "environmentRef": {"name": "pool"},
                    "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
                },
            ),
            (
                "agents",
                "talk",  # no Environment: its sessions get no sandbox
                {
                    "model": "claude-sonnet-4-6",
                    "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
                },
            ),
        ]:
            http.post(
                f"{API}/{kind}",
                json={
                    "apiVersion": "paddock.dev/v1alpha1",
                    "metadata": {"name": name},
                    "kind": kind[:-1].capitalize(),
                    "spec": spec,
                },
            ).raise_for_status()
        log_file = stack.enter_context(open(Path(tmp) / "operator.log", "wb"))
        operator = subprocess.Popen(
            [sys.executable, "-m", "paddock.operator"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "KUBECONFIG": str(plane.kubeconfig),
                "PADDOCK_REDIS_URL": redis.url,
                "PADDOCK_METRICS_PORT": "0",
            },
        )
        stack.callback(stop_process, operator)
        stop = threading.Event()
        kubelet = threading.Thread(target=play_kubelet, args=(plane, stop), daemon=True)
        kubelet.start()
        stack.callback(stop.set)

        claims = asyncio.run(claim_latencies(plane, redis.url, args.claims))
        raw_s = raw_creates(plane, args.sessions)

        names = [f"s-{n}" for n in range(args.sessions)]
        before = write_counts(http)
        started = time.monotonic()
        asyncio.run(create_sessions(plane, names, {"agentRef": {"name": "bench"}}))
        wait(
            "1k statuses",
            lambda: count_with_phase(http) >= args.sessions + args.claims,
            timeout=600,
        )
        sessions_s = time.monotonic() - started
        # What the burst's Sessions still write once they have a status (a sandbox bound
        # late, the pool refilled) counts too: until the writes stop for 2 s.
        after = write_counts(http)
        while True:
            time.sleep(2)
            latest = write_counts(http)
            if latest == after:
                break
            after = latest
        writes = operator_writes(before, after)
        rss_1k = rss_mb(operator.pid)

        # In batches: this measures the memory that holding 10,000 sessions takes, not that
        # of 9,000 creations in flight at once (sessions_1k_s is the burst).
        more = [f"m-{n}" for n in range(args.memory_sessions - args.sessions - args.claims)]
        started_more = time.monotonic()
        for start in range(0, len(more), 1000):
            batch = more[start : start + 1000]
            asyncio.run(create_sessions(plane, batch, {"agentRef": {"name": "talk"}}))
            total = args.sessions + args.claims + start + len(batch)
            wait(f"{total} statuses", lambda total=total: count_with_phase(http) >= total, 600)
        more_s = time.monotonic() - started_more
        rss_10k = rss_mb(operator.pid)

    figures = {
        "writes_per_session": sum(writes.values()) / args.sessions,
        "sessions_1k_s": sessions_s,
        "raw_1k_s": raw_s,
        "sessions_1k_ratio": sessions_s / raw_s,
        "claim_p50_ms": statistics.median(claims),
        "claim_p95_ms": statistics.quantiles(claims, n=100)[94],
        "rss_1k_mb": rss_1k,
        "rss_10k_mb": rss_10k,
    }
    print(f"apiserver writes during the burst of {args.sessions} Sessions (less the bench's):")
    for (verb, resource, code), count in sorted(writes.items(), key=lambda kv: -kv[1]):
        print(f"  {verb:7} {resource:28} {code}  {count:6.0f}  {count / args.sessions:.2f}")
    print(
        f"{args.sessions} sessions: all with status after {sessions_s:.1f} s "
        f"({args.sessions} ConfigMaps created in {raw_s:.1f} s)"
    )
    print(
        f"warm claims ({args.claims}): p50 {figures['claim_p50_ms']:.1f} ms, p95 {figures['claim_p95_ms']:.1f} ms"
    )
    print(
        f"operator RSS: {rss_1k:.0f} MB at {args.sessions + args.claims} sessions, "
        f"{rss_10k:.0f} MB at {args.memory_sessions} "
        f"(the {len(more)} more, in batches of 1,000, took {more_s:.0f} s)"
    )
    print(" ".join(f"{k}={v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
