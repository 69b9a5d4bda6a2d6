"""Bench the hands: sandbox tool round trips and the credential proxy's overhead.

Starts (unless given addresses) a sandbox server, the credential proxy and a trivial local
upstream as subprocesses on loopback, then measures:

- ``bash_rt_ms``: p50 round trip of the ``bash`` tool running ``true``;
- ``read_1mb_ms``: p50 round trip of the ``read`` tool on a 1 MB text file (the tool returns
  at most its first 256 KiB, as it would to the model);
- ``api_direct_ms`` / ``api_proxy_ms``: p50 latency of a small POST to the upstream, directly
  and through the proxy's API listener, and ``proxy_ratio`` = proxied / direct;
- ``api_direct_rps`` / ``api_proxy_rps``: requests per second with ``--concurrency`` clients;
- ``egress_ms``: p50 latency of the same request through the egress listener (token check,
  policy, address check, one connection per request).

Prints the figures and ends with one line of ``key=value`` pairs. No assertions.

    .venv/bin/python bench/hands.py [--iterations 100] [--requests 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import yaml

from paddock.testing.ports import free_port, wait_until

BODY = {"model": "claude-bench", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
REPLY = (
    b'{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench",'
    b'"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn",'
    b'"usage":{"input_tokens":8,"output_tokens":1}}'
)


def serve_upstream(port: int) -> None:
    """The trivial upstream: every request gets the same small Messages API reply."""
    from aiohttp import web

    async def reply(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=REPLY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", reply)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _start(argv: list[str], url: str, what: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        return httpx.get(url, timeout=1).status_code < 500

    wait_until(up, timeout=20, what=what)
    return process


@contextlib.contextmanager
def services(work: Path, args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """Addresses of the sandbox, upstream and proxy; starts those not given."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        found = {"sandbox": args.sandbox, "sandbox_token": args.sandbox_token}
        if not args.sandbox:
            port, token = free_port(), secrets.token_urlsafe(24)
            (work / "token").write_text(token)
            (work / "workspace").mkdir()
            found |= {"sandbox": f"http://127.0.0.1:{port}", "sandbox_token": token}
            started.append(_start(
                [sys.executable, "-m", "paddock.sandbox", "--host", "127.0.0.1", "--port", str(port),
                 "--workdir", str(work / "workspace"), "--token-file", str(work / "token")],
                f"{found['sandbox']}/healthz", "sandbox server",
            ))  # fmt: skip
        upstream_port = free_port()
        found["upstream"] = f"http://127.0.0.1:{upstream_port}"
        started.append(_start(
            [sys.executable, __file__, "--serve-upstream", str(upstream_port)],
            found["upstream"], "upstream",
        ))  # fmt: skip
        ports = {name: free_port() for name in ("api", "egress", "admin")}
        (work / "api_key").write_text("sk-ant-bench")
        (work / "token_key").write_text(secrets.token_hex(32))
        config = {
            "listeners": {
                name: {"host": "127.0.0.1", "port": port} for name, port in ports.items()
            },
            "upstream": found["upstream"],
            "api_key_file": str(work / "api_key"),
            "token_key_file": str(work / "token_key"),
            "environments": {"bench": {"mode": "limited", "allowed_domains": ["localhost"]}},
            "address_exceptions": [f"127.0.0.1:{upstream_port}"],
        }
        (work / "proxy.yaml").write_text(yaml.safe_dump(config))
        admin = f"http://127.0.0.1:{ports['admin']}"
        started.append(_start(
            [sys.executable, "-m", "paddock.proxy", "--config", str(work / "proxy.yaml")],
            f"{admin}/healthz", "credential proxy",
        ))  # fmt: skip
        token = httpx.post(
            f"{admin}/v1/session-tokens", json={"session_id": "sesn_bench", "environment": "bench"}
        ).json()["token"]
        found |= {
            "api": f"http://127.0.0.1:{ports['api']}",
            "egress": f"http://sesn_bench:{token}@127.0.0.1:{ports['egress']}",
            "egress_target": f"http://localhost:{upstream_port}/v1/messages",
        }
        yield found
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(call: Callable[[], object], iterations: int, warmup: int = 3) -> list[float]:
    """Seconds per call, after a few warm-up calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def tool(client: httpx.Client, name: str, payload: dict[str, object]) -> Callable[[], object]:
    def call() -> object:
        reply = client.post(f"/v1/tools/{name}", json={"input": payload})
        reply.raise_for_status()
        if reply.json().get("is_error"):
            raise RuntimeError(f"{name} failed: {reply.text[:300]}")
        return reply

    return call


async def rps(url: str, requests: int, concurrency: int) -> float:
    """Requests per second of ``requests`` POSTs spread over ``concurrency`` clients."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post(url, json=BODY)
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                (await client.post(url, json=BODY)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=100, help="tool calls per measurement")
    parser.add_argument("--requests", type=int, default=1000, help="HTTP requests per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="clients for the rps figures")
    parser.add_argument("--sandbox", help="use this sandbox server instead of starting one")
    parser.add_argument("--sandbox-token", help="bearer token of --sandbox")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.sandbox and not args.sandbox_token:
        parser.error("--sandbox needs --sandbox-token")

    with (
        tempfile.TemporaryDirectory(prefix="paddock-bench-") as tmp,
        services(Path(tmp), args) as at,
    ):
        figures: dict[str, float] = {}
        headers = {"Authorization": f"Bearer {at['sandbox_token']}"}
        with httpx.Client(base_url=at["sandbox"], headers=headers, timeout=60) as sandbox:
            # A 1 MB text file, written through the sandbox so that it works for a given one too.
            line = "x" * 99
            tool(
                sandbox, "write", {"file_path": "bench-1mb.txt", "content": f"{line}\n" * 10_000}
            )()
            figures["bash_rt_ms"] = p50_ms(
                timed(tool(sandbox, "bash", {"command": "true"}), args.iterations)
            )
            read = tool(sandbox, "read", {"file_path": "bench-1mb.txt"})
            figures["read_1mb_ms"] = p50_ms(timed(read, max(args.iterations // 2, 5)))

        with httpx.Client() as direct, httpx.Client(proxy=at["egress"]) as egress:
            figures["api_direct_ms"] = p50_ms(
                timed(
                    lambda: direct.post(f"{at['upstream']}/v1/messages", json=BODY), args.requests
                )
            )
            figures["api_proxy_ms"] = p50_ms(
                timed(lambda: direct.post(f"{at['api']}/v1/messages", json=BODY), args.requests)
            )
            figures["egress_ms"] = p50_ms(
                timed(
                    lambda: egress.post(at["egress_target"], json=BODY), max(args.requests // 4, 10)
                )
            )
        figures["proxy_ratio"] = figures["api_proxy_ms"] / figures["api_direct_ms"]
        figures["api_direct_rps"] = asyncio.run(
            rps(f"{at['upstream']}/v1/messages", args.requests, args.concurrency)
        )
        figures["api_proxy_rps"] = asyncio.run(
            rps(f"{at['api']}/v1/messages", args.requests, args.concurrency)
        )

    print(f"sandbox bash `true` round trip, p50   {figures['bash_rt_ms']:8.2f} ms")
    print(f"sandbox read of a 1 MB file, p50      {figures['read_1mb_ms']:8.2f} ms")
    print(f"API direct to upstream, p50           {figures['api_direct_ms']:8.2f} ms")
    print(f"API through the proxy, p50            {figures['api_proxy_ms']:8.2f} ms")
    print(f"  proxied / direct                    {figures['proxy_ratio']:8.2f} x")
    print(
        f"API direct, {args.concurrency} clients               {figures['api_direct_rps']:8.0f} req/s"
    )
    print(
        f"API through the proxy, {args.concurrency} clients    {figures['api_proxy_rps']:8.0f} req/s"
    )
    print(f"egress forward proxy, p50             {figures['egress_ms']:8.2f} ms")
    print(" ".join(f"{key}={value:.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
