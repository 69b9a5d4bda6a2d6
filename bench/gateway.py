"""SSE fan-out of the gateway: many subscribers on one session's event stream.

Starts Redis, a control plane (etcd + kube-apiserver) and `python -m paddock.gateway` in
its own process, unless given their addresses. Creates a session through the API, opens
`--subscribers` event streams on it, then plays the harness: appends events to the log
under the session's lease and times their arrival at every subscriber.

- latency: `--paced` events, one append each, at `--rate` per second; per event and
  subscriber, from the start of the append call to the arrival of the frame;
- throughput: `--burst` events appended as fast as possible in batches of 100; frames
  delivered (summed over subscribers) per second, until every subscriber has every event.

Ends with one line of key=value figures. No assertions: figures are compared over time.

    .venv/bin/python bench/gateway.py [--subscribers 100] [--paced 200] [--burst 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import httpx
from redis.asyncio import Redis

from paddock.eventlog import AgentMessageEvent, EventLog, TextBlock
from paddock.gateway.auth import API_KEY_LABEL
from paddock.kube import KubeClient
from paddock.testing.controlplane import ControlPlane
from paddock.testing.ports import free_port, wait_until
from paddock.testing.redis import RedisServer

BATCH = 100
TEXT = "The quick brown fox jumps over the lazy dog. " * 4  # ~180 bytes, a short message


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def make_tenant(kubeconfig: str) -> tuple[str, str, str]:
    """Namespaces for the gateway and a tenant, and an API key; (system, tenant, key)."""
    suffix = secrets.token_hex(3)
    system, tenant, key = f"bench-system-{suffix}", f"bench-{suffix}", secrets.token_urlsafe(16)
    kube = KubeClient.from_environment(kubeconfig)
    try:
        for namespace in (system, tenant):
            await kube.request("POST", "/api/v1/namespaces", json={"metadata": {"name": namespace}})
        secret = {
            "metadata": {"name": "bench-key", "labels": {API_KEY_LABEL: "true"}},
            "data": {"api-key": b64(key), "namespace": b64(tenant)},
        }
        await kube.request("POST", f"/api/v1/namespaces/{system}/secrets", json=secret)
    finally:
        await kube.aclose()
    return system, tenant, key


def start_gateway(
    stack: ExitStack, redis_url: str, kubeconfig: str, system: str
) -> tuple[str, int]:
    """`python -m paddock.gateway` on a free port; its URL and pid."""
    port = free_port()
    env = {
        **os.environ,
        "PADDOCK_REDIS_URL": redis_url,
        "PADDOCK_GATEWAY_NAMESPACE": system,
        "PADDOCK_GATEWAY_HOST": "127.0.0.1",
        "PADDOCK_GATEWAY_PORT": str(port),
        "PADDOCK_METRICS_PORT": "0",
        "KUBECONFIG": kubeconfig,
    }
    log = Path(tempfile.mkdtemp(prefix="paddock-bench-")) / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paddock.gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )

    def stop() -> None:
        process.terminate()
        process.wait(timeout=15)

    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
        timeout=30,
        what=f"gateway (log: {log})",
    )
    return url, process.pid


async def create_session(url: str, key: str) -> str:
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=30) as http:
        environment = (await http.post("/v1/environments", json={"name": "bench"})).json()
        agent = (await http.post("/v1/agents", json={"name": "bench", "model": "m"})).json()
        session = await http.post(
            "/v1/sessions", json={"agent": agent["id"], "environment_id": environment["id"]}
        )
        session.raise_for_status()
        return str(session.json()["id"])


async def subscribe(
    http: aiohttp.ClientSession,
    url: str,
    arrivals: dict[str, float],
    opened: asyncio.Event,
    progress: asyncio.Event,
) -> None:
    """Record when each event's frame arrives (frames are split on blank lines)."""
    async with http.get(url) as response:
        response.raise_for_status()
        opened.set()
        pending = b""
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            frames = (pending + chunk).split(b"\n\n")
            pending = frames.pop()
            for frame in frames:
                start = frame.find(b"id: ")
                if start >= 0:
                    end = frame.find(b"\n", start)
                    arrivals[frame[start + 4 : end].decode()] = now
            progress.set()


async def wait_delivered(
    arrivals: list[dict[str, float]], last: str, progress: asyncio.Event
) -> None:
    """Until every subscriber has the event ``last`` (and so every one before it)."""
    while True:
        progress.clear()  # before the check: a frame arriving after it sets it again
        if all(last in seen for seen in arrivals):
            return
        await progress.wait()


async def measure(
    args: argparse.Namespace, url: str, key: str, tenant: str, redis_url: str, pid: int | None
) -> None:
    session_id = await create_session(url, key)
    redis = Redis.from_url(redis_url)
    log = EventLog(redis, tenant)
    lease = await log.acquire_lease(session_id, "bench", ttl_ms=600_000)
    assert lease is not None
    arrivals: list[dict[str, float]] = [{} for _ in range(args.subscribers)]
    stream_url = f"{url}/v1/sessions/{session_id}/events/stream"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, headers={"x-api-key": key}, timeout=aiohttp.ClientTimeout(total=None)
    ) as http:
        opened = [asyncio.Event() for _ in range(args.subscribers)]
        progress = asyncio.Event()
        tasks = [
            asyncio.create_task(subscribe(http, stream_url, seen, event, progress))
            for seen, event in zip(arrivals, opened, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 60)

        # Latency: one event at a time, paced.
        sent: dict[str, float] = {}
        interval = 1 / args.rate
        for index in range(args.paced):
            began = time.perf_counter()
            (stored,) = await log.append(
                session_id,
                [AgentMessageEvent(content=[TextBlock(text=f"{index} {TEXT}")])],
                fence=lease,
            )
            sent[str(stored.id)] = began
            await asyncio.sleep(max(interval - (time.perf_counter() - began), 0))
        async with asyncio.timeout(60):
            await wait_delivered(arrivals, list(sent)[-1], progress)
        latencies = [(seen[i] - t) * 1000 for seen in arrivals for i, t in sent.items()]

        # Throughput: as fast as the log takes them.
        cpu_before = cpu_seconds(pid) if pid else 0.0
        began = time.perf_counter()
        ids: list[str] = []
        for start in range(0, args.burst, BATCH):
            batch = [
                AgentMessageEvent(content=[TextBlock(text=f"{start + n} {TEXT}")])
                for n in range(min(BATCH, args.burst - start))
            ]
            ids += [str(e.id) for e in await log.append(session_id, batch, fence=lease)]
        appended = time.perf_counter() - began
        async with asyncio.timeout(300):
            await wait_delivered(arrivals, ids[-1], progress)
        elapsed = max(seen[ids[-1]] for seen in arrivals) - began
        cpu = (cpu_seconds(pid) - cpu_before) if pid else 0.0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await redis.aclose()

    frames = args.burst * args.subscribers
    p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
    print(f"{args.subscribers} subscribers on one session")
    print(
        f"latency: {args.paced} events at {args.rate}/s: p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
        f"p99 {p99:.2f} ms, max {max(latencies):.2f} ms"
    )
    print(
        f"throughput: {args.burst} events appended in {appended:.2f} s, delivered to all in "
        f"{elapsed:.2f} s: {frames / elapsed:,.0f} frames/s"
        + (f", gateway CPU {cpu:.1f} s ({cpu / frames * 1e6:.0f} µs a frame)" if pid else "")
    )
    figures = {
        "sse_subscribers": args.subscribers,
        "sse_p50_ms": f"{p50:.2f}",
        "sse_p95_ms": f"{p95:.2f}",
        "sse_p99_ms": f"{p99:.2f}",
        "sse_events_per_s": f"{frames / elapsed:.0f}",
        "sse_burst_events": args.burst,
        "sse_burst_s": f"{elapsed:.2f}",
    }
    if pid:
        figures["gateway_cpu_us_per_frame"] = f"{cpu / frames * 1e6:.1f}"
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--paced", type=int, default=200, help="events of the latency phase")
    parser.add_argument("--rate", type=float, default=50, help="events per second when paced")
    parser.add_argument("--burst", type=int, default=2000, help="events of the throughput phase")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a control plane")
    parser.add_argument("--gateway-url", help="use this gateway (with --api-key and --redis-url)")
    parser.add_argument("--api-key")
    parser.add_argument("--namespace", default="default", help="the namespace --api-key grants")
    args = parser.parse_args()
    with ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(RedisServer()).url
        pid = None
        if args.gateway_url:
            url, key, tenant = args.gateway_url, args.api_key, args.namespace
        else:
            kubeconfig = args.kubeconfig
            if kubeconfig is None:
                plane = stack.enter_context(ControlPlane())
                plane.apply_crds()
                kubeconfig = str(plane.kubeconfig)
            system, tenant, key = asyncio.run(make_tenant(kubeconfig))
            url, pid = start_gateway(stack, redis_url, kubeconfig, system)
        asyncio.run(measure(args, url, key, tenant, redis_url, pid))


if __name__ == "__main__":
    main()
