"""SSE fan-out of the gateway: many subscribers on one session's event stream.

Starts Redis, a control plane (etcd + kube-apiserver) and `python -m paddock.gateway` in
its own process, unless given their addresses. Creates a session through the API, opens
`--subscribers` event streams on it, then plays the harness: appends events to the log
under the session's lease and times their arrival at every subscriber.

- latency: `--paced` events, one append each, at `--rate` per second; per event and
  subscriber, from the start of the append call to the arrival of the frame;
- throughput: `--burst` events appended as fast as possible in batches of 100; frames
  delivered (summed over subscribers) per second, until every subscriber has every event;
- deltas: every stream asks for `event_deltas[]=agent.message`; `--deltas` model responses
  streamed from the scripted model (16-character chunks every `--chunk-ms`) through the
  harness's own previews (`paddock.harness.previews`, the same coalescing), each appended
  with its reserved id. Per chunk and subscriber, from the scripted server sending the
  chunk to the first `event_delta` that holds it; and, the baseline at the same load, per
  response and subscriber, from the start of the append to the arrival of `agent.message`.

Ends with one line of key=value figures. No assertions: figures are compared over time.

    .venv/bin/python bench/gateway.py [--subscribers 100] [--paced 200] [--burst 2000]
        [--deltas 30] [--chunk-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import anthropic
import httpx
from redis.asyncio import Redis

from paddock.eventlog import AgentMessageEvent, AnyEvent, EventLog, Lease, TextBlock
from paddock.gateway.auth import API_KEY_LABEL
from paddock.harness.model import stream_message
from paddock.harness.previews import previewing
from paddock.kube import KubeClient
from paddock.testing.controlplane import ControlPlane
from paddock.testing.fakemodel import FakeModelServer, ModelRequest, Reply, Text
from paddock.testing.ports import free_port, wait_until
from paddock.testing.redis import RedisServer
from stats import percentile

BATCH = 100
TEXT = "The quick brown fox jumps over the lazy dog. " * 4  # ~180 bytes, a short message


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
        created = await http.post(
            "/v1/agents", json={"name": "bench", "model": "claude-sonnet-4-6"}
        )
        created.raise_for_status()
        agent = created.json()
        session = await http.post(
            "/v1/sessions", json={"agent": agent["id"], "environment_id": environment["id"]}
        )
        session.raise_for_status()
        return str(session.json()["id"])


async def subscribe(
    http: aiohttp.ClientSession,
    url: str,
    arrivals: dict[str, float],
    previews: dict[str, list[tuple[float, int]]],
    opened: asyncio.Event,
    progress: asyncio.Event,
) -> None:
    """Record when each event's frame arrives (frames are split on blank lines), and for
    each previewed event when each `event_delta` arrived and how much text it had by then."""
    async with http.get(url, params={"event_deltas[]": "agent.message"}) as response:
        response.raise_for_status()
        opened.set()
        pending = b""
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            frames = (pending + chunk).split(b"\n\n")
            pending = frames.pop()
            for frame in frames:
                if frame.startswith(b"event: event_delta"):
                    data = json.loads(frame.partition(b"data: ")[2])
                    seen = previews.setdefault(data["event_id"], [])
                    length = (seen[-1][1] if seen else 0) + len(data["delta"]["content"]["text"])
                    seen.append((now, length))
                    continue
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
    previews: list[dict[str, list[tuple[float, int]]]] = [{} for _ in range(args.subscribers)]
    stream_url = f"{url}/v1/sessions/{session_id}/events/stream"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, headers={"x-api-key": key}, timeout=aiohttp.ClientTimeout(total=None)
    ) as http:
        opened = [asyncio.Event() for _ in range(args.subscribers)]
        progress = asyncio.Event()
        tasks = []
        # Opened a few at a time: each opening reads the session's snapshot, and a hundred
        # at once exceed the gateway's Redis connection pool (redis-py's default, 100).
        for first in range(0, args.subscribers, 20):
            group = slice(first, first + 20)
            tasks += [
                asyncio.create_task(subscribe(http, stream_url, seen, shown, event, progress))
                for seen, shown, event in zip(
                    arrivals[group], previews[group], opened[group], strict=True
                )
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened[group])), 60)

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

        delta_ms, durable_ms, frames_per_response = await measure_deltas(
            args, log, session_id, lease, arrivals, previews, progress
        )
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
    d50, d95, b50, b95 = (
        percentile(values, q) for values in (delta_ms, durable_ms) for q in (50, 95)
    )
    print(
        f"deltas: {args.deltas} streamed responses, {frames_per_response:.1f} event_delta "
        f"frames each: chunk to client p50 {d50:.2f} ms, p95 {d95:.2f} ms; the message "
        f"itself (append to client) p50 {b50:.2f} ms, p95 {b95:.2f} ms"
    )
    figures |= {
        "delta_p50_ms": f"{d50:.2f}",
        "delta_p95_ms": f"{d95:.2f}",
        "delta_durable_p50_ms": f"{b50:.2f}",
        "delta_durable_p95_ms": f"{b95:.2f}",
        "delta_frames_per_response": f"{frames_per_response:.1f}",
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


async def measure_deltas(
    args: argparse.Namespace,
    log: EventLog,
    session_id: str,
    lease: Lease,
    arrivals: list[dict[str, float]],
    previews: list[dict[str, list[tuple[float, int]]]],
    progress: asyncio.Event,
) -> tuple[list[float], list[float], float]:
    """The harness's part of a streamed response, one response at a time: the model's
    chunks become previews, then the message is appended with the previewed id.
    Latencies of chunks and of the messages, and event_delta frames per response."""
    sent: list[tuple[float, int]] = []  # per chunk of the current response: time, text so far

    def on_delta(delta: dict[str, object]) -> None:
        text = str(delta.get("text", ""))
        sent.append((time.perf_counter(), (sent[-1][1] if sent else 0) + len(text)))

    def script(request: ModelRequest) -> Reply:
        return Reply(
            [Text(f"{request.last_user_text}: {TEXT * 3}")], chunk_delay=args.chunk_ms / 1000
        )

    delta_ms: list[float] = []
    durable_ms: list[float] = []
    frames = 0
    with FakeModelServer(script, on_delta=on_delta) as model:
        client = anthropic.AsyncAnthropic(base_url=model.url, api_key="bench", max_retries=0)
        for index in range(args.deltas):
            sent.clear()
            request = {
                "model": "m",
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": f"response {index}"}],
            }
            async with previewing(log, session_id, args.preview_ms / 1000) as previews_of:
                message = await stream_message(client, request, on_event=previews_of.feed)
            chunks = list(sent)
            events: list[AnyEvent] = [
                AgentMessageEvent(content=[TextBlock(text=message.content[0].text)])  # type: ignore[union-attr]
            ]
            reserved = previews_of.reserved(events)
            began = time.perf_counter()
            (stored,) = await log.append(session_id, events, fence=lease, reserved=reserved)
            event_id = str(stored.id)
            assert reserved == [event_id], "the previewed id is the message's"
            async with asyncio.timeout(60):
                await wait_delivered(arrivals, event_id, progress)
            durable_ms += [(seen[event_id] - began) * 1000 for seen in arrivals]
            for shown in previews:
                received = shown.pop(event_id, [])
                frames += len(received)
                for chunk_sent, length in chunks:
                    arrival = next((a for a, have in received if have >= length), None)
                    if arrival is not None:  # None: shed (best-effort)
                        delta_ms.append((arrival - chunk_sent) * 1000)
        await client.close()
    return delta_ms, durable_ms, frames / (args.deltas * len(previews))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--paced", type=int, default=200, help="events of the latency phase")
    parser.add_argument("--rate", type=float, default=50, help="events per second when paced")
    parser.add_argument("--burst", type=int, default=2000, help="events of the throughput phase")
    parser.add_argument("--deltas", type=int, default=30, help="streamed responses, previewed")
    parser.add_argument("--chunk-ms", type=float, default=5, help="the model's time per chunk")
    parser.add_argument("--preview-ms", type=float, default=20, help="previews' coalescing window")
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
